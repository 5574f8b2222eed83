"""DP-SGD as it is published, on Fashion-MNIST: Tramer & Boneh's end-to-end CNN and recipe (2021,
"Differentially Private Learning Needs Better Features"), with Poisson sampling,
per-example norms from the hand-derived VJPs (jaxcnn.privacy: no per-example gradient is formed) and
dp-accounting's PLD accountant.

    python experiments/dpsgd_fashion.py [--epochs 40] [--batch 2048] [--lr 4] [--clip 0.1] [--sigma 2.15]
                                        [--seeds 0 1 2]

Each step samples every training example independently with probability q = batch / 60,000 (a fixed
capacity with a mask), clips each example's gradient to norm C, adds N(0, sigma^2 C^2) to the sum,
divides by the expected batch q N, and takes an SGD step with momentum 0.9. The recipe is the paper's;
nothing is chosen here, so all 60,000 training images are used and the test set is read once, at the end.
They report 86.0% at epsilon = 3 (delta = 1e-5) by their accounting; the PLD accountant gives about 2.4
for the same run. Results (each seed's, and the mean) go to ``experiments/results/dpsgd_fashion.json``.

``--augmult K`` (with ``--crop-pad``, ``--flip``) draws K augmentations of every sampled example and clips
the mean of their gradients (De et al., 2022's augmentation multiplicity; the same privacy cost). ``--ws 1``
standardises both convolutions' kernels (weight standardisation, also De et al.'s). Several values of these
or of ``--clip`` and ``--lr`` (with ``--val``) train once per combination; the validation split chooses among
all of their parameters.
"""

import argparse
import functools
import itertools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcnn import data, models, privacy

RESULTS = Path(__file__).resolve().parent / "results"
AUGMENT = 0xA06  # the fold_in tag of a step's augmentation key (apart from its sample and noise keys)


def builder(ws: int):
    """The model on an ops namespace: tanh_cnn, with weight standardisation where ``ws``."""
    return lambda ops: models.tanh_cnn(weight_standardization=bool(ws), ops=ops)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=40)
    parser.add_argument("--batch", type=int, default=2048, help="expected batch size q N")
    parser.add_argument("--lr", type=float, nargs="+", default=[4.0], help="several: one training each")
    parser.add_argument("--clip", type=float, nargs="+", default=[0.1], help="C (several: one training each)")
    parser.add_argument("--sigma", type=float, default=2.15, help="noise multiplier")
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run per seed, one after another")
    parser.add_argument("--target-epsilon", type=float, help="calibrate sigma to spend exactly this (PLD)")
    parser.add_argument(
        "--ema",
        type=float,
        nargs="*",
        default=[],
        help="also keep these exponential moving averages of the parameters (a post-processing: "
        "no privacy cost); the validation split chooses among them and the raw parameters",
    )
    parser.add_argument(
        "--val",
        type=float,
        default=0.0,
        help="fraction of the training set held out for validation (stratified, from the seed)",
    )
    parser.add_argument(
        "--augmult",
        type=int,
        nargs="+",
        default=[0],
        help="augmentation multiplicity (De et al., 2022): K random crops/flips of every sampled example, "
        "whose mean gradient is clipped (0: no augmentation); several values (with --val): one training "
        "each, the validation split chooses",
    )
    parser.add_argument(
        "--ws",
        type=int,
        nargs="+",
        choices=[0, 1],
        default=[0],
        help="weight standardisation of the convolutions (1) or not (0); both (with --val): one training each",
    )
    parser.add_argument("--crop-pad", type=int, default=2, help="with --augmult: translations of up to this")
    parser.add_argument("--flip", action="store_true", help="with --augmult: random horizontal flips too")
    parser.add_argument("--name", default="dpsgd_fashion", help="results file experiments/results/NAME.json")
    args = parser.parse_args(argv)
    if args.ema and not args.val:
        parser.error("--ema needs --val: the validation split chooses among the averages")
    if len(_settings(args)) > 1 and not args.val:
        parser.error("several --augmult, --ws, --clip or --lr values need --val: the validation split chooses")
    fashion = data.load("fashion-mnist")
    runs = [run(args, seed, fashion) for seed in args.seeds]
    accuracies = [r["test_accuracy"] for r in runs]
    summary = {"seeds": args.seeds, "test_accuracy_mean": float(np.mean(accuracies)), "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))
    return 0


def _split(fashion, fraction: float, seed: int):
    """The training arrays, and the held-out validation arrays (None without ``--val``)."""
    if not fraction:
        return (fashion.x_train, fashion.y_train), None
    train_rows, val_rows = data.validation_split(fashion.y_train, fraction, seed)
    return (fashion.x_train[train_rows], fashion.y_train[train_rows]), (fashion.x_train[val_rows],
                                                                        fashion.y_train[val_rows])  # fmt: skip


def run(args, seed: int, fashion) -> dict:
    """One seed: train once per setting (``--augmult``, ``--ws``, ``--clip``; on all 60,000 images, or all but
    ``--val``), choose among the raw parameters and their averages of every training on the validation split,
    then read the test set once, for the chosen parameters."""
    (x_np, y_np), val = _split(fashion, args.val, seed)
    trainings = [train(args, seed, setting, jnp.asarray(x_np), jnp.asarray(y_np)) for setting in _settings(args)]
    candidates = {name: c for t in trainings for name, c in t.pop("candidates").items()}  # name -> (ws, params)
    predict = {ws: _predictor(builder(ws)) for ws in args.ws}
    accuracy_of = lambda name, x, y: float(jnp.mean(predict[candidates[name][0]](candidates[name][1], x) == y))  # noqa: E731
    val_accuracy = {}
    if val is not None:  # the validation split chooses; the test set is read once, for the chosen parameters
        val_accuracy = {name: accuracy_of(name, jnp.asarray(val[0]), jnp.asarray(val[1])) for name in candidates}
    chosen = max(val_accuracy, key=val_accuracy.get) if val_accuracy else next(iter(candidates))
    accuracy = accuracy_of(chosen, jnp.asarray(fashion.x_test), jnp.asarray(fashion.y_test))
    record = {"seed": seed, "model": "tanh_cnn", **trainings[0], "val_accuracy": val_accuracy, "chosen": chosen,
              "test_accuracy": accuracy, **({"trainings": trainings} if len(trainings) > 1 else {}),
              "paper": "86.0% at epsilon 3 (Tramer & Boneh 2021, their accounting)"}  # fmt: skip
    print(json.dumps({k: v for k, v in record.items() if k != "trainings"}, indent=1), flush=True)
    return record


def _predictor(build):
    """``(params, x) -> predicted classes`` of the model ``build`` makes (jitted; tanh_cnn has no state)."""
    model = build(__import__("jaxcnn").ops)
    state = model.init(jax.random.key(0), (1, 28, 28, 1))[2]
    return jax.jit(lambda p, x: jnp.argmax(model.apply(p, state, x)[0], -1))


def _settings(args) -> list[dict]:
    """Every combination of the ``--augmult``, ``--ws``, ``--clip`` and ``--lr`` values: one training each."""
    names = ("augmult", "ws", "clip", "lr")
    return [dict(zip(names, values)) for values in itertools.product(*(getattr(args, name) for name in names))]


def train(args, seed: int, setting: dict, x_train, y_train) -> dict:
    """One DP-SGD training of ``setting`` (augmult, ws, clip, lr): its record (with ``train_wall_s``) and its
    candidates (``ws`` and the raw parameters or one of their averages), named after the setting's values
    where more than one is trained."""
    augmult, ws, clip, lr = setting["augmult"], setting["ws"], setting["clip"], setting["lr"]
    n = len(y_train)
    q = args.batch / n
    steps = round(args.epochs * n / args.batch)
    sigma = args.sigma if args.target_epsilon is None else privacy.calibrate_noise(args.target_epsilon, q, steps,
                                                                                  args.delta)  # fmt: skip
    capacity = privacy.poisson_capacity(n, q)
    build = builder(ws)
    model = build(__import__("jaxcnn").ops)
    _, params, state = model.init(jax.random.key(seed), (1, 28, 28, 1))
    optimizer = optax.sgd(lr, momentum=0.9)
    opt_state = optimizer.init(params)
    step = privacy.make_dp_step(build, privacy.per_example_cross_entropy, optimizer, clip=clip,
                                noise_multiplier=sigma, expected_batch_size=q * n,
                                augmult=max(augmult, 1))  # fmt: skip
    views = jax.jit(lambda key, x: privacy.augmented_views(
        key, x, functools.partial(data.augment, crop_pad=args.crop_pad, flip=args.flip), augmult))  # fmt: skip
    average = jax.jit(lambda avgs, p: [optax.incremental_update(p, avg, 1 - d) for d, avg in zip(args.ema, avgs)])
    averages = [params] * len(args.ema)
    sample = jax.jit(lambda key: privacy.poisson_batch(key, n, q, capacity))
    print(f"tanh_cnn, seed {seed}, augmult {augmult}, ws {ws}, {steps} steps at q = {q:.5f} (expected batch "
          f"{args.batch}, capacity {capacity}), C = {clip}, sigma = {sigma:.4f}, SGD lr {lr} momentum 0.9",
          flush=True)  # fmt: skip
    key = jax.random.key(seed + 1)
    start, sizes = time.perf_counter(), []
    for t in range(steps):
        sample_key, noise_key = jax.random.split(jax.random.fold_in(key, t))
        indices, mask, size = sample(sample_key)
        x, y = x_train[indices], y_train[indices]
        if augmult:  # each example's views in consecutive rows
            x, y = views(jax.random.fold_in(jax.random.fold_in(key, t), AUGMENT), x), jnp.repeat(y, augmult)
        params, opt_state, norms = step(params, state, opt_state, x, y, mask, noise_key)
        averages = average(averages, params) if args.ema else averages
        sizes.append(size)
        if (t + 1) % max(steps // 10, 1) == 0:
            print(f"step {t + 1}/{steps}: median norm {float(jnp.median(norms)):.3f}, mean batch "
                  f"{np.mean(sizes[-10:]):.0f}, {time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
    train_s = time.perf_counter() - start
    sizes = np.asarray(sizes)
    varied = [(name, value) for name, value in setting.items() if len(getattr(args, name)) > 1]
    prefix = "".join(f"{name} {value} " for name, value in varied)
    candidates = {f"{prefix}raw": (ws, params), **{f"{prefix}ema {d}": (ws, avg) for d, avg in zip(args.ema, averages)}}
    return {
        "params": models.count_params(params), "train_examples": n, "steps": steps, "sampling_rate": q,
        "expected_batch": args.batch, "capacity": capacity, "batches_over_capacity": int(np.sum(sizes > capacity)),
        "mean_batch": float(sizes.mean()), "clip": clip, "noise_multiplier": sigma, "lr": lr,
        "delta": args.delta, "augmult": augmult, "weight_standardization": bool(ws),
        **({"crop_pad": args.crop_pad, "flip": args.flip} if augmult else {}),
        "epsilon_pld": privacy.epsilon(sigma, q, steps, args.delta),
        "epsilon_rdp": privacy.epsilon(sigma, q, steps, args.delta, accountant="rdp"),
        "train_wall_s": round(train_s, 1), "candidates": candidates,
    }  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
