"""The benchmark scripts still run (structure only: benchmarks are never timed assertions)."""

import json

from benchmarks import models as model_bench
from benchmarks import ops as op_bench


def test_op_benchmark_runs_and_reports_a_ratio(tmp_path, capsys):
    out = tmp_path / "ops.json"
    assert op_bench.main(["--only", "relu", "--repeats", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["case"] for r in rows] == ["relu 28x28x32"]
    assert rows[0]["speedup"] > 0 and rows[0]["jaxcnn_fwd_bwd_ms"] > 0
    assert "| relu 28x28x32 |" in capsys.readouterr().out


def test_model_benchmark_runs(tmp_path, capsys):
    out = tmp_path / "models.json"
    assert model_bench.main(["--models", "mnist1d_cnn", "--repeats", "1", "--batch", "16", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["model"] == "mnist1d_cnn" and row["batch"] == 16 and row["jaxcnn_ms"] > 0
    assert "| mnist1d_cnn |" in capsys.readouterr().out
