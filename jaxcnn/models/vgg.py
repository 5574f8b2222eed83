r"""VGG (Simonyan & Zisserman, 2015): stacks of 3x3 convolutions (padding 1) halved by 2x2 max pools,
widths 64 -> 128 -> 256 -> 512 -> 512, then the FC-4096 head. The configurations are data
(:data:`VGG_CONFIGS`, the paper's Table 1: A, B, D, E); ``batch_norm=True`` puts batch norm between
each convolution and its ReLU (torchvision's ``vgg*_bn``; the convolutions keep their biases, as there).

================  =====  ===========  =====================  ===================================
model             paper  conv layers  parameters (1000 cls)  top-1 / top-5 val. error (paper)
================  =====  ===========  =====================  ===================================
``vgg11()``       A      8            132,863,336            29.6% / 10.4%
``vgg13()``       B      10           133,047,848            28.7% / 9.9%
``vgg16()``       D      13           138,357,544            27.0% / 8.8%
``vgg19()``       E      16           143,667,240            27.3% / 9.0%
================  =====  ===========  =====================  ===================================

(The paper's Table 3: one test scale, training scale 256; its ILSVRC-2014 submission, an ensemble,
reached 7.3% top-5 test error.)

``batch_norm=True`` adds ``2 * sum(widths)`` parameters (vgg11_bn: 132,868,840; vgg16_bn: 138,365,992).
The head is torchvision's: an adaptive 7x7 average pool (the identity at 224x224, and what lets any
input of at least 32x32 through), then ``Dense 4096 -> ReLU -> Dropout -> Dense 4096 -> ReLU ->
Dropout -> Dense num_classes``. Parameter tree named as torchvision's modules (``features.0``,
``classifier.0``, ...), so :func:`jaxcnn.models.from_torchvision` loads its weights.

``vgg_small()`` is a small VGG-style network for 28x28 inputs: [conv3x3 -> BN -> relu] x2 -> max-pool,
widths 32, 64, 128, no conv bias, global average pooling and a dense layer; 288,170 parameters on
``(N, 28, 28, 1)`` for 10 classes (convs 288 + 9,216 + 18,432 + 36,864 + 73,728 + 147,456; batch norms
2 * (32+32+64+64+128+128) = 896; dense 1,290).
"""

from collections.abc import Sequence
from typing import Any

from .. import ops as _ops
from ..combinators import named, serial
from ..errors import ConfigError, unknown_choice
from ..layers import Layer, bind

__all__ = ["vgg", "vgg11", "vgg13", "vgg16", "vgg19", "vgg_small", "VGG_CONFIGS", "VGG_SMALL"]

VGG_CONFIGS = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "E": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}
VGG_SMALL = (32, 32, "M", 64, 64, "M", 128, 128, "M")


def _stack(L, config: Sequence[int | str], *, batch_norm: bool, conv_bias: bool) -> list[Layer]:
    """``"M"``: a 2x2 max pool; an int ``w``: conv3x3 to ``w`` (-> BN) -> ReLU."""
    layers = []
    for item in config:
        if item == "M":
            layers.append(L.MaxPool((2, 2)))
        elif isinstance(item, int) and not isinstance(item, bool) and item > 0:
            layers += [L.Conv(item, (3, 3), padding=1, use_bias=conv_bias), *([L.BatchNorm()] * batch_norm), L.Relu]
        else:
            raise ConfigError(f"config entries must be positive ints (conv widths) or 'M' (max pool), got {item!r}")
    return layers


def vgg(
    config: str | Sequence[int | str] = "D",
    num_classes: int = 1000,
    *,
    batch_norm: bool = False,
    dropout: float = 0.5,
    ops: Any = _ops,
) -> Layer:
    """A VGG network returning logits: ``config`` is a key of :data:`VGG_CONFIGS` or a sequence of conv
    widths and ``"M"`` (max pool)."""
    L = bind(ops)
    if isinstance(config, str):
        if config not in VGG_CONFIGS:
            raise unknown_choice("config", config, VGG_CONFIGS)
        config = VGG_CONFIGS[config]
    features = _stack(L, config, batch_norm=batch_norm, conv_bias=True)
    head = [L.Dense(4096), L.Relu, L.Dropout(dropout), L.Dense(4096), L.Relu, L.Dropout(dropout), L.Dense(num_classes)]
    return named(
        ("features", named(*((str(i), layer) for i, layer in enumerate(features)))),
        ("avgpool", L.AdaptiveAvgPool((7, 7))),
        ("flatten", L.Flatten),
        ("classifier", named(*((str(i), layer) for i, layer in enumerate(head)))),
    )


def vgg11(num_classes: int = 1000, *, batch_norm: bool = False, dropout: float = 0.5, ops: Any = _ops) -> Layer:
    """VGG-11 (configuration A): 132,863,336 parameters for 1000 classes (see the module docstring)."""
    return vgg("A", num_classes, batch_norm=batch_norm, dropout=dropout, ops=ops)


def vgg13(num_classes: int = 1000, *, batch_norm: bool = False, dropout: float = 0.5, ops: Any = _ops) -> Layer:
    """VGG-13 (configuration B): 133,047,848 parameters for 1000 classes."""
    return vgg("B", num_classes, batch_norm=batch_norm, dropout=dropout, ops=ops)


def vgg16(num_classes: int = 1000, *, batch_norm: bool = False, dropout: float = 0.5, ops: Any = _ops) -> Layer:
    """VGG-16 (configuration D): 138,357,544 parameters for 1000 classes."""
    return vgg("D", num_classes, batch_norm=batch_norm, dropout=dropout, ops=ops)


def vgg19(num_classes: int = 1000, *, batch_norm: bool = False, dropout: float = 0.5, ops: Any = _ops) -> Layer:
    """VGG-19 (configuration E): 143,667,240 parameters for 1000 classes."""
    return vgg("E", num_classes, batch_norm=batch_norm, dropout=dropout, ops=ops)


def vgg_small(num_classes: int = 10, config: Sequence[int | str] = VGG_SMALL, *, ops: Any = _ops) -> Layer:
    """VGG-style CNN for small images returning logits; ``config`` lists conv widths and ``"M"`` for a 2x2
    max pool (each conv followed by BN and ReLU, no bias); global average pooling, then a dense layer."""
    L = bind(ops)
    layers = _stack(L, config, batch_norm=True, conv_bias=False)
    return serial(*layers, L.GlobalAvgPool, L.Dense(num_classes))
