"""Faster formulations chosen per shape equal the textbook ones they replace (benchmarks/NOTES.md)."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close

from jaxcnn import ops, reference, xla_cpu
from jaxcnn.gradcheck import relative_error
from jaxcnn.ops.conv import (
    MAX_DEPTHWISE_TAPS,
    MAX_NARROW_PRODUCTS,
    MAX_WEIGHT_GRAD_CHUNKS,
    MIN_PATCH_SIZE_TO_CHUNK,
    ConvSpec,
    conv_spec,
    conv_transpose_spec,
    depthwise_forward,
    depthwise_input_grad,
    depthwise_weight_grad,
    forward,
    input_grad,
    is_depthwise,
    is_narrow,
    is_pointwise,
    narrow_forward,
    weight_grad,
    weight_grad_chunked,
    weight_grad_chunks,
    weight_grad_pointwise,
)


def test_weight_grad_chunk_policy():
    big = MIN_PATCH_SIZE_TO_CHUNK
    assert weight_grad_chunks(128, jnp.float32, big) == 8
    assert weight_grad_chunks(100, jnp.float32, big) == 7  # 7 chunks of 15, the last padded with 5 zero examples
    assert weight_grad_chunks(31, jnp.float32, big) == 1
    assert weight_grad_chunks(4096, jnp.bfloat16, big) == MAX_WEIGHT_GRAD_CHUNKS
    assert weight_grad_chunks(128, jnp.float64, big) == 1
    assert weight_grad_chunks(128, jnp.float32, big - 1) == 1  # too little work per example (MNIST-1D convs)


def test_under_xla_s_own_emitter_lenet_size_convolutions_are_not_chunked(monkeypatch):
    lenet_conv1, resnet20_last = 28 * 28 * 25, 8 * 8 * 9 * 64  # patch entries per example
    assert weight_grad_chunks(128, jnp.float32, lenet_conv1, route="ynnpack") == 8
    assert weight_grad_chunks(128, jnp.float32, lenet_conv1, route="xla") == 1
    assert weight_grad_chunks(128, jnp.float32, resnet20_last, route="xla") == 8
    for flags, route in [
        ("", "ynnpack"),
        ("--xla_backend_optimization_level=0", "ynnpack"),
        (xla_cpu.XLA_CPU_CONVOLUTIONS, "xla"),  # what jaxcnn train sets
        ("--xla_cpu_experimental_ynn_fusion_type=individual_dot", "xla"),
        ("--xla_cpu_experimental_ynn_fusion_type=individual_convolution", "ynnpack"),
    ]:
        monkeypatch.setenv("XLA_FLAGS", flags)
        assert xla_cpu.convolution_route() == route, flags
        assert weight_grad_chunks(128, jnp.float32, lenet_conv1) == (1 if route == "xla" else 8)


CONFIGS = [
    ((37, 9, 8, 4), (3, 2, 2, 6), dict(stride=(2, 3), padding=((1, 2), (0, 1)), dilation=(1, 2), groups=2)),
    ((40, 11, 3), (5, 3, 4), dict(stride=2, padding=1)),
    ((33, 5, 4, 4, 2), (2, 3, 2, 2, 3), dict(stride=(2, 1, 1), padding="SAME")),
    ((48, 8, 8, 4), (3, 3, 1, 8), dict(padding=1, groups=4)),
]


@pytest.mark.parametrize("x_shape,w_shape,kw", CONFIGS)
@pytest.mark.parametrize(
    "chunks", [pytest.param(2, marks=pytest.mark.slow), 3, pytest.param(7, marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-13), (np.float32, 2e-6)])
def test_chunked_weight_grad_equals_textbook(x_shape, w_shape, kw, chunks, dtype, rtol, rng):
    x = jnp.asarray(rng.standard_normal(x_shape), dtype)
    w = jnp.asarray(rng.standard_normal(w_shape), dtype)
    spec = conv_spec(x, w, kw.get("stride", 1), kw.get("padding", "VALID"), kw.get("dilation", 1), kw.get("groups", 1))
    dz = jnp.asarray(rng.standard_normal(ops.conv(x, w, **kw).shape), dtype)
    window = w_shape[: len(w_shape) - 2]
    textbook = jax.jit(lambda x, dz: weight_grad(x, dz, window, spec))(x, dz)
    chunked = jax.jit(lambda x, dz: weight_grad_chunked(x, dz, window, spec, chunks))(x, dz)
    assert_close(chunked, textbook, rtol, "chunked")


def test_float32_conv_gradient_uses_chunks_and_matches_autodiff(rng):
    # batch 64 in float32, 16x16 output positions x 9 taps x 8 channels per example: the chunked path
    x = jnp.asarray(rng.standard_normal((64, 32, 32, 8)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 8, 5)), jnp.float32)
    assert weight_grad_chunks(x.shape[0], x.dtype, 16 * 16 * 9 * 8) == 4
    f = lambda impl: jax.grad(lambda w: jnp.sum(jnp.sin(impl.conv(x, w, stride=2, padding=1))))(w)
    assert_close(f(ops), f(reference), 2e-5, "dw")


def test_pointwise_policy():
    plain = ConvSpec(strides=(2, 2), padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1)
    assert is_pointwise((1, 1), plain)
    assert not is_pointwise((1, 3), plain)
    assert not is_pointwise((1, 1), plain._replace(padding=((0, 1), (0, 0))))
    assert not is_pointwise((1, 1), plain._replace(groups=2))


POINTWISE = [
    ((6, 9, 9, 3), (1, 1, 3, 4), 2),  # odd size: the last row is not read at stride 2
    ((6, 8, 8, 3), (1, 1, 3, 4), (1, 2)),
    ((6, 10, 3), (1, 3, 5), 3),
    ((3, 4, 5, 6, 2), (1, 1, 1, 2, 3), (1, 2, 3)),
]


@pytest.mark.parametrize("x_shape,w_shape,stride", POINTWISE)
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-13), (np.float32, 2e-6)])
def test_pointwise_weight_grad_equals_textbook(x_shape, w_shape, stride, dtype, rtol, rng):
    x = jnp.asarray(rng.standard_normal(x_shape), dtype)
    w = jnp.asarray(rng.standard_normal(w_shape), dtype)
    spec = conv_spec(x, w, stride, "VALID", 1, 1)
    dz = jnp.asarray(rng.standard_normal(ops.conv(x, w, stride=stride).shape), dtype)
    window = w_shape[: len(w_shape) - 2]
    assert is_pointwise(window, spec)
    assert_close(weight_grad_pointwise(x, dz, spec), weight_grad(x, dz, window, spec), rtol, "pointwise")


def test_float32_pointwise_conv_gradient_matches_autodiff(rng):
    x = jnp.asarray(rng.standard_normal((16, 9, 9, 8)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((1, 1, 8, 5)), jnp.float32)
    f = lambda impl: jax.grad(lambda x, w: jnp.sum(jnp.sin(impl.conv(x, w, stride=2))), argnums=(0, 1))(x, w)
    for got, want, name in zip(f(ops), f(reference), ["dx", "dw"]):
        assert_close(got, want, 2e-5, name)


def test_depthwise_policy():
    spec = ConvSpec(strides=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=8)
    assert is_depthwise((3, 3, 1, 8), spec)
    assert not is_depthwise((3, 3, 1, 16), spec)  # channel multiplier 2: the grouped convolution
    assert not is_depthwise((3, 3, 2, 8), spec._replace(groups=4))
    assert not is_depthwise((3, 3, 1, 32), spec._replace(groups=1))  # one input channel, 32 outputs
    assert is_depthwise((8, 8, 1, 8), spec) and MAX_DEPTHWISE_TAPS == 64
    assert not is_depthwise((5, 5, 5, 1, 8), spec)  # 125 taps: one slice each would slow compilation


DEPTHWISE = [
    ((4, 9, 8, 6), (3, 3), dict(stride=2, padding=1)),
    ((4, 10, 7, 5), (3, 2), dict(stride=(1, 2), padding=((2, 0), (0, 1)), dilation=(2, 1))),
    ((3, 12, 4), (5,), dict(stride=3, padding="SAME")),
    ((2, 5, 6, 4, 3), (3, 2, 2), dict(stride=(2, 1, 1), padding=1, dilation=(1, 2, 1))),
    ((4, 7, 7, 2), (1, 1), dict(stride=2)),
]


@pytest.mark.parametrize("x_shape,window,kw", DEPTHWISE)
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-13), (np.float32, 2e-6)])
def test_depthwise_pieces_equal_textbook(x_shape, window, kw, dtype, rtol, rng):
    c = x_shape[-1]
    x = jnp.asarray(rng.standard_normal(x_shape), dtype)
    w = jnp.asarray(rng.standard_normal((*window, 1, c)), dtype)
    spec = conv_spec(x, w, kw.get("stride", 1), kw.get("padding", "VALID"), kw.get("dilation", 1), c)
    assert is_depthwise(w.shape, spec)
    run = lambda piece, *args: jax.jit(lambda *a: piece(*a, spec))(*args)  # one compile per piece
    z = run(forward, x, w)
    assert_close(run(depthwise_forward, x, w), z, rtol, "forward")
    dz = jnp.asarray(rng.standard_normal(z.shape), dtype)
    dx = lambda piece: jax.jit(lambda dz, w: piece(dz, w, x_shape[1:-1], spec))(dz, w)
    assert_close(dx(depthwise_input_grad), dx(input_grad), rtol, "dx")
    dw = lambda piece: jax.jit(lambda x, dz: piece(x, dz, window, spec))(x, dz)
    assert_close(dw(depthwise_weight_grad), dw(weight_grad), rtol, "dw")


def test_narrow_policy():
    spec = ConvSpec(strides=(1, 1), padding=((2, 2), (2, 2)), dilation=(1, 1), groups=1)
    assert MAX_NARROW_PRODUCTS == 32
    assert is_narrow((5, 5, 1, 32), spec)  # Fashion-MNIST's / LeNet's first layer: 25 products
    assert is_narrow((3, 3, 3, 16), spec)  # a CIFAR network's RGB stem: 27
    assert not is_narrow((5, 5, 2, 32), spec)  # 50: the convolution emitter is as fast
    assert not is_narrow((7, 7, 3, 64), spec)  # torchvision's stem: 147
    assert not is_narrow((3, 3, 2, 4), spec._replace(groups=2))  # grouped kernels keep their own forms
    assert is_narrow((5, 1, 16), ConvSpec((1,), ((2, 2),), (1,), 1))  # MNIST-1D's first layer
    assert is_narrow((4, 8, 1, 2), spec) and not is_narrow((3, 11, 1, 2), spec)  # 32 products; 33
    assert not is_narrow((1, 1, 16, 32), spec)  # a 1x1 window: a pointwise product, left to the convolution
    assert not is_narrow((5, 5, 0, 4), spec) and not is_narrow((5, 5, 1, 0), spec)  # no channels


NARROW = [
    ((4, 9, 8, 1), (5, 5, 1, 6), dict(padding="SAME")),
    ((3, 11, 10, 3), (3, 3, 3, 5), dict(stride=2, padding=((1, 0), (2, 1)), dilation=(1, 2))),
    ((5, 13, 2), (4, 2, 3), dict(stride=3, padding=1, dilation=2)),
    ((2, 5, 6, 4, 1), (3, 2, 2, 1, 4), dict(stride=(2, 1, 1), padding=1)),
    ((4, 7, 7, 2), (2, 1, 2, 3), dict(stride=2)),
]


@pytest.mark.parametrize("x_shape,w_shape,kw", NARROW)
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-13), (np.float32, 2e-6)])
def test_narrow_forward_equals_textbook(x_shape, w_shape, kw, dtype, rtol, rng):
    x = jnp.asarray(rng.standard_normal(x_shape), dtype)
    w = jnp.asarray(rng.standard_normal(w_shape), dtype)
    spec = conv_spec(x, w, kw.get("stride", 1), kw.get("padding", "VALID"), kw.get("dilation", 1), 1)
    assert is_narrow(w.shape, spec)
    z = jax.jit(lambda x, w: forward(x, w, spec))(x, w)
    assert_close(jax.jit(lambda x, w: narrow_forward(x, w, spec))(x, w), z, rtol, "forward")


def test_narrow_forward_in_a_transposed_convolution_s_backward_pass(rng):
    """conv_transpose's input gradient is its convolution A's forward, whose spec can carry a negative high
    padding; A reading one channel through a 3x3 window (9 products) takes the shifted products."""
    x = jnp.asarray(rng.standard_normal((3, 5, 6, 4)), np.float64)
    w = jnp.asarray(rng.standard_normal((3, 3, 1, 4)), np.float64)  # A: 1 channel -> 4; the transpose: 4 -> 1
    spec, out_spatial = conv_transpose_spec(x, w, 2, 0, 1, 1, 1)  # padding 0, output_padding 1
    assert is_narrow(w.shape, spec) and min(hi for _, hi in spec.padding) < 0
    dy = jnp.asarray(rng.standard_normal((3, *out_spatial, 1)), np.float64)
    assert_close(narrow_forward(dy, w, spec), forward(dy, w, spec), 1e-13, "transpose dx")


def test_bfloat16_narrow_forward_sums_in_float32(rng):
    """25 bfloat16 products summed in float32 and rounded once: as accurate as the single convolution."""
    x32 = jnp.asarray(rng.standard_normal((8, 12, 12, 1)), jnp.float32)
    w32 = jnp.asarray(rng.standard_normal((5, 5, 1, 8)), jnp.float32)
    spec = conv_spec(x32, w32, 1, 2, 1, 1)
    exact = forward(x32, w32, spec)
    x, w = x32.astype(jnp.bfloat16), w32.astype(jnp.bfloat16)
    got = narrow_forward(x, w, spec)
    assert got.dtype == jnp.bfloat16
    budget = 1.2 * relative_error(forward(x, w, spec).astype(jnp.float32), exact) + 1e-4
    assert relative_error(got.astype(jnp.float32), exact) <= budget


def test_depthwise_transposed_convolution_pieces_equal_textbook(rng):
    # conv_transpose's convolution A can carry a negative high padding (output_padding < stride)
    x = jnp.asarray(rng.standard_normal((3, 5, 6, 4)), np.float64)
    w = jnp.asarray(rng.standard_normal((3, 3, 1, 4)), np.float64)
    spec, out_spatial = conv_transpose_spec(x, w, 2, 1, 1, 1, 4)
    y = input_grad(x, w, out_spatial, spec)
    assert_close(depthwise_input_grad(x, w, out_spatial, spec), y, 1e-13, "transpose forward")
    dy = jnp.asarray(rng.standard_normal(y.shape), np.float64)
    assert_close(depthwise_forward(dy, w, spec), forward(dy, w, spec), 1e-13, "transpose dx")
    assert_close(depthwise_weight_grad(dy, x, (3, 3), spec), weight_grad(dy, x, (3, 3), spec), 1e-13, "transpose dw")


def test_bfloat16_depthwise_conv_is_as_accurate_as_autodiff(rng):
    x = jnp.asarray(rng.standard_normal((64, 8, 8, 16)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((3, 3, 1, 16)), jnp.bfloat16)
    f = lambda impl, x, w: jnp.sum(impl.conv(x, w, padding=1, groups=16).astype(jnp.float32) ** 2)
    exact = jax.grad(lambda w: f(reference, x.astype(jnp.float32), w))(w.astype(jnp.float32))
    autodiff = jax.grad(lambda w: f(reference, x, w))(w)
    got = jax.grad(lambda w: f(ops, x, w))(w)
    assert got.dtype == jnp.bfloat16
    budget = 2 * relative_error(autodiff.astype(jnp.float32), exact) + 1e-3
    assert relative_error(got.astype(jnp.float32), exact) <= budget


def test_bfloat16_chunked_weight_grad_sums_chunks_in_float32(rng):
    x32 = jnp.asarray(rng.standard_normal((512, 8, 8, 8)), jnp.float32)
    dz32 = jnp.asarray(rng.standard_normal((512, 8, 8, 8)), jnp.float32)
    w = jnp.zeros((3, 3, 8, 8), jnp.float32)
    spec = conv_spec(x32, w, 1, 1, 1, 1)
    exact = weight_grad(x32, dz32, (3, 3), spec)
    x, dz = x32.astype(jnp.bfloat16), dz32.astype(jnp.bfloat16)
    chunked = weight_grad_chunked(x, dz, (3, 3), spec, MAX_WEIGHT_GRAD_CHUNKS)
    assert chunked.dtype == jnp.bfloat16
    textbook_error = relative_error(weight_grad(x, dz, (3, 3), spec).astype(jnp.float32), exact)
    # partial sums rounded to bfloat16 and added in bfloat16: 1.3e-2 here, against 4.3e-3 for one call
    assert relative_error(chunked.astype(jnp.float32), exact) <= 1.2 * textbook_error + 1e-4


# A pool's backward pass adds one term per window offset into each input position. For bfloat16 it
# widens the cotangent and rounds once (jaxcnn.ops._precision): the bfloat16 gradient is the float32
# backward pass on the same (bfloat16-valued) numbers, rounded to bfloat16.
OVERLAPPING_POOLS = [
    ("max_pool", dict(window=3, stride=1, padding="SAME")),
    ("max_pool", dict(window=3, stride=2, padding=1)),
    ("avg_pool", dict(window=3, stride=1, padding=1, count_include_pad=False)),
    ("avg_pool", dict(window=(3, 2), stride=(1, 2))),
]


@pytest.mark.parametrize("op,kwargs", OVERLAPPING_POOLS)
def test_bfloat16_pool_backward_is_the_float32_one_rounded_once(rng, op, kwargs):
    x = jnp.asarray(rng.standard_normal((4, 9, 8, 5)), jnp.bfloat16)
    pool = lambda x: getattr(ops, op)(x, **kwargs)  # noqa: E731
    dy = jnp.asarray(1 + rng.standard_normal(jax.eval_shape(pool, x).shape) / 64, jnp.bfloat16)
    (got,) = jax.vjp(pool, x)[1](dy)
    (wide,) = jax.vjp(pool, x.astype(jnp.float32))[1](dy.astype(jnp.float32))
    assert got.dtype == jnp.bfloat16
    assert bool(jnp.all(got == wide.astype(jnp.bfloat16)))


def test_bfloat16_lp_pool_backward_is_the_float32_one_rounded_once(rng):
    """Given the forward's (bfloat16) output, the whole backward is float32 arithmetic rounded once."""
    pool_ops = importlib.import_module("jaxcnn.ops.pool")  # the module (jaxcnn.ops.pool is not one)
    x = jnp.asarray(rng.standard_normal((4, 9, 8, 5)), jnp.bfloat16)
    spec = pool_ops.pool_spec(x, 3, 1, 1, "lp_pool")
    y = ops.lp_pool(x, 3, p=3.0, stride=1, padding=1)
    dy = jnp.asarray(1 + rng.standard_normal(y.shape) / 64, jnp.bfloat16)
    (got,) = pool_ops._lp_pool_bwd(spec, 3.0, (x, y), dy)
    wide = [a.astype(jnp.float32) for a in (x, y, dy)]
    (expected,) = pool_ops._lp_pool_bwd(spec, 3.0, tuple(wide[:2]), wide[2])
    assert got.dtype == jnp.bfloat16 and bool(jnp.all(got == expected.astype(jnp.bfloat16)))
