"""LeNet-5 (LeCun et al., 1998) for 28x28 inputs, with ReLU units and max pooling.

::

    conv 6@5x5 SAME -> relu -> max-pool 2 -> conv 16@5x5 VALID -> relu -> max-pool 2
      -> flatten -> dense 120 -> relu -> dense 84 -> relu -> dense num_classes   (logits)

On ``(N, 28, 28, 1)``: 28 -> 28 (SAME) -> 14 -> 10 -> 5, so 5 * 5 * 16 = 400 features reach the dense
layers. Parameters (10 classes)::

    conv1  5*5*1*6 + 6    =    156
    conv2  5*5*6*16 + 16  =  2,416
    fc1    400*120 + 120  = 48,120
    fc2    120*84 + 84    = 10,164
    fc3    84*10 + 10     =    850
                   total    61,706

The original used scaled tanh units and subsampling (average) layers on 32x32 inputs; SAME padding on
the first convolution gives 28x28 inputs the same geometry, and ReLU with max pooling is the modern
choice (both are available as layers: ``Tanh``, ``AvgPool``).
"""

from typing import Any

from .. import ops as _ops
from ..combinators import serial
from ..layers import Layer, bind

__all__ = ["lenet5"]


def lenet5(num_classes: int = 10, *, ops: Any = _ops) -> Layer:
    """LeNet-5 returning logits; 61,706 parameters on ``(N, 28, 28, 1)`` with 10 classes."""
    L = bind(ops)
    return serial(
        L.Conv(6, (5, 5), padding="SAME"),
        L.Relu,
        L.MaxPool((2, 2)),
        L.Conv(16, (5, 5)),
        L.Relu,
        L.MaxPool((2, 2)),
        L.Flatten,
        L.Dense(120),
        L.Relu,
        L.Dense(84),
        L.Relu,
        L.Dense(num_classes),
    )
