"""Local response normalisation and adaptive average pooling: value and VJP against the reference twins
(float64, 1e-10, property-based), against PyTorch and against NumPy loops (group norm against PyTorch
too); ``adaptive_windows``; grad of grad, no forward mode, bfloat16; argument errors."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, assert_matches_reference, require_module
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from jaxcnn import ops, reference
from jaxcnn.ops.pool import adaptive_windows

# Each example compiles fresh shapes: fewer examples than the profile's default keep the file quick.
FEW = settings(max_examples=min(20, settings.default.max_examples))


def _normal(rng, shape, dtype=np.float64):
    return jnp.asarray(rng.standard_normal(shape), dtype)


# ---------------------------------------------------------------------------------------------
# vs the reference twins
# ---------------------------------------------------------------------------------------------


@st.composite
def lrn_configs(draw):
    lead = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))  # rank 2 to 4
    channels = draw(st.integers(1, 9))
    kwargs = dict(
        size=draw(st.integers(1, 11)),  # even and odd, also larger than C
        alpha=draw(st.sampled_from([1e-4, 0.1, 1.0, 2.5])),
        beta=draw(st.sampled_from([0.0, 0.5, 0.75, 1.3, 2.0])),
        k=draw(st.sampled_from([0.5, 1.0, 2.0])),
    )
    return (*lead, channels), kwargs


@FEW
@given(lrn_configs(), st.integers(0, 2**16), st.sampled_from([1.0, 3.0]))
def test_lrn_matches_reference(cfg, seed, scale):
    shape, kwargs = cfg
    x = _normal(np.random.default_rng(seed), shape) * scale
    assert_matches_reference(ops.lrn, reference.lrn, (x,), seed=seed, **kwargs)


@st.composite
def adaptive_configs(draw):
    nd = draw(st.integers(1, 3))
    spatial = tuple(draw(st.integers(1, 7 if nd < 3 else 4)) for _ in range(nd))
    if draw(st.booleans()):
        output_size = draw(st.integers(1, min(spatial) + 3))
    else:
        output_size = tuple(draw(st.one_of(st.none(), st.integers(1, n + 3))) for n in spatial)
    return (draw(st.integers(1, 2)), *spatial, draw(st.integers(1, 3))), output_size


@FEW
@given(adaptive_configs(), st.integers(0, 2**16))
def test_adaptive_avg_pool_matches_reference(cfg, seed):
    shape, output_size = cfg
    x = _normal(np.random.default_rng(seed), shape)
    y = assert_matches_reference(
        ops.adaptive_avg_pool, reference.adaptive_avg_pool, (x,), seed=seed, output_size=output_size
    )
    sizes = output_size if isinstance(output_size, tuple) else (output_size,) * (len(shape) - 2)
    assert y.shape == (shape[0], *(n if m is None else m for n, m in zip(shape[1:-1], sizes)), shape[-1])


# ---------------------------------------------------------------------------------------------
# vs PyTorch (NCHW: channels moved to axis 1), float64
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch():
    return require_module("torch", "pip install -e '.[torch]'", "JAXCNN_REQUIRE_TORCH")


def _to_torch(torch, a):
    a = np.asarray(a)
    return torch.from_numpy(np.moveaxis(a, -1, 1).copy())


def _from_torch(t):
    return np.moveaxis(t.detach().numpy(), 1, -1)


def _torch_value_and_grad(torch, fn, x, u):
    xt = _to_torch(torch, x).requires_grad_(True)
    yt = fn(xt)
    yt.backward(_to_torch(torch, u))
    return _from_torch(yt), _from_torch(xt.grad)


def _jax_value_and_grad(fn, x, u):
    y, vjp = jax.vjp(fn, x)
    return np.asarray(y), np.asarray(vjp(jnp.asarray(u))[0])


LRN_TORCH = [
    ((2, 5, 4, 16), dict(size=5, alpha=1e-4, beta=0.75, k=2.0)),  # AlexNet
    ((2, 5, 4, 7), dict(size=4, alpha=0.5, beta=0.75, k=1.0)),
    ((2, 6, 5), dict(size=2, alpha=1.0, beta=0.5, k=1.5)),
    ((1, 3, 2, 4, 6), dict(size=6, alpha=2.0, beta=1.2, k=0.7)),  # even, == C
    ((2, 3, 3, 3), dict(size=7, alpha=0.3, beta=0.75, k=1.0)),  # larger than C
    ((2, 4, 4, 8), dict(size=3, alpha=1.5, beta=2.0, k=0.5)),
]


@pytest.mark.slow
@pytest.mark.parametrize("shape,kwargs", LRN_TORCH, ids=[f"{len(s) - 2}d-size{kw['size']}" for s, kw in LRN_TORCH])
def test_lrn_matches_torch(torch, shape, kwargs, rng):
    x, u = rng.standard_normal(shape) * 3, rng.standard_normal(shape)
    expected = _torch_value_and_grad(torch, lambda t: torch.nn.functional.local_response_norm(t, **kwargs), x, u)
    actual = _jax_value_and_grad(lambda v: ops.lrn(v, **kwargs), jnp.asarray(x), u)
    assert_close(actual[0], expected[0], 1e-12, "value")
    assert_close(actual[1], expected[1], 1e-12, "input gradient")


GROUP_NORM_TORCH = [((2, 5, 4, 6), 3), ((3, 7, 4), 2), ((2, 3, 2, 4, 8), 8), ((4, 6), 1)]


@pytest.mark.slow
@pytest.mark.parametrize("shape,groups", GROUP_NORM_TORCH, ids=[f"{len(s) - 2}d-G{g}" for s, g in GROUP_NORM_TORCH])
def test_group_norm_matches_torch(torch, shape, groups, rng):
    x, u = rng.standard_normal(shape) * 3 + 1, rng.standard_normal(shape)
    scale, offset = rng.standard_normal(shape[-1]), rng.standard_normal(shape[-1])
    xt = _to_torch(torch, x).requires_grad_(True)
    st_, ot = (torch.from_numpy(v).requires_grad_(True) for v in (scale, offset))
    yt = torch.nn.functional.group_norm(xt, groups, st_, ot, eps=1e-3)
    yt.backward(_to_torch(torch, u))
    y, vjp = jax.vjp(lambda *a: ops.group_norm(*a, groups=groups, epsilon=1e-3), *map(jnp.asarray, (x, scale, offset)))
    dx, dscale, doffset = vjp(jnp.asarray(u))
    assert_close(y, _from_torch(yt), 1e-12, "value")
    assert_close(dx, _from_torch(xt.grad), 1e-10, "input gradient")
    assert_close(dscale, st_.grad.numpy(), 1e-10, "scale gradient")
    assert_close(doffset, ot.grad.numpy(), 1e-10, "offset gradient")


ADAPTIVE_TORCH = [
    ((2, 7, 3), 3),
    ((2, 5, 2), 8),
    ((2, 9, 2), (4,)),
    ((2, 7, 5, 3), (3, 3)),
    ((2, 10, 9, 2), (4, 6)),
    ((2, 4, 5, 2), (None, 7)),
    ((1, 3, 4, 5, 2), (2, None, 3)),
    ((1, 2, 3, 5, 2), (3, 5, 7)),
    ((1, 6, 6, 6, 1), 2),
]


@pytest.mark.slow
@pytest.mark.parametrize("shape,output_size", ADAPTIVE_TORCH, ids=[f"{s}->{o}" for s, o in ADAPTIVE_TORCH])
def test_adaptive_avg_pool_matches_torch(torch, shape, output_size, rng):
    nd = len(shape) - 2
    pool = getattr(torch.nn.functional, f"adaptive_avg_pool{nd}d")
    x = rng.standard_normal(shape)
    y_shape = jax.eval_shape(lambda v: ops.adaptive_avg_pool(v, output_size), jnp.asarray(x)).shape
    u = rng.standard_normal(y_shape)
    expected = _torch_value_and_grad(torch, lambda t: pool(t, output_size), x, u)
    actual = _jax_value_and_grad(lambda v: ops.adaptive_avg_pool(v, output_size), jnp.asarray(x), u)
    assert_close(actual[0], expected[0], 1e-12, "value")
    assert_close(actual[1], expected[1], 1e-12, "input gradient")


# ---------------------------------------------------------------------------------------------
# vs NumPy loops written from the definitions
# ---------------------------------------------------------------------------------------------


def _numpy_lrn(x, size, alpha, beta, k):
    """``y`` and the VJP ``dx`` for cotangent ``dy``, one channel at a time."""
    channels = x.shape[-1]
    in_window = [[c - size // 2 <= j <= c + (size - 1) // 2 for j in range(channels)] for c in range(channels)]
    d = np.stack(
        [k + alpha / size * sum(x[..., j] ** 2 for j in range(channels) if in_window[c][j]) for c in range(channels)],
        -1,
    )
    return x / d**beta, d


def _numpy_lrn_vjp(x, dy, size, alpha, beta, k):
    channels = x.shape[-1]
    _, d = _numpy_lrn(x, size, alpha, beta, k)
    dx = np.empty_like(x)
    for j in range(channels):
        coupled = 0.0
        for c in range(channels):
            if c - size // 2 <= j <= c + (size - 1) // 2:  # j is in the window of output c
                coupled = coupled + dy[..., c] * x[..., c] * d[..., c] ** (-beta - 1)
        dx[..., j] = dy[..., j] * d[..., j] ** -beta - 2 * alpha * beta / size * x[..., j] * coupled
    return dx


@pytest.mark.parametrize(
    "shape,kwargs",
    [
        ((2, 6), dict(size=5, alpha=1e-4, beta=0.75, k=2.0)),
        ((3, 2, 7), dict(size=4, alpha=0.9, beta=0.75, k=1.0)),
        ((2, 2, 2, 5), dict(size=2, alpha=2.0, beta=1.5, k=0.5)),
        ((2, 3, 4), dict(size=10, alpha=1.0, beta=0.6, k=1.0)),
    ],
)
def test_lrn_matches_numpy_loop(shape, kwargs, rng):
    x, dy = rng.standard_normal(shape) * 2, rng.standard_normal(shape)
    y, vjp = jax.vjp(lambda v: ops.lrn(v, **kwargs), jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y), _numpy_lrn(x, **kwargs)[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        np.asarray(vjp(jnp.asarray(dy))[0]), _numpy_lrn_vjp(x, dy, **kwargs), rtol=1e-11, atol=1e-13
    )


def _numpy_adaptive_avg_pool(x, out):
    spatial = x.shape[1:-1]
    y = np.empty((x.shape[0], *out, x.shape[-1]))
    for idx in itertools.product(*(range(m) for m in out)):
        box = tuple(
            slice(int(np.floor(i * n / m)), int(np.ceil((i + 1) * n / m))) for i, n, m in zip(idx, spatial, out)
        )
        y[(slice(None), *idx, slice(None))] = x[(slice(None), *box, slice(None))].mean(
            axis=tuple(range(1, len(spatial) + 1))
        )
    return y


@pytest.mark.parametrize(
    "shape,out",
    [((2, 7, 3), (3,)), ((1, 5, 2), (3,)), ((2, 2, 1), (4,)), ((2, 7, 5, 2), (3, 8)), ((1, 4, 3, 5, 2), (3, 2, 2))],
)
def test_adaptive_avg_pool_matches_numpy_loop(shape, out, rng):
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(
        np.asarray(ops.adaptive_avg_pool(jnp.asarray(x), out)), _numpy_adaptive_avg_pool(x, out), rtol=1e-13, atol=1e-15
    )


def test_adaptive_avg_pool_hand_computed_values():
    def pool(values, m):
        x = jnp.asarray(values, jnp.float64).reshape(1, -1, 1)
        return np.asarray(ops.adaptive_avg_pool(x, m))[0, :, 0].tolist()

    assert pool(range(7), 3) == [1.0, 3.0, 5.0]  # rows 0-2, 2-4, 4-6
    assert pool(range(5), 3) == [0.5, 2.0, 3.5]  # rows 0-1, 1-3, 3-4
    assert pool([2.0, 6.0], 4) == [2.0, 2.0, 6.0, 6.0]  # rows repeat
    assert pool(range(6), 1) == [2.5]
    # the gradient spreads each output's cotangent evenly over its window: 7 -> 3
    g = jax.grad(lambda v: jnp.sum(ops.adaptive_avg_pool(v, 3) * jnp.asarray([3.0, 6.0, 9.0])[None, :, None]))
    np.testing.assert_allclose(np.asarray(g(jnp.zeros((1, 7, 1))))[0, :, 0], [1, 1, 3, 2, 5, 3, 3], rtol=1e-15)


def test_lrn_special_cases(rng):
    x = _normal(rng, (2, 3, 5))
    assert_close(ops.lrn(x, size=3, beta=0.0), x, 0.0, "beta = 0 is the identity")
    assert_close(ops.lrn(x, size=3, alpha=0.0, beta=0.5, k=4.0), x / 2, 1e-15, "alpha = 0 divides by k^beta")
    assert_close(jax.grad(lambda v: ops.lrn(v, size=4, beta=0.0).sum())(x), jnp.ones_like(x), 0.0, "beta = 0 gradient")
    # size = 1 couples nothing: y = x / (k + alpha x^2)^beta elementwise
    assert_close(ops.lrn(x, size=1, alpha=0.5, beta=0.75, k=1.0), x / (1 + 0.5 * x**2) ** 0.75, 1e-14, "size 1")


# ---------------------------------------------------------------------------------------------
# adaptive_windows
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n,m,expected",
    [
        (7, 3, [(0, 3), (2, 5), (4, 7)]),
        (5, 3, [(0, 2), (1, 4), (3, 5)]),
        (2, 4, [(0, 1), (0, 1), (1, 2), (1, 2)]),
        (3, 5, [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]),
        (6, 4, [(0, 2), (1, 3), (3, 5), (4, 6)]),
        (6, 3, [(0, 2), (2, 4), (4, 6)]),
        (4, 1, [(0, 4)]),
        (1, 3, [(0, 1)] * 3),
    ],
)
def test_adaptive_windows_examples(n, m, expected):
    assert adaptive_windows(n, m) == expected


@given(st.integers(1, 40), st.integers(1, 40))
def test_adaptive_windows_properties(n, m):
    windows = adaptive_windows(n, m)
    assert len(windows) == m
    assert all(0 <= s < e <= n for s, e in windows)  # non-empty, in bounds
    assert windows[0][0] == 0 and windows[-1][1] == n
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(windows, windows[1:]))  # monotone
    assert all(b[0] <= a[1] for a, b in zip(windows, windows[1:]))  # no row skipped
    assert windows == [(math.floor(i * n / m), math.ceil((i + 1) * n / m)) for i in range(m)]
    if m == n:
        assert windows == [(i, i + 1) for i in range(n)]
    if n % m == 0:
        assert windows == [(i * (n // m), (i + 1) * (n // m)) for i in range(m)]


def test_adaptive_windows_refuses_non_positive_sizes():
    with pytest.raises(ValueError, match="n must be a positive int, got 0"):
        adaptive_windows(0, 3)
    with pytest.raises(TypeError, match="m must be a positive int, got 2.0"):
        adaptive_windows(4, 2.0)


@pytest.mark.parametrize("shape,out", [((2, 8, 3), (4,)), ((2, 6, 9, 2), (3, 3)), ((1, 4, 6, 2, 2), (2, 3, 1))])
def test_adaptive_pool_with_divisible_sizes_is_avg_pool(shape, out, rng):
    x = _normal(rng, shape)
    window = tuple(n // m for n, m in zip(shape[1:-1], out))
    cot = _normal(rng, (shape[0], *out, shape[-1]))
    y, vjp = jax.vjp(lambda v: ops.adaptive_avg_pool(v, out), x)
    y_avg, vjp_avg = jax.vjp(lambda v: ops.avg_pool(v, window, stride=window), x)
    assert_close(y, y_avg, 1e-14, "value")
    assert_close(vjp(cot), vjp_avg(cot), 1e-14, "cotangent")


def test_adaptive_avg_pool_output_size_forms(rng):
    x = _normal(rng, (2, 5, 4, 3))
    assert ops.adaptive_avg_pool(x, 2).shape == (2, 2, 2, 3)
    assert ops.adaptive_avg_pool(x, [3, np.int64(6)]).shape == (2, 3, 6, 3)
    assert_close(ops.adaptive_avg_pool(x, (None, None)), x, 0.0, "None keeps every axis")
    assert_close(ops.adaptive_avg_pool(x, None), x, 0.0, "a bare None keeps every axis")
    assert_close(ops.adaptive_avg_pool(x, (None, 1)), x.mean(axis=2, keepdims=True), 1e-15, "None keeps axis 0")


# ---------------------------------------------------------------------------------------------
# transformations and dtypes
# ---------------------------------------------------------------------------------------------

BOUND = [
    ("lrn_even", lambda v: ops.lrn(v, size=4, alpha=0.8, beta=0.75, k=1.0), reference.lrn, (2, 3, 6)),
    ("lrn_alexnet", lambda v: ops.lrn(v, size=5, alpha=1e-4, beta=0.75, k=2.0), reference.lrn, (2, 2, 2, 7)),
    ("adaptive_2d", lambda v: ops.adaptive_avg_pool(v, (3, 4)), reference.adaptive_avg_pool, (2, 7, 3, 2)),
    ("adaptive_3d", lambda v: ops.adaptive_avg_pool(v, (2, None, 3)), reference.adaptive_avg_pool, (1, 3, 2, 5, 2)),
]
REF_KW = {
    "lrn_even": dict(size=4, alpha=0.8, beta=0.75, k=1.0),
    "lrn_alexnet": dict(size=5, alpha=1e-4, beta=0.75, k=2.0),
    "adaptive_2d": dict(output_size=(3, 4)),
    "adaptive_3d": dict(output_size=(2, None, 3)),
}
IDS = [b[0] for b in BOUND]


@pytest.mark.parametrize(
    "name,fn,ref,shape",
    [
        pytest.param(*b, id=b[0], marks=[pytest.mark.slow] if b[0] in ("lrn_alexnet", "adaptive_3d") else [])
        for b in BOUND
    ],
)
def test_grad_of_grad_matches_reference(name, fn, ref, shape, rng):
    x = _normal(rng, shape) * 2

    def grad_norm(f):
        def g(v):
            grads = jax.grad(lambda b: jnp.sum(jnp.sin(f(b))))(v)
            return jnp.sum(grads**2) + jnp.sum(f(v))

        return g

    hand = jax.jit(jax.grad(grad_norm(fn)))(x)
    auto = jax.jit(jax.grad(grad_norm(lambda v: ref(v, **REF_KW[name]))))(x)
    assert_close(hand, auto, 1e-10, name)
    check_grads(jax.jit(fn), [x], order=2, modes=["rev"])  # and against finite differences


@pytest.mark.parametrize("name,fn,ref,shape", BOUND, ids=IDS)
def test_forward_mode_raises(name, fn, ref, shape, rng):
    x = _normal(rng, shape)
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jvp(fn, (x,), (x,))


@pytest.mark.parametrize("name,fn,ref,shape", BOUND, ids=IDS)
def test_jit_and_vmap(name, fn, ref, shape, rng):
    x = _normal(rng, (3, *shape))
    batched, one = jax.jit(jax.vmap(fn))(x), jax.jit(fn)
    for i in range(3):
        assert_close(batched[i], one(x[i]), 1e-14, name)


@pytest.mark.parametrize("name,fn,ref,shape", BOUND, ids=IDS)
def test_bfloat16_within_one_rounding_of_float32(name, fn, ref, shape, rng):
    # Both ops compute in float32 and round once to bfloat16 (8 significant bits): each element of the
    # value and of the cotangent is within 2^-8 of the float32 result on the same (bfloat16) inputs.
    x = _normal(rng, shape, jnp.bfloat16) * 3
    y, vjp = jax.vjp(jax.jit(fn), x)
    cot = _normal(rng, y.shape, jnp.bfloat16)
    (g,) = vjp(cot)
    assert y.dtype == jnp.bfloat16 and g.dtype == jnp.bfloat16 and g.shape == x.shape
    y32, vjp32 = jax.vjp(fn, x.astype(jnp.float32))
    (g32,) = vjp32(cot.astype(jnp.float32))
    for low, high in ((y, y32), (g, g32)):
        low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        assert np.all(np.abs(low - high) <= 2**-8 * np.abs(high) + 1e-6 * np.max(np.abs(high)))


# ---------------------------------------------------------------------------------------------
# argument errors (eagerly and at trace time, op and twin alike)
# ---------------------------------------------------------------------------------------------

X = jnp.zeros((2, 5, 4, 6))
ERRORS = [
    ("lrn", X, dict(size=0), ValueError, r"lrn: size must be a positive int, got 0"),
    ("lrn", X, dict(size=2.0), TypeError, r"lrn: size must be a positive int, got 2.0"),
    ("lrn", X, dict(size=True), TypeError, r"lrn: size must be a positive int, got True"),
    ("lrn", X, dict(size=3, alpha=-0.1), ValueError, r"lrn: alpha must be a finite real number >= 0, got -0.1"),
    ("lrn", X, dict(size=3, alpha="a"), TypeError, r"lrn: alpha must be a real number >= 0, got 'a'"),
    ("lrn", X, dict(size=3, beta=-1), ValueError, r"lrn: beta must be a finite real number >= 0, got -1"),
    ("lrn", X, dict(size=3, beta=math.inf), ValueError, r"lrn: beta must be a finite real number >= 0, got inf"),
    ("lrn", X, dict(size=3, k=0.0), ValueError, r"lrn: k must be a finite real number > 0, got 0.0"),
    ("lrn", X, dict(size=3, k=None), TypeError, r"lrn: k must be a real number > 0, got None"),
    (
        "lrn",
        jnp.zeros(4),
        dict(size=3),
        ValueError,
        r"lrn: x must have shape \(N, ..., C\) with rank >= 2, got shape \(4,\)",
    ),
    ("lrn", X.astype(jnp.int32), dict(size=3), TypeError, r"lrn: x must be a floating-point array, got dtype int32"),
    (
        "adaptive_avg_pool",
        X,
        dict(output_size=0),
        ValueError,
        r"output_size must be a positive int or a tuple of 2 .*got 0",
    ),
    ("adaptive_avg_pool", X, dict(output_size=(3, 0)), ValueError, r"output_size must be .* got \(3, 0\)"),
    ("adaptive_avg_pool", X, dict(output_size=(3,)), ValueError, r"tuple of 2 positive ints or None, got \(3,\)"),
    ("adaptive_avg_pool", X, dict(output_size=(1, 2, 3)), ValueError, r"tuple of 2 .* got \(1, 2, 3\)"),
    ("adaptive_avg_pool", X, dict(output_size=2.5), TypeError, r"output_size must be .* got 2.5"),
    ("adaptive_avg_pool", X, dict(output_size=(2, "3")), TypeError, r"output_size must be .* got \(2, '3'\)"),
    ("adaptive_avg_pool", X, dict(output_size=True), TypeError, r"output_size must be .* got True"),
    ("adaptive_avg_pool", jnp.zeros((2, 4)), dict(output_size=2), ValueError, r"x must have rank 3, 4 or 5"),
    (
        "adaptive_avg_pool",
        jnp.zeros((2, 0, 3, 1)),
        dict(output_size=2),
        ValueError,
        r"non-empty spatial axes, got shape \(2, 0, 3, 1\)",
    ),
    (
        "adaptive_avg_pool",
        X.astype(jnp.int32),
        dict(output_size=2),
        TypeError,
        r"x must be a floating-point array, got dtype int32",
    ),
]


@pytest.mark.parametrize("impl", [ops, reference], ids=["ops", "reference"])
@pytest.mark.parametrize("name,x,kwargs,exc,msg", ERRORS, ids=[f"{e[0]}-{i}" for i, e in enumerate(ERRORS)])
def test_bad_arguments_are_refused_with_their_value(impl, name, x, kwargs, exc, msg):
    fn = getattr(impl, name)
    with pytest.raises(exc, match=msg):
        fn(x, **kwargs)
    with pytest.raises(exc, match=msg):  # at trace time too
        jax.eval_shape(lambda v: fn(v, **kwargs), x)
