"""``fit``: the training loop for scripts and the CLI, written as a short loop over small pieces.

``fit(model, data, config)`` takes the run's settings as one frozen :class:`FitConfig` (or its fields as
keywords, ``fit(model, data, epochs=2, batch_size=64, optimizer=optax.adam(1e-3))``). What happens after
each log window and each evaluation is up to :class:`Callback` objects: the progress bar
(:class:`ProgressBar`), ``metrics.jsonl`` (:class:`MetricsFile`) and checkpoints (:class:`Checkpoints`) are
callbacks themselves, and a user adds a TensorBoard or wandb writer the same way
(``fit(..., callbacks=[MyWriter()])``) without editing the loop.

Reproducibility: the order of the examples in epoch ``e`` is a permutation drawn from ``(seed, e)``
(:func:`jaxcnn.data.epoch_permutation`) and the dropout/augmentation key of step ``t`` is
``fold_in(state.key, t)``. A run resumed from the checkpoint of step ``t`` therefore replays exactly the
batches and keys an uninterrupted run would have used, and on a deterministic backend (XLA:CPU) ends
with bit-identical parameters.

One run is: :func:`_set_up` (the :class:`Loop` with its jitted steps, the initial or resumed state and
its :class:`Progress`), then :func:`_train_epoch` until the step budget is spent (a metrics row every
``log_every`` steps, an evaluation at each epoch's end), then the callbacks' ``on_end`` (the final
checkpoint) and a final evaluation.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import checkpoint as ckpt
from .. import distributed, privacy
from .._files import append_text, atomic_write_bytes
from ..data.batching import batches, epoch_permutation
from ..errors import ConfigError
from ..layers import Layer
from .dp import PoissonSampler, make_dp_train_step
from .step import (
    TrainState,
    as_compute_dtype,
    cross_entropy_loss,
    evaluate,
    init_train_state,
    make_eval_step,
    make_train_step,
)

__all__ = ["FitConfig", "FitResult", "fit", "Loop", "Progress", "Callback", "ProgressBar", "MetricsFile", "Checkpoints"]


class FitConfig(NamedTuple):
    """A run's settings, frozen (every field but the first three has a default).

    Data parallelism: ``devices`` (an int ``n``: ``n`` local devices per process; or a sequence of devices)
    or ``mesh`` (a 1-D mesh with axis ``"data"``) splits every global batch of ``batch_size`` over a device
    mesh; with several processes the mesh defaults to all devices of all processes (see :func:`fit`).
    """

    epochs: int
    batch_size: int
    optimizer: optax.GradientTransformation
    learning_rate: optax.Schedule | None = None  # the schedule, for the "lr" column of the metrics
    seed: int = 0  # initialisation, data order, dropout and augmentation keys
    loss_fn: Callable = cross_entropy_loss  # minimised: loss_fn(outputs, labels)
    eval_loss_fn: Callable | None = None  # the test loss reported (default loss_fn)
    augment: Callable | None = None  # augment(key, x), applied to each batch inside the step
    out_dir: str | Path | None = None  # checkpoint.msgpack and metrics.jsonl go here
    resume: bool = False  # continue from out_dir's checkpoint
    checkpoint_every: int = 0  # steps between checkpoints; 0: at each epoch's end
    log_every: int = 50  # steps per metrics row
    meta: dict | None = None  # stored with the checkpoint (a resumed run must match its identity keys)
    progress: bool | None = None  # the progress bar: None = on a terminal
    max_steps: int | None = None  # stop early (tests, smoke runs)
    devices: int | Sequence[jax.Device] | None = None
    mesh: jax.sharding.Mesh | None = None
    compute_dtype: Any = None  # e.g. jnp.bfloat16: mixed precision (make_objective)
    transfer_guard: str | None = None  # e.g. "disallow": run the steps between log rows under it
    donate: bool | None = None  # donate the train state to the step; None: on GPU/TPU, not on XLA:CPU
    eval_test_every_epoch: bool | None = None  # also the test split at each epoch's end; None: when no val
    initial: tuple[Any, Any] | None = None  # (params, model_state) to start from (fine-tuning) instead of seed's
    freeze_batch_norm: bool = False  # batch norm applies its running statistics in training too (fine-tuning)
    eval_transform: Callable | None = None  # the inputs' preprocessing at evaluation (the step's is `augment`)
    privacy: Any = None  # a jaxcnn.privacy.DPConfig: DP-SGD (Poisson batches, clipped and noised; train.dp)


class FitResult(NamedTuple):
    state: TrainState
    history: list[dict]  # one row per logged step / epoch, as written to metrics.jsonl
    test: dict | None  # the last state's evaluation on the test split
    best: dict | None = None  # with a validation split: the epoch of the best validation accuracy,
    # {"step", "epoch", "val_accuracy", "val_loss", "test": the best state's test evaluation}
    epsilon: float | None = None  # DP-SGD (config.privacy): the epsilon the run spent, at config.privacy.delta


class Loop(NamedTuple):
    """What one :func:`fit` call set up and keeps fixed while it runs."""

    config: FitConfig
    model: Layer
    data: Any
    mesh: jax.sharding.Mesh | None
    steps_per_epoch: int
    total_steps: int
    step_fn: Callable  # the jitted train step
    eval_step: Callable  # the jitted eval step
    out: Path | None
    meta: dict  # config.meta with the run's identity: seed, batch size, epochs
    writer: bool  # this process writes the files (process 0)
    validation: bool  # the data has a validation split: each epoch's end evaluates it and picks the best
    test_every_epoch: bool  # each epoch's end evaluates the test split too (reporting only)
    sampler: PoissonSampler | None = None  # DP-SGD: step t's Poisson batch (config.privacy)


class Progress:
    """The run's counters: the step, the rows logged so far, the metrics of the open log window (summed on
    the device; a window may span an epoch's end), the last step saved and evaluated, and the best
    validation so far (chosen on the validation split only; the test split never chooses)."""

    def __init__(self, step: int, history: list[dict], best: dict | None = None):
        self.step, self.history, self.window = step, history, _Window()
        self.saved_step = -1  # a run that ends on an epoch boundary has already saved and evaluated
        self.evaluated: dict[str, tuple[int, dict]] = {}  # split -> (step, evaluation)
        self.best = best  # {"step", "epoch", "val_accuracy", "val_loss"} of the best validation accuracy
        self.best_state: Any = None  # its (params, model_state) on the host, when there is no out_dir
        self.started, self.evaluating = time.perf_counter(), 0.0  # the wall clock, and the part spent evaluating

    def training_time(self) -> float:
        """Seconds since this process set the run up (compilation included), less those spent evaluating."""
        return time.perf_counter() - self.started - self.evaluating


# ---------------------------------------------------------------------------------------------
# callbacks
# ---------------------------------------------------------------------------------------------


class Callback:
    """Hooks :func:`fit` calls; override what you need. ``on_log`` and ``on_evaluation`` get the row just
    appended to ``progress.history`` (the same dict ``metrics.jsonl`` stores); ``on_step`` runs after every
    step and must not read the device (the loop does not wait between log rows); ``on_end`` when the steps
    are done (before the final evaluation); ``on_close`` always, also when the run fails."""

    def on_start(self, loop: Loop, progress: Progress, state: TrainState) -> None: ...

    def on_step(self, loop: Loop, progress: Progress, state: TrainState) -> None: ...

    def on_log(self, loop: Loop, progress: Progress, row: dict) -> None: ...

    def on_evaluation(self, loop: Loop, progress: Progress, row: dict, state: TrainState) -> None: ...

    def on_end(self, loop: Loop, progress: Progress, state: TrainState) -> None: ...

    def on_close(self, loop: Loop, progress: Progress) -> None: ...


class ProgressBar(Callback):
    """A rich progress bar on a terminal (``config.progress``, None: when stderr is one); without a bar,
    one line per evaluation on stderr unless ``config.progress`` is False. Process 0 only."""

    def __init__(self):
        self.bar = None
        self.spent = ""  # DP-SGD: the epsilon at the last epoch's end, shown beside the metrics

    def on_start(self, loop, progress, state):
        enabled = loop.config.progress
        if not loop.writer or not (sys.stderr.isatty() if enabled is None else enabled):
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"))
        self.bar = Progress(*columns, TimeRemainingColumn(), transient=False)
        self.bar.start()
        self.task = self.bar.add_task("train", total=loop.total_steps, completed=progress.step, info="")

    def on_log(self, loop, progress, row):
        if self.bar is not None:
            info = f"loss {row['loss']:.4f} acc {row['accuracy']:.3f} {row['examples_per_s'] or 0:,.0f} ex/s"
            self.bar.update(self.task, completed=progress.step, info=info + self.spent)

    def on_evaluation(self, loop, progress, row, state):
        if self.bar is None and loop.config.progress is not False and loop.writer:
            splits = [s for s in ("val", "test") if f"{s}_loss" in row]
            scores = ", ".join(
                f"{s} loss {row[f'{s}_loss']:.4f}, {s} accuracy {row[f'{s}_accuracy']:.4f}" for s in splits
            )
            spent = f", epsilon {row['epsilon']:.3f}" if "epsilon" in row else ""
            print(f"epoch {row['epoch']:g}: {scores}{spent}", file=sys.stderr, flush=True)
        if "epsilon" in row:
            self.spent = f" epsilon {row['epsilon']:.3f}"

    def on_close(self, loop, progress):
        if self.bar is not None:
            self.bar.stop()


class MetricsFile(Callback):
    """``<out>/metrics.jsonl``: every row, one JSON object per line, appended as it is logged (process 0).
    A fresh run starts the file anew; a resumed one keeps the rows up to its checkpoint (see :func:`fit`)."""

    def on_log(self, loop, progress, row):
        if loop.writer:
            append_text(loop.out / "metrics.jsonl", json.dumps(row) + "\n")

    def on_evaluation(self, loop, progress, row, state):
        self.on_log(loop, progress, row)


class Checkpoints(Callback):
    """``<out>/checkpoint.msgpack`` every ``config.checkpoint_every`` steps (0: at each epoch's end) and at
    the end: process 0 writes it atomically, every process waits until it is on disk."""

    def on_step(self, loop, progress, state):
        every = loop.config.checkpoint_every
        if every and progress.step % every == 0:
            self.save(loop, progress, state)

    def on_evaluation(self, loop, progress, row, state):
        if progress.best is not None and progress.best["step"] == progress.step:  # validation improved:
            if loop.writer:  # best.msgpack first, so a checkpoint never names a best that is not on disk
                meta = {**loop.meta, "step": progress.step, "best": progress.best}
                ckpt.save(loop.out, distributed.local_copy(state), meta, name=ckpt.BEST_NAME)
            distributed.sync(f"jaxcnn-best-{progress.step}")
        if not loop.config.checkpoint_every:
            self.save(loop, progress, state)

    def on_end(self, loop, progress, state):
        self.save(loop, progress, state)

    @staticmethod
    def save(loop: Loop, progress: Progress, state: TrainState) -> None:
        """Once per step; no process runs ahead of the saved state."""
        if progress.step == progress.saved_step:
            return
        progress.saved_step = progress.step
        if loop.writer:
            meta = {**loop.meta, "step": progress.step, "best": progress.best}
            ckpt.save(loop.out, distributed.local_copy(state), meta)
        distributed.sync(f"jaxcnn-checkpoint-{progress.step}")


def _callbacks(loop: Loop, extra: Sequence[Callback]) -> tuple[Callback, ...]:
    """The progress bar, and with an output directory the metrics file and the checkpoints, then ``extra``."""
    files = (MetricsFile(), Checkpoints()) if loop.out is not None else ()
    for callback in extra:
        if not isinstance(callback, Callback):
            raise ConfigError(f"callbacks must be jaxcnn.train.Callback instances, got {callback!r}")
    return (ProgressBar(), *files, *extra)


def _notify(callbacks: Sequence[Callback], hook: str, *args: Any) -> None:
    for callback in callbacks:
        getattr(callback, hook)(*args)


# ---------------------------------------------------------------------------------------------
# set up and resume
# ---------------------------------------------------------------------------------------------


def _check_sizes(config: FitConfig, num_train: int) -> None:
    if not 1 <= config.batch_size <= num_train:
        raise ConfigError(f"batch_size must be in [1, {num_train}] (the training set size), got {config.batch_size}")
    if config.epochs < 1:
        raise ConfigError(f"epochs must be a positive int, got {config.epochs}")
    if config.devices is not None and config.mesh is not None:
        raise ConfigError(
            f"give devices or mesh, not both; got devices={config.devices!r} and a mesh of {config.mesh.size}"
        )
    if config.resume and config.out_dir is None:
        raise ConfigError("resume=True needs out_dir")


def _donates(donate: bool | None, mesh: jax.sharding.Mesh | None) -> bool:
    """``donate``, or by default: on a GPU or TPU, where donation keeps parameters and optimizer state
    from being held twice in device memory. Not on XLA:CPU, where host memory is plentiful and the
    donated loop measured ~7% slower per step (fashion_cnn, batch 128: ~160 vs ~149 ms)."""
    if donate is not None:
        return bool(donate)
    device = mesh.devices.flat[0] if mesh is not None else jax.devices()[0]
    return device.platform != "cpu"


def _truncate_metrics(path: Path, last_step: int, *, write: bool = True) -> list[dict]:
    """Keep the rows up to ``last_step`` (a resumed run will log the later ones again).

    ``write=False`` only reads them (processes other than 0 leave the file to process 0).
    """
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["step"] <= last_step]
    if write:
        atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
    return rows


def _resume(loop: Loop, state: TrainState) -> tuple[TrainState, list[dict], dict | None]:
    """The checkpoint in ``loop.out`` (refused if it belongs to another run), the metrics up to it and the
    best validation it had seen."""
    state, saved_meta = ckpt.load(loop.out, state)
    for k in ("model", "dataset", "seed", "batch_size", "privacy"):
        if k in loop.meta and k in saved_meta and saved_meta[k] != loop.meta[k]:
            raise ckpt.CheckpointError(
                f"{loop.out / ckpt.CHECKPOINT_NAME} was written with {k}={saved_meta[k]!r}, not {loop.meta[k]!r}"
            )
    history = _truncate_metrics(loop.out / "metrics.jsonl", int(state.step), write=loop.writer)
    distributed.sync("jaxcnn-fit-resumed")  # everyone has read the checkpoint before it changes
    return state, history, saved_meta.get("best")


def _start(loop: Loop, state: TrainState, resume: bool) -> tuple[TrainState, list[dict], dict | None]:
    """Create the output directory; resume from it, or start afresh (no metrics, no best state)."""
    if loop.out is None:
        return state, [], None
    loop.out.mkdir(parents=True, exist_ok=True)
    if resume:
        return _resume(loop, state)
    if loop.writer:
        for stale in ("metrics.jsonl", ckpt.BEST_NAME):
            (loop.out / stale).unlink(missing_ok=True)
    return state, [], None


def _as_layer(model: Layer | Callable) -> tuple[Layer, Callable | None]:
    """``model`` as a :class:`Layer`, and the function of ops that builds it (None when given a Layer)."""
    if isinstance(model, Layer):
        return model, None
    if not callable(model):
        raise ConfigError(f"model must be a jaxcnn Layer or a function of ops returning one, got {model!r}")
    from .. import ops

    layer = model(ops)
    if not isinstance(layer, Layer):
        raise ConfigError(f"model(jaxcnn.ops) must return a jaxcnn Layer, got {type(layer).__name__}")
    return layer, model


def _private_step(build: Callable | None, config: FitConfig, num_train: int, mesh, dtype, donate: bool):
    """DP-SGD's step and Poisson sampler (``config.privacy``), or a refusal naming what does not fit."""
    dp = config.privacy
    if not isinstance(dp, privacy.DPConfig):
        raise ConfigError(f"privacy must be a jaxcnn.privacy.DPConfig, got {dp!r}")
    dp = dp.checked()
    if build is None:
        raise ConfigError("privacy needs the model as a function of its ops (lambda ops: models.tanh_cnn(ops=ops)), "
                          "so that each layer's input and cotangent can be recorded; got a Layer")  # fmt: skip
    if dtype is not None or config.freeze_batch_norm:
        raise ConfigError(f"privacy trains in float32 without frozen batch norms; got compute_dtype={dtype}, "
                          f"freeze_batch_norm={config.freeze_batch_norm}")  # fmt: skip
    sampler = PoissonSampler(config.seed, num_train, config.batch_size / num_train, mesh.size if mesh else 1)
    step = make_dp_train_step(build, config.optimizer, config.loss_fn, dp, expected_batch_size=config.batch_size,
                              augment=config.augment, mesh=mesh, donate=donate)  # fmt: skip
    return step, sampler


def _set_up(model: Layer | Callable, data: Any, config: FitConfig) -> tuple[Loop, TrainState, Progress]:
    """The run's :class:`Loop` (mesh, jitted steps), its initial (or resumed) state and its progress."""
    _check_sizes(config, len(data.x_train))
    model, build = _as_layer(model)
    mesh = config.mesh
    if mesh is None and (config.devices is not None or jax.process_count() > 1):
        mesh = distributed.make_mesh(config.devices)
    if mesh is not None:
        distributed.check_mesh(mesh, config.batch_size)
    dtype = as_compute_dtype(config.compute_dtype)
    steps_per_epoch = len(data.x_train) // config.batch_size
    total_steps = config.epochs * steps_per_epoch
    identity = {"seed": config.seed, "batch_size": config.batch_size, "epochs": config.epochs}
    if config.privacy is not None:  # a private run resumes only with the noise and clip it was accounted with
        identity["privacy"] = {k: getattr(config.privacy, k) for k in ("clip", "noise_multiplier", "delta")}
        if getattr(config.privacy, "augmult", 1) != 1:  # (runs without it keep the identity they had)
            identity["privacy"]["augmult"] = config.privacy.augmult
    validation = bool(getattr(data, "has_validation", False))
    test_every_epoch = config.eval_test_every_epoch if config.eval_test_every_epoch is not None else not validation
    donate = _donates(config.donate, mesh)
    if config.privacy is not None:
        step_fn, sampler = _private_step(build, config, len(data.x_train), mesh, dtype, donate)
    else:
        step_fn, sampler = make_train_step(model, config.optimizer, config.loss_fn, config.augment, mesh=mesh,
                                           compute_dtype=dtype, donate=donate,
                                           freeze_batch_norm=config.freeze_batch_norm), None  # fmt: skip
    loop = Loop(
        config, model, data, mesh, steps_per_epoch,
        total_steps if config.max_steps is None else min(config.max_steps, total_steps),
        step_fn,
        make_eval_step(model, config.eval_loss_fn or config.loss_fn, compute_dtype=dtype,
                       transform=config.eval_transform),
        Path(config.out_dir) if config.out_dir is not None else None,
        {**(config.meta or {}), **identity},
        jax.process_index() == 0, validation, test_every_epoch, sampler,
    )  # fmt: skip
    state = init_train_state(model, (config.batch_size, *data.x_train.shape[1:]), config.optimizer, config.seed)
    if config.initial is not None:  # fine-tuning: these parameters, a fresh optimizer state for them
        params, model_state = config.initial
        state = state._replace(params=params, model_state=model_state, opt_state=config.optimizer.init(params))
    state, history, best = _start(loop, state, config.resume)
    if mesh is not None:
        state = distributed.replicate(state, mesh)
    return loop, state, Progress(int(state.step), history, best)


def epsilon_spent(loop: Loop, step: int) -> float | None:
    """DP-SGD: the epsilon ``step`` steps have spent (None without ``config.privacy``)."""
    if loop.sampler is None:
        return None
    return loop.config.privacy.epsilon(loop.sampler.rate, step)


# ---------------------------------------------------------------------------------------------
# log and evaluate
# ---------------------------------------------------------------------------------------------


@jax.jit
def _add_metrics(total: dict, metrics: dict) -> dict:
    return jax.tree_util.tree_map(jnp.add, total, metrics)


class _Window:
    """The training metrics of the steps since the last logged row, summed on the device: nothing is
    read back to the host until the row is written (one read per log window, not one per step)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums, self.steps, self.start = None, 0, time.perf_counter()

    def add(self, metrics: dict) -> None:
        self.sums = metrics if self.sums is None else _add_metrics(self.sums, metrics)
        self.steps += 1

    def means(self) -> dict:
        """The window's mean of each metric (the one read from the device)."""
        return {k: float(v) / self.steps for k, v in jax.device_get(self.sums).items()}


def _log_row(loop: Loop, progress: Progress, window: _Window, epoch: int) -> dict:
    """One training row: the mean loss and accuracy of the window, the learning rate, the throughput."""
    means = window.means()  # waits for the window's last step: the time below is the device's, not the host's
    elapsed = time.perf_counter() - window.start
    schedule, step = loop.config.learning_rate, progress.step
    row = {
        "step": step,
        "epoch": epoch + (step - epoch * loop.steps_per_epoch) / loop.steps_per_epoch,
        "loss": means["loss"],
        "accuracy": means["accuracy"],
        "lr": float(schedule(step - 1)) if schedule is not None else None,
        "examples_per_s": window.steps * loop.config.batch_size / elapsed if elapsed > 0 else None,
    }
    window.reset()
    return row


def _evaluate(loop: Loop, progress: Progress, state: Any, split: str = "test") -> dict:
    """Loss and accuracy on ``split`` ("val" or "test") of ``state`` (a train state, or ``(params,
    model_state)``), once per step and split, on one local device with a local copy of the state."""
    cached = progress.evaluated.get(split)
    if cached is not None and cached[0] == progress.step and isinstance(state, TrainState):
        return cached[1]
    params, model_state = (state.params, state.model_state) if isinstance(state, TrainState) else state
    params, model_state = distributed.local_copy((params, model_state))
    x, y = getattr(loop.data, f"x_{split}"), getattr(loop.data, f"y_{split}")
    result = evaluate(loop.model, params, model_state, x, y, eval_step=loop.eval_step)
    if isinstance(state, TrainState):
        progress.evaluated[split] = (progress.step, result)
    return result


def _end_epoch(loop: Loop, progress: Progress, state: TrainState, callbacks: Sequence[Callback]) -> None:
    """An epoch ended: evaluate on the validation split (and keep the best state) and, if asked, on the
    test split (only reported: it chooses nothing); log the row (with ``time_s``, the training time so far:
    :meth:`Progress.training_time`) and tell the callbacks."""
    state.step.block_until_ready()  # the epoch's last step has finished (a wait; nothing is read back)
    row = {"step": progress.step, "epoch": float(progress.step // loop.steps_per_epoch)}
    row["time_s"] = round(progress.training_time(), 3)
    evaluation_start = time.perf_counter()
    if loop.validation:
        val = _evaluate(loop, progress, state, "val")
        row.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
        if progress.best is None or val["accuracy"] > progress.best["val_accuracy"]:  # the first of equals
            progress.best = {"step": progress.step, "epoch": row["epoch"], "val_accuracy": val["accuracy"],
                             "val_loss": val["loss"]}  # fmt: skip
            if loop.out is None:  # with an out_dir the best state is best.msgpack (Checkpoints)
                progress.best_state = jax.device_get(distributed.local_copy((state.params, state.model_state)))
    if loop.test_every_epoch:
        test = _evaluate(loop, progress, state, "test")
        row.update(test_loss=test["loss"], test_accuracy=test["accuracy"])
    if loop.sampler is not None:
        row["epsilon"] = epsilon_spent(loop, progress.step)
    progress.evaluating += time.perf_counter() - evaluation_start
    progress.history.append(row)
    _notify(callbacks, "on_evaluation", loop, progress, row, state)


def _best_result(loop: Loop, progress: Progress, state: TrainState) -> dict | None:
    """The best validation epoch with its state's evaluation on the test split (read from best.msgpack
    when the run has an output directory)."""
    if progress.best is None:
        return None
    if progress.best["step"] == progress.step:
        best_state = state
    elif loop.out is not None:
        saved, _ = ckpt.load(loop.out, distributed.local_copy(state), name=ckpt.BEST_NAME)
        best_state = (saved.params, saved.model_state)
    else:
        best_state = progress.best_state
    return {**progress.best, "test": _evaluate(loop, progress, best_state, "test")}


# ---------------------------------------------------------------------------------------------
# the epoch
# ---------------------------------------------------------------------------------------------


def _epoch_batches(loop: Loop, epoch: int, start_step: int):
    """Global batches ``start_step, ...`` of ``epoch`` (the order of :func:`jaxcnn.data.batches`).

    Without a mesh: device arrays of the whole batch. With one: every process takes its contiguous block
    of each global batch (:func:`jaxcnn.distributed.process_batch_slice`), gathers only those rows, and
    :func:`jaxcnn.distributed.shard_batch` assembles the global arrays split over the mesh.
    """
    x, y, size = loop.data.x_train, loop.data.y_train, loop.config.batch_size
    if loop.sampler is not None:
        yield from _poisson_batches(loop, epoch, start_step)
        return
    if loop.mesh is None:
        for xb, yb in batches(x, y, size, seed=loop.config.seed, epoch=epoch, start_step=start_step):
            yield jax.device_put((np.asarray(xb), np.asarray(yb)))  # explicit and asynchronous
        return
    rows = distributed.process_batch_slice(size, loop.mesh)
    order = epoch_permutation(len(x), seed=loop.config.seed, epoch=epoch)
    for step in range(start_step, len(x) // size):
        idx = order[step * size : (step + 1) * size][rows]
        yield distributed.shard_batch((np.asarray(x[idx]), np.asarray(y[idx])), loop.mesh)


def _poisson_batches(loop: Loop, epoch: int, start_step: int):
    """DP-SGD's batches ``(x, y, mask)`` of ``epoch`` from ``start_step``: step ``t``'s Poisson sample
    (:class:`~jaxcnn.train.dp.PoissonSampler`), each process gathering its block of the rows."""
    x, y = loop.data.x_train, loop.data.y_train
    rows = slice(None) if loop.mesh is None else distributed.process_batch_slice(loop.sampler.capacity, loop.mesh)
    for step in range(start_step, loop.steps_per_epoch):
        indices, mask = loop.sampler(epoch * loop.steps_per_epoch + step)
        batch = (np.asarray(x[indices[rows]]), np.asarray(y[indices[rows]]), mask[rows])
        yield jax.device_put(batch) if loop.mesh is None else distributed.shard_batch(batch, loop.mesh)


def _prefetched(batches: Iterator) -> Iterator:
    """Double buffering: batch ``n + 1`` is gathered and its transfer to the device started before batch
    ``n`` is handed out, so it travels while step ``n`` runs (the steps are dispatched asynchronously)."""
    upcoming = deque(itertools.islice(batches, 2))
    while upcoming:
        current = upcoming.popleft()
        upcoming.extend(itertools.islice(batches, 1))
        yield current


def _train_epoch(loop: Loop, progress: Progress, state: TrainState, callbacks: Sequence[Callback]) -> TrainState:
    """The rest of the current epoch (or of the step budget): step, log; evaluate at its end.

    Between log rows nothing waits for the device: the metrics add up on it, the next batch is already on
    its way, and a donated train state is updated in place."""
    epoch, start_step = divmod(progress.step, loop.steps_per_epoch)
    window, in_flight, every = progress.window, None, loop.config.log_every
    with _guarded(loop.config.transfer_guard):
        for batch in _prefetched(_epoch_batches(loop, epoch, start_step)):
            state, metrics = loop.step_fn(state, *batch)
            if in_flight is not None:  # at most two steps queued: the device stays busy, the host does not
                jax.block_until_ready(in_flight)  # run ahead (waiting is not a transfer: nothing is read)
            in_flight = metrics
            progress.step += 1
            window.add(metrics)
            with _guarded("allow"):  # the reads a log row or a checkpoint needs
                if progress.step % every == 0 or progress.step == loop.total_steps:
                    progress.history.append(row := _log_row(loop, progress, window, epoch))
                    _notify(callbacks, "on_log", loop, progress, row)
                _notify(callbacks, "on_step", loop, progress, state)
            if progress.step >= loop.total_steps:
                break
    if progress.step % loop.steps_per_epoch and progress.step < loop.total_steps:  # never loop forever
        raise RuntimeError(
            f"epoch {epoch}'s batches ran out at step {progress.step}, before the epoch's end at step "
            f"{(epoch + 1) * loop.steps_per_epoch} ({loop.steps_per_epoch} steps an epoch)"
        )
    if progress.step % loop.steps_per_epoch == 0:
        _end_epoch(loop, progress, state, callbacks)
    return state


def _guarded(level: str | None):
    """``jax.transfer_guard(level)``, or nothing for None."""
    return jax.transfer_guard(level) if level else contextlib.nullcontext()


def _config(config: FitConfig | None, settings: dict) -> FitConfig:
    """``config`` with ``settings`` replacing its fields, or a :class:`FitConfig` of ``settings``."""
    unknown = sorted(set(settings) - set(FitConfig._fields))
    if unknown:
        raise ConfigError(
            f"fit got an unknown setting {unknown[0]!r}; FitConfig's fields are {list(FitConfig._fields)}"
        )
    if config is None:
        missing = [f for f in ("epochs", "batch_size", "optimizer") if f not in settings]
        if missing:
            raise ConfigError(f"fit needs {', '.join(missing)} (as keywords or in a FitConfig)")
        return FitConfig(**settings)
    if not isinstance(config, FitConfig):
        raise ConfigError(f"config must be a jaxcnn.train.FitConfig, got {type(config).__name__}")
    return config._replace(**settings)


def fit(
    model: Layer | Callable,
    data: Any,
    config: FitConfig | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    **settings: Any,
) -> FitResult:
    """Train ``model`` on ``data`` (``x_train, y_train, x_test, y_test`` attributes) as ``config`` says.

    ``model`` is a :class:`~jaxcnn.layers.Layer`, or a function of an ops namespace returning one
    (``lambda ops: models.tanh_cnn(ops=ops)``), which DP-SGD needs: ``privacy=DPConfig(clip,
    noise_multiplier, delta)`` (:class:`jaxcnn.privacy.DPConfig`) trains on Poisson batches with clipped,
    noised gradients (:mod:`jaxcnn.train.dp`), adds the epsilon spent to each epoch's row and returns it
    in ``FitResult.epsilon``; ``batch_size`` is then the expected batch size.

    ``config`` is a :class:`FitConfig`; its fields may also be given as keywords (``settings``), alone or
    replacing some of ``config``'s. ``callbacks`` (:class:`Callback`) run after the built-in ones.

    With ``out_dir``: a checkpoint every ``checkpoint_every`` steps (0: at each epoch's end) and at the
    end, and ``metrics.jsonl`` (one JSON row per ``log_every`` steps and per epoch). ``resume=True``
    continues from ``out_dir``'s checkpoint, replaying the same batches and keys. ``max_steps`` stops
    early (for tests and smoke runs).

    Data parallelism: ``devices`` or ``mesh`` runs every step on a device mesh (:mod:`jaxcnn.distributed`):
    ``batch_size`` is the *global* batch, split into equal contiguous blocks over the devices (it must be
    divisible by their number: a ``ConfigError`` naming both otherwise), and the train state is replicated.
    The result equals the single-device run up to float rounding (batch norm uses the global batch's
    statistics). With neither given, a single process trains on its default device; with several
    processes (``jax.distributed.initialize`` was called) the mesh defaults to all devices of all processes.

    Several processes: each loads the whole dataset, computes the same order from ``(seed, epoch)``
    and feeds only its block of every global batch. Process 0 alone writes the checkpoints and
    ``metrics.jsonl``; every process waits at a barrier after each checkpoint, so none runs ahead of
    the last saved state or exits before it is on disk. ``resume=True`` makes every process read the
    checkpoint (``out_dir`` must be on a filesystem all of them see). Evaluation runs in every process
    on the full test split, on one local device with a local copy of the replicated parameters (no
    communication; each process gets the same numbers).

    ``loss_fn(outputs, labels)`` is minimised; ``eval_loss_fn`` (default ``loss_fn``) is the test loss
    reported (GoogLeNet trains on its auxiliary heads too but is evaluated on its logits).

    Between two log rows the loop never waits for the device: metrics add up on it and are read once
    per row (and once per evaluation), the next batch is sent with an explicit ``jax.device_put`` while
    the current step runs, and (``donate``; by default on GPU and TPU, not on CPU) the train state is
    donated to the step, its buffers reused for the next. ``transfer_guard="disallow"`` runs
    those steps under ``jax.transfer_guard``, so an implicit transfer there raises (a check for
    accelerator runs; on a CPU device-to-host reads cost nothing and are not caught).

    ``compute_dtype`` (e.g. ``jnp.bfloat16``): mixed precision as in :func:`make_objective`; parameters,
    optimizer state, gradients and the loss stay float32. Evaluation uses the same compute dtype.
    """
    config = _config(config, settings)
    loop, state, progress = _set_up(model, data, config)
    callbacks = _callbacks(loop, callbacks)
    try:
        _notify(callbacks, "on_start", loop, progress, state)
        while progress.step < loop.total_steps:
            state = _train_epoch(loop, progress, state, callbacks)
        _notify(callbacks, "on_end", loop, progress, state)
        final, best = _evaluate(loop, progress, state), _best_result(loop, progress, state)
    finally:
        _notify(callbacks, "on_close", loop, progress)
    return FitResult(state, progress.history, final, best, epsilon_spent(loop, progress.step))
