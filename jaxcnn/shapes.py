r"""Output sizes of convolutions and pools, from plain ints: the arithmetic the ops themselves use
(:mod:`jaxcnn.ops._padding`), with the lecture notes' formula ``floor((N - M) / S) + 1`` at its core.

Per spatial axis, for an input of length ``n``, a window of ``k`` taps with dilation ``d`` (spanning
``d (k - 1) + 1``), stride ``s`` and padding ``lo`` before and ``hi`` after::

    conv / pool:       floor((n + lo + hi - d (k - 1) - 1) / s) + 1
    transposed conv:   (n - 1) s - lo - hi + d (k - 1) + 1 + output_padding

``padding`` is ``"VALID"`` (0), ``"SAME"`` (output ``ceil(n / s)``; :func:`same_padding` gives the split,
the odd row at the end), an int (both sides) or a ``(lo, hi)`` pair.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError
from .ops._padding import ceil_mode_padding as _ceil_mode_padding
from .ops._padding import conv_output_size as _conv_output_size
from .ops._padding import dilated_size, normalize_padding
from .ops._padding import same_padding as _same_padding
from .ops._padding import transpose_output_size as _transpose_output_size
from .ops._validate import as_int, as_positive_int

__all__ = ["conv_output_size", "pool_output_size", "conv_transpose_output_size", "same_padding"]


def _pads(padding: Any, n: int, k: int, s: int, d: int) -> tuple[int, int]:
    if not isinstance(padding, str) and isinstance(padding, (tuple, list)):
        padding = (tuple(padding),)  # one (lo, hi) pair for the one axis
    return normalize_padding(padding, (n,), (k,), (s,), (d,))[0]


def same_padding(n: int, k: int, *, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """``(lo, hi)`` of ``"SAME"`` padding (XLA's and TensorFlow's): the output has ``ceil(n / stride)``
    rows and the total ``max((out - 1) stride + d (k - 1) + 1 - n, 0)`` is split with the odd row at the
    end. ``same_padding(5, 3) == (1, 1)``, ``same_padding(6, 3, stride=2) == (0, 1)``."""
    n, k = as_positive_int(n, "n"), as_positive_int(k, "k")
    return _same_padding(n, k, as_positive_int(stride, "stride"), as_positive_int(dilation, "dilation"))


def conv_output_size(n: int, k: int, *, stride: int = 1, padding: Any = 0, dilation: int = 1) -> int:
    """Length of a convolution's output along one axis: ``floor((n + lo + hi - d(k-1) - 1) / s) + 1``.

    The notes' examples: a 6x6 image and a 3x3 filter give 4 (stride 1) and 2 (stride 2); 32 with a
    5x5 kernel gives 28; ``conv_output_size(224, 11, stride=4, padding=2) == 55`` (AlexNet's first layer).
    """
    n, k = as_positive_int(n, "n"), as_positive_int(k, "k")
    s, d = as_positive_int(stride, "stride"), as_positive_int(dilation, "dilation")
    lo, hi = _pads(padding, n, k, s, d)
    if dilated_size(k, d) > n + lo + hi:
        raise ConfigError(f"a window spanning {dilated_size(k, d)} does not fit an input of {n} padded by {(lo, hi)}")
    return _conv_output_size(n, k, s, d, lo, hi)


def pool_output_size(
    n: int, window: int, *, stride: int | None = None, padding: Any = 0, ceil_mode: bool = False
) -> int:
    """Length of a pool's output along one axis (``stride`` defaults to ``window``); ``ceil_mode=True``
    rounds up as PyTorch does (GoogLeNet's pools): ``pool_output_size(112, 3, stride=2, ceil_mode=True)
    == 56`` where flooring gives 55."""
    k = as_positive_int(window, "window")
    s = k if stride is None else as_positive_int(stride, "stride")
    n = as_positive_int(n, "n")
    lo, hi = _pads(padding, n, k, s, 1)
    if ceil_mode:
        hi += _ceil_mode_padding(n, k, s, lo, hi)
    return conv_output_size(n, k, stride=s, padding=(lo, hi))


def conv_transpose_output_size(
    n: int, k: int, *, stride: int = 1, padding: Any = 0, dilation: int = 1, output_padding: int = 0
) -> int:
    """Length of a transposed convolution's output (PyTorch's): ``(n-1)s - lo - hi + d(k-1) + 1 + op``;
    ``conv_transpose_output_size(7, 3, stride=2, padding=1, output_padding=1) == 14``."""
    n, k = as_positive_int(n, "n"), as_positive_int(k, "k")
    s, d = as_positive_int(stride, "stride"), as_positive_int(dilation, "dilation")
    lo, hi = _pads(padding, n, k, s, d) if not isinstance(padding, str) else (0, 0)
    return _transpose_output_size(n, k, s, d, lo, hi, as_int(output_padding, "output_padding", minimum=0))
