"""Side-by-side timing: candidates are run alternately in one process, so machine noise hits them alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax


def block(tree):
    return jax.tree_util.tree_map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, tree)


def compare(
    candidates: dict[str, Callable[[], object]], *, repeats: int = 15, warmup: int = 2, settle: int = 1
) -> dict[str, float]:
    """Median wall time in milliseconds of each zero-argument callable, measured round-robin.

    In every round each candidate first runs ``settle`` untimed calls, then one timed call. The untimed
    calls hand the cores over from the previous candidate: after a PyTorch step its OpenMP threads (and
    after an XLA step its thread pool) are still winding down, and the first call of the next candidate
    pays for it. Measured (lenet5, batch 128): jaxcnn's step took 14-15 ms right after a PyTorch step
    and 12.0 ms settled, the same as with no PyTorch in the process (12.1 ms).
    """
    for fn in candidates.values():
        for _ in range(warmup):
            block(fn())
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            for _ in range(settle):
                block(fn())
            start = time.perf_counter()
            block(fn())
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(s) for name, s in samples.items()}
