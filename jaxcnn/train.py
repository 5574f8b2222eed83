"""Training with optax on the hand-derived VJPs: a ``TrainState`` pytree, a jitted step, evaluation,
checkpoints that resume bit-identically, and ``fit`` for scripts.

Reproducibility: everything random is a pure function of the seed and the step. The order of the
examples in epoch ``e`` is a permutation drawn from ``(seed, e)``; the dropout and augmentation key of
step ``t`` is ``fold_in(state.key, t)``. A run resumed from the checkpoint of step ``t`` therefore
replays exactly the batches and keys an uninterrupted run would have used, and on a deterministic
backend (XLA:CPU) ends with bit-identical parameters.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import checkpoint as ckpt
from . import losses
from .data.batching import batches
from .layers import Layer

__all__ = [
    "TrainState",
    "OPTIMIZERS",
    "SCHEDULES",
    "make_optimizer",
    "init_train_state",
    "make_train_step",
    "make_eval_step",
    "evaluate",
    "cross_entropy_loss",
    "probability_nll_loss",
    "FitResult",
    "fit",
]


class TrainState(NamedTuple):
    """Everything a training run carries from step to step (a pytree; checkpointed whole)."""

    params: Any  # trainable parameters
    model_state: Any  # non-trainable variables (batch-norm running statistics)
    opt_state: Any  # optax state
    step: jax.Array  # int32 scalar: number of updates applied
    key: jax.Array  # uint32[2] raw PRNG key; step t uses fold_in(key, t)


OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup-cosine", "step")


def make_learning_rate(lr: float, schedule: str, total_steps: int, warmup_steps: int = 0) -> optax.Schedule:
    """A learning-rate schedule: constant, cosine decay to 0, linear warm-up then cosine, or /10 at 50% and 75%."""
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if schedule == "constant":
        return optax.constant_schedule(lr)
    if schedule == "cosine":
        return optax.cosine_decay_schedule(lr, total_steps)
    if schedule == "warmup-cosine":
        warmup = warmup_steps or max(1, total_steps // 20)
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1))
    if schedule == "step":
        return optax.piecewise_constant_schedule(lr, {int(total_steps * 0.5): 0.1, int(total_steps * 0.75): 0.1})
    raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")


def make_optimizer(
    name: str = "adam",
    lr: float = 1e-3,
    *,
    schedule: str = "constant",
    total_steps: int = 1,
    warmup_steps: int = 0,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """An optax optimizer by name with a learning-rate schedule; returns ``(optimizer, schedule)``."""
    learning_rate = make_learning_rate(lr, schedule, total_steps, warmup_steps)
    if name == "sgd":
        opt = optax.sgd(learning_rate)
    elif name == "momentum":
        opt = optax.sgd(learning_rate, momentum=momentum)
    elif name == "adam":
        opt = optax.adam(learning_rate)
    elif name == "adamw":
        opt = optax.adamw(learning_rate, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {name!r}")
    return opt, learning_rate


def cross_entropy_loss(outputs: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy of logits (the hand-derived ``losses.softmax_cross_entropy``)."""
    return losses.softmax_cross_entropy(outputs, labels)


def probability_nll_loss(outputs: jax.Array, labels: jax.Array) -> jax.Array:
    """Negative log-likelihood for models that end in a Softmax layer (their outputs are probabilities)."""
    picked = jnp.take_along_axis(outputs, labels[:, None], axis=-1)[:, 0]
    return -jnp.mean(jnp.log(jnp.maximum(picked, jnp.finfo(outputs.dtype).tiny)))


def init_train_state(
    model: Layer, input_shape: tuple[int, ...], optimizer: optax.GradientTransformation, seed: int
) -> TrainState:
    """Initialise parameters from ``seed`` and the optimizer state; step 0."""
    init_key, run_key = jax.random.split(jax.random.PRNGKey(seed))
    _, params, model_state = model.init(init_key, input_shape)
    return TrainState(params, model_state, optimizer.init(params), jnp.zeros((), jnp.int32), run_key)


def make_train_step(
    model: Layer,
    optimizer: optax.GradientTransformation,
    loss_fn: Callable = cross_entropy_loss,
    augment: Callable | None = None,
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, dict]]:
    """A jitted ``step(state, x, y) -> (state, {"loss", "accuracy"})``.

    ``augment(key, x)``, if given, transforms the batch with the step's key before the forward pass.
    """

    def step(state: TrainState, x: jax.Array, y: jax.Array):
        step_key = jax.random.fold_in(state.key, state.step)
        augment_key, dropout_key = jax.random.split(step_key)
        if augment is not None:
            x = augment(augment_key, x)

        def loss_of(params):
            out, model_state = model.apply(params, state.model_state, x, key=dropout_key, train=True)
            return loss_fn(out, y), (out, model_state)

        (loss, (out, model_state)), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        accuracy = jnp.mean(jnp.argmax(out, axis=-1) == y)
        return TrainState(params, model_state, opt_state, state.step + 1, state.key), {
            "loss": loss,
            "accuracy": accuracy,
        }

    return jax.jit(step)


def make_eval_step(model: Layer, loss_fn: Callable = cross_entropy_loss) -> Callable:
    """A jitted ``eval_step(params, model_state, x, y) -> (sum of losses, number correct, outputs)``."""

    def eval_step(params, model_state, x, y):
        out, _ = model.apply(params, model_state, x, train=False)
        return loss_fn(out, y) * y.shape[0], jnp.sum(jnp.argmax(out, axis=-1) == y), out

    return jax.jit(eval_step)


def evaluate(
    model: Layer,
    params,
    model_state,
    x,
    y,
    *,
    batch_size: int = 500,
    loss_fn=cross_entropy_loss,
    eval_step: Callable | None = None,
) -> dict:
    """Mean loss and accuracy over ``(x, y)`` in eval mode, plus the predictions."""
    eval_step = eval_step or make_eval_step(model, loss_fn)
    total_loss, correct, predictions = 0.0, 0, []
    for start in range(0, len(x), batch_size):
        xb, yb = jnp.asarray(x[start : start + batch_size]), jnp.asarray(y[start : start + batch_size])
        loss_sum, n_correct, out = eval_step(params, model_state, xb, yb)
        total_loss += float(loss_sum)
        correct += int(n_correct)
        predictions.append(np.asarray(jnp.argmax(out, axis=-1)))
    n = len(x)
    return {"loss": total_loss / n, "accuracy": correct / n, "predictions": np.concatenate(predictions)}


class FitResult(NamedTuple):
    state: TrainState
    history: list[dict]  # one row per logged step / epoch, as written to metrics.jsonl
    test: dict | None  # final evaluation on the test split


class _Progress:
    """A rich progress bar on a terminal; silent otherwise."""

    def __init__(self, total: int, done: int, enabled: bool):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, completed=done, info="")

    def update(self, done: int, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _append_jsonl(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _truncate_metrics(path: Path, last_step: int) -> list[dict]:
    """Keep the rows up to ``last_step`` (a resumed run will log the later ones again)."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["step"] <= last_step]
    ckpt.atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
    return rows


def fit(
    model: Layer,
    data,
    *,
    epochs: int,
    batch_size: int,
    optimizer: optax.GradientTransformation,
    learning_rate: optax.Schedule | None = None,
    seed: int = 0,
    loss_fn: Callable = cross_entropy_loss,
    augment: Callable | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    checkpoint_every: int = 0,
    log_every: int = 50,
    meta: dict | None = None,
    progress: bool | None = None,
    max_steps: int | None = None,
) -> FitResult:
    """Train ``model`` on ``data`` (``x_train, y_train, x_test, y_test`` attributes) for ``epochs``.

    With ``out_dir``: a checkpoint every ``checkpoint_every`` steps (0: at each epoch's end) and at the
    end, and ``metrics.jsonl`` (one JSON row per ``log_every`` steps and per epoch). ``resume=True``
    continues from ``out_dir``'s checkpoint, replaying the same batches and keys. ``max_steps`` stops
    early (for tests and smoke runs).
    """
    if batch_size < 1 or batch_size > len(data.x_train):
        raise ValueError(f"batch_size must be in [1, {len(data.x_train)}] (the training set size), got {batch_size}")
    if epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs}")
    steps_per_epoch = len(data.x_train) // batch_size
    total_steps = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    input_shape = (batch_size, *data.x_train.shape[1:])
    state = init_train_state(model, input_shape, optimizer, seed)
    meta = {**(meta or {}), "seed": seed, "batch_size": batch_size, "epochs": epochs}
    out = Path(out_dir) if out_dir is not None else None
    history: list[dict] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        metrics_path = out / "metrics.jsonl"
        if resume:
            state, saved_meta = ckpt.load(out, state)
            for k in ("model", "dataset", "seed", "batch_size"):
                if k in meta and k in saved_meta and saved_meta[k] != meta[k]:
                    raise ckpt.CheckpointError(
                        f"{out / ckpt.CHECKPOINT_NAME} was written with {k}={saved_meta[k]!r}, not {meta[k]!r}"
                    )
            history = _truncate_metrics(metrics_path, int(state.step))
        elif metrics_path.exists():
            metrics_path.unlink()
    elif resume:
        raise ValueError("resume=True needs out_dir")

    def save_checkpoint(state: TrainState) -> None:
        if out is not None and jax.process_index() == 0:
            ckpt.save(out, state, {**meta, "step": int(state.step)})

    step_fn = make_train_step(model, optimizer, loss_fn, augment)
    eval_step = make_eval_step(model, loss_fn)
    bar = _Progress(total_steps, int(state.step), sys.stderr.isatty() if progress is None else progress)
    window_loss, window_acc, window_n, window_start = 0.0, 0.0, 0, time.perf_counter()

    def log(row: dict) -> None:
        history.append(row)
        if out is not None:
            _append_jsonl(out / "metrics.jsonl", row)

    try:
        step = int(state.step)
        while step < total_steps:
            epoch, start_step = divmod(step, steps_per_epoch)
            for xb, yb in batches(
                data.x_train, data.y_train, batch_size, seed=seed, epoch=epoch, start_step=start_step
            ):
                state, metrics = step_fn(state, jnp.asarray(xb), jnp.asarray(yb))
                step += 1
                window_loss += float(metrics["loss"])
                window_acc += float(metrics["accuracy"])
                window_n += 1
                if step % log_every == 0 or step == total_steps:
                    elapsed = time.perf_counter() - window_start
                    row = {
                        "step": step,
                        "epoch": epoch + (step - epoch * steps_per_epoch) / steps_per_epoch,
                        "loss": window_loss / window_n,
                        "accuracy": window_acc / window_n,
                        "lr": float(learning_rate(step - 1)) if learning_rate is not None else None,
                        "examples_per_s": window_n * batch_size / elapsed if elapsed > 0 else None,
                    }
                    log(row)
                    bar.update(
                        step, f"loss {row['loss']:.4f} acc {row['accuracy']:.3f} {row['examples_per_s'] or 0:,.0f} ex/s"
                    )
                    window_loss, window_acc, window_n, window_start = 0.0, 0.0, 0, time.perf_counter()
                if checkpoint_every and step % checkpoint_every == 0:
                    save_checkpoint(state)
                if step >= total_steps:
                    break
            if step % steps_per_epoch == 0:  # an epoch ended: evaluate on the test split and checkpoint
                result = evaluate(
                    model,
                    state.params,
                    state.model_state,
                    data.x_test,
                    data.y_test,
                    loss_fn=loss_fn,
                    eval_step=eval_step,
                )
                log(
                    {
                        "step": step,
                        "epoch": step / steps_per_epoch,
                        "test_loss": result["loss"],
                        "test_accuracy": result["accuracy"],
                    }
                )
                if not bar.bar and progress is not False:
                    print(
                        f"epoch {step // steps_per_epoch}: test loss {result['loss']:.4f}, "
                        f"test accuracy {result['accuracy']:.4f}",
                        file=sys.stderr,
                        flush=True,
                    )
                if not checkpoint_every:
                    save_checkpoint(state)
    finally:
        bar.close()
    save_checkpoint(state)
    test = evaluate(
        model, state.params, state.model_state, data.x_test, data.y_test, loss_fn=loss_fn, eval_step=eval_step
    )
    return FitResult(state, history, test)
