"""Training steps on whatever accelerator JAX sees: jaxcnn against JAX autodiff and Flax, at batch 128
and 256, in float32 and bfloat16 (the ``compute_dtype`` policy: float32 parameters, bfloat16 forward and
backward passes).

    jaxcnn bench --parts accelerator [--out DIR]
    python -m jaxcnn.bench.accelerator [--models ...] [--batches 128 256] [--dtypes float32 bfloat16]
                                       [--repeats N] [--out DIR | --json PATH]

A step is forward, backward and an SGD-with-momentum update, as in :mod:`jaxcnn.bench.models`, timed
alternately per configuration (medians of ``--repeats`` rounds, every call ``block_until_ready``).
ImageNet-size models (``resnet50``, ``vgg16``) run at 224x224 against autodiff only (they have no Flax
twin). Writes ``accelerator.json`` with the device's name. With only a CPU present it measures nothing,
says so, and writes a JSON that says so (``--allow-cpu`` runs it on the CPU anyway, to try the script).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcnn import losses, models, reference, train

from . import output
from .models import LEARNING_RATE, MOMENTUM
from .timing import compare
from .twins import TWINS

SMALL = {"lenet5": (28, 28, 1), "fashion_cnn": (28, 28, 1), "resnet20": (32, 32, 3), "mobilenet_small": (28, 28, 1)}
LARGE = {"resnet50": (224, 224, 3), "vgg16": (224, 224, 3)}
DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def _zoo_step(model, loss, optimizer, compute_dtype):
    objective = train.make_objective(model, loss, compute_dtype=compute_dtype)

    def step(params, model_state, opt_state, x, y, key):
        (value, (_, new_state)), grads = jax.value_and_grad(
            lambda p: objective(p, model_state, x, y, key), has_aux=True
        )(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, opt_state, value

    return jax.jit(step)


def _flax_step(module, optimizer, compute_dtype):
    cast = lambda tree: (
        tree if compute_dtype is None else jax.tree_util.tree_map(lambda a: a.astype(compute_dtype), tree)
    )

    def step(params, batch_stats, opt_state, x, y, key):
        def loss_of(p):
            out, mutated = module.apply(
                {"params": cast(p), **batch_stats}, cast(x), train=True, rngs={"dropout": key}, mutable=["batch_stats"]
            )
            return optax.softmax_cross_entropy_with_integer_labels(out.astype(jnp.float32), y).mean(), mutated

        (value, new_stats), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, value

    return jax.jit(step)


def candidates(name: str, shape, batch: int, dtype: str) -> dict:
    """Zero-argument training steps of ``name``: jaxcnn, autodiff and (for the small models) Flax."""
    compute = DTYPES[dtype]
    optimizer = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)
    factory = getattr(models, name)
    num_classes = 1000 if name in LARGE else 10
    hand = factory(num_classes=num_classes)
    _, params, state = hand.init(jax.random.PRNGKey(0), (batch, *shape))
    rng = np.random.default_rng(0)
    x = jax.device_put(rng.standard_normal((batch, *shape)).astype(np.float32))
    y = jax.device_put(rng.integers(0, num_classes, batch).astype(np.int32))
    key = jax.random.PRNGKey(1)
    args = (params, state, optimizer.init(params), x, y, key)
    steps = {
        "jaxcnn": _zoo_step(hand, losses.softmax_cross_entropy, optimizer, compute),
        "autodiff": _zoo_step(
            factory(num_classes=num_classes, ops=reference), reference.softmax_cross_entropy, optimizer, compute
        ),
    }
    out = {impl: (lambda f=f: f(*args)) for impl, f in steps.items()}
    if name in TWINS:
        from . import flax_models

        module = flax_models.make(name)
        template = module.init(jax.random.PRNGKey(0), x[:2], train=False)
        variables = flax_models.params_from_jaxcnn(template, params, state)
        stats = {"batch_stats": variables["batch_stats"]} if "batch_stats" in variables else {}
        flax_args = (variables["params"], stats, optimizer.init(variables["params"]), x, y, key)
        flax_step = _flax_step(module, optimizer, compute)
        out["flax"] = lambda: flax_step(*flax_args)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxcnn.bench.accelerator", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted({**SMALL, **LARGE}), default=[*SMALL, *LARGE])
    parser.add_argument("--batches", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--quick", action="store_true", help="lenet5 at batch 128 only, 3 repeats")
    parser.add_argument("--allow-cpu", action="store_true", help="measure even when only a CPU is present")
    output.add_output_arguments(parser)
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    meta = {**output.library_versions(), **output.machine(), "platform": device.platform,
            "device": getattr(device, "device_kind", str(device)), "device_count": jax.device_count()}  # fmt: skip
    path = output.json_path(args, "accelerator")
    if device.platform == "cpu" and not args.allow_cpu:
        reason = f"only a CPU is present ({meta['device']}): nothing was measured"
        print(f"jaxcnn bench accelerator: {reason}; run it where JAX sees a GPU or TPU", flush=True)
        output.write_json(path, {"meta": {**meta, "measured": False, "reason": reason}, "rows": []})
        return 0
    names = ["lenet5"] if args.quick else args.models
    batches = [128] if args.quick else args.batches
    repeats = 3 if args.quick else args.repeats
    rows = []
    for name in names:
        shape = {**SMALL, **LARGE}[name]
        for batch in batches:
            for dtype in args.dtypes:
                times = compare(candidates(name, shape, batch, dtype), repeats=repeats)
                row = {"model": name, "batch": batch, "dtype": dtype, **{f"{k}_ms": v for k, v in times.items()}}
                row["autodiff_over_jaxcnn"] = times["autodiff"] / times["jaxcnn"]
                rows.append(row)
                cells = "  ".join(f"{k} {v:.2f} ms" for k, v in times.items())
                ratio = row["autodiff_over_jaxcnn"]
                print(f"{name:16s} batch {batch:4d} {dtype:9s} {cells}  autodiff/jaxcnn {ratio:.2f}x", flush=True)
    output.write_json(path, {"meta": {**meta, "measured": True, "repeats": repeats}, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
