"""The model zoo: functions returning a :class:`~jaxcnn.layers.Layer`, one small module per family.

Every model takes a keyword-only ``ops`` (default :mod:`jaxcnn.ops`); ``ops=jaxcnn.reference`` builds
the same network from the autodiff twins, with identical parameter pytrees, so the hand-derived
whole-network gradient can be compared with JAX's. :data:`MODELS` is the registry the CLI offers by name;
:func:`from_torchvision` loads torchvision's weights into the torchvision-compatible ones.

Parameter counts (``count_params`` of ``init``'s params; batch-norm running statistics are state), for
10 classes on the small models and 1000 on the ImageNet ones (every torchvision-compatible count equals
torchvision's):

===========================  ======================  ===========  =============================
model                        input                   parameters   source
===========================  ======================  ===========  =============================
``lenet5()``                 (N, 28, 28, 1)              61,706   LeCun et al., 1998
``seed_cnn()``               (N, 28, 28, 1)              14,970   the lecture notes
``fashion_cnn()``            (N, 28, 28, 1)           3,274,634   the classic two-conv CNN
``tanh_cnn()``                 (N, 28, 28, 1)              26,010   Tramer & Boneh, 2021 (DP-SGD)
``resnet20("A")``            (N, 32, 32, 3)             269,722   He et al., 2016 (CIFAR)
``resnet20("conv")``         (N, 32, 32, 3)             272,474
``vgg_small()``              (N, 28, 28, 1)             288,170   VGG-style
``mobilenet_small()``        (N, 28, 28, 1)              36,874   Howard et al., 2017
``mnist1d_cnn()``            (N, 40, 1)                   5,210   Greydanus, 2020
``cnn3d()``                  (N, 16, 16, 16, 1)           3,866
``conv_autoencoder()``       (N, 28, 28, 1)               9,569
``densenet_bc()``            (N, 32, 32, 3)             769,162   Huang et al., 2017 (CIFAR)
``alexnet()``                (N, 224, 224, 3)        61,100,840   torchvision
``alexnet(lrn=True)``        (N, 224, 224, 3)        60,965,224   Krizhevsky et al., 2012
``vgg11()`` / ``vgg13()``    (N, 224, 224, 3)       132,863,336   torchvision / Simonyan &
                                                    133,047,848   Zisserman, 2015
``vgg16()`` / ``vgg19()``    (N, 224, 224, 3)       138,357,544
                                                    143,667,240
``googlenet()``              (N, 224, 224, 3)         6,624,904   torchvision / Szegedy et al., 2015
``googlenet(aux_logits=1)``  (N, 224, 224, 3)        13,004,888
``resnet18()`` / ``34``      (N, 224, 224, 3)        11,689,512   torchvision / He et al., 2016
                                                     21,797,672
``resnet50()`` / ``101``     (N, 224, 224, 3)        25,557,032
                                                     44,549,160
``resnet152()``              (N, 224, 224, 3)        60,192,808
``densenet121()`` / ``169``  (N, 224, 224, 3)         7,978,856   torchvision / Huang et al., 2017
                                                     14,149,480
``densenet201()``            (N, 224, 224, 3)        20,013,928
===========================  ======================  ===========  =============================
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from ..errors import unknown_choice
from ..layers import Layer
from .alexnet import alexnet as alexnet
from .autoencoder import conv_autoencoder as conv_autoencoder
from .backbone import Backbone as Backbone
from .backbone import FeatureInfo as FeatureInfo
from .backbone import backbone as backbone
from .densenet import densenet as densenet
from .densenet import densenet121 as densenet121
from .densenet import densenet169 as densenet169
from .densenet import densenet201 as densenet201
from .densenet import densenet_bc as densenet_bc
from .googlenet import googlenet as googlenet
from .lenet import lenet5 as lenet5
from .mobilenet import mobilenet_small as mobilenet_small
from .resnet import basic_block as basic_block
from .resnet import bottleneck_block as bottleneck_block
from .resnet import imagenet_resnet as imagenet_resnet
from .resnet import resnet as resnet
from .resnet import resnet18 as resnet18
from .resnet import resnet20 as resnet20
from .resnet import resnet34 as resnet34
from .resnet import resnet50 as resnet50
from .resnet import resnet101 as resnet101
from .resnet import resnet152 as resnet152
from .resnet import zero_pad_shortcut as zero_pad_shortcut
from .small import cnn3d as cnn3d
from .small import fashion_cnn as fashion_cnn
from .small import mnist1d_cnn as mnist1d_cnn
from .small import seed_cnn as seed_cnn
from .small import tanh_cnn as tanh_cnn
from .torchvision import TORCHVISION_MODELS as TORCHVISION_MODELS
from .torchvision import NewHeadWarning as NewHeadWarning
from .torchvision import WeightsError as WeightsError
from .torchvision import from_torchvision as from_torchvision
from .torchvision import head_layers as head_layers
from .torchvision import save_torchvision as save_torchvision
from .torchvision import to_torchvision as to_torchvision
from .vgg import vgg as vgg
from .vgg import vgg11 as vgg11
from .vgg import vgg13 as vgg13
from .vgg import vgg16 as vgg16
from .vgg import vgg19 as vgg19
from .vgg import vgg_small as vgg_small

__all__ = [
    "ModelSpec",
    "MODELS",
    "CLASSIFIER_OUTPUTS",
    "build",
    "count_params",
    "lenet5",
    "seed_cnn",
    "fashion_cnn",
    "tanh_cnn",
    "mnist1d_cnn",
    "cnn3d",
    "resnet",
    "resnet20",
    "basic_block",
    "zero_pad_shortcut",
    "vgg_small",
    "mobilenet_small",
    "conv_autoencoder",
    "alexnet",
    "vgg",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "googlenet",
    "imagenet_resnet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "bottleneck_block",
    "densenet",
    "densenet121",
    "densenet169",
    "densenet201",
    "densenet_bc",
    "from_torchvision",
    "to_torchvision",
    "save_torchvision",
    "head_layers",
    "NewHeadWarning",
    "TORCHVISION_MODELS",
    "WeightsError",
    "backbone",
    "Backbone",
    "FeatureInfo",
]


def count_params(params) -> int:
    """The number of scalars in a params pytree."""
    return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(params))


class ModelSpec(NamedTuple):
    """A zoo entry: how to build it, what it returns, the example shape it was designed for, and the
    keyword arguments ``jaxcnn train`` builds it with."""

    constructor: Callable[..., Layer]  # constructor(num_classes=..., **kwargs)
    outputs: str  # "logits", "probabilities" (ends in Softmax), "logits+aux" ((logits, *aux)), "images"
    input_shape: tuple[int, ...]  # one example, channels-last (the default for synthetic data and summaries)
    train_kwargs: dict = {}  # noqa: RUF012 -- read only


_IMAGENET = (224, 224, 3)

# Every zoo model by name: the classifiers `jaxcnn train` offers and every model `jaxcnn summary` shows.
MODELS: dict[str, ModelSpec] = {
    "mnist1d_cnn": ModelSpec(mnist1d_cnn, "logits", (40, 1)),
    "lenet5": ModelSpec(lenet5, "logits", (28, 28, 1)),
    "seed_cnn": ModelSpec(seed_cnn, "probabilities", (28, 28, 1)),
    "fashion_cnn": ModelSpec(fashion_cnn, "logits", (28, 28, 1)),
    "tanh_cnn": ModelSpec(tanh_cnn, "logits", (28, 28, 1)),
    "resnet20": ModelSpec(resnet20, "logits", (32, 32, 3)),
    "vgg_small": ModelSpec(vgg_small, "logits", (28, 28, 1)),
    "mobilenet_small": ModelSpec(mobilenet_small, "logits", (28, 28, 1)),
    "cnn3d": ModelSpec(cnn3d, "logits", (16, 16, 16, 1)),
    "conv_autoencoder": ModelSpec(lambda num_classes=None, **kw: conv_autoencoder(**kw), "images", (28, 28, 1)),
    "densenet_bc": ModelSpec(densenet_bc, "logits", (32, 32, 3)),
    "alexnet": ModelSpec(alexnet, "logits", _IMAGENET),
    "alexnet_lrn": ModelSpec(lambda **kw: alexnet(lrn=True, **kw), "logits", _IMAGENET),
    **{
        f"vgg{d}{'_bn' if bn else ''}": ModelSpec(
            lambda d=d, bn=bn, **kw: vgg({11: "A", 13: "B", 16: "D", 19: "E"}[d], batch_norm=bn, **kw),
            "logits",
            _IMAGENET,
        )
        for d in (11, 13, 16, 19)
        for bn in (False, True)
    },
    "googlenet": ModelSpec(googlenet, "logits+aux", _IMAGENET, {"aux_logits": True}),
    "resnet18": ModelSpec(resnet18, "logits", _IMAGENET),
    "resnet34": ModelSpec(resnet34, "logits", _IMAGENET),
    "resnet50": ModelSpec(resnet50, "logits", _IMAGENET),
    "resnet101": ModelSpec(resnet101, "logits", _IMAGENET),
    "resnet152": ModelSpec(resnet152, "logits", _IMAGENET),
    "densenet121": ModelSpec(densenet121, "logits", _IMAGENET),
    "densenet169": ModelSpec(densenet169, "logits", _IMAGENET),
    "densenet201": ModelSpec(densenet201, "logits", _IMAGENET),
}
CLASSIFIER_OUTPUTS = ("logits", "probabilities", "logits+aux")


def build(name: str, num_classes: int = 10, *, for_training: bool = False, **kwargs: Any) -> Layer:
    """The zoo model ``name`` (a key of :data:`MODELS`) for ``num_classes`` classes; ``for_training``
    adds the entry's ``train_kwargs`` (GoogLeNet's auxiliary heads)."""
    if name not in MODELS:
        raise unknown_choice("model", name, sorted(MODELS))
    spec = MODELS[name]
    return spec.constructor(num_classes=num_classes, **({**spec.train_kwargs, **kwargs} if for_training else kwargs))
