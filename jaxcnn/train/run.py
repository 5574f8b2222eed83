"""A whole training run by name, as ``jaxcnn train`` and ``jaxcnn eval`` do it.

The command line only parses: it hands its :class:`TrainOptions` to :func:`main` in one call, and
everything else happens here, in this order: the XLA:CPU route (:mod:`jaxcnn.xla_cpu`, before JAX
starts), joining the other processes (``--coordinator``), the :class:`~jaxcnn.train.recipes.RunConfig`
(the dataset's recipe, or a resumed run's saved configuration), the device mesh, the data, the model,
:func:`~jaxcnn.train.loop.fit`, and ``summary.json`` with the plots. :func:`evaluate_checkpoint`
re-evaluates a finished run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import optax

from .. import checkpoint, distributed, models, xla_cpu
from .. import data as datasets
from .._files import atomic_write_bytes
from ..errors import ConfigError, unknown_choice
from ..layers import Layer
from .loop import FitConfig, FitResult, fit
from .optim import make_optimizer
from .recipes import COMPUTE_DTYPES as COMPUTE_DTYPES
from .recipes import RECIPES as RECIPES
from .recipes import RunConfig as RunConfig
from .recipes import resolve_config as resolve_config
from .step import LOSSES, evaluate, init_train_state

__all__ = [
    "TrainOptions",
    "main",
    "RunConfig",
    "RECIPES",
    "COMPUTE_DTYPES",
    "resolve_config",
    "load_data",
    "build_model",
    "Setup",
    "set_up",
    "train",
    "write_summary",
    "evaluate_checkpoint",
    "load_checkpoint",
    "best_epoch",
]


class TrainOptions(NamedTuple):
    """``jaxcnn train``'s flags as parsed (None: not given; ``jaxcnn train --help`` documents each)."""

    dataset: str | None = None
    model: str | None = None
    data_dir: str | None = None
    input_shape: tuple[int, ...] | None = None
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    schedule: str | None = None
    augment: bool = False
    shift: int | None = None
    seed: int = 0
    dtype: str | None = None
    out: str | None = None
    resume: bool = False
    checkpoint_every: int = 0
    log_every: int = 50
    max_steps: int | None = None
    no_plots: bool = False
    devices: int | None = None
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


# ---------------------------------------------------------------------------------------------
# jaxcnn train, from its options
# ---------------------------------------------------------------------------------------------


def main(options: TrainOptions) -> int:
    """``jaxcnn train``: resolve ``options`` (route, processes, configuration, devices), train, report.
    Process 0 writes the summary and plots and prints the result; returns the exit status."""
    xla_cpu.prefer_xla_cpu_convolutions()  # first: XLA reads its flags when the backend starts
    _join_processes(options)  # then: jax.distributed.initialize must precede any JAX computation
    config = _config(options)
    out = Path(options.out or f"runs/{config.model}-{config.dataset}")
    mesh = distributed.check_mesh(distributed.make_mesh(options.devices, arg="--devices"), config.batch_size)
    data = load_data(config)
    setup = set_up(config, data)  # refuses a model, dataset and augmentation that do not fit together
    writer = jax.process_index() == 0
    if writer:
        print(_banner(config, data, mesh, out), file=sys.stderr, flush=True)
    start = time.perf_counter()
    settings = dict(resume=options.resume, checkpoint_every=options.checkpoint_every, log_every=options.log_every)
    result = train(config, setup, data, out, mesh=mesh, max_steps=options.max_steps, **settings)
    wall = time.perf_counter() - start
    if writer:  # process 0 writes the summary and plots and reports
        summary = write_summary(out, config, setup, data, result, wall, plots=not options.no_plots)
        print(_result_line(summary, result, wall, out))
    return 0


def _config(options: TrainOptions) -> RunConfig:
    """The options over the dataset's recipe, or, with ``--resume``, the checkpoint's configuration with
    the options that may change."""
    given = {k: getattr(options, k) for k in RunConfig.__dataclass_fields__ if k in TrainOptions._fields}
    if not options.resume:
        return resolve_config(given)
    if options.out is None:
        raise ConfigError("--resume continues the run in --out DIR: give --out")
    return resolve_config(given, checkpoint.read_meta(options.out)["config"])  # a damaged one: refused


def _join_processes(options: TrainOptions) -> None:
    """``--coordinator``: join the multi-process run (before any JAX computation in this process)."""
    coordinator, n, i = options.coordinator, options.num_processes, options.process_id
    if coordinator is None:
        if n is not None or i is not None:
            raise ConfigError("--num-processes and --process-id need --coordinator HOST:PORT")
        return
    if coordinator == "auto":
        if n is not None or i is not None:
            raise ConfigError("--coordinator auto detects the processes; drop --num-processes and --process-id")
        distributed.initialize()
        return
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--coordinator must be HOST:PORT (process 0's address) or auto, got {coordinator!r}")
    if n is None or i is None:
        raise ConfigError(f"--coordinator {coordinator} needs --num-processes P and --process-id I")
    if i >= n:
        raise ConfigError(f"--process-id must be in [0, {n}) (--num-processes), got {i}")
    distributed.initialize(coordinator, n, i)


def _banner(config: RunConfig, data, mesh, out: Path) -> str:
    processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    return (
        f"jaxcnn train: {config.model} on {config.dataset} {data.x_train.shape[1:]}, "
        f"{len(data.x_train)} train / {len(data.x_test)} test, {config.epochs} epochs of "
        f"{len(data.x_train) // config.batch_size} steps, {config.optimizer} lr {config.lr} "
        f"({config.schedule}), {config.dtype} compute, batch {config.batch_size} over "
        f"{mesh.size} {mesh.devices.flat[0].platform} device(s){processes}, out {out}"
    )


def _result_line(summary: dict, result: FitResult, wall: float, out: Path) -> str:
    best = (
        f" (best {summary['best_test_accuracy']:.4f} at epoch {summary['best_epoch']:g})"
        if "best_epoch" in summary
        else ""
    )
    return (
        f"test accuracy {result.test['accuracy']:.4f}{best}, test loss {result.test['loss']:.4f} after "
        f"{int(result.state.step)} steps in {wall:.1f} s; checkpoint, metrics and plots in {out}"
    )


# ---------------------------------------------------------------------------------------------
# the pieces of a run
# ---------------------------------------------------------------------------------------------


def load_data(config: RunConfig) -> datasets.Dataset:
    """The run's dataset; the synthetic set has ``config.input_shape``, by default the shape of the
    model's example (:data:`models.MODELS`)."""
    if config.input_shape is not None and config.dataset != "synthetic":
        raise ConfigError(f"--input-shape applies to the synthetic dataset only, not {config.dataset!r}")
    if config.dataset == "synthetic":
        *image_shape, channels = config.input_shape or models.MODELS[config.model].input_shape
        return datasets.load("synthetic", image_shape=tuple(image_shape), channels=channels, num_classes=4)
    return datasets.load(config.dataset, data_dir=config.data_dir)


def build_model(config: RunConfig, num_classes: int):
    """The model (as trained: GoogLeNet with its auxiliary heads) and the training and test losses that fit
    its outputs (:data:`~jaxcnn.train.step.LOSSES`)."""
    spec = models.MODELS.get(config.model)
    if spec is None or spec.outputs not in models.CLASSIFIER_OUTPUTS:
        classifiers = sorted(n for n, s in models.MODELS.items() if s.outputs in models.CLASSIFIER_OUTPUTS)
        raise unknown_choice("classifier", config.model, classifiers)
    loss, eval_loss = LOSSES[spec.outputs]
    return models.build(config.model, num_classes, for_training=True), loss, eval_loss


def _augmenter(config: RunConfig, example_rank: int):
    """``augment``: images get a random crop (pad 2), flip and rotation (10 degrees); ``shift``: 1-D
    signals get random circular shifts of up to ``shift`` samples."""
    if config.augment and example_rank != 3:
        raise ConfigError("--augment needs an image dataset (N, H, W, C); this one has 1-D signals")
    if config.shift and example_rank != 2:
        raise ConfigError(f"--shift needs 1-D signals (N, L, C); this dataset has examples of rank {example_rank}")
    if config.shift:
        return lambda key, x: datasets.roll_signal(key, x, config.shift)
    if config.augment:
        return lambda key, x: datasets.augment(key, x, crop_pad=2, flip=True, rotate_deg=10.0)
    return None


def _optimizer(config: RunConfig, num_train: int):
    steps = config.epochs * (num_train // config.batch_size)
    return make_optimizer(config.optimizer, config.lr, schedule=config.schedule, total_steps=max(steps, 1))


class Setup(NamedTuple):
    """What a :class:`RunConfig` builds on its dataset; building it checks that they fit together."""

    model: Layer
    loss: Callable
    eval_loss: Callable
    optimizer: optax.GradientTransformation
    learning_rate: optax.Schedule
    augment: Callable | None


def set_up(config: RunConfig, data: datasets.Dataset) -> Setup:
    """The model, loss, optimizer, schedule and augmentation ``config`` names, for ``data``."""
    model, loss, eval_loss = build_model(config, data.num_classes)
    optimizer, lr = _optimizer(config, len(data.x_train))
    return Setup(model, loss, eval_loss, optimizer, lr, _augmenter(config, data.x_train.ndim - 1))


def train(config: RunConfig, setup: Setup, data: datasets.Dataset, out: Path, **settings: Any) -> FitResult:
    """:func:`fit` ``setup`` on ``data``, checkpointing to ``out``; ``settings``: more
    :class:`~jaxcnn.train.loop.FitConfig` fields (``resume``, ``checkpoint_every``, ``log_every``,
    ``max_steps``, ``mesh``, ``progress``)."""
    fit_config = FitConfig(
        config.epochs, config.batch_size, setup.optimizer, learning_rate=setup.learning_rate, seed=config.seed,
        loss_fn=setup.loss, eval_loss_fn=setup.eval_loss, augment=setup.augment, out_dir=out,
        meta={"model": config.model, "dataset": config.dataset, "config": config.asdict()},
        compute_dtype=COMPUTE_DTYPES[config.dtype],
    )  # fmt: skip
    return fit(setup.model, data, fit_config._replace(**settings))


def best_epoch(history: list[dict]) -> dict:
    """The epoch with the highest test accuracy: ``{"best_test_accuracy", "best_epoch"}`` (empty if none)."""
    evaluated = [row for row in history if "test_accuracy" in row]
    if not evaluated:
        return {}
    best = max(evaluated, key=lambda row: row["test_accuracy"])  # the first of equals
    return {"best_test_accuracy": best["test_accuracy"], "best_epoch": best["epoch"]}


def write_summary(out: Path, config: RunConfig, setup: Setup, data, result: FitResult, wall: float, *, plots: bool):
    """``summary.json`` (and the PNG plots) of a finished run, written by process 0."""
    from .. import plots as plotting

    state = distributed.local_copy(result.state)
    summary = {
        "test_accuracy": result.test["accuracy"],
        "test_loss": result.test["loss"],
        **best_epoch(result.history),
        "steps": int(state.step),
        "wall_time_s": round(wall, 1),
        "environment": {
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
        },
    }
    if plots:
        made = plotting.plot_run(out, setup.model, state, data, result)
        summary["plots"] = [str(p) for p in made if p is not None]
    text = json.dumps({**summary, "config": config.asdict()}, indent=1) + "\n"
    atomic_write_bytes(out / "summary.json", text.encode())
    return summary


def load_checkpoint(directory: str | Path, data_dir: str | None = None):
    """The run a ``jaxcnn train`` left in ``directory``: ``(config, checkpoint meta, model, train state,
    dataset)``, the model as trained (GoogLeNet with its auxiliary heads)."""
    saved = checkpoint.read_meta(directory)["config"]
    config = resolve_config({}, saved if data_dir is None else {**saved, "data_dir": data_dir})
    data = load_data(config)
    model, _, _ = build_model(config, data.num_classes)
    optimizer, _ = _optimizer(config, len(data.x_train))
    target = init_train_state(model, (config.batch_size, *data.x_train.shape[1:]), optimizer, config.seed)
    state, meta = checkpoint.load(directory, target)
    return config, meta, model, state, data


def evaluate_checkpoint(directory: str | Path, data_dir: str | None = None) -> tuple[RunConfig, dict, dict]:
    """Re-evaluate the checkpoint a ``jaxcnn train`` run left in ``directory`` on its test split;
    returns ``(config, checkpoint meta, {"loss", "accuracy", "predictions"})``."""
    config, meta, model, state, data = load_checkpoint(directory, data_dir)
    _, _, eval_loss = build_model(config, data.num_classes)
    result = evaluate(
        model, state.params, state.model_state, data.x_test, data.y_test, loss_fn=eval_loss,
        compute_dtype=COMPUTE_DTYPES[config.dtype],
    )  # fmt: skip
    return config, meta, result
