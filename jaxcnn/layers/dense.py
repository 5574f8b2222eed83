r"""Dense, activation and shape layers: ``Dense``, ``LeakyRelu`` and the value layers ``Relu``,
``Sigmoid``, ``Tanh``, ``Softmax``, ``LogSoftmax``, ``Flatten``, ``Identity``.

``Dense`` and the activations are one op each, with a hand-derived VJP (``Dense``'s bias too:
``db = sum dz``). ``Flatten`` and ``Identity`` are a reshape and nothing, differentiated by JAX.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp

from .. import ops as _default_ops
from . import rules
from ._config import KernelConfig, as_positive_int, as_real, check_ops, input_shape_arg
from .core import Layer, annotate, constructor, ops_free, value_layers

__all__ = ["Dense", "LeakyRelu", "Relu", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Flatten", "Identity"]

# How each kind changes a unit's receptive field and what its forward pass costs (jaxcnn.inspect.summary):
# a dense layer over the channel axis keeps the field (after a flatten it is already all of the input).
rules.register_kind("Dense", flops=rules.kernel_flops)
rules.register_kind("Flatten", field=rules.global_field, flops=rules.elementwise_flops(0))
rules.register_kind("Identity", flops=rules.elementwise_flops(0))


@constructor("dense")
def Dense(
    features: int,
    *,
    use_bias: bool = True,
    kernel_init: Any = "he_normal",
    bias_init: Any = "zeros",
    ops: Any = _default_ops,
) -> Layer:
    r"""Fully connected ``y = x W + b`` over the last axis: ``(N, ..., in) -> (N, ..., features)``.

    Params: ``kernel`` ``(in, features)``, ``bias`` ``(features,)`` (the bias goes through
    ``ops.dense``'s hand-derived ``db = sum dz``)."""
    features = as_positive_int(features, "features")
    kernel = KernelConfig.make(use_bias, kernel_init, bias_init)
    ops = check_ops(ops, "dense")

    def init(key, input_shape):
        shape = input_shape_arg(input_shape, "Dense", min_rank=2, what="(N, ..., in)")
        return (*shape[:-1], features), kernel.init(key, (shape[-1], features), features), {}

    def apply(params, state, x, *, key=None, train=False):
        return ops.dense(x, params["kernel"], params["bias"] if kernel.use_bias else None), state

    return annotate(Layer(init, apply), "Dense")


def _elementwise(layer: str, op_name: str, ops: Any, **op_kwargs) -> Layer:
    ops = check_ops(ops, op_name)

    def init(key, input_shape):
        return input_shape_arg(input_shape, layer), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return getattr(ops, op_name)(x, **op_kwargs), state

    return annotate(Layer(init, apply), layer)


@constructor("leaky_relu")
def LeakyRelu(negative_slope: float = 0.01, *, ops: Any = _default_ops) -> Layer:
    """``x`` where ``x > 0`` else ``negative_slope * x``."""
    negative_slope = as_real(negative_slope, "negative_slope")
    return _elementwise("LeakyRelu", "leaky_relu", ops, negative_slope=negative_slope)


_ACTIVATIONS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softmax": "softmax", "LogSoftmax": "log_softmax"}


@value_layers(*_ACTIVATIONS.values())
def _activations(ops: Any) -> dict[str, Layer]:
    return {layer: _elementwise(layer, op_name, ops) for layer, op_name in _ACTIVATIONS.items()}


def _flatten() -> Layer:
    def init(key, input_shape):
        shape = input_shape_arg(input_shape, "Flatten", min_rank=2, what="(N, ...)")
        return (shape[0], math.prod(shape[1:])), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return jnp.reshape(x, (x.shape[0], -1)), state

    return annotate(Layer(init, apply), "Flatten")


def _identity() -> Layer:
    def init(key, input_shape):
        return input_shape, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return x, state

    return annotate(Layer(init, apply), "Identity")


_DEFAULT = _activations(_default_ops)
Relu: Layer = _DEFAULT["Relu"]  # max(x, 0)
Sigmoid: Layer = _DEFAULT["Sigmoid"]  # 1 / (1 + exp(-x))
Tanh: Layer = _DEFAULT["Tanh"]
Softmax: Layer = _DEFAULT["Softmax"]  # over the last axis
LogSoftmax: Layer = _DEFAULT["LogSoftmax"]  # over the last axis
Flatten: Layer = ops_free("Flatten", _flatten())  # (N, ...) -> (N, prod(...))
Identity: Layer = ops_free("Identity", _identity())
