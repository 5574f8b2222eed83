"""XLA:CPU's convolution routes: YNNPACK (this jaxlib's default), XLA's own emitter, XNNPACK and oneDNN.

    python -m jaxcnn.bench.cpu_routes [--routes default xla ynn xnn onednn] [--models fashion_cnn resnet20]
                                      [--rounds 2] [--repeats 7] [--out DIR | --json PATH]

This jaxlib can hand convolutions to a library instead of its own emitter when a flag in ``XLA_FLAGS``
asks for it (``--xla_cpu_experimental_<lib>_fusion_type=individual_convolution``); for YNNPACK it does so
by default, and an empty list (``--xla_cpu_experimental_ynn_fusion_type=``) turns that off. The flags are read
when the CPU backend starts, so every route runs in its own process; the routes are run one after
another, ``--rounds`` times in turn, so that a change in the machine's load shows up as a spread between
rounds rather than as a difference between routes. Each process times, medians of ``--repeats``:

- fashion_cnn's second convolution alone (128x14x14x32 -> 64, 5x5, SAME), forward, with its GFLOP/s;
- one training step (batch 128, SGD with momentum) of each model in ``--models``, jaxcnn and autodiff.

Writes ``cpu_routes.json``. Nothing is changed in the library by it: it is a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from ..xla_cpu import XLA_CPU_CONVOLUTIONS as NO_YNN  # the route `jaxcnn train` chooses: no YNNPACK

ROUTES = {
    "default": "",  # this jaxlib (0.10.2) hands convolutions to YNNPACK by default
    "xla": NO_YNN,  # XLA:CPU's own convolution emitter
    "ynn": "--xla_cpu_experimental_ynn_fusion_type=individual_convolution",
    "xnn": f"{NO_YNN} --xla_cpu_experimental_xnn_fusion_type=individual_convolution",
    "onednn": f"{NO_YNN} --xla_cpu_experimental_onednn_fusion_type=individual_convolution",
}
CONV = {"batch": 128, "size": 14, "c_in": 32, "c_out": 64, "kernel": 5}


def conv_case(repeats: int) -> dict:
    """The forward convolution alone: milliseconds and GFLOP/s (2 FLOPs per multiply-add)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from .timing import compare

    b, n, ci, co, k = (CONV[key] for key in ("batch", "size", "c_in", "c_out", "kernel"))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((b, n, n, ci)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, ci, co)), jnp.float32)
    conv = jax.jit(
        lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    )
    ms = compare({"conv": lambda: conv(x, w)}, repeats=repeats)["conv"]
    return {"conv_ms": ms, "conv_gflops": 2 * b * n * n * ci * co * k * k / ms / 1e6}


def worker(models: list[str], repeats: int) -> dict:
    """What one process measures (its route is whatever ``XLA_FLAGS`` says)."""
    from . import models as model_bench
    from .timing import compare

    row = conv_case(repeats)
    for name in models:
        prepared = model_bench.prepare(name, 128, ("jaxcnn", "autodiff"))
        for impl, ms in compare(prepared.candidates(), repeats=repeats).items():
            row[f"{name}_{impl}_ms"] = ms
    return row


def run_route(route: str, models: list[str], repeats: int) -> dict:
    flags = " ".join(filter(None, [os.environ.get("XLA_FLAGS", ""), ROUTES[route]]))
    command = [
        sys.executable,
        "-m",
        "jaxcnn.bench.cpu_routes",
        "--worker",
        "--models",
        *models,
        "--repeats",
        str(repeats),
    ]
    done = subprocess.run(command, env={**os.environ, "XLA_FLAGS": flags}, capture_output=True, text=True)
    if done.returncode != 0:
        return {"route": route, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return {"route": route, **json.loads(done.stdout.strip().splitlines()[-1])}


def main(argv=None) -> int:
    from . import output

    parser = argparse.ArgumentParser(prog="python -m jaxcnn.bench.cpu_routes", description=__doc__.splitlines()[0])
    parser.add_argument("--routes", nargs="+", choices=sorted(ROUTES), default=list(ROUTES))
    parser.add_argument("--models", nargs="+", default=["fashion_cnn"])
    parser.add_argument("--rounds", type=int, default=2, help="times every route is run, in turn (default 2)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per measurement (default 7)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    output.add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.models, args.repeats)))
        return 0
    rows = []
    for round_ in range(args.rounds):
        for route in args.routes:
            row = {"round": round_, **run_route(route, args.models, args.repeats)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    meta = {**output.library_versions(), **output.machine(), "repeats": args.repeats, "conv": CONV}
    output.write_json(output.json_path(args, "cpu_routes"), {"meta": meta, "routes": ROUTES, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
