r"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012): the network that won ILSVRC-2012 and started the
deep-learning era of the lecture notes -- ReLU units, dropout, local response normalisation,
overlapping 3x3/2 max pooling and an 11x11/4 first layer.

Two variants, both with an adaptive 6x6 average pool before the classifier (torchvision's choice) so
any input of at least 63x63 works; at 224x224 the pool is the identity (the feature map is 6x6):

- ``alexnet()``: torchvision's single-tower model (``torchvision.models.alexnet``; its weights load with
  :func:`jaxcnn.models.from_torchvision`), 64-192-384-256-256 channels, no LRN: **61,100,840**
  parameters for 1000 classes.
- ``alexnet(lrn=True)``: the paper's network, 96-256-384-384-256 channels, LRN (size 5, alpha 1e-4,
  beta 0.75, k 2) after the ReLUs of the first two convolutions, each followed by the max pool, and the
  paper's two-GPU split kept as ``groups=2`` in conv 2, 4 and 5 (their kernels see only the half of the
  previous layer's maps on their own GPU): **60,965,224** parameters for 1000 classes (the paper says
  "60 million"). The paper reports 37.5% top-1 and 17.0% top-5 test error on ILSVRC-2010 (one model).

Parameter tree: ``{"features": {"0": conv1, ...}, "avgpool": {}, "flatten": {}, "classifier": {...}}``,
named like torchvision's modules (``features.0.weight`` is ``params["features"]["0"]["kernel"]``).
"""

from typing import Any

from .. import ops as _ops
from ..combinators import named
from ..layers import Layer, bind

__all__ = ["alexnet"]


def _features(L, lrn: bool) -> Layer:
    if not lrn:  # torchvision: features.0 ... features.12
        widths, groups = (64, 192, 384, 256, 256), (1, 1, 1, 1, 1)
    else:
        widths, groups = (96, 256, 384, 384, 256), (1, 2, 1, 2, 2)
    convs = [
        L.Conv(widths[0], 11, stride=4, padding=2, groups=groups[0]),
        L.Conv(widths[1], 5, padding=2, groups=groups[1]),
        *(L.Conv(w, 3, padding=1, groups=g) for w, g in zip(widths[2:], groups[2:])),
    ]
    pool = lambda: L.MaxPool(3, stride=2)
    norm = (lambda: [L.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)]) if lrn else (lambda: [])
    layers = [convs[0], L.Relu, *norm(), pool(), convs[1], L.Relu, *norm(), pool()]
    layers += [convs[2], L.Relu, convs[3], L.Relu, convs[4], L.Relu, pool()]
    return named(*((str(i), layer) for i, layer in enumerate(layers)))


def alexnet(num_classes: int = 1000, *, lrn: bool = False, dropout: float = 0.5, ops: Any = _ops) -> Layer:
    """AlexNet returning logits (see the module docstring): torchvision's variant, or with ``lrn=True``
    the paper's (LRN, 96-channel first layer, two-tower groups)."""
    L = bind(ops)
    classifier = named(
        ("0", L.Dropout(dropout)),
        ("1", L.Dense(4096)),
        ("2", L.Relu),
        ("3", L.Dropout(dropout)),
        ("4", L.Dense(4096)),
        ("5", L.Relu),
        ("6", L.Dense(num_classes)),
    )
    return named(
        ("features", _features(L, lrn)),
        ("avgpool", L.AdaptiveAvgPool((6, 6))),
        ("flatten", L.Flatten),
        ("classifier", classifier),
    )
