"""Every op's value and cotangents equal its reference twin's ``jax.vjp``: 1e-10 in float64 over a
property-based sweep of configurations, float32 tolerances in float32."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import F32_RTOL, assert_matches_reference
from hypothesis import assume, given
from hypothesis import strategies as st

from jaxcnn import losses, ops, reference
from jaxcnn.ops._padding import dilated_size


@st.composite
def conv_configs(draw, max_nd=3):
    nd = draw(st.integers(1, max_nd))
    small = nd == 3  # keep 3-D volumes small
    window = tuple(draw(st.integers(1, 2 if small else 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2 if small else 3)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3 if small else 4)) for _ in range(nd))  # stride > kernel included
    mode = draw(st.sampled_from(["VALID", "SAME", "int", "pairs"]))
    if mode == "int":
        p = draw(st.integers(0, 2))
        pads, padding = ((p, p),) * nd, p
    elif mode == "pairs":
        pads = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(nd))
        padding = pads
    else:
        pads, padding = ((0, 0),) * nd, mode
    spatial = []
    for k, d, (lo, hi) in zip(window, dilation, pads):
        least = max(1, dilated_size(k, d) - lo - hi)
        spatial.append(least + draw(st.integers(0, 3 if small else 6)))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    depthwise = draw(st.booleans()) and groups == 1
    if depthwise:
        c_in = draw(st.integers(1, 4))
        groups, c_in_g, c_out = c_in, 1, c_in * draw(st.integers(1, 2))
    else:
        c_in_g = draw(st.integers(1, 3))
        c_in, c_out = groups * c_in_g, groups * draw(st.integers(1, 3))
    batch = draw(st.integers(1, 2))
    return dict(
        x_shape=(batch, *spatial, c_in),
        w_shape=(*window, c_in_g, c_out),
        kwargs=dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
    )


def _normal(rng, shape, dtype=np.float64):
    return jnp.asarray(rng.standard_normal(shape), dtype)


@given(conv_configs(), st.integers(0, 2**16))
def test_conv_matches_reference(cfg, seed):
    rng = np.random.default_rng(seed)
    x, w = _normal(rng, cfg["x_shape"]), _normal(rng, cfg["w_shape"])
    assert_matches_reference(ops.conv, reference.conv, (x, w), seed=seed, **cfg["kwargs"])


@given(conv_configs(), st.data())
def test_conv_transpose_matches_reference(cfg, data):
    kw = cfg["kwargs"]
    if isinstance(kw["padding"], str):
        kw = {**kw, "padding": 0}
    nd = len(cfg["w_shape"]) - 2
    output_padding = tuple(data.draw(st.integers(0, max(s, d) - 1)) for s, d in zip(kw["stride"], kw["dilation"]))
    # x is the transposed conv's input: channels = the conv kernel's out channels.
    x_shape = (*cfg["x_shape"][:-1], cfg["w_shape"][-1])
    for axis in range(nd):  # keep the output non-empty despite padding
        k, s, d = cfg["w_shape"][axis], kw["stride"][axis], kw["dilation"][axis]
        pads = kw["padding"] if isinstance(kw["padding"], int) else None
        lo, hi = (pads, pads) if pads is not None else kw["padding"][axis]
        while (x_shape[axis + 1] - 1) * s + dilated_size(k, d) - lo - hi <= 0:
            x_shape = (*x_shape[: axis + 1], x_shape[axis + 1] + 1, *x_shape[axis + 2 :])
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x, w = _normal(rng, x_shape), _normal(rng, cfg["w_shape"])
    y = assert_matches_reference(
        ops.conv_transpose, reference.conv_transpose, (x, w), output_padding=output_padding, **kw
    )
    assert y.shape[-1] == cfg["w_shape"][-2] * kw["groups"]


@st.composite
def pool_configs(draw):
    nd = draw(st.integers(1, 3))
    window = tuple(draw(st.integers(1, 2 if nd == 3 else 3)) for _ in range(nd))
    stride = draw(st.one_of(st.none(), st.tuples(*(st.integers(1, 4) for _ in range(nd)))))
    mode = draw(st.sampled_from(["VALID", "SAME", "pairs"]))
    if mode == "pairs":
        padding = tuple((draw(st.integers(0, k - 1)), draw(st.integers(0, k - 1))) for k in window)
    else:
        padding = mode
    spatial = tuple(k + draw(st.integers(0, 5)) for k in window)
    shape = (draw(st.integers(1, 2)), *spatial, draw(st.integers(1, 3)))
    return shape, dict(window=window, stride=stride, padding=padding)


@given(pool_configs(), st.integers(0, 2**16), st.booleans())
def test_max_pool_matches_reference(cfg, seed, with_ties):
    shape, kw = cfg
    rng = np.random.default_rng(seed)
    # Rounded values create ties inside windows: both must give the gradient to the first maximum.
    x = _normal(rng, shape) if not with_ties else jnp.asarray(rng.integers(-2, 3, shape), jnp.float64)
    assert_matches_reference(ops.max_pool, reference.max_pool, (x,), seed=seed, **kw)


@given(pool_configs(), st.integers(0, 2**16), st.booleans())
def test_avg_pool_matches_reference(cfg, seed, count_include_pad):
    shape, kw = cfg
    x = _normal(np.random.default_rng(seed), shape)
    assert_matches_reference(
        ops.avg_pool, reference.avg_pool, (x,), seed=seed, count_include_pad=count_include_pad, **kw
    )


@given(pool_configs(), st.integers(0, 2**16), st.sampled_from([1, 1.5, 2, 3, 4.5]))
def test_lp_pool_matches_reference(cfg, seed, p):
    shape, kw = cfg
    x = _normal(np.random.default_rng(seed), shape)
    assert_matches_reference(ops.lp_pool, reference.lp_pool, (x,), seed=seed, p=p, **kw)


@pytest.mark.parametrize("shape", [(2, 5, 3), (2, 4, 3, 2), (1, 2, 3, 2, 4)])
@pytest.mark.parametrize("name", ["global_avg_pool", "global_max_pool"])
def test_global_pools_match_reference(name, shape, rng):
    x = _normal(rng, shape)
    assert_matches_reference(getattr(ops, name), getattr(reference, name), (x,))
    ties = jnp.asarray(rng.integers(-1, 2, shape), jnp.float64)
    assert_matches_reference(getattr(ops, name), getattr(reference, name), (ties,))


@given(
    st.lists(st.integers(1, 4), min_size=0, max_size=2),
    st.integers(1, 5),
    st.integers(1, 5),
    st.booleans(),
    st.integers(0, 2**16),
)
def test_dense_matches_reference(lead, n_in, n_out, bias, seed):
    rng = np.random.default_rng(seed)
    args = [_normal(rng, (*lead, n_in)), _normal(rng, (n_in, n_out))]
    if bias:
        args.append(_normal(rng, (n_out,)))
    assert_matches_reference(ops.dense, reference.dense, tuple(args), seed=seed)


ELEMENTWISE = ["relu", "leaky_relu", "sigmoid", "tanh"]


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_activations_match_reference(name, scale, rng):
    x = _normal(rng, (3, 4, 5)) * scale
    assert_matches_reference(getattr(ops, name), getattr(reference, name), (x,))


def test_relu_propagates_nan_and_keeps_infinities_as_numpy_and_pytorch_do():
    x = np.array([np.nan, -np.inf, np.inf, -2.0, -0.0, 0.0, 3.5])
    np.testing.assert_array_equal(np.asarray(ops.relu(jnp.asarray(x))), np.maximum(x, 0.0))


def test_leaky_relu_slope(rng):
    x = _normal(rng, (4, 5))
    assert_matches_reference(ops.leaky_relu, reference.leaky_relu, (x,), negative_slope=0.2)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_matches_reference(name, axis, rng):
    x = _normal(rng, (3, 4, 5)) * 5
    assert_matches_reference(getattr(ops, name), getattr(reference, name), (x,), axis=axis)


@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.integers(1, 4), st.integers(0, 2**16))
def test_batch_norm_matches_reference(lead, channels, seed):
    rng = np.random.default_rng(seed)
    x = _normal(rng, (*lead, channels)) * 3 + 1
    if math.prod(lead) == 1:
        lead = [2, *lead]
        x = _normal(rng, (*lead, channels))
    scale, offset = _normal(rng, (channels,)), _normal(rng, (channels,))
    assert_matches_reference(ops.batch_norm, reference.batch_norm, (x, scale, offset), seed=seed, epsilon=1e-3)


@given(st.lists(st.integers(1, 4), min_size=0, max_size=2), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2**16))
def test_group_norm_matches_reference(spatial, groups, per_group, seed):
    rng = np.random.default_rng(seed)
    channels = groups * per_group
    x = _normal(rng, (2, *spatial, channels)) * 3 + 1
    scale, offset = _normal(rng, (channels,)), _normal(rng, (channels,))
    kw = dict(groups=groups, epsilon=1e-3)
    assert_matches_reference(ops.group_norm, reference.group_norm, (x, scale, offset), seed=seed, **kw)


@given(st.lists(st.integers(1, 3), min_size=1, max_size=4), st.integers(1, 5), st.integers(0, 2**16))
def test_weight_standardize_matches_reference(fan_in, c_out, seed):
    assume(math.prod(fan_in) != 2)  # two entries: the VJP is zero up to epsilon, and compares only rounding
    rng = np.random.default_rng(seed)
    w = _normal(rng, (*fan_in, c_out)) * 3 + 1  # a shift and a scale the standardisation removes
    # (the cotangent from another seed: one drawn like w would lie in the directions the VJP projects away)
    y = assert_matches_reference(ops.weight_standardize, reference.weight_standardize, (w,), seed=seed + 1)
    if math.prod(fan_in) > 1:  # every channel's filter centred, with unit norm (up to epsilon = 1e-8)
        rows, centred = np.asarray(y).reshape(-1, c_out), np.asarray(w).reshape(-1, c_out)
        centred = centred - centred.mean(0)
        np.testing.assert_allclose(rows.mean(0), 0, atol=1e-12)
        squares = (centred**2).sum(0)
        np.testing.assert_allclose((rows**2).sum(0), squares / (squares + 1e-8), rtol=1e-12)
    w32 = np.asarray(w, np.float32)
    assert_matches_reference(ops.weight_standardize, reference.weight_standardize, (w32,), rtol=F32_RTOL, seed=seed + 1)


@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**16))
def test_softmax_cross_entropy_matches_reference(batch, classes, seed):
    rng = np.random.default_rng(seed)
    logits = _normal(rng, (batch, classes)) * 4
    labels = jnp.asarray(rng.integers(0, classes, batch))
    assert_matches_reference(losses.softmax_cross_entropy, reference.softmax_cross_entropy, (logits, labels))


def test_mse_matches_reference(rng):
    a, b = _normal(rng, (4, 3)), _normal(rng, (4, 3))
    assert_matches_reference(losses.mse, reference.mse, (a, b))


# --- float32 --------------------------------------------------------------------------------


@given(conv_configs(max_nd=2), st.integers(0, 2**16))
def test_conv_float32(cfg, seed):
    rng = np.random.default_rng(seed)
    x, w = _normal(rng, cfg["x_shape"], np.float32), _normal(rng, cfg["w_shape"], np.float32)
    assert_matches_reference(ops.conv, reference.conv, (x, w), rtol=F32_RTOL, seed=seed, **cfg["kwargs"])


FLOAT32_CASES = [
    ("conv_transpose", dict(stride=2, padding=1, output_padding=1), [(2, 5, 5, 3), (3, 3, 4, 3)]),
    ("max_pool", dict(window=2), [(2, 6, 6, 3)]),
    ("avg_pool", dict(window=3, stride=2, padding="SAME", count_include_pad=False), [(2, 7, 7, 3)]),
    ("lp_pool", dict(window=2, p=2), [(2, 6, 6, 3)]),
    ("global_avg_pool", {}, [(2, 4, 4, 3)]),
    ("global_max_pool", {}, [(2, 4, 4, 3)]),
    ("dense", {}, [(4, 6), (6, 3), (3,)]),
    ("relu", {}, [(4, 6)]),
    ("leaky_relu", {}, [(4, 6)]),
    ("sigmoid", {}, [(4, 6)]),
    ("tanh", {}, [(4, 6)]),
    ("softmax", {}, [(4, 6)]),
    ("log_softmax", {}, [(4, 6)]),
    ("batch_norm", {}, [(8, 3, 3, 4), (4,), (4,)]),
    ("group_norm", dict(groups=2), [(3, 3, 3, 4), (4,), (4,)]),
]


@pytest.mark.parametrize("name,kwargs,shapes", FLOAT32_CASES, ids=[c[0] for c in FLOAT32_CASES])
def test_float32(name, kwargs, shapes, rng):
    args = tuple(_normal(rng, s, np.float32) for s in shapes)
    assert_matches_reference(getattr(ops, name), getattr(reference, name), args, rtol=F32_RTOL, **kwargs)
