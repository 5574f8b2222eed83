r"""Layers: pure ``(init, apply)`` pairs built only from :mod:`jaxcnn.ops` (hand-derived VJPs).

The contract every layer (and every combinator and model) keeps (:mod:`jaxcnn.layers.core`)::

    class Layer(NamedTuple):
        init:  init(key, input_shape) -> (output_shape, params, state)
        apply: apply(params, state, x, *, key=None, train=False) -> (y, new_state)

- ``input_shape`` includes the batch axis (channels-last, ``(N, *spatial, C)``); ``init`` infers the
  output shape by shape arithmetic alone, and ``apply`` works for any batch size.
- ``params`` (trainable) and ``state`` (non-trainable: batch-norm running statistics) are dicts of
  arrays, ``{}`` when a layer has none, so ``optax``, ``jax.tree_util`` and ``flax.serialization``
  handle them. Parameters are created as float32; cast the pytrees (``jax.tree.map``) for float64.
- Randomness is explicit: only :func:`Dropout` uses ``key``, and only when ``train=True``. ``train``
  is a Python bool (a static argument under ``jax.jit``).

Configuration is validated and normalised once, when a layer is constructed (errors name the argument
and its value; :mod:`jaxcnn.layers._config`); shape errors (channels not divisible by ``groups``, wrong
input rank, a kernel larger than the padded input) are raised by ``init``.

One module per family: :mod:`~jaxcnn.layers.conv` (``Conv``, ``ConvTranspose``, ``DepthwiseConv``,
``SeparableConv``), :mod:`~jaxcnn.layers.pool` (``MaxPool``, ``AvgPool``, ``LpPool``,
``AdaptiveAvgPool``, global pools), :mod:`~jaxcnn.layers.norm` (``BatchNorm``, ``LocalResponseNorm``),
:mod:`~jaxcnn.layers.dense` (``Dense``, activations, ``Flatten``, ``Identity``),
:mod:`~jaxcnn.layers.stochastic` (``Dropout``). Parameterless layers without
configuration are *values* (``Relu``, ``Sigmoid``, ``Tanh``, ``Softmax``, ``LogSoftmax``, ``Flatten``,
``Identity``, ``GlobalAvgPool``, ``GlobalMaxPool``); configurable ones are functions returning a
:class:`Layer`.

**Choosing the ops.** Every constructor takes a keyword-only ``ops`` (default :mod:`jaxcnn.ops`): any
object with the same functions, in practice :mod:`jaxcnn.reference`, whose twins are differentiated by
JAX's own autodiff. :func:`bind` returns every constructor and value layer bound to one ``ops``, so the
same network can be built twice and its hand-derived gradients compared with autodiff's::

    R = jaxcnn.layers.bind(jaxcnn.reference)
    twin = jaxcnn.serial(R.Conv(8, (3, 3)), R.Relu, R.Flatten, R.Dense(10))

Operations that are not ops -- adding a conv bias (a broadcasting ``+``), reshapes, dropout's mask, the
eval-mode batch-norm affine map -- are plain ``jax.numpy`` that autodiff differentiates.
"""

from .conv import Conv as Conv
from .conv import ConvTranspose as ConvTranspose
from .conv import DepthwiseConv as DepthwiseConv
from .conv import SeparableConv as SeparableConv
from .core import ApplyFn as ApplyFn
from .core import InitFn as InitFn
from .core import Layer as Layer
from .core import bind as bind
from .dense import Dense as Dense
from .dense import Flatten as Flatten
from .dense import Identity as Identity
from .dense import LeakyRelu as LeakyRelu
from .dense import LogSoftmax as LogSoftmax
from .dense import Relu as Relu
from .dense import Sigmoid as Sigmoid
from .dense import Softmax as Softmax
from .dense import Tanh as Tanh
from .norm import BatchNorm as BatchNorm
from .norm import GroupNorm as GroupNorm
from .norm import LocalResponseNorm as LocalResponseNorm
from .norm import frozen_batch_norm as frozen_batch_norm
from .pool import AdaptiveAvgPool as AdaptiveAvgPool
from .pool import AvgPool as AvgPool
from .pool import GlobalAvgPool as GlobalAvgPool
from .pool import GlobalMaxPool as GlobalMaxPool
from .pool import LpPool as LpPool
from .pool import MaxPool as MaxPool
from .stochastic import Dropout as Dropout

__all__ = [
    "Layer",
    "InitFn",
    "ApplyFn",
    "bind",
    "Conv",
    "ConvTranspose",
    "DepthwiseConv",
    "SeparableConv",
    "Dense",
    "MaxPool",
    "AvgPool",
    "LpPool",
    "AdaptiveAvgPool",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "Flatten",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "LogSoftmax",
    "Dropout",
    "BatchNorm",
    "GroupNorm",
    "LocalResponseNorm",
    "frozen_batch_norm",
    "Identity",
]
