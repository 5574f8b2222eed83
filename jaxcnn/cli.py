"""The ``jaxcnn`` command: ``train``, ``eval``, ``gradcheck`` and ``bench``.

Bad flags and values end with a one-line ``jaxcnn <command>: error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence

__all__ = ["main"]


def _fmt(err: float) -> str:
    return "n/a" if math.isnan(err) else f"{err:.1e}"


def gradcheck_command(args: argparse.Namespace) -> int:
    from . import gradcheck

    cases = gradcheck.default_cases()
    if args.op:
        unknown = sorted(set(args.op) - {c.op for c in cases})
        if unknown:
            valid = ", ".join(sorted({c.op for c in cases}))
            print(f"jaxcnn gradcheck: unknown op {unknown[0]!r}; valid ops: {valid}", file=sys.stderr)
            return 2
        cases = [c for c in cases if c.op in args.op]
    start = time.perf_counter()
    rows: dict[str, list] = {}
    failures = []
    for case in cases:
        report = gradcheck.run_case(case, seed=args.seed)
        rows.setdefault(case.op, []).append(report)
        if not report.ok:
            failures.append((case, report))
        if args.verbose:
            print(f"  {'ok  ' if report.ok else 'FAIL'} {case.op:22s} {case.config}: {report}")
    header = ("op", "configs", "max rel. err vs autodiff", "max rel. err vs finite diff.", "result")
    table = []
    for op, reports in rows.items():
        autodiff = max(max(r.value_vs_autodiff, r.grad_vs_autodiff) for r in reports)
        fd = max(max(r.grad_vs_fd, r.reference_vs_fd) for r in reports)
        table.append(
            (op, str(len(reports)), _fmt(autodiff), _fmt(fd), "pass" if all(r.ok for r in reports) else "FAIL")
        )
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
    line = lambda row: "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |"
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in table:
        print(line(row))
    print(
        f"\n{len(cases) - len(failures)} passed, {len(failures)} failed "
        f"(float64; tolerances: {gradcheck.AUTODIFF_RTOL:.0e} vs autodiff, {gradcheck.FD_RTOL:.0e} vs finite "
        f"differences; {time.perf_counter() - start:.1f} s)"
    )
    for case, report in failures:
        print(f"FAILED {case.op} [{case.config}]: {report}", file=sys.stderr)
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------------
# train / eval
# ---------------------------------------------------------------------------------------------

# name -> (constructor taking num_classes, outputs: "logits" or "probabilities")
MODELS = {
    "mnist1d_cnn": ("mnist1d_cnn", "logits"),
    "lenet5": ("lenet5", "logits"),
    "fashion_cnn": ("fashion_cnn", "logits"),
    "resnet20": ("resnet20", "logits"),
    "vgg_small": ("vgg_small", "logits"),
    "mobilenet_small": ("mobilenet_small", "logits"),
    "seed_cnn": ("seed_cnn", "probabilities"),
}
DATASETS = ("mnist1d", "fashion-mnist", "digits", "synthetic")
# Per dataset: the model, epochs, batch size, optimizer and learning rate used when not given.
DEFAULTS = {
    "mnist1d": dict(model="mnist1d_cnn", epochs=150, batch_size=100, optimizer="adam", lr=1e-2),
    "fashion-mnist": dict(model="lenet5", epochs=10, batch_size=128, optimizer="adam", lr=1e-3),
    "digits": dict(model="resnet20", epochs=30, batch_size=64, optimizer="adam", lr=1e-3),
    "synthetic": dict(model="lenet5", epochs=2, batch_size=32, optimizer="adam", lr=1e-3),
}
SYNTHETIC_SHAPE = {"mnist1d_cnn": (40,)}  # other models get 28x28 synthetic images


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a positive {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be a positive {kind.__name__}, got {text!r}")
        return value

    return parse


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative int, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative int, got {text!r}")
    return value


def build_model(name: str, num_classes: int):
    from . import models, train

    factory, outputs = MODELS[name]
    model = getattr(models, factory)(num_classes=num_classes)
    loss = train.cross_entropy_loss if outputs == "logits" else train.probability_nll_loss
    return model, loss


def load_dataset(name: str, model: str, data_dir: str | None):
    from . import data

    if name == "synthetic":
        return data.load("synthetic", image_shape=SYNTHETIC_SHAPE.get(model, (28, 28)), num_classes=4)
    return data.load(name, data_dir=data_dir)


def _run_config(args: argparse.Namespace) -> dict:
    defaults = DEFAULTS[args.dataset]
    config = {k: getattr(args, k) if getattr(args, k) is not None else defaults[k] for k in defaults}
    config.update(
        dataset=args.dataset,
        schedule=args.schedule,
        seed=args.seed,
        augment=args.augment,
        data_dir=args.data_dir,
        dtype=args.dtype or "float32",
    )
    return config


COMPUTE_DTYPES = ("float32", "bfloat16")


def _compute_dtype(name: str):
    """``--dtype``: ``float32`` trains as before (no casts); ``bfloat16`` is the mixed-precision policy."""
    import jax.numpy as jnp

    if name not in COMPUTE_DTYPES:
        raise ValueError(f"--dtype must be one of {list(COMPUTE_DTYPES)}, got {name!r}")
    return None if name == "float32" else jnp.bfloat16


def _join_processes(args: argparse.Namespace) -> None:
    """``--coordinator``: join the multi-process run (before any JAX computation in this process)."""
    if args.coordinator is None:
        if args.num_processes is not None or args.process_id is not None:
            raise ValueError("--num-processes and --process-id need --coordinator HOST:PORT")
        return
    from . import distributed

    if args.coordinator == "auto":
        if args.num_processes is not None or args.process_id is not None:
            raise ValueError("--coordinator auto detects the processes; drop --num-processes and --process-id")
        distributed.initialize()
        return
    host, _, port = args.coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--coordinator must be HOST:PORT (process 0's address) or auto, got {args.coordinator!r}")
    if args.num_processes is None or args.process_id is None:
        raise ValueError(f"--coordinator {args.coordinator} needs --num-processes P and --process-id I")
    if args.process_id >= args.num_processes:
        raise ValueError(f"--process-id must be in [0, {args.num_processes}) (--num-processes), got {args.process_id}")
    distributed.initialize(args.coordinator, args.num_processes, args.process_id)


def _augmenter(enabled: bool, image_rank: int):
    if not enabled:
        return None
    from .data import augment

    if image_rank != 3:
        raise ValueError("--augment needs an image dataset (N, H, W, C); this one has 1-D signals")
    return lambda key, x: augment(key, x, crop_pad=2, flip=True, rotate_deg=10.0)


def _make_plots(out, result, model, data, config) -> list:
    from . import plots

    made = [
        plots.plot_curves(result.history, out / "curves.png"),
        plots.plot_filters(result.state.params, out / "filters.png"),
    ]
    preds = result.test["predictions"]
    names = getattr(data, "class_names", None)
    made.append(plots.plot_confusion(data.y_test, preds, data.num_classes, out / "confusion.png", names))
    made.append(
        plots.plot_saliency(model, result.state.params, result.state.model_state, data.x_test[:6], out / "saliency.png")
    )
    return [str(p) for p in made if p is not None]


def train_command(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    _join_processes(args)  # first: jax.distributed.initialize must precede any JAX computation
    import jax

    from . import checkpoint, distributed, train

    config = _run_config(args)
    out = Path(args.out or f"runs/{config['model']}-{config['dataset']}")
    if args.resume:
        saved = checkpoint.read_meta(out)  # refuses a missing or damaged checkpoint with a clear message
        given = {k: getattr(args, k) for k in ("model", "epochs", "batch_size", "optimizer", "lr", "dtype")}
        config = {"dtype": "float32", **saved["config"], **{k: v for k, v in given.items() if v is not None}}
        config["seed"] = saved["config"]["seed"]
    compute_dtype = _compute_dtype(config["dtype"])
    if args.devices is not None and args.devices > jax.local_device_count():
        raise ValueError(
            f"--devices must be at most {jax.local_device_count()} (the local devices of this process), "
            f"got {args.devices}"
        )
    mesh = distributed.make_mesh(args.devices)  # None: every local device (of every process)
    distributed.process_batch_slice(config["batch_size"], mesh)  # the batch must split evenly over the devices
    data = load_dataset(config["dataset"], config["model"], config["data_dir"])
    model, loss = build_model(config["model"], data.num_classes)
    augment = _augmenter(config["augment"], data.x_train.ndim - 1)
    steps = config["epochs"] * (len(data.x_train) // config["batch_size"])
    optimizer, lr = train.make_optimizer(
        config["optimizer"], config["lr"], schedule=config["schedule"], total_steps=max(steps, 1)
    )
    writer = jax.process_index() == 0
    processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    if writer:
        print(
            f"jaxcnn train: {config['model']} on {config['dataset']} {data.x_train.shape[1:]}, "
            f"{len(data.x_train)} train / {len(data.x_test)} test, {config['epochs']} epochs of "
            f"{len(data.x_train) // config['batch_size']} steps, {config['optimizer']} lr {config['lr']} "
            f"({config['schedule']}), {config['dtype']} compute, batch {config['batch_size']} over "
            f"{mesh.size} {mesh.devices.flat[0].platform} device(s){processes}, out {out}",
            file=sys.stderr,
            flush=True,
        )
    start = time.perf_counter()
    result = train.fit(
        model,
        data,
        epochs=config["epochs"],
        batch_size=config["batch_size"],
        optimizer=optimizer,
        learning_rate=lr,
        seed=config["seed"],
        loss_fn=loss,
        augment=augment,
        out_dir=out,
        resume=args.resume,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        meta={"model": config["model"], "dataset": config["dataset"], "config": config},
        max_steps=args.max_steps,
        mesh=mesh,
        compute_dtype=compute_dtype,
    )
    wall = time.perf_counter() - start
    if not writer:  # process 0 writes the summary and plots and reports
        return 0
    result = result._replace(state=distributed.local_copy(result.state))
    summary = {
        "test_accuracy": result.test["accuracy"],
        "test_loss": result.test["loss"],
        "steps": int(result.state.step),
        "wall_time_s": round(wall, 1),
    }
    if not args.no_plots:
        summary["plots"] = _make_plots(out, result, model, data, config)
    (out / "summary.json").write_text(json.dumps({**summary, "config": config}, indent=1) + "\n")
    print(
        f"test accuracy {result.test['accuracy']:.4f}, test loss {result.test['loss']:.4f} after "
        f"{int(result.state.step)} steps in {wall:.1f} s; checkpoint, metrics and plots in {out}"
    )
    return 0


def eval_command(args: argparse.Namespace) -> int:
    from . import checkpoint, train

    meta = checkpoint.read_meta(args.checkpoint)
    config = meta["config"]
    data = load_dataset(config["dataset"], config["model"], args.data_dir or config.get("data_dir"))
    model, loss = build_model(config["model"], data.num_classes)
    optimizer, _ = train.make_optimizer(
        config["optimizer"],
        config["lr"],
        schedule=config["schedule"],
        total_steps=max(config["epochs"] * (len(data.x_train) // config["batch_size"]), 1),
    )
    target = train.init_train_state(model, (config["batch_size"], *data.x_train.shape[1:]), optimizer, config["seed"])
    state, meta = checkpoint.load(args.checkpoint, target)
    result = train.evaluate(
        model,
        state.params,
        state.model_state,
        data.x_test,
        data.y_test,
        loss_fn=loss,
        compute_dtype=_compute_dtype(config.get("dtype", "float32")),
    )
    print(
        f"{config['model']} on {config['dataset']} test split ({len(data.x_test)} examples), step {meta['step']}: "
        f"accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f}"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------------------------

BENCH_PARTS = ("ops", "models", "scaling", "report")


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``jaxcnn bench``, shared with ``python -m benchmarks``."""
    parser.add_argument(
        "--quick", action="store_true", help="a check that everything runs: few cases and repeats (< 3 min on 2 cores)"
    )
    parser.add_argument(
        "--out", metavar="DIR", help="directory for the JSON, report.md and plots (default benchmarks/results[/quick])"
    )
    parser.add_argument(
        "--parts", nargs="+", choices=BENCH_PARTS, default=list(BENCH_PARTS), help="what to run (default all)"
    )
    parser.add_argument("--repeats", type=_positive(int), help="timed rounds per case (default: per benchmark)")


def bench_command(args: argparse.Namespace) -> int:
    try:
        from benchmarks import suite
    except ImportError as err:
        print(
            f"jaxcnn bench: error: cannot import the benchmarks package ({err}); it ships with the source "
            "checkout: run `pip install -e .` in the repository",
            file=sys.stderr,
        )
        return 2
    return suite.run(args)


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line: ``jaxcnn train: error: argument --epochs: ...``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxcnn", description="Convolutional networks with hand-derived VJPs.")
    sub = parser.add_subparsers(dest="command", required=True)
    gc = sub.add_parser(
        "gradcheck",
        help="check every op's hand-derived VJP against JAX autodiff and finite differences",
        description="Compare every op's hand-derived VJP with jax.vjp of its reference twin and with central "
        "finite differences, in float64, over a sweep of configurations; exit 1 on any failure.",
    )
    gc.add_argument("--op", action="append", metavar="NAME", help="check only this op (repeatable)")
    gc.add_argument("--seed", type=int, default=0, help="seed for inputs, cotangents and directions (default 0)")
    gc.add_argument("-v", "--verbose", action="store_true", help="print every configuration's report")
    gc.set_defaults(func=gradcheck_command)

    tr = sub.add_parser(
        "train",
        help="train a model from the zoo on a dataset",
        description="Train a model with the hand-derived VJPs and optax. Writes checkpoint.msgpack (atomic), "
        "metrics.jsonl, summary.json and PNG plots to --out. With no arguments: mnist1d_cnn on MNIST-1D "
        "(generated locally, no download), a few minutes on a 2-core CPU.",
    )
    tr.add_argument(
        "--model",
        choices=sorted(MODELS),
        help="model (default: per dataset, mnist1d_cnn for mnist1d, lenet5 for fashion-mnist, resnet20 for digits)",
    )
    tr.add_argument("--dataset", choices=DATASETS, default="mnist1d", help="dataset (default mnist1d)")
    tr.add_argument("--data-dir", help="directory holding the dataset files (else $JAXCNN_DATA, system, cache)")
    tr.add_argument("--epochs", type=_positive(int), help="passes over the training set (default: per dataset)")
    tr.add_argument("--batch-size", type=_positive(int), help="examples per step (default: per dataset)")
    tr.add_argument("--optimizer", choices=["sgd", "momentum", "adam", "adamw"], help="optax optimizer (default adam)")
    tr.add_argument("--lr", type=_positive(float), help="peak learning rate (default: per dataset)")
    tr.add_argument(
        "--schedule",
        choices=["constant", "cosine", "warmup-cosine", "step"],
        default="constant",
        help="learning-rate schedule (default constant)",
    )
    tr.add_argument("--augment", action="store_true", help="random crop (pad 2), horizontal flip, rotation (10 deg)")
    tr.add_argument("--seed", type=_non_negative_int, default=0, help="seed for init, data order, dropout (default 0)")
    tr.add_argument("--out", help="output directory (default runs/MODEL-DATASET)")
    tr.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    tr.add_argument(
        "--checkpoint-every",
        type=_non_negative_int,
        default=0,
        help="checkpoint every N steps (default 0: at the end of each epoch)",
    )
    tr.add_argument("--log-every", type=_positive(int), default=50, help="metrics row every N steps (default 50)")
    tr.add_argument("--max-steps", type=_positive(int), help="stop after this many steps in all (smoke runs)")
    tr.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    tr.add_argument(
        "--dtype",
        choices=COMPUTE_DTYPES,
        help="compute dtype of forward and backward passes; bfloat16 keeps parameters, optimizer state, "
        "gradients and the loss in float32 (default float32, or the resumed run's)",
    )
    dp = tr.add_argument_group(
        "scaling out",
        "Data parallelism over a 1-D device mesh: each batch (--batch-size is the global batch) is split "
        "evenly over the devices and the parameters are replicated; XLA all-reduces the gradients. "
        "Several processes (one per host) train together with --coordinator, --num-processes, --process-id: "
        "process 0 writes the checkpoint, metrics and plots; --out must be shared for --resume.",
    )
    dp.add_argument(
        "--devices",
        type=_positive(int),
        help="local devices per process to split each batch over (default: all local devices)",
    )
    dp.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="address of process 0 (the same for every process): calls jax.distributed.initialize; "
        "'auto' detects the cluster (TPU pods, GKE, SLURM)",
    )
    dp.add_argument("--num-processes", type=_positive(int), help="number of processes (with --coordinator)")
    dp.add_argument(
        "--process-id", type=_non_negative_int, help="this process's index in [0, --num-processes) (with --coordinator)"
    )
    tr.set_defaults(func=train_command)

    ev = sub.add_parser(
        "eval",
        help="report a checkpoint's test accuracy",
        description="Load a checkpoint written by `jaxcnn train` and evaluate it on the test split.",
    )
    ev.add_argument("--checkpoint", required=True, help="the run directory holding checkpoint.msgpack")
    ev.add_argument("--data-dir", help="directory holding the dataset files")
    ev.set_defaults(func=eval_command)

    be = sub.add_parser(
        "bench",
        help="run the benchmarks (ops, training steps vs autodiff, Flax and PyTorch, scaling, memory)",
        description="Time jaxcnn against JAX autodiff, flax.linen and PyTorch (when installed: pip install "
        "torch==2.13.0) at the op and model level, sweep batch and image sizes, measure memory, and write JSON, "
        "report.md and PNG plots to --out (the same as python -m benchmarks; see benchmarks/README.md).",
    )
    add_bench_arguments(be)
    be.set_defaults(func=bench_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .checkpoint import CheckpointError

    try:
        return args.func(args)
    except (CheckpointError, ValueError, TypeError, FileNotFoundError) as e:
        # Configuration problems (a model that does not fit the data, a damaged checkpoint, ...) in one line.
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"jaxcnn {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
