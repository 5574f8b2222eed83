"""Small CNNs: the lecture notes' sigmoid network, a Fashion-MNIST CNN, a 1-D CNN for MNIST-1D signals
and a 3-D CNN for volumes."""

from collections.abc import Sequence
from typing import Any

from .. import ops as _ops
from ..combinators import serial
from ..errors import ConfigError
from ..layers import Layer, bind

__all__ = ["seed_cnn", "fashion_cnn", "tanh_cnn", "mnist1d_cnn", "cnn3d"]


def seed_cnn(num_classes: int = 10, hidden: int = 64, *, ops: Any = _ops) -> Layer:
    """The notes' two-conv / two-pool / two-dense network with sigmoid units and a softmax output::

        conv 6@5x5 -> sigmoid -> avg-pool 2 -> conv 12@5x5 -> sigmoid -> avg-pool 2
          -> flatten -> dense hidden -> sigmoid -> dense num_classes -> softmax

    It ends in ``Softmax``: ``apply`` returns **probabilities, not logits** (train it with
    ``-mean(log p[label])``, or drop the last layer and use ``losses.softmax_cross_entropy``).
    On ``(N, 28, 28, 1)``: 28 -> 24 -> 12 -> 8 -> 4, 4*4*12 = 192 features; 14,970 parameters
    (156 + 1,812 + 12,352 + 650) with the defaults.
    """
    L = bind(ops)
    return serial(
        L.Conv(6, (5, 5)),
        L.Sigmoid,
        L.AvgPool((2, 2)),
        L.Conv(12, (5, 5)),
        L.Sigmoid,
        L.AvgPool((2, 2)),
        L.Flatten,
        L.Dense(hidden),
        L.Sigmoid,
        L.Dense(num_classes),
        L.Softmax,
    )


def fashion_cnn(
    num_classes: int = 10,
    dropout: float = 0.5,
    *,
    kernel_init: Any = "he_normal",
    bias_init: Any = "zeros",
    ops: Any = _ops,
) -> Layer:
    """The classic two-conv Fashion-MNIST / MNIST CNN, returning logits::

        conv 32@5x5 SAME -> relu -> max-pool 2 -> conv 64@5x5 SAME -> relu -> max-pool 2
          -> flatten -> dense 1024 -> relu -> dropout(dropout) -> dense num_classes

    ``dropout`` is the drop probability (``apply(..., train=True)`` needs ``key``). On
    ``(N, 28, 28, 1)``: 7*7*64 = 3,136 features; 3,274,634 parameters
    (832 + 51,264 + 3,212,288 + 10,250). ``kernel_init``/``bias_init``: He-normal and zeros, or e.g.
    ``"pytorch_default"`` for both, as the same network written in PyTorch starts.
    """
    L = bind(ops)
    init = dict(kernel_init=kernel_init, bias_init=bias_init)
    return serial(
        L.Conv(32, (5, 5), padding="SAME", **init),
        L.Relu,
        L.MaxPool((2, 2)),
        L.Conv(64, (5, 5), padding="SAME", **init),
        L.Relu,
        L.MaxPool((2, 2)),
        L.Flatten,
        L.Dense(1024, **init),
        L.Relu,
        L.Dropout(dropout),
        L.Dense(num_classes, **init),
    )


def tanh_cnn(num_classes: int = 10, *, weight_standardization: bool = False, ops: Any = _ops) -> Layer:
    """Tramer & Boneh's end-to-end CNN for differentially private (Fashion-)MNIST (2021, "Differentially
    Private Learning Needs Better Features")::

        conv 16@8x8 stride 2 pad 2 -> tanh -> max-pool 2 stride 1 -> conv 32@4x4 stride 2 -> tanh
          -> max-pool 2 stride 1 -> flatten -> dense 32 -> tanh -> dense num_classes

    No normalisation layer (batch norm would couple the examples). On ``(N, 28, 28, 1)``: 28 -> 13 -> 12
    -> 5 -> 4, 4*4*32 = 512 features; 26,010 parameters (1,040 + 8,224 + 16,416 + 330).
    ``weight_standardization=True``: both convolutions standardise their kernels (``Conv(standardize=True)``;
    De et al., 2022 use it in private training), same parameters.
    """
    L = bind(ops)
    return serial(
        L.Conv(16, (8, 8), stride=2, padding=2, standardize=weight_standardization),
        L.Tanh,
        L.MaxPool((2, 2), stride=1),
        L.Conv(32, (4, 4), stride=2, standardize=weight_standardization),
        L.Tanh,
        L.MaxPool((2, 2), stride=1),
        L.Flatten,
        L.Dense(32),
        L.Tanh,
        L.Dense(num_classes),
    )


def mnist1d_cnn(
    num_classes: int = 10,
    channels: int = 25,
    *,
    kernel_init: Any = "pytorch_default",
    bias_init: Any = "pytorch_default",
    ops: Any = _ops,
) -> Layer:
    """The MNIST-1D paper's CNN (Greydanus, 2020) for ``(N, 40, 1)`` signals, returning logits::

        conv 25@5 stride 2 pad 1 -> relu -> conv 25@3 stride 2 pad 1 -> relu
          -> conv 25@3 stride 2 pad 1 -> relu -> flatten -> dense num_classes

    Lengths 40 -> 19 -> 10 -> 5, so 5 * 25 = 125 features; 5,210 parameters
    (150 + 1,900 + 1,900 + 1,260). Initialised as the paper's PyTorch model is (PyTorch's default
    uniform init for kernels and biases) unless ``kernel_init``/``bias_init`` say otherwise.
    """
    L = bind(ops)
    init = dict(kernel_init=kernel_init, bias_init=bias_init)
    return serial(
        L.Conv(channels, (5,), stride=2, padding=1, **init),
        L.Relu,
        L.Conv(channels, (3,), stride=2, padding=1, **init),
        L.Relu,
        L.Conv(channels, (3,), stride=2, padding=1, **init),
        L.Relu,
        L.Flatten,
        L.Dense(num_classes, **init),
    )


def cnn3d(num_classes: int = 10, features: Sequence[int] = (8, 16), *, ops: Any = _ops) -> Layer:
    """A small 3-D CNN for volumes ``(N, D, H, W, C)``, returning logits::

        conv f1@3x3x3 SAME -> relu -> max-pool 2x2x2 -> conv f2@3x3x3 SAME -> relu
          -> global average pool -> dense num_classes

    Any volume of at least 2 voxels per axis; 3,866 parameters for one input channel and the defaults
    (224 + 3,472 + 170).
    """
    if not isinstance(features, Sequence) or len(features) != 2:
        raise ConfigError(f"features must be a pair of channel counts (f1, f2), got {features!r}")
    L = bind(ops)
    f1, f2 = features
    return serial(
        L.Conv(f1, (3, 3, 3), padding="SAME"),
        L.Relu,
        L.MaxPool((2, 2, 2)),
        L.Conv(f2, (3, 3, 3), padding="SAME"),
        L.Relu,
        L.GlobalAvgPool,
        L.Dense(num_classes),
    )
