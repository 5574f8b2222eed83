"""The ``jaxcnn`` command: ``jaxcnn gradcheck`` (more subcommands arrive with training and benchmarks)."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence

__all__ = ["main"]


def _fmt(err: float) -> str:
    return "n/a" if math.isnan(err) else f"{err:.1e}"


def gradcheck_command(args: argparse.Namespace) -> int:
    from . import gradcheck

    cases = gradcheck.default_cases()
    if args.op:
        unknown = sorted(set(args.op) - {c.op for c in cases})
        if unknown:
            valid = ", ".join(sorted({c.op for c in cases}))
            print(f"jaxcnn gradcheck: unknown op {unknown[0]!r}; valid ops: {valid}", file=sys.stderr)
            return 2
        cases = [c for c in cases if c.op in args.op]
    start = time.perf_counter()
    rows: dict[str, list] = {}
    failures = []
    for case in cases:
        report = gradcheck.run_case(case, seed=args.seed)
        rows.setdefault(case.op, []).append(report)
        if not report.ok:
            failures.append((case, report))
        if args.verbose:
            print(f"  {'ok  ' if report.ok else 'FAIL'} {case.op:22s} {case.config}: {report}")
    header = ("op", "configs", "max rel. err vs autodiff", "max rel. err vs finite diff.", "result")
    table = []
    for op, reports in rows.items():
        autodiff = max(max(r.value_vs_autodiff, r.grad_vs_autodiff) for r in reports)
        fd = max(max(r.grad_vs_fd, r.reference_vs_fd) for r in reports)
        table.append(
            (op, str(len(reports)), _fmt(autodiff), _fmt(fd), "pass" if all(r.ok for r in reports) else "FAIL")
        )
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
    line = lambda row: "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |"
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in table:
        print(line(row))
    print(
        f"\n{len(cases) - len(failures)} passed, {len(failures)} failed "
        f"(float64; tolerances: {gradcheck.AUTODIFF_RTOL:.0e} vs autodiff, {gradcheck.FD_RTOL:.0e} vs finite "
        f"differences; {time.perf_counter() - start:.1f} s)"
    )
    for case, report in failures:
        print(f"FAILED {case.op} [{case.config}]: {report}", file=sys.stderr)
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxcnn", description="Convolutional networks with hand-derived VJPs.")
    sub = parser.add_subparsers(dest="command", required=True)
    gc = sub.add_parser(
        "gradcheck",
        help="check every op's hand-derived VJP against JAX autodiff and finite differences",
        description="Compare every op's hand-derived VJP with jax.vjp of its reference twin and with central "
        "finite differences, in float64, over a sweep of configurations; exit 1 on any failure.",
    )
    gc.add_argument("--op", action="append", metavar="NAME", help="check only this op (repeatable)")
    gc.add_argument("--seed", type=int, default=0, help="seed for inputs, cotangents and directions (default 0)")
    gc.add_argument("-v", "--verbose", action="store_true", help="print every configuration's report")
    gc.set_defaults(func=gradcheck_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
