r"""Dense (fully connected) layer ``z = x W + b`` with a hand-derived VJP.

Derived in ``docs/derivations.md#dense``.

``x`` is ``(..., in)``, ``W`` is ``(in, out)``, ``b`` is ``(out,)``; with the leading axes flattened
into one batch axis ``B``::

    dx = dz W^T          dW = x^T dz          db = sum_B dz
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ..errors import ConfigError
from ._precision import accumulation_dtype
from ._validate import check_floating

OPS = ("dense",)  # the ops this module adds to jaxcnn.ops
__all__ = [*OPS, "check_dense"]


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` with bfloat16/float16 products summed in float32, rounded once to the result dtype."""
    dtype = jnp.result_type(a, b)
    return jnp.matmul(a, b, preferred_element_type=accumulation_dtype(dtype)).astype(dtype)


def _weight_grad(x: jax.Array, dz: jax.Array) -> jax.Array:
    """``x^T dz`` with every leading axis contracted."""
    return _matmul(x.reshape(-1, x.shape[-1]).T, dz.reshape(-1, dz.shape[-1]))


@jax.custom_vjp
def _dense(x, w):
    return _matmul(x, w)


def _dense_fwd(x, w):
    return _matmul(x, w), (x, w)


def _dense_bwd(residuals, dz):
    x, w = residuals
    return _matmul(dz, w.T).astype(x.dtype), _weight_grad(x, dz).astype(w.dtype)


_dense.defvjp(_dense_fwd, _dense_bwd)


@jax.custom_vjp
def _dense_bias(x, w, b):
    return _matmul(x, w) + b


def _dense_bias_fwd(x, w, b):
    return _matmul(x, w) + b, (x, w, b)


def _dense_bias_bwd(residuals, dz):
    x, w, b = residuals
    dx, dw = _dense_bwd((x, w), dz)
    db = dz.reshape(-1, dz.shape[-1]).sum(axis=0)
    return dx, dw, db.astype(b.dtype)


_dense_bias.defvjp(_dense_bias_fwd, _dense_bias_bwd)


def check_dense(x: Any, w: Any, b: Any) -> None:
    check_floating(x, "x", "dense")
    check_floating(w, "w", "dense")
    if x.ndim < 1:
        raise ConfigError(f"dense: x must have at least one axis (..., in), got shape {tuple(x.shape)}")
    if w.ndim != 2:
        raise ConfigError(f"dense: w must have shape (in, out), got shape {tuple(w.shape)}")
    if x.shape[-1] != w.shape[0]:
        raise ConfigError(
            f"dense: x.shape[-1] (={x.shape[-1]}) must equal w.shape[0] (={w.shape[0]}), "
            f"got x of shape {tuple(x.shape)} and w of shape {tuple(w.shape)}"
        )
    if b is not None:
        check_floating(b, "b", "dense")
        if tuple(b.shape) != (w.shape[1],):
            raise ConfigError(f"dense: b must have shape ({w.shape[1]},), got {tuple(b.shape)}")


def dense(x: Any, w: Any, b: Any = None):
    """``x @ w (+ b)`` for ``x`` of shape ``(..., in)`` and ``w`` of shape ``(in, out)``."""
    x, w = jnp.asarray(x), jnp.asarray(w)
    b = None if b is None else jnp.asarray(b)
    check_dense(x, w, b)
    return _dense(x, w) if b is None else _dense_bias(x, w, b)
