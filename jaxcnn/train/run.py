"""A whole training run by name, as ``jaxcnn train`` and ``jaxcnn eval`` do it.

A :class:`RunConfig` names the dataset, model, optimizer and schedule (keys of
:data:`jaxcnn.data.DATASETS`, :data:`jaxcnn.models.MODELS`, :data:`~jaxcnn.train.optim.OPTIMIZERS` and
:data:`~jaxcnn.train.optim.SCHEDULES`); what it leaves out comes from the dataset's recipe in
:data:`RECIPES`. :func:`train` loads the data, builds everything, runs :func:`~jaxcnn.train.loop.fit`
and writes ``summary.json`` and the plots; :func:`evaluate_checkpoint` re-evaluates a finished run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .. import checkpoint, distributed, models
from .. import data as datasets
from .._files import atomic_write_bytes
from ..layers import Layer
from .loop import FitResult, fit
from .optim import make_optimizer
from .step import (
    aux_cross_entropy_loss,
    cross_entropy_loss,
    evaluate,
    init_train_state,
    primary_output,
    probability_nll_loss,
)

__all__ = [
    "prefer_xla_cpu_convolutions",
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

# Per dataset: the model, epochs, batch size, optimizer and learning rate used when not given.
RECIPES: dict[str, dict[str, Any]] = {
    # MNIST-1D: the paper's CNN and batch; warm-up + cosine and random circular shifts of up to 8 samples
    # (measured: 98.0% for seed 0, 97.6% over seeds 0-2; constant lr without shifts: 93.5%, 93.0%).
    "mnist1d": dict(
        model="mnist1d_cnn",
        epochs=150,
        batch_size=100,
        optimizer="adam",
        lr=1e-2,
        schedule="warmup-cosine",
        shift=8,
    ),  # fmt: skip
    "fashion-mnist": dict(model="lenet5", epochs=10, batch_size=128, optimizer="adam", lr=1e-3),
    "digits": dict(model="resnet20", epochs=30, batch_size=64, optimizer="adam", lr=1e-3),
    "synthetic": dict(model="lenet5", epochs=2, batch_size=32, optimizer="adam", lr=1e-3),
}
COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


# XLA:CPU's convolution route (benchmarks/NOTES.md, "XLA:CPU's convolution routes"). jaxlib 0.10 hands every
# convolution to YNNPACK unless this empty list says otherwise; XLA's own emitter ran fashion_cnn's 5x5
# 32->64 convolution 1.8x faster and its training step 1.2x faster on this project's machine.
XLA_CPU_CONVOLUTIONS = "--xla_cpu_experimental_ynn_fusion_type="


def prefer_xla_cpu_convolutions() -> bool:
    """Add :data:`XLA_CPU_CONVOLUTIONS` to ``XLA_FLAGS`` for this process; True if it was added.

    It must run before JAX starts its backend (XLA reads the flags then), so ``jaxcnn train`` and ``jaxcnn
    eval`` call it first; a script can too. Nothing is changed when ``JAXCNN_CPU_CONVOLUTIONS=jaxlib``
    (keep the jaxlib's default route), when ``XLA_FLAGS`` already says where YNNPACK goes, when the backend
    has started, or with a jaxlib other than the 0.10 series it was measured with (an XLA that does not
    know a flag refuses to start). GPU and TPU backends ignore the flag.
    """
    import jaxlib.version
    from jax._src import xla_bridge

    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get("JAXCNN_CPU_CONVOLUTIONS") == "jaxlib" or "ynn_fusion_type" in flags:
        return False
    if not jaxlib.version.__version__.startswith("0.10."):
        return False
    if xla_bridge.backends_are_initialized():
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {XLA_CPU_CONVOLUTIONS}".strip()
    return True


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run's numbers; stored in its checkpoint and ``summary.json``."""

    dataset: str = "mnist1d"
    model: str = "mnist1d_cnn"
    epochs: int = 150
    batch_size: int = 100
    optimizer: str = "adam"
    lr: float = 1e-2
    schedule: str = "constant"
    seed: int = 0
    augment: bool = False
    data_dir: str | None = None
    dtype: str = "float32"
    input_shape: tuple[int, ...] | None = None  # one example's shape, for the synthetic dataset
    shift: int = 0  # random circular shifts of 1-D signals by up to this many samples

    def asdict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_config(given: dict[str, Any], saved: dict[str, Any] | None = None) -> RunConfig:
    """A :class:`RunConfig` from the options ``given`` (None: not given). A fresh run fills the gaps from
    the dataset's recipe; a resumed one (``saved``: the checkpoint's config) keeps its saved values and
    seed, overridden by what was given."""
    given = {k: v for k, v in given.items() if v is not None}
    if saved is not None:
        saved = {**saved, "input_shape": tuple(saved["input_shape"]) if saved.get("input_shape") else None}
        return RunConfig(**{"dtype": "float32", **saved, **given, "seed": saved["seed"]})
    dataset = given.get("dataset", "mnist1d")
    if dataset not in RECIPES:
        raise ValueError(f"Unknown dataset: {dataset!r}. It needs to be one of {list(RECIPES)}")
    config = RunConfig(**{**RECIPES[dataset], **given, "dataset": dataset})
    if config.dtype not in COMPUTE_DTYPES:
        raise ValueError(f"dtype must be one of {list(COMPUTE_DTYPES)}, got {config.dtype!r}")
    return config


def load_data(config: RunConfig) -> datasets.Dataset:
    """The run's dataset; the synthetic set has ``config.input_shape``, by default the shape of the
    model's example (:data:`models.MODELS`)."""
    if config.input_shape is not None and config.dataset != "synthetic":
        raise ValueError(f"--input-shape applies to the synthetic dataset only, not {config.dataset!r}")
    if config.dataset == "synthetic":
        *image_shape, channels = config.input_shape or models.MODELS[config.model].input_shape
        return datasets.load("synthetic", image_shape=tuple(image_shape), channels=channels, num_classes=4)
    return datasets.load(config.dataset, data_dir=config.data_dir)


def build_model(config: RunConfig, num_classes: int):
    """The model (as trained: GoogLeNet with its auxiliary heads), the loss that fits its outputs
    (logits: cross-entropy; probabilities: NLL; logits and auxiliary logits: the weighted sum) and the
    test loss (cross-entropy of the logits alone for the latter)."""
    spec = models.MODELS.get(config.model)
    if spec is None or spec.outputs not in models.CLASSIFIER_OUTPUTS:
        classifiers = sorted(n for n, s in models.MODELS.items() if s.outputs in models.CLASSIFIER_OUTPUTS)
        raise ValueError(f"Unknown classifier: {config.model!r}. It needs to be one of {classifiers}")
    loss, eval_loss = {
        "logits": (cross_entropy_loss, cross_entropy_loss),
        "probabilities": (probability_nll_loss, probability_nll_loss),
        "logits+aux": (aux_cross_entropy_loss, lambda out, y: cross_entropy_loss(primary_output(out), y)),
    }[spec.outputs]
    return models.build(config.model, num_classes, for_training=True), loss, eval_loss


def _augmenter(config: RunConfig, example_rank: int):
    """``augment``: images get a random crop (pad 2), flip and rotation (10 degrees); ``shift``: 1-D
    signals get random circular shifts of up to ``shift`` samples."""
    if config.augment and example_rank != 3:
        raise ValueError("--augment needs an image dataset (N, H, W, C); this one has 1-D signals")
    if config.shift and example_rank != 2:
        raise ValueError(f"--shift needs 1-D signals (N, L, C); this dataset has examples of rank {example_rank}")
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


def train(config: RunConfig, setup: Setup, data: datasets.Dataset, out: Path, **fit_kwargs: Any) -> FitResult:
    """:func:`fit` ``setup`` on ``data``, checkpointing to ``out``; ``fit_kwargs``: ``resume``,
    ``checkpoint_every``, ``log_every``, ``max_steps``, ``mesh``, ``progress``."""
    return fit(
        setup.model, data, epochs=config.epochs, batch_size=config.batch_size, optimizer=setup.optimizer,
        learning_rate=setup.learning_rate, seed=config.seed, loss_fn=setup.loss, eval_loss_fn=setup.eval_loss,
        augment=setup.augment, out_dir=out,
        meta={"model": config.model, "dataset": config.dataset, "config": config.asdict()},
        compute_dtype=COMPUTE_DTYPES[config.dtype], **fit_kwargs,
    )  # fmt: skip


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

    model = setup.model
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
        summary["plots"] = [str(p) for p in plotting.plot_run(out, model, state, data, result) if p is not None]
    text = json.dumps({**summary, "config": config.asdict()}, indent=1) + "\n"
    atomic_write_bytes(out / "summary.json", text.encode())
    return summary


def load_checkpoint(directory: str | Path, data_dir: str | None = None):
    """The run a ``jaxcnn train`` left in ``directory``: ``(config, checkpoint meta, model, train state,
    dataset)``, the model as trained (GoogLeNet with its auxiliary heads)."""
    meta = checkpoint.read_meta(directory)
    config = resolve_config({"data_dir": data_dir}, meta["config"])
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
