"""The ``jaxcnn`` command: ``train``, ``eval``, ``gradcheck``, ``summary``, ``inspect`` and ``bench``; model,
dataset, optimizer and schedule choices come from the registries of the modules that own them.

The command only parses: ``train`` hands its options to :func:`jaxcnn.train.run.main` in one call. Bad
flags and values, and every :class:`~jaxcnn.errors.JaxcnnError` (bad configuration or a bad file), end
with a one-line ``jaxcnn <command>: error: ...`` on stderr and exit status 2; any other exception keeps its
traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence

from ._arguments import FRACTION, NON_NEGATIVE_FLOAT, NON_NEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT, SHAPE
from .errors import ConfigError, JaxcnnError, unknown_choice

__all__ = ["main"]


def _fmt(err: float) -> str:
    return "n/a" if math.isnan(err) else f"{err:.1e}"


def gradcheck_command(args: argparse.Namespace) -> int:
    from . import gradcheck

    cases = gradcheck.default_cases()
    if args.op:
        unknown = sorted(set(args.op) - {c.op for c in cases})
        if unknown:
            raise unknown_choice("op", unknown[0], sorted({c.op for c in cases}))
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


def train_command(args: argparse.Namespace) -> int:
    """``jaxcnn train``: the parsed options, handed to :func:`jaxcnn.train.run.main` in one call."""
    from .train import run

    return run.main(run.TrainOptions(**{field: getattr(args, field) for field in run.TrainOptions._fields}))


def eval_command(args: argparse.Namespace) -> int:
    from . import xla_cpu
    from .train import run

    xla_cpu.prefer_xla_cpu_convolutions(run.checkpoint_dtype(args.checkpoint, args.which))  # training's route

    config, meta, result = run.evaluate_checkpoint(args.checkpoint, args.data_dir, args.which)
    print(
        f"{config.model} on {config.dataset} test split ({len(result['predictions'])} examples), "
        f"{args.which} state (step {meta['step']}): accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f}"
    )
    return 0


def export_command(args: argparse.Namespace) -> int:
    """``jaxcnn export``: a trained run's best or last state as StableHLO, safetensors or a torchvision state
    dict (:mod:`jaxcnn.export`)."""
    from . import export, xla_cpu
    from .train import run

    xla_cpu.prefer_xla_cpu_convolutions(run.checkpoint_dtype(args.checkpoint, args.which))
    config, meta, model, state, data = run.load_checkpoint(args.checkpoint, args.data_dir, args.which)
    if args.format == "stablehlo":
        preprocessing = run.preprocessing_of(config)
        path = export.export_stablehlo(
            args.out, model, state.params, state.model_state, data.input_shape,
            preprocess=preprocessing.eval if preprocessing else None,
        )  # fmt: skip
        what = f"StableHLO for {', '.join(export.PLATFORMS)}, inputs (batch, {', '.join(map(str, data.input_shape))})"
    elif args.format == "safetensors":
        path, what = export.export_safetensors(args.out, state.params, state.model_state), "params and state"
    else:
        path = export.export_torchvision(args.out, config.model, state.params, state.model_state)
        what = f"torchvision's {config.model} state dict"
    print(f"{config.model}, the state of step {meta['step']}: {what} in {path}")
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
    print(inspect.summary(model, (1, *shape), name=f"{args.model} ({num_classes} classes)", stages=True))
    return 0


def inspect_command(args: argparse.Namespace) -> int:
    """Feature maps, first-layer filters and one unit's receptive field for a trained run's test example."""
    from pathlib import Path

    from . import inspect, plots
    from .layers.rules import kind_rules
    from .train import run

    config, _, model, state, data = run.load_checkpoint(args.checkpoint, args.data_dir)
    if not 0 <= args.index < len(data.x_test):
        raise ConfigError(f"--index must be in [0, {len(data.x_test)}) (the test examples), got {args.index}")
    x = data.x_test[args.index]
    rows = inspect.summary(model, (1, *x.shape)).rows
    spatial = [r for r in rows if isinstance(r.receptive_field, tuple) and r.name not in inspect.COMBINATORS]
    convs = [r.path for r in spatial if kind_rules(r.name).feature_maps][:4]
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
    tr.add_argument(
        "--data-dir",
        help="where the dataset is: fashion-mnist/cifar10 files (else $JAXCNN_DATA, system, cache), the image "
        "folder DIR (DIR/train/<class>/*, DIR/test/<class>/*, optionally DIR/val/...), or FILE.npz",
    )
    tr.add_argument(
        "--input-shape",
        type=SHAPE,
        metavar="H,W,C",
        help="one example's shape: the synthetic set's (default: the model's own, e.g. 224,224,3), or the size an "
        "image folder's images are resized to (default: their own, which must agree)",
    )
    tr.add_argument("--epochs", type=POSITIVE_INT, help="passes over the training set (default: per dataset)")
    tr.add_argument("--batch-size", type=POSITIVE_INT, help="examples per step (default: per dataset)")
    tr.add_argument("--optimizer", choices=list(OPTIMIZERS), help="optax optimizer (default adam)")
    tr.add_argument("--lr", type=POSITIVE_FLOAT, help="peak learning rate (default: per dataset)")
    tr.add_argument(
        "--schedule", choices=list(SCHEDULES), help="learning-rate schedule (default: per dataset, else constant)"
    )
    tr.add_argument(
        "--augment",
        nargs="?",
        const="standard",
        choices=list(data.AUGMENTATIONS),
        help="augment images: standard (the default when given alone: random crop with padding 2, horizontal flip, "
        "rotation up to 10 deg) or pad4-flip (padding 4, crop, flip: the CIFAR recipe)",
    )
    tr.add_argument(
        "--val-fraction",
        type=FRACTION,
        metavar="F",
        help="hold F of the training set out for validation (stratified, seeded), which picks the best epoch; "
        "default 0.1 when --epochs > 1, 0 turns it off; a dataset with its own validation split uses that",
    )
    tr.add_argument(
        "--eval-test-every-epoch",
        action="store_true",
        default=None,
        help="also evaluate the test split at each epoch's end (reported, never used to choose)",
    )
    tr.add_argument(
        "--weight-decay", type=NON_NEGATIVE_FLOAT, help="L2 weight decay (default: per dataset; adamw 1e-4)"
    )
    ft = tr.add_argument_group(
        "fine-tuning",
        "Start from a torchvision state dict (.pth, .safetensors) or a jaxcnn checkpoint (a run directory or its "
        ".msgpack): every array is loaded, except the classifier's when the dataset has other classes (it is "
        "initialised afresh, and said so).",
    )
    ft.add_argument("--weights", metavar="FILE", help="the weights to start from")
    ft.add_argument(
        "--freeze",
        choices=["none", "backbone", "bn"],
        help="keep fixed: nothing (default), everything but the classifier, or the batch norms (their statistics "
        "and affine parameters; the batch norms then use their running statistics)",
    )
    ft.add_argument("--head-lr", type=POSITIVE_FLOAT, help="the classifier's learning rate (default --lr)")
    ft.add_argument(
        "--preprocessing",
        choices=["none", "imagenet"],
        help="input transforms: imagenet (torchvision's: random resized crop and flip in training; resize 256, "
        "centre crop 224 at evaluation; ImageNet's mean and std) is the default with torchvision weights",
    )
    tr.add_argument(
        "--shift",
        type=NON_NEGATIVE_INT,
        metavar="N",
        help="1-D signals: random circular shifts of up to N samples (default: per dataset, 8 for mnist1d; 0: off)",
    )
    tr.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="seed for init, data order, dropout (default 0)")
    tr.add_argument("--out", help="output directory (default runs/MODEL-DATASET)")
    tr.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    tr.add_argument(
        "--checkpoint-every",
        type=NON_NEGATIVE_INT,
        default=0,
        help="checkpoint every N steps (default 0: at the end of each epoch)",
    )
    tr.add_argument("--log-every", type=POSITIVE_INT, default=50, help="metrics row every N steps (default 50)")
    tr.add_argument("--max-steps", type=POSITIVE_INT, help="stop after this many steps in all (smoke runs)")
    tr.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    tr.add_argument(
        "--dtype",
        choices=list(run.COMPUTE_DTYPES),
        help="compute dtype of forward and backward passes; bfloat16 keeps parameters, optimizer state, "
        "gradients and the loss in float32 (default float32, or the resumed run's)",
    )
    _add_scaling_out(tr)
    _add_privacy(tr)
    tr.set_defaults(func=train_command)


def _add_privacy(tr) -> None:
    dp = tr.add_argument_group(
        "differential privacy",
        "DP-SGD (pip install 'jaxcnn[dp]'): every step a Poisson sample of the training set (each example with "
        "probability --batch-size / N), each example's gradient clipped to --dp-clip, Gaussian noise of "
        "--dp-noise * --dp-clip added to the sum, divided by --batch-size. The accountant's epsilon at "
        "--dp-delta is printed at each epoch's end and written to summary.json. Models without batch norm "
        "(e.g. --model tanh_cnn), float32.",
    )
    dp.add_argument("--dp-epsilon", type=POSITIVE_FLOAT, metavar="EPS",
                    help="train privately, with the noise calibrated to spend EPS over the whole run")  # fmt: skip
    dp.add_argument("--dp-noise", type=POSITIVE_FLOAT, metavar="SIGMA",
                    help="train privately with this noise multiplier (instead of --dp-epsilon)")  # fmt: skip
    dp.add_argument("--dp-clip", type=POSITIVE_FLOAT, metavar="C", help="per-example gradient norm bound (default 1)")
    dp.add_argument("--dp-delta", type=POSITIVE_FLOAT, metavar="DELTA", help="delta of (epsilon, delta) (default 1e-5)")
    dp.add_argument("--dp-augmult", type=POSITIVE_INT, metavar="K",
                    help="augmentation multiplicity (De et al., 2022): K augmentations of each sampled example "
                    "(with --augment), the mean of their gradients clipped; the same privacy cost "
                    "(default 1)")  # fmt: skip


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
        type=POSITIVE_INT,
        help="local devices per process to split each batch over (default: all local devices)",
    )
    dp.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="address of process 0 (the same for every process): calls jax.distributed.initialize; "
        "'auto' detects the cluster (TPU pods, GKE, SLURM)",
    )
    dp.add_argument("--num-processes", type=POSITIVE_INT, help="number of processes (with --coordinator)")
    dp.add_argument(
        "--process-id", type=NON_NEGATIVE_INT, help="this process's index in [0, --num-processes) (with --coordinator)"
    )


def _add_eval(sub) -> None:
    ev = sub.add_parser(
        "eval",
        help="report a checkpoint's test accuracy",
        description="Load a checkpoint written by `jaxcnn train` and evaluate it on the test split.",
    )
    ev.add_argument("--checkpoint", required=True, help="the run directory holding checkpoint.msgpack")
    ev.add_argument("--data-dir", help="directory holding the dataset files")
    ev.add_argument(
        "--which",
        choices=["last", "best"],
        default="last",
        help="the last state (checkpoint.msgpack, default) or the best validation epoch's (best.msgpack)",
    )
    ev.set_defaults(func=eval_command)


def _add_export(sub) -> None:
    ex = sub.add_parser(
        "export",
        help="write a trained run's weights or model for use elsewhere",
        description="stablehlo: the eval-mode forward pass (preprocessing included) with the parameters inside and "
        "a symbolic batch, for cpu, cuda and tpu, loadable with jax.export.deserialize(...).call(x) without "
        "jaxcnn; safetensors: params and state with dotted keys; torchvision: the state dict torchvision's model "
        "loads with load_state_dict(strict=True) (.safetensors or .pth).",
    )
    ex.add_argument("--checkpoint", required=True, help="the run directory")
    ex.add_argument("--which", choices=["best", "last"], help="the best or last state (default: the best, if any)")
    ex.add_argument("--format", required=True, choices=["stablehlo", "safetensors", "torchvision"])
    ex.add_argument("--out", required=True, help="the file to write")
    ex.add_argument("--data-dir", help="directory holding the dataset files (for the input shape)")
    ex.set_defaults(func=export_command)


def _add_summary(sub) -> None:
    from . import models

    su = sub.add_parser(
        "summary",
        help="print a model's layers: output shapes, parameters, FLOPs, receptive fields",
        description="One row per layer of a zoo model (nested blocks with their paths) and the totals, by shape "
        "arithmetic: nothing is run.",
    )
    su.add_argument("--model", required=True, choices=sorted(models.MODELS), help="the zoo model")
    su.add_argument("--input-shape", type=SHAPE, metavar="H,W,C", help="one example's shape (default: the model's)")
    su.add_argument("--num-classes", type=POSITIVE_INT, help="classes (default 1000 for ImageNet models, else 10)")
    su.set_defaults(func=summary_command)
    ins = sub.add_parser(
        "inspect",
        help="write feature maps, filters and a unit's receptive field of a trained run as PNGs",
        description="For test example --index of the run in --checkpoint: every channel of the first conv layers, "
        "the first-layer filters (in colour for RGB inputs), and |d unit / d input| of a unit of the last spatial "
        "layer with its computed receptive field drawn as a box.",
    )
    ins.add_argument("--checkpoint", required=True, help="the run directory holding checkpoint.msgpack")
    ins.add_argument("--index", type=NON_NEGATIVE_INT, default=0, help="the test example (default 0)")
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
    for add in (_add_gradcheck, _add_train, _add_eval, _add_export, _add_summary, _add_bench):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `jaxcnn summary ... | head`: the reader left, nothing more to say
        return 0
    except JaxcnnError as e:
        # Bad configuration, a bad file, a failed download, a full disk, a missing optional package: one
        # line. Anything else is a bug and keeps its traceback.
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"jaxcnn {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
