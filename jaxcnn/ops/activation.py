r"""Elementwise activations and (log-)softmax with hand-derived VJPs.

Derived in ``docs/derivations.md#activations``.

Each backward pass is written from the forward's output where that is the cheaper residual::

    relu:        y = max(a, 0)                    da = dy * 1[a > 0]
    leaky_relu:  y = a if a > 0 else alpha a      da = dy * (1 if a > 0 else alpha)
    sigmoid:     y = 1 / (1 + e^-a)                da = dy * y (1 - y)
    tanh:        y = tanh a                        da = dy * (1 - y^2)
    softmax:     p = e^(a - max a) / sum e^(a - max a)      da = p * (dy - sum(dy * p))
    log_softmax: l = a - max a - log sum e^(a - max a)      da = dy - e^l * sum(dy)

Sigmoid is evaluated from ``e = exp(-|a|) <= 1`` so nothing overflows for ``|a|`` in the hundreds, and
its derivative is ``y(1 - y)``, never ``e^-a / (1 + e^-a)^2``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from ..errors import ConfigTypeError
from ._validate import check_axis, check_floating

OPS = ("relu", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax")  # the ops this module adds to jaxcnn.ops
__all__ = [*OPS]


def _floating(x: Any, op: str) -> jax.Array:
    x = jnp.asarray(x)
    check_floating(x, "x", op)
    return x


def _zero(x):
    return jnp.zeros((), x.dtype)


# relu ------------------------------------------------------------------------------------------


@jax.custom_vjp
def _relu(x):
    # A select, not jnp.maximum: jaxlib 0.10's default XLA:CPU route hands `maximum` to YNNPACK, which
    # then fuses a whole conv/ReLU/pool stack into one subgraph that ran VGG-16's forward 2.2x slower
    # than one fusion per convolution (benchmarks/NOTES.md). x < 0 is false for NaN, so NaN propagates.
    zero = _zero(x)
    return lax.select(x < zero, jnp.broadcast_to(zero, x.shape), x)


def _relu_fwd(x):
    y = _relu(x)
    return y, y


def _relu_bwd(y, dy):
    return (jnp.where(y > 0, dy, _zero(dy)),)  # y > 0 exactly where a > 0


_relu.defvjp(_relu_fwd, _relu_bwd)


def relu(x: Any):
    """``max(x, 0)``; the gradient at 0 is 0."""
    return _relu(_floating(x, "relu"))


# leaky relu ------------------------------------------------------------------------------------


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _leaky_relu(x, negative_slope):
    return jnp.where(x > 0, x, negative_slope * x)


def _leaky_relu_fwd(x, negative_slope):
    return _leaky_relu(x, negative_slope), x


def _leaky_relu_bwd(negative_slope, x, dy):
    return (jnp.where(x > 0, dy, negative_slope * dy).astype(x.dtype),)


_leaky_relu.defvjp(_leaky_relu_fwd, _leaky_relu_bwd)


def check_negative_slope(negative_slope: Any) -> float:
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)):
        raise ConfigTypeError(f"leaky_relu: negative_slope must be a real number, got {negative_slope!r}")
    return float(negative_slope)


def leaky_relu(x: Any, negative_slope: float = 0.01):
    """``x`` where ``x > 0`` else ``negative_slope * x``; the gradient at 0 is ``negative_slope``."""
    return _leaky_relu(_floating(x, "leaky_relu"), check_negative_slope(negative_slope))


# sigmoid ---------------------------------------------------------------------------------------


def stable_sigmoid(x: jax.Array) -> jax.Array:
    """``1 / (1 + e^-x)`` from ``e = exp(-|x|)``, which never overflows."""
    e = jnp.exp(-jnp.abs(x))
    return jnp.where(x >= 0, 1 / (1 + e), e / (1 + e))


@jax.custom_vjp
def _sigmoid(x):
    return stable_sigmoid(x)


def _sigmoid_fwd(x):
    y = stable_sigmoid(x)
    return y, y


def _sigmoid_bwd(y, dy):
    return (dy * y * (1 - y),)


_sigmoid.defvjp(_sigmoid_fwd, _sigmoid_bwd)


def sigmoid(x: Any):
    """The logistic function ``1 / (1 + exp(-x))``, finite for any finite ``x``."""
    return _sigmoid(_floating(x, "sigmoid"))


# tanh ------------------------------------------------------------------------------------------


@jax.custom_vjp
def _tanh(x):
    return jnp.tanh(x)


def _tanh_fwd(x):
    y = jnp.tanh(x)
    return y, y


def _tanh_bwd(y, dy):
    return (dy * (1 - y * y),)


_tanh.defvjp(_tanh_fwd, _tanh_bwd)


def tanh(x: Any):
    """Hyperbolic tangent."""
    return _tanh(_floating(x, "tanh"))


# softmax / log_softmax -------------------------------------------------------------------------


def _shifted(x: jax.Array, axis: int) -> jax.Array:
    # The max is a constant shift the result does not depend on, so no gradient flows through it.
    return x - lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))


def stable_softmax(x: jax.Array, axis: int) -> jax.Array:
    e = jnp.exp(_shifted(x, axis))
    return e / jnp.sum(e, axis=axis, keepdims=True)


def stable_log_softmax(x: jax.Array, axis: int) -> jax.Array:
    z = _shifted(x, axis)
    return z - jnp.log(jnp.sum(jnp.exp(z), axis=axis, keepdims=True))


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _softmax(x, axis):
    return stable_softmax(x, axis)


def _softmax_fwd(x, axis):
    p = stable_softmax(x, axis)
    return p, p


def _softmax_bwd(axis, p, dy):
    return (p * (dy - jnp.sum(dy * p, axis=axis, keepdims=True)),)


_softmax.defvjp(_softmax_fwd, _softmax_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _log_softmax(x, axis):
    return stable_log_softmax(x, axis)


def _log_softmax_fwd(x, axis):
    log_p = stable_log_softmax(x, axis)
    return log_p, log_p


def _log_softmax_bwd(axis, log_p, dy):
    return (dy - jnp.exp(log_p) * jnp.sum(dy, axis=axis, keepdims=True),)


_log_softmax.defvjp(_log_softmax_fwd, _log_softmax_bwd)


def softmax(x: Any, axis: int = -1):
    """``exp(x) / sum(exp(x))`` along ``axis``, computed with the max subtracted."""
    x = _floating(x, "softmax")
    return _softmax(x, check_axis(axis, x.ndim, "softmax"))


def log_softmax(x: Any, axis: int = -1):
    """``x - logsumexp(x)`` along ``axis``, computed with the max subtracted."""
    x = _floating(x, "log_softmax")
    return _log_softmax(x, check_axis(axis, x.ndim, "log_softmax"))
