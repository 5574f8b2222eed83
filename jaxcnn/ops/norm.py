r"""Batch normalisation (train mode), group normalisation, local response normalisation and weight
standardisation, with hand-derived VJPs.

Derived in ``docs/derivations.md#batch-norm``, ``#group-norm``, ``#local-response-normalisation`` and
``#weight-standardisation``.

Batch norm: per channel (the last axis), over the ``m`` elements of every other axis::

    mu = mean(x),  var = mean((x - mu)^2),  xhat = (x - mu) / sqrt(var + eps),  y = gamma xhat + beta

    dbeta  = sum dy
    dgamma = sum dy * xhat
    dx     = gamma / sqrt(var + eps) * (dy - mean(dy) - xhat * mean(dy * xhat))
             + dmu / m + dvar * 2 (x - mu) / m

The last line's second half is the cotangent of the two statistics the op also returns (layers feed
them to running averages, usually under ``stop_gradient``, in which case they are zero). Statistics are
accumulated in at least float32, so bfloat16 inputs are normalised accurately; ``y`` has ``x``'s dtype.
The residuals are ``x`` in its own dtype and the float32 mean and ``1 / sqrt(var + eps)`` per channel;
``xhat`` is recomputed from them in the backward pass (under bfloat16 mixed precision no float32 copy of
the activation is kept).

Group norm (Wu & He, 2018): the ``C`` channels split into ``G`` groups of ``C/G`` consecutive channels; each
example's group is normalised over its ``m = (spatial size) C/G`` elements, so no statistic crosses
examples (what differentially private training needs: an example's gradient depends on it alone). The
same algebra as batch norm, with the means taken per (example, group) and the affine map per channel::

    xhat = (x - mu_ng) / sqrt(var_ng + eps),  y = gamma_c xhat + beta_c,  g = gamma_c dy

    dbeta  = sum_{n, spatial} dy,   dgamma = sum_{n, spatial} dy * xhat
    dx     = 1 / sqrt(var_ng + eps) * (g - mean_ng(g) - xhat * mean_ng(g * xhat))

Local response normalisation across channels (PyTorch's ``local_response_norm``; AlexNet uses ``size=5,
alpha=1e-4, beta=0.75, k=2``). Channel ``c`` is divided by a power of the sum of squares over its window
``W(c) = [c - size//2, c + (size-1)//2]`` clipped to ``[0, C)``; the divisor of the mean is always ``size``
(the squares are zero-padded, as in PyTorch), also at the edges::

    S_c = sum_{c' in W(c)} a_{c'}^2,   d_c = k + (alpha / size) S_c,   b_c = a_c d_c^(-beta)

    db_c/da_j = 1[c = j] d_j^(-beta) - beta a_c d_c^(-beta-1) (alpha / size) 2 a_j 1[j in W(c)]

    da_j = dy_j d_j^(-beta) - (2 alpha beta / size) a_j sum_{c in W'(j)} dy_c a_c d_c^(-beta-1)

``j in W(c)`` exactly when ``c in W'(j) = [j - (size-1)//2, j + size//2]``: the backward pass sums over the
*transposed* window, which differs from ``W`` when ``size`` is even. The arguments must satisfy ``k > 0``,
``alpha >= 0`` and ``beta >= 0``: then every ``d_c >= k > 0`` and both lines are finite. Each window sum
adds ``min(size, 2C - 1)`` shifted slices of the zero-padded channel axis (``lax.pad`` / ``lax.slice``), so
the backward pass is differentiable again. The arithmetic runs in at least float32, ``y`` and ``dx`` have
``x``'s dtype, and the residuals are ``x`` and ``d``.

Weight standardisation (Qiao et al., 2019; scaled as in Brock et al., 2021): each output channel's filter
(a kernel's last axis indexes the channels, its other axes the ``D`` inputs of one unit) centred and scaled
to unit norm, so its pre-activations keep the input's scale whatever the raw weights' scale::

    r = w - mean(w),  s = sqrt(||r||^2 + eps),  what = r / s
    dw = (g - mean(g) - what (what . g)) / s

(means, norms and dot products over one channel's ``D`` entries; ``mean(what) = 0``). ``dw`` is ``g``
projected off the two directions ``what`` cannot move in (a constant shift, a rescaling), over ``s``.
"""

from __future__ import annotations

import math
import numbers
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from ..errors import ConfigError, ConfigTypeError
from ._precision import widened
from ._validate import as_positive_int, check_floating

OPS = ("batch_norm", "group_norm", "lrn", "weight_standardize")  # the ops this module adds to jaxcnn.ops
__all__ = [*OPS, "check_batch_norm", "check_group_norm", "check_lrn", "check_weight_standardize"]


def _normalize(x, scale, offset, epsilon):
    axes = tuple(range(x.ndim - 1))
    xf = widened(x)
    mean = jnp.mean(xf, axis=axes)
    centered = xf - mean
    var = jnp.mean(centered * centered, axis=axes)
    inv_std = 1 / jnp.sqrt(var + epsilon)
    xhat = centered * inv_std
    y = (xhat * scale + offset).astype(x.dtype)
    return y, mean, var, xhat, inv_std


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _batch_norm(x, scale, offset, epsilon):
    y, mean, var, _, _ = _normalize(x, scale, offset, epsilon)
    return y, mean, var


def _batch_norm_fwd(x, scale, offset, epsilon):
    y, mean, var, _, inv_std = _normalize(x, scale, offset, epsilon)
    # Residuals in the compute dtype: x itself (bfloat16 under mixed precision) and the per-channel
    # statistics in float32; xhat is recomputed in the backward pass rather than stored at float32.
    return (y, mean, var), (x, mean, inv_std, scale, offset)


def _batch_norm_bwd(epsilon, residuals, cotangents):
    x, mean, inv_std, scale, offset = residuals
    dy, dmean, dvar = cotangents
    axes = tuple(range(x.ndim - 1))
    m = x.size // x.shape[-1]
    centered = x.astype(mean.dtype) - mean
    xhat = centered * inv_std
    dy = dy.astype(mean.dtype)
    dbeta = jnp.sum(dy, axis=axes)
    dgamma = jnp.sum(dy * xhat, axis=axes)
    dx = (scale * inv_std) * (dy - dbeta / m - xhat * (dgamma / m))
    dx = dx + dmean / m + dvar * (2 / m) * centered
    return dx.astype(x.dtype), dgamma.astype(scale.dtype), dbeta.astype(offset.dtype)


_batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)


def _check_norm(
    op: str, x: Any, scale: Any, offset: Any, epsilon: Any
) -> tuple[jax.Array, jax.Array, jax.Array, float]:
    """``x`` floating ``(N, ..., C)`` with an element per channel, ``scale`` and ``offset`` ``(C,)``,
    ``epsilon > 0``."""
    x, scale, offset = jnp.asarray(x), jnp.asarray(scale), jnp.asarray(offset)
    check_floating(x, "x", op)
    if x.ndim < 2:
        raise ConfigError(f"{op}: x must have shape (N, ..., C), got shape {tuple(x.shape)}")
    for arg, v in (("scale", scale), ("offset", offset)):
        check_floating(v, arg, op)
        if tuple(v.shape) != (x.shape[-1],):
            raise ConfigError(f"{op}: {arg} must have shape ({x.shape[-1]},), got {tuple(v.shape)}")
    epsilon = _positive_epsilon(op, epsilon)
    if x.size // x.shape[-1] == 0:
        raise ConfigError(f"{op}: x must have at least one element per channel, got shape {tuple(x.shape)}")
    return x, scale, offset, epsilon


def _positive_epsilon(op: str, epsilon: Any) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
        raise ConfigError(f"{op}: epsilon must be a positive number, got {epsilon!r}")
    return float(epsilon)


def check_batch_norm(x: Any, scale: Any, offset: Any, epsilon: Any) -> tuple[jax.Array, jax.Array, jax.Array, float]:
    """Validate batch norm's arguments (shared with the reference twin)."""
    return _check_norm("batch_norm", x, scale, offset, epsilon)


def batch_norm(x: Any, scale: Any, offset: Any, *, epsilon: float = 1e-5):
    """Train-mode batch norm over every axis but the last; returns ``(y, batch_mean, batch_var)``.

    ``batch_var`` is the biased (population) variance used to normalise.
    """
    return _batch_norm(*check_batch_norm(x, scale, offset, epsilon))


# ---------------------------------------------------------------------------------------------
# group normalisation
# ---------------------------------------------------------------------------------------------


def _grouped(x: jax.Array, groups: int) -> tuple[jax.Array, tuple[int, ...]]:
    """``x`` ``(N, *spatial, C)`` as ``(N, *spatial, G, C/G)`` in at least float32, and the axes of one
    (example, group): every spatial axis and the channels within the group."""
    xg = widened(x).reshape(*x.shape[:-1], groups, x.shape[-1] // groups)
    return xg, (*range(1, x.ndim - 1), x.ndim)


def _group_xhat(xg: jax.Array, axes: tuple[int, ...], epsilon: float) -> tuple[jax.Array, jax.Array]:
    centered = xg - jnp.mean(xg, axis=axes, keepdims=True)
    inv_std = lax.rsqrt(jnp.mean(centered * centered, axis=axes, keepdims=True) + epsilon)
    return centered * inv_std, inv_std


def group_xhat(x: jax.Array, groups: int, epsilon: float) -> jax.Array:
    """Group norm's ``xhat`` in ``x``'s shape (at least float32): also what jaxcnn.privacy recomputes
    from a layer's saved input for the per-example gradients of scale and offset."""
    xg, axes = _grouped(x, groups)
    return _group_xhat(xg, axes, epsilon)[0].reshape(x.shape)


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _group_norm(x, scale, offset, groups, epsilon):
    return (group_xhat(x, groups, epsilon) * scale + offset).astype(x.dtype)


def _group_norm_fwd(x, scale, offset, groups, epsilon):
    xg, axes = _grouped(x, groups)
    xhat, inv_std = _group_xhat(xg, axes, epsilon)
    return (xhat.reshape(x.shape) * scale + offset).astype(x.dtype), (x, inv_std, scale, offset)


def _group_norm_bwd(groups, epsilon, residuals, dy):
    x, inv_std, scale, offset = residuals
    xg, axes = _grouped(x, groups)
    xhat = (xg - jnp.mean(xg, axis=axes, keepdims=True)) * inv_std  # recomputed, as in batch norm
    dy = dy.astype(xg.dtype)
    per_channel = tuple(range(x.ndim - 1))
    dbeta = jnp.sum(dy, axis=per_channel)
    dgamma = jnp.sum(dy * xhat.reshape(x.shape), axis=per_channel)
    g = (dy * scale).reshape(xg.shape)
    dx = inv_std * (g - jnp.mean(g, axis=axes, keepdims=True) - xhat * jnp.mean(g * xhat, axis=axes, keepdims=True))
    return dx.reshape(x.shape).astype(x.dtype), dgamma.astype(scale.dtype), dbeta.astype(offset.dtype)


_group_norm.defvjp(_group_norm_fwd, _group_norm_bwd)


def check_group_norm(
    x: Any, scale: Any, offset: Any, groups: Any, epsilon: Any
) -> tuple[jax.Array, jax.Array, jax.Array, int, float]:
    """Validate group norm's arguments (shared with the reference twin): ``x`` floating ``(N, ..., C)``,
    ``groups`` a positive int dividing ``C``, ``scale`` and ``offset`` ``(C,)``, ``epsilon > 0``."""
    x, scale, offset, epsilon = _check_norm("group_norm", x, scale, offset, epsilon)
    groups = as_positive_int(groups, "group_norm: groups")
    if x.shape[-1] % groups:
        raise ConfigError(f"group_norm: groups must divide the {x.shape[-1]} channels, got {groups}")
    return x, scale, offset, groups, epsilon


def group_norm(x: Any, scale: Any, offset: Any, *, groups: int, epsilon: float = 1e-5):
    """Group norm (PyTorch's ``group_norm``): each example's ``groups`` groups of consecutive channels
    normalised over their channels and every spatial position, then ``scale * xhat + offset`` per channel.
    ``groups=1`` is layer norm over ``(..., C)``; ``groups=C`` is instance norm."""
    return _group_norm(*check_group_norm(x, scale, offset, groups, epsilon))


# ---------------------------------------------------------------------------------------------
# local response normalisation
# ---------------------------------------------------------------------------------------------


def _channel_window_sum(v: jax.Array, before: int, after: int) -> jax.Array:
    """``s[..., c] = sum_{o = -before}^{after} v[..., c + o]``, zero outside ``[0, C)``."""
    c = v.shape[-1]
    before, after = min(before, max(c - 1, 0)), min(after, max(c - 1, 0))  # further offsets add only zeros
    config = [(0, 0, 0)] * (v.ndim - 1) + [(before, after, 0)]
    vpad = lax.pad(v, jnp.zeros((), v.dtype), config)
    total = lax.slice_in_dim(vpad, 0, c, axis=v.ndim - 1)
    for o in range(1, before + after + 1):
        total = total + lax.slice_in_dim(vpad, o, o + c, axis=v.ndim - 1)
    return total


def _lrn_denominator(xf: jax.Array, size: int, alpha: float, k: float) -> jax.Array:
    """``d_c = k + (alpha / size) sum_{c' in W(c)} a_{c'}^2`` with ``W(c) = [c - size//2, c + (size-1)//2]``."""
    return k + (alpha / size) * _channel_window_sum(xf * xf, size // 2, (size - 1) // 2)


@partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _lrn(x, size, alpha, beta, k):
    xf = widened(x)
    return (xf * _lrn_denominator(xf, size, alpha, k) ** -beta).astype(x.dtype)


def _lrn_fwd(x, size, alpha, beta, k):
    xf = widened(x)
    d = _lrn_denominator(xf, size, alpha, k)
    return (xf * d**-beta).astype(x.dtype), (x, d)


def _lrn_bwd(size, alpha, beta, k, residuals, dy):
    x, d = residuals
    xf = x.astype(d.dtype)
    scaled = dy.astype(d.dtype) * d**-beta  # dy_c d_c^(-beta)
    # sum over the c whose window holds j: the transposed window W'(j) = [j - (size-1)//2, j + size//2]
    coupled = _channel_window_sum(scaled * xf / d, (size - 1) // 2, size // 2)
    dx = scaled - (2 * alpha * beta / size) * xf * coupled
    return (dx.astype(x.dtype),)


_lrn.defvjp(_lrn_fwd, _lrn_bwd)


def _check_real(value: Any, arg: str, rule: str, ok) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigTypeError(f"lrn: {arg} must be a real number {rule}, got {value!r}")
    if not (math.isfinite(value) and ok(value)):
        raise ConfigError(f"lrn: {arg} must be a finite real number {rule}, got {value!r}")
    return float(value)


def check_lrn(x: Any, size: Any, alpha: Any, beta: Any, k: Any) -> tuple[jax.Array, int, float, float, float]:
    """Validate LRN's arguments (shared with the reference twin): ``x`` floating ``(N, ..., C)``, ``size`` a
    positive int, ``alpha >= 0``, ``beta >= 0``, ``k > 0`` (so ``d >= k > 0``) finite real numbers."""
    x = jnp.asarray(x)
    check_floating(x, "x", "lrn")
    if x.ndim < 2:
        raise ConfigError(f"lrn: x must have shape (N, ..., C) with rank >= 2, got shape {tuple(x.shape)}")
    size = as_positive_int(size, "lrn: size")
    alpha = _check_real(alpha, "alpha", ">= 0", lambda v: v >= 0)
    beta = _check_real(beta, "beta", ">= 0", lambda v: v >= 0)
    k = _check_real(k, "k", "> 0", lambda v: v > 0)
    return x, size, alpha, beta, k


def lrn(x: Any, *, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
    """Local response normalisation across channels (the last axis), PyTorch semantics:
    ``y_c = x_c / (k + alpha/size * sum_{c' in [c - size//2, c + (size-1)//2]} x_{c'}^2)^beta``.

    ``x`` is ``(N, ..., C)`` of any rank >= 2; requires ``k > 0``, ``alpha >= 0``, ``beta >= 0``.
    """
    return _lrn(*check_lrn(x, size, alpha, beta, k))


# ---------------------------------------------------------------------------------------------
# weight standardisation
# ---------------------------------------------------------------------------------------------


def standardized(w: jax.Array, epsilon: float) -> tuple[jax.Array, jax.Array]:
    """``what`` (at least float32) and ``s`` per output channel (kept as ``(1, ..., 1, C_out)``)."""
    wf = widened(w)
    fan_in = tuple(range(w.ndim - 1))
    r = wf - jnp.mean(wf, axis=fan_in, keepdims=True)
    s = jnp.sqrt(jnp.sum(r * r, axis=fan_in, keepdims=True) + epsilon)
    return r / s, s


def standardize_transpose(g: jax.Array, what: jax.Array, s: jax.Array, fan_in: tuple[int, ...]) -> jax.Array:
    """``(g - mean(g) - what (what . g)) / s`` over the ``fan_in`` axes of ``g`` (which may have more axes
    than ``what``, e.g. one example's gradient per row): the VJP of :func:`weight_standardize`; also what
    jaxcnn.privacy applies to each example's gradient of a standardised kernel."""
    g = g.astype(what.dtype)
    mean = jnp.mean(g, axis=fan_in, keepdims=True)
    return (g - mean - what * jnp.sum(what * g, axis=fan_in, keepdims=True)) / s


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _weight_standardize(w, epsilon):
    return standardized(w, epsilon)[0].astype(w.dtype)


def _weight_standardize_fwd(w, epsilon):
    what, s = standardized(w, epsilon)
    return what.astype(w.dtype), (what, s)


def _weight_standardize_bwd(epsilon, residuals, g):
    what, s = residuals
    return (standardize_transpose(g, what, s, tuple(range(what.ndim - 1))).astype(g.dtype),)


_weight_standardize.defvjp(_weight_standardize_fwd, _weight_standardize_bwd)


def check_weight_standardize(w: Any, epsilon: Any) -> tuple[jax.Array, float]:
    """Validate weight standardisation's arguments (shared with the reference twin): ``w`` floating with at
    least two axes (fan-in, output channels), ``epsilon > 0``."""
    w = jnp.asarray(w)
    check_floating(w, "w", "weight_standardize")
    if w.ndim < 2 or w.size == 0:
        raise ConfigError(f"weight_standardize: w must have shape (..., fan_in, C_out) and entries, got shape "
                          f"{tuple(w.shape)}")  # fmt: skip
    return w, _positive_epsilon("weight_standardize", epsilon)


WEIGHT_STANDARDIZE_EPSILON = 1e-8  # weight_standardize's default epsilon (also jaxcnn.reference's and privacy's)


def weight_standardize(w: Any, *, epsilon: float = WEIGHT_STANDARDIZE_EPSILON):
    """Scaled weight standardisation: every output channel's filter (``w[..., c]``) minus its mean, divided by
    the norm of the result (``sqrt(||r||^2 + epsilon)``): zero mean, unit norm. A conv kernel ``(*window,
    C_in / groups, C_out)`` or a dense kernel ``(C_in, C_out)``; the result has ``w``'s shape and dtype."""
    return _weight_standardize(*check_weight_standardize(w, epsilon))
