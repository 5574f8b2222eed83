"""Every ```python code block of README.md and of the manual's pages, docs/*.md, runs as written.

Blocks marked ```py instead of ```python are shown but deliberately not run: they need files the test
does not have (e.g. torchvision's weights). Test ids name the file and the block's index among its
```python blocks, e.g. ``docs/training.md[2]``.
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
# The manual's pages that README.md and docs/index.md promise.
PAGES = [
    "index", "ops", "derivations", "networks", "inspection", "data", "weights", "privacy", "training", "scaling",
    "accelerators", "speed"
]  # fmt: skip
# Blocks that train or differentiate a whole model (several seconds each): in the slow tier.
SLOW_BLOCKS = {"docs/training.md[2]", "docs/privacy.md[0]", "docs/privacy.md[2]"}


def python_blocks(path):
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


BLOCKS = [
    (f"{path.relative_to(ROOT).as_posix()}[{index}]", block)
    for path in [README, *DOCS]
    for index, block in enumerate(python_blocks(path))
]


def test_readme_has_examples():
    assert python_blocks(README), "README.md has no python example"
    for page in PAGES:
        assert (ROOT / "docs" / f"{page}.md").is_file(), f"docs/{page}.md is missing"
    index = (ROOT / "docs" / "index.md").read_text()
    for path in DOCS:
        assert path.name == "index.md" or f"]({path.name})" in index, f"docs/index.md does not link {path.name}"
    assert {name.split("[")[0] for name, _ in BLOCKS} > {"README.md"}, "no python block in docs/*.md"
    assert SLOW_BLOCKS <= {name for name, _ in BLOCKS}, "a slow block that is not there"


@pytest.mark.parametrize(
    "name, block",
    [pytest.param(n, b, id=n, marks=[pytest.mark.slow] if n in SLOW_BLOCKS else []) for n, b in BLOCKS],
)
def test_readme_block_runs(name, block):
    exec(compile(block, name, "exec"), {"__name__": "readme"})


def test_ci_runs_the_readme_test_command():
    command = re.search(r"pip install -e \"\.\[test\]\" && (.+?)\s+#", README.read_text()).group(1)
    ci = (README.parent / ".ci" / "run").read_text()
    assert command in ci
