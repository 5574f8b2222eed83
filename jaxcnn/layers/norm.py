r"""Normalisation layers: ``BatchNorm``, ``GroupNorm`` and ``LocalResponseNorm``."""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from .. import initializers as _inits
from .. import ops as _default_ops
from ..errors import ConfigError
from . import rules
from ._config import as_positive_int, as_real, check_ops, check_train, input_shape_arg
from .core import Layer, annotate, constructor, ops_free

__all__ = ["BatchNorm", "GroupNorm", "LocalResponseNorm", "frozen_batch_norm"]

# What each kind's forward pass costs (jaxcnn.inspect.summary); both keep a unit's receptive field.
rules.register_kind("BatchNorm", flops=rules.elementwise_flops(2))
rules.register_kind("GroupNorm", flops=rules.elementwise_flops(2))
rules.register_kind("LocalResponseNorm", flops=rules.elementwise_flops(8))


def _running_update(state: dict, mu: jax.Array, var: jax.Array, m: int, momentum: float) -> dict:
    """``old * momentum + new * (1 - momentum)``, fed the unbiased variance ``var m / (m - 1)``."""
    mu, var = lax.stop_gradient(mu), lax.stop_gradient(var) * (m / (m - 1))
    return {
        "mean": (momentum * state["mean"] + (1 - momentum) * mu).astype(state["mean"].dtype),
        "var": (momentum * state["var"] + (1 - momentum) * var).astype(state["var"].dtype),
    }


def _affine(epsilon: Any, scale_init: Any, offset_init: Any) -> tuple[float, Callable[[Any, int], dict]]:
    """A normalisation's ``epsilon`` (checked positive) and its params' initialiser ``(key, C) -> {scale,
    offset}``, both ``(C,)``."""
    epsilon = as_real(epsilon, "epsilon")
    if not epsilon > 0:
        raise ConfigError(f"epsilon must be positive, got {epsilon!r}")
    scale_init, offset_init = _inits.get(scale_init, "scale_init"), _inits.get(offset_init, "offset_init")

    def params(key, c):
        s_key, o_key = jax.random.split(key)
        return {"scale": _inits.call(scale_init, s_key, (c,)), "offset": _inits.call(offset_init, o_key, (c,))}

    return epsilon, params


_FROZEN: contextvars.ContextVar[bool] = contextvars.ContextVar("jaxcnn_frozen_batch_norm", default=False)


@contextlib.contextmanager
def frozen_batch_norm():
    """Inside the block, every :func:`BatchNorm` applies its eval-mode transform (the running statistics,
    the state unchanged) even with ``train=True``: fine-tuning with frozen batch norm. Like
    :func:`jaxcnn.ops.use_formulation`, it applies when a function is traced."""
    token = _FROZEN.set(True)
    try:
        yield
    finally:
        _FROZEN.reset(token)


ops_free("frozen_batch_norm", frozen_batch_norm)  # in every bind(ops) namespace: it concerns any BatchNorm


@constructor("batch_norm")
def BatchNorm(
    *,
    momentum: float = 0.9,
    epsilon: float = 1e-5,
    scale_init: Any = "ones",
    offset_init: Any = "zeros",
    ops: Any = _default_ops,
) -> Layer:
    r"""Batch normalisation over every axis but the last (channels).

    ``train=True``: ``y = scale * (x - mu) / sqrt(var + epsilon) + offset`` with the batch statistics
    of the ``m = size / C`` elements per channel (``ops.batch_norm``, hand-derived VJP), and the running
    averages in the new state move toward them::

        mean <- momentum * mean + (1 - momentum) * mu
        var  <- momentum * var  + (1 - momentum) * var_batch * m / (m - 1)

    the batch statistics taken under ``jax.lax.stop_gradient``. The running variance is fed the
    *unbiased* batch variance ``m / (m - 1) * var``, as PyTorch does (normalisation itself uses the
    biased one). ``momentum`` is the weight of the *old* value (Flax/Keras convention; PyTorch's
    ``momentum=0.1`` is ``momentum=0.9`` here). ``train=True`` needs ``m >= 2``.

    ``train=False`` (or inside :func:`frozen_batch_norm`): ``y = scale * (x - mean) / sqrt(var + epsilon)
    + offset`` with the running averages; deterministic, state unchanged (plain ``jax.numpy``,
    differentiated by autodiff).

    Params: ``scale``, ``offset`` ``(C,)``. State: ``mean`` (zeros), ``var`` (ones), ``(C,)`` float32;
    updates keep the state's dtype.
    """
    momentum = as_real(momentum, "momentum")
    if not 0.0 <= momentum <= 1.0:
        raise ConfigError(f"momentum must be in [0, 1], got {momentum!r}")
    epsilon, affine_params = _affine(epsilon, scale_init, offset_init)
    ops = check_ops(ops, "batch_norm")

    def init(key, input_shape):
        shape = input_shape_arg(input_shape, "BatchNorm", min_rank=2)
        c = shape[-1]
        params = affine_params(key, c)
        state = {"mean": jnp.zeros((c,), jnp.float32), "var": jnp.ones((c,), jnp.float32)}
        return shape, params, state

    def apply(params, state, x, *, key=None, train=False):
        scale, offset = params["scale"], params["offset"]
        if not check_train(train, "BatchNorm") or _FROZEN.get():
            inv = lax.rsqrt(state["var"] + epsilon)
            y = (x - state["mean"]) * (scale * inv) + offset
            return y.astype(jnp.result_type(x)), state
        m = math.prod(jnp.shape(x)[:-1])
        if m < 2:
            raise ConfigError(
                f"BatchNorm: train=True needs at least 2 elements per channel, got x of shape {tuple(jnp.shape(x))}"
            )
        y, mu, var = ops.batch_norm(x, scale, offset, epsilon=epsilon)
        return y, _running_update(state, mu, var, m, momentum)

    return annotate(Layer(init, apply), "BatchNorm")


@constructor("group_norm")
def GroupNorm(
    groups: int = 32,
    *,
    epsilon: float = 1e-5,
    scale_init: Any = "ones",
    offset_init: Any = "zeros",
    ops: Any = _default_ops,
) -> Layer:
    r"""Group normalisation (Wu & He, 2018; PyTorch's ``nn.GroupNorm(groups, C, eps)``): each example's
    ``C`` channels in ``groups`` groups of consecutive channels, each normalised over its channels and every
    spatial position, then ``scale * xhat + offset`` per channel (``ops.group_norm``, hand-derived VJP).

    The same in training and evaluation, and no statistic crosses examples: the normalisation for
    differentially private training, where batch norm's coupling of the examples is not allowed.
    ``groups`` must divide the channels (checked at ``init``). Params: ``scale``, ``offset`` ``(C,)``;
    no state.
    """
    groups = as_positive_int(groups, "groups")
    epsilon, affine_params = _affine(epsilon, scale_init, offset_init)
    ops = check_ops(ops, "group_norm")

    def init(key, input_shape):
        shape = input_shape_arg(input_shape, "GroupNorm", min_rank=2)
        c = shape[-1]
        if c % groups:
            raise ConfigError(f"GroupNorm: groups must divide the input's {c} channels, got groups={groups}")
        return shape, affine_params(key, c), {}

    def apply(params, state, x, *, key=None, train=False):
        check_train(train, "GroupNorm")
        return ops.group_norm(x, params["scale"], params["offset"], groups=groups, epsilon=epsilon), state

    return annotate(Layer(init, apply), "GroupNorm", groups=groups)


@constructor("lrn")
def LocalResponseNorm(
    size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, *, ops: Any = _default_ops
) -> Layer:
    r"""Local response normalisation across channels, PyTorch's ``nn.LocalResponseNorm(size, alpha, beta, k)``::

        b_c = a_c / (k + alpha / size * sum_{c' in window(c)} a_c'^2) ^ beta

    with ``window(c) = [c - size // 2, c + (size - 1) // 2]`` (:func:`jaxcnn.ops.lrn`, hand-derived VJP).
    AlexNet (Krizhevsky et al., 2012) uses ``size=5, alpha=1e-4, beta=0.75, k=2``. No parameters."""
    size = as_positive_int(size, "size")
    alpha, beta, k = as_real(alpha, "alpha"), as_real(beta, "beta"), as_real(k, "k")
    if not (alpha >= 0 and beta >= 0 and k > 0):
        raise ConfigError(
            f"LocalResponseNorm needs alpha >= 0, beta >= 0 and k > 0, got alpha={alpha}, beta={beta}, k={k}"
        )
    ops = check_ops(ops, "lrn")

    def init(key, input_shape):
        return input_shape_arg(input_shape, "LocalResponseNorm", min_rank=2), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return ops.lrn(x, size=size, alpha=alpha, beta=beta, k=k), state

    return annotate(Layer(init, apply), "LocalResponseNorm")
