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

from ..errors import ConfigError, unknown_choice

__all__ = ["RECIPES", "COMPUTE_DTYPES", "RunConfig", "resolve_config"]

# Per dataset: the model, epochs, batch size, optimizer and learning rate used when not given.
RECIPES: dict[str, dict[str, Any]] = {
    # MNIST-1D: the paper's CNN and batch; warm-up + cosine and random circular shifts of up to 8 samples
    # (measured on all 4,000 training signals: 98.0% for seed 0, 97.6% over seeds 0-2; constant lr without
    # shifts: 93.5%, 93.0%; with the default 10% validation split: 96.8%, 96.3%, 97.3% for seeds 0-2 under
    # the CLI's XLA:CPU route; 96.4%, 96.3%, 96.8% under XLA's emitter for everything).
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
    # CIFAR-10: ResNet-20 as He et al. (2016, section 4.2) train it: SGD with momentum 0.9 and weight decay
    # 1e-4, batch 128, lr 0.1 divided by 10 at 32k and 48k iterations ("step": at 50% and 75%), 64k iterations
    # (182 epochs of 351 steps on a 45k/5k train/validation split), 4-pixel padding, random 32x32 crops and
    # horizontal flips. The paper reports 8.75% test error (91.25% accuracy) for ResNet-20 (Table 6).
    "cifar10": dict(
        model="resnet20",
        epochs=182,
        batch_size=128,
        optimizer="momentum",
        lr=0.1,
        schedule="step",
        weight_decay=1e-4,
        augment="pad4-flip",
        val_fraction=0.1,
    ),  # fmt: skip
    # Your own images or arrays: a small CNN that takes any image size; give --model for another.
    "folder": dict(model="resnet20", epochs=30, batch_size=64, optimizer="adam", lr=1e-3),
    "npz": dict(model="resnet20", epochs=30, batch_size=64, optimizer="adam", lr=1e-3),
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
    augment: bool | str = False  # an augmentation of jaxcnn.data.AUGMENTATIONS; True: "standard"
    data_dir: str | None = None
    dtype: str = "float32"
    input_shape: tuple[int, ...] | None = None  # one example's shape: the synthetic set's, image folders' size
    shift: int = 0  # random circular shifts of 1-D signals by up to this many samples
    val_fraction: float | None = None  # held out of the training set for validation; None: 0.1 if epochs > 1
    eval_test_every_epoch: bool = False  # also evaluate the test split at each epoch's end (reported only)
    weight_decay: float | None = None  # None: the optimizer's default (adamw 1e-4, the others 0)
    weights: str | None = None  # fine-tuning: start from this torchvision state dict or jaxcnn checkpoint
    freeze: str = "none"  # fine-tuning: "none", "backbone" (train the classifier only) or "bn" (fixed batch norms)
    head_lr: float | None = None  # fine-tuning: the classifier's learning rate (default lr)
    preprocessing: str | None = None  # "imagenet" (torchvision's transforms) or "none"; None: imagenet for
    # torchvision weights, else none
    dp_epsilon: float | None = None  # DP-SGD: the target epsilon the noise was calibrated for
    dp_noise: float | None = None  # DP-SGD: the noise multiplier (given, or calibrated from dp_epsilon)
    dp_clip: float | None = None  # DP-SGD: the per-example gradient norm bound (default 1 when private)
    dp_delta: float | None = None  # DP-SGD: delta (default 1e-5 when private)
    dp_augmult: int | None = None  # DP-SGD: augmentations per sampled example (default 1 when private)

    @property
    def private(self) -> bool:
        return self.dp_epsilon is not None or self.dp_noise is not None

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
        saved = {"val_fraction": 0.0, **saved}  # a run from before validation splits had none
        saved = {**saved, "input_shape": tuple(saved["input_shape"]) if saved.get("input_shape") else None}
        changed = {k: v for k, v in given.items() if k in RESUMABLE}
        return RunConfig(**{"dtype": "float32", **saved, **changed, "seed": saved["seed"]})
    dataset = given.get("dataset", "mnist1d")
    if dataset not in RECIPES:
        raise unknown_choice("dataset", dataset, RECIPES)
    config = RunConfig(**{**RECIPES[dataset], **given, "dataset": dataset})
    if config.dtype not in COMPUTE_DTYPES:
        raise unknown_choice("dtype", config.dtype, COMPUTE_DTYPES)
    if config.val_fraction is None:  # a validation split chooses the best epoch, once there are several
        config = dataclasses.replace(config, val_fraction=0.1 if config.epochs > 1 else 0.0)
    return _private(config)


def _private(config: RunConfig) -> RunConfig:
    """The DP-SGD options checked together, with their defaults (clip 1, delta 1e-5) when private."""
    if config.dp_epsilon is not None and config.dp_noise is not None:
        raise ConfigError(f"give --dp-epsilon or --dp-noise, not both; got {config.dp_epsilon} and {config.dp_noise}")
    if not config.private:
        extra = [f"--{k.replace('_', '-')} {getattr(config, k)}" for k in ("dp_clip", "dp_delta", "dp_augmult")
                 if getattr(config, k) is not None]  # fmt: skip
        if extra:
            raise ConfigError(f"{', '.join(extra)} applies to private training: add --dp-epsilon or --dp-noise")
        return config
    if config.dtype != "float32":
        raise ConfigError(f"private training computes in float32, got --dtype {config.dtype}")
    if config.dp_delta is not None and not 0 < config.dp_delta < 1:
        raise ConfigError(f"--dp-delta must be in (0, 1), got {config.dp_delta}")
    if (config.dp_augmult or 1) > 1 and not config.augment:
        raise ConfigError(f"--dp-augmult {config.dp_augmult} draws augmentations of each example: add --augment")
    return dataclasses.replace(config, dp_clip=config.dp_clip or 1.0, dp_delta=config.dp_delta or 1e-5,
                               dp_augmult=config.dp_augmult or 1)  # fmt: skip
