"""Op level: forward+backward of each op, jaxcnn's hand-derived VJP vs `jax.vjp` of the reference twin.

    python -m jaxcnn.bench.ops [--quick] [--repeats N] [--only TEXT] [--out DIR | --json PATH]

Each case is jitted once per implementation; the timed function computes the output and the cotangents
of every floating input for a fixed random cotangent. The two are timed in alternation
(`jaxcnn.bench.timing.samples`), so each round gives one paired ratio autodiff / jaxcnn; the table
reports the median ratio (> 1: jaxcnn is faster), a distribution-free 95% interval for it
(`jaxcnn.bench.timing.median_interval`) and a verdict: ``faster`` or ``slower`` when the whole interval
is on that side of 1.0, ``parity`` when it holds 1.0. ``same program`` says whether the two compile to
the same optimized HLO (names and source locations aside): for those the ratio can only be noise.
Writes ``ops.json`` (see `jaxcnn.bench.output` for where).
"""

from __future__ import annotations

import argparse
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import ops, reference

from . import output
from .timing import median_interval, samples


class OpCase(NamedTuple):
    name: str
    op: str
    shapes: tuple
    kwargs: dict
    quick: bool = False


CASES = [
    OpCase("lenet conv1 5x5 1->6 SAME 28x28", "conv", ((128, 28, 28, 1), (5, 5, 1, 6)), dict(padding="SAME")),
    OpCase("lenet conv2 5x5 6->16 14x14", "conv", ((128, 14, 14, 6), (5, 5, 6, 16)), {}, True),
    OpCase(
        "fashion conv2 5x5 32->64 SAME 14x14", "conv", ((128, 14, 14, 32), (5, 5, 32, 64)), dict(padding="SAME"), True
    ),
    OpCase("resnet conv 3x3 16->16 32x32", "conv", ((128, 32, 32, 16), (3, 3, 16, 16)), dict(padding=1), True),
    OpCase("resnet conv 3x3/2 16->32 32x32", "conv", ((128, 32, 32, 16), (3, 3, 16, 32)), dict(stride=2, padding=1)),
    OpCase("resnet conv 3x3 64->64 8x8", "conv", ((128, 8, 8, 64), (3, 3, 64, 64)), dict(padding=1)),
    OpCase("vgg conv 3x3 64->128 16x16", "conv", ((128, 16, 16, 64), (3, 3, 64, 128)), dict(padding=1)),
    OpCase("depthwise 3x3 x32 16x16", "conv", ((128, 16, 16, 32), (3, 3, 1, 32)), dict(padding=1, groups=32)),
    OpCase(
        "depthwise 3x3/2 x32 28x28", "conv", ((128, 28, 28, 32), (3, 3, 1, 32)), dict(stride=2, padding=1, groups=32)
    ),
    OpCase("pointwise 1x1/2 16->32 32x32", "conv", ((128, 32, 32, 16), (1, 1, 16, 32)), dict(stride=2)),
    OpCase("dilated 3x3 d2 16->16 32x32", "conv", ((128, 32, 32, 16), (3, 3, 16, 16)), dict(padding=2, dilation=2)),
    OpCase("conv1d k5/2 1->25 40", "conv", ((128, 40, 1), (5, 1, 25)), dict(stride=2, padding=2)),
    OpCase("conv3d 3x3x3 8->16 16^3", "conv", ((16, 16, 16, 16, 8), (3, 3, 3, 8, 16)), dict(padding=1)),
    OpCase(
        "conv_transpose 4x4/2 32->16 14x14",
        "conv_transpose",
        ((128, 14, 14, 32), (4, 4, 16, 32)),
        dict(stride=2, padding=1),
        True,
    ),
    OpCase("max_pool 2x2 28x28x32", "max_pool", ((128, 28, 28, 32),), dict(window=2), True),
    OpCase("max_pool 2x2 14x14x64", "max_pool", ((128, 14, 14, 64),), dict(window=2)),
    OpCase("max_pool 3x3/2 SAME 32x32x16", "max_pool", ((128, 32, 32, 16),), dict(window=3, stride=2, padding="SAME")),
    OpCase("avg_pool 2x2 28x28x32", "avg_pool", ((128, 28, 28, 32),), dict(window=2)),
    OpCase("lp_pool p=2 2x2 28x28x32", "lp_pool", ((128, 28, 28, 32),), dict(window=2, p=2)),
    OpCase("global_avg_pool 8x8x64", "global_avg_pool", ((128, 8, 8, 64),), {}),
    OpCase("dense 3136->1024", "dense", ((128, 3136), (3136, 1024), (1024,)), {}, True),
    OpCase("batch_norm 32x32x16", "batch_norm", ((128, 32, 32, 16), (16,), (16,)), {}),
    OpCase("relu 28x28x32", "relu", ((128, 28, 28, 32),), {}),
]


def _vjp_fn(fn, kwargs):
    def run(args, cot):
        y, vjp = jax.vjp(lambda *a: fn(*a, **kwargs), *args)
        return y, vjp(cot)

    return jax.jit(run)


def canonical_hlo(compiled) -> str:
    """The optimized HLO of a compiled function (``jax.jit(f).lower(...).compile()``), printed canonically:
    values numbered in order of definition within each computation, called computations inlined, every
    constant in full, no names, source metadata or backend configs, and without the module's
    (function-named) header."""
    from jaxlib import _hlo  # the printer's options; the module itself comes from the compiled executable

    options = _hlo.HloPrintOptions.canonical()
    options.print_large_constants = options.canonicalize_computations = True
    options.print_metadata = options.print_backend_config = False
    (module,) = compiled.runtime_executable().hlo_modules()
    return re.sub(r"ENTRY \S+", "ENTRY", module.to_string(options).split("\n", 1)[1])


def same_program(f, g, *args) -> bool:
    """Whether the jitted ``f`` and ``g`` compile, for ``args``, to the same optimized HLO (names aside)."""
    return canonical_hlo(f.lower(*args).compile()) == canonical_hlo(g.lower(*args).compile())


def verdict(low: float | None, high: float | None) -> str:
    """``faster`` / ``slower`` when the interval of autodiff / jaxcnn lies wholly above / below 1.0,
    ``parity`` when it holds 1.0, ``undetermined`` when there were too few rounds for an interval."""
    if low is None or high is None:
        return "undetermined"
    return "faster" if low > 1.0 else "slower" if high < 1.0 else "parity"


def bench_case(case: OpCase, repeats: int, dtype: str = "float32") -> dict:
    rng = np.random.default_rng(0)
    args = tuple(jnp.asarray(rng.standard_normal(s), dtype) for s in case.shapes)
    hand, ref = getattr(ops, case.op), getattr(reference, case.op)
    out = jax.eval_shape(lambda *a: hand(*a, **case.kwargs), *args)
    cot = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype), out)
    fwd_hand = jax.jit(lambda *a: hand(*a, **case.kwargs))
    fwd_ref = jax.jit(lambda *a: ref(*a, **case.kwargs))
    # compiled once: timed, and compared as programs
    vjp_hand, vjp_ref = (_vjp_fn(f, case.kwargs).lower(args, cot).compile() for f in (hand, ref))
    times = samples(
        {
            "forward": lambda: fwd_hand(*args),
            "forward_ref": lambda: fwd_ref(*args),
            "jaxcnn": lambda: vjp_hand(args, cot),
            "autodiff": lambda: vjp_ref(args, cot),
        },
        repeats=repeats,
    )
    ratio, low, high = median_interval([a / j for a, j in zip(times["autodiff"], times["jaxcnn"], strict=True)])
    return {
        "case": case.name,
        "op": case.op,
        "shapes": case.shapes,
        "forward_ms": float(np.median(times["forward"])),
        "jaxcnn_fwd_bwd_ms": float(np.median(times["jaxcnn"])),
        "autodiff_fwd_bwd_ms": float(np.median(times["autodiff"])),
        "speedup": ratio,
        "speedup_low": low,
        "speedup_high": high,
        "verdict": verdict(low, high),
        "same_program": canonical_hlo(vjp_hand) == canonical_hlo(vjp_ref),
    }


def markdown(rows: list[dict]) -> str:
    """The table; rows written before the paired ratios (no ``verdict``) show only their ratio."""
    lines = [
        "| case | forward ms | jaxcnn fwd+bwd ms | autodiff fwd+bwd ms | autodiff / jaxcnn | 95% interval "
        "| verdict | same program |",
        "|---|---:|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        paired = "verdict" in r
        bounds = (r.get("speedup_low"), r.get("speedup_high"))
        interval = "" if not paired else "n/a" if None in bounds else "{:.2f}-{:.2f}".format(*bounds)
        same = ("yes" if r["same_program"] else "no") if paired else ""
        lines.append(
            f"| {r['case']} | {r['forward_ms']:.2f} | {r['jaxcnn_fwd_bwd_ms']:.2f} | "
            f"{r['autodiff_fwd_bwd_ms']:.2f} | {r['speedup']:.2f}x | {interval} | {r.get('verdict', '')} | {same} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxcnn.bench.ops", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the cases marked quick, fewer repeats")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed calls per implementation (default 15, quick 5)"
    )
    parser.add_argument("--only", default=None, help="only cases whose name contains this text")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="the inputs' dtype")
    output.add_output_arguments(parser)
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 15)
    cases = [c for c in CASES if (c.quick or not args.quick) and (args.only is None or args.only in c.name)]
    rows = []
    for case in cases:
        rows.append(bench_case(case, repeats, args.dtype))
        r = rows[-1]
        print(
            f"{r['case']:40s} fwd {r['forward_ms']:8.2f}  jaxcnn {r['jaxcnn_fwd_bwd_ms']:8.2f}  "
            f"autodiff {r['autodiff_fwd_bwd_ms']:8.2f}  ratio {r['speedup']:.2f}x {r['verdict']}",
            flush=True,
        )
    print()
    print(markdown(rows))
    meta = {**output.library_versions(), **output.machine(), "repeats": repeats, "dtype": args.dtype}
    output.write_json(output.json_path(args, "ops"), {"meta": meta, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
