"""XLA:CPU's convolution routes: YNNPACK (this jaxlib's default), XLA's own emitter, XNNPACK and oneDNN.

    python -m jaxcnn.bench.cpu_routes [--routes default xla ynn xnn onednn ynn-dot ynn-dot-reduce ynn-reduce
                                               onednn-custom-call]
                                      [--models fashion_cnn resnet20]
                                      [--rounds 2] [--repeats 7] [--out DIR | --json PATH]

This jaxlib can hand convolutions to a library instead of its own emitter when a flag in ``XLA_FLAGS``
asks for it (``--xla_cpu_experimental_<lib>_fusion_type=individual_convolution``); for YNNPACK it does so
by default, and an empty list (``--xla_cpu_experimental_ynn_fusion_type=``) turns that off. The flags are read
when the CPU backend starts, so every route runs in its own process; the routes are run one after
another, ``--rounds`` times in turn, so that a change in the machine's load shows up as a spread between
rounds rather than as a difference between routes. Each process times, medians of ``--repeats``:

- fashion_cnn's second convolution alone (128x14x14x32 -> 64, 5x5, SAME), forward, with its GFLOP/s, and
  its dense layer's product and weight gradient, in float32 and each other dtype of ``--dtypes``;
- one training step (batch 128, SGD with momentum) of each model in ``--models``, jaxcnn and autodiff;
- the step ``jaxcnn train`` runs (Adam, batch 128) in each compute dtype of ``--dtypes``.

Writes ``cpu_routes.json``. Nothing is changed in the library by it: it is a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

from ..xla_cpu import XLA_CPU_CONVOLUTIONS

NO_YNN = "--xla_cpu_experimental_ynn_fusion_type="  # an empty list: nothing goes to YNNPACK

ROUTES = {
    "default": "",  # this jaxlib (0.10.2) hands convolutions to YNNPACK by default
    "xla": NO_YNN,  # XLA:CPU's own convolution emitter
    "ynn": "--xla_cpu_experimental_ynn_fusion_type=individual_convolution",
    "xnn": f"{NO_YNN} --xla_cpu_experimental_xnn_fusion_type=individual_convolution",
    "onednn": f"{NO_YNN} --xla_cpu_experimental_onednn_fusion_type=individual_convolution",
    "ynn-dot": "--xla_cpu_experimental_ynn_fusion_type=individual_dot",  # matrix products to YNNPACK only
    "ynn-dot-reduce": XLA_CPU_CONVOLUTIONS,  # the route `jaxcnn train` sets: products and reductions to YNNPACK
    "ynn-reduce": "--xla_cpu_experimental_ynn_fusion_type=reduce",  # float32 reductions alone to YNNPACK
    # oneDNN's own switches (this jaxlib has oneDNN's convolution thunk); measured: they take no convolution
    "onednn-custom-call": f"{NO_YNN} --xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true",
}
CONV = {"batch": 128, "size": 14, "c_in": 32, "c_out": 64, "kernel": 5}


def convolution(x, w):
    """The convolution these benchmarks time alone: SAME, stride 1, NHWC input, HWIO kernel."""
    from jax import lax

    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def emitter_dtype(compiled) -> str | None:
    """Who computes the convolution in a compiled function (``jax.jit(f).lower(...).compile()``): the dtype
    of the plain ``convolution`` instruction of the entry computation, which XLA's own emitter runs
    (``"f32"`` for a bfloat16 input it converted first); ``"library"`` when the entry computation has none
    but calls a library's fusion or custom call instead (YNNPACK's ``__ynn_fusion``, oneDNN's); None when
    it has neither."""
    text = compiled.as_text()
    entry = text[text.index("\nENTRY") :].split("\n}", 1)[0]
    found = re.search(r"= (\w+)\[[^\]]*\]\S* convolution\(", entry)
    if found:
        return found.group(1)
    return "library" if re.search(r"kind=kCustom|custom-call\(", entry) else None


def conv_case(repeats: int, dtype: str = "float32") -> dict:
    """The forward convolution alone, and fashion_cnn's dense layer's product (128 x 3,136 by 3,136 x 1,024)
    with its weight gradient: milliseconds (and the convolution's GFLOP/s, 2 FLOPs per multiply-add). Also
    who ran the convolution: ``conv_emitter_dtype`` (:func:`emitter_dtype`)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from .timing import compare

    b, n, ci, co, k = (CONV[key] for key in ("batch", "size", "c_in", "c_out", "kernel"))
    rng = np.random.default_rng(0)
    array = lambda *shape: jnp.asarray(rng.standard_normal(shape), dtype)  # noqa: E731
    x, w = array(b, n, n, ci), array(k, k, ci, co)
    a, m, g = array(128, 3136), array(3136, 1024), array(128, 1024)
    conv = jax.jit(convolution).lower(x, w).compile()  # compiled once: timed, and read for who runs it
    dot, dot_t = jax.jit(lambda a, m: a @ m), jax.jit(lambda a, g: a.T @ g)
    ms = compare({"conv": lambda: conv(x, w), "dot": lambda: dot(a, m), "dot_t": lambda: dot_t(a, g)}, repeats=repeats)
    suffix = "" if dtype == "float32" else f"_{dtype}"
    return {
        f"conv{suffix}_ms": ms["conv"],
        f"conv{suffix}_gflops": 2 * b * n * n * ci * co * k * k / ms["conv"] / 1e6,
        f"dense{suffix}_ms": ms["dot"],
        f"dense_weight_grad{suffix}_ms": ms["dot_t"],
        f"conv{suffix}_emitter_dtype": emitter_dtype(conv),
    }


def cli_step_inputs(name: str) -> tuple:
    """``(model, optimizer, state, x, y)`` for the step ``jaxcnn train`` runs: the zoo model ``name`` built
    for training, Adam 1e-3, its initial state and a random batch of 128 (seed 0)."""
    import jax
    import numpy as np
    import optax

    from .. import models, train

    model, shape = models.build(name, 10, for_training=True), models.MODELS[name].input_shape
    optimizer = optax.adam(1e-3)
    state = train.init_train_state(model, (128, *shape), optimizer, seed=0)
    rng = np.random.default_rng(0)
    x, y = jax.device_put((rng.standard_normal((128, *shape)).astype(np.float32), rng.integers(0, 10, 128)))
    return model, optimizer, state, x, y


def time_steps(lowered: dict, state, x, y, repeats: int) -> dict[str, float]:
    """Median milliseconds of each lowered training step (``make_train_step(...).lower(state, x, y)``),
    each compiled once and all timed in alternation on the same state and batch."""
    from .timing import compare

    steps = {label: program.compile() for label, program in lowered.items()}
    return compare({label: (lambda s=s: s(state, x, y)[1]["loss"]) for label, s in steps.items()}, repeats=repeats)


def train_step_case(name: str, dtype: str, repeats: int) -> float:
    """Milliseconds of the step ``jaxcnn train`` runs (``train.make_train_step``, Adam, batch 128) in the
    compute dtype ``dtype``."""
    from .. import train
    from ..train.recipes import COMPUTE_DTYPES
    from .timing import compare

    model, optimizer, state, x, y = cli_step_inputs(name)
    step = train.make_train_step(model, optimizer, compute_dtype=COMPUTE_DTYPES[dtype])
    return compare({"step": lambda: step(state, x, y)[1]["loss"]}, repeats=repeats)["step"]


def worker(models: list[str], repeats: int, dtypes: list[str]) -> dict:
    """What one process measures (its route is whatever ``XLA_FLAGS`` says)."""
    from . import models as model_bench
    from .timing import compare

    row = {}
    for dtype in ("float32", *(d for d in dtypes if d != "float32")):
        row.update(conv_case(repeats, dtype))
    for name in models:
        prepared = model_bench.prepare(name, 128, ("jaxcnn", "autodiff"))
        for impl, ms in compare(prepared.candidates(), repeats=repeats).items():
            row[f"{name}_{impl}_ms"] = ms
        for dtype in dtypes:
            row[f"{name}_train_{dtype}_ms"] = train_step_case(name, dtype, repeats)
    return row


def run_route(route: str, models: list[str], repeats: int, dtypes: tuple[str, ...] = ("float32",)) -> dict:
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
        "--dtypes",
        *dtypes,
    ]
    done = subprocess.run(command, env={**os.environ, "XLA_FLAGS": flags}, capture_output=True, text=True)
    if done.returncode != 0:
        return {"route": route, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return {"route": route, **json.loads(done.stdout.strip().splitlines()[-1])}


def main(argv=None) -> int:
    from . import output

    parser = argparse.ArgumentParser(prog="python -m jaxcnn.bench.cpu_routes", description=__doc__.splitlines()[0])
    parser.add_argument("--routes", nargs="+", choices=sorted(ROUTES), default=list(ROUTES))
    parser.add_argument("--models", nargs="*", default=["fashion_cnn"])
    parser.add_argument("--rounds", type=int, default=2, help="times every route is run, in turn (default 2)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per measurement (default 7)")
    parser.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"],
                        help="compute dtypes of the CLI step to time (default float32 bfloat16)")  # fmt: skip
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    output.add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.models, args.repeats, args.dtypes)))
        return 0
    rows = []
    for round_ in range(args.rounds):
        for route in args.routes:
            row = {"round": round_, **run_route(route, args.models, args.repeats, args.dtypes)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    meta = {**output.library_versions(), **output.machine(), "repeats": args.repeats, "conv": CONV}
    output.write_json(output.json_path(args, "cpu_routes"), {"meta": meta, "routes": ROUTES, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
