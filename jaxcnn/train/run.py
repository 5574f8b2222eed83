"""A whole training run by name, as ``jaxcnn train`` and ``jaxcnn eval`` do it.

The command line only parses: it hands its :class:`TrainOptions` to :func:`main` in one call, and
everything else happens here, in this order: the XLA:CPU route (:mod:`jaxcnn.xla_cpu`, before JAX
starts), joining the other processes (``--coordinator``), the :class:`~jaxcnn.train.recipes.RunConfig`
(the dataset's recipe, or a resumed run's saved configuration), the device mesh, the data, the model,
:func:`~jaxcnn.train.loop.fit`, and ``summary.json`` with the plots. :func:`evaluate_checkpoint`
re-evaluates a finished run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from .. import checkpoint, distributed, models, xla_cpu
from .. import data as datasets
from .._files import atomic_write, atomic_write_bytes
from ..data import transforms
from ..errors import ConfigError, FileFormatError, unknown_choice
from ..layers import Layer
from . import finetune
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
    "with_validation",
    "calibrated",
    "checkpoint_dtype",
    "privacy_of",
    "SPLIT_FILE",
]

SPLIT_FILE = "split.npz"  # the validation rows held out of the training set, recorded in the run directory


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
    augment: bool | str | None = None
    shift: int | None = None
    seed: int = 0
    dtype: str | None = None
    val_fraction: float | None = None
    eval_test_every_epoch: bool | None = None
    weight_decay: float | None = None
    weights: str | None = None
    freeze: str | None = None
    head_lr: float | None = None
    preprocessing: str | None = None
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
    dp_epsilon: float | None = None
    dp_noise: float | None = None
    dp_clip: float | None = None
    dp_delta: float | None = None
    dp_augmult: int | None = None


# ---------------------------------------------------------------------------------------------
# jaxcnn train, from its options
# ---------------------------------------------------------------------------------------------


def main(options: TrainOptions) -> int:
    """``jaxcnn train``: resolve ``options`` (route, processes, configuration, devices), train, report.
    Process 0 writes the summary and plots and prints the result; returns the exit status."""
    config = _config(options)  # plain Python and a checkpoint's header: no JAX computation yet
    xla_cpu.prefer_xla_cpu_convolutions(config.dtype)  # before the backend starts: XLA reads its flags then
    _join_processes(options)  # then: jax.distributed.initialize must precede any JAX computation
    out = Path(options.out or f"runs/{config.model}-{config.dataset}")
    mesh = distributed.check_mesh(distributed.make_mesh(options.devices, arg="--devices"), config.batch_size)
    data = with_validation(load_data(config), config, out, recorded=options.resume)
    config = calibrated(config, len(data.x_train))
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


def calibrated(config: RunConfig, num_train: int) -> RunConfig:
    """``config`` with ``dp_noise`` for a private run given ``dp_epsilon``: the smallest noise multiplier
    that spends at most ``dp_epsilon`` over the run's steps at ``dp_delta``
    (:func:`jaxcnn.privacy.calibrate_noise`; a resumed run keeps its saved one)."""
    if config.dp_epsilon is None or config.dp_noise is not None:
        return config
    from .. import privacy

    rate, steps = config.batch_size / num_train, config.epochs * (num_train // config.batch_size)
    sigma = privacy.calibrate_noise(config.dp_epsilon, rate, steps, config.dp_delta)
    if jax.process_index() == 0:
        print(f"jaxcnn train: noise multiplier {sigma:.4f} spends epsilon {config.dp_epsilon} at delta "
              f"{config.dp_delta} over {steps} steps at sampling rate {rate:.5f}",
              file=sys.stderr, flush=True)  # fmt: skip
    return dataclasses.replace(config, dp_noise=sigma)


def privacy_of(config: RunConfig):
    """The run's :class:`jaxcnn.privacy.DPConfig`, or None for an ordinary run."""
    if not config.private:
        return None
    from .. import privacy

    return privacy.DPConfig(clip=config.dp_clip, noise_multiplier=config.dp_noise, delta=config.dp_delta,
                            augmult=config.dp_augmult or 1)  # fmt: skip


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
    val = f" / {len(data.x_val)} validation" if data.has_validation else ""
    return (
        f"jaxcnn train: {config.model} on {config.dataset} {data.x_train.shape[1:]}, "
        f"{len(data.x_train)} train{val} / {len(data.x_test)} test, {config.epochs} epochs of "
        f"{len(data.x_train) // config.batch_size} steps, {config.optimizer} lr {config.lr} "
        f"({config.schedule}), {config.dtype} compute, batch {config.batch_size} over "
        f"{mesh.size} {mesh.devices.flat[0].platform} device(s){processes}, out {out}"
        + (f"; DP-SGD: Poisson batches, clip {config.dp_clip}, noise multiplier {config.dp_noise:.4f}, delta "
           f"{config.dp_delta}" if config.private else "")
    )  # fmt: skip


def _result_line(summary: dict, result: FitResult, wall: float, out: Path) -> str:
    best = (
        f" (best validation at epoch {summary['best_epoch']:g}: test accuracy {summary['best_test_accuracy']:.4f})"
        if "best_epoch" in summary
        else ""
    )
    spent = f", epsilon {result.epsilon:.3f} at delta {summary['delta']}" if result.epsilon is not None else ""
    return (
        f"test accuracy {result.test['accuracy']:.4f}{best}{spent}, test loss {result.test['loss']:.4f} after "
        f"{int(result.state.step)} steps in {wall:.1f} s; checkpoint, metrics and plots in {out}"
    )


# ---------------------------------------------------------------------------------------------
# the pieces of a run
# ---------------------------------------------------------------------------------------------


def load_data(config: RunConfig) -> datasets.Dataset:
    """The run's dataset; the synthetic set has ``config.input_shape``, by default the shape of the
    model's example (:data:`models.MODELS`); an image folder's images are resized to it when given. With
    several processes, process 0 loads first (an image folder's cache is built once), then the others."""
    if config.input_shape is not None and config.dataset not in ("synthetic", "folder"):
        raise ConfigError(f"--input-shape applies to the synthetic dataset and image folders, not {config.dataset!r}")
    if config.dataset == "synthetic":
        *image_shape, channels = config.input_shape or models.MODELS[config.model].input_shape
        return datasets.load("synthetic", image_shape=tuple(image_shape), channels=channels, num_classes=4)
    kwargs = {"input_shape": config.input_shape} if config.dataset == "folder" else {}
    data = datasets.load(config.dataset, data_dir=config.data_dir, **kwargs) if jax.process_index() == 0 else None
    distributed.sync("jaxcnn-data-loaded")
    return data or datasets.load(config.dataset, data_dir=config.data_dir, **kwargs)


def with_validation(data: datasets.Dataset, config: RunConfig, out: Path, *, recorded: bool) -> datasets.Dataset:
    """``data`` with a validation split: its own (an image folder's ``val/``, an npz's ``x_val``), or
    ``config.val_fraction`` of the training set held out (stratified, from ``config.seed``;
    :func:`jaxcnn.data.validation_split`), its rows recorded in ``out/split.npz`` -- ``recorded``: read
    them from there (a resumed run, an evaluation) instead of drawing them."""
    if data.has_validation or not config.val_fraction:
        return data
    path = out / SPLIT_FILE
    if recorded and path.is_file():
        with np.load(path) as f:
            val, n = f["val_rows"], int(f["num_train"])
        if n != len(data.x_train):
            raise FileFormatError(f"{path} splits {n} training examples, the dataset has {len(data.x_train)}")
        train_rows = np.setdiff1d(np.arange(n), val, assume_unique=True)
    else:
        train_rows, val = datasets.validation_split(data.y_train, config.val_fraction, config.seed)
        if jax.process_index() == 0:
            atomic_write(path, lambda f: np.savez(f, val_rows=val, num_train=len(data.x_train)))
    x, y = data.x_train, data.y_train
    return data._replace(
        x_train=datasets.take(x, train_rows), y_train=y[train_rows], x_val=datasets.take(x, val), y_val=y[val]
    )


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
    """``augment``: images get :data:`jaxcnn.data.AUGMENTATIONS` ``[augment]`` (``True``: "standard", a
    random crop with padding 2, flips and rotations of up to 10 degrees); ``shift``: 1-D signals get
    random circular shifts of up to ``shift`` samples; ``preprocessing``: its training transform
    (:data:`jaxcnn.data.transforms.PREPROCESSING`, e.g. torchvision's random resized crop and flip)."""
    preprocessing = preprocessing_of(config)
    if preprocessing is not None:
        if config.augment or config.shift:
            raise ConfigError(f"--preprocessing {preprocessing.name} augments the images itself; drop --augment")
        return preprocessing.train
    if config.augment and example_rank != 3:
        raise ConfigError("--augment needs an image dataset (N, H, W, C); this one has 1-D signals")
    if config.shift and example_rank != 2:
        raise ConfigError(f"--shift needs 1-D signals (N, L, C); this dataset has examples of rank {example_rank}")
    if config.shift:
        return lambda key, x: datasets.roll_signal(key, x, config.shift)
    if config.augment:
        name = "standard" if config.augment is True else config.augment
        if name not in datasets.AUGMENTATIONS:
            raise unknown_choice("augmentation", name, datasets.AUGMENTATIONS)
        return lambda key, x: datasets.augment(key, x, **datasets.AUGMENTATIONS[name])
    return None


def preprocessing_of(config: RunConfig):
    """The run's input preprocessing (None: none): ``config.preprocessing``, or, when it is not given,
    torchvision's ImageNet transforms for torchvision weights."""
    name = config.preprocessing
    if name is None and config.weights and finetune.is_torchvision_file(config.weights):
        name = "imagenet"
    if name in (None, "none"):
        return None
    if name not in transforms.PREPROCESSING:
        raise unknown_choice("preprocessing", name, ["none", *transforms.PREPROCESSING])
    return transforms.PREPROCESSING[name]


def _optimizer(config: RunConfig, num_train: int, params: Any = None, state: Any = None):
    """The optimizer and the body's learning-rate schedule; fine-tuning (``freeze`` or ``head_lr``, with the
    model's ``params`` and ``state``) groups the parameters (:mod:`jaxcnn.train.finetune`)."""
    steps = max(config.epochs * (num_train // config.batch_size), 1)
    kwargs = dict(schedule=config.schedule, total_steps=steps, weight_decay=config.weight_decay)
    optimizer, lr = make_optimizer(config.optimizer, config.lr, **kwargs)
    if config.freeze == "none" and config.head_lr is None:
        return optimizer, lr
    head, _ = make_optimizer(config.optimizer, config.head_lr or config.lr, **kwargs)
    return finetune.grouped_optimizer(finetune.param_groups(params, state, config.freeze), optimizer, head), lr


class Setup(NamedTuple):
    """What a :class:`RunConfig` builds on its dataset; building it checks that they fit together."""

    model: Layer
    loss: Callable
    eval_loss: Callable
    optimizer: optax.GradientTransformation
    learning_rate: optax.Schedule
    augment: Callable | None
    initial: tuple[Any, Any] | None = None  # (params, state) from --weights
    eval_transform: Callable | None = None  # the preprocessing at evaluation


def _initial(config: RunConfig, model: Layer, example_shape: tuple[int, ...]) -> tuple[Any, Any]:
    """The model's params and state from ``seed``, then (``--weights``) from the weights file, whose
    classifier is replaced when the classes differ (the fresh keys said on stderr)."""
    box = {}

    def init(key):
        box["shape"], params, state = model.init(key, (1, *example_shape))
        return params, state

    params, state = jax.jit(init)(jax.random.fold_in(jax.random.PRNGKey(config.seed), 1))
    if config.weights is None:
        return params, state
    params, state, fresh = finetune.load_weights(config.weights, config.model, params, state)
    if fresh and jax.process_index() == 0:
        print(f"jaxcnn train: a new classifier for this dataset: {', '.join(fresh)}", file=sys.stderr, flush=True)
    return params, state


def set_up(config: RunConfig, data: datasets.Dataset) -> Setup:
    """The model, loss, optimizer, schedule, augmentation and (fine-tuning) initial weights ``config``
    names, for ``data``."""
    model, loss, eval_loss = build_model(config, data.num_classes)
    if config.freeze not in finetune.FREEZE:
        raise unknown_choice("freeze", config.freeze, finetune.FREEZE)
    if config.weights is None and (config.freeze != "none" or config.head_lr is not None):
        raise ConfigError("--freeze and --head-lr fine-tune: give --weights FILE")
    initial = _initial(config, model, data.input_shape) if config.weights or config.freeze != "none" else None
    params, state = initial if initial is not None else (None, None)
    optimizer, lr = _optimizer(config, len(data.x_train), params, state)
    preprocessing = preprocessing_of(config)
    augment = _augmenter(config, data.x_train.ndim - 1)
    eval_transform = preprocessing.eval if preprocessing is not None else None
    return Setup(model, loss, eval_loss, optimizer, lr, augment, initial, eval_transform)


def train(config: RunConfig, setup: Setup, data: datasets.Dataset, out: Path, **settings: Any) -> FitResult:
    """:func:`fit` ``setup`` on ``data``, checkpointing to ``out``; ``settings``: more
    :class:`~jaxcnn.train.loop.FitConfig` fields (``resume``, ``checkpoint_every``, ``log_every``,
    ``max_steps``, ``mesh``, ``progress``)."""
    private = privacy_of(config)
    fit_config = FitConfig(
        config.epochs, config.batch_size, setup.optimizer, learning_rate=setup.learning_rate, seed=config.seed,
        loss_fn=setup.loss, eval_loss_fn=setup.eval_loss, augment=setup.augment, out_dir=out,
        meta={"model": config.model, "dataset": config.dataset, "config": config.asdict()},
        compute_dtype=COMPUTE_DTYPES[config.dtype], eval_test_every_epoch=config.eval_test_every_epoch,
        initial=setup.initial, freeze_batch_norm=config.freeze != "none", eval_transform=setup.eval_transform,
        privacy=private,
    )  # fmt: skip
    model = setup.model if private is None else _builder(config, data.num_classes)
    return fit(model, data, fit_config._replace(**settings))


def _builder(config: RunConfig, num_classes: int) -> Callable:
    """The run's model as a function of its ops (what DP-SGD's per-example norms need)."""
    return lambda ops: models.build(config.model, num_classes, for_training=True, ops=ops)


def write_summary(out: Path, config: RunConfig, setup: Setup, data, result: FitResult, wall: float, *, plots: bool):
    """``summary.json`` (and the PNG plots) of a finished run, written by process 0."""
    from .. import plots as plotting

    state = distributed.local_copy(result.state)
    best = result.best
    summary = {
        "test_accuracy": result.test["accuracy"],  # the last state's
        "test_loss": result.test["loss"],
        **(
            {
                "best_epoch": best["epoch"],
                "best_step": best["step"],
                "best_val_accuracy": best["val_accuracy"],
                "best_test_accuracy": best["test"]["accuracy"],
                "best_test_loss": best["test"]["loss"],
            }
            if best is not None
            else {}
        ),  # fmt: skip
        **(
            {
                "epsilon": result.epsilon,
                "delta": config.dp_delta,
                "noise_multiplier": config.dp_noise,
                "clip": config.dp_clip,
                "augmult": privacy_of(config).augmult,
                "accountant": privacy_of(config).accountant,  # the DPConfig fit accounted with
            }
            if result.epsilon is not None
            else {}
        ),  # fmt: skip
        "validation": len(data.x_val) if data.has_validation else 0,
        "steps": int(state.step),
        "wall_time_s": round(wall, 1),
        "environment": {
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
        },
    }
    if plots:  # of the best state, when validation chose one
        shown = state if best is None else checkpoint.load(out, state, name=checkpoint.BEST_NAME)[0]
        shown_result = result if best is None else result._replace(test=best["test"])
        made = plotting.plot_run(out, setup.model, shown, data, shown_result)
        summary["plots"] = [str(p) for p in made if p is not None]
    text = json.dumps({**summary, "config": config.asdict()}, indent=1) + "\n"
    atomic_write_bytes(out / "summary.json", text.encode())
    return summary


WHICH = ("best", "last")  # jaxcnn eval --which: best.msgpack (the best validation) or checkpoint.msgpack


def _checkpoint_name(directory: Path, which: str | None) -> str:
    if which is not None and which not in WHICH:
        raise unknown_choice("checkpoint", which, WHICH)
    if which is None:
        which = "best" if (directory / checkpoint.BEST_NAME).is_file() else "last"
    return checkpoint.BEST_NAME if which == "best" else checkpoint.CHECKPOINT_NAME


def checkpoint_dtype(directory: str | Path, which: str | None = None) -> str:
    """The compute dtype the run in ``directory`` trained with (its route is chosen before JAX starts)."""
    saved = checkpoint.read_meta(Path(directory), name=_checkpoint_name(Path(directory), which))["config"]
    return saved.get("dtype", "float32")


def load_checkpoint(directory: str | Path, data_dir: str | None = None, which: str | None = None):
    """The run a ``jaxcnn train`` left in ``directory``: ``(config, checkpoint meta, model, train state,
    dataset)``, the model as trained (GoogLeNet with its auxiliary heads) and the dataset with the run's
    validation split. ``which``: "last" (``checkpoint.msgpack``), "best" (``best.msgpack``, the best
    validation accuracy), or None: the best when there is one, else the last."""
    directory = Path(directory)
    name = _checkpoint_name(directory, which)
    saved = checkpoint.read_meta(directory, name=name)["config"]
    config = resolve_config({}, saved if data_dir is None else {**saved, "data_dir": data_dir})
    data = with_validation(load_data(config), config, directory, recorded=True)
    model, _, _ = build_model(config, data.num_classes)
    structure = jax.eval_shape(lambda: _initial(dataclasses.replace(config, weights=None), model, data.input_shape))
    optimizer, _ = _optimizer(config, len(data.x_train), *structure)
    target = init_train_state(model, (config.batch_size, *data.x_train.shape[1:]), optimizer, config.seed)
    state, meta = checkpoint.load(directory, target, name=name)
    return config, meta, model, state, data


def evaluate_checkpoint(
    directory: str | Path, data_dir: str | None = None, which: str = "last"
) -> tuple[RunConfig, dict, dict]:
    """Re-evaluate a ``jaxcnn train`` run's last (``which="last"``) or best (``"best"``) state on its test
    split; returns ``(config, checkpoint meta, {"loss", "accuracy", "predictions"})``."""
    config, meta, model, state, data = load_checkpoint(directory, data_dir, which)
    _, _, eval_loss = build_model(config, data.num_classes)
    preprocessing = preprocessing_of(config)
    result = evaluate(
        model, state.params, state.model_state, data.x_test, data.y_test, loss_fn=eval_loss,
        compute_dtype=COMPUTE_DTYPES[config.dtype], transform=preprocessing.eval if preprocessing else None,
    )  # fmt: skip
    return config, meta, result
