r"""Residual networks (He et al., 2016): the CIFAR family (section 4.2, ``resnet(depth)``, ``resnet20``)
and the ImageNet family in torchvision's layout (section 4.1, ``resnet18`` ... ``resnet152``), channels-last.

CIFAR ResNets:

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
from ..combinators import named, residual, residual_block, serial
from ..errors import ConfigError, unknown_choice
from ..layers import Layer, bind, rules
from ..layers.core import annotate
from ..ops._validate import as_positive_int, is_int

__all__ = [
    "resnet",
    "resnet20",
    "basic_block",
    "zero_pad_shortcut",
    "SHORTCUTS",
    "imagenet_resnet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "torchvision_basic_block",
    "bottleneck_block",
    "RESNET_LAYERS",
]

# Option A's shortcut subsamples with a stride like a 1x1 window (jaxcnn.inspect.summary).
rules.register_kind("ZeroPadShortcut", field=rules.window_field)

SHORTCUTS = ("conv", "A")


def zero_pad_shortcut(features: int, stride: int) -> Layer:
    """Option A shortcut: ``x[:, ::s, ..., ::s, :]`` with zero channels appended up to ``features``.

    Parameter-free; ``(N, *spatial, C) -> (N, *ceil(spatial / s), features)`` for ``features >= C``.
    """
    features, stride = as_positive_int(features, "features"), as_positive_int(stride, "stride")

    def init(key, input_shape):
        shape = tuple(input_shape)
        if len(shape) not in (3, 4, 5):
            raise ConfigError(f"zero_pad_shortcut: input_shape must be (N, *spatial, C), got {shape}")
        if shape[-1] > features:
            raise ConfigError(
                f"zero_pad_shortcut: input channels input_shape[-1] (={shape[-1]}) must not exceed "
                f"features (={features})"
            )
        return (shape[0], *(-(-n // stride) for n in shape[1:-1]), features), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        nd = x.ndim - 2
        sub = x[(slice(None), *(slice(None, None, stride),) * nd, slice(None))]
        return jnp.pad(sub, [(0, 0)] * (nd + 1) + [(0, features - x.shape[-1])]), state

    return annotate(Layer(init, apply), "ZeroPadShortcut", window=1, stride=stride, dilation=1, padding=0)


def basic_block(features: int, *, stride: int = 1, in_features: int, shortcut: str = "conv", ops: Any = _ops) -> Layer:
    """conv3x3(stride) -> BN -> relu -> conv3x3 -> BN, plus the shortcut, then relu.

    The shortcut is the identity when ``stride == 1`` and ``in_features == features``; otherwise
    ``shortcut`` picks ``"conv"`` (1x1 strided conv + BN) or ``"A"`` (:func:`zero_pad_shortcut`).
    """
    if shortcut not in SHORTCUTS:
        raise unknown_choice("shortcut", shortcut, SHORTCUTS)
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
        raise ConfigError(msg)
    return operator.index(depth)


def resnet(depth: int, num_classes: int = 10, shortcut: str = "conv", *, ops: Any = _ops) -> Layer:
    """A CIFAR ResNet of ``depth = 6n + 2`` layers returning logits (see the module docstring).

    ``shortcut`` is ``"conv"`` (projection) or ``"A"`` (subsample and zero-pad, parameter-free).
    """
    n = (_check_depth(depth) - 2) // 6
    if shortcut not in SHORTCUTS:
        raise unknown_choice("shortcut", shortcut, SHORTCUTS)
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


# ---------------------------------------------------------------------------------------------
# ImageNet ResNets, torchvision's layout (He et al., 2016, section 4.1 and Table 1)
# ---------------------------------------------------------------------------------------------

# Blocks per stage (Table 1 of the paper) and the block that builds them.
RESNET_LAYERS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}


def _downsample(L, features: int, stride: int, in_features: int) -> Layer | None:
    """The projection shortcut (1x1 conv + BN) where the shape changes; None (identity) otherwise."""
    if stride == 1 and in_features == features:
        return None
    return named(("0", L.Conv(features, 1, stride=stride, use_bias=False)), ("1", L.BatchNorm()))


def torchvision_basic_block(L, planes: int, stride: int, in_features: int) -> Layer:
    """conv3x3(stride) -> BN -> relu -> conv3x3 -> BN, + shortcut, relu (torchvision's ``BasicBlock``)."""
    return residual_block(
        ("conv1", L.Conv(planes, 3, stride=stride, padding=1, use_bias=False)),
        ("bn1", L.BatchNorm()),
        ("relu", L.Relu),
        ("conv2", L.Conv(planes, 3, padding=1, use_bias=False)),
        ("bn2", L.BatchNorm()),
        downsample=_downsample(L, planes, stride, in_features),
        activation=L.Relu,
    )


def bottleneck_block(L, planes: int, stride: int, in_features: int) -> Layer:
    """conv1x1 -> BN -> relu -> conv3x3(stride) -> BN -> relu -> conv1x1 (4 planes) -> BN, + shortcut,
    relu: torchvision's ``Bottleneck`` (ResNet v1.5: the stride sits in the 3x3 convolution)."""
    return residual_block(
        ("conv1", L.Conv(planes, 1, use_bias=False)),
        ("bn1", L.BatchNorm()),
        ("relu", L.Relu),
        ("conv2", L.Conv(planes, 3, stride=stride, padding=1, use_bias=False)),
        ("bn2", L.BatchNorm()),
        ("relu2", L.Relu),
        ("conv3", L.Conv(4 * planes, 1, use_bias=False)),
        ("bn3", L.BatchNorm()),
        downsample=_downsample(L, 4 * planes, stride, in_features),
        activation=L.Relu,
    )


_BLOCKS = {"basic": torchvision_basic_block, "bottleneck": bottleneck_block}


def _stage(L, block: str, planes: int, blocks: int, stride: int, in_features: int) -> Layer:
    make = _BLOCKS[block]
    children = [("0", make(L, planes, stride, in_features))]
    children += [(str(i), make(L, planes, 1, planes * EXPANSION[block])) for i in range(1, blocks)]
    return named(*children)


def imagenet_resnet(depth: int, num_classes: int = 1000, *, ops: Any = _ops) -> Layer:
    """ResNet-``depth`` for ImageNet-size inputs (``depth`` in :data:`RESNET_LAYERS`), returning logits::

        conv7x7/2 64 -> BN -> relu -> max-pool 3x3/2 -> layer1 .. layer4 (64, 128, 256, 512 planes,
        stride 1, 2, 2, 2) -> global average pool -> dense num_classes

    Named as torchvision's ``ResNet`` (``layer1.0.conv1``, ``layer2.0.downsample.0``, ``fc``), so its
    weights load with :func:`jaxcnn.models.from_torchvision`. Any input of at least 32x32 works.
    """
    if depth not in RESNET_LAYERS:
        raise unknown_choice("depth", depth, RESNET_LAYERS)
    block, counts = RESNET_LAYERS[depth]
    L = bind(ops)
    stages, in_features = [], 64
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), counts)):
        stages.append((f"layer{i + 1}", _stage(L, block, planes, blocks, 1 if i == 0 else 2, in_features)))
        in_features = planes * EXPANSION[block]
    return named(
        ("conv1", L.Conv(64, 7, stride=2, padding=3, use_bias=False)),
        ("bn1", L.BatchNorm()),
        ("relu", L.Relu),
        ("maxpool", L.MaxPool(3, stride=2, padding=1)),
        *stages,
        ("avgpool", L.GlobalAvgPool),
        ("fc", L.Dense(num_classes)),
    )


def resnet18(num_classes: int = 1000, *, ops: Any = _ops) -> Layer:
    """ResNet-18 (basic blocks 2-2-2-2): 11,689,512 parameters for 1000 classes. Paper: 27.88% top-1
    error (10-crop validation, Table 2); torchvision's weights: 69.76% top-1 accuracy."""
    return imagenet_resnet(18, num_classes, ops=ops)


def resnet34(num_classes: int = 1000, *, ops: Any = _ops) -> Layer:
    """ResNet-34 (basic blocks 3-4-6-3): 21,797,672 parameters. Paper (projection shortcuts where the
    shape changes, option B): 24.52% / 7.46% top-1 / top-5 error (10-crop, Table 3)."""
    return imagenet_resnet(34, num_classes, ops=ops)


def resnet50(num_classes: int = 1000, *, ops: Any = _ops) -> Layer:
    """ResNet-50 (bottleneck blocks 3-4-6-3): 25,557,032 parameters. Paper: 22.85% / 6.71% (10-crop,
    Table 3); torchvision's v1 weights: 76.13% top-1 accuracy."""
    return imagenet_resnet(50, num_classes, ops=ops)


def resnet101(num_classes: int = 1000, *, ops: Any = _ops) -> Layer:
    """ResNet-101 (bottleneck blocks 3-4-23-3): 44,549,160 parameters. Paper: 21.75% / 6.05% (Table 3)."""
    return imagenet_resnet(101, num_classes, ops=ops)


def resnet152(num_classes: int = 1000, *, ops: Any = _ops) -> Layer:
    """ResNet-152 (bottleneck blocks 3-8-36-3): 60,192,808 parameters. Paper: 21.43% / 5.71% (Table 3);
    an ensemble won ILSVRC-2015 with 3.57% top-5 test error."""
    return imagenet_resnet(152, num_classes, ops=ops)
