"""jaxcnn: convolutional networks in JAX whose every backward pass is derived by hand.

- :mod:`jaxcnn.ops`: pure ops (conv, conv_transpose, pools, dense, activations, batch norm), each a
  ``jax.custom_vjp`` with a hand-derived backward pass.
- :mod:`jaxcnn.reference`: a ``lax`` + autodiff twin of every op, the oracle.
- :mod:`jaxcnn.losses`: softmax cross-entropy and MSE with hand-derived VJPs.
- :mod:`jaxcnn.gradcheck`: compare any VJP with autodiff and finite differences.
"""

from . import checkpoint as checkpoint
from . import data as data
from . import gradcheck as gradcheck
from . import losses as losses
from . import ops as ops
from . import reference as reference

__version__ = "0.1.0"

__all__ = ["ops", "reference", "losses", "gradcheck", "checkpoint", "data"]

# --- layers, combinators and models (issue 3) -------------------------------------------------

from . import combinators as combinators
from . import initializers as initializers
from . import layers as layers
from . import models as models
from .combinators import concatenate as concatenate
from .combinators import fan_out as fan_out
from .combinators import parallel as parallel
from .combinators import residual as residual
from .combinators import serial as serial
from .layers import Layer as Layer

__all__ += [
    "layers",
    "combinators",
    "initializers",
    "models",
    "Layer",
    "serial",
    "parallel",
    "fan_out",
    "concatenate",
    "residual",
]

# --- training and scaling out (issues 4 and 5) -------------------------------------------------
from . import distributed as distributed  # noqa: E402
from . import train as train  # noqa: E402

__all__ += ["train", "distributed"]
