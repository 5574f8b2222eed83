"""Minibatches with per-epoch shuffling that a resumed run can regenerate exactly.

The order of epoch ``e`` is ``np.random.default_rng([seed, e]).permutation(n)``: a pure function of
``(seed, epoch, n)``, independent of how many epochs or batches came before. Step ``s`` of an epoch is
positions ``[s * batch_size, (s + 1) * batch_size)`` of that order, so a run stopped after step ``s``
resumes with ``batches(..., epoch=e, start_step=s + 1)`` and sees the same batches as an unbroken run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..ops._validate import as_int

__all__ = ["epoch_permutation", "num_batches", "batch_indices", "batches"]


def epoch_permutation(n: int, *, seed: int, epoch: int) -> np.ndarray:
    """The example order of ``epoch``: a permutation of ``range(n)`` (int64), pure in (seed, epoch, n)."""
    n = as_int(n, "n", minimum=0)
    seed, epoch = as_int(seed, "seed", minimum=0), as_int(epoch, "epoch", minimum=0)
    return np.random.default_rng([seed, epoch]).permutation(n)


def num_batches(n: int, batch_size: int, *, drop_last: bool = True) -> int:
    """Batches per epoch: ``n // batch_size``, plus one partial batch if ``drop_last`` is false."""
    n, batch_size = as_int(n, "n", minimum=0), as_int(batch_size, "batch_size", minimum=1)
    return n // batch_size if drop_last else -(-n // batch_size)


def batch_indices(
    n: int, batch_size: int, *, seed: int, epoch: int, step: int, drop_last: bool = True, shuffle: bool = True
) -> np.ndarray:
    """Indices into the data of batch ``step`` of ``epoch`` (what :func:`batches` yields at that step)."""
    total = num_batches(n, batch_size, drop_last=drop_last)
    step = as_int(step, "step", minimum=0)
    if step >= total:
        raise ConfigError(f"step must be < {total} (batches per epoch for n={n}, batch_size={batch_size}), got {step}")
    order = epoch_permutation(n, seed=seed, epoch=epoch) if shuffle else np.arange(n)
    return order[step * batch_size : (step + 1) * batch_size]


def batches(
    x: Any,
    y: Any,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    drop_last: bool = True,
    shuffle: bool = True,
    start_step: int = 0,
) -> Iterator[tuple[Any, Any]]:
    """Yield ``(x[idx], y[idx])`` for steps ``start_step, ..., num_batches - 1`` of ``epoch``.

    ``x`` and ``y`` are indexable arrays (NumPy or JAX) with equal leading dimension. With ``shuffle``
    false the order is ``0..n-1`` and ``seed``/``epoch`` are not used. With ``drop_last`` false the last
    batch may be smaller. ``start_step`` may equal ``num_batches`` (nothing is left of the epoch).
    """
    n = len(x)
    if len(y) != n:
        raise ConfigError(f"batches: x and y must have the same length, got {n} and {len(y)}")
    total = num_batches(n, batch_size, drop_last=drop_last)
    start_step = as_int(start_step, "start_step", minimum=0)
    if start_step > total:
        raise ConfigError(f"batches: start_step must be <= {total} (batches per epoch), got {start_step}")
    order = epoch_permutation(n, seed=seed, epoch=epoch) if shuffle else np.arange(n)
    for step in range(start_step, total):
        idx = order[step * batch_size : (step + 1) * batch_size]
        yield x[idx], y[idx]
