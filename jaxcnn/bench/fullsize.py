"""Full-size networks: the forward pass and one training step of ResNet-50 and VGG-16 (or others) at
224x224, jaxcnn's hand-derived VJPs against JAX autodiff of the same network (``ops=jaxcnn.reference``),
timed alternately in one process (medians).

    python -m jaxcnn.bench.fullsize [--models resnet50 vgg16] [--batch 8] [--repeats 5] [--only forward|step]
                                    [--out DIR | --json PATH]

The forward pass is eval mode (batch norm on its running statistics, dropout off); the step is forward,
backward (softmax cross-entropy) and SGD with momentum, train mode, float32. Writes ``fullsize.json``.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcnn import losses, models, reference

from . import output
from .models import LEARNING_RATE, MOMENTUM, step_fn
from .timing import compare

KINDS = ("forward", "step")


def candidates(name: str, batch: int) -> dict:
    """``{"<impl> forward": f, "<impl> step": f}`` zero-argument callables for jaxcnn and autodiff."""
    factory = getattr(models, name)
    optimizer = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)
    hand, twin = factory(), factory(ops=reference)
    _, params, state = hand.init(jax.random.PRNGKey(0), (batch, 224, 224, 3))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, 224, 224, 3)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 1000, batch).astype(np.int32))
    key, opt_state = jax.random.PRNGKey(1), optimizer.init(params)
    out = {}
    for impl, model, loss in (
        ("jaxcnn", hand, losses.softmax_cross_entropy),
        ("autodiff", twin, reference.softmax_cross_entropy),
    ):
        forward = jax.jit(lambda p, s, x, m=model: m.apply(p, s, x)[0])
        step = step_fn(model, loss, optimizer)
        out[f"{impl} forward"] = lambda f=forward: f(params, state, x)
        out[f"{impl} step"] = lambda f=step: f(params, state, opt_state, x, y, key)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxcnn.bench.fullsize", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "vgg16"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", choices=KINDS, default=None, help="time only the forward passes or only the steps")
    output.add_output_arguments(parser)
    args = parser.parse_args(argv)
    rows = []
    for name in args.models:
        steps = candidates(name, args.batch)
        row, said = {"model": name, "batch": args.batch}, []
        for kind in (args.only,) if args.only else KINDS:  # the forward passes against each other, then the
            group = {k: f for k, f in steps.items() if k.endswith(kind)}  # steps (a step's memory churn would
            times = compare(group, repeats=args.repeats, warmup=1)  # otherwise land on the forward after it)
            row |= {k.replace(" ", "_") + "_ms": v for k, v in times.items()}
            hand, twin = times[f"jaxcnn {kind}"], times[f"autodiff {kind}"]
            row[f"{kind}_autodiff_over_jaxcnn"] = ratio = twin / hand
            said.append(f"{kind} jaxcnn {hand:.0f} ms, autodiff {twin:.0f} ms ({ratio:.2f}x)")
        rows.append(row)
        print(f"{name} batch {args.batch}: " + "; ".join(said), flush=True)
    meta = {**output.library_versions(), **output.machine(), "repeats": args.repeats}
    output.write_json(output.json_path(args, "fullsize"), {"meta": meta, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
