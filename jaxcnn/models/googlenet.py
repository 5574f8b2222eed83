r"""GoogLeNet, Inception v1 (Szegedy et al., 2015), in torchvision's layout.

Inception modules run 1x1, 3x3 and "5x5" convolutions and a 3x3 max pool side by side on the same
input, with 1x1 reductions in front of the larger kernels and after the pool, and concatenate the four
branches' channels (:func:`jaxcnn.combinators.branches`). The network::

    conv7x7/2 64 -> maxpool 3/2 -> conv1x1 64 -> conv3x3 192 -> maxpool 3/2
      -> inception 3a, 3b -> maxpool 3/2 -> 4a, 4b, 4c, 4d, 4e -> maxpool 2/2 -> 5a, 5b
      -> global average pool -> dropout 0.2 -> dense num_classes

Every convolution is ``BasicConv2d``: conv (no bias) -> batch norm (epsilon 1e-3) -> ReLU. The max pools
round up (``ceil_mode=True``, :func:`jaxcnn.layers.MaxPool`). As in torchvision, the "5x5" branch uses
3x3 kernels (a known quirk of the torchvision port that its pretrained weights depend on).

**6,624,904 parameters** for 1000 classes (torchvision's count without the auxiliary classifiers). The
paper reports 6.67% top-5 test error for its 7-model ensemble (ILSVRC-2014 winner) and 10.07% top-5
validation error for one model with one crop; torchvision's weights: 69.78% top-1 accuracy.

``aux_logits=True`` adds the paper's two auxiliary classifiers, on the outputs of inception 4a and 4d
(adaptive 4x4 average pool -> conv1x1 128 -> dense 1024 -> ReLU -> dropout 0.7 -> dense num_classes;
13,004,888 parameters in all for 1000 classes), and the model returns ``(logits, aux1, aux2)`` in
train and eval mode alike. The paper adds their losses with weight 0.3 during training and discards
them at inference (:func:`jaxcnn.train.aux_cross_entropy_loss`; predictions use ``logits``).

``transform_input=True`` maps inputs normalised with the ImageNet mean and standard deviation to the
``[-1, 1]`` scaling the original weights were trained on, as torchvision's ``googlenet(weights=...)``
does; use it with those weights.
"""

from typing import Any

import jax.numpy as jnp

from .. import ops as _ops
from ..combinators import branches, named
from ..errors import ConfigError
from ..layers import Layer, bind
from ..layers.core import annotate

__all__ = ["googlenet", "inception", "INCEPTION_V1"]

# (ch1x1, ch3x3reduce, ch3x3, ch5x5reduce, ch5x5, pool_proj) of each Inception module (the paper's Table 1).
INCEPTION_V1 = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}
_POOL_AFTER = {"inception3b": ("maxpool3", 3), "inception4e": ("maxpool4", 2)}
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _basic_conv(L, features: int, kernel: int, *, stride: int = 1, padding: int = 0) -> Layer:
    """torchvision's ``BasicConv2d``: conv (no bias) -> BN (epsilon 1e-3) -> ReLU."""
    conv = L.Conv(features, kernel, stride=stride, padding=padding, use_bias=False)
    return named(("conv", conv), ("bn", L.BatchNorm(epsilon=1e-3)), ("relu", L.Relu))


def inception(L, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int, pool_proj: int) -> Layer:
    """One Inception module: four branches concatenated along channels (output ``ch1x1 + ch3x3 + ch5x5 +
    pool_proj`` channels, same spatial size)."""
    return branches(
        ("branch1", _basic_conv(L, ch1x1, 1)),
        ("branch2", named(("0", _basic_conv(L, ch3x3red, 1)), ("1", _basic_conv(L, ch3x3, 3, padding=1)))),
        ("branch3", named(("0", _basic_conv(L, ch5x5red, 1)), ("1", _basic_conv(L, ch5x5, 3, padding=1)))),
        (
            "branch4",
            named(("0", L.MaxPool(3, stride=1, padding=1, ceil_mode=True)), ("1", _basic_conv(L, pool_proj, 1))),
        ),
    )


def _aux_head(L, num_classes: int, dropout: float) -> Layer:
    return named(
        ("avgpool", L.AdaptiveAvgPool((4, 4))),
        ("conv", _basic_conv(L, 128, 1)),
        ("flatten", L.Flatten),
        ("fc1", L.Dense(1024)),
        ("relu", L.Relu),
        ("dropout", L.Dropout(dropout)),
        ("fc2", L.Dense(num_classes)),
    )


def _transform_input() -> Layer:
    """``x_c * std_c / 0.5 + (mean_c - 0.5) / 0.5`` per RGB channel (torchvision's ``transform_input``)."""
    scale = jnp.asarray(_IMAGENET_STD) / 0.5
    shift = (jnp.asarray(_IMAGENET_MEAN) - 0.5) / 0.5

    def init(key, input_shape):
        if input_shape[-1] != 3:
            raise ConfigError(f"googlenet: transform_input needs 3 (RGB) channels, got input_shape {input_shape}")
        return input_shape, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return (x * scale.astype(x.dtype) + shift.astype(x.dtype)), state

    return annotate(Layer(init, apply), "TransformInput")


def googlenet(
    num_classes: int = 1000,
    *,
    aux_logits: bool = False,
    transform_input: bool = False,
    dropout: float = 0.2,
    dropout_aux: float = 0.7,
    ops: Any = _ops,
) -> Layer:
    """GoogLeNet (Inception v1) returning logits, or ``(logits, aux1, aux2)`` with ``aux_logits=True``
    (see the module docstring). Any input of at least 32x32 works."""
    L = bind(ops)
    stem = [
        ("conv1", _basic_conv(L, 64, 7, stride=2, padding=3)),
        ("maxpool1", L.MaxPool(3, stride=2, ceil_mode=True)),
        ("conv2", _basic_conv(L, 64, 1)),
        ("conv3", _basic_conv(L, 192, 3, padding=1)),
        ("maxpool2", L.MaxPool(3, stride=2, ceil_mode=True)),
    ]
    body = []
    for name, channels in INCEPTION_V1.items():
        body.append((name, inception(L, *channels)))
        if name in _POOL_AFTER:  # maxpool3 after inception 3b, maxpool4 after 4e
            pool_name, window = _POOL_AFTER[name]
            body.append((pool_name, L.MaxPool(window, stride=2, ceil_mode=True)))
    head = [("avgpool", L.GlobalAvgPool), ("dropout", L.Dropout(dropout)), ("fc", L.Dense(num_classes))]
    taps = {
        "aux1": ("inception4a", _aux_head(L, num_classes, dropout_aux)),
        "aux2": ("inception4d", _aux_head(L, num_classes, dropout_aux)),
    }
    prefix = [("transform_input", _transform_input())] if transform_input else []
    return named(*prefix, *stem, *body, *head, taps=taps if aux_logits else None)
