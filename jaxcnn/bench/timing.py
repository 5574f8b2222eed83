"""Side-by-side timing: candidates are run alternately in one process, so machine noise hits them alike."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import jax


def block(tree):
    return jax.tree_util.tree_map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, tree)


def samples(
    candidates: dict[str, Callable[[], object]], *, repeats: int = 15, warmup: int = 2, settle: int = 1
) -> dict[str, list[float]]:
    """Wall times in milliseconds of each zero-argument callable, measured round-robin: sample ``i`` of
    every candidate comes from round ``i``, so the candidates' samples pair up by round.

    In every round each candidate first runs ``settle`` untimed calls, then one timed call. The untimed
    calls hand the cores over from the previous candidate: after a PyTorch step its OpenMP threads (and
    after an XLA step its thread pool) are still winding down, and the first call of the next candidate
    pays for it. Measured (lenet5, batch 128): jaxcnn's step took 14-15 ms right after a PyTorch step
    and 12.0 ms settled, the same as with no PyTorch in the process (12.1 ms).
    """
    for fn in candidates.values():
        for _ in range(warmup):
            block(fn())
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            for _ in range(settle):
                block(fn())
            start = time.perf_counter()
            block(fn())
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def compare(
    candidates: dict[str, Callable[[], object]], *, repeats: int = 15, warmup: int = 2, settle: int = 1
) -> dict[str, float]:
    """Median wall time in milliseconds of each zero-argument callable, measured round-robin (:func:`samples`)."""
    times = samples(candidates, repeats=repeats, warmup=warmup, settle=settle)
    return {name: statistics.median(s) for name, s in times.items()}


def median_interval(values: list[float], *, level: float = 0.95) -> tuple[float, float | None, float | None]:
    """``(median, low, high)``: the sample median and a distribution-free confidence interval for the
    population median at ``level``, from order statistics.

    With ``n`` independent samples, the number below the median is Binomial(n, 1/2); the interval is
    ``[x_(k), x_(n+1-k)]`` (1-based order statistics) for the largest ``k >= 1`` with
    ``P(Binomial(n, 1/2) < k) <= (1 - level) / 2``, so it covers the median with probability at least
    ``level``. With too few samples for any such ``k`` (``n < 6`` at 0.95) there is no interval at that
    level: ``low`` and ``high`` are None."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    xs, n = sorted(values), len(values)
    if n == 0:
        raise ValueError("median_interval needs at least one value, got none")
    tail, cdf, k = (1 - level) / 2, 0.0, 0
    while k < n and cdf + math.comb(n, k) / 2**n <= tail:  # cdf = P(B <= k - 1) after each step
        cdf += math.comb(n, k) / 2**n
        k += 1
    low, high = (xs[k - 1], xs[n - k]) if k > 0 else (None, None)
    return statistics.median(xs), low, high
