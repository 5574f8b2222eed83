"""Time to accuracy: how long ``jaxcnn train`` and PyTorch take to reach a test accuracy on Fashion-MNIST
with the same recipe, one run after the other on the same machine.

    python -m jaxcnn.bench.time_to_accuracy [--seeds 0 1 2] [--epochs 6] [--target 0.915]
        [--dtype float32] [--sides jaxcnn torch] [--torch-init default] [--out DIR | --json PATH]

The recipe (issue 21's): fashion_cnn (conv 32@5x5, pool, conv 64@5x5, pool, dense 1024, dropout 0.5),
Adam with learning rate 1e-3 and cosine decay to 0 over all steps, batch 128, the 60,000 training images
in a fresh shuffled order each epoch (the last partial batch dropped), the 10,000 test images evaluated at
each epoch's end. Both sides read the same arrays (``jaxcnn.data.load("fashion-mnist")``: uint8 / 255).

- **jaxcnn**: the command line, in its own process, as a user runs it (its XLA:CPU route included):
  ``jaxcnn train --model fashion_cnn --dataset fashion-mnist --epochs 6 --optimizer adam --lr 1e-3
  --schedule cosine --batch-size 128 --val-fraction 0 --eval-test-every-epoch``; the curve is read from
  ``metrics.jsonl`` (each epoch row's ``time_s``: the training time so far, compilation included,
  evaluation excluded).
- **PyTorch** (an optional oracle: ``pip install torch==2.13.0``): eager mode, channels-last, the twin of
  :mod:`jaxcnn.bench.torch_models` with PyTorch's own default initialisation (``--torch-init he`` gives it
  jaxcnn's He-normal instead), ``CosineAnnealingLR`` stepped per batch, the same timing rule.

The seeds run in turn, jaxcnn then PyTorch for each, so a change in the machine's load shows in both.
Writes ``time_to_accuracy.json`` (every curve, the time each run first reached ``--target``, the medians,
the machine and versions) and ``time_to_accuracy.png`` (test accuracy against training time).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPE = {"model": "fashion_cnn", "batch_size": 128, "lr": 1e-3, "schedule": "cosine", "dropout": 0.5}


def time_to(curve: list[dict], target: float) -> float | None:
    """The training time of the first epoch whose test accuracy is at least ``target`` (None: never)."""
    return next((point["time_s"] for point in curve if point["test_accuracy"] >= target), None)


def median_time(times: list[float | None]) -> float | None:
    """The median time to the target of a side's runs, a run that never reached it (None) counting as
    later than any that did; None when the median itself is such a run (half or more never reached it)."""
    ordered = sorted(times, key=lambda t: math.inf if t is None else t)
    middle = ordered[(len(ordered) - 1) // 2 : len(ordered) // 2 + 1]
    return None if not middle or None in middle else statistics.median(middle)


def jaxcnn_run(seed: int, epochs: int, dtype: str) -> dict:
    """One ``jaxcnn train`` run in its own process; its per-epoch curve."""
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable, "-m", "jaxcnn", "train", "--model", RECIPE["model"], "--dataset", "fashion-mnist",
            "--epochs", str(epochs), "--optimizer", "adam", "--lr", str(RECIPE["lr"]), "--schedule",
            RECIPE["schedule"], "--batch-size", str(RECIPE["batch_size"]), "--val-fraction", "0",
            "--eval-test-every-epoch", "--seed", str(seed), "--dtype", dtype, "--no-plots", "--out", out,
        ]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"jaxcnn train failed: {done.stderr.strip()[-2000:]}")
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
        summary = json.loads((Path(out) / "summary.json").read_text())
    curve = [{"epoch": r["epoch"], "time_s": r["time_s"], "test_accuracy": r["test_accuracy"]}
             for r in rows if "test_accuracy" in r]  # fmt: skip
    return {"side": "jaxcnn", "seed": seed, "dtype": dtype, "curve": curve, "process_wall_s": round(wall, 1),
            "xla_flags": summary["environment"]["xla_flags"]}  # fmt: skip


def torch_worker(seed: int, epochs: int, init: str) -> dict:
    """One PyTorch run in this process: the recipe, eager, channels-last."""
    import numpy as np
    import torch

    from .. import data
    from .torch_models import make

    torch.manual_seed(seed)
    fashion = data.load("fashion-mnist")
    to_nchw = lambda a: torch.from_numpy(np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2)))  # noqa: E731
    x_train = to_nchw(fashion.x_train).contiguous(memory_format=torch.channels_last)
    x_test = to_nchw(fashion.x_test).contiguous(memory_format=torch.channels_last)
    y_train, y_test = torch.from_numpy(fashion.y_train.astype(np.int64)), torch.from_numpy(fashion.y_test)
    net = make(RECIPE["model"], (28, 28, 1))
    if init == "default":
        for module in net.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.reset_parameters()
    net = net.to(memory_format=torch.channels_last)
    batch = RECIPE["batch_size"]
    steps_per_epoch = len(y_train) // batch
    optimizer = torch.optim.Adam(net.parameters(), lr=RECIPE["lr"])
    total = epochs * steps_per_epoch
    cosine = lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total) / total))  # noqa: E731  (optax's, alpha 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    generator = torch.Generator().manual_seed(seed)
    curve, training, evaluating, start = [], 0.0, 0.0, time.perf_counter()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(y_train), generator=generator)
        for step in range(steps_per_epoch):
            rows = order[step * batch : (step + 1) * batch]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(x_train[rows]), y_train[rows])
            loss.backward()
            optimizer.step()
            scheduler.step()
        training = time.perf_counter() - start - evaluating
        eval_start = time.perf_counter()
        net.eval()
        with torch.no_grad():
            correct = sum(int((net(x_test[i : i + 1000]).argmax(1) == y_test[i : i + 1000]).sum())
                          for i in range(0, len(y_test), 1000))  # fmt: skip
        evaluating += time.perf_counter() - eval_start
        curve.append({"epoch": float(epoch + 1), "time_s": round(training, 3), "test_accuracy": correct / len(y_test)})
    return {"side": "torch", "seed": seed, "init": init, "curve": curve, "threads": torch.get_num_threads(),
            "torch": torch.__version__}  # fmt: skip


def torch_run(seed: int, epochs: int, init: str) -> dict:
    command = [sys.executable, "-m", "jaxcnn.bench.time_to_accuracy", "--torch-worker", "--seeds", str(seed),
               "--epochs", str(epochs), "--torch-init", init]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the PyTorch run failed: {done.stderr.strip()[-2000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process_wall_s": round(time.perf_counter() - start, 1)}


def _cpu() -> dict:
    """The CPU's model name and whether it has AVX512_BF16 (Linux's /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), None)
    return {"cpu_model": model, "avx512_bf16": "avx512_bf16" in text}


def _plot(runs: list[dict], target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {"jaxcnn": "tab:blue", "torch": "tab:orange"}
    for run in runs:
        curve = run["curve"]
        label = f"{run['side']} seed {run['seed']}"
        ax.plot([p["time_s"] for p in curve], [p["test_accuracy"] for p in curve], "o-", color=colours[run["side"]],
                alpha=0.8, label=label)  # fmt: skip
    ax.axhline(target, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("training time (s; compilation included, evaluation excluded)")
    ax.set_ylabel("test accuracy")
    ax.set_title("fashion_cnn on Fashion-MNIST, Adam 1e-3 cosine, batch 128")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    from . import output

    parser = argparse.ArgumentParser(prog="python -m jaxcnn.bench.time_to_accuracy",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--target", type=float, default=0.915, help="the test accuracy to reach (default 0.915)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="jaxcnn's --dtype")
    parser.add_argument("--sides", nargs="+", choices=["jaxcnn", "torch"], default=["jaxcnn", "torch"])
    parser.add_argument("--torch-init", choices=["default", "he"], default="default",
                        help="PyTorch's own default initialisation, or jaxcnn's He-normal")  # fmt: skip
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    output.add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.torch_worker:
        print(json.dumps(torch_worker(args.seeds[0], args.epochs, args.torch_init)))
        return 0
    runs = []
    for seed in args.seeds:
        for side in args.sides:
            if side == "jaxcnn":
                run = jaxcnn_run(seed, args.epochs, args.dtype)
            else:
                run = torch_run(seed, args.epochs, args.torch_init)
            run["time_to_target_s"] = time_to(run["curve"], args.target)
            print(json.dumps({k: v for k, v in run.items() if k != "curve"}), file=sys.stderr, flush=True)
            runs.append(run)
    medians = {}
    for side in args.sides:
        times = [r["time_to_target_s"] for r in runs if r["side"] == side]
        medians[side] = median_time(times)
        finals = [r["curve"][-1]["test_accuracy"] for r in runs if r["side"] == side]
        print(f"{side:6s}: time to {args.target:.1%}: {times} (median {medians[side]}), final accuracy {finals}",
              file=sys.stderr)  # fmt: skip
    result = {"recipe": {**RECIPE, "epochs": args.epochs}, "target": args.target, "dtype": args.dtype,
              "torch_init": args.torch_init, "runs": runs, "median_time_to_target_s": medians,
              **output.machine(), **_cpu(), "versions": output.library_versions()}  # fmt: skip
    path = output.json_path(args, "time_to_accuracy")
    output.write_json(path, result)
    _plot(runs, args.target, Path(path).with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
