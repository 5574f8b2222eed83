"""jaxcnn: convolutional networks in JAX with hand-derived backward passes.

What is derived by hand (each a ``jax.custom_vjp`` whose backward pass is written from the math in
``docs/derivations.md`` and tested equal to autodiff of its :mod:`jaxcnn.reference` twin): every op in
:mod:`jaxcnn.ops` -- convolution and transposed convolution, max/average/Lp/global pooling, dense (its
bias included), the activations and (log-)softmax, train-mode batch norm -- and the losses in
:mod:`jaxcnn.losses`. What JAX's autodiff differentiates: the glue between them -- the bias add of
convolution layers, reshapes (``Flatten``), dropout's mask, eval-mode batch norm, the residual add and
the zero-pad shortcut, concatenation, and ``train.probability_nll_loss``.

- :mod:`jaxcnn.ops`: the pure ops; :mod:`jaxcnn.reference`: their ``lax`` + autodiff twins, the oracle.
- :mod:`jaxcnn.losses`: softmax cross-entropy and MSE; :mod:`jaxcnn.gradcheck`: compare any VJP with
  autodiff and finite differences.
- :mod:`jaxcnn.layers`, :mod:`jaxcnn.combinators`, :mod:`jaxcnn.initializers`, :mod:`jaxcnn.models`:
  ``Layer(init, apply)`` pairs, ways to combine them, and the model zoo.
- :mod:`jaxcnn.inspect` (:func:`summary`), :mod:`jaxcnn.shapes`: per-layer shapes, parameters, FLOPs and
  receptive fields; intermediate feature maps; output-size arithmetic.
- :mod:`jaxcnn.data`, :mod:`jaxcnn.train`, :mod:`jaxcnn.distributed`, :mod:`jaxcnn.checkpoint`:
  datasets, the training loop, data parallelism, checkpoints; :mod:`jaxcnn.xla_cpu`: XLA:CPU's
  convolution route.
- :mod:`jaxcnn.errors`: the library's errors for bad configuration and bad files.
"""

from . import checkpoint as checkpoint
from . import combinators as combinators
from . import data as data
from . import distributed as distributed
from . import errors as errors
from . import gradcheck as gradcheck
from . import initializers as initializers
from . import inspect as inspect
from . import layers as layers
from . import losses as losses
from . import models as models
from . import ops as ops
from . import reference as reference
from . import shapes as shapes
from . import train as train
from . import xla_cpu as xla_cpu
from .combinators import concatenate as concatenate
from .combinators import fan_out as fan_out
from .combinators import parallel as parallel
from .combinators import residual as residual
from .combinators import serial as serial
from .inspect import summary as summary
from .layers import Layer as Layer

__version__ = "0.1.0"

__all__ = [
    "ops",
    "reference",
    "losses",
    "gradcheck",
    "checkpoint",
    "data",
    "layers",
    "combinators",
    "initializers",
    "models",
    "train",
    "distributed",
    "errors",
    "xla_cpu",
    "Layer",
    "serial",
    "parallel",
    "fan_out",
    "concatenate",
    "residual",
    "inspect",
    "shapes",
    "summary",
]
