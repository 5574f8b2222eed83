"""Shared test utilities: compare an op's value and VJP with its reference twin's."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import models
from jaxcnn.gradcheck import nonfinite_mismatch, relative_error

F64_RTOL = 1e-10
F32_RTOL = 2e-5

# "Compiled once" is checked by counting traces (a recompilation starts with a retrace); a jitted
# function's ``_cache_size()`` is only bounded. That is JAX's C++ dispatch cache, one LRU of 8192 entries
# shared by every jitted function in the process: once a long test worker holds that many live ones, a
# new function's reads 0 however often it ran (seen in full-suite runs; reproduced in one process: after
# 8191 kept-alive jitted functions, a fresh one called twice read 0). Reported upstream as
# https://github.com/jax-ml/jax/issues/39078 (jax 0.10.2; ``jax.clear_caches()`` restores it).


def assert_close(actual, expected, rtol, what=""):
    err = relative_error(actual, expected)
    assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol:.1g}"


def assert_matches_reference(op, ref, args, *, rtol=F64_RTOL, seed=0, **kwargs):
    """``op(*args, **kwargs)`` and its VJP with a random cotangent equal ``ref``'s (autodiff) ones.

    Integer arguments are held fixed. Returns the op's output for further checks.
    """
    floats = [i for i, a in enumerate(args) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)]

    def bind(fn):
        def f(*float_args):
            full = list(args)
            for i, a in zip(floats, float_args):
                full[i] = a
            return fn(*full, **kwargs)

        return f

    float_args = [jnp.asarray(args[i]) for i in floats]
    rng = np.random.default_rng(seed)
    out_shapes = jax.eval_shape(bind(op), *float_args)
    cot = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype), out_shapes)

    @jax.jit  # one compilation per example instead of one per eager primitive
    def value_and_cotangents(float_args, cot):
        def run(fn):
            y, vjp = jax.vjp(bind(fn), *float_args)
            return y, vjp(cot)

        return run(op), run(ref)

    (y, grads), (y_ref, grads_ref) = value_and_cotangents(float_args, cot)
    assert jax.tree_util.tree_structure(y) == jax.tree_util.tree_structure(y_ref)
    for a, b in zip(jax.tree_util.tree_leaves(y), jax.tree_util.tree_leaves(y_ref)):
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
    assert_close(y, y_ref, rtol, "value")
    for i, (g, gr) in enumerate(zip(grads, grads_ref)):
        assert g.shape == gr.shape and g.dtype == float_args[i].dtype, (g.shape, g.dtype, float_args[i].dtype)
        assert_close(g, gr, rtol, f"cotangent of argument {floats[i]}")
    return y


def per_array_error(actual, expected, floor: float = 1e-4) -> float:
    """The largest relative error of any one array of two pytrees, each measured against its own scale
    (so a small array's error is not hidden by a large one's magnitude); infinite where one side has a NaN or
    an infinity the other does not. An array whose true values are
    all below ``floor`` times the largest in the tree -- an exact zero such as the gradient of a conv bias
    that batch norm removes -- is measured against that floor instead of its own rounding noise."""
    a_leaves, e_leaves = jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)
    assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(expected)
    if nonfinite_mismatch(actual, expected) is not None:
        return np.inf  # a NaN or infinity on one side only is never a small error
    finite = lambda x: np.nan_to_num(np.asarray(x, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    a_leaves, e_leaves = [finite(a) for a in a_leaves], [finite(e) for e in e_leaves]  # equal on both sides
    scales = [float(np.max(np.abs(e), initial=0.0)) for e in e_leaves]
    least = floor * max(scales, default=0.0)
    worst = 0.0
    for a, e, scale in zip(a_leaves, e_leaves, scales, strict=True):
        diff = float(np.max(np.abs(a - e), initial=0.0))
        if diff:
            worst = max(worst, diff / max(scale, least) if max(scale, least) > 0 else np.inf)
    return worst


def require(variable: str, reason: str) -> None:
    """Skip the calling test for a missing optional input, or fail when ``variable`` (``JAXCNN_REQUIRE_DATA``,
    ``JAXCNN_REQUIRE_TORCH``) is set: a run that promised the input must not skip silently."""
    if os.environ.get(variable) == "1":
        pytest.fail(f"{reason}, and {variable}=1 requires it")
    pytest.skip(reason)


def require_module(name: str, install: str, variable: str):
    """``import name``, or :func:`require` the missing module (``install`` says how to get it)."""
    try:
        return __import__(name)
    except ImportError:
        require(variable, f"{name} is not installed ({install})")


# The zoo's 224x224 networks (and the 100-layer CIFAR DenseNet-BC): their per-model tests run in the slow tier.
FULL_SIZE = {name for name, spec in models.MODELS.items() if spec.input_shape == (224, 224, 3)} | {"densenet_bc"}


def tiered(names, slow=FULL_SIZE):
    """``names`` as pytest parameters, those in ``slow`` marked ``slow``."""
    return [pytest.param(n, marks=pytest.mark.slow) if n in slow else n for n in names]


def jit_init(layer, key, input_shape):
    """``layer.init(key, input_shape)`` compiled as one function (eagerly, every initialiser of every
    kernel shape would compile on its own): ``(output_shape, params, state)``."""
    box = {}

    def init(key):
        box["out"], params, state = layer.init(key, input_shape)
        return params, state

    params, state = jax.jit(init)(key)
    return box["out"], params, state


def sigkill_after_checkpoint(argv, out, at_least: int, timeout: float = 240) -> int:
    """Start ``argv`` (a training run writing to ``out``), SIGKILL it as soon as its checkpoint has reached
    step ``at_least``, and return the step of the checkpoint it left."""
    import signal
    import subprocess
    import time

    from jaxcnn import checkpoint

    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, step = time.monotonic() + timeout, 0
        while time.monotonic() < deadline and proc.poll() is None and step < at_least:
            try:
                step = checkpoint.read_meta(out)["step"]
            except checkpoint.CheckpointError:
                step = 0
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return checkpoint.read_meta(out)["step"]
