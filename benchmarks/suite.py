"""The whole suite: op level, model level, scaling and memory, then the report.

    python -m benchmarks [--quick] [--out DIR] [--parts ops models scaling report] [--repeats N]
    jaxcnn bench [--quick] [--out DIR] [--parts ...] [--repeats N]      (the same, from an install)

Each part runs its own module's ``main`` (``benchmarks.ops``, ``benchmarks.models``,
``benchmarks.scaling``) with ``--out DIR`` (default ``benchmarks/results/``, ``--quick``:
``benchmarks/results/quick/``), and ``benchmarks.report`` turns the JSON there into ``report.md`` and
PNG plots. ``--quick`` is a check that everything runs (a few cases, few repeats, a small sweep; under
3 minutes on 2 cores), not a measurement.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import output


def run(args: argparse.Namespace) -> int:
    """Run the parts named by ``args.parts`` (``args``: ``quick``, ``out``, ``parts``, ``repeats``)."""
    from . import models, ops, report, scaling

    directory = Path(args.out or output.default_dir(args.quick))
    common = ["--out", str(directory)] + (["--quick"] if args.quick else [])
    if args.repeats is not None:
        common += ["--repeats", str(args.repeats)]
    mains = {"ops": ops.main, "models": models.main, "scaling": scaling.main}
    start = time.perf_counter()
    for part in ("ops", "models", "scaling"):
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


def main(argv=None) -> int:
    from jaxcnn.cli import add_bench_arguments

    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    add_bench_arguments(parser)
    return run(parser.parse_args(argv))
