r"""DenseNet (Huang, Liu, van der Maaten & Weinberger, 2017): within a dense block every layer gets the
concatenation of all earlier feature maps and adds ``growth_rate`` maps of its own
(:func:`jaxcnn.combinators.dense_concat`); transitions between blocks halve the channels (compression
0.5, the "C" of DenseNet-BC) and the spatial size. Each layer is a bottleneck (the "B"):
``BN -> ReLU -> conv1x1 (bn_size * growth) -> BN -> ReLU -> conv3x3 (growth)``.

ImageNet DenseNet-BC in torchvision's layout (``features.denseblock1.denselayer1.conv1``, ...;
:func:`jaxcnn.models.from_torchvision` loads its weights)::

    conv7x7/2 64 -> BN -> ReLU -> max-pool 3x3/2 -> [dense block -> transition] x 3 -> dense block
      -> BN -> ReLU -> global average pool -> dense num_classes

==================  =============  ======================  =================================
model               block layers   parameters (1000 cls)   top-1 / top-5 val. error (paper)
==================  =============  ======================  =================================
``densenet121()``   6, 12, 24, 16  7,978,856               25.02% / 7.71%
``densenet169()``   6, 12, 32, 32  14,149,480              23.80% / 6.85%
``densenet201()``   6, 12, 48, 32  20,013,928              22.58% / 6.34%
==================  =============  ======================  =================================

(growth rate 32; the paper's Table 3, single-crop; torchvision's weights reach 74.43% top-1 for 121.)

``densenet_bc(depth=100, growth_rate=12)``: the paper's CIFAR DenseNet-BC for 32x32 inputs: a 3x3
convolution to ``2 * growth_rate`` channels, three dense blocks of ``(depth - 4) / 6`` bottleneck layers
with 2x2 average-pooling transitions (compression 0.5) between them, BN -> ReLU -> global average pool
-> dense. 769,162 parameters for 10 classes (the paper: 0.8M, 4.51% error on CIFAR-10 with
augmentation, 22.27% on CIFAR-100).
"""

from typing import Any

from .. import ops as _ops
from ..combinators import dense_concat, named
from ..errors import ConfigError
from ..layers import Layer, bind

__all__ = ["densenet", "densenet121", "densenet169", "densenet201", "densenet_bc", "DENSENET_BLOCKS"]

DENSENET_BLOCKS = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32)}


def _dense_layer(L, growth_rate: int, bn_size: int) -> Layer:
    """``x -> concat(x, conv3x3(relu(BN(conv1x1(relu(BN(x)))))))``, torchvision's ``_DenseLayer``."""
    return dense_concat(
        named(
            ("norm1", L.BatchNorm()),
            ("relu1", L.Relu),
            ("conv1", L.Conv(bn_size * growth_rate, 1, use_bias=False)),
            ("norm2", L.BatchNorm()),
            ("relu2", L.Relu),
            ("conv2", L.Conv(growth_rate, 3, padding=1, use_bias=False)),
        )
    )


def _transition(L, features: int) -> Layer:
    """BN -> ReLU -> conv1x1 to ``features`` -> 2x2 average pool (torchvision's ``_Transition``)."""
    return named(
        ("norm", L.BatchNorm()),
        ("relu", L.Relu),
        ("conv", L.Conv(features, 1, use_bias=False)),
        ("pool", L.AvgPool(2, stride=2)),
    )


def _blocks(L, features: int, blocks, growth_rate: int, bn_size: int) -> list[tuple[str, Layer]]:
    """Dense blocks and the transitions between them, starting from ``features`` channels."""
    children = []
    for i, n in enumerate(blocks):
        layers = [(f"denselayer{j + 1}", _dense_layer(L, growth_rate, bn_size)) for j in range(n)]
        children.append((f"denseblock{i + 1}", named(*layers)))
        features += n * growth_rate
        if i < len(blocks) - 1:
            features //= 2
            children.append((f"transition{i + 1}", _transition(L, features)))
    return children


def _head(L, num_classes: int) -> list[tuple[str, Layer]]:
    return [("relu", L.Relu), ("avgpool", L.GlobalAvgPool), ("classifier", L.Dense(num_classes))]


def densenet(
    blocks=(6, 12, 24, 16),
    num_classes: int = 1000,
    *,
    growth_rate: int = 32,
    num_init_features: int = 64,
    bn_size: int = 4,
    ops: Any = _ops,
) -> Layer:
    """An ImageNet DenseNet-BC with ``blocks`` layers per dense block, returning logits."""
    L = bind(ops)
    stem = [
        ("conv0", L.Conv(num_init_features, 7, stride=2, padding=3, use_bias=False)),
        ("norm0", L.BatchNorm()),
        ("relu0", L.Relu),
        ("pool0", L.MaxPool(3, stride=2, padding=1)),
    ]
    body = _blocks(L, num_init_features, blocks, growth_rate, bn_size)
    return named(("features", named(*stem, *body, ("norm5", L.BatchNorm()))), *_head(L, num_classes))


def densenet121(num_classes: int = 1000, *, ops: Any = _ops) -> Layer:
    """DenseNet-121: 7,978,856 parameters for 1000 classes (see the module docstring)."""
    return densenet(DENSENET_BLOCKS[121], num_classes, ops=ops)


def densenet169(num_classes: int = 1000, *, ops: Any = _ops) -> Layer:
    """DenseNet-169: 14,149,480 parameters for 1000 classes."""
    return densenet(DENSENET_BLOCKS[169], num_classes, ops=ops)


def densenet201(num_classes: int = 1000, *, ops: Any = _ops) -> Layer:
    """DenseNet-201: 20,013,928 parameters for 1000 classes."""
    return densenet(DENSENET_BLOCKS[201], num_classes, ops=ops)


def densenet_bc(num_classes: int = 10, depth: int = 100, growth_rate: int = 12, *, ops: Any = _ops) -> Layer:
    """The CIFAR DenseNet-BC (``depth = 6n + 4``, ``n`` bottleneck layers per block) for 32x32 inputs,
    returning logits; 769,162 parameters for depth 100, growth 12 and 10 classes."""
    if depth < 10 or (depth - 4) % 6:
        raise ConfigError(f"depth must be 6n + 4 for a positive int n (10, 16, ..., 100, ...), got {depth!r}")
    L = bind(ops)
    n = (depth - 4) // 6
    stem = [("conv0", L.Conv(2 * growth_rate, 3, padding=1, use_bias=False))]
    body = _blocks(L, 2 * growth_rate, (n, n, n), growth_rate, 4)
    return named(("features", named(*stem, *body, ("norm5", L.BatchNorm()))), *_head(L, num_classes))
