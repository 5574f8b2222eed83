"""Argument checks shared by the ops and their reference twins; each error names the argument and value.

They read only ``.shape``, ``.ndim`` and ``.dtype``, so they run at trace time on tracers and on
``jax.ShapeDtypeStruct`` alike.
"""

from __future__ import annotations

import operator
from typing import Any

import jax.numpy as jnp

__all__ = ["check_floating", "check_positive_int", "spatial_rank", "check_axis"]


def check_floating(x: Any, arg: str, op: str) -> None:
    if not hasattr(x, "dtype") or not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{op}: {arg} must be a floating-point array, got dtype {getattr(x, 'dtype', type(x))}")


def check_positive_int(value: Any, arg: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{arg} must be a positive int, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{arg} must be a positive int, got {value!r}") from None
    if value < 1:
        raise ValueError(f"{arg} must be a positive int, got {value!r}")
    return value


def spatial_rank(x: Any, arg: str, op: str, *, extra_dims: int) -> int:
    """Number of spatial axes of a ``(N, *spatial, C)`` array; 1, 2 or 3."""
    nd = x.ndim - extra_dims
    if nd not in (1, 2, 3):
        raise ValueError(
            f"{op}: {arg} must have rank 3, 4 or 5 (N, *spatial, C) with 1-3 spatial axes, got shape {tuple(x.shape)}"
        )
    return nd


def check_axis(axis: Any, ndim: int, op: str) -> int:
    if isinstance(axis, bool):
        raise TypeError(f"{op}: axis must be an int, got {axis!r}")
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"{op}: axis must be an int, got {axis!r}") from None
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for an array of rank {ndim}")
    return axis % ndim
