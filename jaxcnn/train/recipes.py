"""A run's configuration by name, and each dataset's recipe for what is not given.

A :class:`RunConfig` names the dataset, model, optimizer and schedule (keys of
:data:`jaxcnn.data.DATASETS`, :data:`jaxcnn.models.MODELS`, :data:`~jaxcnn.train.optim.OPTIMIZERS` and
:data:`~jaxcnn.train.optim.SCHEDULES`); what it leaves out comes from the dataset's recipe in
:data:`RECIPES`. :func:`resolve_config` makes one from the options given (and, resuming, the checkpoint's).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from ..errors import unknown_choice

__all__ = ["RECIPES", "COMPUTE_DTYPES", "RunConfig", "resolve_config"]

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
# --dtype: the compute dtype of the forward and backward passes (None: the parameters' float32)
COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


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


# What a resumed run may change: the rest is the checkpoint's.
RESUMABLE = ("model", "epochs", "batch_size", "optimizer", "lr", "dtype")


def resolve_config(given: dict[str, Any], saved: dict[str, Any] | None = None) -> RunConfig:
    """A :class:`RunConfig` from the options ``given`` (None: not given). A fresh run fills the gaps from
    the dataset's recipe; a resumed one (``saved``: the checkpoint's config) keeps its saved values and
    seed, overridden by the :data:`RESUMABLE` options given."""
    given = {k: v for k, v in given.items() if v is not None}
    if saved is not None:
        saved = {**saved, "input_shape": tuple(saved["input_shape"]) if saved.get("input_shape") else None}
        changed = {k: v for k, v in given.items() if k in RESUMABLE}
        return RunConfig(**{"dtype": "float32", **saved, **changed, "seed": saved["seed"]})
    dataset = given.get("dataset", "mnist1d")
    if dataset not in RECIPES:
        raise unknown_choice("dataset", dataset, RECIPES)
    config = RunConfig(**{**RECIPES[dataset], **given, "dataset": dataset})
    if config.dtype not in COMPUTE_DTYPES:
        raise unknown_choice("dtype", config.dtype, COMPUTE_DTYPES)
    return config
