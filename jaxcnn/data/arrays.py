"""Example arrays that need not fit in memory, and the validation split.

A :class:`~jaxcnn.data.Dataset` holds its inputs as NumPy arrays or as :class:`ScaledImages`: uint8 pixels
(in memory or memory-mapped from a cache file) that read as float32 ``k / 255`` -- exactly the values
``uint8 / np.float32(255)`` gives in memory, so a dataset read through a memory map trains to the same
numbers as one loaded whole. Indexing returns float32 NumPy arrays; a selection of rows
(:func:`take`) is a view, not a copy, so a training set larger than memory is only ever read a batch at a
time.

:func:`validation_split` holds out a stratified, seeded fraction of the training set: within each class,
``round(fraction * n_c)`` examples drawn by ``np.random.default_rng([seed, 1_000_003])`` (a stream of its
own, apart from the epoch orders), so the split is a pure function of (labels, fraction, seed).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["ScaledImages", "take", "validation_split", "SPLIT_STREAM"]

SPLIT_STREAM = 1_000_003  # the seed sequence's second word for the validation split (epochs use 0, 1, ...)


class ScaledImages:
    """uint8 ``pixels`` ``(N, *example)`` read as float32 ``pixels / 255``; ``rows``: the examples of the
    underlying array this one holds (None: all of them), in order."""

    dtype = np.dtype(np.float32)

    def __init__(self, pixels: np.ndarray, rows: np.ndarray | None = None):
        if pixels.dtype != np.uint8:
            raise ConfigError(f"ScaledImages needs uint8 pixels, got {pixels.dtype}")
        self.pixels, self.rows = pixels, None if rows is None else np.asarray(rows, np.int64)

    def __len__(self) -> int:
        return len(self.pixels) if self.rows is None else len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.pixels.shape[1:])

    @property
    def ndim(self) -> int:
        return self.pixels.ndim

    def _source_rows(self, index: Any) -> Any:
        if self.rows is None:
            return index
        return self.rows[index]

    def __getitem__(self, index: Any) -> np.ndarray:
        """float32 ``k / 255`` of the selected examples (an int, a slice or an array of row numbers)."""
        rows = self._source_rows(index)
        if isinstance(rows, np.ndarray) and rows.ndim == 1:
            order = np.argsort(rows, kind="stable")  # a memory map reads sorted rows sequentially
            picked = np.empty((len(rows), *self.pixels.shape[1:]), np.uint8)
            picked[order] = self.pixels[rows[order]]
        else:
            picked = np.asarray(self.pixels[rows])
        return picked.astype(np.float32) / np.float32(255)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        values = self[np.arange(len(self))]
        return values if dtype is None else values.astype(dtype)

    def subset(self, rows: np.ndarray) -> ScaledImages:
        """The examples ``rows`` (of this array) as a view of the same pixels."""
        return ScaledImages(self.pixels, self._source_rows(np.asarray(rows, np.int64)))

    def __repr__(self) -> str:
        return f"ScaledImages(shape={self.shape}, uint8 / 255)"


def take(x: Any, rows: np.ndarray) -> Any:
    """The examples ``rows`` of ``x``: a view of :class:`ScaledImages`, a copy of a NumPy array."""
    return x.subset(rows) if isinstance(x, ScaledImages) else np.asarray(x)[rows]


def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train_rows, val_rows)``: ``fraction`` of the examples of every class held out, each part in
    increasing order. ``fraction`` in ``[0, 1)``; every class keeps at least one training example."""
    if not (isinstance(fraction, (int, float)) and 0 <= fraction < 1):
        raise ConfigError(f"val_fraction must be in [0, 1), got {fraction!r}")
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, SPLIT_STREAM])
    held = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = min(int(round(fraction * len(members))), len(members) - 1)
        held.append(rng.permutation(members)[:count])
    val = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    train = np.setdiff1d(np.arange(len(labels)), val, assume_unique=True)
    return train, val
