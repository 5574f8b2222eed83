"""Argument checks shared by the ops, their reference twins, the layers, the data pipeline and the
training set-up; each error names the argument and its value.

The array checks read only ``.shape``, ``.ndim`` and ``.dtype``, so they run at trace time on tracers
and on ``jax.ShapeDtypeStruct`` alike. The integer checks accept Python and NumPy integers and refuse
``bool`` (``stride=True`` is surely a mistake).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp

from ..errors import ConfigError, ConfigTypeError

__all__ = [
    "is_int",
    "as_int",
    "as_positive_int",
    "normalize_tuple",
    "check_floating",
    "spatial_rank",
    "check_axis",
]


def is_int(v: Any) -> bool:
    """An integer (Python or NumPy) that is not a bool."""
    # bool is an int subclass, but stride=True is surely a mistake.
    if isinstance(v, bool):
        return False
    try:
        operator.index(v)
    except TypeError:
        return False
    return True


def as_int(value: Any, arg: str, *, minimum: int | None = None, message: str | None = None) -> int:
    """``value`` as an int, at least ``minimum``: ``ConfigTypeError`` "``arg`` must be an integer, got ..."
    or ``ConfigError`` "``arg`` must be >= ``minimum``, got ..."; ``message`` replaces both texts (for an
    entry of a larger argument, whose message names the whole)."""
    if not is_int(value):
        raise ConfigTypeError(message or f"{arg} must be an integer, got {value!r}")
    index = operator.index(value)
    if minimum is not None and index < minimum:
        raise ConfigError(message or f"{arg} must be >= {minimum}, got {index}")
    return index


def as_positive_int(value: Any, arg: str) -> int:
    """``value`` as an int ``>= 1``; both errors say "``arg`` must be a positive int, got ..."."""
    return as_int(value, arg, minimum=1, message=f"{arg} must be a positive int, got {value!r}")


def normalize_tuple(value: Any, ndim: int | None, name: str, *, minimum: int = 1) -> tuple[int, ...]:
    """An int or a sequence of ints, each ``>= minimum``, as a tuple: of ``ndim`` entries (an int is
    repeated), or, with ``ndim=None``, of the sequence's own 1-3 entries (an int gives one entry).

    The one parser of int-or-tuple arguments (strides, dilations, windows, output padding): an error is a
    ``ConfigTypeError`` for a non-integer and a ``ConfigError`` for a wrong length or a too-small entry,
    naming the argument and its value."""
    what = {0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")
    msg = (
        f"{name} must be {what} or tuple of {ndim if ndim is not None else ''}{' ' if ndim else ''}ints, got {value!r}"
    )
    if is_int(value):
        return (as_int(value, name, minimum=minimum, message=msg),) * (ndim or 1)
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ConfigTypeError(msg)
    values = tuple(as_int(v, name, message=msg) for v in value)  # every entry an int first (a TypeError)
    if ndim is None and not 1 <= len(values) <= 3:
        raise ConfigError(f"{name} must have 1, 2 or 3 entries (one per spatial axis), got {value!r}")
    if (ndim is not None and len(values) != ndim) or any(v < minimum for v in values):
        raise ConfigError(msg)
    return values


def check_floating(x: Any, arg: str, op: str) -> None:
    if not hasattr(x, "dtype") or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ConfigTypeError(f"{op}: {arg} must be a floating-point array, got dtype {getattr(x, 'dtype', type(x))}")


def spatial_rank(x: Any, arg: str, op: str, *, extra_dims: int) -> int:
    """Number of spatial axes of a ``(N, *spatial, C)`` array; 1, 2 or 3."""
    nd = x.ndim - extra_dims
    if nd not in (1, 2, 3):
        raise ConfigError(
            f"{op}: {arg} must have rank 3, 4 or 5 (N, *spatial, C) with 1-3 spatial axes, got shape {tuple(x.shape)}"
        )
    return nd


def check_axis(axis: Any, ndim: int, op: str) -> int:
    index = as_int(axis, "axis", message=f"{op}: axis must be an int, got {axis!r}")
    if not -ndim <= index < ndim:
        raise ConfigError(f"{op}: axis {index} is out of range for an array of rank {ndim}")
    return index % ndim
