"""Per-example gradient norms: the time of jaxcnn.privacy's norms (per-layer rule, all ghost, all formed)
against materialising every example's gradient with ``jax.vmap(jax.grad(...))``, and of one DP-SGD step
against one ordinary step, side by side in one process.

    python -m jaxcnn.bench.privacy [--model tanh_cnn] [--weight-standardization] [--batch 512] [--repeats 7]
        [--json PATH]

Each variant's temporary memory is XLA's ``memory_analysis()`` of its compiled function.

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
            build, loss, p, state, (x, y), ghost=g
        )
    optimizer = optax.sgd(0.1)
    opt_state = optimizer.init(params)
    mask, noise_key = jnp.ones(x.shape[0], bool), jax.random.key(1)

    def vmap_step(p, x, y):  # DP-SGD as the materialised path does it: every example's gradient, clipped
        grads = jax.vmap(jax.grad(lambda p, xi, yi: loss(model.apply(p, state, xi[None], train=True)[0], yi[None])[0]),
                         in_axes=(None, 0, 0))(p, x, y)  # fmt: skip
        norms = jnp.sqrt(sum(jnp.sum(g.reshape(x.shape[0], -1) ** 2, 1) for g in jax.tree_util.tree_leaves(grads)))
        factors = jnp.minimum(1.0, 1.0 / (norms + 1e-6))
        total = jax.tree_util.tree_map(lambda g: jnp.tensordot(factors, g, 1), grads)
        noisy = privacy.add_noise(total, clip=1.0, noise_multiplier=1.0, expected_batch_size=float(x.shape[0]),
                                  noise_key=noise_key)  # fmt: skip
        return optax.apply_updates(p, optimizer.update(noisy, opt_state, p)[0])

    variants["DP-SGD step, materialised (vmap of grad)"] = vmap_step
    for method in privacy.METHODS:
        dp_step = privacy.make_dp_step(build, loss, optimizer, clip=1.0, noise_multiplier=1.0,
                                       expected_batch_size=float(x.shape[0]), method=method)  # fmt: skip
        variants[f"DP-SGD step, {method}"] = lambda p, x, y, s=dp_step: s(p, state, opt_state, x, y, mask,
                                                                         noise_key)[0]  # fmt: skip

    def plain(p, x, y):
        grads = jax.grad(lambda p: jnp.mean(loss(model.apply(p, state, x, train=True)[0], y)))(p)
        return optax.apply_updates(p, optimizer.update(grads, opt_state, p)[0])

    variants["ordinary step (mean gradient)"] = plain
    return {name: jax.jit(fn) for name, fn in variants.items()}


def _mib(size: int | None) -> float | None:
    return None if size is None else round(size / 2**20, 1)


def _rows(times: dict, memory: dict, batch: int) -> list[dict]:
    """Per variant: the median time, its ratio to the materialised norms, examples/s, temporary MiB."""
    medians = {name: statistics.median(t) if t else None for name, t in times.items()}
    base = medians["materialised (vmap of grad)"]
    rows = []
    for name, m in medians.items():
        timing = {} if m is None else {"median_ms": round(m * 1e3, 2), "vs_materialised": round(m / base, 3),
                                       "examples_per_s": round(batch / m)}  # fmt: skip
        rows.append({"variant": name, **timing, "temp_mib": _mib(memory[name])})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxcnn.bench.privacy", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default="tanh_cnn",
        choices=["tanh_cnn", "fashion_cnn", "lenet5", "mnist1d_cnn"],
        help="fashion_cnn runs without dropout (rate 0): the variants must see the same model",
    )
    parser.add_argument("--weight-standardization", action="store_true",
                        help="tanh_cnn with standardised convolution kernels (their gradients are formed)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--memory-only", action="store_true",
                        help="compile and report each variant's temporary memory without running it")  # fmt: skip
    output.add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.weight_standardization and args.model != "tanh_cnn":
        parser.error(f"--weight-standardization is a tanh_cnn option, got --model {args.model}")
    spec = models.MODELS[args.model]
    options = {"dropout": 0.0} if args.model == "fashion_cnn" else {}
    options |= {"weight_standardization": True} if args.weight_standardization else {}

    def build(ops):
        return spec.constructor(num_classes=10, ops=ops, **options)

    _, params, state = build(jaxcnn.ops).init(jax.random.key(0), (1, *spec.input_shape))
    x = jax.random.uniform(jax.random.key(2), (args.batch, *spec.input_shape), jnp.float32)
    y = jnp.arange(args.batch) % 10
    variants = _variants(build, params, state, x, y)
    memory = {}
    for name, fn in variants.items():
        analysis = fn.lower(params, x, y).compile().memory_analysis()
        memory[name] = None if analysis is None else analysis.temp_size_in_bytes
        if not args.memory_only:
            jax.block_until_ready(fn(params, x, y))  # compile
    times = {name: [] for name in variants}
    for _ in range(0 if args.memory_only else args.repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(params, x, y))
            times[name].append(time.perf_counter() - start)
    rows = _rows(times, memory, args.batch)
    for row in rows:
        timing = "" if args.memory_only else (f"{row['median_ms']:9.2f} ms  {row['vs_materialised']:.2f}x "
                                              f"{row['examples_per_s']:8,d} ex/s  ")  # fmt: skip
        print(f"{row['variant']:42s} {timing}temp {row['temp_mib']} MiB", file=sys.stderr)
    result = {"model": args.model, "weight_standardization": args.weight_standardization, "batch": args.batch,
              "repeats": args.repeats, "rows": rows,
              "times_s": times, **output.machine(), "versions": output.library_versions()}  # fmt: skip
    output.write_json(output.json_path(args, "privacy"), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
