"""Ready for accelerators: the formulation chosen per backend at lowering time (checked on the StableHLO a
GPU or TPU would get, lowered on this CPU), both formulations equal, a training loop that does not wait on
the host between log rows, a donated train state, and mixed precision that keeps its promise."""

import collections
import importlib
import json
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import tiered
from jax._src import array as jax_array

from jaxcnn import data, losses, models, ops, reference, train, xla_cpu

conv_module = importlib.import_module("jaxcnn.ops.conv")  # (jaxcnn.ops.conv is the function)
norm_module = importlib.import_module("jaxcnn.ops.norm")


def _lowered(name: str, batch: int, platform: str) -> str:
    spec = models.MODELS[name]
    model = models.build(name, 10, for_training=True)
    loss = train.aux_cross_entropy_loss if spec.outputs == "logits+aux" else train.cross_entropy_loss
    shape = (batch, *(min(n, 64) for n in spec.input_shape[:-1]), spec.input_shape[-1])
    state = jax.eval_shape(lambda: train.init_train_state(model, shape, optax.sgd(0.1), 0))
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    if spec.outputs == "images":  # the autoencoder: the gradient of its reconstruction error
        step = jax.jit(jax.grad(lambda p, s, x: losses.mse(model.apply(p, s, x)[0], x)))
        return step.trace(state.params, state.model_state, x).lower(lowering_platforms=(platform,)).as_text()
    step = train.make_train_step(model, optax.sgd(0.1), loss)
    traced = step.trace(state, x, jax.ShapeDtypeStruct((batch,), jnp.int32))
    return traced.lower(lowering_platforms=(platform,)).as_text()


# ---------------------------------------------------------------------------------------------
# The canonical convolutions, identified: every conv op of a network, recorded while it is traced, must
# lower to exactly the three convolutions the math prescribes (written out below from the derivation,
# not from jaxcnn's padding helpers), and to nothing else.
# ---------------------------------------------------------------------------------------------

_CONV_LINE = re.compile(
    r"stablehlo\.convolution\(.*dim_numbers = (?P<dims>.*?), window = \{stride = (?P<stride>\[[^]]*\]), "
    r"pad = (?P<pad>\[\[.*?\]\]), lhs_dilate = (?P<lhs>\[[^]]*\]), rhs_dilate = (?P<rhs>\[[^]]*\]).*?\} "
    r"\{batch_group_count = (?P<bgc>\d+) : i64, feature_group_count = (?P<fgc>\d+) : i64.*"
    r" : \(tensor<(?P<a>[\dx]+)x\w+>, tensor<(?P<b>[\dx]+)x\w+>\) -> tensor<(?P<out>[\dx]+)x\w+>"
)


def _found_convolutions(text: str) -> collections.Counter:
    """Every convolution of a StableHLO module as (dims, stride, pad, lhs_dilate, rhs_dilate, feature groups,
    batch groups, lhs shape, rhs shape, result shape)."""
    found = collections.Counter()
    for line in text.splitlines():
        if "stablehlo.convolution" in line:
            m = _CONV_LINE.search(line)
            assert m, line
            pad = tuple(tuple(int(v) for v in re.findall(r"-?\d+", p)) for p in m["pad"][1:-1].split("], ["))
            ints = lambda text: tuple(int(v) for v in re.findall(r"\d+", text))
            shape = lambda text: tuple(int(v) for v in text.split("x"))
            found[(m["dims"], ints(m["stride"]), pad, ints(m["lhs"]), ints(m["rhs"]), int(m["fgc"]), int(m["bgc"]),
                   shape(m["a"]), shape(m["b"]), shape(m["out"]))] += 1  # fmt: skip
    return found


_SPATIAL = {1: "0", 2: "0, 1", 3: "0, 1, 2"}


def _canonical(x_shape, w_shape, spec) -> dict[str, tuple]:
    """The three canonical convolutions of ``conv(x, w)`` (docs/derivations.md): the forward; the input
    gradient as ONE convolution of the cotangent with the flipped, channel-swapped kernel with
    ``lhs_dilation`` = stride, padded by (kd - 1 - lo, kd - 1 - hi + r); the weight gradient as ONE
    batch-grouped convolution of the input with the cotangent (``rhs_dilation`` = stride, window stride =
    dilation), the input padded by (lo, hi - r). r: the rows no strided window reached."""
    nd, (*n, c_in), (*k, _, c_out) = len(w_shape) - 2, x_shape[1:], w_shape
    g, s, d, pads = spec.groups, spec.strides, spec.dilation, spec.padding
    kd = [di * (ki - 1) + 1 for ki, di in zip(k, d)]
    o = [(ni + lo + hi - kdi) // si + 1 for ni, (lo, hi), kdi, si in zip(n, pads, kd, s)]
    r = [(ni + lo + hi - kdi) % si for ni, (lo, hi), kdi, si in zip(n, pads, kd, s)]
    z_shape, ones = (x_shape[0], *o, c_out), (1,) * nd
    sp = _SPATIAL[nd]
    fwd_dims, wgrad_dims = f"[b, {sp}, f]x[{sp}, i, o]->[b, {sp}, f]", f"[f, {sp}, b]x[i, {sp}, o]->[{sp}, b, f]"
    dx_pads = tuple((kdi - 1 - lo, kdi - 1 - hi + ri) for kdi, (lo, hi), ri in zip(kd, pads, r))
    dw_pads = tuple((lo, hi - ri) for (lo, hi), ri in zip(pads, r))
    return {
        "forward": (fwd_dims, s, pads, ones, d, g, 1, x_shape, w_shape, z_shape),
        "input gradient": (fwd_dims, ones, dx_pads, s, d, g, 1, z_shape, (*k, c_out // g, c_in), x_shape),
        "weight gradient": (wgrad_dims, d, dw_pads, ones, s, 1, g, x_shape, z_shape, w_shape),
    }


def _recorded_convolutions(monkeypatch) -> list[tuple[str, tuple, tuple, Any]]:
    """Records each conv and conv_transpose op traced from now on: (op, x shape, w shape, spec)."""
    calls = []
    for name, op in (("conv", conv_module._conv), ("conv_transpose", conv_module._conv_transpose)):

        def recorded(x, w, spec, *rest, name=name, op=op):
            calls.append((name, tuple(x.shape), tuple(w.shape), spec))
            return op(x, w, spec, *rest)

        monkeypatch.setattr(conv_module, f"_{name}", recorded)
    return calls


def _expected_convolutions(calls, input_shape) -> tuple[collections.Counter, collections.Counter]:
    """(every convolution the recorded ops prescribe, the input gradients that may be missing: those of
    ops fed by the model's input, which nothing differentiates). A transposed convolution y = A^T x is
    A's input gradient forward, A itself as its input gradient, A's weight gradient with input and
    cotangent exchanged."""
    expected, optional = collections.Counter(), collections.Counter()
    for op, x_shape, w_shape, spec in calls:
        if op == "conv":
            pieces = _canonical(x_shape, w_shape, spec)
            if x_shape == input_shape:
                optional[pieces["input gradient"]] += 1
        else:  # A maps y (the output) back to x; A's kernel is w
            y_shape = (x_shape[0], *_transposed_spatial(x_shape, w_shape, spec), w_shape[-2] * spec.groups)
            a = _canonical(y_shape, w_shape, spec)
            pieces = {
                "forward": a["input gradient"],
                "input gradient": a["forward"],
                "weight gradient": a["weight gradient"],
            }
        expected.update(pieces.values())
    return expected, optional


def _transposed_spatial(x_shape, w_shape, spec) -> list[int]:
    """The output length m of a transposed convolution: A (padding spec.padding, no unreached rows)
    maps m back to x's n = (m + lo + hi - kd) / s + 1."""
    k = w_shape[:-2]
    return [
        (n - 1) * s + d * (ki - 1) + 1 - lo - hi
        for n, ki, s, d, (lo, hi) in zip(x_shape[1:-1], k, spec.strides, spec.dilation, spec.padding)
    ]


@pytest.mark.parametrize("name", tiered(sorted(models.MODELS)))
def test_accelerators_get_exactly_the_canonical_convolutions(name, monkeypatch):
    """On cuda and tpu every conv op of the training step is exactly its three canonical convolutions --
    the forward, the input gradient as one convolution with lhs_dilation = stride, the weight gradient
    as one batch-grouped convolution -- identified by their dimension numbers, windows, paddings, group
    counts and shapes; no other convolution, no missing one (only input gradients nothing needs)."""
    calls = _recorded_convolutions(monkeypatch)
    batch, spec = 8, models.MODELS[name]
    input_shape = (batch, *(min(n, 64) for n in spec.input_shape[:-1]), spec.input_shape[-1])
    for platform in ("cuda", "tpu"):
        calls.clear()
        found = _found_convolutions(_lowered(name, batch, platform))
        expected, optional = _expected_convolutions(calls, input_shape)
        assert calls and not found - expected, (platform, "not canonical:", sorted(found - expected)[:3])
        missing = expected - found
        assert not missing - optional, (platform, "missing:", sorted(missing - optional)[:3])


def test_the_cpu_gets_its_own_formulation(monkeypatch):
    """The check above can fail: the CPU lowering of the same step chunks resnet20's weight gradients and
    writes out the zeros of strided input gradients, so its convolutions are not the canonical ones."""
    calls = _recorded_convolutions(monkeypatch)
    found = _found_convolutions(_lowered("resnet20", 64, "cpu"))
    expected, _ = _expected_convolutions(calls, (64, 32, 32, 3))
    assert found - expected and sum(found.values()) > sum(expected.values())
    assert not any(sig[3] != (1, 1) for sig in found)  # no lhs_dilation: the CPU upsamples explicitly


def _lowered_conv(mode: str, platform: str) -> str:
    """A strided depthwise and a strided dense convolution with their VJPs, traced under
    ``use_formulation(mode)`` and lowered for ``platform``."""
    x, w1, w2 = (jax.ShapeDtypeStruct(s, jnp.float32) for s in ((4, 9, 8, 6), (3, 3, 1, 6), (3, 3, 6, 4)))

    def f(x, w1, w2):
        return jnp.sum(ops.conv(ops.conv(x, w1, stride=2, padding=1, groups=6), w2, stride=2) ** 2)

    with ops.use_formulation(mode):
        traced = jax.jit(jax.grad(f, argnums=(0, 1, 2))).trace(x, w1, w2)
    return traced.lower(lowering_platforms=(platform,)).as_text()


def test_use_formulation_takes_effect_whatever_the_platform(monkeypatch):
    """``use_formulation("canonical")`` gives the canonical convolutions even when lowered for the CPU, and
    ``"cpu"`` gives the CPU's forms (shifted products, no lhs_dilation) even when lowered for a GPU."""
    calls = _recorded_convolutions(monkeypatch)
    canonical = _found_convolutions(_lowered_conv("canonical", "cpu"))
    expected, _ = _expected_convolutions(calls, None)
    assert canonical == expected and len(calls) == 2
    on_gpu = _found_convolutions(_lowered_conv("cpu", "cuda"))
    assert on_gpu != expected and not any(sig[3] != (1, 1) for sig in on_gpu)
    assert sum(on_gpu.values()) < 6  # the depthwise layer runs as shifted products: no convolution


CONFIGS = [  # (x shape, w shape, kwargs): strided, dilated, grouped, depthwise, pointwise, chunked batch
    ((4, 9, 8, 3), (3, 3, 3, 4), dict(stride=2, padding=1)),
    ((2, 10, 9, 4), (3, 2, 2, 6), dict(stride=(2, 3), padding=((1, 2), (0, 1)), dilation=(2, 1), groups=2)),
    ((3, 8, 8, 5), (3, 3, 1, 5), dict(stride=2, padding="SAME", groups=5)),
    ((3, 7, 7, 6), (1, 1, 6, 4), dict(stride=2)),
    ((2, 11, 5), (4, 5, 3), dict(stride=3, padding=((2, 1),), dilation=2)),
    ((48, 12, 12, 8), (3, 3, 8, 8), dict(padding=1)),  # float32: 3 chunks on the CPU
]


@pytest.mark.parametrize("x_shape, w_shape, kwargs", CONFIGS)
def test_both_formulations_equal_each_other_and_the_reference(x_shape, w_shape, kwargs):
    rng = np.random.default_rng(0)
    dtype = jnp.float32 if x_shape[0] >= 32 else jnp.float64
    x, w = (jnp.asarray(rng.standard_normal(s), dtype) for s in (x_shape, w_shape))
    f = lambda x, w: ops.conv(x, w, **kwargs)
    dz = jnp.asarray(rng.standard_normal(jax.eval_shape(f, x, w).shape), dtype)
    results = {}
    value_and_vjp = lambda f: jax.jit(lambda x, w, dz: (lambda y, vjp: (y, *vjp(dz)))(*jax.vjp(f, x, w)))
    for mode in ("cpu", "canonical"):
        with ops.use_formulation(mode):  # (applies when traced: inside the block)
            results[mode] = value_and_vjp(f)(x, w, dz)
    expected = value_and_vjp(lambda x, w: reference.conv(x, w, **kwargs))(x, w, dz)
    rtol = 1e-10 if dtype == jnp.float64 else 1e-5
    for got in results.values():
        for a, b in zip(got, expected):
            assert float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) <= rtol


def test_conv_transpose_formulations_agree():
    rng = np.random.default_rng(1)
    x, w = jnp.asarray(rng.standard_normal((2, 5, 4, 3))), jnp.asarray(rng.standard_normal((3, 3, 2, 3)))
    f = lambda x, w: ops.conv_transpose(x, w, stride=2, padding=1, output_padding=1)
    outs = []
    for mode in ("cpu", "canonical"):
        with ops.use_formulation(mode):
            y, vjp = jax.vjp(f, x, w)
            outs.append((y, *vjp(jnp.ones_like(y))))
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="Unknown formulation: 'gpu'"):
        ops.use_formulation("gpu").__enter__()


# ---------------------------------------------------------------------------------------------
# The loop does not wait on the host
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def device_reads(monkeypatch):
    """Counts the arrays read back to the host (every such read goes through ``ArrayImpl._value``)."""
    count = {"reads": 0}
    original = jax_array.ArrayImpl._value

    def counted(self):
        count["reads"] += 1
        return original.fget(self)

    monkeypatch.setattr(jax_array.ArrayImpl, "_value", property(counted))
    return count


def test_fit_reads_the_device_once_per_log_window_not_per_step(device_reads):
    reads = []
    for num_train, log_every in ((256, 8), (1024, 32)):  # 8 or 32 steps per log row, 2 rows per epoch
        ds = data.load("synthetic", image_shape=(28, 28), num_classes=4, num_train=num_train, num_test=64)
        device_reads["reads"] = 0
        # steps between log rows run under transfer_guard("disallow"): batches arrive by explicit device_put
        result = train.fit(
            models.lenet5(num_classes=4), ds, epochs=2, batch_size=16, optimizer=optax.sgd(0.1),
            log_every=log_every, progress=False, transfer_guard="disallow",
        )  # fmt: skip
        assert len([r for r in result.history if "loss" in r]) == 4 and int(result.state.step) == 2 * num_train // 16
        reads.append(device_reads["reads"])
    assert reads[0] == reads[1] and reads[0] < 16, reads  # the same for 4x the steps per window


def test_fit_prefetches_the_next_batch_and_waits_on_the_step_before_the_current_one(monkeypatch):
    """Double buffering, observed in the order of events: batch n + 1 is on its way to the device before
    step n is dispatched, and the loop waits on step n - 1 (never on the step it just dispatched), so
    at most two steps are queued and the device is never idle for the host."""
    from jaxcnn.train import loop

    events, put, steps = [], jax.device_put, {}

    def recording_put(batch, *args, **kwargs):
        events.append(("put", sum(e[0] == "put" for e in events)))
        return put(batch, *args, **kwargs)

    real_wait = jax.block_until_ready

    def recording_wait(tree):
        events.append(("wait", steps[id(tree)]))
        return real_wait(tree)

    real_make = loop.make_train_step

    def recording_make(*args, **kwargs):
        step = real_make(*args, **kwargs)

        def recorded(state, x, y):
            n = sum(e[0] == "step" for e in events)
            events.append(("step", n))
            new_state, metrics = step(state, x, y)
            steps[id(metrics)] = n
            return new_state, metrics

        return recorded

    monkeypatch.setattr(jax, "device_put", recording_put)
    monkeypatch.setattr(jax, "block_until_ready", recording_wait)
    monkeypatch.setattr(loop, "make_train_step", recording_make)
    ds = data.load("synthetic", image_shape=(28, 28), num_classes=4, num_train=96, num_test=16)
    train.fit(models.lenet5(num_classes=4), ds, epochs=1, batch_size=16, optimizer=optax.sgd(0.1), log_every=100,
              progress=False)  # fmt: skip
    at = {event: i for i, event in enumerate(events)}
    n_steps = 96 // 16
    assert [e for e in events if e[0] == "step"] == [("step", n) for n in range(n_steps)], events
    for n in range(n_steps - 1):
        assert at[("put", n + 1)] < at[("step", n)], ("batch", n + 1, "not sent before step", n, events)
    waits = [e[1] for e in events if e[0] == "wait"]
    assert waits == list(range(n_steps - 1)), events
    for n in range(n_steps - 1):
        assert at[("step", n + 1)] < at[("wait", n)] < at.get(("step", n + 2), len(events)), (n, events)


def test_the_train_state_is_donated_to_the_step():
    model, opt = models.lenet5(num_classes=4), optax.adam(1e-3)
    state = train.init_train_state(model, (8, 28, 28, 1), opt, 0)
    x, y = jnp.zeros((8, 28, 28, 1), jnp.float32), jnp.zeros((8,), jnp.int32)
    step = train.make_train_step(model, opt, donate=True)
    new_state, _ = step(state, x, y)
    assert all(leaf.is_deleted() for leaf in jax.tree_util.tree_leaves(state.params))
    assert not any(leaf.is_deleted() for leaf in jax.tree_util.tree_leaves(new_state.params))
    kept = train.make_train_step(model, opt)(new_state, x, y)  # the default keeps its argument
    assert not any(leaf.is_deleted() for leaf in jax.tree_util.tree_leaves(new_state.params)) and kept


def test_fit_donates_on_accelerators_by_default_and_gives_the_same_run_either_way():
    from types import SimpleNamespace

    from jaxcnn.train import loop

    def mesh_on(platform):
        return SimpleNamespace(devices=np.array([SimpleNamespace(platform=platform)]))

    assert [loop._donates(None, mesh_on(p)) for p in ("gpu", "tpu", "cpu")] == [True, True, False]
    assert loop._donates(None, None) is False  # this machine: XLA:CPU
    assert loop._donates(True, mesh_on("cpu")) and not loop._donates(False, mesh_on("gpu"))
    ds = data.load("synthetic", image_shape=(28, 28), num_classes=4, num_train=64, num_test=16)
    runs = [
        train.fit(
            models.lenet5(num_classes=4), ds, epochs=2, batch_size=16, optimizer=optax.adam(1e-2), log_every=2,
            progress=False, donate=donate,
        )
        for donate in (False, True)
    ]  # fmt: skip
    for a, b in zip(*(jax.tree_util.tree_leaves(r.state) for r in runs), strict=True):
        np.testing.assert_array_equal(a, b)

    def logged(run):
        return [{k: v for k, v in row.items() if k not in ("examples_per_s", "time_s")} for row in run.history]

    assert logged(runs[0]) == logged(runs[1]) and runs[0].test["loss"] == runs[1].test["loss"]


# ---------------------------------------------------------------------------------------------
# Mixed precision
# ---------------------------------------------------------------------------------------------


def test_batch_norm_saves_its_residuals_in_the_compute_dtype():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 6, 6, 4)), jnp.bfloat16)
    scale, offset = jnp.ones(4, jnp.float32), jnp.zeros(4, jnp.float32)
    _, (saved_x, mean, inv_std, *_) = norm_module._batch_norm_fwd(x, scale, offset, 1e-5)
    assert saved_x.dtype == jnp.bfloat16 and saved_x is x  # the activation itself, not a float32 xhat
    assert mean.dtype == inv_std.dtype == jnp.float32 and mean.shape == inv_std.shape == (4,)
    # and the gradient is still right: against the float32 computation on the same values
    loss = lambda x: jnp.sum(ops.batch_norm(x, scale, offset)[0].astype(jnp.float32) ** 3)
    g16, g32 = jax.grad(loss)(x), jax.grad(loss)(x.astype(jnp.float32))
    assert g16.dtype == jnp.bfloat16
    assert float(jnp.linalg.norm(g16.astype(jnp.float32) - g32) / jnp.linalg.norm(g32)) < 2e-2


@pytest.mark.parametrize("window", [(3, 3), (1, 1)])
def test_bfloat16_gradients_do_not_change_with_the_batch_size(window):
    """The same 16 examples twice over (32: chunked / a dot on the CPU) give twice the weight gradient of
    once (16: one convolution) -- every path sums bfloat16 products in float32 and rounds once."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((16, 16, 16, 32)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((*window, 32, 32)) * 0.1, jnp.bfloat16)
    out = 16 - window[0] + 1
    dz = jnp.asarray(rng.standard_normal((16, out, out, 32)), jnp.bfloat16)
    grad_w = lambda x, dz: jax.vjp(lambda w: ops.conv(x, w), w)[1](dz)[0]
    once = grad_w(x, dz).astype(jnp.float32)
    twice = grad_w(jnp.concatenate([x, x]), jnp.concatenate([dz, dz])).astype(jnp.float32)
    assert conv_module.weight_grad_chunks(32, jnp.bfloat16, 14 * 14 * 9 * 32) > 1  # the CPU chunks the 32
    np.testing.assert_allclose(np.asarray(twice), 2 * np.asarray(once), rtol=8e-3, atol=1e-2)
    # both within bfloat16 rounding of the float32 gradient
    exact = jax.vjp(lambda w: ops.conv(x.astype(jnp.float32), w), w.astype(jnp.float32))[1](dz.astype(jnp.float32))[0]
    assert float(jnp.max(jnp.abs(once - exact)) / jnp.max(jnp.abs(exact))) < 8e-3


def _product_types(text: str) -> list[tuple[str, str]]:
    """(operand dtype, result dtype) of every convolution and matrix product in a StableHLO module."""
    found = []
    for line in text.splitlines():
        if "stablehlo.convolution" in line or "stablehlo.dot_general" in line:
            match = re.search(r":\s*\(tensor<[^>]*x(\w+)>, tensor<[^>]*>\)\s*->\s*tensor<[^>]*x(\w+)>", line)
            if match:
                found.append(match.groups())
    return found


@pytest.mark.parametrize("platform", ["cuda", "cpu"])
def test_bfloat16_products_are_summed_in_float32(platform):
    """Under the bfloat16 policy every convolution and matrix product -- forward, input and weight
    gradients, chunked or not -- takes bfloat16 operands and produces float32 sums (rounded once after)."""
    model, opt = models.resnet20(), optax.sgd(0.1)
    state = jax.eval_shape(lambda: train.init_train_state(model, (64, 32, 32, 3), opt, 0))
    step = train.make_train_step(model, opt, compute_dtype=jnp.bfloat16)
    x, y = jax.ShapeDtypeStruct((64, 32, 32, 3), jnp.float32), jax.ShapeDtypeStruct((64,), jnp.int32)
    types = _product_types(step.trace(state, x, y).lower(lowering_platforms=(platform,)).as_text())
    bf16 = [result for operand, result in types if operand == "bf16"]
    assert len(bf16) >= 3 * 21 and set(bf16) == {"f32"}, sorted(set(types))


# ---------------------------------------------------------------------------------------------
# XLA:CPU's convolution route
# ---------------------------------------------------------------------------------------------

_ROUTE_PROBE = """
import sys
from jaxcnn import xla_cpu
before = sys.argv[1] == "before"
if not before:
    import jax.numpy as jnp; jnp.zeros(1).block_until_ready()  # the backend starts first: too late
added = xla_cpu.prefer_xla_cpu_convolutions()
import jax
conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
hlo = jax.jit(conv).lower(jax.numpy.ones((8, 14, 14, 32)), jax.numpy.ones((5, 5, 32, 64))).compile().as_text()
dot = jax.jit(lambda a, b: a @ b).lower(jax.numpy.ones((128, 512)), jax.numpy.ones((512, 256))).compile().as_text()
print(added, "ynn" in hlo, "ynn" in dot)
"""


def _probe(when: str, xla_flags: str | None, **extra: str) -> str:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXCNN_CPU_CONVOLUTIONS")} | extra
    env |= {"XLA_FLAGS": xla_flags} if xla_flags else {}
    done = subprocess.run(
        [sys.executable, "-c", _ROUTE_PROBE, when], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="a flag of XLA:CPU")
def test_xla_cpu_convolutions_are_chosen_before_the_backend_starts_and_only_then():
    import jaxlib.version

    if not jaxlib.version.__version__.startswith("0.10."):
        assert _probe("before", None)[0] == "False"  # other jaxlibs are left alone
        return
    assert _probe("before", None) == ["True", "False", "True"]  # XLA's own convolution, YNNPACK's product
    assert _probe("after", None) == ["False", "True", "True"]  # the flags were read already: nothing changes
    kept = "--xla_cpu_experimental_ynn_fusion_type=individual_convolution"
    assert _probe("before", kept) == ["False", "True", "False"]  # a route the user chose is kept
    assert _probe("before", None, JAXCNN_CPU_CONVOLUTIONS="jaxlib") == ["False", "True", "True"]  # the opt-out


def _convolutions_per_ynnpack_fusion(hlo: str) -> list[int]:
    """How many convolutions each YNNPACK fusion of a compiled XLA:CPU module holds."""
    called = re.findall(r'calls=(%[\w.-]+)[^\n]*"__ynn_fusion"', hlo)
    bodies = {m[1]: m[2] for m in re.finditer(r"^(%[\w.-]+) \([^\n]*\{\n(.*?)\n\}", hlo, re.S | re.M)}
    return [bodies[name].count(" convolution(") for name in called]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's fusion")
def test_an_inference_forward_keeps_one_convolution_per_fusion_on_xla_cpu():
    """jaxlib 0.10's default XLA:CPU route gives YNNPACK every op it can run. With the ReLU written as
    ``maximum`` it took a whole conv/ReLU/pool stack as one subgraph, and VGG-16's eval forward ran 2.2x
    slower than with one fusion per convolution. The training step (residuals split the graph) was unaffected."""
    from jaxcnn import combinators, layers

    conv = layers.Conv(32, (3, 3), padding="SAME")
    net = combinators.serial(conv, layers.Relu, conv, layers.Relu, layers.MaxPool((2, 2)), conv, layers.Relu)
    _, params, state = net.init(jax.random.PRNGKey(0), (2, 16, 16, 32))
    forward = jax.jit(lambda p, s, x: net.apply(p, s, x)[0])
    hlo = forward.lower(params, state, jnp.ones((2, 16, 16, 32), jnp.float32)).compile().as_text()
    counts = _convolutions_per_ynnpack_fusion(hlo)
    if sum(counts) == 0:
        pytest.skip("this XLA:CPU route gives YNNPACK no convolutions")
    assert counts == [1, 1, 1], counts


@pytest.mark.slow
def test_jaxcnn_train_records_the_route_it_trained_with(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    args = "train --dataset synthetic --epochs 1 --max-steps 2 --batch-size 16 --no-plots --out".split()
    done = subprocess.run(
        [sys.executable, "-m", "jaxcnn", *args, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    environment = json.loads((tmp_path / "summary.json").read_text())["environment"]
    assert environment["backend"] == jax.default_backend() and environment["jax"] == jax.__version__
    import jaxlib.version

    expected = xla_cpu.XLA_CPU_CONVOLUTIONS if jaxlib.version.__version__.startswith("0.10.") else ""
    assert environment["xla_flags"] == expected


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's route")
def test_a_bfloat16_run_gets_the_route_its_products_run_on_and_evaluates_on_it(tmp_path):
    """With YNNPACK's matrix products (the float32 route) XLA:CPU refused resnet20's bfloat16 step
    (a bfloat16 product accumulating in float32); bfloat16 runs get XLA's emitter, eval the run's route."""
    import os
    import subprocess
    import sys

    import jaxlib.version

    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXCNN_CPU_CONVOLUTIONS")}
    args = "train --model resnet20 --dataset synthetic --dtype bfloat16 --epochs 1 --max-steps 1 --no-plots --out"
    run = lambda *argv: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "jaxcnn", *argv], env=env, capture_output=True, text=True, timeout=300
    )
    trained = run(*args.split(), str(tmp_path))
    assert trained.returncode == 0, trained.stderr[-3000:]
    flags = json.loads((tmp_path / "summary.json").read_text())["environment"]["xla_flags"]
    if jaxlib.version.__version__.startswith("0.10."):
        assert flags == xla_cpu.XLA_CPU_ROUTES["bfloat16"] != xla_cpu.XLA_CPU_CONVOLUTIONS
    evaluated = run("eval", "--checkpoint", str(tmp_path))
    assert evaluated.returncode == 0 and "accuracy" in evaluated.stdout, evaluated.stderr[-3000:]
