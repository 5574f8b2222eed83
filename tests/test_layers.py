"""Layers and combinators: shapes init promises, agreement with the reference twins, batch norm, dropout,
key handling, serialization, jit, and the errors each bad argument gets."""

import re

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import jit_init, per_array_error

import jaxcnn
from jaxcnn import combinators, layers, reference
from jaxcnn.gradcheck import relative_error

KEY = jax.random.key(0)
R = layers.bind(reference)  # the same layers built from the autodiff twins
RTOL = 1e-10


def to64(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


def normal(shape, seed=0, dtype=jnp.float64):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


# (constructor name, positional args or None for a value layer, kwargs, input shapes to sweep)
CASES = [
    ("Conv", (4, (3, 3)), {}, [(1, 8, 8, 3), (3, 7, 9, 2)]),
    ("Conv", (4, (3,)), {"stride": 2, "padding": "SAME"}, [(2, 9, 3), (1, 16, 1)]),
    ("Conv", (4, (2, 3, 2)), {"dilation": (1, 2, 1), "padding": 1}, [(2, 5, 6, 4, 2)]),
    ("Conv", (6, 3), {"groups": 2, "stride": (2, 1), "padding": ((1, 0), (2, 1))}, [(2, 7, 6, 4), (1, 5, 5, 2)]),
    ("Conv", (5, 3), {"use_bias": False}, [(2, 6, 3), (2, 6, 6, 3), (1, 5, 5, 5, 2)]),  # rank from the input
    ("Conv", (6, (3, 2)), {"groups": 2, "stride": 2, "standardize": True}, [(2, 7, 6, 4)]),  # weight standardisation
    ("ConvTranspose", (4, (3, 3)), {"stride": 2, "padding": 1, "output_padding": 1}, [(2, 5, 5, 3), (1, 4, 6, 2)]),
    ("ConvTranspose", (4, (4,)), {"stride": 3, "padding": "SAME"}, [(2, 5, 2), (3, 1, 1)]),
    ("ConvTranspose", (6, (2, 3)), {"groups": 3, "dilation": 2}, [(2, 4, 4, 3)]),
    ("ConvTranspose", (2, (2, 2, 2)), {"stride": 2}, [(1, 2, 3, 2, 2)]),
    ("DepthwiseConv", ((3, 3),), {"depth_multiplier": 2, "stride": 2, "padding": "SAME"}, [(2, 8, 8, 3), (1, 5, 7, 1)]),
    ("SeparableConv", (5, (3, 3)), {"padding": 1}, [(2, 6, 6, 3)]),
    ("SeparableConv", (4, 3), {"depth_multiplier": 2, "stride": 2}, [(2, 9, 2), (1, 7, 7, 7, 1)]),
    ("Dense", (7,), {}, [(3, 5), (2, 4, 5)]),
    ("Dense", (7,), {"use_bias": False}, [(3, 5)]),
    ("MaxPool", ((2, 2),), {}, [(2, 6, 6, 3), (1, 7, 5, 2)]),
    ("MaxPool", (3,), {"stride": 2, "padding": "SAME"}, [(2, 7, 3), (1, 6, 6, 6, 1)]),
    ("AvgPool", ((2,),), {"stride": 1, "padding": ((1, 0),), "count_include_pad": False}, [(2, 7, 3)]),
    ("AvgPool", (2,), {}, [(2, 4, 4, 4, 2), (3, 5, 4, 1)]),
    ("MaxPool", (3,), {"stride": 2, "ceil_mode": True}, [(2, 8, 8, 3), (1, 7, 6, 2)]),
    ("MaxPool", (2,), {"stride": 2, "padding": 1, "ceil_mode": True}, [(2, 5, 3)]),
    ("AdaptiveAvgPool", ((3, 2),), {}, [(2, 7, 5, 3)]),
    ("AdaptiveAvgPool", (4,), {}, [(2, 9, 3), (1, 2, 2, 2, 1)]),
    ("AdaptiveAvgPool", ((None, 2),), {}, [(2, 5, 6, 2)]),
    ("LocalResponseNorm", (5,), {"k": 2.0}, [(2, 4, 4, 7), (3, 6)]),
    ("LocalResponseNorm", (4,), {"alpha": 1e-2, "beta": 0.5}, [(2, 5, 3)]),
    ("LpPool", ((2, 2),), {"p": 3.0}, [(2, 6, 6, 3)]),
    ("LpPool", (3,), {"p": 1.5, "stride": 1}, [(1, 5, 2)]),
    ("GlobalAvgPool", None, {}, [(2, 5, 5, 3), (3, 7, 2), (1, 2, 3, 4, 5)]),
    ("GlobalMaxPool", None, {}, [(2, 5, 5, 3), (3, 7, 2)]),
    ("Flatten", None, {}, [(2, 5, 5, 3), (3, 4)]),
    ("Identity", None, {}, [(2, 5, 5, 3)]),
    ("Relu", None, {}, [(2, 5, 5, 3), (4, 3)]),
    ("LeakyRelu", (0.2,), {}, [(2, 5, 3)]),
    ("Sigmoid", None, {}, [(2, 5, 3)]),
    ("Tanh", None, {}, [(2, 5, 3)]),
    ("Softmax", None, {}, [(2, 5, 3), (3, 10)]),
    ("LogSoftmax", None, {}, [(2, 5, 3), (3, 10)]),
    ("Dropout", (0.3,), {}, [(2, 5, 3), (4, 6)]),
    ("BatchNorm", (), {}, [(4, 3, 3, 2), (5, 3), (2, 3, 3, 3, 2)]),
    ("BatchNorm", (), {"momentum": 0.5, "epsilon": 1e-3}, [(6, 4)]),
    ("GroupNorm", (2,), {}, [(2, 4, 3, 6), (3, 5, 4)]),
    ("GroupNorm", (1,), {"epsilon": 1e-3}, [(2, 3, 3, 2, 3)]),
]


def build(namespace, name, args, kwargs):
    attr = getattr(namespace, name)
    return attr if args is None else attr(*args, **kwargs)


def case_id(case):
    name, args, kwargs, _ = case
    return name + ("" if args is None else repr(args) + (repr(kwargs) if kwargs else ""))


# Every layer at its first input shape in the default tier, at the others in the slow one.
SHAPE_CASES = [
    pytest.param(name, args, kwargs, shape, id=f"{case_id((name, args, kwargs, None))}-{shape}",
                 marks=[pytest.mark.slow] if i else [])
    for name, args, kwargs, shapes in CASES
    for i, shape in enumerate(shapes)
]  # fmt: skip


@pytest.mark.parametrize("name, args, kwargs, shape", SHAPE_CASES)
def test_apply_shape_equals_init_shape(name, args, kwargs, shape):
    layer = build(layers, name, args, kwargs)
    out_shape, params, state = jit_init(layer, KEY, shape)
    x = normal(shape, dtype=jnp.float32)
    train = name in ("Dropout", "BatchNorm")  # the layers whose train mode differs
    apply = jax.jit(lambda p, s, x: layer.apply(p, s, x, key=jax.random.key(1), train=train))  # one compile
    y, new_state = apply(params, state, x)
    assert y.shape == tuple(out_shape) and y.dtype == jnp.float32
    assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)
    for a, b in zip(jax.tree_util.tree_leaves(new_state), jax.tree_util.tree_leaves(state), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
    # Other batch sizes and the other mode with the same params (traced only: shapes, not values).
    for batch in (1, shape[0] + 2):
        x2 = jax.ShapeDtypeStruct((batch, *shape[1:]), jnp.float32)
        y2, _ = jax.eval_shape(
            lambda x, train=not train: layer.apply(params, state, x, key=jax.random.key(1), train=train), x2
        )
        assert y2.shape == (batch, *out_shape[1:])


@pytest.mark.parametrize("name, args, kwargs, shapes", CASES, ids=[case_id(c) for c in CASES])
def test_value_and_gradient_equal_reference_twin(name, args, kwargs, shapes):
    """The layer's value and its gradient (params and input) equal those of the same layer built from
    jaxcnn.reference (differentiated by autodiff), in float64, to 1e-10."""
    shape = shapes[0]
    layer, twin = build(layers, name, args, kwargs), build(R, name, args, kwargs)
    _, params, state = jit_init(layer, KEY, shape)
    params, state = to64(params), to64(state)
    x = normal(shape)
    y0, _ = jax.eval_shape(lambda p, x: layer.apply(p, state, x, key=jax.random.key(1), train=True), params, x)
    cotangent = normal(y0.shape, seed=2)

    def loss(model):
        def f(p, x):
            y, new_state = model.apply(p, state, x, key=jax.random.key(1), train=True)
            return jnp.sum(y * cotangent), (y, new_state)

        return f

    value_and_grad = lambda model: jax.jit(jax.value_and_grad(loss(model), argnums=(0, 1), has_aux=True))
    (_, (y, st)), grads = value_and_grad(layer)(params, x)
    (_, (y_ref, st_ref)), grads_ref = value_and_grad(twin)(params, x)
    assert per_array_error(y, y_ref) <= RTOL
    assert per_array_error(st, st_ref) <= RTOL
    assert per_array_error(grads, grads_ref) <= RTOL
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(grads_ref)


LAYER_OPS = {
    "Conv": {"conv": 1},
    "ConvTranspose": {"conv_transpose": 1},
    "DepthwiseConv": {"conv": 1},
    "SeparableConv": {"conv": 2},
    "Dense": {"dense": 1},
    "MaxPool": {"max_pool": 1},
    "AvgPool": {"avg_pool": 1},
    "LpPool": {"lp_pool": 1},
    "AdaptiveAvgPool": {"adaptive_avg_pool": 1},
    "LocalResponseNorm": {"lrn": 1},
    "GlobalAvgPool": {"global_avg_pool": 1},
    "GlobalMaxPool": {"global_max_pool": 1},
    "Relu": {"relu": 1},
    "LeakyRelu": {"leaky_relu": 1},
    "Sigmoid": {"sigmoid": 1},
    "Tanh": {"tanh": 1},
    "Softmax": {"softmax": 1},
    "LogSoftmax": {"log_softmax": 1},
    "GroupNorm": {"group_norm": 1},
    "BatchNorm": {"batch_norm": 1},  # train mode; eval mode is an affine map in jax.numpy
    "Flatten": {},
    "Identity": {},
    "Dropout": {},
}


@pytest.mark.parametrize("name, args, kwargs, shapes", CASES, ids=[case_id(c) for c in CASES])
def test_layers_compute_through_their_ops_and_init_runs_none(name, args, kwargs, shapes):
    calls = []

    class Spy:
        def __getattr__(self, op_name):
            def counted(*a, **k):
                calls.append(op_name)
                return getattr(jaxcnn.ops, op_name)(*a, **k)

            return counted

    layer = build(layers.bind(Spy()), name, args, kwargs)
    params, state = jax.eval_shape(lambda k: layer.init(k, shapes[0])[1:], KEY)
    assert calls == []
    x = jax.ShapeDtypeStruct(shapes[0], jnp.float32)
    jax.eval_shape(lambda p, s, x: layer.apply(p, s, x, key=KEY, train=True), params, state, x)
    expected = LAYER_OPS[name] | ({"weight_standardize": 1} if kwargs.get("standardize") else {})
    assert {op: calls.count(op) for op in set(calls)} == expected


# ---------------------------------------------------------------------------------------------
# Convolution layers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kernel, stride, in_shape, out_shape",
    [
        ((3, 3), 2, (2, 8, 8, 3), (2, 16, 16, 5)),  # kd > s: pads (0, 1)
        ((2,), 2, (1, 5, 3), (1, 10, 5)),  # kd == s: no padding
        ((1, 1), 3, (1, 2, 4, 3), (1, 6, 12, 5)),  # kd < s: output_padding s - kd
        ((4, 3), (2, 3), (2, 3, 4, 2), (2, 6, 12, 5)),
    ],
)
def test_conv_transpose_same_is_the_adjoint_of_conv_same(kernel, stride, in_shape, out_shape):
    """<conv(a), b> = <a, conv_transpose(b)> with one kernel: ConvTranspose(SAME) is Conv(SAME)'s adjoint."""
    conv_t = layers.ConvTranspose(out_shape[-1], kernel, stride=stride, padding="SAME", use_bias=False)
    shape, params, _ = conv_t.init(KEY, in_shape)
    assert shape == out_shape
    conv = layers.Conv(in_shape[-1], kernel, stride=stride, padding="SAME", use_bias=False)
    conv_shape, conv_params, _ = conv.init(KEY, out_shape)
    assert conv_shape == in_shape and conv_params["kernel"].shape == params["kernel"].shape
    params = to64(params)
    a, b = normal(out_shape, seed=1), normal(in_shape, seed=2)
    lhs = jnp.vdot(conv.apply(params, {}, a)[0], b)
    rhs = jnp.vdot(a, conv_t.apply(params, {}, b)[0])
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)


def test_depthwise_conv_is_grouped_conv_and_separable_is_depthwise_then_pointwise():
    x = normal((2, 7, 7, 3))
    dw = layers.DepthwiseConv((3, 3), depth_multiplier=2, padding=1)
    _, dw_params, _ = dw.init(KEY, x.shape)
    dw_params = to64(dw_params)
    grouped = layers.Conv(6, (3, 3), padding=1, groups=3)
    expected = grouped.apply(dw_params, {}, x)[0]
    np.testing.assert_array_equal(dw.apply(dw_params, {}, x)[0], expected)

    sep = layers.SeparableConv(4, (3, 3), depth_multiplier=2, padding=1)
    out_shape, params, _ = sep.init(KEY, x.shape)
    params = to64(params)
    assert {k: v.shape for k, v in params.items()} == {
        "depthwise": (3, 3, 1, 6),
        "pointwise": (1, 1, 6, 4),
        "bias": (4,),
    }
    h = grouped.apply({"kernel": params["depthwise"], "bias": jnp.zeros(6)}, {}, x)[0]
    expected = layers.Conv(4, (1, 1)).apply({"kernel": params["pointwise"], "bias": params["bias"]}, {}, h)[0]
    assert relative_error(sep.apply(params, {}, x)[0], expected) <= 1e-14
    assert out_shape == (2, 7, 7, 4)


def test_conv_kernel_rank_follows_the_arguments():
    # int kernel_size, tuple stride: two spatial axes
    layer = layers.Conv(3, 3, stride=(2, 1))
    assert layer.init(KEY, (1, 9, 9, 2))[0] == (1, 4, 7, 3)
    with pytest.raises(ValueError, match=re.escape("rank 4 (N, *spatial, C) to match stride=(2, 1), got (1, 9, 2)")):
        layer.init(KEY, (1, 9, 2))
    # an int kernel on 1-D, 2-D and 3-D inputs
    assert layers.Conv(3, 3).init(KEY, (1, 9, 2))[1]["kernel"].shape == (3, 2, 3)
    assert layers.Conv(3, 3).init(KEY, (1, 9, 9, 9, 2))[1]["kernel"].shape == (3, 3, 3, 2, 3)


def test_dense_acts_on_the_last_axis():
    layer = layers.Dense(3)
    _, params, _ = layer.init(KEY, (2, 4, 5))
    params = to64(params)
    x = normal((2, 4, 5))
    np.testing.assert_allclose(layer.apply(params, {}, x)[0], x @ params["kernel"] + params["bias"], rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------------------------


def test_dropout_rate_and_scaling():
    rate = 0.3
    layer = layers.Dropout(rate)
    x = jnp.ones((200_000,), jnp.float32)
    y, _ = layer.apply({}, {}, x, key=jax.random.key(3), train=True)
    dropped = np.mean(np.asarray(y) == 0)
    # binomial standard error sqrt(0.21 / 2e5) ~ 0.001
    assert abs(dropped - rate) < 0.005
    kept = np.asarray(y)[np.asarray(y) != 0]
    np.testing.assert_allclose(kept, 1 / (1 - rate), rtol=1e-6)
    assert abs(float(jnp.mean(y)) - 1.0) < 0.01  # inverted dropout keeps the expectation


def test_dropout_eval_is_identity_and_keys_are_explicit():
    layer = layers.Dropout(0.5)
    x = normal((4, 8, 8, 3), dtype=jnp.float32)
    assert layer.apply({}, {}, x)[0] is x
    assert layer.apply({}, {}, x, key=KEY, train=False)[0] is x
    a = layer.apply({}, {}, x, key=jax.random.key(7), train=True)[0]
    b = layer.apply({}, {}, x, key=jax.random.key(7), train=True)[0]
    c = layer.apply({}, {}, x, key=jax.random.key(8), train=True)[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a == 0, c == 0)
    with pytest.raises(ValueError, match=r"Dropout: apply\(\.\.\., train=True\) needs a PRNG key, got key=None"):
        layer.apply({}, {}, x, train=True)
    # rate 0 never drops
    assert layers.Dropout(0.0).apply({}, {}, x, key=KEY, train=True)[0] is x


def test_dropout_gradient_is_the_mask_over_keep_probability():
    layer = layers.Dropout(0.25)
    x = normal((1000,))
    g = jax.grad(lambda x: jnp.sum(layer.apply({}, {}, x, key=KEY, train=True)[0]))(x)
    y = layer.apply({}, {}, x, key=KEY, train=True)[0]
    np.testing.assert_allclose(g, np.where(np.asarray(y) != 0, 1 / 0.75, 0.0), rtol=1e-15)


# ---------------------------------------------------------------------------------------------
# Batch norm
# ---------------------------------------------------------------------------------------------


def test_batch_norm_train_normalises_and_updates_running_statistics():
    momentum, eps = 0.8, 1e-5
    layer = layers.BatchNorm(momentum=momentum, epsilon=eps)
    shape = (8, 5, 5, 3)
    _, params, state = layer.init(KEY, shape)
    params, state = to64(params), {"mean": jnp.array([1.0, -2.0, 0.5]), "var": jnp.array([2.0, 1.0, 0.5])}
    x = 3.0 * normal(shape) + jnp.array([5.0, -1.0, 0.0])
    y, new_state = layer.apply(params, state, x, train=True)
    axes = (0, 1, 2)
    np.testing.assert_allclose(np.mean(y, axis=axes), 0.0, atol=1e-12)
    xv = np.var(np.asarray(x), axis=axes)
    np.testing.assert_allclose(np.var(y, axis=axes), xv / (xv + eps), rtol=1e-12)  # ~1
    m = 8 * 5 * 5
    batch_mean = np.mean(np.asarray(x), axis=axes)
    unbiased = np.var(np.asarray(x), axis=axes) * m / (m - 1)
    np.testing.assert_allclose(new_state["mean"], momentum * state["mean"] + (1 - momentum) * batch_mean, rtol=1e-12)
    np.testing.assert_allclose(new_state["var"], momentum * state["var"] + (1 - momentum) * unbiased, rtol=1e-12)
    # scale and offset apply after normalising
    params2 = {"scale": jnp.array([2.0, 1.0, 0.5]), "offset": jnp.array([0.0, 1.0, -1.0])}
    y2, _ = layer.apply(params2, state, x, train=True)
    np.testing.assert_allclose(y2, y * params2["scale"] + params2["offset"], rtol=1e-12, atol=1e-12)


def test_batch_norm_running_statistics_converge_and_carry_no_gradient():
    layer = layers.BatchNorm(momentum=0.5)
    _, params, state = layer.init(KEY, (64, 2))
    x = jnp.asarray(np.random.default_rng(0).normal([3.0, -1.0], [2.0, 0.5], (64, 2)), jnp.float32)
    for _ in range(40):
        _, state = layer.apply(params, state, x, train=True)
    assert state["mean"].dtype == jnp.float32  # the state keeps its dtype
    np.testing.assert_allclose(state["mean"], np.mean(x, axis=0), rtol=1e-5)
    np.testing.assert_allclose(state["var"], np.var(x, axis=0, ddof=1), rtol=1e-5)

    def running_mean(x):
        return jnp.sum(layer.apply(to64(params), to64(state), x, train=True)[1]["mean"])

    np.testing.assert_array_equal(jax.grad(running_mean)(normal((64, 2))), np.zeros((64, 2)))


def test_batch_norm_eval_uses_running_statistics_deterministically():
    layer = layers.BatchNorm(epsilon=1e-3)
    _, params, _ = layer.init(KEY, (4, 3))
    params = {"scale": jnp.array([1.0, 2.0, 3.0]), "offset": jnp.array([0.5, 0.0, -0.5])}
    state = {"mean": jnp.array([1.0, 2.0, 3.0]), "var": jnp.array([4.0, 1.0, 0.25])}
    x = normal((4, 3))
    y, new_state = layer.apply(params, state, x)
    expected = (x - state["mean"]) / np.sqrt(state["var"] + 1e-3) * params["scale"] + params["offset"]
    np.testing.assert_allclose(y, expected, rtol=1e-13)
    assert new_state is state
    # one example at a time gives the same rows (no batch statistics in eval mode)
    np.testing.assert_array_equal(layer.apply(params, state, x[1:2])[0], y[1:2])


def test_batch_norm_under_jit_with_static_train():
    layer = layers.BatchNorm()
    _, params, state = layer.init(KEY, (4, 6, 6, 3))
    traces = []  # the train flag of each trace: a recompilation starts with a retrace

    def counted(*args, train):
        traces.append(train)
        return layer.apply(*args, train=train)

    apply = jax.jit(counted, static_argnames="train")
    x1, x2 = normal((4, 6, 6, 3), seed=1, dtype=jnp.float32), normal((4, 6, 6, 3), seed=2, dtype=jnp.float32)
    y, s1 = apply(params, state, x1, train=True)
    y_eager, s_eager = layer.apply(params, state, x1, train=True)
    np.testing.assert_allclose(y, y_eager, rtol=1e-5, atol=1e-6)
    assert relative_error(s1, s_eager) < 1e-6
    _, s2 = apply(params, s1, x2, train=True)  # same shapes and dtypes: no recompilation
    assert traces == [True] and apply._cache_size() <= 1  # (see _cache_size in tests/helpers.py)
    y_eval, s_eval = apply(params, s2, x1, train=False)
    np.testing.assert_allclose(y_eval, layer.apply(params, s2, x1)[0], rtol=1e-5, atol=1e-6)
    assert traces == [True, False] and apply._cache_size() <= 2
    with pytest.raises(TypeError, match="train must be a Python bool"):
        layer.apply(params, state, x1, train=jnp.array(True))


def test_batch_norm_needs_two_elements_per_channel_in_train_mode():
    layer = layers.BatchNorm()
    _, params, state = layer.init(KEY, (1, 3))
    with pytest.raises(ValueError, match=r"at least 2 elements per channel, got x of shape \(1, 3\)"):
        layer.apply(params, state, jnp.ones((1, 3)), train=True)
    layer.apply(params, state, jnp.ones((1, 3)))  # eval mode is fine


# ---------------------------------------------------------------------------------------------
# Combinators
# ---------------------------------------------------------------------------------------------


def test_user_example_serial_conv_relu_flatten_dense():
    model = jaxcnn.serial(
        jaxcnn.layers.Conv(32, (3, 3)), jaxcnn.layers.Relu, jaxcnn.layers.Flatten, jaxcnn.layers.Dense(10)
    )
    out_shape, params, state = model.init(jax.random.key(0), (1, 28, 28, 1))
    assert out_shape == (1, 10)
    x = jnp.zeros((5, 28, 28, 1), jnp.float32)
    y, new_state = model.apply(params, state, x)
    assert y.shape == (5, 10) and new_state == ({}, {}, {}, {})
    assert isinstance(params, tuple) and len(params) == 4 and params[1] == {}
    assert params[0]["kernel"].shape == (3, 3, 1, 32) and params[3]["kernel"].shape == (26 * 26 * 32, 10)


def test_serial_splits_the_key_once_per_layer():
    model = combinators.serial(layers.Dropout(0.5), layers.Identity, layers.Dropout(0.5))
    _, params, state = model.init(KEY, (3, 50))
    x = jnp.ones((3, 50), jnp.float32)
    key = jax.random.key(11)
    y, _ = model.apply(params, state, x, key=key, train=True)
    k0, _, k2 = jax.random.split(key, 3)
    d = layers.Dropout(0.5)
    expected = d.apply({}, {}, d.apply({}, {}, x, key=k0, train=True)[0], key=k2, train=True)[0]
    np.testing.assert_array_equal(y, expected)
    # and the params/state are tuples, one entry per layer
    assert params == ({}, {}, {}) and state == ({}, {}, {})
    # key=None reaches every child as None: eval mode needs no key
    np.testing.assert_array_equal(model.apply(params, state, x)[0], x)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        model.apply(params, state, x, train=True)


def test_serial_init_errors_say_which_layer():
    model = combinators.serial(layers.Flatten, layers.Conv(4, (3, 3)))
    with pytest.raises(ValueError, match=r"Conv: input_shape must have rank 4") as info:
        model.init(KEY, (2, 8, 8, 3))
    assert "in serial: layer 1 of 2" in info.value.__notes__
    with pytest.raises(ValueError, match=r"serial: params must be a tuple with one entry per layer \(2\)"):
        model.apply(((),), ((), ()), jnp.ones((2, 8, 8, 3)))


def test_fan_out_parallel_concatenate_inception_block():
    block = combinators.serial(
        combinators.fan_out(3),
        combinators.parallel(
            layers.Conv(4, (1, 1)),
            combinators.serial(layers.Conv(2, (1, 1)), layers.Relu, layers.Conv(5, (3, 3), padding=1)),
            layers.MaxPool((3, 3), stride=1, padding=1),
        ),
        combinators.concatenate(),
    )
    out_shape, params, state = block.init(KEY, (2, 6, 6, 3))
    assert out_shape == (2, 6, 6, 4 + 5 + 3)
    twin = combinators.serial(
        combinators.fan_out(3),
        combinators.parallel(
            R.Conv(4, (1, 1)),
            combinators.serial(R.Conv(2, (1, 1)), R.Relu, R.Conv(5, (3, 3), padding=1)),
            R.MaxPool((3, 3), stride=1, padding=1),
        ),
        combinators.concatenate(),
    )
    params = to64(params)
    x = normal((2, 6, 6, 3))
    y, _ = block.apply(params, state, x)
    assert y.shape == out_shape
    g = jax.grad(lambda p, x: jnp.sum(block.apply(p, state, x)[0] ** 2), argnums=(0, 1))(params, x)
    g_ref = jax.grad(lambda p, x: jnp.sum(twin.apply(p, state, x)[0] ** 2), argnums=(0, 1))(params, x)
    assert per_array_error(g, g_ref) <= RTOL
    # parallel alone: tuple in, tuple out
    par = combinators.parallel(layers.Dense(2), layers.Identity)
    shapes, p, s = par.init(KEY, ((4, 3), (4, 7)))
    assert shapes == ((4, 2), (4, 7))
    ys, _ = par.apply(p, s, (jnp.ones((4, 3)), jnp.ones((4, 7))))
    assert isinstance(ys, tuple) and ys[0].shape == (4, 2) and ys[1].shape == (4, 7)


def test_residual_adds_block_and_shortcut():
    block = layers.Conv(8, (3, 3), stride=2, padding=1)
    shortcut = layers.Conv(8, (1, 1), stride=2)
    res = combinators.residual(block, shortcut)
    out_shape, params, state = res.init(KEY, (2, 7, 7, 4))
    assert out_shape == (2, 4, 4, 8) and set(params) == {"block", "shortcut"}
    x = normal((2, 7, 7, 4), dtype=jnp.float32)
    y, _ = res.apply(params, state, x)
    expected = block.apply(params["block"], {}, x)[0] + shortcut.apply(params["shortcut"], {}, x)[0]
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    # identity shortcut
    res_id = combinators.residual(layers.Relu)
    np.testing.assert_array_equal(res_id.apply(*res_id.init(KEY, (2, 3))[1:], x)[0], jax.nn.relu(x) + x)
    with pytest.raises(
        ValueError,
        match=re.escape("residual: block output shape (2, 4, 4, 8) and shortcut output shape (2, 7, 7, 4) must agree"),
    ):
        combinators.residual(block).init(KEY, (2, 7, 7, 4))


# ---------------------------------------------------------------------------------------------
# Serialization, optax, bind
# ---------------------------------------------------------------------------------------------


def test_params_and_state_survive_flax_serialization():
    model = combinators.serial(
        layers.Conv(4, (3, 3)), layers.BatchNorm(), combinators.residual(layers.Dense(4)), layers.Flatten
    )
    _, params, state = model.init(KEY, (2, 6, 6, 3))
    _, state = model.apply(params, state, normal((2, 6, 6, 3), dtype=jnp.float32), train=True)
    blob = flax.serialization.to_bytes((params, state))
    _, template_params, template_state = model.init(jax.random.key(5), (2, 6, 6, 3))
    restored = flax.serialization.from_bytes((template_params, template_state), blob)
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure((params, state))
    for a, b in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves((params, state)), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_bind_builds_the_same_layers_on_other_ops():
    assert R.ops is reference and layers.bind(jaxcnn.ops).ops is jaxcnn.ops
    names = set(layers.__all__) - {"Layer", "InitFn", "ApplyFn", "bind"}
    assert names <= set(vars(R))
    with pytest.raises(TypeError, match="ops is already bound"):
        R.Conv(3, 3, ops=jaxcnn.ops)
    with pytest.raises(TypeError, match="ops must provide conv"):
        layers.Conv(3, 3, ops=object())
    with pytest.raises(TypeError, match="ops must provide"):
        layers.bind(object())


# ---------------------------------------------------------------------------------------------
# Errors: construction time (configuration) and init time (shapes)
# ---------------------------------------------------------------------------------------------

CONSTRUCTION_ERRORS = [
    (lambda: layers.Conv(32, (3, 0)), ValueError, "kernel_size must be a positive int or tuple of ints, got (3, 0)"),
    (lambda: layers.Conv(32, (1, 2, 3, 4)), ValueError, "kernel_size must have 1, 2 or 3 entries"),
    (lambda: layers.Conv(32, "3"), TypeError, "kernel_size must be a positive int or tuple of ints, got '3'"),
    (lambda: layers.Conv(0, 3), ValueError, "features must be a positive int, got 0"),
    (lambda: layers.Conv(2.5, 3), TypeError, "features must be a positive int, got 2.5"),
    (lambda: layers.Conv(4, 3, stride=0), ValueError, "stride must be a positive int or tuple of ints, got 0"),
    (lambda: layers.Conv(4, 3, dilation=(1, -1)), ValueError, "dilation must be a positive int or tuple of ints"),
    (lambda: layers.Conv(4, (3, 3), stride=(1, 1, 1)), ValueError, "kernel_size=(3, 3), stride=(1, 1, 1)"),
    (lambda: layers.Conv(4, (3, 3), padding=(1, 1, 1)), ValueError, "one entry per spatial axis"),
    (lambda: layers.Conv(4, 3, padding="FULL"), ValueError, "padding must be one of ['VALID', 'SAME', "),
    (lambda: layers.Conv(4, 3, padding=-1), ValueError, "padding must be a non-negative int"),
    (lambda: layers.Conv(6, 3, groups=4), ValueError, "features (=6) must be divisible by groups (=4)"),
    (lambda: layers.Conv(6, 3, groups=0), ValueError, "groups must be a positive int, got 0"),
    (lambda: layers.Conv(6, 3, use_bias=1), TypeError, "use_bias must be a bool, got 1"),
    (lambda: layers.Conv(6, 3, standardize="yes"), TypeError, "standardize must be a bool, got 'yes'"),
    (lambda: layers.Conv(6, 3, bias_init="nope"), ValueError, "Unknown bias_init: 'nope'"),
    (lambda: layers.ConvTranspose(4, 3, output_padding=-1), ValueError, "output_padding must be a non-negative int"),
    (
        lambda: layers.ConvTranspose(4, (3, 3), output_padding=(1,)),
        ValueError,
        "one entry per spatial axis, got kernel_size=(3, 3), output_padding=(1,)",
    ),
    (
        lambda: layers.ConvTranspose(4, 3, padding="SAME", output_padding=1),
        ValueError,
        "output_padding must be 0 with padding='SAME'",
    ),
    (lambda: layers.ConvTranspose(5, 3, groups=2), ValueError, "features (=5) must be divisible by groups (=2)"),
    (lambda: layers.DepthwiseConv(3, depth_multiplier=0), ValueError, "depth_multiplier must be a positive int"),
    (lambda: layers.SeparableConv(0, 3), ValueError, "features must be a positive int, got 0"),
    (lambda: layers.Dense(-2), ValueError, "features must be a positive int, got -2"),
    (lambda: layers.MaxPool((2, 0)), ValueError, "window must be a positive int or tuple of ints, got (2, 0)"),
    (lambda: layers.AvgPool(2, stride=(1, 1), padding=(0,)), ValueError, "stride=(1, 1), padding=(0,)"),
    (lambda: layers.AvgPool(2, count_include_pad="yes"), TypeError, "count_include_pad must be a bool, got 'yes'"),
    (lambda: layers.LpPool(2, p=0.5), ValueError, "p must be a finite real number >= 1, got 0.5"),
    (lambda: layers.MaxPool(2, ceil_mode=1), TypeError, "ceil_mode must be a bool, got 1"),
    (
        lambda: layers.AdaptiveAvgPool((6, 0)),
        ValueError,
        "output_size must be a positive int or a tuple of 1-3 positive ints or None, got (6, 0)",
    ),
    (lambda: layers.LocalResponseNorm(0), ValueError, "size must be a positive int, got 0"),
    (
        lambda: layers.LocalResponseNorm(5, k=0.0),
        ValueError,
        "needs alpha >= 0, beta >= 0 and k > 0, got alpha=0.0001, beta=0.75, k=0.0",
    ),
    (lambda: layers.LeakyRelu("a"), TypeError, "negative_slope must be a real number, got 'a'"),
    (lambda: layers.Dropout(1.0), ValueError, "rate must be in [0, 1) (the probability of dropping), got 1.0"),
    (lambda: layers.Dropout(-0.1), ValueError, "rate must be in [0, 1)"),
    (lambda: layers.BatchNorm(momentum=1.5), ValueError, "momentum must be in [0, 1], got 1.5"),
    (lambda: layers.BatchNorm(epsilon=0.0), ValueError, "epsilon must be positive, got 0.0"),
    (lambda: layers.GroupNorm(0), ValueError, "groups must be a positive int, got 0"),
    (lambda: layers.GroupNorm(2, epsilon=-1.0), ValueError, "epsilon must be positive, got -1.0"),
    (lambda: combinators.fan_out(0), ValueError, "n must be a positive int, got 0"),
    (lambda: combinators.concatenate("x"), TypeError, "axis must be an int, got 'x'"),
    (lambda: combinators.serial(layers.Relu, layers.Dense), TypeError, "serial: argument 1 must be a Layer"),
    (lambda: combinators.residual(layers.Relu, "id"), TypeError, "residual: argument 1 must be a Layer"),
]


@pytest.mark.parametrize("make, error, message", CONSTRUCTION_ERRORS, ids=[m for _, _, m in CONSTRUCTION_ERRORS])
def test_construction_errors_name_the_argument_and_value(make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make()


INIT_ERRORS = [
    (layers.Conv(4, (3, 3)), (2, 8, 8), "Conv: input_shape must have rank 4 (N, *spatial, C) to match kernel_size"),
    (layers.Conv(4, 3), (2, 8), "Conv: input_shape must have rank 3, 4 or 5 (N, *spatial, C), got (2, 8)"),
    (layers.Conv(4, 3, groups=2), (2, 8, 8, 3), "input channels input_shape[-1] (=3) must be divisible by groups (=2)"),
    (layers.Conv(4, (5, 5)), (1, 3, 3, 1), "is larger than the padded input along spatial axis 0"),
    (layers.Conv(4, 3), (2, 0, 3), "input_shape must be (N, ..., C) with N >= 0 (or -1) and positive other sizes"),
    (layers.ConvTranspose(4, 3, groups=2), (1, 4, 3), "ConvTranspose: input channels input_shape[-1] (=3)"),
    (layers.ConvTranspose(4, 3, padding=3), (1, 1, 2), "padding ((3, 3),) is too large for input spatial shape"),
    (layers.Dense(3), (5,), "Dense: input_shape must be (N, ..., in) with rank >= 2, got (5,)"),
    (layers.MaxPool(3), (1, 2, 2, 1), "window 3 is larger than the padded input along spatial axis 0"),
    (layers.MaxPool((2, 2)), (1, 4, 4, 4, 1), "MaxPool: input_shape must have rank 4 (N, *spatial, C) to match window"),
    (layers.GlobalAvgPool, (2, 3), "GlobalAvgPool: input_shape must have rank 3, 4 or 5"),
    (layers.Flatten, (4,), "Flatten: input_shape must be (N, ...) with rank >= 2, got (4,)"),
    (layers.BatchNorm(), (4,), "BatchNorm: input_shape must be (N, ..., C) with rank >= 2, got (4,)"),
    (layers.GroupNorm(4), (2, 5, 6), "GroupNorm: groups must divide the input's 6 channels, got groups=4"),
    (layers.Relu, "abc", "Relu: input_shape must be a tuple of ints (N, ..., C), got 'abc'"),
    (combinators.concatenate(), ((2, 3), (3, 3)), "input shapes must agree except along axis -1, got [(2, 3), (3, 3)]"),
    (combinators.concatenate(axis=3), ((2, 3), (2, 3)), "concatenate: axis (=3) is out of range"),
    (combinators.parallel(layers.Relu, layers.Relu), ((2, 3),), "parallel: input_shape must be a tuple with one entry"),
]


@pytest.mark.parametrize("layer, shape, message", INIT_ERRORS, ids=[m for _, _, m in INIT_ERRORS])
def test_init_errors_name_the_shape(layer, shape, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        layer.init(KEY, shape)


def test_the_ops_own_checks_at_init_note_the_layer_and_shape():
    with pytest.raises(ValueError, match="kernel of size 5 with dilation 1") as info:
        layers.Conv(4, (5, 5)).init(KEY, (1, 3, 3, 1))
    assert "while initialising Conv on input_shape (1, 3, 3, 1)" in info.value.__notes__
    with pytest.raises(ValueError, match="padding must be smaller than the window") as info:
        layers.AvgPool(2, padding=2).init(KEY, (1, 6, 1))
    assert "while initialising AvgPool on input_shape (1, 6, 1)" in info.value.__notes__


def test_init_needs_a_key():
    with pytest.raises(ValueError, match="serial: init needs a PRNG key"):
        combinators.serial(layers.Dense(2)).init(None, (1, 3))
