"""jaxcnn.gradcheck catches wrong gradients, and `jaxcnn gradcheck` prints its table and exit status."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import gradcheck, ops, reference
from jaxcnn.cli import main


@jax.custom_vjp
def _wrong_relu(x):
    return jnp.maximum(x, 0)


_wrong_relu.defvjp(lambda x: (jnp.maximum(x, 0), x), lambda x, g: (g * (x > 0) * 1.01,))  # 1% off


@jax.custom_vjp
def _off_by_one_stride(x):
    return x[::2] * 3.0


_off_by_one_stride.defvjp(
    lambda x: (x[::2] * 3.0, x), lambda x, g: (jnp.zeros_like(x).at[1::2].set(3.0 * g[: x[1::2].shape[0]]),)
)


def _sin_with_bad_vjp(bad: float):
    """``sin`` whose backward pass multiplies the cotangent by ``bad`` (NaN or infinity)."""

    @jax.custom_vjp
    def f(x):
        return jnp.sin(x)

    f.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (g * jnp.cos(x) * bad,))
    return f


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_nan_or_inf_vjp_fails_and_the_report_says_so(rng, bad):
    report = gradcheck.check(_sin_with_bad_vjp(bad), rng.standard_normal(6), reference=jnp.sin)
    assert not report.ok, report
    assert report.grad_vs_autodiff == np.inf and report.grad_vs_fd == np.inf
    assert report.value_vs_autodiff == 0.0 and report.reference_vs_fd < gradcheck.FD_RTOL
    assert any(line.startswith("grad_vs_autodiff:") for line in report.nonfinite), report.nonfinite
    alone = gradcheck.check(_sin_with_bad_vjp(bad), rng.standard_normal(6))  # finite differences only
    assert not alone.ok and alone.grad_vs_fd == np.inf and alone.nonfinite


def test_a_nan_value_fails_even_without_a_reference(rng):
    report = gradcheck.check(lambda x: jnp.sin(x) * jnp.nan, rng.standard_normal(4))
    assert not report.ok and report.nonfinite


def test_nonfinite_entries_compare_as_infinite_errors_unless_both_sides_agree():
    nan, inf = np.nan, np.inf
    assert gradcheck.relative_error(np.array([nan, nan]), np.array([1.0, 2.0])) == inf
    assert gradcheck.relative_error(np.array([1.0, 2.0]), np.array([1.0, nan])) == inf
    assert gradcheck.relative_error(np.array([1.0, inf]), np.array([1.0, 2.0])) == inf
    assert gradcheck.relative_error(np.array([1.0, -inf]), np.array([1.0, inf])) == inf
    assert gradcheck.relative_error([np.array(1.0), np.array([nan])], [np.array(1.0), np.array([0.0])]) == inf
    # the same NaN or infinity on both sides is agreement; the finite entries are compared as before
    assert gradcheck.relative_error(np.array([nan, inf, 2.2]), np.array([nan, inf, 2.0])) == pytest.approx(0.1)
    assert gradcheck.nonfinite_mismatch(np.array([1.0, nan]), np.array([1.0, 3.0])) == "leaf 0 at (1,): nan vs 3.0"


def test_the_test_helpers_refuse_nan_and_inf():
    from helpers import assert_close, assert_matches_reference, per_array_error

    good = {"a": np.ones(3), "b": np.arange(3.0)}
    for bad in (np.nan, np.inf):
        broken = {"a": np.ones(3), "b": np.array([0.0, bad, 2.0])}
        assert per_array_error(broken, good) == np.inf and per_array_error(good, broken) == np.inf
        with pytest.raises(AssertionError, match="relative error inf"):
            assert_close(broken, good, 1e-3)
        with pytest.raises(AssertionError, match="cotangent of argument 0: relative error inf"):
            assert_matches_reference(_sin_with_bad_vjp(bad), jnp.sin, [np.linspace(0.1, 1.0, 5)])


def test_a_correct_vjp_passes(rng):
    x, w = rng.standard_normal((2, 7, 3)), rng.standard_normal((3, 3, 2))
    report = gradcheck.check(
        lambda x, w: ops.conv(x, w, stride=2), x, w, reference=lambda x, w: reference.conv(x, w, stride=2)
    )
    assert report.ok
    assert report.grad_vs_autodiff <= gradcheck.AUTODIFF_RTOL and report.grad_vs_fd <= gradcheck.FD_RTOL


def test_a_slightly_wrong_vjp_fails_both_checks(rng):
    x = rng.standard_normal((5, 4))
    report = gradcheck.check(_wrong_relu, x, reference=lambda v: jnp.maximum(v, 0))
    assert not report.ok
    assert report.grad_vs_autodiff > 1e-3 and report.grad_vs_fd > 1e-3
    assert report.reference_vs_fd < gradcheck.FD_RTOL  # the oracle itself is right


def test_finite_differences_alone_catch_a_misrouted_gradient(rng):
    report = gradcheck.check(_off_by_one_stride, rng.standard_normal(8))
    assert np.isnan(report.grad_vs_autodiff)
    assert report.grad_vs_fd > 0.1 and not report.ok


def test_check_runs_in_float64_and_restores_the_setting():
    seen = []

    def f(x):
        seen.append(x.dtype)
        return x * 2

    with jax.enable_x64(False):
        gradcheck.check(f, np.ones(3, np.float32))
        assert jnp.ones(1).dtype == jnp.float32
    assert all(d == jnp.float64 for d in seen)


def test_relative_error():
    assert gradcheck.relative_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert gradcheck.relative_error(np.array([1.0, 2.1]), np.array([1.0, 2.0])) == pytest.approx(0.05)
    assert gradcheck.relative_error(np.array([1e-3]), np.array([0.0])) == np.inf


def test_default_cases_cover_every_op():
    covered = {c.op for c in gradcheck.default_cases()}
    assert set(ops.__all__) | {"softmax_cross_entropy", "mse"} <= covered


@pytest.mark.slow
def test_cli_prints_a_table_and_passes(capsys):
    assert main(["gradcheck", "--op", "conv_transpose", "--op", "max_pool"]) == 0
    out = capsys.readouterr().out
    assert "max rel. err vs autodiff" in out and "| conv_transpose" in out and "| max_pool" in out
    assert "0 failed" in out and "FAIL" not in out


def test_cli_exits_nonzero_on_failure(monkeypatch, capsys):
    # Break the hand-derived max-pool backward (route everything to the last offset) and the command
    # must notice.
    from jaxcnn.ops import pool

    monkeypatch.setattr(pool, "first_argmax", lambda slices: jnp.full(slices[0].shape, len(slices) - 1))
    assert main(["gradcheck", "--op", "max_pool"]) == 1
    captured = capsys.readouterr()
    assert "| max_pool" in captured.out and "FAIL" in captured.out
    assert "FAILED max_pool" in captured.err


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_cli_fails_an_op_whose_vjp_returns_nan_or_inf(monkeypatch, capsys, bad):
    broken = _sin_with_bad_vjp(bad)
    monkeypatch.setattr(ops, "tanh", broken)
    monkeypatch.setattr(reference, "tanh", jnp.sin)  # the twin of the broken op: its VJP is right
    assert main(["gradcheck", "--op", "tanh"]) == 1
    captured = capsys.readouterr()
    assert "| tanh" in captured.out and "FAIL" in captured.out and "inf" in captured.out
    assert "FAILED tanh" in captured.err and "grad_vs_autodiff: leaf 0" in captured.err


def test_cli_rejects_unknown_op(capsys):
    assert main(["gradcheck", "--op", "nope"]) == 2
    assert "Unknown op: 'nope'. It needs to be one of ['adaptive_avg_pool', " in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "jaxcnn", "gradcheck", "--op", "relu"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "| relu" in out.stdout
