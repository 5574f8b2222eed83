"""Model level: one training step (forward, backward, SGD-momentum update) of each zoo model at batch 128,
jaxcnn's hand-derived VJPs vs the same network built on `jaxcnn.reference` (pure JAX autodiff).

    python -m benchmarks.models [--quick] [--repeats N] [--models lenet5 fashion_cnn ...] [--json PATH]

Both steps are jitted, share parameters and data, and are timed alternately in one process; the ratio
autodiff / jaxcnn > 1 means the hand-derived step is faster. (Flax and PyTorch comparisons: issue 6.)
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcnn import losses, models, reference

from .timing import compare

MODELS = {
    "lenet5": ((28, 28, 1), models.lenet5),
    "fashion_cnn": ((28, 28, 1), models.fashion_cnn),
    "resnet20": ((32, 32, 3), models.resnet20),
    "mobilenet_small": ((28, 28, 1), models.mobilenet_small),
    "mnist1d_cnn": ((40, 1), models.mnist1d_cnn),
}


def step_fn(model, loss, optimizer):
    def step(params, model_state, opt_state, x, y, key):
        def loss_of(p):
            out, new_state = model.apply(p, model_state, x, key=key, train=True)
            return loss(out, y), new_state

        (value, new_state), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, opt_state, value

    return jax.jit(step)


def bench_model(name: str, batch: int, repeats: int) -> dict:
    shape, factory = MODELS[name]
    hand, auto = factory(), factory(ops=reference)
    optimizer = optax.sgd(0.01, momentum=0.9)
    _, params, model_state = hand.init(jax.random.PRNGKey(0), (batch, *shape))
    opt_state = optimizer.init(params)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, *shape)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, batch))
    key = jax.random.PRNGKey(1)
    steps = {
        "jaxcnn": step_fn(hand, losses.softmax_cross_entropy, optimizer),
        "autodiff": step_fn(auto, reference.softmax_cross_entropy, optimizer),
    }
    times = compare(
        {k: (lambda f=f: f(params, model_state, opt_state, x, y, key)) for k, f in steps.items()}, repeats=repeats
    )
    return {
        "model": name,
        "batch": batch,
        "jaxcnn_ms": times["jaxcnn"],
        "autodiff_ms": times["autodiff"],
        "speedup": times["autodiff"] / times["jaxcnn"],
        "jaxcnn_examples_per_s": batch / times["jaxcnn"] * 1e3,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.models", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="lenet5 and mnist1d_cnn only, 5 repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    names = ["lenet5", "mnist1d_cnn"] if args.quick else args.models
    repeats = args.repeats or (5 if args.quick else 11)
    rows = []
    print(f"| model (batch {args.batch}) | jaxcnn step ms | autodiff step ms | autodiff / jaxcnn | jaxcnn examples/s |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        r = bench_model(name, args.batch, repeats)
        rows.append(r)
        print(
            f"| {name} | {r['jaxcnn_ms']:.1f} | {r['autodiff_ms']:.1f} | {r['speedup']:.2f}x | "
            f"{r['jaxcnn_examples_per_s']:,.0f} |",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"jax": jax.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
