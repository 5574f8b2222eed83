"""Pure ops with hand-derived VJPs (``jax.custom_vjp``); one module per family, equations in each docstring.

Channels-last layout: inputs ``(N, *spatial, C)``, kernels ``(*window, C_in // groups, C_out)``.
Forward-mode differentiation (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``) of these ops raises JAX's
``custom_vjp`` error; reverse mode to any order (``grad`` of ``grad``) works.
"""

from . import activation as _activation
from . import conv as _conv
from . import dense as _dense
from . import norm as _norm
from . import pool as _pool
from .activation import leaky_relu as leaky_relu
from .activation import log_softmax as log_softmax
from .activation import relu as relu
from .activation import sigmoid as sigmoid
from .activation import softmax as softmax
from .activation import tanh as tanh
from .conv import conv as conv
from .conv import conv_transpose as conv_transpose
from .conv import use_formulation as use_formulation
from .dense import dense as dense
from .matrix import conv_matrix as conv_matrix
from .norm import batch_norm as batch_norm
from .norm import group_norm as group_norm
from .norm import lrn as lrn
from .norm import weight_standardize as weight_standardize
from .pool import adaptive_avg_pool as adaptive_avg_pool
from .pool import avg_pool as avg_pool
from .pool import global_avg_pool as global_avg_pool
from .pool import global_max_pool as global_max_pool
from .pool import lp_pool as lp_pool
from .pool import max_pool as max_pool

# The differentiable ops, each with a hand-derived VJP and a twin in jaxcnn.reference (family by family).
# ``conv_matrix`` (the convolution as a dense matrix, jaxcnn.ops.matrix) is a tool for looking at one,
# not an op of a network, and has no twin; ``use_formulation`` forces the convolutions' formulation
# (jaxcnn.ops.conv: by default the lowering platform picks it).
__all__ = [*_conv.OPS, *_pool.OPS, *_dense.OPS, *_activation.OPS, *_norm.OPS]
