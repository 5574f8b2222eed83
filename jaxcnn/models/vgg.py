"""A small VGG-style network (Simonyan & Zisserman, 2015): stacks of 3x3 convolutions with batch norm
and ReLU, halved by 2x2 max pools, then global average pooling and a dense layer to the logits::

    [conv3x3 32 -> BN -> relu] x2 -> max-pool 2
    [conv3x3 64 -> BN -> relu] x2 -> max-pool 2
    [conv3x3 128 -> BN -> relu] x2 -> max-pool 2 -> global average pool -> dense num_classes

Convolutions pad 1 (spatial size kept) and have no bias (batch norm's offset replaces it). On
``(N, 28, 28, 1)``: 28 -> 14 -> 7 -> 3; 288,170 parameters for 10 classes
(convs 288 + 9,216 + 18,432 + 36,864 + 73,728 + 147,456; batch norms 2 * (32+32+64+64+128+128) = 896;
dense 1,290). Global pooling makes it work on any input of at least 8x8.
"""

from collections.abc import Sequence
from typing import Any

from .. import ops as _ops
from ..combinators import serial
from ..layers import Layer, bind

__all__ = ["vgg_small", "VGG_SMALL"]

VGG_SMALL = (32, 32, "M", 64, 64, "M", 128, 128, "M")


def vgg_small(num_classes: int = 10, config: Sequence[int | str] = VGG_SMALL, *, ops: Any = _ops) -> Layer:
    """VGG-style CNN returning logits; ``config`` lists conv widths and ``"M"`` for a 2x2 max pool."""
    L = bind(ops)
    layers = []
    for item in config:
        if item == "M":
            layers.append(L.MaxPool((2, 2)))
        elif isinstance(item, int) and not isinstance(item, bool) and item > 0:
            layers += [L.Conv(item, (3, 3), padding=1, use_bias=False), L.BatchNorm(), L.Relu]
        else:
            raise ValueError(f"config entries must be positive ints (conv widths) or 'M' (max pool), got {item!r}")
    layers += [L.GlobalAvgPool, L.Dense(num_classes)]
    return serial(*layers)
