"""The model zoo: functions returning a :class:`~jaxcnn.layers.Layer`, one small module per family.

Every model takes a keyword-only ``ops`` (default :mod:`jaxcnn.ops`); ``ops=jaxcnn.reference`` builds
the same network from the autodiff twins, with identical parameter pytrees, so the hand-derived
whole-network gradient can be compared with JAX's.

Parameter counts (``count_params`` of ``init``'s params; batch-norm running statistics are state):

=======================  ======================  ==========
model                    input                   parameters
=======================  ======================  ==========
``lenet5()``             (N, 28, 28, 1)              61,706
``seed_cnn()``           (N, 28, 28, 1)              14,970
``fashion_cnn()``        (N, 28, 28, 1)           3,274,634
``resnet20("A")``        (N, 32, 32, 3)             269,722
``resnet20("A")``        (N, 28, 28, 1)             269,434
``resnet20("conv")``     (N, 32, 32, 3)             272,474
``resnet20("conv")``     (N, 28, 28, 1)             272,186
``vgg_small()``          (N, 28, 28, 1)             288,170
``mobilenet_small()``    (N, 28, 28, 1)              36,874
``mnist1d_cnn()``        (N, 40, 1)                   5,210
``cnn3d()``              (N, 16, 16, 16, 1)           3,866
``conv_autoencoder()``   (N, 28, 28, 1)               9,569
=======================  ======================  ==========
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from ..layers import Layer
from .autoencoder import conv_autoencoder as conv_autoencoder
from .lenet import lenet5 as lenet5
from .mobilenet import mobilenet_small as mobilenet_small
from .resnet import basic_block as basic_block
from .resnet import resnet as resnet
from .resnet import resnet20 as resnet20
from .resnet import zero_pad_shortcut as zero_pad_shortcut
from .small import cnn3d as cnn3d
from .small import fashion_cnn as fashion_cnn
from .small import mnist1d_cnn as mnist1d_cnn
from .small import seed_cnn as seed_cnn
from .vgg import vgg_small as vgg_small

__all__ = [
    "ModelSpec",
    "MODELS",
    "build",
    "count_params",
    "lenet5",
    "seed_cnn",
    "fashion_cnn",
    "mnist1d_cnn",
    "cnn3d",
    "resnet",
    "resnet20",
    "basic_block",
    "zero_pad_shortcut",
    "vgg_small",
    "mobilenet_small",
    "conv_autoencoder",
]


def count_params(params) -> int:
    """The number of scalars in a params pytree."""
    return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(params))


class ModelSpec(NamedTuple):
    """A zoo entry: how to build it, what it returns, and the example shape it was designed for."""

    constructor: Callable[..., Layer]  # constructor(num_classes=..., **kwargs)
    outputs: str  # "logits" (train with softmax cross-entropy) or "probabilities" (ends in Softmax)
    input_shape: tuple[int, ...]  # one example, channels-last (the default for synthetic data and summaries)


# The classifiers `jaxcnn train` and `jaxcnn summary` offer by name.
MODELS: dict[str, ModelSpec] = {
    "mnist1d_cnn": ModelSpec(mnist1d_cnn, "logits", (40, 1)),
    "lenet5": ModelSpec(lenet5, "logits", (28, 28, 1)),
    "seed_cnn": ModelSpec(seed_cnn, "probabilities", (28, 28, 1)),
    "fashion_cnn": ModelSpec(fashion_cnn, "logits", (28, 28, 1)),
    "resnet20": ModelSpec(resnet20, "logits", (32, 32, 3)),
    "vgg_small": ModelSpec(vgg_small, "logits", (28, 28, 1)),
    "mobilenet_small": ModelSpec(mobilenet_small, "logits", (28, 28, 1)),
    "cnn3d": ModelSpec(cnn3d, "logits", (16, 16, 16, 1)),
}


def build(name: str, num_classes: int = 10, **kwargs: Any) -> Layer:
    """The zoo model ``name`` (a key of :data:`MODELS`) for ``num_classes`` classes."""
    if name not in MODELS:
        raise ValueError(f"Unknown model: {name!r}. It needs to be one of {sorted(MODELS)}")
    return MODELS[name].constructor(num_classes=num_classes, **kwargs)
