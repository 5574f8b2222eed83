"""The full-size zoo against the papers' tables, leaf layer by leaf layer.

Each architecture is written out here as compact data from its paper (AlexNet: Krizhevsky et al., 2012,
and torchvision's single-tower variant; VGG: Simonyan & Zisserman, 2015, Table 1; GoogLeNet: Szegedy
et al., 2015, Table 1; ResNet: He et al., 2016, Table 1 and section 4.2; DenseNet: Huang et al., 2017,
Table 1 and section 3), expanded by the small helpers below into the expected list of leaf layers: path,
kind, window, stride, padding, ceil mode, output shape and parameter count, with the output shapes and
the parameter counts worked out here. The model's own list comes from its self-description
(:func:`jaxcnn.layers.core.describe`: kinds and window geometry) and :func:`jaxcnn.inspect.summary`
(output shapes and parameter counts by shape arithmetic; nothing is run). The two lists must agree leaf
for leaf; a failure names the first layer that differs.

Independent of torchvision: torch is not imported, no test is skipped without it, and nothing is taken
from the model modules but their constructors (no configuration table of theirs is read). Where
jaxcnn follows torchvision rather than the paper, the comment beside the data says so.
"""

import math
from typing import NamedTuple

import pytest

from jaxcnn import inspect, models
from jaxcnn.layers.core import describe

IMAGENET = (224, 224, 3)
CIFAR = (32, 32, 3)


class Leaf(NamedTuple):
    """One leaf layer. ``window``: the kernel size (of an adaptive pool: its output size); ``window``,
    ``stride`` and ``padding`` (per side) are None for layers without a window; ``shape`` is the output
    without the batch axis."""

    path: str
    kind: str
    window: int | tuple | None
    stride: int | tuple | None
    padding: int | tuple | str | None
    ceil_mode: bool
    shape: tuple[int, ...]
    params: int


# ---------------------------------------------------------------------------------------------
# The expected leaves, built layer by layer
# ---------------------------------------------------------------------------------------------


def _out(n: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    """Output length of a ``k``-tap window with stride ``s`` and ``p`` padding per side (PyTorch's rule)."""
    return (n + 2 * p - k + (s - 1 if ceil_mode else 0)) // s + 1


class _Net:
    """Expected leaves appended in order, tracking the running output shape ``(H, W, C)`` or ``(F,)``.
    A branch shares the leaf list and starts from the current shape."""

    def __init__(self, shape, leaves=None):
        self.shape = tuple(shape)
        self.leaves = [] if leaves is None else leaves

    @property
    def channels(self) -> int:
        return self.shape[-1]

    def branch(self) -> "_Net":
        return _Net(self.shape, self.leaves)

    def concat(self, *nets: "_Net") -> None:
        """Channels of ``nets`` joined (an Inception module, a DenseNet layer)."""
        assert len({net.shape[:-1] for net in nets}) == 1, [net.shape for net in nets]
        self.shape = (*nets[0].shape[:-1], sum(net.channels for net in nets))

    def _add(self, path, kind, shape, params=0, window=None, stride=None, padding=None, ceil_mode=False):
        self.leaves.append(Leaf(path, kind, window, stride, padding, ceil_mode, tuple(shape), params))
        self.shape = tuple(shape)

    def _windowed(self, path, kind, channels, k, s, p, ceil_mode, params):
        h, w = (_out(n, k, s, p, ceil_mode) for n in self.shape[:2])
        self._add(path, kind, (h, w, channels), params, k, s, p, ceil_mode)

    def conv(self, path, channels, k, s=1, p=0, *, groups=1, bias=True):
        params = k * k * (self.channels // groups) * channels + (channels if bias else 0)
        self._windowed(path, "Conv", channels, k, s, p, False, params)

    def pool(self, path, kind, k, s, p=0, *, ceil_mode=False):
        self._windowed(path, kind, self.channels, k, s, p, ceil_mode, 0)

    def zero_pad_shortcut(self, path, channels, s):
        self._windowed(path, "ZeroPadShortcut", channels, 1, s, 0, False, 0)

    def same(self, path, kind):
        """A layer that keeps the shape and has no parameters (Relu, Dropout, LocalResponseNorm, Identity)."""
        self._add(path, kind, self.shape)

    def bn(self, path):
        self._add(path, "BatchNorm", self.shape, 2 * self.channels)

    def adaptive_pool(self, path, size):
        self._add(path, "AdaptiveAvgPool", (size, size, self.channels), window=size)

    def global_pool(self, path):
        self._add(path, "GlobalAvgPool", (self.channels,))

    def flatten(self, path):
        self._add(path, "Flatten", (math.prod(self.shape),))

    def dense(self, path, n):
        self._add(path, "Dense", (n,), (self.channels + 1) * n)


def _sequence(net: _Net, prefix: str, items) -> None:
    """``prefix.0``, ``prefix.1``, ...: an int is a dense layer of that width, a string a shape-keeping kind."""
    for i, item in enumerate(items):
        path = f"{prefix}.{i}"
        net.dense(path, item) if isinstance(item, int) else net.same(path, item)


# ---------------------------------------------------------------------------------------------
# AlexNet
# ---------------------------------------------------------------------------------------------

# Per convolution: (width, kernel, stride, padding per side, groups, what follows it). The paper
# (section 3.5): ReLU after every convolution, LRN (size 5, k 2) after the first two ReLUs, 3x3/2 max pools
# after both LRNs and after conv 5; convs 2, 4 and 5 see only their own GPU's half of the maps (groups 2),
# conv 3 sees both. The paper gives no padding (and a 224x224 input that does not fit 11x11/4 -> 55):
# both variants pad as torchvision does. torchvision (models/alexnet.py): one tower, 64-192-384-256-256, no LRN.
ALEXNET = {
    "paper": (
        (96, 11, 4, 2, 1, "relu lrn pool"),
        (256, 5, 1, 2, 2, "relu lrn pool"),
        (384, 3, 1, 1, 1, "relu"),
        (384, 3, 1, 1, 2, "relu"),
        (256, 3, 1, 1, 2, "relu pool"),
    ),
    "torchvision": (
        (64, 11, 4, 2, 1, "relu pool"),
        (192, 5, 1, 2, 1, "relu pool"),
        (384, 3, 1, 1, 1, "relu"),
        (256, 3, 1, 1, 1, "relu"),
        (256, 3, 1, 1, 1, "relu pool"),
    ),
}
# FC-4096, FC-4096, FC-1000 with dropout before the first two (torchvision's order); a 6x6 adaptive pool first
ALEXNET_HEAD = ("Dropout", 4096, "Relu", "Dropout", 4096, "Relu", 1000)
_FOLLOWERS = {"relu": "Relu", "lrn": "LocalResponseNorm"}


def alexnet_leaves(variant: str) -> list[Leaf]:
    net, names = _Net(IMAGENET), (f"features.{i}" for i in range(100))
    for width, k, s, p, groups, after in ALEXNET[variant]:
        net.conv(next(names), width, k, s, p, groups=groups)
        for op in after.split():
            if op == "pool":
                net.pool(next(names), "MaxPool", 3, 2)
            else:
                net.same(next(names), _FOLLOWERS[op])
    net.adaptive_pool("avgpool", 6)
    net.flatten("flatten")
    _sequence(net, "classifier", ALEXNET_HEAD)
    return net.leaves


# ---------------------------------------------------------------------------------------------
# VGG
# ---------------------------------------------------------------------------------------------

# Simonyan & Zisserman, Table 1: 3x3/1 convolutions (padding 1) per stage, the stages 64, 128, 256, 512, 512
# wide, each ending in a 2x2/2 max pool; then FC-4096, FC-4096, FC-1000 (dropout after the first two).
VGG_TABLE1 = {"A": (1, 1, 2, 2, 2), "B": (2, 2, 2, 2, 2), "D": (2, 2, 3, 3, 3), "E": (2, 2, 4, 4, 4)}
VGG_WIDTHS = (64, 128, 256, 512, 512)
VGG_DEPTH = {"A": 11, "B": 13, "D": 16, "E": 19}
# torchvision's head: a 7x7 adaptive average pool (the identity at 224x224), then the three FC layers
VGG_HEAD = (4096, "Relu", "Dropout", 4096, "Relu", "Dropout", 1000)


def vgg_leaves(config: str, batch_norm: bool) -> list[Leaf]:
    net, names = _Net(IMAGENET), (f"features.{i}" for i in range(100))
    for convs, width in zip(VGG_TABLE1[config], VGG_WIDTHS):
        for _ in range(convs):
            net.conv(next(names), width, 3, 1, 1)
            if batch_norm:  # torchvision's vgg*_bn: BN between each conv (which keeps its bias) and its ReLU
                net.bn(next(names))
            net.same(next(names), "Relu")
        net.pool(next(names), "MaxPool", 2, 2)
    net.adaptive_pool("avgpool", 7)
    net.flatten("flatten")
    _sequence(net, "classifier", VGG_HEAD)
    return net.leaves


# ---------------------------------------------------------------------------------------------
# GoogLeNet
# ---------------------------------------------------------------------------------------------

# Szegedy et al., Table 1, in order: ("conv", kernel, stride, depth), ("max pool", kernel, stride), or
# ("inception", #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj, output depth). Table 1's
# "convolution 3x3/1" row is two layers, its "#3x3 reduce" 1x1 conv (64) and the 3x3 conv (192).
# Where jaxcnn follows torchvision (models/googlenet.py) instead:
# - maxpool4 is 2x2/2, not 3x3/2 (the same 14 -> 7 with ceil_mode); every max pool rounds up (ceil_mode);
# - every conv is torchvision's BasicConv2d: conv (no bias) -> BatchNorm -> ReLU; there is no LRN;
# - the head is a global average pool (the paper's 7x7/1 average pool at 224x224) -> dropout -> FC.
GOOGLENET_TABLE1 = (
    ("conv1", "conv", 7, 2, 64),
    ("maxpool1", "max pool", 3, 2),
    ("conv2", "conv", 1, 1, 64),
    ("conv3", "conv", 3, 1, 192),
    ("maxpool2", "max pool", 3, 2),
    ("inception3a", "inception", 64, 96, 128, 16, 32, 32, 256),
    ("inception3b", "inception", 128, 128, 192, 32, 96, 64, 480),
    ("maxpool3", "max pool", 3, 2),
    ("inception4a", "inception", 192, 96, 208, 16, 48, 64, 512),
    ("inception4b", "inception", 160, 112, 224, 24, 64, 64, 512),
    ("inception4c", "inception", 128, 128, 256, 24, 64, 64, 512),
    ("inception4d", "inception", 112, 144, 288, 32, 64, 64, 528),
    ("inception4e", "inception", 256, 160, 320, 32, 128, 128, 832),
    ("maxpool4", "max pool", 2, 2),
    ("inception5a", "inception", 256, 160, 320, 32, 128, 128, 832),
    ("inception5b", "inception", 384, 192, 384, 48, 128, 128, 1024),
)
# The paper's "5x5" branch is a 5x5 convolution; torchvision's Inception.branch3 uses kernel_size=3,
# padding=1 ("Here, kernel_size=3 instead of kernel_size=5 is a known bug.", kept for its pretrained
# weights), and jaxcnn's googlenet does the same: that is what is expected here.
INCEPTION_5X5_KERNEL = 3
# The auxiliary classifiers on the outputs of 4a and 4d: the paper's 5x5/3 average pool (14 -> 4) is
# torchvision's 4x4 adaptive pool; then a 1x1 conv 128 (BasicConv2d), FC-1024, ReLU, dropout, FC-1000.
GOOGLENET_AUX = {"aux1": "inception4a", "aux2": "inception4d"}


def _basic_conv(net: _Net, path: str, channels: int, k: int, s: int = 1) -> None:
    net.conv(f"{path}.conv", channels, k, s, k // 2, bias=False)
    net.bn(f"{path}.bn")
    net.same(f"{path}.relu", "Relu")


def _inception(net: _Net, path: str, c1, r3, c3, r5, c5, proj) -> None:
    b1, b2, b3, b4 = (net.branch() for _ in range(4))
    _basic_conv(b1, f"{path}.branch1", c1, 1)
    _basic_conv(b2, f"{path}.branch2.0", r3, 1)
    _basic_conv(b2, f"{path}.branch2.1", c3, 3)
    _basic_conv(b3, f"{path}.branch3.0", r5, 1)
    _basic_conv(b3, f"{path}.branch3.1", c5, INCEPTION_5X5_KERNEL)
    b4.pool(f"{path}.branch4.0", "MaxPool", 3, 1, 1, ceil_mode=True)
    _basic_conv(b4, f"{path}.branch4.1", proj, 1)
    net.concat(b1, b2, b3, b4)


def googlenet_leaves(aux_logits: bool) -> list[Leaf]:
    net, shapes = _Net(IMAGENET), {}
    for name, kind, *numbers in GOOGLENET_TABLE1:
        if kind == "conv":
            _basic_conv(net, name, numbers[2], numbers[0], numbers[1])
        elif kind == "max pool":
            net.pool(name, "MaxPool", *numbers, ceil_mode=True)
        else:
            _inception(net, name, *numbers[:-1])
        shapes[name] = net.shape
    net.global_pool("avgpool")
    net.same("dropout", "Dropout")
    net.dense("fc", 1000)
    for aux, after in GOOGLENET_AUX.items() if aux_logits else ():
        head = _Net(shapes[after], net.leaves)
        head.adaptive_pool(f"{aux}.avgpool", 4)
        _basic_conv(head, f"{aux}.conv", 128, 1)
        head.flatten(f"{aux}.flatten")
        head.dense(f"{aux}.fc1", 1024)
        head.same(f"{aux}.relu", "Relu")
        head.same(f"{aux}.dropout", "Dropout")
        head.dense(f"{aux}.fc2", 1000)
    return net.leaves


# ---------------------------------------------------------------------------------------------
# ResNet
# ---------------------------------------------------------------------------------------------

# He et al., Table 1: the blocks of conv2_x .. conv5_x (64, 128, 256, 512 wide, at 56, 28, 14, 7), and a
# block's convolutions as (kernel, width / stage width). conv1 is 7x7/2 64, then a 3x3/2 max pool; conv3_1,
# conv4_1 and conv5_1 downsample with stride 2; average pool, FC-1000.
RESNET_TABLE1 = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
RESNET_BLOCK_CONVS = {"basic": ((3, 1), (3, 1)), "bottleneck": ((1, 1), (3, 1), (1, 4))}
RESNET_WIDTHS = (64, 128, 256, 512)
# Where jaxcnn follows torchvision (models/resnet.py): the stride sits on the block's 3x3 convolution (in a
# bottleneck, ResNet v1.5; the paper's v1 puts it on the first 1x1); a projection shortcut (1x1 conv with
# the stride, no bias, + BN: option B) wherever the shape changes; convs before a BN have no bias; padding
# 3, 1 and 1 on the 7x7 conv, the max pool and the 3x3 convs. torchvision reuses one ``relu`` module;
# jaxcnn names the second ``relu2`` and the ReLU after the sum is the block's ``activation`` (its
# configuration, listed here under the path ``<block>.activation``).
RESNET_STRIDE_CONV = {"basic": 1, "bottleneck": 2}  # the conv with a downsampling block's stride: its first 3x3


def _relu_name(j: int) -> str:
    return "relu" if j == 1 else f"relu{j}"


def _resnet_block(net: _Net, path: str, block: str, width: int, stride: int) -> None:
    in_channels, body = net.channels, net.branch()
    convs = RESNET_BLOCK_CONVS[block]
    for j, (k, multiple) in enumerate(convs, 1):
        s = stride if j == RESNET_STRIDE_CONV[block] else 1
        body.conv(f"{path}.conv{j}", width * multiple, k, s, k // 2, bias=False)
        body.bn(f"{path}.bn{j}")
        if j < len(convs):
            body.same(f"{path}.{_relu_name(j)}", "Relu")
    if stride != 1 or in_channels != body.channels:
        skip = net.branch()
        skip.conv(f"{path}.downsample.0", body.channels, 1, stride, bias=False)
        skip.bn(f"{path}.downsample.1")
    net.shape = body.shape
    net.same(f"{path}.activation", "Relu")


def resnet_leaves(depth: int) -> list[Leaf]:
    block, counts = RESNET_TABLE1[depth]
    net = _Net(IMAGENET)
    net.conv("conv1", 64, 7, 2, 3, bias=False)
    net.bn("bn1")
    net.same("relu", "Relu")
    net.pool("maxpool", "MaxPool", 3, 2, 1)
    for stage, (n, width) in enumerate(zip(counts, RESNET_WIDTHS), 1):
        for i in range(n):
            _resnet_block(net, f"layer{stage}.{i}", block, width, 2 if stage > 1 and i == 0 else 1)
    net.global_pool("avgpool")
    net.dense("fc", 1000)
    return net.leaves


# Section 4.2 (CIFAR-10): a 3x3 conv to 16, then 3 stages of n basic blocks (2n 3x3 layers) on 32, 16, 8
# maps with 16, 32, 64 filters, subsampling by stride-2 convs; global average pool, 10-way FC; depth 6n + 2.
# Shortcuts where the shape changes: option A (subsample, zero-pad channels; the paper's choice) or a
# projection (option B; jaxcnn's default, "conv"). jaxcnn's layout is a serial chain (paths by index).
RESNET20_N = 3
CIFAR_RESNET_WIDTHS = (16, 32, 64)


def _cifar_block(net: _Net, path: str, width: int, stride: int, shortcut: str) -> None:
    in_channels, body = net.channels, net.branch()
    body.conv(f"{path}.0.block.0", width, 3, stride, 1, bias=False)
    body.bn(f"{path}.0.block.1")
    body.same(f"{path}.0.block.2", "Relu")
    body.conv(f"{path}.0.block.3", width, 3, 1, 1, bias=False)
    body.bn(f"{path}.0.block.4")
    skip = net.branch()
    if stride == 1 and in_channels == width:
        skip.same(f"{path}.0.shortcut", "Identity")
    elif shortcut == "A":
        skip.zero_pad_shortcut(f"{path}.0.shortcut", width, stride)
    else:
        skip.conv(f"{path}.0.shortcut.0", width, 1, stride, bias=False)
        skip.bn(f"{path}.0.shortcut.1")
    assert skip.shape == body.shape
    net.shape = body.shape
    net.same(f"{path}.1", "Relu")


def resnet20_leaves(shortcut: str) -> list[Leaf]:
    net = _Net(CIFAR)
    net.conv("0", 16, 3, 1, 1, bias=False)
    net.bn("1")
    net.same("2", "Relu")
    index = 3
    for stage, width in enumerate(CIFAR_RESNET_WIDTHS):
        for i in range(RESNET20_N):
            _cifar_block(net, str(index), width, 2 if stage > 0 and i == 0 else 1, shortcut)
            index += 1
    net.global_pool(str(index))
    net.dense(str(index + 1), 10)
    return net.leaves


# ---------------------------------------------------------------------------------------------
# DenseNet
# ---------------------------------------------------------------------------------------------

# Huang et al., Table 1: the layers of dense blocks 1-4 (growth rate k = 32). Each layer is BN-ReLU-conv1x1
# (4k, the "B") -> BN-ReLU-conv3x3 (k); its output is concatenated to its input. The stem is a 7x7/2 conv
# (2k maps) and a 3x3/2 max pool; a transition is BN-ReLU-conv1x1 halving the channels (compression 0.5,
# the "C") and a 2x2/2 average pool; then a 7x7 global average pool and FC-1000.
DENSENET_TABLE1 = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32)}
DENSENET_K = 32
# Section 3, "Implementation details" (CIFAR): DenseNet-BC with L = 100, k = 12: three dense blocks of
# (L - 4) / 6 = 16 bottleneck layers on 32, 16, 8 maps; a 3x3 conv to 2k maps first; transitions of a 1x1
# conv and a 2x2 average pool; global average pool, 10-way FC.
DENSENET_BC_DEPTH, DENSENET_BC_K = 100, 12
# As torchvision (models/densenet.py) has it: convs without bias and padding 3 (7x7), 1 (3x3, max pool);
# BN -> ReLU (``features.norm5``, ``relu``) before the global pool; module names ``features.denseblock1
# .denselayer1.conv1`` etc.


def _dense_body(net: _Net, blocks, k: int) -> None:
    for b, n in enumerate(blocks, 1):
        for j in range(1, n + 1):
            path, layer = f"features.denseblock{b}.denselayer{j}", net.branch()
            layer.bn(f"{path}.norm1")
            layer.same(f"{path}.relu1", "Relu")
            layer.conv(f"{path}.conv1", 4 * k, 1, bias=False)
            layer.bn(f"{path}.norm2")
            layer.same(f"{path}.relu2", "Relu")
            layer.conv(f"{path}.conv2", k, 3, 1, 1, bias=False)
            net.concat(net, layer)
        if b < len(blocks):
            path = f"features.transition{b}"
            net.bn(f"{path}.norm")
            net.same(f"{path}.relu", "Relu")
            net.conv(f"{path}.conv", net.channels // 2, 1, bias=False)
            net.pool(f"{path}.pool", "AvgPool", 2, 2)
    net.bn("features.norm5")
    net.same("relu", "Relu")
    net.global_pool("avgpool")


def densenet_leaves(depth: int) -> list[Leaf]:
    net = _Net(IMAGENET)
    net.conv("features.conv0", 2 * DENSENET_K, 7, 2, 3, bias=False)
    net.bn("features.norm0")
    net.same("features.relu0", "Relu")
    net.pool("features.pool0", "MaxPool", 3, 2, 1)
    _dense_body(net, DENSENET_TABLE1[depth], DENSENET_K)
    net.dense("classifier", 1000)
    return net.leaves


def densenet_bc_leaves() -> list[Leaf]:
    net = _Net(CIFAR)
    net.conv("features.conv0", 2 * DENSENET_BC_K, 3, 1, 1, bias=False)
    _dense_body(net, ((DENSENET_BC_DEPTH - 4) // 6,) * 3, DENSENET_BC_K)
    net.dense("classifier", 10)
    return net.leaves


# ---------------------------------------------------------------------------------------------
# The model's own leaves
# ---------------------------------------------------------------------------------------------


def _square(value):
    """An int for a per-axis tuple whose entries agree (``(3, 3)`` -> 3)."""
    if isinstance(value, int):
        return value
    value = tuple(value)
    return value[0] if len(set(value)) == 1 else value


def _per_side(padding):
    """Padding as one int when every side of every axis gets the same; ``"VALID"`` is 0."""
    if padding == "VALID":
        return 0
    if isinstance(padding, (int, str)):
        return padding
    sides = {side for axis in padding for side in ((axis, axis) if isinstance(axis, int) else axis)}
    return sides.pop() if len(sides) == 1 else tuple(padding)


def _model_leaf(path: str, info, row) -> Leaf:
    config = info.config if info is not None else {}
    window = stride = padding = None
    if "window" in config:
        assert _square(config["dilation"]) == 1, f"{path}: dilated, which no layer of these networks is"
        window, stride, padding = _square(config["window"]), _square(config["stride"]), _per_side(config["padding"])
    elif "output_size" in config:
        window = _square(config["output_size"])
    kind = info.kind if info is not None else "(no description)"
    return Leaf(path, kind, window, stride, padding, config.get("ceil_mode", False), row.output_shape[1:], row.params)


def model_leaves(model, input_shape) -> list[Leaf]:
    """Every leaf of ``model`` in order (a combinator's children in order): kind and window geometry
    from :func:`describe`, output shape and parameter count from :func:`inspect.summary`."""
    rows = {row.path: row for row in inspect.summary(model, (1, *input_shape)).rows}
    leaves = []

    def walk(layer, path):
        info = describe(layer)
        if info is None or not info.children:
            leaves.append(_model_leaf(path, info, rows[path]))
            return
        for name, child in info.children:
            walk(child, f"{path}.{name}" if path and name else path or name)
        if info.kind == "residual_block":  # the ReLU after the sum is configuration, not a child
            after_sum = rows[path]._replace(params=0)
            leaves.append(_model_leaf(f"{path}.activation", describe(info.config["activation"]), after_sum))

    walk(model, "")
    return leaves


def _differences(actual: Leaf, expected: Leaf) -> str:
    return "; ".join(
        f"{field} is {a!r}, the paper's {e!r}" for field, a, e in zip(Leaf._fields, actual, expected) if a != e
    )


def assert_same_leaves(actual: list[Leaf], expected: list[Leaf]) -> None:
    """Leaf for leaf; the message names the first leaf that differs (or the first one missing or extra)."""
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a == e, f"leaf {i} {e.path}: {_differences(a, e)}\n  model: {a}\n  paper: {e}"
    n, m = len(actual), len(expected)
    first = f"extra from leaf {m}: {actual[m]}" if n > m else f"missing from leaf {n}: {expected[n]}" if n < m else ""
    assert n == m, f"{n} leaves in the model, {m} in the paper's description; {first}"


# ---------------------------------------------------------------------------------------------
# Tramer & Boneh's DP CNN
# ---------------------------------------------------------------------------------------------

# Tramer & Boneh (2021), the end-to-end CNN for (Fashion-)MNIST: (kind, width, kernel, stride,
# padding); tanh after every conv and the hidden dense layer; 26,010 parameters.
DP_CNN_LAYERS = (
    ("conv", 16, 8, 2, 2),
    ("pool", 2, 1),
    ("conv", 32, 4, 2, 0),
    ("pool", 2, 1),
    ("dense", 32),
    ("dense", 10),
)


def tanh_cnn_leaves() -> list[Leaf]:
    net, i = _Net((28, 28, 1)), 0
    for kind, *numbers in DP_CNN_LAYERS:
        if kind == "conv":
            net.conv(str(i), *numbers)
            net.same(str(i + 1), "Tanh")
            i += 2
        elif kind == "pool":
            net.pool(str(i), "MaxPool", *numbers)
            i += 1
        else:
            if len(net.shape) > 1:
                net.flatten(str(i))
                i += 1
            net.dense(str(i), numbers[0])
            if numbers[0] != 10:
                net.same(str(i + 1), "Tanh")
                i += 1
            i += 1
    return net.leaves


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------

# name -> (the model, its input shape, its expected leaves)
ARCHITECTURES = {
    "alexnet": (lambda: models.alexnet(), IMAGENET, lambda: alexnet_leaves("torchvision")),
    "alexnet_lrn": (lambda: models.alexnet(lrn=True), IMAGENET, lambda: alexnet_leaves("paper")),
    **{
        f"vgg{VGG_DEPTH[c]}{'_bn' if bn else ''}": (
            lambda c=c, bn=bn: getattr(models, f"vgg{VGG_DEPTH[c]}")(batch_norm=bn),
            IMAGENET,
            lambda c=c, bn=bn: vgg_leaves(c, bn),
        )
        for c in VGG_TABLE1
        for bn in (False, True)
    },
    "googlenet": (lambda: models.googlenet(), IMAGENET, lambda: googlenet_leaves(False)),
    "googlenet_aux": (lambda: models.googlenet(aux_logits=True), IMAGENET, lambda: googlenet_leaves(True)),
    **{
        f"resnet{d}": (lambda d=d: getattr(models, f"resnet{d}")(), IMAGENET, lambda d=d: resnet_leaves(d))
        for d in RESNET_TABLE1
    },
    "resnet20_A": (lambda: models.resnet20(shortcut="A"), CIFAR, lambda: resnet20_leaves("A")),
    "resnet20_conv": (lambda: models.resnet20(), CIFAR, lambda: resnet20_leaves("conv")),
    **{
        f"densenet{d}": (lambda d=d: getattr(models, f"densenet{d}")(), IMAGENET, lambda d=d: densenet_leaves(d))
        for d in DENSENET_TABLE1
    },
    "densenet_bc": (lambda: models.densenet_bc(), CIFAR, densenet_bc_leaves),
    "tanh_cnn": (lambda: models.tanh_cnn(), (28, 28, 1), tanh_cnn_leaves),
}

# Trainable parameter counts published with torchvision's weights (its model documentation): a check
# of the descriptions' own arithmetic, with no model involved.
PUBLISHED_PARAMS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
    "googlenet": 6_624_904,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "densenet121": 7_978_856,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
    "tanh_cnn": 26_010,  # Tramer & Boneh (2021)
}


def test_the_tables_agree_with_their_papers_depths():
    """The written-out tables against the numbers the papers derive from them: the depth in each name
    (weighted layers) and GoogLeNet's output-depth column."""
    for config, convs in VGG_TABLE1.items():
        assert sum(convs) + 3 == VGG_DEPTH[config], config
    for depth, (block, counts) in RESNET_TABLE1.items():
        assert 2 + sum(counts) * len(RESNET_BLOCK_CONVS[block]) == depth, depth
    assert 6 * RESNET20_N + 2 == 20
    for depth, blocks in DENSENET_TABLE1.items():  # conv0, 2 per dense layer, the transitions, the FC
        assert 1 + 2 * sum(blocks) + len(blocks) - 1 + 1 == depth, depth
    for name, kind, *numbers in GOOGLENET_TABLE1:
        if kind == "inception":
            c1, _, c3, _, c5, proj, depth = numbers
            assert c1 + c3 + c5 + proj == depth, name


@pytest.mark.parametrize("name", list(PUBLISHED_PARAMS))
def test_the_descriptions_have_the_published_parameter_counts(name):
    _, _, expected = ARCHITECTURES[name]
    assert sum(leaf.params for leaf in expected()) == PUBLISHED_PARAMS[name]


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_leaf_layer_is_the_papers(name):
    model, input_shape, expected = ARCHITECTURES[name]
    assert_same_leaves(model_leaves(model(), input_shape), expected())
