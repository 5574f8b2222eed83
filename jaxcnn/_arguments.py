"""Argument types for the command lines (``jaxcnn`` and ``python -m jaxcnn.bench``): each parses a flag's
text with the library's own checks (:mod:`jaxcnn.ops._validate`) and turns a failure into argparse's
one-line "argument --flag: must be ..., got '...'"."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from .ops._validate import as_int, as_positive_int

__all__ = ["POSITIVE_INT", "NON_NEGATIVE_INT", "POSITIVE_FLOAT", "NON_NEGATIVE_FLOAT", "FRACTION", "SHAPE"]


def _argument(parse: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    """An argparse type: ``parse(text)``, whose errors (the library's own checks among them) become
    "must be <what>, got '<text>'"."""

    def convert(text: str):
        try:
            return parse(text)
        except (ValueError, TypeError):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None

    convert.__name__ = what  # argparse names the type in some messages
    return convert


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(text)
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(text)
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise ValueError(text)
    return value


def _shape(text: str) -> tuple[int, ...]:
    """``H,W,C`` (or ``L,C``, ``D,H,W,C``): 2-4 positive ints separated by commas."""
    shape = tuple(as_positive_int(int(part), "a size") for part in text.split(","))
    if not 2 <= len(shape) <= 4:
        raise ValueError(text)
    return shape


POSITIVE_INT = _argument(lambda text: as_positive_int(int(text), "value"), "a positive int")
NON_NEGATIVE_INT = _argument(lambda text: as_int(int(text), "value", minimum=0), "a non-negative int")
POSITIVE_FLOAT = _argument(_positive_float, "a positive float")
NON_NEGATIVE_FLOAT = _argument(_non_negative_float, "a non-negative float")
FRACTION = _argument(_fraction, "a fraction in [0, 1)")
SHAPE = _argument(_shape, "2-4 positive ints separated by commas (H,W,C)")
