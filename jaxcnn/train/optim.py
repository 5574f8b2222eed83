"""Optimizers and learning-rate schedules by name: the registries the CLI offers as choices.

``OPTIMIZERS`` maps a name to ``factory(learning_rate, *, momentum, weight_decay)`` returning an optax
``GradientTransformation``; ``SCHEDULES`` maps a name to ``factory(lr, total_steps, warmup_steps)``
returning an optax schedule. :func:`make_optimizer` combines the two.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import optax

from ..errors import ConfigError, unknown_choice

__all__ = ["OPTIMIZERS", "SCHEDULES", "make_learning_rate", "make_optimizer"]


def _decayed(optimizer: optax.GradientTransformation, weight_decay: float) -> optax.GradientTransformation:
    """``weight_decay * params`` added to the gradient before ``optimizer`` (L2 regularisation, as the
    ResNet paper's SGD has it); nothing when it is 0."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optimizer) if weight_decay else optimizer


# name -> factory(lr, *, momentum, weight_decay); weight_decay None: the optimizer's default
OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": lambda lr, *, momentum, weight_decay: _decayed(optax.sgd(lr), weight_decay or 0.0),
    "momentum": lambda lr, *, momentum, weight_decay: _decayed(optax.sgd(lr, momentum=momentum), weight_decay or 0.0),
    "adam": lambda lr, *, momentum, weight_decay: _decayed(optax.adam(lr), weight_decay or 0.0),
    "adamw": lambda lr, *, momentum, weight_decay: optax.adamw(
        lr, weight_decay=1e-4 if weight_decay is None else weight_decay
    ),
}


def _warmup_cosine(lr: float, total_steps: int, warmup_steps: int) -> optax.Schedule:
    warmup = warmup_steps or max(1, total_steps // 20)
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1))


SCHEDULES: dict[str, Callable[[float, int, int], optax.Schedule]] = {
    "constant": lambda lr, total_steps, warmup_steps: optax.constant_schedule(lr),
    "cosine": lambda lr, total_steps, warmup_steps: optax.cosine_decay_schedule(lr, total_steps),
    "warmup-cosine": _warmup_cosine,
    "step": lambda lr, total_steps, warmup_steps: optax.piecewise_constant_schedule(
        lr, {int(total_steps * 0.5): 0.1, int(total_steps * 0.75): 0.1}
    ),
}


def make_learning_rate(lr: float, schedule: str, total_steps: int, warmup_steps: int = 0) -> optax.Schedule:
    """A learning-rate schedule: constant, cosine decay to 0, linear warm-up then cosine, or /10 at 50% and 75%."""
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"lr must be a positive number, got {lr!r}")
    if total_steps < 1:
        raise ConfigError(f"total_steps must be positive, got {total_steps}")
    if schedule not in SCHEDULES:
        raise unknown_choice("schedule", schedule, SCHEDULES)
    return SCHEDULES[schedule](lr, total_steps, warmup_steps)


def make_optimizer(
    name: str = "adam",
    lr: float = 1e-3,
    *,
    schedule: str = "constant",
    total_steps: int = 1,
    warmup_steps: int = 0,
    momentum: float = 0.9,
    weight_decay: float | None = None,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """An optax optimizer by name with a learning-rate schedule; returns ``(optimizer, schedule)``.
    ``weight_decay``: added to the gradient (sgd, momentum, adam) or decoupled (adamw); None: 1e-4 for
    adamw, none for the others."""
    learning_rate = make_learning_rate(lr, schedule, total_steps, warmup_steps)
    if name not in OPTIMIZERS:
        raise unknown_choice("optimizer", name, OPTIMIZERS)
    return OPTIMIZERS[name](learning_rate, momentum=momentum, weight_decay=weight_decay), learning_rate
