r"""CIFAR-style residual networks (He et al., 2016, section 4.2), channels-last.

``depth = 6n + 2``: a 3x3 convolution to 16 channels, three stages of ``n`` basic blocks with 16, 32
and 64 channels (the first block of stages 2 and 3 has stride 2), global average pooling and a dense
layer to the logits. A basic block is::

    x -> conv3x3 (stride s) -> BN -> relu -> conv3x3 -> BN -> (+ shortcut(x)) -> relu

Convolutions followed by batch norm have no bias. Shortcuts where the shape changes:

- ``"conv"``: a strided 1x1 convolution + BN (projection, option B);
- ``"A"``: parameter-free, the input subsampled with the stride (``x[:, ::s, ::s]``) and its channels
  zero-padded at the end (option A, the paper's choice for CIFAR).

Parameter count of ResNet-20 (``n = 3``) for ``C`` input channels and 10 classes::

    stem     3*3*C*16 + BN 32                             = 144 C + 32
    stage 1  3 blocks * (2 * 3*3*16*16 + 2 BN 32)          = 14,016
    stage 2  (3*3*16*32 + 3*3*32*32 + 2 BN 64)             = 13,952
             + 2 blocks * (2 * 3*3*32*32 + 2 BN 64)        = 37,120
    stage 3  (3*3*32*64 + 3*3*64*64 + 2 BN 128)            = 55,552
             + 2 blocks * (2 * 3*3*64*64 + 2 BN 128)       = 147,968
    head     64*10 + 10                                    = 650
    option A total: 269,290 + 144 C  -> 269,722 (C = 3), 269,434 (C = 1)
    option "conv" adds 16*32 + BN 64 + 32*64 + BN 128 = 2,752 -> 272,474 (C = 3), 272,186 (C = 1)

The stride-2 convolutions pad 1 on each side (PyTorch's ``padding=1``), so 32 -> 16 -> 8 and
28 -> 14 -> 7; any input of at least 4x4 works.
"""

import operator
from typing import Any

import jax.numpy as jnp

from .. import ops as _ops
from ..combinators import residual, serial
from ..layers import Layer, bind
from ..ops._padding import is_int
from ..ops._validate import as_positive_int

__all__ = ["resnet", "resnet20", "basic_block", "zero_pad_shortcut", "SHORTCUTS"]

SHORTCUTS = ("conv", "A")


def zero_pad_shortcut(features: int, stride: int) -> Layer:
    """Option A shortcut: ``x[:, ::s, ..., ::s, :]`` with zero channels appended up to ``features``.

    Parameter-free; ``(N, *spatial, C) -> (N, *ceil(spatial / s), features)`` for ``features >= C``.
    """
    features, stride = as_positive_int(features, "features"), as_positive_int(stride, "stride")

    def init(key, input_shape):
        shape = tuple(input_shape)
        if len(shape) not in (3, 4, 5):
            raise ValueError(f"zero_pad_shortcut: input_shape must be (N, *spatial, C), got {shape}")
        if shape[-1] > features:
            raise ValueError(
                f"zero_pad_shortcut: input channels input_shape[-1] (={shape[-1]}) must not exceed "
                f"features (={features})"
            )
        return (shape[0], *(-(-n // stride) for n in shape[1:-1]), features), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        nd = x.ndim - 2
        sub = x[(slice(None), *(slice(None, None, stride),) * nd, slice(None))]
        return jnp.pad(sub, [(0, 0)] * (nd + 1) + [(0, features - x.shape[-1])]), state

    return Layer(init, apply)


def basic_block(features: int, *, stride: int = 1, in_features: int, shortcut: str = "conv", ops: Any = _ops) -> Layer:
    """conv3x3(stride) -> BN -> relu -> conv3x3 -> BN, plus the shortcut, then relu.

    The shortcut is the identity when ``stride == 1`` and ``in_features == features``; otherwise
    ``shortcut`` picks ``"conv"`` (1x1 strided conv + BN) or ``"A"`` (:func:`zero_pad_shortcut`).
    """
    if shortcut not in SHORTCUTS:
        raise ValueError(f"Unknown shortcut: {shortcut!r}. It needs to be one of {list(SHORTCUTS)}")
    L = bind(ops)
    body = serial(
        L.Conv(features, (3, 3), stride=stride, padding=1, use_bias=False),
        L.BatchNorm(),
        L.Relu,
        L.Conv(features, (3, 3), padding=1, use_bias=False),
        L.BatchNorm(),
    )
    if stride == 1 and in_features == features:
        skip = L.Identity
    elif shortcut == "conv":
        skip = serial(L.Conv(features, (1, 1), stride=stride, use_bias=False), L.BatchNorm())
    else:
        skip = zero_pad_shortcut(features, stride)
    return serial(residual(body, skip), L.Relu)


def _check_depth(depth: Any) -> int:
    msg = f"depth must be 6n + 2 for a positive int n (8, 14, 20, 32, 44, 56, 110, ...), got {depth!r}"
    if not is_int(depth) or depth < 8 or (depth - 2) % 6:
        raise ValueError(msg)
    return operator.index(depth)


def resnet(depth: int, num_classes: int = 10, shortcut: str = "conv", *, ops: Any = _ops) -> Layer:
    """A CIFAR ResNet of ``depth = 6n + 2`` layers returning logits (see the module docstring).

    ``shortcut`` is ``"conv"`` (projection) or ``"A"`` (subsample and zero-pad, parameter-free).
    """
    n = (_check_depth(depth) - 2) // 6
    if shortcut not in SHORTCUTS:
        raise ValueError(f"Unknown shortcut: {shortcut!r}. It needs to be one of {list(SHORTCUTS)}")
    L = bind(ops)
    layers = [L.Conv(16, (3, 3), padding=1, use_bias=False), L.BatchNorm(), L.Relu]
    in_features = 16
    for stage, features in enumerate((16, 32, 64)):
        for block in range(n):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(basic_block(features, stride=stride, in_features=in_features, shortcut=shortcut, ops=ops))
            in_features = features
    layers += [L.GlobalAvgPool, L.Dense(num_classes)]
    return serial(*layers)


def resnet20(num_classes: int = 10, shortcut: str = "conv", *, ops: Any = _ops) -> Layer:
    """ResNet-20 (``n = 3``): 269,722 parameters with ``shortcut="A"`` and 272,474 with ``"conv"`` on
    ``(N, 32, 32, 3)`` and 10 classes (derived in the module docstring)."""
    return resnet(20, num_classes, shortcut, ops=ops)
