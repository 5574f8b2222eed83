"""Weights in and out, end to end on real data: pretrain ResNet-18 on five Fashion-MNIST classes, export it as
torchvision weights, fine-tune it on the other five classes with a frozen backbone and 10% of their labels,
and compare with the same model trained from scratch on those labels.

    python experiments/finetune_fashion.py [--pretrain-epochs 3] [--epochs 10] [--out runs/experiments/finetune]

Every step is the command line (``jaxcnn train`` / ``jaxcnn export``, through ``jaxcnn.cli.main``) on
``.npz`` files this script writes: the grey images repeated to three channels (torchvision's ResNet-18
has RGB input), classes 0-4 ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat") for pretraining and
5-9 ("Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot", labelled 0-4) for the new task, of which a seeded,
stratified 10% of the training images (3,000) keep their labels. Each run holds 10% of its training set out
for validation, which picks its best epoch; the test set (the 5,000 test images of those classes) is read
once at the end. Results go to ``experiments/results/finetune_fashion.json``.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from jaxcnn import data
from jaxcnn.cli import main

RESULTS = Path(__file__).resolve().parent / "results"


def write_npz(path: Path, fashion, classes, fraction: float = 1.0, seed: int = 0) -> int:
    """The examples of ``classes`` (relabelled 0, 1, ...) as uint8 RGB in an .npz; ``fraction`` of the
    training images, stratified. Returns the number of training images."""
    arrays = {}
    for split in ("train", "test"):
        x, y = getattr(fashion, f"x_{split}"), getattr(fashion, f"y_{split}")
        rows = np.flatnonzero(np.isin(y, classes))
        if split == "train" and fraction < 1:
            rows = rows[data.validation_split(y[rows], 1 - fraction, seed)[0]]
        pixels = np.rint(x[rows] * 255).astype(np.uint8)
        arrays[f"x_{split}"] = np.repeat(pixels, 3, axis=-1)
        arrays[f"y_{split}"] = np.searchsorted(classes, y[rows]).astype(np.int32)
    np.savez(path, **arrays)
    return len(arrays["x_train"])


def train(*args: str) -> tuple[dict, float]:
    start = time.perf_counter()
    assert main(["train", "--model", "resnet18", "--no-plots", *args]) == 0
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "summary.json").read_text()), time.perf_counter() - start


def main_(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the fine-tuning and scratch runs")
    parser.add_argument("--out", default="runs/experiments/finetune")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fashion = data.load("fashion-mnist")
    first, second = np.arange(5), np.arange(5, 10)
    n_first = write_npz(out / "first.npz", fashion, first)
    n_second = write_npz(out / "second10.npz", fashion, second, fraction=0.1)
    common = ["--dataset", "npz", "--batch-size", "128", "--optimizer", "adam", "--schedule", "cosine"]
    pretrained, pretrain_s = train(*common, "--data-dir", str(out / "first.npz"), "--epochs", str(args.pretrain_epochs),
                                   "--lr", "1e-3", "--out", str(out / "pretrain"))  # fmt: skip
    weights = out / "resnet18-first5.safetensors"
    assert (
        main(["export", "--checkpoint", str(out / "pretrain"), "--format", "torchvision", "--out", str(weights)]) == 0
    )
    second_args = [*common, "--data-dir", str(out / "second10.npz"), "--epochs", str(args.epochs)]
    finetuned, finetune_s = train(*second_args, "--lr", "1e-3", "--weights", str(weights), "--freeze", "backbone",
                                  "--preprocessing", "none", "--out", str(out / "finetune"))  # fmt: skip
    scratch, scratch_s = train(*second_args, "--lr", "1e-3", "--out", str(out / "scratch"))
    record = {
        "pretrain": {"images": n_first, "epochs": args.pretrain_epochs, "wall_s": round(pretrain_s, 1),
                     "test_accuracy": pretrained["best_test_accuracy"]},
        "second_task_images": n_second,
        "finetune_frozen_backbone": {"test_accuracy": finetuned["best_test_accuracy"],
                                     "last_test_accuracy": finetuned["test_accuracy"],
                                     "best_epoch": finetuned["best_epoch"], "wall_s": round(finetune_s, 1)},
        "scratch": {"test_accuracy": scratch["best_test_accuracy"], "last_test_accuracy": scratch["test_accuracy"],
                    "best_epoch": scratch["best_epoch"], "wall_s": round(scratch_s, 1)},
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "finetune_fashion.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main_())
