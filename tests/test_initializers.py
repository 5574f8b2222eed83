"""Initializers: fans, empirical moments and bounds, name lookup, and how layers use them."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import initializers as inits
from jaxcnn import layers

KEY = jax.random.key(0)
# A conv kernel (*window, in, out): fan_in = 3*3*32 = 288, fan_out = 3*3*64 = 576; 18,432 samples.
SHAPE = (3, 3, 32, 64)
FAN_IN, FAN_OUT = 288, 576


@pytest.mark.parametrize(
    "shape, fans",
    [
        ((), (1, 1)),
        ((7,), (7, 7)),
        ((5, 3), (5, 3)),
        ((4, 2, 6), (8, 24)),  # 1-D conv: window 4
        (SHAPE, (FAN_IN, FAN_OUT)),
        ((2, 3, 4, 5, 6), (2 * 3 * 4 * 5, 2 * 3 * 4 * 6)),  # 3-D conv
    ],
)
def test_compute_fans(shape, fans):
    assert inits.compute_fans(shape) == fans


# (initializer, variance as a function of the fans, uniform bound or None for a normal)
MOMENTS = [
    (inits.he_normal, 2 / FAN_IN, None),
    (inits.he_uniform, 2 / FAN_IN, math.sqrt(6 / FAN_IN)),
    (inits.glorot_normal, 2 / (FAN_IN + FAN_OUT), None),
    (inits.glorot_uniform, 2 / (FAN_IN + FAN_OUT), math.sqrt(6 / (FAN_IN + FAN_OUT))),
    (inits.lecun_normal, 1 / FAN_IN, None),
    (inits.lecun_uniform, 1 / FAN_IN, math.sqrt(3 / FAN_IN)),
    (inits.pytorch_default, 1 / (3 * FAN_IN), 1 / math.sqrt(FAN_IN)),
]


@pytest.mark.parametrize("init, variance, bound", MOMENTS, ids=lambda v: getattr(v, "__name__", ""))
def test_empirical_variance_and_bounds(init, variance, bound):
    w = init(KEY, SHAPE)
    assert w.shape == SHAPE and w.dtype == jnp.float32
    w = np.asarray(w, np.float64)
    n = w.size
    # The sample variance of n draws has relative standard error sqrt(2/n) ~ 1% (normal) or less
    # (uniform); 5% is about five standard errors.
    assert abs(w.mean()) < 5 * math.sqrt(variance / n)
    assert w.var() == pytest.approx(variance, rel=0.05)
    if bound is None:
        # untruncated normal: about 0.27% of the samples lie beyond 3 standard deviations
        beyond = np.mean(np.abs(w) > 3 * math.sqrt(variance))
        assert 0.0015 < beyond < 0.0045
    else:
        assert np.all(np.abs(w) <= bound)
        assert np.max(np.abs(w)) > 0.99 * bound  # the whole interval is used


def test_constants_and_dtype():
    assert np.array_equal(inits.zeros(KEY, (2, 3)), np.zeros((2, 3)))
    assert np.array_equal(inits.ones(KEY, (4,)), np.ones(4))
    assert inits.he_normal(KEY, (3, 4), jnp.float64).dtype == jnp.float64
    assert inits.glorot_uniform(KEY, (3, 4), jnp.float16).dtype == jnp.float16


def test_same_key_same_values_other_key_other_values():
    a, b = inits.he_normal(KEY, (5, 5)), inits.he_normal(KEY, (5, 5))
    c = inits.he_normal(jax.random.key(1), (5, 5))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_fan_overrides():
    # PyTorch's bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with the *kernel's* fan_in.
    b = inits.pytorch_default(KEY, (10_000,), fan_in=25)
    assert np.max(np.abs(b)) <= 0.2 and np.max(np.abs(b)) > 0.199
    w = inits.glorot_normal(KEY, (20_000,), fan_in=10, fan_out=30)
    assert np.var(w) == pytest.approx(2 / 40, rel=0.05)


def test_aliases_and_names():
    assert inits.kaiming_normal is inits.he_normal and inits.kaiming_uniform is inits.he_uniform
    assert inits.xavier_normal is inits.glorot_normal and inits.xavier_uniform is inits.glorot_uniform
    for name in inits.NAMES:
        assert inits.get(name) is getattr(inits, name)
    custom = lambda key, shape, dtype=jnp.float32: jnp.full(shape, 0.5, dtype)
    assert inits.get(custom) is custom


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"Unknown kernel_init: 'glorot'\. It needs to be .*'glorot_normal'"):
        inits.get("glorot", "kernel_init")
    with pytest.raises(TypeError, match="bias_init must be a callable or one of"):
        inits.get(3, "bias_init")
    with pytest.raises(ValueError, match="Unknown kernel_init: 'he'"):
        layers.Conv(4, (3, 3), kernel_init="he")


def test_call_checks_the_shape():
    bad = lambda key, shape, dtype=jnp.float32: jnp.zeros((1,), dtype)
    with pytest.raises(ValueError, match=r"returned shape \(1,\), expected \(2, 3\)"):
        inits.call(bad, KEY, (2, 3))


def test_layers_select_initializers_by_name_or_callable():
    # Dense(5) on 100 inputs: kernel (100, 5) has fan_in 100, so pytorch_default bounds both the
    # kernel and the bias by 1/sqrt(100) = 0.1.
    layer = layers.Dense(500, kernel_init="pytorch_default", bias_init="pytorch_default")
    _, params, _ = layer.init(KEY, (1, 100))
    for name in ("kernel", "bias"):
        assert np.max(np.abs(params[name])) <= 0.1 and np.max(np.abs(params[name])) > 0.09
    # The default: He-normal kernels and zero biases.
    _, params, _ = layers.Conv(256, (3, 3)).init(KEY, (1, 8, 8, 16))
    assert np.var(params["kernel"]) == pytest.approx(2 / (9 * 16), rel=0.05)
    assert np.array_equal(params["bias"], np.zeros(256))
    # A user callable.
    halves = lambda key, shape, dtype=jnp.float32: jnp.full(shape, 0.5, dtype)
    _, params, _ = layers.Conv(2, (1,), kernel_init=halves, bias_init="ones").init(KEY, (1, 4, 3))
    assert np.array_equal(params["kernel"], np.full((1, 3, 2), 0.5)) and np.array_equal(params["bias"], np.ones(2))


def test_transposed_and_depthwise_kernels_fans():
    # ConvTranspose's kernel is (*window, features // groups, C_in): fan_in = 9 * 64 (PyTorch's value).
    _, params, _ = layers.ConvTranspose(64, (3, 3)).init(KEY, (1, 4, 4, 32))
    assert params["kernel"].shape == (3, 3, 64, 32)
    assert np.var(params["kernel"]) == pytest.approx(2 / (9 * 64), rel=0.05)
    # Depthwise: each output channel sees one input channel, fan_in = 5 * 5.
    _, params, _ = layers.DepthwiseConv((5, 5), depth_multiplier=8).init(KEY, (1, 8, 8, 64))
    assert params["kernel"].shape == (5, 5, 1, 512)
    assert np.var(params["kernel"]) == pytest.approx(2 / 25, rel=0.05)
