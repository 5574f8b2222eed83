"""Every python code block in README.md runs as written."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index):
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), {"__name__": "readme"})


def test_ci_runs_the_readme_test_command():
    command = re.search(r"pip install -e \"\.\[test\]\" && (.+?)\s+#", README.read_text()).group(1)
    ci = (README.parent / ".ci" / "run").read_text()
    assert command in ci
