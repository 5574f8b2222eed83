"""Oracles that share no configuration code with the library.

``jaxcnn.reference`` resolves padding through the same ``normalize_padding`` / ``conv_spec`` /
``pool_spec`` as the ops, so a mistake there (say, ``"SAME"`` resolved without the dilation) would be
invisible to every twin test. Here the ops are compared with

- ``lax.conv_general_dilated`` / ``lax.reduce_window`` handed the string ``"SAME"`` itself (JAX resolves
  it with its own ``padtype_to_pads``), over dilations, strides, odd and even sizes and inputs shorter
  than the window; and
- direct NumPy loops written from the definitions (the padding computed here, by hand), for values and
  for the convolution's input and weight gradients.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from jax import lax

from jaxcnn import ops

RTOL = 1e-10


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.max(np.abs(b)) if b.size else 0.0
    return float(np.max(np.abs(a - b)) / scale) if scale else float(np.max(np.abs(a - b), initial=0.0))


def _lax_conv(x, w, stride, padding, dilation, groups):
    nd = x.ndim - 2
    dims = lax.conv_dimension_numbers(
        x.shape, w.shape, ("N" + "DHW"[3 - nd :] + "C", "DHW"[3 - nd :] + "IO", "N" + "DHW"[3 - nd :] + "C")
    )
    return lax.conv_general_dilated(
        x, w, stride, padding, rhs_dilation=dilation, dimension_numbers=dims, feature_group_count=groups
    )


@st.composite
def same_configs(draw):
    nd = draw(st.integers(1, 2))
    window = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    spatial = tuple(draw(st.integers(1, 9)) for _ in range(nd))  # often shorter than the dilated window
    return nd, window, dilation, stride, spatial


@given(same_configs(), st.integers(0, 2**16))
def test_conv_same_padding_matches_lax_resolving_same_itself(cfg, seed):
    nd, window, dilation, stride, spatial = cfg
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((2, *spatial, 2)))
    w = jnp.asarray(rng.standard_normal((*window, 2, 3)))
    ours = lambda x, w: ops.conv(x, w, stride=stride, padding="SAME", dilation=dilation)
    theirs = lambda x, w: _lax_conv(x, w, stride, "SAME", dilation, 1)
    y, expected = jax.jit(ours)(x, w), jax.jit(theirs)(x, w)
    assert y.shape == expected.shape and _rel(y, expected) <= RTOL
    # and the gradients: autodiff of lax's own SAME convolution
    dz = jnp.asarray(rng.standard_normal(y.shape))
    vjp = lambda f: jax.jit(lambda x, w, dz: jax.vjp(f, x, w)[1](dz))(x, w, dz)
    grads, ref = vjp(ours), vjp(theirs)
    assert all(_rel(g, r) <= RTOL for g, r in zip(grads, ref))


@given(same_configs(), st.integers(0, 2**16))
def test_pools_same_padding_match_lax_reduce_window_resolving_same_itself(cfg, seed):
    nd, window, _, stride, spatial = cfg
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((2, *spatial, 3)))
    dims, strides = (1, *window, 1), (1, *stride, 1)
    y_max = ops.max_pool(x, window, stride=stride, padding="SAME")
    ref_max = lax.reduce_window(x, -jnp.inf, lax.max, dims, strides, "SAME")
    assert y_max.shape == ref_max.shape and _rel(y_max, ref_max) <= RTOL
    sums = lax.reduce_window(x, 0.0, lax.add, dims, strides, "SAME")
    counts = lax.reduce_window(jnp.ones_like(x), 0.0, lax.add, dims, strides, "SAME")
    for include_pad, divisor in ((True, np.prod(window)), (False, counts)):
        y = ops.avg_pool(x, window, stride=stride, padding="SAME", count_include_pad=include_pad)
        assert _rel(y, sums / divisor) <= RTOL


# ---------------------------------------------------------------------------------------------
# NumPy loops written from the definitions
# ---------------------------------------------------------------------------------------------


def _np_pad_same(n, k, s, d):
    """TensorFlow's SAME, worked out here: out = ceil(n / s), the odd extra row at the end."""
    out = -(-n // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
    return total // 2, total - total // 2


def _np_conv2d(x, w, stride, pads, dilation):
    """z[b,i,j,o] = sum_{u,v,c} w[u,v,c,o] xpad[b, s i + d u, s j + d v, c] (one group)."""
    (sh, sw), (dh, dw), ((t, bo), (le, r)) = stride, dilation, pads
    xp = np.pad(x, ((0, 0), (t, bo), (le, r), (0, 0)))
    kh, kw = w.shape[:2]
    oh = (xp.shape[1] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[2] - dw * (kw - 1) - 1) // sw + 1
    z = np.zeros((x.shape[0], oh, ow, w.shape[-1]))
    for i, j, u, v in itertools.product(range(oh), range(ow), range(kh), range(kw)):
        z[:, i, j, :] += xp[:, sh * i + dh * u, sw * j + dw * v, :] @ w[u, v]
    return z


def _np_conv2d_grads(x, w, dz, stride, pads, dilation):
    """dx and dw of the loop above, by the chain rule applied to each term (scatter, not correlation)."""
    (sh, sw), (dh, dw), ((t, bo), (le, r)) = stride, dilation, pads
    xp = np.pad(x, ((0, 0), (t, bo), (le, r), (0, 0)))
    dxp, dwt = np.zeros_like(xp), np.zeros_like(w)
    kh, kw = w.shape[:2]
    for i, j, u, v in itertools.product(range(dz.shape[1]), range(dz.shape[2]), range(kh), range(kw)):
        p, q = sh * i + dh * u, sw * j + dw * v
        dxp[:, p, q, :] += dz[:, i, j, :] @ w[u, v].T
        dwt[u, v] += xp[:, p, q, :].T @ dz[:, i, j, :]
    return dxp[:, t : t + x.shape[1], le : le + x.shape[2], :], dwt


def _np_pool2d(x, window, stride, pads, reduce, fill):
    (kh, kw), (sh, sw), ((t, bo), (le, r)) = window, stride, pads
    xp = np.pad(x, ((0, 0), (t, bo), (le, r), (0, 0)), constant_values=fill)
    oh, ow = (xp.shape[1] - kh) // sh + 1, (xp.shape[2] - kw) // sw + 1
    y = np.zeros((x.shape[0], oh, ow, x.shape[-1]))
    for i, j in itertools.product(range(oh), range(ow)):
        y[:, i, j, :] = reduce(xp[:, sh * i : sh * i + kh, sw * j : sw * j + kw, :], axis=(1, 2))
    return y


NUMPY_CASES = [  # (x spatial, window, stride, dilation, padding as given to the op)
    ((7, 6), (3, 2), (2, 1), (1, 2), "SAME"),
    ((5, 8), (2, 3), (3, 2), (2, 1), "SAME"),
    ((2, 3), (3, 3), (1, 2), (2, 1), "SAME"),  # input shorter than the dilated window
    ((6, 6), (3, 3), (2, 2), (1, 1), ((1, 2), (0, 1))),
    ((9, 4), (2, 2), (4, 1), (3, 1), 1),
]


def _explicit(padding, spatial, window, stride, dilation):
    if padding == "SAME":
        return tuple(_np_pad_same(n, k, s, d) for n, k, s, d in zip(spatial, window, stride, dilation))
    if isinstance(padding, int):
        return ((padding, padding),) * 2
    return padding


def test_conv_value_and_gradients_match_numpy_loops():
    rng = np.random.default_rng(0)
    for spatial, window, stride, dilation, padding in NUMPY_CASES:
        x, w = rng.standard_normal((2, *spatial, 3)), rng.standard_normal((*window, 3, 4))
        y, vjp = jax.vjp(lambda x, w: ops.conv(x, w, stride=stride, padding=padding, dilation=dilation), x, w)
        pads = _explicit(padding, spatial, window, stride, dilation)
        expected = _np_conv2d(x, w, stride, pads, dilation)
        assert y.shape == expected.shape and _rel(y, expected) <= RTOL, (spatial, window, padding)
        dz = rng.standard_normal(y.shape)
        dx, dw = vjp(jnp.asarray(dz))
        dx_np, dw_np = _np_conv2d_grads(x, w, dz, stride, pads, dilation)
        assert _rel(dx, dx_np) <= RTOL and _rel(dw, dw_np) <= RTOL, (spatial, window, padding)


def test_pools_match_numpy_loops():
    rng = np.random.default_rng(1)
    for spatial, window, stride, _, padding in NUMPY_CASES:
        x = rng.standard_normal((2, *spatial, 3))
        pads = _explicit(padding, spatial, window, stride, (1, 1))
        if any(lo >= k or hi >= k for (lo, hi), k in zip(pads, window)):
            continue  # pools refuse a window of padding only
        y_max = ops.max_pool(x, window, stride=stride, padding=padding)
        assert _rel(y_max, _np_pool2d(x, window, stride, pads, np.max, -np.inf)) <= RTOL
        y_avg = ops.avg_pool(x, window, stride=stride, padding=padding)
        assert _rel(y_avg, _np_pool2d(x, window, stride, pads, np.mean, 0.0)) <= RTOL
