"""Which initialisation should fashion_cnn start from? He-normal kernels and zero biases (jaxcnn's
default) against PyTorch's default uniform init for both (what the same network written in PyTorch starts
from), chosen on a validation split -- issue 21's time-to-accuracy recipe otherwise unchanged.

    python experiments/fashion_cnn_init.py [--epochs 6] [--seeds 0]

The recipe of ``jaxcnn.bench.time_to_accuracy`` (Adam 1e-3 with cosine decay over the run, batch 128,
dropout 0.5) on 54,000 training images, 6,000 (10%, stratified) held out; the test set is not read. Runs
under the command line's XLA:CPU route. Writes ``experiments/results/fashion_cnn_init.json``: each epoch's
validation accuracy per initialisation and seed.
"""

import argparse
import json
import time
from pathlib import Path

from jaxcnn import xla_cpu

xla_cpu.prefer_xla_cpu_convolutions()  # before JAX starts, as jaxcnn train does

import optax  # noqa: E402

from jaxcnn import data, models, train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
INITS = {"he_normal": dict(kernel_init="he_normal", bias_init="zeros"),
         "pytorch_default": dict(kernel_init="pytorch_default", bias_init="pytorch_default")}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args(argv)
    fashion = data.load("fashion-mnist")
    train_rows, val_rows = data.validation_split(fashion.y_train, 0.1, seed=0)
    x_val, y_val = fashion.x_train[val_rows], fashion.y_train[val_rows]
    # the validation images stand in for the test split too, so that fit's final evaluation reads no test image
    split = fashion._replace(x_train=fashion.x_train[train_rows], y_train=fashion.y_train[train_rows],
                             x_val=x_val, y_val=y_val, x_test=x_val, y_test=y_val)  # fmt: skip
    steps = args.epochs * (len(train_rows) // 128)
    runs = []
    for seed in args.seeds:
        for name, init in INITS.items():
            start = time.perf_counter()
            result = train.fit(models.fashion_cnn(**init), split, epochs=args.epochs, batch_size=128,
                               optimizer=optax.adam(optax.cosine_decay_schedule(1e-3, steps)), seed=seed,
                               progress=False, eval_test_every_epoch=False)  # fmt: skip
            curve = [row["val_accuracy"] for row in result.history if "val_accuracy" in row]
            runs.append({"init": name, "seed": seed, "val_accuracy": curve,
                         "wall_s": round(time.perf_counter() - start, 1)})  # fmt: skip
            print(json.dumps(runs[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fashion_cnn_init.json").write_text(json.dumps({"epochs": args.epochs, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
