"""Per-example gradient norms: the time of jaxcnn.privacy's norms (per-layer rule, all ghost, all formed)
against materialising every example's gradient with ``jax.vmap(jax.grad(...))``, and of one DP-SGD step
against one ordinary step, side by side in one process.

    python -m jaxcnn.bench.privacy [--model dp_cnn] [--batch 512] [--repeats 7] [--json PATH]

Each variant is compiled first, then the variants run in turn ``--repeats`` times (so a noisy machine
slows them alike); the median of each is reported, with its ratio to the materialised gradients.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax

import jaxcnn

from .. import models, privacy
from . import output


def _variants(build, params, state, x, y):
    model = build(jaxcnn.ops)
    loss = privacy.per_example_cross_entropy

    def materialised(params, x, y):
        def one(p, xi, yi):
            return loss(model.apply(p, state, xi[None], train=True)[0], yi[None])[0]

        grads = jax.vmap(jax.grad(one), in_axes=(None, 0, 0))(params, x, y)
        return jnp.sqrt(sum(jnp.sum(g.reshape(x.shape[0], -1) ** 2, 1) for g in jax.tree_util.tree_leaves(grads)))

    variants = {"materialised (vmap of grad)": materialised}
    for ghost in privacy.GHOST:
        variants[f"norms, ghost={ghost}"] = lambda p, x, y, g=ghost: privacy.per_example_grad_norms(
            build, loss, p, state, x, y, ghost=g
        )
    optimizer = optax.sgd(0.1)
    opt_state = optimizer.init(params)
    dp_step = privacy.make_dp_step(build, loss, optimizer, clip=1.0, noise_multiplier=1.0,
                                   expected_batch_size=float(x.shape[0]))  # fmt: skip
    mask, noise_key = jnp.ones(x.shape[0], bool), jax.random.key(1)
    variants["DP-SGD step (norms, clipped sum, noise)"] = lambda p, x, y: dp_step(p, state, opt_state, x, y, mask,
                                                                                  noise_key)[0]  # fmt: skip

    def plain(p, x, y):
        grads = jax.grad(lambda p: jnp.mean(loss(model.apply(p, state, x, train=True)[0], y)))(p)
        return optax.apply_updates(p, optimizer.update(grads, opt_state, p)[0])

    variants["ordinary step (mean gradient)"] = plain
    return {name: jax.jit(fn) for name, fn in variants.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxcnn.bench.privacy", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dp_cnn", choices=["dp_cnn", "lenet5", "mnist1d_cnn"])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    output.add_output_arguments(parser)
    args = parser.parse_args(argv)
    spec = models.MODELS[args.model]

    def build(ops):
        return spec.constructor(num_classes=10, ops=ops)

    _, params, state = build(jaxcnn.ops).init(jax.random.key(0), (1, *spec.input_shape))
    x = jax.random.uniform(jax.random.key(2), (args.batch, *spec.input_shape), jnp.float32)
    y = jnp.arange(args.batch) % 10
    variants = _variants(build, params, state, x, y)
    for fn in variants.values():
        jax.block_until_ready(fn(params, x, y))  # compile
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(params, x, y))
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = medians["materialised (vmap of grad)"]
    rows = [{"variant": name, "median_ms": round(m * 1e3, 2), "vs_materialised": round(m / base, 3)}
            for name, m in medians.items()]  # fmt: skip
    for row in rows:
        print(f"{row['variant']:42s} {row['median_ms']:9.2f} ms  {row['vs_materialised']:.2f}x", file=sys.stderr)
    result = {"model": args.model, "batch": args.batch, "repeats": args.repeats, "rows": rows,
              "times_s": times, **output.machine(), "versions": output.library_versions()}  # fmt: skip
    output.write_json(output.json_path(args, "privacy"), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
