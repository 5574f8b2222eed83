"""``fit``: the training loop for scripts and the CLI, written as a short loop over small pieces.

Reproducibility: the order of the examples in epoch ``e`` is a permutation drawn from ``(seed, e)``
(:func:`jaxcnn.data.epoch_permutation`) and the dropout/augmentation key of step ``t`` is
``fold_in(state.key, t)``. A run resumed from the checkpoint of step ``t`` therefore replays exactly the
batches and keys an uninterrupted run would have used, and on a deterministic backend (XLA:CPU) ends
with bit-identical parameters.

One run is: :func:`_set_up` (check the arguments, build the mesh, initialise or :func:`_resume` the
train state), then :func:`_train_epoch` until the step budget is spent (each logs a metrics row every
``log_every`` steps, checkpoints every ``checkpoint_every`` steps, and at an epoch's end
:func:`_end_epoch` evaluates and checkpoints), then a final :func:`_checkpoint` and :func:`_evaluate`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import checkpoint as ckpt
from .. import distributed
from .._files import append_text, atomic_write_bytes
from ..data.batching import batches, epoch_permutation
from ..layers import Layer
from .step import (
    TrainState,
    as_compute_dtype,
    cross_entropy_loss,
    evaluate,
    init_train_state,
    make_eval_step,
    make_train_step,
)

__all__ = ["FitResult", "fit"]


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


@dataclasses.dataclass
class _Run:
    """What one :func:`fit` call carries between its pieces."""

    model: Layer
    data: Any
    loss_fn: Callable
    batch_size: int
    seed: int
    steps_per_epoch: int
    total_steps: int
    log_every: int
    checkpoint_every: int
    learning_rate: optax.Schedule | None
    mesh: jax.sharding.Mesh | None
    out: Path | None
    meta: dict
    progress: bool | None
    writer: bool = dataclasses.field(default_factory=lambda: jax.process_index() == 0)
    step: int = 0
    history: list = dataclasses.field(default_factory=list)
    window: _Window = dataclasses.field(default_factory=_Window)
    saved_step: int = -1  # the step last checkpointed, and the last evaluation: a run that ends on an
    last_eval: tuple = (-1, None)  # epoch boundary has already saved and evaluated its final state
    transfer_guard: str | None = None
    step_fn: Callable | None = None
    eval_step: Callable | None = None
    bar: _Progress | None = None


# ---------------------------------------------------------------------------------------------
# set up and resume
# ---------------------------------------------------------------------------------------------


def _fit_mesh(data, epochs: int, batch_size: int, devices, mesh) -> jax.sharding.Mesh | None:
    """Check the loop's sizes and build (or check) the device mesh; None for a single device."""
    if batch_size < 1 or batch_size > len(data.x_train):
        raise ValueError(f"batch_size must be in [1, {len(data.x_train)}] (the training set size), got {batch_size}")
    if epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs}")
    if devices is not None and mesh is not None:
        raise ValueError(f"give devices or mesh, not both; got devices={devices!r} and a mesh of {mesh.size}")
    if mesh is None and (devices is not None or jax.process_count() > 1):
        mesh = distributed.make_mesh(devices)
    if mesh is not None:
        if mesh.axis_names != (distributed.DATA_AXIS,):
            raise ValueError(f"mesh must be 1-D with axis {distributed.DATA_AXIS!r}, got axes {mesh.axis_names}")
        distributed.process_batch_slice(batch_size, mesh)  # refuses a batch size the devices do not divide
    return mesh


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


def _resume(run: _Run, state: TrainState) -> TrainState:
    """The checkpoint in ``run.out`` (refused if it belongs to another run) and the metrics up to it."""
    state, saved_meta = ckpt.load(run.out, state)
    for k in ("model", "dataset", "seed", "batch_size"):
        if k in run.meta and k in saved_meta and saved_meta[k] != run.meta[k]:
            raise ckpt.CheckpointError(
                f"{run.out / ckpt.CHECKPOINT_NAME} was written with {k}={saved_meta[k]!r}, not {run.meta[k]!r}"
            )
    run.history = _truncate_metrics(run.out / "metrics.jsonl", int(state.step), write=run.writer)
    distributed.sync("jaxcnn-fit-resumed")  # everyone has read the checkpoint before it changes
    return state


def _open_out_dir(run: _Run, state: TrainState, resume: bool) -> TrainState:
    """Create ``out``; resume from it, or start a fresh metrics log."""
    if run.out is None:
        if resume:
            raise ValueError("resume=True needs out_dir")
        return state
    run.out.mkdir(parents=True, exist_ok=True)
    if resume:
        return _resume(run, state)
    if (run.out / "metrics.jsonl").exists() and run.writer:
        (run.out / "metrics.jsonl").unlink()
    return state


def _set_up(model, data, *, epochs, batch_size, optimizer, learning_rate, seed, loss_fn, eval_loss_fn, augment, out_dir,
            resume, checkpoint_every, log_every, meta, progress, max_steps, devices, mesh, compute_dtype,
            donate):  # fmt: skip
    """The run's configuration, its jitted steps and progress bar, and the initial (or resumed) state."""
    mesh = _fit_mesh(data, epochs, batch_size, devices, mesh)
    compute_dtype = as_compute_dtype(compute_dtype)
    steps_per_epoch = len(data.x_train) // batch_size
    total_steps = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    run = _Run(
        model, data, loss_fn, batch_size, seed, steps_per_epoch, total_steps, log_every, checkpoint_every,
        learning_rate, mesh, out=Path(out_dir) if out_dir is not None else None,
        meta={**(meta or {}), "seed": seed, "batch_size": batch_size, "epochs": epochs}, progress=progress,
    )  # fmt: skip
    state = init_train_state(model, (batch_size, *data.x_train.shape[1:]), optimizer, seed)
    state = _open_out_dir(run, state, resume)
    if mesh is not None:
        state = distributed.replicate(state, mesh)
    run.step = int(state.step)
    run.step_fn = make_train_step(
        model, optimizer, loss_fn, augment, mesh=mesh, compute_dtype=compute_dtype, donate=_donates(donate, mesh)
    )
    run.eval_step = make_eval_step(model, eval_loss_fn or loss_fn, compute_dtype=compute_dtype)
    run.bar = _Progress(total_steps, run.step, run.writer and (sys.stderr.isatty() if progress is None else progress))
    return run, state


# ---------------------------------------------------------------------------------------------
# log, evaluate, checkpoint
# ---------------------------------------------------------------------------------------------


def _log(run: _Run, row: dict) -> None:
    run.history.append(row)
    if run.out is not None and run.writer:
        append_text(run.out / "metrics.jsonl", json.dumps(row) + "\n")


def _log_window(run: _Run, epoch: int) -> None:
    """One training row: the mean loss and accuracy of the window, the learning rate, the throughput."""
    w = run.window
    means = w.means()  # waits for the window's last step: the time below is the device's, not the host's
    elapsed = time.perf_counter() - w.start
    row = {
        "step": run.step,
        "epoch": epoch + (run.step - epoch * run.steps_per_epoch) / run.steps_per_epoch,
        "loss": means["loss"],
        "accuracy": means["accuracy"],
        "lr": float(run.learning_rate(run.step - 1)) if run.learning_rate is not None else None,
        "examples_per_s": w.steps * run.batch_size / elapsed if elapsed > 0 else None,
    }
    _log(run, row)
    info = f"loss {row['loss']:.4f} acc {row['accuracy']:.3f} {row['examples_per_s'] or 0:,.0f} ex/s"
    run.bar.update(run.step, info)
    w.reset()


def _checkpoint(run: _Run, state: TrainState) -> None:
    """Process 0 saves ``state`` (once per step); every process waits until it is on disk."""
    if run.out is None or run.step == run.saved_step:
        return
    run.saved_step = run.step
    if run.writer:
        ckpt.save(run.out, distributed.local_copy(state), {**run.meta, "step": run.step})
    distributed.sync(f"jaxcnn-checkpoint-{run.step}")  # no process runs ahead of the saved state


def _evaluate(run: _Run, state: TrainState) -> dict:
    """Test loss and accuracy (once per step), on one local device with a local copy of the state."""
    if run.last_eval[0] == run.step:
        return run.last_eval[1]
    params, model_state = distributed.local_copy((state.params, state.model_state))
    data = run.data
    result = evaluate(run.model, params, model_state, data.x_test, data.y_test, eval_step=run.eval_step)
    run.last_eval = (run.step, result)
    return result


def _end_epoch(run: _Run, state: TrainState) -> None:
    """An epoch ended: evaluate on the test split, log and report it, and checkpoint."""
    result = _evaluate(run, state)
    epoch = run.step // run.steps_per_epoch
    row = {"step": run.step, "epoch": float(epoch), "test_loss": result["loss"], "test_accuracy": result["accuracy"]}
    _log(run, row)
    if not run.bar.bar and run.progress is not False and run.writer:
        print(
            f"epoch {epoch}: test loss {result['loss']:.4f}, test accuracy {result['accuracy']:.4f}",
            file=sys.stderr,
            flush=True,
        )
    if not run.checkpoint_every:
        _checkpoint(run, state)


# ---------------------------------------------------------------------------------------------
# the epoch
# ---------------------------------------------------------------------------------------------


def _epoch_batches(run: _Run, epoch: int, start_step: int):
    """Global batches ``start_step, ...`` of ``epoch`` (the order of :func:`jaxcnn.data.batches`).

    Without a mesh: device arrays of the whole batch. With one: every process takes its contiguous block
    of each global batch (:func:`jaxcnn.distributed.process_batch_slice`), gathers only those rows, and
    :func:`jaxcnn.distributed.shard_batch` assembles the global arrays split over the mesh.
    """
    x, y, size = run.data.x_train, run.data.y_train, run.batch_size
    if run.mesh is None:
        for xb, yb in batches(x, y, size, seed=run.seed, epoch=epoch, start_step=start_step):
            yield jax.device_put((np.asarray(xb), np.asarray(yb)))  # explicit and asynchronous
        return
    rows = distributed.process_batch_slice(size, run.mesh)
    order = epoch_permutation(len(x), seed=run.seed, epoch=epoch)
    for step in range(start_step, len(x) // size):
        idx = order[step * size : (step + 1) * size][rows]
        yield distributed.shard_batch((np.asarray(x[idx]), np.asarray(y[idx])), run.mesh)


def _prefetched(batches: Iterator) -> Iterator:
    """Double buffering: batch ``n + 1`` is gathered and its transfer to the device started before batch
    ``n`` is handed out, so it travels while step ``n`` runs (the steps are dispatched asynchronously)."""
    upcoming = deque(itertools.islice(batches, 2))
    while upcoming:
        current = upcoming.popleft()
        upcoming.extend(itertools.islice(batches, 1))
        yield current


def _train_epoch(run: _Run, state: TrainState) -> TrainState:
    """The rest of the current epoch (or of the step budget): step, log, checkpoint; evaluate at its end.

    Between log rows nothing waits for the device: the metrics add up on it, the next batch is already on
    its way, and a donated train state is updated in place."""
    epoch, start_step = divmod(run.step, run.steps_per_epoch)
    in_flight = None
    with _guarded(run.transfer_guard):
        for xb, yb in _prefetched(_epoch_batches(run, epoch, start_step)):
            state, metrics = run.step_fn(state, xb, yb)
            if in_flight is not None:  # at most two steps queued: the device stays busy, the host does not
                jax.block_until_ready(in_flight)  # run ahead (waiting is not a transfer: nothing is read)
            in_flight = metrics
            run.step += 1
            run.window.add(metrics)
            with _guarded("allow"):  # the reads a log row or a checkpoint needs
                if run.step % run.log_every == 0 or run.step == run.total_steps:
                    _log_window(run, epoch)
                if run.checkpoint_every and run.step % run.checkpoint_every == 0:
                    _checkpoint(run, state)
            if run.step >= run.total_steps:
                break
    if run.step % run.steps_per_epoch == 0:
        _end_epoch(run, state)
    return state


def _guarded(level: str | None):
    """``jax.transfer_guard(level)``, or nothing for None."""
    return jax.transfer_guard(level) if level else contextlib.nullcontext()


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
    eval_loss_fn: Callable | None = None,
    augment: Callable | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    checkpoint_every: int = 0,
    log_every: int = 50,
    meta: dict | None = None,
    progress: bool | None = None,
    max_steps: int | None = None,
    devices: int | Any | None = None,
    mesh: jax.sharding.Mesh | None = None,
    compute_dtype: Any = None,
    transfer_guard: str | None = None,
    donate: bool | None = None,
) -> FitResult:
    """Train ``model`` on ``data`` (``x_train, y_train, x_test, y_test`` attributes) for ``epochs``.

    With ``out_dir``: a checkpoint every ``checkpoint_every`` steps (0: at each epoch's end) and at the
    end, and ``metrics.jsonl`` (one JSON row per ``log_every`` steps and per epoch). ``resume=True``
    continues from ``out_dir``'s checkpoint, replaying the same batches and keys. ``max_steps`` stops
    early (for tests and smoke runs).

    Data parallelism: ``devices`` (an int ``n``: ``n`` local devices per process; or a sequence of
    devices) or ``mesh`` (a 1-D mesh with axis ``"data"``) runs every step on a device mesh
    (:mod:`jaxcnn.distributed`): ``batch_size`` is the *global* batch, split into equal contiguous blocks
    over the devices (it must be divisible by their number: ``ValueError`` naming both otherwise), and
    the train state is replicated. The result equals the single-device run up to float rounding
    (batch norm uses the global batch's statistics). With neither given, a single process trains on
    its default device as before; with several processes (``jax.distributed.initialize`` was called)
    the mesh defaults to all devices of all processes.

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
    run, state = _set_up(
        model, data, epochs=epochs, batch_size=batch_size, optimizer=optimizer, learning_rate=learning_rate,
        seed=seed, loss_fn=loss_fn, eval_loss_fn=eval_loss_fn, augment=augment, out_dir=out_dir, resume=resume,
        checkpoint_every=checkpoint_every, log_every=log_every, meta=meta, progress=progress,
        max_steps=max_steps, devices=devices, mesh=mesh, compute_dtype=compute_dtype, donate=donate,
    )  # fmt: skip
    run.transfer_guard = transfer_guard
    try:
        while run.step < run.total_steps:
            state = _train_epoch(run, state)
    finally:
        run.bar.close()
    _checkpoint(run, state)
    return FitResult(state, run.history, _evaluate(run, state))
