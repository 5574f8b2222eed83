r"""Losses with hand-derived VJPs.

Derived in ``docs/derivations.md#losses``.

Softmax cross-entropy with integer labels, mean over the ``B`` examples (every axis but the last)::

    L = -(1/B) sum_b log p[b, y_b],   p = softmax(z)        dL/dz = (p - onehot(y)) / B

MSE, mean over all ``M`` elements::

    L = (1/M) sum (a - t)^2                                 dL/da = 2 (a - t) / M = -dL/dt
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .errors import ConfigError, ConfigTypeError
from .ops._validate import check_floating
from .ops.activation import stable_log_softmax

__all__ = ["softmax_cross_entropy", "mse", "check_labels", "check_mse"]


def check_labels(logits: Any, labels: Any, op: str = "softmax_cross_entropy") -> tuple[jax.Array, jax.Array]:
    """Shape/dtype checks; concrete (non-traced) labels are also checked against the class range."""
    logits = jnp.asarray(logits)
    check_floating(logits, "logits", op)
    if logits.ndim < 1:
        raise ConfigError(f"{op}: logits must have shape (..., num_classes), got shape {tuple(logits.shape)}")
    if not hasattr(labels, "dtype"):
        labels = np.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ConfigTypeError(f"{op}: labels must be integer class indices, got dtype {labels.dtype}")
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ConfigError(
            f"{op}: labels must have shape {tuple(logits.shape[:-1])} (logits.shape[:-1]), got {tuple(labels.shape)}"
        )
    if not isinstance(labels, jax.core.Tracer) and labels.size:
        values = np.asarray(labels)  # concrete: np.min on a jax Array would trace inside a jit
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= logits.shape[-1]:
            raise ConfigError(f"{op}: labels must lie in [0, {logits.shape[-1]}), got values in [{lo}, {hi}]")
    return logits, jnp.asarray(labels)


def _per_example_nll(logits, labels):
    log_p = stable_log_softmax(logits, -1)
    picked = jnp.take_along_axis(log_p, labels[..., None], axis=-1)[..., 0]
    # A label outside [0, K) under jit cannot raise; make it NaN instead of a silently wrong value.
    valid = (labels >= 0) & (labels < logits.shape[-1])
    return jnp.where(valid, -picked, jnp.nan)


@jax.custom_vjp
def _softmax_cross_entropy(logits, labels):
    return jnp.mean(_per_example_nll(logits, labels))


def _sce_fwd(logits, labels):
    return _softmax_cross_entropy(logits, labels), (logits, labels)


def _sce_bwd(residuals, g):
    logits, labels = residuals
    batch = logits.size // logits.shape[-1]
    p = jnp.exp(stable_log_softmax(logits, -1))
    onehot = labels[..., None] == jnp.arange(logits.shape[-1])
    dlogits = (p - onehot.astype(p.dtype)) * (g / batch)
    return dlogits.astype(logits.dtype), None


_softmax_cross_entropy.defvjp(_sce_fwd, _sce_bwd)


def softmax_cross_entropy(logits: Any, labels: Any):
    """Mean over examples of ``-log softmax(logits)[label]``; ``labels`` are integers and get no gradient.

    ``logits`` is ``(..., K)`` and ``labels`` ``(...)``. Out-of-range labels raise when concrete and give
    NaN under tracing.
    """
    logits, labels = check_labels(logits, labels)
    if logits.size == 0:
        raise ConfigError(f"softmax_cross_entropy: logits must be non-empty, got shape {tuple(logits.shape)}")
    return _softmax_cross_entropy(logits, labels)


@jax.custom_vjp
def _mse(pred, target):
    diff = pred - target
    return jnp.mean(diff * diff)


def _mse_fwd(pred, target):
    return _mse(pred, target), (pred, target)


def _mse_bwd(residuals, g):
    pred, target = residuals
    dpred = (pred - target) * (2 * g / pred.size)
    return dpred.astype(pred.dtype), (-dpred).astype(target.dtype)


_mse.defvjp(_mse_fwd, _mse_bwd)


def check_mse(pred: Any, target: Any) -> tuple[jax.Array, jax.Array]:
    """Validate ``mse``'s arguments (shared with the reference twin)."""
    pred, target = jnp.asarray(pred), jnp.asarray(target)
    check_floating(pred, "pred", "mse")
    check_floating(target, "target", "mse")
    if pred.shape != target.shape:
        raise ConfigError(
            f"mse: pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if pred.size == 0:
        raise ConfigError(f"mse: pred must be non-empty, got shape {tuple(pred.shape)}")
    return pred, target


def mse(pred: Any, target: Any):
    """Mean squared error over every element; both arguments get gradients."""
    return _mse(*check_mse(pred, target))
