"""The benchmark scripts still run and the Flax/PyTorch twins are the jaxcnn networks (structure only:
benchmarks are never timed assertions)."""

import functools
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import require_module

from jaxcnn import cli
from jaxcnn import models as zoo
from jaxcnn.bench import flax_models, report, scaling, suite, timing, twins
from jaxcnn.bench import models as model_bench
from jaxcnn.bench import ops as op_bench

TWINS = list(twins.TWINS)


@pytest.mark.slow
def test_op_benchmark_runs_and_reports_a_ratio(tmp_path, capsys):
    out = tmp_path / "ops.json"
    assert op_bench.main(["--only", "relu", "--repeats", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["case"] for r in rows] == ["relu 28x28x32"]
    assert rows[0]["speedup"] > 0 and rows[0]["jaxcnn_fwd_bwd_ms"] > 0
    assert "| relu 28x28x32 |" in capsys.readouterr().out
    # one round: the ratio is that round's autodiff time over jaxcnn's, too few rounds for an interval
    assert rows[0]["speedup"] == pytest.approx(rows[0]["autodiff_fwd_bwd_ms"] / rows[0]["jaxcnn_fwd_bwd_ms"])
    assert rows[0]["speedup_low"] is None and rows[0]["speedup_high"] is None
    assert rows[0]["verdict"] == "undetermined"
    assert rows[0]["same_program"] is False  # the hand-derived ReLU's select tests x > 0, the twin's x < 0


# 95% confidence intervals for a median, as ranks of the sorted sample: the published table (e.g.
# Conover, Practical Nonparametric Statistics, and the usual tables of sign-test critical values).
MEDIAN_CI_RANKS = {6: (1, 6), 9: (2, 8), 10: (2, 9), 12: (3, 10), 15: (4, 12), 17: (5, 13), 20: (6, 15), 30: (10, 21)}


@pytest.mark.parametrize("n", sorted(MEDIAN_CI_RANKS))
def test_the_median_interval_is_the_published_order_statistics(n):
    values = [10.0 * v for v in np.random.default_rng(n).permutation(n) + 1]  # ranks 1..n, shuffled
    median, low, high = timing.median_interval(values)
    assert (low / 10, high / 10) == MEDIAN_CI_RANKS[n]
    assert median == 10.0 * (n + 1) / 2


def test_too_few_samples_have_no_median_interval_and_bad_input_is_refused():
    assert timing.median_interval([3.0, 1.0, 2.0, 5.0, 4.0]) == (3.0, None, None)  # the range covers 94%
    assert timing.median_interval([4.0]) == (4.0, None, None)
    assert timing.median_interval([3.0, 1.0, 2.0, 5.0, 4.0], level=0.9) == (3.0, 1.0, 5.0)  # 94% >= 90%
    with pytest.raises(ValueError, match="level must be in"):
        timing.median_interval([1.0, 2.0], level=1.0)
    with pytest.raises(ValueError, match="at least one value"):
        timing.median_interval([])


def test_the_verdict_needs_the_whole_interval_on_one_side():
    assert op_bench.verdict(1.01, 1.3) == "faster"
    assert op_bench.verdict(0.7, 0.99) == "slower"
    assert [op_bench.verdict(*i) for i in [(0.9, 1.1), (1.0, 1.2), (0.8, 1.0)]] == ["parity"] * 3
    assert op_bench.verdict(None, None) == "undetermined"


def test_same_program_ignores_names_and_source_lines_but_not_operations():
    x = jnp.ones((4, 8), jnp.float32)

    def first(a):
        return jnp.sin(a) * 2.0

    def second(b):  # the same computation, written elsewhere under other names
        return jnp.sin(b) * 2.0

    assert op_bench.same_program(jax.jit(first), jax.jit(second), x)
    assert not op_bench.same_program(jax.jit(first), jax.jit(lambda a: jnp.cos(a) * 2.0), x)
    assert not op_bench.same_program(jax.jit(first), jax.jit(lambda a: jnp.sin(a) * 3.0), x)
    # the same operations wired differently, and constants too large to print by default
    assert not op_bench.same_program(jax.jit(lambda a, b: a - b), jax.jit(lambda a, b: b - a), x, x + 1)
    table = np.arange(32.0, dtype=np.float32).reshape(4, 8)
    assert not op_bench.same_program(jax.jit(lambda a: a * table), jax.jit(lambda a: a * table[::-1]), x)


def test_the_op_table_keeps_rows_written_before_the_paired_ratios():
    old = {"case": "relu", "forward_ms": 1.0, "jaxcnn_fwd_bwd_ms": 2.0, "autodiff_fwd_bwd_ms": 3.0, "speedup": 1.5}
    new = {**old, "speedup_low": 1.2, "speedup_high": 1.8, "verdict": "faster", "same_program": False}
    few = {**new, "speedup_low": None, "speedup_high": None, "verdict": "undetermined"}
    table = op_bench.markdown([old, new, few]).splitlines()
    assert table[2] == "| relu | 1.00 | 2.00 | 3.00 | 1.50x |  |  |  |"
    assert table[3] == "| relu | 1.00 | 2.00 | 3.00 | 1.50x | 1.20-1.80 | faster | no |"
    assert table[4] == "| relu | 1.00 | 2.00 | 3.00 | 1.50x | n/a | undetermined | no |"


@pytest.mark.slow
def test_model_benchmark_runs(tmp_path, capsys):
    out = tmp_path / "models.json"
    argv = ["--models", "mnist1d_cnn", "--repeats", "1", "--batch", "16", "--matmul-size", "64", "--json", str(out)]
    assert model_bench.main(argv) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["model"] == "mnist1d_cnn" and row["batch"] == 16 and row["jaxcnn_ms"] > 0
    assert row["flax_ms"] is None and row["torch_best_ms"] is None  # no twins for the 1-D model
    assert "| mnist1d_cnn |" in capsys.readouterr().out


@pytest.mark.slow
def test_model_benchmark_row_has_every_implementation(tmp_path):
    argv = ["--models", "lenet5", "--batch", "4", "--repeats", "1", "--matmul-size", "64", "--out", str(tmp_path)]
    assert model_bench.main(argv) == 0
    data = json.loads((tmp_path / "models.json").read_text())
    meta, (row,) = data["meta"], data["rows"]
    assert meta["matmul_peak"]["best_gflops"] > 0 and meta["matmul_peak"]["size"] == 64
    assert row["params"] == 61_706 and row["step_gflop"] > 0
    for name in ("jaxcnn", "autodiff", "flax"):
        assert row[f"{name}_ms"] > 0 and row[f"{name}_gflops"] > 0 and row[f"{name}_peak_fraction"] > 0
    assert row["autodiff_over_jaxcnn"] == row["speedup"] > 0 and row["flax_over_jaxcnn"] > 0
    if model_bench.torch_available():
        assert meta["torch_num_threads"] >= 1
        assert row["torch_nchw_ms"] > 0 and row["torch_channels_last_ms"] > 0
        assert row["torch_best_ms"] == min(row["torch_nchw_ms"], row["torch_channels_last_ms"])
        assert row["torch_best_layout"] in ("nchw", "channels_last") and row["torch_best_over_jaxcnn"] > 0
    else:
        assert row["torch_best_ms"] is None and "n/a" in model_bench.markdown([row])


def test_step_flops_are_three_forward_passes():
    forward = model_bench.forward_flops("lenet5", 2)
    # conv1 28*28*6*25, conv2 10*10*16*150, dense 400*120 + 120*84 + 84*10 multiply-adds per example
    macs = 28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 400 * 120 + 120 * 84 + 84 * 10
    assert 2 * 2 * macs <= forward < 1.1 * 2 * 2 * macs  # plus biases, relus, pools
    assert model_bench.step_flops("lenet5", 2) == 3 * forward


@functools.cache
def _jaxcnn_case(name: str, batch: int = 3):
    """jaxcnn's params, state (running averages moved off their init), an input and its eval/train outputs."""
    shape, factory = twins.BENCHMARKED[name]
    model = factory()
    _, params, state = model.init(jax.random.PRNGKey(0), (batch, *shape))
    state = jax.tree_util.tree_map(lambda a: a + 0.5 * jnp.linspace(0, 1, a.size, dtype=a.dtype), state)
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    apply = jax.jit(model.apply, static_argnames="train")
    evaluated = np.asarray(apply(params, state, x, train=False)[0])
    trained = None if name == "fashion_cnn" else np.asarray(apply(params, state, x, train=True)[0])  # dropout
    return params, state, x, evaluated, trained


@pytest.mark.slow
@pytest.mark.parametrize("name", TWINS)
def test_flax_twin_has_jaxcnn_params_shapes_and_outputs(name):
    params, state, x, evaluated, trained = _jaxcnn_case(name)
    module = flax_models.make(name)
    template = module.init(jax.random.PRNGKey(1), x, train=False)
    assert zoo.count_params(template["params"]) == zoo.count_params(params)
    variables = flax_models.params_from_jaxcnn(template, params, state)
    out = module.apply(variables, x, train=False)
    assert out.shape == evaluated.shape
    np.testing.assert_allclose(out, evaluated, rtol=1e-4, atol=1e-4 * np.abs(evaluated).max())
    if trained is not None:  # train mode: batch statistics
        out, _ = module.apply(variables, x, train=True, mutable=["batch_stats"])
        np.testing.assert_allclose(out, trained, rtol=1e-4, atol=1e-4 * np.abs(trained).max())


@pytest.mark.slow
@pytest.mark.parametrize("name", TWINS)
def test_torch_twin_has_jaxcnn_params_shapes_and_outputs(name):
    torch = require_module("torch", "pip install -e '.[torch]'", "JAXCNN_REQUIRE_TORCH")
    from jaxcnn.bench import torch_models

    params, state, x, evaluated, trained = _jaxcnn_case(name)
    net = torch_models.make(name, x.shape[1:])
    assert sum(p.numel() for p in net.parameters()) == zoo.count_params(params)
    torch_models.load_jaxcnn_params(net, params, state)
    x_nchw = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        out = net.eval()(x_nchw).numpy()
        assert out.shape == evaluated.shape
        np.testing.assert_allclose(out, evaluated, rtol=1e-4, atol=1e-4 * np.abs(evaluated).max())
        if trained is not None:
            out = net.train()(x_nchw.contiguous(memory_format=torch.channels_last)).numpy()
            np.testing.assert_allclose(out, trained, rtol=1e-4, atol=1e-4 * np.abs(trained).max())


@pytest.mark.slow
def test_twins_follow_the_image_size():
    """The image sweep builds every implementation on other image sizes (lenet5's dense layer grows)."""
    prepared = model_bench.prepare("lenet5", 2, ["jaxcnn", "flax", "torch_nchw"], input_shape=(36, 36, 1))
    assert (
        prepared.input_shape == (36, 36, 1) and prepared.params == 61_706 + (16 * 7 * 7 - 400) * 120
    )  # 36 -> 36 -> 18 -> 14 -> 7
    for name, step in prepared.candidates().items():
        assert step() is not None, name


@pytest.mark.slow
def test_scaling_runs_a_tiny_sweep(tmp_path, capsys):
    argv = ["--models", "lenet5", "--batches", "1", "2", "--image-model", "lenet5", "--image-sizes", "28", "32"]
    argv += ["--image-batch", "2", "--memory-models", "lenet5", "--memory-batch", "2", "--memory-impls", "jaxcnn"]
    assert scaling.main([*argv, "--repeats", "1", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "scaling.json").read_text())
    assert [(r["model"], r["batch"]) for r in data["batch_sweep"]] == [("lenet5", 1), ("lenet5", 2)]
    assert all(r["jaxcnn_ms"] > 0 and r["autodiff_ms"] > 0 for r in data["batch_sweep"])
    assert [r["image_size"] for r in data["image_sweep"]] == [28, 32]
    assert data["image_sweep"][1]["input_shape"] == [32, 32, 1]
    (xla,) = data["memory"]["xla"]
    assert xla["implementation"] == "jaxcnn" and xla["temp_bytes"] > 0 and xla["argument_bytes"] > 0
    (rss,) = data["memory"]["rss"]
    assert (
        rss["implementation"] == "jaxcnn" and rss["peak_bytes"] >= rss["baseline_bytes"] >= rss["after_imports_bytes"]
    )
    assert rss["step_bytes"] == rss["peak_bytes"] - rss["baseline_bytes"]


def _small_results(directory):
    """Hand-written JSON in the shape the benchmarks write (values are placeholders, not measurements)."""
    row = {"model": "lenet5", "batch": 8, "jaxcnn_ms": 1.0, "autodiff_ms": 2.0, "flax_ms": 1.5}
    row.update(torch_nchw_ms=None, torch_channels_last_ms=None, torch_best_ms=None, speedup=2.0)
    row.update(flax_over_jaxcnn=1.5, torch_best_over_jaxcnn=None, jaxcnn_examples_per_s=8000.0)
    row.update(jaxcnn_gflops=5.0, jaxcnn_peak_fraction=0.05, torch_best_gflops=None)
    peak = {"size": 64, "jax_gflops": 100.0, "torch_gflops": None, "best_gflops": 100.0, "best": "jax"}
    meta = {"jax": jax.__version__, "repeats": 1, "matmul_peak": peak}
    (directory / "models.json").write_text(json.dumps({"meta": meta, "rows": [row]}))
    sweep = [{"model": "lenet5", "batch": b, "jaxcnn_ms": b, "autodiff_ms": 2.0 * b} for b in (1, 2, 4)]
    image = [{"model": "resnet20", "batch": 2, "image_size": s, "jaxcnn_ms": s, "autodiff_ms": s} for s in (28, 32)]
    mib = {"temp_bytes": 2**20, "argument_bytes": 2**20, "output_bytes": 2**20}
    xla = [{"model": "lenet5", "batch": 8, "implementation": i, **mib} for i in ("jaxcnn", "autodiff")]
    rss = [{"model": "lenet5", "batch": 8, "implementation": "jaxcnn"}]
    rss[0].update(after_imports_bytes=2**27, baseline_bytes=2**28, peak_bytes=2**29, step_bytes=2**28)
    scaling_data = {"batch_sweep": sweep, "image_sweep": image, "memory": {"xla": xla, "rss": rss}}
    (directory / "scaling.json").write_text(json.dumps(scaling_data))


@pytest.mark.slow
def test_report_writes_markdown_and_plots(tmp_path):
    _small_results(tmp_path)
    assert report.main(["--out", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "| lenet5 | 1.0 | 2.0 | 1.5 | n/a | n/a | 2.00x | 1.50x | n/a |" in text
    assert "## Step time against batch size" in text and "| lenet5 | 4 | 4.00 | 8.00 | 2.00x |" in text
    assert "## Memory" in text and "| lenet5 | 8 | JAX autodiff | 1.0 | 1.0 | 1.0 |" in text
    assert "| lenet5 | 8 | jaxcnn | 256 | 512 | 256 |" in text
    for png in ("models_step_time.png", "scaling_batch.png", "scaling_image.png", "memory.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


def test_report_refuses_an_empty_directory(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "no ops.json" in capsys.readouterr().err


@pytest.mark.slow
def test_suite_runs_the_report_part(tmp_path, capsys):
    _small_results(tmp_path)
    assert suite.main(["--parts", "report", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "report.md").exists() and "benchmarks done" in capsys.readouterr().out


def test_cli_bench_parses(capsys):
    args = cli.build_parser().parse_args(["bench", "--quick", "--out", "somewhere", "--parts", "models", "report"])
    assert args.func is cli.bench_command and args.quick and args.out == "somewhere"
    assert args.parts == ["models", "report"] and args.repeats is None
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--help"])
    assert exit_info.value.code == 0 and "--quick" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--repeats", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--repeats" in err


def _modules_after(imports: str) -> list[str]:
    code = f"import sys; {imports}; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.split()


@pytest.mark.slow
def test_the_cli_and_the_suite_do_not_import_each_other_in_a_circle():
    assert not [m for m in _modules_after("import jaxcnn.cli") if m.startswith("jaxcnn.bench")]
    suite_modules = _modules_after(
        "import jaxcnn.bench.suite, jaxcnn.bench.models, jaxcnn.bench.ops, jaxcnn.bench.report"
    )
    assert "jaxcnn.bench.models" in suite_modules and "jaxcnn.cli" not in suite_modules


@pytest.mark.slow
def test_the_accelerator_benchmark_says_when_it_measured_nothing(tmp_path, capsys):
    from jaxcnn.bench import accelerator

    assert accelerator.main(["--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "accelerator.json").read_text())
    if jax.default_backend() == "cpu":
        assert record["meta"]["measured"] is False and record["rows"] == []
        assert "only a CPU is present" in capsys.readouterr().out
    assert accelerator.main(["--allow-cpu", "--quick", "--repeats", "1", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "accelerator.json").read_text())["rows"]
    assert {(r["model"], r["dtype"]) for r in rows} == {("lenet5", "float32"), ("lenet5", "bfloat16")}
    assert all(r["jaxcnn_ms"] > 0 and r["autodiff_ms"] > 0 and r["flax_ms"] > 0 for r in rows)


@pytest.mark.slow
def test_the_cpu_route_benchmark_runs_each_route_in_its_own_process(tmp_path):
    from jaxcnn.bench import cpu_routes

    routes = ["default", "onednn", "onednn-custom-call"]
    argv = ["--routes", *routes, "--models", "mnist1d_cnn", "--rounds", "1", "--repeats", "1"]
    assert cpu_routes.main([*argv, "--dtypes", "float32", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "cpu_routes.json").read_text())
    assert [r["route"] for r in record["rows"]] == routes
    for row in record["rows"]:  # a flag this jaxlib did not know would end the process: "error"
        assert "error" not in row, row
        assert row["conv_ms"] > 0 and row["mnist1d_cnn_jaxcnn_ms"] > 0 and row["mnist1d_cnn_autodiff_ms"] > 0
    # who ran the convolution, in this jaxlib: YNNPACK by default, XLA's emitter under oneDNN's switches
    assert [r["conv_emitter_dtype"] for r in record["rows"]] == ["library", "f32", "f32"]
    broken = cpu_routes.run_route("default", ["no_such_model"], 1)
    assert set(broken) == {"route", "error"}


@pytest.mark.slow
def test_the_full_size_benchmark_times_only_what_it_is_asked_to(tmp_path, capsys):
    from jaxcnn.bench import fullsize

    argv = ["--models", "alexnet", "--batch", "1", "--repeats", "1", "--only", "forward"]
    assert fullsize.main([*argv, "--json", str(tmp_path / "f.json")]) == 0
    (row,) = json.loads((tmp_path / "f.json").read_text())["rows"]
    assert {k for k in row if k.endswith("_ms")} == {"jaxcnn_forward_ms", "autodiff_forward_ms"}
    assert row["forward_autodiff_over_jaxcnn"] == row["autodiff_forward_ms"] / row["jaxcnn_forward_ms"]
    assert "alexnet batch 1: forward jaxcnn" in capsys.readouterr().out


@pytest.mark.slow
def test_data_pipeline_benchmark_runs(tmp_path, capsys):
    from jaxcnn.bench import data_pipeline

    out = tmp_path / "pipeline.json"
    argv = ["--images", "400", "--steps", "6", "--rounds", "1", "--batch", "16", "--model", "lenet5"]
    assert data_pipeline.main([*argv, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["examples_per_s"]) == {"memory", "folder"} and result["images"] == 400


@pytest.mark.slow
def test_privacy_benchmark_runs(tmp_path, capsys):
    from jaxcnn.bench import privacy as privacy_bench

    out = tmp_path / "privacy.json"
    assert privacy_bench.main(["--batch", "8", "--repeats", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {row["variant"] for row in rows} >= {"materialised (vmap of grad)", "norms, ghost=auto"}


def test_time_to_accuracy_is_the_first_epoch_at_the_target():
    from jaxcnn.bench.time_to_accuracy import time_to

    curve = [{"time_s": 30.0, "test_accuracy": 0.90}, {"time_s": 61.0, "test_accuracy": 0.916},
             {"time_s": 90.0, "test_accuracy": 0.912}, {"time_s": 121.0, "test_accuracy": 0.92}]  # fmt: skip
    assert time_to(curve, 0.915) == 61.0 and time_to(curve, 0.90) == 30.0 and time_to(curve, 0.93) is None


def test_a_run_that_never_reaches_the_target_counts_as_the_slowest():
    from jaxcnn.bench.time_to_accuracy import median_time

    assert median_time([174.4, 182.6, 146.5]) == 174.4
    assert median_time([None, 173.7, 247.3]) == 247.3  # PyTorch's seeds 3-5: seed 3 never got there
    assert median_time([None, 10.0, None]) is None and median_time([]) is None
    assert median_time([4.0, None, 1.0, 2.0]) == 3.0 and median_time([4.0, None, 1.0, None]) is None


@pytest.mark.slow
def test_the_first_layer_benchmark_compares_the_two_forwards_and_steps(tmp_path, monkeypatch):
    """Each step is traced under its own limit: the shifted-products step has one convolution fewer
    (LeNet-5's first forward), so the A/B compares two different programs."""
    from jaxcnn.bench import narrow

    monkeypatch.setattr(narrow, "FORWARDS", [((2, 8, 8, 1), (3, 3, 1, 4), 1, 1)])
    assert narrow.main(["--models", "lenet5", "--repeats", "1", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "narrow.json").read_text())
    (forward,) = record["forwards"]
    assert forward["products"] == 9 and forward["convolution_ms"] > 0 and forward["shifted_products_ms"] > 0
    (step,) = record["steps"]
    assert step["convolutions"]["shifted_products"] == step["convolutions"]["convolution"] - 1


@pytest.mark.parametrize("k", [3, 5])
def test_im2col_is_the_convolution_with_either_patch_matrix(k):
    from jaxcnn.bench import bfloat16_cpu

    rng = np.random.default_rng(k)
    x = jnp.asarray(rng.standard_normal((2, 7, 6, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, 3, 4)), jnp.float32)
    expected = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    stacked, concatenated = bfloat16_cpu.patches_stacked(x, k), bfloat16_cpu.patches_concatenated(x, k)
    assert stacked.shape == (2, 7, 6, k * k * 3) and bool(jnp.all(stacked == concatenated))
    for patches in (bfloat16_cpu.patches_stacked, bfloat16_cpu.patches_concatenated):
        np.testing.assert_allclose(bfloat16_cpu.im2col_forward(x, w, patches), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_the_bfloat16_benchmark_times_every_form(tmp_path, monkeypatch, capsys):
    from jaxcnn.bench import bfloat16_cpu

    monkeypatch.setattr(bfloat16_cpu, "CONV", {"batch": 2, "size": 6, "c_in": 3, "c_out": 4, "kernel": 3})
    monkeypatch.setattr(bfloat16_cpu, "MATMUL_SIZE", 32)
    assert bfloat16_cpu.main(["--repeats", "1", "--model", "lenet5", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "bfloat16_cpu.json").read_text())
    assert record["matmul"]["bfloat16_gflops"] > 0 and record["matmul"]["size"] == 32
    forms = ["conv_float32", "conv_bfloat16", "im2col_concatenated_bfloat16", "im2col_stacked_bfloat16"]
    forms += ["patches_concatenated_bfloat16", "patches_stacked_bfloat16", "product_alone_bfloat16"]
    assert all(record["convolution"][f"{form}_ms"] > 0 for form in forms) and record["convolution"]["size"] == 6
    assert {"model", "float32_ms", "bfloat16_ms", "float32_dense_bfloat16_ms"} <= set(record["step"])
    # lenet5's three dense layers: three forward products, three input and three weight gradients
    assert record["step"]["bfloat16_products"] == {"float32": 0, "bfloat16": 9, "float32_dense_bfloat16": 9}
    assert "lenet5 step: float32" in capsys.readouterr().out
