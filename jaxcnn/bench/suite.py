"""The whole suite: op level, model level, scaling and memory, then the report.

    jaxcnn bench [--quick] [--out DIR] [--parts ops models scaling report] [--repeats N]
    python -m jaxcnn.bench [...]                                          (the same)

Each part runs its own module's ``main`` (``jaxcnn.bench.ops``, ``jaxcnn.bench.models``,
``jaxcnn.bench.scaling``) with ``--out DIR`` (default ``benchmarks/results/``, ``--quick``:
``benchmarks/results/quick/``), and ``jaxcnn.bench.report`` turns the JSON there into ``report.md`` and
PNG plots. ``--quick`` is a check that everything runs (a few cases, few repeats, a small sweep; under
3 minutes on 2 cores), not a measurement.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .._arguments import POSITIVE_INT
from . import output


def run(args: argparse.Namespace) -> int:
    """Run the parts named by ``args.parts`` (``args``: ``quick``, ``out``, ``parts``, ``repeats``)."""
    from . import accelerator, models, ops, report, scaling

    directory = Path(args.out or output.default_dir(args.quick))
    common = ["--out", str(directory)] + (["--quick"] if args.quick else [])
    if args.repeats is not None:
        common += ["--repeats", str(args.repeats)]
    mains = {"ops": ops.main, "models": models.main, "scaling": scaling.main, "accelerator": accelerator.main}
    start = time.perf_counter()
    for part in ("ops", "models", "scaling", "accelerator"):
        if part in args.parts:
            print(f"\n== {part} ({time.perf_counter() - start:.0f} s)", flush=True)
            status = mains[part](common)
            if status:
                return status
    if "report" in args.parts:
        print(f"\n== report ({time.perf_counter() - start:.0f} s)", flush=True)
        report.write_report(directory)
    print(f"\nbenchmarks done in {time.perf_counter() - start:.0f} s; results in {directory}", flush=True)
    return 0


PARTS = ("ops", "models", "scaling", "report", "accelerator")
DEFAULT_PARTS = ("ops", "models", "scaling", "report")  # accelerator: on request (a GPU or TPU host)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The suite's options, for ``python -m jaxcnn.bench`` and the ``jaxcnn bench`` subcommand."""
    parser.add_argument(
        "--quick", action="store_true", help="a check that everything runs: few cases and repeats (< 3 min on 2 cores)"
    )
    parser.add_argument(
        "--out", metavar="DIR", help="directory for the JSON, report.md and plots (default benchmarks/results[/quick])"
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(DEFAULT_PARTS),
        help="what to run (default: all but accelerator, which times the steps on a GPU or TPU)",
    )
    parser.add_argument("--repeats", type=POSITIVE_INT, help="timed rounds per case (default: per benchmark)")


def main(argv=None, prog: str = "python -m jaxcnn.bench") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
