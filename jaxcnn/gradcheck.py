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
  error ``|fd - an| / max(|fd|, |vjp(u)|)`` (``|<vjp(u), v>| <= |vjp(u)|`` for a unit ``v``).

Integer arguments (class labels) are held fixed: they get no cotangent and no perturbation.

A NaN or an infinity on one side of a comparison where the other side is finite is a failure, never a
small error: it makes that error infinite and is described in ``report.nonfinite``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .errors import ConfigError

__all__ = [
    "GradcheckReport",
    "check",
    "relative_error",
    "nonfinite_mismatch",
    "Case",
    "default_cases",
    "run_case",
    "AUTODIFF_RTOL",
    "FD_RTOL",
]

AUTODIFF_RTOL = 1e-10  # hand-derived vs autodiff in float64: only rounding may differ
FD_RTOL = 1e-6  # central differences in float64 with eps ~ 1e-6: O(eps^2) truncation + O(1e-16/eps) rounding


class GradcheckReport(NamedTuple):
    value_vs_autodiff: float  # relative error of fn's output vs reference's; nan without a reference
    grad_vs_autodiff: float  # relative error of fn's VJP vs jax.vjp(reference); nan without a reference
    grad_vs_fd: float  # worst relative error of <vjp(u), v> vs central differences over the directions
    reference_vs_fd: float  # the same for the reference (nan without one): is the oracle itself right?
    nonfinite: tuple[str, ...] = ()  # each comparison that met a NaN or infinity on one side only

    @property
    def ok(self) -> bool:
        """Every comparison made is within its tolerance and none met a NaN or infinity where the other
        side is finite. Only the three comparisons with a reference may be NaN, and only together (no
        reference given); any other NaN fails."""
        checks = [(self.grad_vs_fd, FD_RTOL)]
        with_reference = (self.value_vs_autodiff, self.grad_vs_autodiff, self.reference_vs_fd)
        if not all(math.isnan(e) for e in with_reference):
            checks += [(self.value_vs_autodiff, AUTODIFF_RTOL), (self.grad_vs_autodiff, AUTODIFF_RTOL)]
            checks += [(self.reference_vs_fd, FD_RTOL)]
        return not self.nonfinite and all(e <= tol for e, tol in checks)  # NaN <= tol is False


def nonfinite_mismatch(a: Any, b: Any) -> str | None:
    """Where ``a`` has a NaN or an infinity that ``b`` does not have at the same place (or the other way
    round), a description of the first such place; None when the non-finite entries agree."""
    for i, (x, y) in enumerate(_leaf_pairs(a, b)):
        same = (x == y) | (np.isnan(x) & np.isnan(y))  # equal infinities, or NaN on both sides
        bad = ~(np.isfinite(x) & np.isfinite(y)) & ~same
        if bad.any():
            at = tuple(int(k) for k in np.argwhere(bad)[0])
            return f"leaf {i} at {at}: {x[at]} vs {y[at]}"
    return None


def _leaf_pairs(a: Any, b: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """The leaves of two pytrees as float64 NumPy pairs, checked for equal counts and shapes."""
    a_leaves, b_leaves = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    if len(a_leaves) != len(b_leaves):
        raise ConfigError(f"relative_error: pytrees differ, {len(a_leaves)} vs {len(b_leaves)} leaves")
    pairs = []
    for x, y in zip(a_leaves, b_leaves):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape:
            raise ConfigError(f"relative_error: shapes differ, {x.shape} vs {y.shape}")
        pairs.append((x, y))
    return pairs


def relative_error(a: Any, b: Any) -> float:
    """``max|a - b| / max|b|`` over the leaves of two pytrees (0 when both are exactly zero).

    A NaN or an infinity on one side where the other is finite (or a different one) is an infinite
    error, never a small one; non-finite entries equal on both sides are left out of the comparison."""
    if nonfinite_mismatch(a, b) is not None:
        return math.inf
    diff = scale = 0.0
    for x, y in _leaf_pairs(a, b):
        finite = np.isfinite(x) & np.isfinite(y)
        if finite.any():
            diff = max(diff, float(np.max(np.abs(x[finite] - y[finite]))))
            scale = max(scale, float(np.max(np.abs(y[finite]))))
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


def _fd_error(
    fn: Callable, args: list, mask: list[bool], u: Any, grads: Sequence, directions: list, eps: float
) -> float:
    """The worst relative error of ``<vjp(u), v>`` against central differences; infinite when either
    side is not finite (a NaN must never compare as a small error)."""
    worst = 0.0
    grad_norm = math.sqrt(sum(float(jnp.vdot(g, g)) for g in grads))
    for v in directions:

        def shifted(sign, v=v):
            it = iter(v)
            return [a + sign * eps * next(it) if m else a for a, m in zip(args, mask)]

        fd = (_inner(u, fn(*shifted(+1))) - _inner(u, fn(*shifted(-1)))) / (2 * eps)
        an = sum(float(jnp.vdot(g, d)) for g, d in zip(grads, v))
        if not all(math.isfinite(t) for t in (fd, an, grad_norm)):
            return math.inf
        # |<g, v>| <= |g| for a unit v: scaling by |g| keeps a direction nearly orthogonal to the
        # gradient (an ~ 0) from turning harmless rounding into a large "relative" error.
        denom = max(abs(fd), grad_norm)
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
        raise ConfigError("check: fn needs at least one argument to differentiate")
    with jax.enable_x64(True):
        args64 = [_to_float64(a) for a in args]
        mask = _float_mask(args64)
        if not any(mask):
            raise ConfigError("check: at least one argument must be floating-point")
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
        nonfinite = [] if math.isfinite(grad_vs_fd) else ["grad_vs_fd: NaN or infinity in the VJP or the values"]
        value_err = grad_err = ref_vs_fd = math.nan
        if reference is not None:
            y_ref, ref_vjp = _vjp(reference, args64, mask)
            ref_grads = ref_vjp(u)
            value_err = relative_error(y, y_ref)
            grad_err = relative_error(grads, ref_grads)
            ref_vs_fd = _fd_error(reference, args64, mask, u, ref_grads, directions, eps)
            for name, a, b in (("value_vs_autodiff", y, y_ref), ("grad_vs_autodiff", grads, ref_grads)):
                where = nonfinite_mismatch(a, b)
                if where is not None:
                    nonfinite.append(f"{name}: {where} (fn vs reference)")
            if not math.isfinite(ref_vs_fd):
                nonfinite.append("reference_vs_fd: NaN or infinity in the reference's VJP or values")
        return GradcheckReport(value_err, grad_err, grad_vs_fd, ref_vs_fd, tuple(nonfinite))


# ---------------------------------------------------------------------------------------------
# The sweep behind `jaxcnn gradcheck`: every op over a spread of configurations
# ---------------------------------------------------------------------------------------------


class Case(NamedTuple):
    op: str  # the name in jaxcnn.ops / jaxcnn.losses and in jaxcnn.reference
    config: str  # human-readable configuration
    shapes: tuple[tuple[int, ...], ...]  # float argument shapes; "labels" cases add integer labels
    kwargs: dict


def _conv_cases() -> list[Case]:
    cases = []
    for x, w, kw in [
        ((2, 9, 3), (3, 3, 4), dict()),
        ((2, 10, 4), (2, 2, 6), dict(stride=3, padding="SAME", groups=2)),
        ((2, 8, 7, 3), (3, 3, 3, 4), dict(stride=2, padding=1)),
        ((2, 9, 8, 4), (3, 2, 2, 6), dict(stride=(2, 3), padding=((1, 2), (0, 1)), dilation=(1, 2), groups=2)),
        ((2, 7, 7, 3), (2, 2, 3, 2), dict(stride=4)),  # stride > kernel: unreached rows
        ((1, 8, 8, 4), (3, 3, 1, 8), dict(stride=2, padding="SAME", groups=4)),  # depthwise, multiplier 2
        ((2, 9, 9, 2), (3, 3, 2, 3), dict(dilation=3, padding=((2, 0), (0, 3)))),
        ((1, 5, 6, 4, 2), (2, 3, 2, 2, 3), dict(stride=(2, 1, 2), padding=1, dilation=(1, 1, 2))),
    ]:
        cases.append(Case("conv", _describe(kw, x, w), (x, w), kw))
    return cases


def _conv_transpose_cases() -> list[Case]:
    cases = []
    for x, w, kw in [
        ((2, 5, 3), (3, 4, 3), dict(stride=2)),
        ((2, 4, 4, 3), (3, 3, 2, 3), dict(stride=2, padding=1, output_padding=1)),
        (
            (2, 5, 4, 6),
            (3, 3, 4, 6),
            dict(stride=(2, 3), padding=((1, 0), (2, 1)), dilation=(2, 1), output_padding=(1, 2)),
        ),
        ((2, 5, 6), (3, 2, 6), dict(stride=2, dilation=3, groups=3, output_padding=2)),
        ((1, 3, 3, 3, 2), (2, 2, 2, 3, 2), dict(stride=2, padding=(1, 0, 0))),
    ]:
        cases.append(Case("conv_transpose", _describe(kw, x, w), (x, w), kw))
    return cases


def _pool_cases() -> list[Case]:
    cases = []
    for x, kw in [
        ((2, 8, 8, 3), dict(window=2)),
        ((2, 7, 6, 3), dict(window=(3, 2), stride=(2, 1), padding="SAME")),
        ((2, 9, 2), dict(window=3, stride=2, padding=((1, 2),))),
        ((1, 4, 5, 4, 2), dict(window=2, stride=1)),
    ]:
        for op, extra in [("max_pool", {}), ("avg_pool", {}), ("lp_pool", dict(p=3))]:
            cases.append(Case(op, _describe({**kw, **extra}, x), (x,), {**kw, **extra}))
        if "padding" in kw:
            kw2 = {**kw, "count_include_pad": False}
            cases.append(Case("avg_pool", _describe(kw2, x), (x,), kw2))
    cases.append(
        Case("lp_pool", _describe(dict(window=2, p=1.5), (2, 6, 6, 2)), ((2, 6, 6, 2),), dict(window=2, p=1.5))
    )
    for x in [(2, 5, 3), (2, 4, 5, 3), (1, 3, 3, 3, 2)]:
        cases.append(Case("global_avg_pool", _describe({}, x), (x,), {}))
        cases.append(Case("global_max_pool", _describe({}, x), (x,), {}))
    return cases


def _adaptive_pool_cases() -> list[Case]:
    cases = []
    for x, output_size in [
        ((2, 7, 3), 3),  # 7 -> 3: overlapping windows
        ((2, 5, 2), 8),  # larger than the input: repeated rows
        ((2, 6, 2), 1),  # global
        ((2, 7, 5, 3), (3, 3)),  # 7 -> 3, 5 -> 3
        ((2, 6, 4, 2), (3, None)),  # divisible; None keeps the axis
        ((2, 4, 5, 2), (4, 7)),  # equal; larger
        ((1, 3, 4, 5, 2), (2, 4, 3)),
        ((1, 2, 3, 4, 2), (3, None, 6)),
    ]:
        kw = dict(output_size=output_size)
        cases.append(Case("adaptive_avg_pool", _describe(kw, x), (x,), kw))
    return cases


def _lrn_cases() -> list[Case]:
    cases = []
    for x, kw in [
        ((2, 3, 3, 8), dict(size=5, alpha=1e-4, beta=0.75, k=2.0)),  # AlexNet
        ((2, 3, 3, 8), dict(size=4, alpha=0.8, beta=0.6, k=1.5)),  # even: asymmetric window
        ((2, 7), dict(size=3, alpha=0.5, beta=1.3, k=1.0)),
        ((2, 3, 6), dict(size=2, alpha=2.0, beta=0.75, k=0.7)),
        ((2, 5, 4), dict(size=9, alpha=1.0, beta=1.5, k=0.5)),  # window larger than C
        ((1, 2, 3, 2, 5), dict(size=6, alpha=1.5, beta=0.4, k=3.0)),  # even, larger than C
        ((2, 6), dict(size=1, alpha=1.0, beta=2.0, k=1.0)),
    ]:
        cases.append(Case("lrn", _describe(kw, x), (x,), kw))
    return cases


def _elementwise_cases() -> list[Case]:
    cases = [
        Case("dense", _describe({}, (4, 5), (5, 3), (3,)), ((4, 5), (5, 3), (3,)), {}),
        Case("dense", _describe({}, (2, 3, 5), (5, 4)), ((2, 3, 5), (5, 4)), {}),
    ]
    for op in ("relu", "sigmoid", "tanh"):
        cases.append(Case(op, _describe({}, (4, 6)), ((4, 6),), {}))
    cases.append(Case("leaky_relu", _describe(dict(negative_slope=0.2), (4, 6)), ((4, 6),), dict(negative_slope=0.2)))
    for op in ("softmax", "log_softmax"):
        for axis in (-1, 0):
            cases.append(Case(op, _describe(dict(axis=axis), (4, 6)), ((4, 6),), dict(axis=axis)))
    for x in [(8, 3), (4, 3, 3, 5)]:
        c = x[-1]
        cases.append(Case("batch_norm", _describe({}, x), (x, (c,), (c,)), dict(epsilon=1e-3)))
    for x, groups in [((4, 3, 3, 6), 3), ((2, 5, 4), 2)]:
        kw = dict(groups=groups, epsilon=1e-3)
        cases.append(Case("group_norm", _describe(kw, x), (x, (x[-1],), (x[-1],)), kw))
    for w in [(3, 3, 4, 5), (6, 3), (3, 2)]:  # a conv kernel, a dense kernel, three inputs per unit
        cases.append(Case("weight_standardize", _describe({}, w), (w,), {}))
    cases.append(Case("softmax_cross_entropy", _describe({}, (6, 4)) + ", labels", ((6, 4),), {}))
    cases.append(Case("mse", _describe({}, (6, 4), (6, 4)), ((6, 4), (6, 4)), {}))
    return cases


def _describe(kwargs: dict, *shapes) -> str:
    args = " ".join("x".join(map(str, s)) for s in shapes)
    opts = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{args}" + (f" {opts}" if opts else "")


def default_cases() -> list[Case]:
    """The configurations ``jaxcnn gradcheck`` sweeps: 1-D/2-D/3-D, strides (also > kernel), dilation,
    asymmetric and SAME padding, groups and depthwise, every pool (adaptive ones shrinking, keeping and
    growing axes), activation, norm (LRN with odd, even and oversized windows) and loss."""
    pools = _pool_cases() + _adaptive_pool_cases()
    return _conv_cases() + _conv_transpose_cases() + pools + _lrn_cases() + _elementwise_cases()


def run_case(case: Case, seed: int = 0) -> GradcheckReport:
    """Check one case's op against its reference twin."""
    from . import losses, ops, reference

    impl = getattr(ops, case.op, None) or getattr(losses, case.op)
    ref = getattr(reference, case.op)
    # The inputs from a stream of their own: drawn like the cotangent (``check``'s ``seed``), a kernel would be
    # its own cotangent, which weight standardisation's VJP projects to zero.
    rng = np.random.default_rng((seed, 1))
    args: list[Any] = [rng.standard_normal(s) for s in case.shapes]
    if case.op == "softmax_cross_entropy":
        args.append(rng.integers(0, case.shapes[0][-1], case.shapes[0][:-1]))
    return check(lambda *a: impl(*a, **case.kwargs), *args, reference=lambda *a: ref(*a, **case.kwargs), seed=seed)
