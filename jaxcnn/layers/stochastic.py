r"""Layers that draw random numbers: ``Dropout`` (the only layer that uses ``apply``'s ``key``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..errors import ConfigError
from . import rules
from ._config import as_real, check_train, input_shape_arg
from .core import Layer, annotate, ops_free

__all__ = ["Dropout"]

# Dropout keeps a unit's receptive field and is not counted in the forward FLOPs (jaxcnn.inspect.summary).
rules.register_kind("Dropout", flops=rules.elementwise_flops(0))


def Dropout(rate: float) -> Layer:
    r"""Inverted dropout: with ``train=True`` each element is dropped (set to 0) with probability
    ``rate`` and the survivors are scaled by ``1 / (1 - rate)``, so the expectation is unchanged;
    ``train=False`` is the identity. The mask is plain ``jax.numpy``, differentiated by JAX.

    ``rate`` is the probability of *dropping*, in ``[0, 1)``. ``apply(..., train=True)`` needs ``key``;
    the same key gives the same mask.
    """
    rate = as_real(rate, "rate")
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"rate must be in [0, 1) (the probability of dropping), got {rate!r}")

    def init(key, input_shape):
        return input_shape_arg(input_shape, "Dropout"), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        if not check_train(train, "Dropout") or rate == 0.0:
            return x, state
        if key is None:
            raise ConfigError("Dropout: apply(..., train=True) needs a PRNG key, got key=None; pass key=...")
        keep = jax.random.bernoulli(key, 1.0 - rate, jnp.shape(x))
        return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), jnp.result_type(x))), state

    return annotate(Layer(init, apply), "Dropout")


ops_free("Dropout", Dropout)
