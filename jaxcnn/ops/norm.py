r"""Batch normalisation (train mode) with a hand-derived VJP.

Per channel (the last axis), over the ``m`` elements of every other axis::

    mu = mean(x),  var = mean((x - mu)^2),  xhat = (x - mu) / sqrt(var + eps),  y = gamma xhat + beta

    dbeta  = sum dy
    dgamma = sum dy * xhat
    dx     = gamma / sqrt(var + eps) * (dy - mean(dy) - xhat * mean(dy * xhat))
             + dmu / m + dvar * 2 (x - mu) / m

The last line's second half is the cotangent of the two statistics the op also returns (layers feed
them to running averages, usually under ``stop_gradient``, in which case they are zero). Statistics are
accumulated in at least float32, so bfloat16 inputs are normalised accurately; ``y`` has ``x``'s dtype.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from ._validate import check_floating

__all__ = ["batch_norm", "check_batch_norm"]


def _stats_dtype(dtype):
    return jnp.promote_types(dtype, jnp.float32)


def _normalize(x, scale, offset, epsilon):
    axes = tuple(range(x.ndim - 1))
    xf = x.astype(_stats_dtype(x.dtype))
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
    y, mean, var, xhat, inv_std = _normalize(x, scale, offset, epsilon)
    return (y, mean, var), (xhat, inv_std, scale, offset)


def _batch_norm_bwd(epsilon, residuals, cotangents):
    xhat, inv_std, scale, offset = residuals
    dy, dmean, dvar = cotangents
    x_dtype = dy.dtype  # y has x's dtype, so its cotangent does too
    axes = tuple(range(xhat.ndim - 1))
    m = xhat.size // xhat.shape[-1]
    dy = dy.astype(xhat.dtype)
    dbeta = jnp.sum(dy, axis=axes)
    dgamma = jnp.sum(dy * xhat, axis=axes)
    dx = (scale * inv_std) * (dy - dbeta / m - xhat * (dgamma / m))
    # x - mu = xhat / inv_std
    dx = dx + dmean / m + dvar * (2 / m) * (xhat / inv_std)
    return dx.astype(x_dtype), dgamma.astype(scale.dtype), dbeta.astype(offset.dtype)


_batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)


def check_batch_norm(x: Any, scale: Any, offset: Any, epsilon: Any) -> tuple[jax.Array, jax.Array, jax.Array, float]:
    """Validate batch norm's arguments (shared with the reference twin)."""
    x, scale, offset = jnp.asarray(x), jnp.asarray(scale), jnp.asarray(offset)
    check_floating(x, "x", "batch_norm")
    if x.ndim < 2:
        raise ValueError(f"batch_norm: x must have shape (N, ..., C), got shape {tuple(x.shape)}")
    for arg, v in (("scale", scale), ("offset", offset)):
        check_floating(v, arg, "batch_norm")
        if tuple(v.shape) != (x.shape[-1],):
            raise ValueError(f"batch_norm: {arg} must have shape ({x.shape[-1]},), got {tuple(v.shape)}")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
        raise ValueError(f"batch_norm: epsilon must be a positive number, got {epsilon!r}")
    if x.size // x.shape[-1] == 0:
        raise ValueError(f"batch_norm: x must have at least one element per channel, got shape {tuple(x.shape)}")
    return x, scale, offset, float(epsilon)


def batch_norm(x: Any, scale: Any, offset: Any, *, epsilon: float = 1e-5):
    """Train-mode batch norm over every axis but the last; returns ``(y, batch_mean, batch_var)``.

    ``batch_var`` is the biased (population) variance used to normalise.
    """
    return _batch_norm(*check_batch_norm(x, scale, offset, epsilon))
