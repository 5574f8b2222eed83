"""The ``jaxcnn`` command: ``train``, ``eval``, ``gradcheck``, ``summary``, ``inspect`` and ``bench``; model,
dataset, optimizer and schedule choices come from the registries of the modules that own them.

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


def _shape(text: str) -> tuple[int, ...]:
    """``H,W,C`` (or ``L,C``, ``D,H,W,C``): positive ints separated by commas."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be positive ints separated by commas (H,W,C), got {text!r}") from None
    if not 2 <= len(shape) <= 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"must be 2-4 positive ints separated by commas (H,W,C), got {text!r}")
    return shape


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative int, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative int, got {text!r}")
    return value


RUN_OPTIONS = ("model", "epochs", "batch_size", "optimizer", "lr", "dtype")  # may change on --resume


def _run_config(args: argparse.Namespace):
    """The run's :class:`~jaxcnn.train.run.RunConfig`: the flags over the dataset's recipe, or, with
    ``--resume``, the checkpoint's config with the flags that may change."""
    from .checkpoint import read_meta
    from .train import run

    if args.resume:
        saved = read_meta(args.out_dir)["config"]  # refuses a missing or damaged checkpoint in one line
        return run.resolve_config({k: getattr(args, k) for k in RUN_OPTIONS}, saved)
    fields = (*RUN_OPTIONS, "dataset", "schedule", "seed", "augment", "shift", "data_dir", "input_shape")
    return run.resolve_config({k: getattr(args, k) for k in fields})


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


def _device_mesh(devices: int | None, batch_size: int):
    """The data-parallel mesh over ``--devices`` local devices (all by default) of every process."""
    import jax

    from . import distributed

    if devices is not None and devices > jax.local_device_count():
        raise ValueError(
            f"--devices must be at most {jax.local_device_count()} (the local devices of this process), got {devices}"
        )
    mesh = distributed.make_mesh(devices)
    distributed.process_batch_slice(batch_size, mesh)  # the batch must split evenly over the devices
    return mesh


def _banner(config, data, mesh, out) -> str:
    import jax

    processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    return (
        f"jaxcnn train: {config.model} on {config.dataset} {data.x_train.shape[1:]}, "
        f"{len(data.x_train)} train / {len(data.x_test)} test, {config.epochs} epochs of "
        f"{len(data.x_train) // config.batch_size} steps, {config.optimizer} lr {config.lr} "
        f"({config.schedule}), {config.dtype} compute, batch {config.batch_size} over "
        f"{mesh.size} {mesh.devices.flat[0].platform} device(s){processes}, out {out}"
    )


def train_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .train import run

    run.prefer_xla_cpu_convolutions()  # first: XLA reads its flags when the backend starts
    _join_processes(args)  # then: jax.distributed.initialize must precede any JAX computation
    import jax

    args.out_dir = Path(args.out) if args.out else None
    config = _run_config(args)
    out = args.out_dir or Path(f"runs/{config.model}-{config.dataset}")
    mesh = _device_mesh(args.devices, config.batch_size)
    data = run.load_data(config)
    setup = run.set_up(config, data)  # refuses a model, dataset and augmentation that do not fit together
    writer = jax.process_index() == 0
    if writer:
        print(_banner(config, data, mesh, out), file=sys.stderr, flush=True)
    start = time.perf_counter()
    result = run.train(
        config, setup, data, out, resume=args.resume, checkpoint_every=args.checkpoint_every,
        log_every=args.log_every, max_steps=args.max_steps, mesh=mesh,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if not writer:  # process 0 writes the summary and plots and reports
        return 0
    summary = run.write_summary(out, config, setup, data, result, wall, plots=not args.no_plots)
    best = (
        f" (best {summary['best_test_accuracy']:.4f} at epoch {summary['best_epoch']:g})"
        if "best_epoch" in summary
        else ""
    )
    print(
        f"test accuracy {result.test['accuracy']:.4f}{best}, test loss {result.test['loss']:.4f} after "
        f"{int(result.state.step)} steps in {wall:.1f} s; checkpoint, metrics and plots in {out}"
    )
    return 0


def eval_command(args: argparse.Namespace) -> int:
    from .train import run

    run.prefer_xla_cpu_convolutions()  # the route training used: the same numbers

    config, meta, result = run.evaluate_checkpoint(args.checkpoint, args.data_dir)
    print(
        f"{config.model} on {config.dataset} test split ({len(result['predictions'])} examples), "
        f"step {meta['step']}: accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f}"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# summary / inspect
# ---------------------------------------------------------------------------------------------


def summary_command(args: argparse.Namespace) -> int:
    from . import inspect, models

    spec = models.MODELS[args.model]
    shape = args.input_shape or spec.input_shape
    num_classes = args.num_classes or (1000 if spec.input_shape == (224, 224, 3) else 10)
    model = models.build(args.model, num_classes)
    print(inspect.summary(model, (1, *shape), name=f"{args.model} ({num_classes} classes)"))
    return 0


def inspect_command(args: argparse.Namespace) -> int:
    """Feature maps, first-layer filters and one unit's receptive field for a trained run's test example."""
    from pathlib import Path

    from . import inspect, plots
    from .train import run

    config, _, model, state, data = run.load_checkpoint(args.checkpoint, args.data_dir)
    if not 0 <= args.index < len(data.x_test):
        raise ValueError(f"--index must be in [0, {len(data.x_test)}) (the test examples), got {args.index}")
    x = data.x_test[args.index]
    rows = inspect.summary(model, (1, *x.shape)).rows
    spatial = [r for r in rows if isinstance(r.receptive_field, tuple) and r.name not in inspect.COMBINATORS]
    convs = [r.path for r in spatial if r.name in ("Conv", "DepthwiseConv", "SeparableConv")][:4]
    out = Path(args.out or Path(args.checkpoint) / "inspect")
    out.mkdir(parents=True, exist_ok=True)
    params, model_state = state.params, state.model_state
    made = [
        plots.plot_feature_maps(model, params, model_state, x, convs, out / f"feature_maps_{args.index}.png"),
        plots.plot_filters(params, out / "filters.png"),
    ]
    if x.ndim == 3 and spatial:
        last = spatial[-1]
        unit = tuple(n // 2 for n in last.output_shape[1:-1])
        made.append(
            plots.plot_receptive_field(
                model, params, model_state, x, last.path, unit, out / f"receptive_field_{args.index}.png"
            )
        )
    print(
        f"{config.model}, test example {args.index} (label {int(data.y_test[args.index])}): "
        + ", ".join(str(p) for p in made if p)
    )
    return 0


# ---------------------------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------------------------


def bench_command(args: argparse.Namespace) -> int:
    """``jaxcnn bench``: ``python -m jaxcnn.bench`` (:mod:`jaxcnn.bench.suite`). The suite imports the
    library; the CLI imports the suite only when it builds its parser, never at import time."""
    from .bench import suite

    return suite.run(args)


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line: ``jaxcnn train: error: argument --epochs: ...``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_gradcheck(sub) -> None:
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


def _add_train(sub) -> None:
    from . import data, models
    from .train import OPTIMIZERS, SCHEDULES, run

    tr = sub.add_parser(
        "train",
        help="train a model from the zoo on a dataset",
        description="Train a model with the hand-derived VJPs and optax. Writes checkpoint.msgpack (atomic), "
        "metrics.jsonl, summary.json and PNG plots to --out. With no arguments: mnist1d_cnn on MNIST-1D "
        "(generated locally, no download), a few minutes on a 2-core CPU.",
    )
    classifiers = sorted(n for n, spec in models.MODELS.items() if spec.outputs in models.CLASSIFIER_OUTPUTS)
    recipes = ", ".join(f"{r['model']} for {d}" for d, r in run.RECIPES.items())
    tr.add_argument("--model", choices=classifiers, help=f"model (default: per dataset, {recipes})")
    tr.add_argument("--dataset", choices=data.DATASETS, default="mnist1d", help="dataset (default mnist1d)")
    tr.add_argument("--data-dir", help="directory holding the dataset files (else $JAXCNN_DATA, system, cache)")
    tr.add_argument(
        "--input-shape",
        type=_shape,
        metavar="H,W,C",
        help="one example's shape for --dataset synthetic (default: the model's own, e.g. 224,224,3)",
    )
    tr.add_argument("--epochs", type=_positive(int), help="passes over the training set (default: per dataset)")
    tr.add_argument("--batch-size", type=_positive(int), help="examples per step (default: per dataset)")
    tr.add_argument("--optimizer", choices=list(OPTIMIZERS), help="optax optimizer (default adam)")
    tr.add_argument("--lr", type=_positive(float), help="peak learning rate (default: per dataset)")
    tr.add_argument(
        "--schedule", choices=list(SCHEDULES), help="learning-rate schedule (default: per dataset, else constant)"
    )
    tr.add_argument("--augment", action="store_true", help="random crop (pad 2), horizontal flip, rotation (10 deg)")
    tr.add_argument(
        "--shift",
        type=_non_negative_int,
        metavar="N",
        help="1-D signals: random circular shifts of up to N samples (default: per dataset, 8 for mnist1d; 0: off)",
    )
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
        choices=list(run.COMPUTE_DTYPES),
        help="compute dtype of forward and backward passes; bfloat16 keeps parameters, optimizer state, "
        "gradients and the loss in float32 (default float32, or the resumed run's)",
    )
    _add_scaling_out(tr)
    tr.set_defaults(func=train_command)


def _add_scaling_out(tr) -> None:
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


def _add_eval(sub) -> None:
    ev = sub.add_parser(
        "eval",
        help="report a checkpoint's test accuracy",
        description="Load a checkpoint written by `jaxcnn train` and evaluate it on the test split.",
    )
    ev.add_argument("--checkpoint", required=True, help="the run directory holding checkpoint.msgpack")
    ev.add_argument("--data-dir", help="directory holding the dataset files")
    ev.set_defaults(func=eval_command)


def _add_summary(sub) -> None:
    from . import models

    su = sub.add_parser(
        "summary",
        help="print a model's layers: output shapes, parameters, FLOPs, receptive fields",
        description="One row per layer of a zoo model (nested blocks with their paths) and the totals, by shape "
        "arithmetic: nothing is run.",
    )
    su.add_argument("--model", required=True, choices=sorted(models.MODELS), help="the zoo model")
    su.add_argument("--input-shape", type=_shape, metavar="H,W,C", help="one example's shape (default: the model's)")
    su.add_argument("--num-classes", type=_positive(int), help="classes (default 1000 for ImageNet models, else 10)")
    su.set_defaults(func=summary_command)
    ins = sub.add_parser(
        "inspect",
        help="write feature maps, filters and a unit's receptive field of a trained run as PNGs",
        description="For test example --index of the run in --checkpoint: every channel of the first conv layers, "
        "the first-layer filters (in colour for RGB inputs), and |d unit / d input| of a unit of the last spatial "
        "layer with its computed receptive field drawn as a box.",
    )
    ins.add_argument("--checkpoint", required=True, help="the run directory holding checkpoint.msgpack")
    ins.add_argument("--index", type=_non_negative_int, default=0, help="the test example (default 0)")
    ins.add_argument("--out", help="directory for the PNGs (default CHECKPOINT/inspect)")
    ins.add_argument("--data-dir", help="directory holding the dataset files")
    ins.set_defaults(func=inspect_command)


def _add_bench(sub) -> None:
    from .bench.suite import add_arguments

    be = sub.add_parser(
        "bench",
        help="run the benchmarks (ops, training steps vs autodiff, Flax and PyTorch, scaling, memory)",
        description="Time jaxcnn against JAX autodiff, flax.linen and PyTorch (when installed: pip install "
        "torch==2.13.0) at the op and model level, sweep batch and image sizes, measure memory, and write JSON, "
        "report.md and PNG plots to --out (the same as python -m jaxcnn.bench; see benchmarks/README.md).",
    )
    add_arguments(be)
    be.set_defaults(func=bench_command)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxcnn", description="Convolutional networks with hand-derived VJPs.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_gradcheck, _add_train, _add_eval, _add_summary, _add_bench):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .checkpoint import CheckpointError

    try:
        return args.func(args)
    except BrokenPipeError:  # `jaxcnn summary ... | head`: the reader left, nothing more to say
        return 0
    except (CheckpointError, ValueError, TypeError, OSError) as e:
        # Configuration and environment problems (a model that does not fit the data, a damaged checkpoint,
        # a full disk, a failed download, ...) in one line.
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"jaxcnn {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
