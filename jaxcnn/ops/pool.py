r"""Max, average and Lp pooling (windowed and global), channels-last, with hand-derived VJPs.

``docs/derivations.md#pooling`` derives every backward pass below.

A window of ``K = prod(window)`` offsets ``u`` slides with stride ``s`` over ``xpad`` (``x`` padded by
``(lo, hi)``); write ``x_u[i] = xpad[s*i + u]`` for the strided slice at offset ``u``:

- max:  ``y[i] = max_u x_u[i]``;  ``dx[p] = sum_{i,u: s*i+u = p+lo} 1[u = u*(i)] dy[i]`` where ``u*(i)`` is
  the **first** maximum of window ``i`` in row-major order (the rule of XLA's select-and-scatter and
  PyTorch's CPU kernel). Padding counts as ``-inf``.
- mean: ``y[i] = (1/K_i) sum_u x_u[i]``; ``dx[p] = sum_{i,u: s*i+u = p+lo} dy[i] / K_i`` with ``K_i = K``,
  or the number of in-bounds elements of window ``i`` when ``count_include_pad=False``.
- Lp:   ``y[i] = ((1/K) sum_u |x_u[i]|^p)^(1/p)``;
  ``dx[p] = |x[p]|^(p-1) sign(x[p]) * sum_{i,u: s*i+u = p+lo} dy[i] y[i]^(1-p) / K``, and 0 where a window is
  all zero (``y = 0``), so no NaN.

Every backward pass is one adjoint: :func:`scatter_windows` sends per-window values ``g_u[i]`` back to
``p = s*i + u - lo`` and sums where windows overlap. It is ``K`` zero-interleaving ``lax.pad`` calls,
the transpose of the ``K`` strided slices, so the gradients are exact and differentiable again.

Global pooling reduces every spatial axis: ``(N, *spatial, C) -> (N, C)``; its gradient is ``dy / S``
broadcast (mean) or ``dy`` at the first maximum (max).

Adaptive average pooling (PyTorch's ``adaptive_avg_pool{1,2,3}d``) picks the windows from the output size:
along an axis of length ``n`` pooled to ``m``, output ``i`` averages the rows ``[floor(i n / m),
ceil((i + 1) n / m))`` (:func:`adaptive_windows`; ``m > n`` repeats rows). A box of per-axis intervals is
separable, so with the ``(m, n)`` averaging matrix ``A[i, p] = 1[p in window i] / len_i`` of each axis::

    y[i0, i1, ...] = sum_{p0, p1, ...} A0[i0, p0] A1[i1, p1] ... x[p0, p1, ...]      (per example, channel)
    dx[p0, p1, ...] = sum_{i0, i1, ...} A0[i0, p0] A1[i1, p1] ... dy[i0, i1, ...]

i.e. ``dx`` is ``dy`` contracted with ``A^T`` on every axis: each output's cotangent spread evenly over its
window. The matrices are NumPy constants built at trace time; the contractions (``jnp.tensordot``) run in
at least float32 and are differentiable again.
"""

from __future__ import annotations

import math
import numbers
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..errors import ConfigError, ConfigTypeError
from ._padding import Pads, conv_output_size, normalize_padding
from ._precision import widened
from ._validate import as_int, as_positive_int, check_floating, normalize_tuple, spatial_rank
from ._windows import place_shifted, shifted_slices, window_offsets

# the ops this module adds to jaxcnn.ops (each with a reference twin)
OPS = ("max_pool", "avg_pool", "lp_pool", "global_avg_pool", "global_max_pool", "adaptive_avg_pool")
__all__ = [*OPS, "adaptive_windows", "check_adaptive_avg_pool", "PoolSpec", "pool_spec", "reduce_window"]


class PoolSpec(NamedTuple):
    window: tuple[int, ...]
    strides: tuple[int, ...]
    padding: Pads
    in_spatial: tuple[int, ...]  # the input's spatial shape, so a backward pass needs no residual for it


def pool_spec(x: Any, window: Any, stride: Any, padding: Any, op: str) -> PoolSpec:
    """Validate a pooling op's arguments against ``x`` and normalise them."""
    check_floating(x, "x", op)
    nd = spatial_rank(x, "x", op, extra_dims=2)
    window = normalize_tuple(window, nd, "window")
    strides = window if stride is None else normalize_tuple(stride, nd, "stride")
    spatial = x.shape[1:-1]
    pads = normalize_padding(padding, spatial, window, strides, (1,) * nd)
    for axis, (n, k, (lo, hi)) in enumerate(zip(spatial, window, pads)):
        if lo >= k or hi >= k:
            raise ConfigError(
                f"{op}: padding must be smaller than the window so that no window is all padding, "
                f"got padding {(lo, hi)} with window {k} along spatial axis {axis}"
            )
        if k > n + lo + hi:
            raise ConfigError(
                f"{op}: window {k} is larger than the padded input along spatial axis {axis} "
                f"(size {n} + padding {(lo, hi)} = {n + lo + hi})"
            )
    return PoolSpec(window, strides, pads, tuple(spatial))


def _out_spatial(spatial, spec: PoolSpec) -> tuple[int, ...]:
    return tuple(
        conv_output_size(n, k, s, 1, lo, hi)
        for n, k, s, (lo, hi) in zip(spatial, spec.window, spec.strides, spec.padding)
    )


def _full(spec_pads: Pads) -> list[tuple[int, int]]:
    return [(0, 0), *spec_pads, (0, 0)]


def reduce_window(x: jax.Array, init: float, op, spec: PoolSpec) -> jax.Array:
    """``lax.reduce_window`` of ``op`` over the pool's windows (batch and channel axes untouched); the
    forward passes here and the reference twins' whole computation."""
    return lax.reduce_window(
        x,
        np.asarray(init, x.dtype),
        op,
        (1, *spec.window, 1),
        (1, *spec.strides, 1),
        _full(spec.padding),
    )


def window_slices(x: jax.Array, pad_value: float, spec: PoolSpec) -> list[jax.Array]:
    """``[x_u for u in window]``: the strided slice of the padded input at each window offset."""
    out = _out_spatial(x.shape[1:-1], spec)
    return shifted_slices(x, window_offsets(spec.window), spec.strides, spec.padding, out, pad_value)


def scatter_windows(per_offset: list[jax.Array], in_spatial: tuple[int, ...], spec: PoolSpec) -> jax.Array:
    """The adjoint of :func:`window_slices` (cropping the padding): ``dx[p] = sum_{s*i+u = p+lo} g_u[i]``."""
    return place_shifted(per_offset, window_offsets(spec.window), spec.strides, spec.padding, in_spatial)


def _window_counts(spatial, spec: PoolSpec, include_pad: bool) -> np.ndarray:
    """``K_i`` per output position, shape ``(1, *out, 1)``, computed with NumPy at trace time."""
    if include_pad:
        return np.full((1,) * (len(spatial) + 2), math.prod(spec.window), dtype=np.float64)
    counts = np.ones(1)
    for n, k, s, (lo, hi) in zip(spatial, spec.window, spec.strides, spec.padding):
        o = conv_output_size(n, k, s, 1, lo, hi)
        starts = np.arange(o) * s - lo
        axis_counts = np.minimum(starts + k, n) - np.maximum(starts, 0)
        counts = np.multiply.outer(counts, axis_counts)
    return counts.reshape(1, *counts.shape[1:], 1)


# ---------------------------------------------------------------------------------------------
# max pool
# ---------------------------------------------------------------------------------------------


def first_argmax(slices: list[jax.Array]) -> jax.Array:
    """Index of the first maximum across the window slices (ties go to the earliest offset)."""
    return jnp.argmax(jnp.stack(slices), axis=0)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool(x, spec):
    return reduce_window(x, -jnp.inf, lax.max, spec)


def _max_pool_fwd(x, spec):
    return _max_pool(x, spec), x


def _max_pool_bwd(spec, x, dy):
    winner = first_argmax(window_slices(x, -jnp.inf, spec))
    g = widened(dy)  # overlapping windows add several terms per input: summed in float32 for bf16/f16
    zero = jnp.zeros((), g.dtype)
    routed = [jnp.where(winner == u, g, zero) for u in range(math.prod(spec.window))]
    return (scatter_windows(routed, x.shape[1:-1], spec).astype(x.dtype),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x: Any, window: Any, *, stride: Any = None, padding: Any = "VALID"):
    """Max pooling of ``(N, *spatial, C)``; ``stride=None`` means ``stride = window``; padding is ``-inf``.

    The gradient of each window goes to its first maximum in row-major order.
    """
    x = jnp.asarray(x)
    return _max_pool(x, pool_spec(x, window, stride, padding, "max_pool"))


# ---------------------------------------------------------------------------------------------
# average pool
# ---------------------------------------------------------------------------------------------


def _mean_pool_adjoint(dy: jax.Array, in_spatial, spec: PoolSpec, counts: np.ndarray) -> jax.Array:
    """``dx[p] = sum_{s*i+u = p+lo} dy[i] / K_i``: every offset receives the same share (summed in
    float32 for bfloat16/float16, returned in ``dy``'s dtype)."""
    g = widened(dy)
    share = g / counts.astype(g.dtype)
    return scatter_windows([share] * math.prod(spec.window), in_spatial, spec).astype(dy.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _avg_pool(x, spec, count_include_pad):
    counts = _window_counts(x.shape[1:-1], spec, count_include_pad)
    return reduce_window(x, 0.0, lax.add, spec) / counts.astype(x.dtype)


def _avg_pool_fwd(x, spec, count_include_pad):
    return _avg_pool(x, spec, count_include_pad), None


def _avg_pool_bwd(spec, count_include_pad, _, dy):
    counts = _window_counts(spec.in_spatial, spec, count_include_pad)
    return (_mean_pool_adjoint(dy, spec.in_spatial, spec, counts),)  # linear: dx has dy's dtype


_avg_pool.defvjp(_avg_pool_fwd, _avg_pool_bwd)


def avg_pool(x: Any, window: Any, *, stride: Any = None, padding: Any = "VALID", count_include_pad: bool = True):
    """Average pooling; ``count_include_pad=False`` divides by the in-bounds count of each window."""
    x = jnp.asarray(x)
    if not isinstance(count_include_pad, bool):
        raise ConfigTypeError(f"avg_pool: count_include_pad must be a bool, got {count_include_pad!r}")
    return _avg_pool(x, pool_spec(x, window, stride, padding, "avg_pool"), count_include_pad)


# ---------------------------------------------------------------------------------------------
# Lp pool
# ---------------------------------------------------------------------------------------------


def check_p(p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise ConfigTypeError(f"lp_pool: p must be a real number >= 1, got {p!r}")
    if not (1 <= p < math.inf):
        raise ConfigError(f"lp_pool: p must be a finite real number >= 1, got {p!r}")
    return float(p)


def _lp_forward(x, spec, p):
    k = math.prod(spec.window)
    return (reduce_window(jnp.abs(x) ** p, 0.0, lax.add, spec) / k) ** (1.0 / p)


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _lp_pool(x, spec, p):
    return _lp_forward(x, spec, p)


def _lp_pool_fwd(x, spec, p):
    y = _lp_forward(x, spec, p)
    return y, (x, y)


def _lp_pool_bwd(spec, p, residuals, dy):
    x, y = residuals
    xf, y, dy = widened(x), widened(y), widened(dy)  # the arithmetic in float32 for bfloat16/float16
    nonzero = y > 0
    y_safe = jnp.where(nonzero, y, jnp.ones((), y.dtype))
    scaled = jnp.where(nonzero, dy * y_safe ** (1.0 - p), jnp.zeros((), dy.dtype))
    counts = _window_counts(spec.in_spatial, spec, include_pad=True)
    spread = _mean_pool_adjoint(scaled, spec.in_spatial, spec, counts)
    # |x|^(p-1) sign(x) depends only on the input position, so it factors out of the window sum.
    return ((spread * jnp.abs(xf) ** (p - 1.0) * jnp.sign(xf)).astype(x.dtype),)


_lp_pool.defvjp(_lp_pool_fwd, _lp_pool_bwd)


def lp_pool(x: Any, window: Any, *, p: float, stride: Any = None, padding: Any = "VALID"):
    """Power-mean pooling ``y = (mean over window of |x|^p)^(1/p)``, ``p >= 1``; padding counts as 0.

    ``p = 1`` is the mean of ``|x|``; large ``p`` approaches max pooling of ``|x|``. The gradient is 0
    where a window is all zero.
    """
    x = jnp.asarray(x)
    return _lp_pool(x, pool_spec(x, window, stride, padding, "lp_pool"), check_p(p))


# ---------------------------------------------------------------------------------------------
# global pools
# ---------------------------------------------------------------------------------------------


def _flat_spatial(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1, x.shape[-1])


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _global_avg_pool(x, shape):
    # over the spatial axes themselves: XLA:CPU hands YNNPACK a reduction of an array, not of a reshape
    return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


def _global_avg_pool_fwd(x, shape):
    return _global_avg_pool(x, shape), None


def _global_avg_pool_bwd(shape, _, dy):
    size = math.prod(shape[1:-1])
    dx = jnp.broadcast_to((dy / size)[:, None, :], (shape[0], size, shape[-1]))
    return (dx.reshape(shape),)


_global_avg_pool.defvjp(_global_avg_pool_fwd, _global_avg_pool_bwd)


@jax.custom_vjp
def _global_max_pool(x):
    return jnp.max(_flat_spatial(x), axis=1)


def _global_max_pool_fwd(x):
    return _global_max_pool(x), x


def _global_max_pool_bwd(x, dy):
    flat = _flat_spatial(x)
    winner = jnp.argmax(flat, axis=1)  # first maximum in row-major order
    routed = jnp.where(jnp.arange(flat.shape[1])[None, :, None] == winner[:, None, :], dy[:, None, :], 0)
    return (routed.reshape(x.shape).astype(x.dtype),)


_global_max_pool.defvjp(_global_max_pool_fwd, _global_max_pool_bwd)


def _check_global(x: Any, op: str) -> jax.Array:
    x = jnp.asarray(x)
    check_floating(x, "x", op)
    spatial_rank(x, "x", op, extra_dims=2)
    if any(n == 0 for n in x.shape[1:-1]):
        raise ConfigError(f"{op}: x must have non-empty spatial axes, got shape {tuple(x.shape)}")
    return x


def global_avg_pool(x: Any):
    """Mean over every spatial axis: ``(N, *spatial, C) -> (N, C)``."""
    x = _check_global(x, "global_avg_pool")
    return _global_avg_pool(x, tuple(x.shape))


def global_max_pool(x: Any):
    """Max over every spatial axis: ``(N, *spatial, C) -> (N, C)``; the gradient goes to the first maximum."""
    return _global_max_pool(_check_global(x, "global_max_pool"))


# ---------------------------------------------------------------------------------------------
# adaptive average pool
# ---------------------------------------------------------------------------------------------


def adaptive_windows(n: int, m: int) -> list[tuple[int, int]]:
    """The rows ``[start, end)`` that each of ``m`` outputs averages along an input axis of length ``n``:
    ``start_i = floor(i n / m)``, ``end_i = ceil((i + 1) n / m)`` (PyTorch's rule, in integer arithmetic).

    Every window is non-empty and together they cover ``[0, n)``; ``m = n`` gives ``[(i, i + 1)]``, ``m``
    dividing ``n`` gives the blocks of ``n / m`` rows, and ``m > n`` repeats rows. E.g. ``adaptive_windows(7,
    3) == [(0, 3), (2, 5), (4, 7)]``.
    """
    n, m = as_positive_int(n, "adaptive_windows: n"), as_positive_int(m, "adaptive_windows: m")
    return [((i * n) // m, -((-(i + 1) * n) // m)) for i in range(m)]


def _averaging_matrix(n: int, m: int) -> np.ndarray | None:
    """``A[i, p] = 1 / len_i`` for ``p`` in window ``i``, shape ``(m, n)``; None for ``m = n`` (the identity)."""
    if m == n:
        return None
    a = np.zeros((m, n))
    for i, (start, end) in enumerate(adaptive_windows(n, m)):
        a[i, start:end] = 1.0 / (end - start)
    return a


def _contract_axes(v: jax.Array, mats: list[np.ndarray | None]) -> jax.Array:
    """``out[b, i0, i1, .., c] = sum_p M0[i0, p0] M1[i1, p1] .. v[b, p0, p1, .., c]``, in at least float32."""
    out = widened(v)
    for axis, mat in enumerate(mats, start=1):
        if mat is not None:
            out = jnp.moveaxis(jnp.tensordot(out, jnp.asarray(mat, out.dtype), axes=((axis,), (1,))), -1, axis)
    return out.astype(v.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _adaptive_avg_pool(x, in_spatial, out_spatial):
    return _contract_axes(x, [_averaging_matrix(n, m) for n, m in zip(in_spatial, out_spatial)])


def _adaptive_avg_pool_fwd(x, in_spatial, out_spatial):
    return _adaptive_avg_pool(x, in_spatial, out_spatial), None


def _adaptive_avg_pool_bwd(in_spatial, out_spatial, _, dy):
    # dx = dy contracted with A^T on every axis; linear, so dx has dy's (= x's) dtype
    mats = [_averaging_matrix(n, m) for n, m in zip(in_spatial, out_spatial)]
    return (_contract_axes(dy, [None if a is None else a.T for a in mats]),)


_adaptive_avg_pool.defvjp(_adaptive_avg_pool_fwd, _adaptive_avg_pool_bwd)


def check_adaptive_avg_pool(x: Any, output_size: Any) -> tuple[jax.Array, tuple[int | None, ...]]:
    """Validate adaptive pooling's arguments (shared with the reference twin); returns ``x`` and one output
    length per spatial axis, None meaning "the input's length" (each caller resolves it itself)."""
    op = "adaptive_avg_pool"
    x = x if isinstance(x, jax.ShapeDtypeStruct) else jnp.asarray(x)  # a stand-in at layer init
    check_floating(x, "x", op)
    nd = spatial_rank(x, "x", op, extra_dims=2)
    if any(n == 0 for n in x.shape[1:-1]):
        raise ConfigError(f"{op}: x must have non-empty spatial axes, got shape {tuple(x.shape)}")
    message = f"{op}: output_size must be a positive int or a tuple of {nd} positive ints or None, got {output_size!r}"
    sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * nd
    if len(sizes) != nd:
        raise ConfigError(message)
    return x, tuple(None if m is None else as_int(m, "output_size", minimum=1, message=message) for m in sizes)


def adaptive_avg_pool(x: Any, output_size: Any):
    """Average pooling of ``(N, *spatial, C)`` (1-3 spatial axes) to ``(N, *output_size, C)``, PyTorch's
    ``adaptive_avg_pool{1,2,3}d``: output ``i`` of an axis ``n -> m`` averages rows ``[floor(i n / m),
    ceil((i + 1) n / m))``.

    ``output_size`` is an int (every axis) or a tuple with one positive int or None (keep the input's
    length) per spatial axis. Outputs longer than the input are allowed (rows repeat).
    """
    x, sizes = check_adaptive_avg_pool(x, output_size)
    in_spatial = tuple(x.shape[1:-1])
    out_spatial = tuple(n if m is None else m for n, m in zip(in_spatial, sizes))
    return _adaptive_avg_pool(x, in_spatial, out_spatial)
