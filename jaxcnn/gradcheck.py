"""Check a function's VJP against JAX's autodiff of a reference and against finite differences.

Works on any function of arrays, not only jaxcnn's ops::

    import jaxcnn
    from jaxcnn import gradcheck, ops, reference

    x, w = ...  # arrays
    report = gradcheck.check(
        lambda x, w: ops.conv(x, w, stride=2), x, w,
        reference=lambda x, w: reference.conv(x, w, stride=2),
    )
    print(report.grad_vs_autodiff, report.grad_vs_fd, report.ok)

Everything runs in float64 (inputs are cast; ``jax_enable_x64`` is switched on for the duration).

- *vs autodiff*: ``fn``'s value and its VJP with a random cotangent ``u`` against ``jax.vjp(reference)``,
  as the normwise relative error ``max|a - b| / max|b|`` over every output and every cotangent.
- *vs finite differences*: for a few random unit directions ``v`` in the (floating) inputs, the central
  difference ``(<u, f(x + eps v)> - <u, f(x - eps v)>) / 2 eps`` against ``<vjp(u), v>``, as the relative
  error ``|fd - an| / max(|fd|, |an|)``.

Integer arguments (class labels) are held fixed: they get no cotangent and no perturbation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["GradcheckReport", "check", "relative_error", "AUTODIFF_RTOL", "FD_RTOL"]

AUTODIFF_RTOL = 1e-10  # hand-derived vs autodiff in float64: only rounding may differ
FD_RTOL = 1e-6  # central differences in float64 with eps ~ 1e-6: O(eps^2) truncation + O(1e-16/eps) rounding


class GradcheckReport(NamedTuple):
    value_vs_autodiff: float  # relative error of fn's output vs reference's; nan without a reference
    grad_vs_autodiff: float  # relative error of fn's VJP vs jax.vjp(reference); nan without a reference
    grad_vs_fd: float  # worst relative error of <vjp(u), v> vs central differences over the directions
    reference_vs_fd: float  # the same for the reference (nan without one): is the oracle itself right?

    @property
    def ok(self) -> bool:
        autodiff = [e for e in (self.value_vs_autodiff, self.grad_vs_autodiff) if not math.isnan(e)]
        fd = [e for e in (self.grad_vs_fd, self.reference_vs_fd) if not math.isnan(e)]
        return all(e <= AUTODIFF_RTOL for e in autodiff) and all(e <= FD_RTOL for e in fd)


def relative_error(a: Any, b: Any) -> float:
    """``max|a - b| / max|b|`` over the leaves of two pytrees (0 when both are exactly zero)."""
    a_leaves, b_leaves = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    if len(a_leaves) != len(b_leaves):
        raise ValueError(f"relative_error: pytrees differ, {len(a_leaves)} vs {len(b_leaves)} leaves")
    diff = scale = 0.0
    for x, y in zip(a_leaves, b_leaves):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape:
            raise ValueError(f"relative_error: shapes differ, {x.shape} vs {y.shape}")
        if x.size:
            diff = max(diff, float(np.max(np.abs(x - y))))
            scale = max(scale, float(np.max(np.abs(y))))
    if diff == 0.0:
        return 0.0
    return diff / scale if scale > 0 else math.inf


def _is_float(x: Any) -> bool:
    return jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)


def _to_float64(x: Any) -> jax.Array:
    x = jnp.asarray(x)
    return x.astype(jnp.float64) if _is_float(x) else x


def _float_mask(args: Sequence[Any]) -> list[bool]:
    return [_is_float(a) for a in args]


def _vjp(fn: Callable, args: list, mask: list[bool]):
    """``jax.vjp`` over the floating arguments only (integers closed over)."""

    def partial_fn(*float_args):
        it = iter(float_args)
        return fn(*(next(it) if m else a for a, m in zip(args, mask)))

    return jax.vjp(partial_fn, *(a for a, m in zip(args, mask) if m))


def _inner(a: Any, b: Any) -> float:
    return float(sum(jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))))


def _fd_error(fn: Callable, args: list, mask: list[bool], u: Any, grads: Sequence, directions: list, eps: float) -> float:
    worst = 0.0
    for v in directions:
        def shifted(sign):
            it = iter(v)
            return [a + sign * eps * next(it) if m else a for a, m in zip(args, mask)]

        fd = (_inner(u, fn(*shifted(+1))) - _inner(u, fn(*shifted(-1)))) / (2 * eps)
        an = sum(float(jnp.vdot(g, d)) for g, d in zip(grads, v))
        denom = max(abs(fd), abs(an))
        worst = max(worst, abs(fd - an) / denom if denom > 0 else 0.0)
    return worst


def check(
    fn: Callable,
    *args: Any,
    reference: Callable | None = None,
    seed: int = 0,
    num_directions: int = 3,
    eps: float = 1e-6,
) -> GradcheckReport:
    """Compare ``fn``'s VJP at ``args`` with ``jax.vjp(reference)`` and with central finite differences.

    Args:
      fn: a function of arrays returning an array or a pytree of arrays (e.g. ``ops.batch_norm``).
      *args: its positional arguments; floating ones are cast to float64, integer ones held fixed.
      reference: an independent implementation with the same signature, differentiated by JAX
        (``jaxcnn.reference`` holds one per op); omit it to check against finite differences only.
      seed: for the random cotangent and directions.
      num_directions: how many random directions the finite differences probe.
      eps: the finite-difference step (directions have unit norm).

    Returns:
      A :class:`GradcheckReport`; ``report.ok`` applies ``AUTODIFF_RTOL`` and ``FD_RTOL``.
    """
    if not args:
        raise ValueError("check: fn needs at least one argument to differentiate")
    with jax.enable_x64(True):
        args64 = [_to_float64(a) for a in args]
        mask = _float_mask(args64)
        if not any(mask):
            raise ValueError("check: at least one argument must be floating-point")
        y, fn_vjp = _vjp(fn, args64, mask)
        rng = np.random.default_rng(seed)
        u = jax.tree_util.tree_map(lambda leaf: jnp.asarray(rng.standard_normal(leaf.shape)), y)
        grads = fn_vjp(u)
        float_args = [a for a, m in zip(args64, mask) if m]
        directions = []
        for _ in range(num_directions):
            v = [rng.standard_normal(a.shape) for a in float_args]
            norm = math.sqrt(sum(float(np.sum(d * d)) for d in v)) or 1.0
            directions.append([jnp.asarray(d / norm) for d in v])
        grad_vs_fd = _fd_error(fn, args64, mask, u, grads, directions, eps)
        value_err = grad_err = ref_vs_fd = math.nan
        if reference is not None:
            y_ref, ref_vjp = _vjp(reference, args64, mask)
            ref_grads = ref_vjp(u)
            value_err = relative_error(y, y_ref)
            grad_err = relative_error(grads, ref_grads)
            ref_vs_fd = _fd_error(reference, args64, mask, u, ref_grads, directions, eps)
        return GradcheckReport(value_err, grad_err, grad_vs_fd, ref_vs_fd)
