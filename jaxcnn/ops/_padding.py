"""Window arithmetic on plain ints: normalised configuration, output sizes, backward-pass padding.

Everything here works on Python ints and tuples, so it is tested without JAX and runs at trace time.
Notation per spatial dimension (``docs/derivations.md#notation``, where the padding below is derived):
input length ``n``, kernel length ``k``, dilation ``d``, dilated kernel ``kd = d(k-1)+1``, stride ``s``,
forward padding ``(lo, hi)``, output length ``o = floor((n + lo + hi - kd) / s) + 1`` and unreached rows
``r = (n + lo + hi - kd) mod s``.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError, ConfigTypeError
from ._validate import is_int

Pads = tuple[tuple[int, int], ...]

__all__ = [
    "normalize_padding",
    "same_padding",
    "dilated_size",
    "conv_output_size",
    "unreached_rows",
    "input_grad_padding",
    "weight_grad_padding",
    "transpose_output_size",
    "ceil_mode_padding",
    "with_ceil_mode",
]


def dilated_size(k: int, d: int) -> int:
    """Length of a kernel of length ``k`` with ``d - 1`` holes between taps: ``d(k-1) + 1``."""
    return d * (k - 1) + 1 if k > 0 else 0


def same_padding(n: int, k: int, s: int, d: int) -> tuple[int, int]:
    """XLA's / TensorFlow's SAME: output length ``ceil(n / s)``, the odd extra row padded at the end."""
    out = -(-n // s)
    total = max((out - 1) * s + dilated_size(k, d) - n, 0)
    return total // 2, total - total // 2


def normalize_padding(
    padding: Any,
    spatial: Sequence[int],
    window: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
    *,
    allow_strings: bool = True,
) -> Pads:
    """``"VALID"``, ``"SAME"``, an int, or per-dimension ints / ``(lo, hi)`` pairs as ``(lo, hi)`` pairs.

    Explicit padding must be non-negative; negative padding (cropping) is refused rather than guessed at.
    """
    ndim = len(spatial)
    if isinstance(padding, str):
        mode = padding.upper()
        if not allow_strings or mode not in ("VALID", "SAME"):
            choices = "'VALID', 'SAME', " if allow_strings else ""
            raise ConfigError(
                f"padding must be one of [{choices}an int, a sequence of {ndim} ints or (lo, hi) pairs], "
                f"got {padding!r}"
            )
        if mode == "VALID":
            return ((0, 0),) * ndim
        return tuple(same_padding(n, k, s, d) for n, k, s, d in zip(spatial, window, strides, dilation))
    msg = (
        f"padding must be a non-negative int or a sequence of {ndim} non-negative ints or (lo, hi) pairs, "
        f"got {padding!r}"
    )
    if is_int(padding):
        pads = ((operator.index(padding),) * 2,) * ndim
    elif isinstance(padding, Sequence) and len(padding) == ndim:
        pads_list = []
        for p in padding:
            if is_int(p):
                pads_list.append((operator.index(p),) * 2)
            elif isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2 and all(map(is_int, p)):
                pads_list.append((operator.index(p[0]), operator.index(p[1])))
            else:
                raise ConfigTypeError(msg)
        pads = tuple(pads_list)
    else:
        raise (ConfigError if isinstance(padding, Sequence) and not isinstance(padding, str) else ConfigTypeError)(msg)
    if any(v < 0 for pair in pads for v in pair):
        raise ConfigError(msg)
    return pads


def conv_output_size(n: int, k: int, s: int, d: int, lo: int, hi: int) -> int:
    """``o = floor((n + lo + hi - kd) / s) + 1``; callers ensure the padded input fits the kernel."""
    return (n + lo + hi - dilated_size(k, d)) // s + 1


def unreached_rows(n: int, k: int, s: int, d: int, lo: int, hi: int) -> int:
    """``r = (n + lo + hi - kd) mod s``: trailing padded rows no strided window reaches."""
    return (n + lo + hi - dilated_size(k, d)) % s


def input_grad_padding(n: int, k: int, s: int, d: int, lo: int, hi: int) -> tuple[int, int]:
    """Padding of the stride-upsampled cotangent so a stride-1 correlation with the flipped kernel
    gives exactly ``n`` rows.

    The upsampled cotangent has ``s(o-1)+1 = n + lo + hi - kd - r + 1`` rows. A full correlation with the
    dilated kernel pads ``kd - 1`` on both sides; the forward padding ``lo`` is then cut from the front
    and ``hi`` from the back, and the ``r`` unreached rows are given back (as zeros) at the end:

        before = kd - 1 - lo,   after = kd - 1 - hi + r

    Check: (n + lo + hi - kd - r + 1) + before + after - kd + 1 = n. Negative values crop.
    """
    kd = dilated_size(k, d)
    return kd - 1 - lo, kd - 1 - hi + unreached_rows(n, k, s, d, lo, hi)


def weight_grad_padding(n: int, k: int, s: int, d: int, lo: int, hi: int) -> tuple[int, int]:
    """Padding of the input when it is correlated with the cotangent (dilated by ``s``, window stride
    ``d``) to give the weight gradient: ``(lo, hi - r)``.

    The padded input then has ``n + lo + hi - r = s(o-1) + kd`` rows, so the correlation with the
    ``s(o-1)+1``-row dilated cotangent at stride ``d`` has ``(kd - 1) / d + 1 = k`` rows.
    """
    return lo, hi - unreached_rows(n, k, s, d, lo, hi)


def transpose_output_size(n: int, k: int, s: int, d: int, lo: int, hi: int, output_padding: int) -> int:
    """PyTorch's transposed-convolution length ``(n-1)s - lo - hi + d(k-1) + 1 + output_padding``."""
    return (n - 1) * s - lo - hi + dilated_size(k, d) + output_padding


def ceil_mode_padding(n: int, k: int, s: int, lo: int, hi: int) -> int:
    """Extra end padding that turns the floor of the pooled length into PyTorch's ``ceil_mode=True``.

    PyTorch's length is ``ceil((n + lo + hi - k) / s) + 1``, less one when the last window would start
    in the end padding (at or beyond ``n + lo``); padding the end by the returned amount (``< s``) makes
    the floor formula :func:`conv_output_size` give that length, with the extra rows counting as
    padding (``-inf`` for max pooling).
    """
    out = -(-(n + lo + hi - k) // s) + 1
    if (out - 1) * s >= n + lo:
        out -= 1
    return max(0, (out - 1) * s + k - (n + lo + hi))


def with_ceil_mode(spatial: Sequence[int], window: Sequence[int], strides: Sequence[int], pads: Pads) -> Pads:
    """``pads`` with each axis's end padding grown by :func:`ceil_mode_padding`."""
    return tuple(
        (lo, hi + ceil_mode_padding(n, k, s, lo, hi)) for n, k, s, (lo, hi) in zip(spatial, window, strides, pads)
    )
