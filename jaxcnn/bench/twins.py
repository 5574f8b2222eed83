"""The models the benchmark suite times, and which of them have Flax and PyTorch twins.

Every benchmark module reads its models from here (``models.py``, ``scaling.py``, ``accelerator.py``,
``flax_models.py``, ``torch_models.py``), so they depend on this table one way and not on each other.
"""

from __future__ import annotations

from collections.abc import Callable

from jaxcnn import models
from jaxcnn.layers import Layer

__all__ = ["BENCHMARKED", "TWINS"]

# name -> (one example's input shape, the zoo constructor)
BENCHMARKED: dict[str, tuple[tuple[int, ...], Callable[..., Layer]]] = {
    "lenet5": ((28, 28, 1), models.lenet5),
    "fashion_cnn": ((28, 28, 1), models.fashion_cnn),
    "resnet20": ((32, 32, 3), models.resnet20),
    "mobilenet_small": ((28, 28, 1), models.mobilenet_small),
    "mnist1d_cnn": ((40, 1), models.mnist1d_cnn),
}
# The models with a Flax twin (flax_models.FLAX_TWINS) and a PyTorch twin (torch_models.TORCH_TWINS).
TWINS = ("lenet5", "fashion_cnn", "resnet20", "mobilenet_small")
