"""Argument checks shared by the ops, their reference twins, the layers, the data pipeline and the
training set-up; each error names the argument and its value.

The array checks read only ``.shape``, ``.ndim`` and ``.dtype``, so they run at trace time on tracers
and on ``jax.ShapeDtypeStruct`` alike. The integer checks accept Python and NumPy integers and refuse
``bool`` (``stride=True`` is surely a mistake).
"""

from __future__ import annotations

import operator
from typing import Any

import jax.numpy as jnp

from ._padding import is_int

__all__ = ["check_floating", "as_int", "as_positive_int", "check_positive_int", "spatial_rank", "check_axis"]


def _index(value: Any) -> int | None:
    """``value`` as an int if it is an integer (Python or NumPy) and not a bool, else None."""
    return operator.index(value) if is_int(value) else None


def as_int(value: Any, arg: str, *, minimum: int | None = None) -> int:
    """``value`` as an int, at least ``minimum``: ``TypeError`` "``arg`` must be an integer, got ..." or
    ``ValueError`` "``arg`` must be >= ``minimum``, got ..."."""
    index = _index(value)
    if index is None:
        raise TypeError(f"{arg} must be an integer, got {value!r}")
    if minimum is not None and index < minimum:
        raise ValueError(f"{arg} must be >= {minimum}, got {index}")
    return index


def as_positive_int(value: Any, arg: str) -> int:
    """``value`` as an int ``>= 1``; both errors say "``arg`` must be a positive int, got ..."."""
    index = _index(value)
    if index is None:
        raise TypeError(f"{arg} must be a positive int, got {value!r}")
    if index < 1:
        raise ValueError(f"{arg} must be a positive int, got {value!r}")
    return index


check_positive_int = as_positive_int  # the name the ops have used


def check_floating(x: Any, arg: str, op: str) -> None:
    if not hasattr(x, "dtype") or not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{op}: {arg} must be a floating-point array, got dtype {getattr(x, 'dtype', type(x))}")


def spatial_rank(x: Any, arg: str, op: str, *, extra_dims: int) -> int:
    """Number of spatial axes of a ``(N, *spatial, C)`` array; 1, 2 or 3."""
    nd = x.ndim - extra_dims
    if nd not in (1, 2, 3):
        raise ValueError(
            f"{op}: {arg} must have rank 3, 4 or 5 (N, *spatial, C) with 1-3 spatial axes, got shape {tuple(x.shape)}"
        )
    return nd


def check_axis(axis: Any, ndim: int, op: str) -> int:
    index = _index(axis)
    if index is None:
        raise TypeError(f"{op}: axis must be an int, got {axis!r}")
    if not -ndim <= index < ndim:
        raise ValueError(f"{op}: axis {index} is out of range for an array of rank {ndim}")
    return index % ndim
