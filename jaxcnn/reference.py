"""Reference twins of every op: the same signatures and checks, built from ``lax`` primitives and
differentiated by JAX's own autodiff. They are the oracle that tests, ``jaxcnn gradcheck`` and the
benchmarks compare the hand-derived VJPs against; nothing here has a ``custom_vjp``.

``conv_transpose`` is written from its definition (zeros between input samples, padding, a stride-1
correlation with the flipped kernel: ``lhs_dilation`` in ``conv_general_dilated``), independently of
the hand-derived code, and tested as the adjoint of ``conv``. ``adaptive_avg_pool`` is a loop of ``jnp.mean``
over explicit slices whose bounds it computes itself, sharing no window arithmetic with the op; ``lrn`` is
PyTorch's recipe (a sliding mean of the zero-padded squares, ``lax.reduce_window``).
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from .errors import ConfigTypeError
from .losses import check_labels, check_mse
from .ops import __all__ as _OP_NAMES
from .ops._padding import dilated_size
from .ops._validate import check_axis, check_floating
from .ops.activation import check_negative_slope
from .ops.conv import conv_spec, conv_transpose_spec
from .ops.dense import check_dense
from .ops.norm import (
    WEIGHT_STANDARDIZE_EPSILON,
    check_batch_norm,
    check_group_norm,
    check_lrn,
    check_weight_standardize,
)
from .ops.pool import _check_global, check_adaptive_avg_pool, check_p, pool_spec, reduce_window

__all__ = [*_OP_NAMES, "softmax_cross_entropy", "mse"]  # a twin of every op and loss


def _dims(nd: int) -> lax.ConvDimensionNumbers:
    spatial = tuple(range(1, nd + 1))
    return lax.ConvDimensionNumbers((0, nd + 1, *spatial), (nd + 1, nd, *range(nd)), (0, nd + 1, *spatial))


def conv(x: Any, w: Any, *, stride: Any = 1, padding: Any = "VALID", dilation: Any = 1, groups: int = 1):
    x, w = jnp.asarray(x), jnp.asarray(w)
    spec = conv_spec(x, w, stride, padding, dilation, groups)
    return lax.conv_general_dilated(
        x,
        w,
        spec.strides,
        spec.padding,
        rhs_dilation=spec.dilation,
        dimension_numbers=_dims(x.ndim - 2),
        feature_group_count=spec.groups,
    )


def conv_transpose(
    x: Any, w: Any, *, stride: Any = 1, padding: Any = 0, dilation: Any = 1, output_padding: Any = 0, groups: int = 1
):
    x, w = jnp.asarray(x), jnp.asarray(w)
    spec, out_spatial = conv_transpose_spec(x, w, stride, padding, dilation, output_padding, groups)
    nd = x.ndim - 2
    window = w.shape[:nd]
    # Full correlation of the zero-interleaved input: pad kd - 1 on both sides, minus the removed
    # padding; the end is then padded or cropped to the requested output length.
    pads = []
    for n, k, s, d, (lo, _), m in zip(x.shape[1:-1], window, spec.strides, spec.dilation, spec.padding, out_spatial):
        before = dilated_size(k, d) - 1 - lo
        dilated_len = (n - 1) * s + 1
        pads.append((before, m + dilated_size(k, d) - 1 - before - dilated_len))
    # The kernel of the transposed map: spatially reversed, in/out channels exchanged within each group.
    *_, c_out_g, c_in = w.shape
    g = spec.groups
    wt = jnp.flip(w, axis=tuple(range(nd))).reshape(*window, c_out_g, g, c_in // g)
    wt = jnp.swapaxes(wt, nd, nd + 2).reshape(*window, c_in // g, g * c_out_g)
    return lax.conv_general_dilated(
        x,
        wt,
        (1,) * nd,
        pads,
        lhs_dilation=spec.strides,
        rhs_dilation=spec.dilation,
        dimension_numbers=_dims(nd),
        feature_group_count=g,
    )


def max_pool(x: Any, window: Any, *, stride: Any = None, padding: Any = "VALID"):
    x = jnp.asarray(x)
    return reduce_window(x, -jnp.inf, lax.max, pool_spec(x, window, stride, padding, "max_pool"))


def avg_pool(x: Any, window: Any, *, stride: Any = None, padding: Any = "VALID", count_include_pad: bool = True):
    x = jnp.asarray(x)
    if not isinstance(count_include_pad, bool):
        raise ConfigTypeError(f"avg_pool: count_include_pad must be a bool, got {count_include_pad!r}")
    spec = pool_spec(x, window, stride, padding, "avg_pool")
    if count_include_pad:
        return reduce_window(x, 0.0, lax.add, spec) / math.prod(spec.window)
    counts = reduce_window(jnp.ones_like(x), 0.0, lax.add, spec)
    return reduce_window(x, 0.0, lax.add, spec) / counts


def lp_pool(x: Any, window: Any, *, p: float, stride: Any = None, padding: Any = "VALID"):
    x = jnp.asarray(x)
    spec = pool_spec(x, window, stride, padding, "lp_pool")
    p = check_p(p)
    return (reduce_window(jnp.abs(x) ** p, 0.0, lax.add, spec) / math.prod(spec.window)) ** (1 / p)


def _global(x, init, op):
    window = (1, *x.shape[1:-1], 1)
    return lax.reduce_window(x, np.asarray(init, x.dtype), op, window, window, "VALID").reshape(x.shape[0], x.shape[-1])


def global_avg_pool(x: Any):
    x = _check_global(x, "global_avg_pool")
    return _global(x, 0.0, lax.add) / math.prod(x.shape[1:-1])


def global_max_pool(x: Any):
    # reduce_window's autodiff is select-and-scatter: the first maximum wins ties, as in the op.
    # (jnp.max would split a tie's gradient instead.)
    return _global(_check_global(x, "global_max_pool"), -jnp.inf, lax.max)


def adaptive_avg_pool(x: Any, output_size: Any):
    # One jnp.mean per output position over its explicit slice, bounds from exact rational floor / ceil.
    x, sizes = check_adaptive_avg_pool(x, output_size)
    spatial = x.shape[1:-1]
    out = tuple(n if m is None else m for n, m in zip(spatial, sizes))
    bounds = [
        [(math.floor(Fraction(i * n, m)), math.ceil(Fraction((i + 1) * n, m))) for i in range(m)]
        for n, m in zip(spatial, out)
    ]
    means = []
    for box in itertools.product(*bounds):
        index = (slice(None), *(slice(start, end) for start, end in box), slice(None))
        means.append(jnp.mean(x[index], axis=tuple(range(1, x.ndim - 1))))
    return jnp.stack(means, axis=1).reshape(x.shape[0], *out, x.shape[-1])


def dense(x: Any, w: Any, b: Any = None):
    x, w = jnp.asarray(x), jnp.asarray(w)
    b = None if b is None else jnp.asarray(b)
    check_dense(x, w, b)
    y = lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))
    return y if b is None else y + b


def _floating(x, op):
    x = jnp.asarray(x)
    check_floating(x, "x", op)
    return x


def relu(x: Any):
    x = _floating(x, "relu")
    return lax.select(x > 0, x, jnp.zeros_like(x))


def leaky_relu(x: Any, negative_slope: float = 0.01):
    x = _floating(x, "leaky_relu")
    return lax.select(x > 0, x, check_negative_slope(negative_slope) * x)


def sigmoid(x: Any):
    return lax.logistic(_floating(x, "sigmoid"))


def tanh(x: Any):
    return lax.tanh(_floating(x, "tanh"))


def log_softmax(x: Any, axis: int = -1):
    x = _floating(x, "log_softmax")
    axis = check_axis(axis, x.ndim, "log_softmax")
    z = x - lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    return z - jnp.log(jnp.sum(jnp.exp(z), axis=axis, keepdims=True))


def softmax(x: Any, axis: int = -1):
    x = _floating(x, "softmax")
    axis = check_axis(axis, x.ndim, "softmax")
    e = jnp.exp(x - lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True)))
    return e / jnp.sum(e, axis=axis, keepdims=True)


def batch_norm(x: Any, scale: Any, offset: Any, *, epsilon: float = 1e-5):
    x, scale, offset, epsilon = check_batch_norm(x, scale, offset, epsilon)
    axes = tuple(range(x.ndim - 1))
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean = jnp.mean(xf, axis=axes)
    var = jnp.mean(jnp.square(xf - mean), axis=axes)
    y = (xf - mean) * lax.rsqrt(var + epsilon) * scale + offset
    return y.astype(x.dtype), mean, var


def group_norm(x: Any, scale: Any, offset: Any, *, groups: int, epsilon: float = 1e-5):
    x, scale, offset, groups, epsilon = check_group_norm(x, scale, offset, groups, epsilon)
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    n, c = x.shape[0], x.shape[-1]
    per_group = jnp.moveaxis(xf, -1, 1).reshape(n, groups, -1)  # (N, G, (C/G) * spatial)
    mean = jnp.mean(per_group, axis=-1, keepdims=True)
    var = jnp.var(per_group, axis=-1, keepdims=True)
    xhat = jnp.moveaxis(((per_group - mean) / jnp.sqrt(var + epsilon)).reshape(n, c, *x.shape[1:-1]), 1, -1)
    return (xhat * scale + offset).astype(x.dtype)


def weight_standardize(w: Any, *, epsilon: float = WEIGHT_STANDARDIZE_EPSILON):
    # Each output channel's filter as a row: centred, divided by its norm (autodiff differentiates it).
    w, epsilon = check_weight_standardize(w, epsilon)
    rows = jnp.moveaxis(w.astype(jnp.promote_types(w.dtype, jnp.float32)), -1, 0).reshape(w.shape[-1], -1)
    centred = rows - jnp.mean(rows, axis=1, keepdims=True)
    unit = centred / jnp.sqrt(jnp.sum(jnp.square(centred), axis=1, keepdims=True) + epsilon)
    return jnp.moveaxis(unit.reshape(w.shape[-1], *w.shape[:-1]), 0, -1).astype(w.dtype)


def lrn(x: Any, *, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
    # PyTorch's recipe: zero-pad the squares by (size//2, (size-1)//2) along channels, a sliding mean of size.
    x, size, alpha, beta, k = check_lrn(x, size, alpha, beta, k)
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    lead = x.ndim - 1
    window_sum = lax.reduce_window(
        xf * xf,
        np.asarray(0.0, xf.dtype),
        lax.add,
        (1,) * lead + (size,),
        (1,) * x.ndim,
        [(0, 0)] * lead + [(size // 2, (size - 1) // 2)],
    )
    return (xf / (k + alpha * (window_sum / size)) ** beta).astype(x.dtype)


def softmax_cross_entropy(logits: Any, labels: Any):
    logits, labels = check_labels(logits, labels)
    log_p = log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_p, labels[..., None], axis=-1))


def mse(pred: Any, target: Any):
    pred, target = check_mse(pred, target)
    return jnp.mean(jnp.square(pred - target))
