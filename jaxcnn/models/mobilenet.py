"""A small MobileNet (Howard et al., 2017): depthwise-separable blocks, each a depthwise 3x3
convolution and a pointwise 1x1 convolution, both followed by batch norm and ReLU::

    conv3x3 16 -> BN -> relu
    [dw3x3 (stride s) -> BN -> relu -> pw1x1 f -> BN -> relu]  for (f, s) in
        (32, 1), (64, 2), (64, 1), (128, 2), (128, 1)
    global average pool -> dense num_classes     (logits)

Convolutions pad 1 where 3x3 and have no bias. On ``(N, 28, 28, 1)``: 28 -> 14 -> 7; 36,874
parameters for 10 classes.
"""

from collections.abc import Sequence
from typing import Any

from .. import ops as _ops
from ..combinators import serial
from ..errors import ConfigError
from ..layers import Layer, bind

__all__ = ["mobilenet_small", "MOBILENET_SMALL"]

MOBILENET_SMALL = ((32, 1), (64, 2), (64, 1), (128, 2), (128, 1))


def mobilenet_small(
    num_classes: int = 10, blocks: Sequence[tuple[int, int]] = MOBILENET_SMALL, *, ops: Any = _ops
) -> Layer:
    """MobileNet-style CNN returning logits; ``blocks`` lists ``(features, stride)`` per separable block."""
    L = bind(ops)
    layers = [L.Conv(16, (3, 3), padding=1, use_bias=False), L.BatchNorm(), L.Relu]
    for block in blocks:
        if not (isinstance(block, Sequence) and len(block) == 2):
            raise ConfigError(f"blocks entries must be (features, stride) pairs, got {block!r}")
        features, stride = block
        layers += [
            L.DepthwiseConv((3, 3), stride=stride, padding=1, use_bias=False),
            L.BatchNorm(),
            L.Relu,
            L.Conv(features, (1, 1), use_bias=False),
            L.BatchNorm(),
            L.Relu,
        ]
    layers += [L.GlobalAvgPool, L.Dense(num_classes)]
    return serial(*layers)
