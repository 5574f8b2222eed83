"""Side-by-side timing: candidates are run alternately in one process, so machine noise hits them alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax


def block(tree):
    return jax.tree_util.tree_map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, tree)


def compare(candidates: dict[str, Callable[[], object]], *, repeats: int = 15, warmup: int = 2) -> dict[str, float]:
    """Median wall time in milliseconds of each zero-argument callable, measured round-robin."""
    for fn in candidates.values():
        for _ in range(warmup):
            block(fn())
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            block(fn())
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(s) for name, s in samples.items()}
