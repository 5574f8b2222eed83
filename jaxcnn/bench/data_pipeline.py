"""Data pipeline: training examples/s from an image folder (decoded once into a uint8 cache, read through a
memory map) against the in-memory Fashion-MNIST path, on the same images.

    python -m jaxcnn.bench.data_pipeline [--images 60000] [--model fashion_cnn] [--batch 128] [--steps 200]
                                         [--rounds 3] [--json PATH]

Writes the first ``--images`` training images of Fashion-MNIST (IDX files, as ``jaxcnn.data.load`` finds
them) as PNG class folders in a temporary directory, loads them as the ``folder`` dataset (timing the first
load, which decodes and caches, and the second, which reads the cache), then trains the same model on the
same examples both ways, ``--steps`` steps at a time, alternating ``--rounds`` times, and reports the median
examples/s of each (the loop's own throughput rows, the first row of each run left out as warm-up).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optax

from jaxcnn import data, models, train

from . import output


def _examples_per_s(model, ds, batch: int, steps: int) -> float:
    config = train.FitConfig(epochs=1, batch_size=batch, optimizer=optax.sgd(0.01, momentum=0.9), max_steps=steps,
                             log_every=max(steps // 5, 1), progress=False, eval_test_every_epoch=False)  # fmt: skip
    history = train.fit(model, ds, config).history
    rates = [r["examples_per_s"] for r in history if "examples_per_s" in r][1:]
    return statistics.median(rates)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxcnn.bench.data_pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60_000, help="training images written as PNGs")
    parser.add_argument("--model", default="fashion_cnn", choices=["lenet5", "fashion_cnn"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200, help="steps per timed run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both pipelines")
    output.add_output_arguments(parser)
    args = parser.parse_args(argv)
    fashion = data.load("fashion-mnist")
    x, y = fashion.x_train[: args.images], fashion.y_train[: args.images]
    test = min(1000, args.images // 10)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "fashion-png"
        start = time.perf_counter()
        data.save_folder(root, x[:-test], y[:-test], split="train")
        data.save_folder(root, x[-test:], y[-test:], split="test")
        written = time.perf_counter() - start
        start = time.perf_counter()
        folder = data.load("folder", data_dir=root, quiet=True)
        first_load = time.perf_counter() - start
        start = time.perf_counter()
        folder = data.load("folder", data_dir=root, quiet=True)
        cached_load = time.perf_counter() - start
        # the same examples in the same order (class folders, then file names), in memory as float32
        order = np.concatenate([np.flatnonzero(y[: len(x) - test] == k) for k in range(10)])
        memory = data.Dataset(x[order], y[order], x[len(x) - test :][:1], y[len(x) - test :][:1], 10, "memory")
        assert np.array_equal(folder.y_train, memory.y_train), "the folder is not in the IDX order"
        model = models.build(args.model, 10)
        rates = {"folder": [], "memory": []}
        for _ in range(args.rounds):
            for name, ds in (("memory", memory), ("folder", folder)):
                rates[name].append(_examples_per_s(model, ds, args.batch, args.steps))
        result = {
            "model": args.model, "batch": args.batch, "images": args.images, "png_write_s": round(written, 1),
            "first_load_s": round(first_load, 1), "cached_load_s": round(cached_load, 2),
            "examples_per_s": {k: round(statistics.median(v), 1) for k, v in rates.items()},
            "folder_over_memory": round(statistics.median(rates["folder"]) / statistics.median(rates["memory"]), 3),
            "rounds": rates, **output.machine(), "versions": output.library_versions(),
        }  # fmt: skip
    print(
        f"{args.images} PNGs written in {written:.1f} s; first load (decode + cache) {first_load:.1f} s, "
        f"cached load {cached_load:.2f} s; {args.model} batch {args.batch}: memory "
        f"{result['examples_per_s']['memory']:,.0f} ex/s, folder {result['examples_per_s']['folder']:,.0f} ex/s "
        f"({result['folder_over_memory']:.2f}x)",
        file=sys.stderr,
    )
    output.write_json(output.json_path(args, "data_pipeline"), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
