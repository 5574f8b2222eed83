"""Training with optax on the hand-derived VJPs: a ``TrainState`` pytree, a jitted step, evaluation,
checkpoints that resume bit-identically, and ``fit`` for scripts.

Reproducibility: everything random is a pure function of the seed and the step. The order of the
examples in epoch ``e`` is a permutation drawn from ``(seed, e)``; the dropout and augmentation key of
step ``t`` is ``fold_in(state.key, t)``. A run resumed from the checkpoint of step ``t`` therefore
replays exactly the batches and keys an uninterrupted run would have used, and on a deterministic
backend (XLA:CPU) ends with bit-identical parameters.

Scaling out (see :mod:`jaxcnn.distributed`): ``fit(..., devices=n)`` or ``fit(..., mesh=mesh)`` splits
every batch over a 1-D device mesh and replicates the train state; with several processes (after
``jax.distributed.initialize``) every process computes the same global batch order from
``(seed, epoch)`` and feeds its contiguous block of each global batch. ``compute_dtype=jnp.bfloat16``
runs the forward and backward passes in bfloat16 while parameters, optimizer state, the loss and the
gradients stay float32. :func:`per_example_grads` gives one gradient per example (``vmap`` over the
hand-derived VJPs), for DP-SGD and gradient statistics.
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
from . import distributed, losses
from .data.batching import batches, epoch_permutation
from .layers import Layer

__all__ = [
    "TrainState",
    "OPTIMIZERS",
    "SCHEDULES",
    "make_optimizer",
    "init_train_state",
    "make_objective",
    "per_example_grads",
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


def _compute_dtype(compute_dtype: Any) -> jnp.dtype | None:
    """``None`` or a floating dtype; anything else is refused naming the value."""
    if compute_dtype is None:
        return None
    try:
        dtype = jnp.dtype(compute_dtype)
    except TypeError:
        raise TypeError(
            f"compute_dtype must be None or a floating dtype such as jnp.bfloat16, got {compute_dtype!r}"
        ) from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"compute_dtype must be a floating dtype such as jnp.bfloat16, got {dtype}")
    return dtype


def _cast_floating(tree: Any, dtype: jnp.dtype | None) -> Any:
    """Every floating array of ``tree`` as ``dtype`` (integer leaves untouched); ``dtype=None``: as is."""
    if dtype is None:
        return tree
    return jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a, tree
    )


def make_objective(
    model: Layer,
    loss_fn: Callable = cross_entropy_loss,
    *,
    compute_dtype: Any = None,
    train: bool = True,
) -> Callable:
    """The function a train step differentiates: ``objective(params, model_state, x, y, key)`` returning
    ``(loss, (outputs, new_model_state))``.

    ``compute_dtype`` (e.g. ``jnp.bfloat16``) is the mixed-precision policy: the floating parameters
    and ``x`` are cast to it inside the function, so the forward pass and the hand-derived backward
    passes run in it (each VJP returns cotangents in its primal's dtype), while the gradient with respect
    to the (float32) parameters comes out float32 through the cast's transpose. The outputs are cast to
    float32 before ``loss_fn``, so the loss and its reductions are float32; ``outputs`` are returned in
    float32 too. Batch-norm statistics are accumulated in float32 by the op and the running averages keep
    the state's float32. ``compute_dtype=None``: everything in the parameters' own dtype.
    """
    dtype = _compute_dtype(compute_dtype)

    def objective(params, model_state, x, y, key):
        out, new_model_state = model.apply(
            _cast_floating(params, dtype), model_state, _cast_floating(x, dtype), key=key, train=train
        )
        if dtype is not None:
            out = out.astype(jnp.promote_types(dtype, jnp.float32))
        return loss_fn(out, y), (out, new_model_state)

    return objective


def per_example_grads(model: Layer, loss: Callable, params: Any, state: Any, batch: tuple[Any, Any]) -> Any:
    """The gradient of ``loss`` for each example of ``batch = (x, y)`` separately.

    Returns a pytree like ``params`` whose every leaf has an extra leading axis of size ``B = len(x)``:
    leaf ``[b]`` is ``grad_params loss(model.apply(params, state, x[b:b+1]), y[b:b+1])``. It is
    ``jax.vmap`` of ``jax.grad`` over the examples, so each example goes through the hand-derived VJPs
    as a batch of one, and all of them in one vectorised computation.

    The model is applied with ``train=False``: batch norm normalises with the running statistics in
    ``state`` (a batch of one has no batch statistics, and per-example gradients must not couple the
    examples), dropout is off, and ``state`` is not updated. For a model without batch norm or dropout
    the mean over the examples equals the gradient of the batch's mean loss.
    ``jax.jit`` it (with ``model``/``loss`` closed over) for speed.
    """
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise TypeError(f"batch must be a pair (x, y), got {type(batch).__name__}")
    x, y = batch
    if jnp.ndim(x) < 1 or jnp.ndim(y) < 1 or jnp.shape(x)[0] != jnp.shape(y)[0]:
        raise ValueError(
            f"batch: x and y need the same leading (example) dimension, got shapes {jnp.shape(x)} and {jnp.shape(y)}"
        )

    def single(p, xi, yi):
        out, _ = model.apply(p, state, xi[None], train=False)
        return loss(out, yi[None])

    return jax.vmap(jax.grad(single), in_axes=(None, 0, 0))(params, x, y)


def make_train_step(
    model: Layer,
    optimizer: optax.GradientTransformation,
    loss_fn: Callable = cross_entropy_loss,
    augment: Callable | None = None,
    *,
    mesh: jax.sharding.Mesh | None = None,
    compute_dtype: Any = None,
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, dict]]:
    """A jitted ``step(state, x, y) -> (state, {"loss", "accuracy"})``.

    ``augment(key, x)``, if given, transforms the batch with the step's key before the forward pass.
    ``compute_dtype``: the mixed-precision policy of :func:`make_objective`.

    With ``mesh`` (a 1-D mesh from :func:`jaxcnn.distributed.make_mesh`) the step is jitted with
    ``in_shardings=(replicated, data, data)`` and ``out_shardings=(replicated, replicated)``: ``state``
    must be replicated over the mesh (:func:`jaxcnn.distributed.replicate`) and ``x``, ``y`` split along
    their leading axis (:func:`jaxcnn.distributed.shard_batch`). The computation is the single-device one
    on the global batch; XLA inserts the gradient all-reduce, and batch norm's statistics are those of the
    global batch.
    """
    objective = make_objective(model, loss_fn, compute_dtype=compute_dtype)

    def step(state: TrainState, x: jax.Array, y: jax.Array):
        step_key = jax.random.fold_in(state.key, state.step)
        augment_key, dropout_key = jax.random.split(step_key)
        if augment is not None:
            x = augment(augment_key, x)

        def loss_of(params):
            return objective(params, state.model_state, x, y, dropout_key)

        (loss, (out, model_state)), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        accuracy = jnp.mean(jnp.argmax(out, axis=-1) == y)
        return TrainState(params, model_state, opt_state, state.step + 1, state.key), {
            "loss": loss,
            "accuracy": accuracy,
        }

    if mesh is None:
        return jax.jit(step)
    replicated, split = distributed.replicated_sharding(mesh), distributed.data_sharding(mesh)
    return jax.jit(step, in_shardings=(replicated, split, split), out_shardings=(replicated, replicated))


def make_eval_step(model: Layer, loss_fn: Callable = cross_entropy_loss, *, compute_dtype: Any = None) -> Callable:
    """A jitted ``eval_step(params, model_state, x, y) -> (sum of losses, number correct, outputs)``.

    ``compute_dtype``: the forward pass's dtype as in :func:`make_objective` (the loss is float32).
    """
    objective = make_objective(model, loss_fn, compute_dtype=compute_dtype, train=False)

    def eval_step(params, model_state, x, y):
        loss, (out, _) = objective(params, model_state, x, y, None)
        return loss * y.shape[0], jnp.sum(jnp.argmax(out, axis=-1) == y), out

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
    compute_dtype: Any = None,
) -> dict:
    """Mean loss and accuracy over ``(x, y)`` in eval mode, plus the predictions.

    Runs where ``params`` live; for parameters replicated over a mesh pass
    ``jaxcnn.distributed.local_copy`` of them (as :func:`fit` does) to evaluate on one local device.
    ``compute_dtype``: the forward pass's dtype (see :func:`make_objective`; ignored with ``eval_step``).
    """
    eval_step = eval_step or make_eval_step(model, loss_fn, compute_dtype=compute_dtype)
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


def _truncate_metrics(path: Path, last_step: int, *, write: bool = True) -> list[dict]:
    """Keep the rows up to ``last_step`` (a resumed run will log the later ones again).

    ``write=False`` only reads them (processes other than 0 leave the file to process 0).
    """
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["step"] <= last_step]
    if write:
        ckpt.atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
    return rows


def _epoch_batches(x, y, batch_size: int, *, seed: int, epoch: int, start_step: int, mesh):
    """Global batches ``start_step, ...`` of ``epoch`` (the order of :func:`jaxcnn.data.batches`).

    Without a mesh: device arrays of the whole batch. With one: every process takes its contiguous block
    of each global batch (:func:`jaxcnn.distributed.process_batch_slice`), gathers only those rows, and
    :func:`jaxcnn.distributed.shard_batch` assembles the global arrays split over the mesh.
    """
    if mesh is None:
        for xb, yb in batches(x, y, batch_size, seed=seed, epoch=epoch, start_step=start_step):
            yield jnp.asarray(xb), jnp.asarray(yb)
        return
    rows = distributed.process_batch_slice(batch_size, mesh)
    order = epoch_permutation(len(x), seed=seed, epoch=epoch)
    for step in range(start_step, len(x) // batch_size):
        idx = order[step * batch_size : (step + 1) * batch_size][rows]
        yield distributed.shard_batch((np.asarray(x[idx]), np.asarray(y[idx])), mesh)


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
    devices: int | Any | None = None,
    mesh: jax.sharding.Mesh | None = None,
    compute_dtype: Any = None,
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

    ``compute_dtype`` (e.g. ``jnp.bfloat16``): mixed precision as in :func:`make_objective`; parameters,
    optimizer state, gradients and the loss stay float32. Evaluation uses the same compute dtype.
    """
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
    compute_dtype = _compute_dtype(compute_dtype)
    writer = jax.process_index() == 0
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
            history = _truncate_metrics(metrics_path, int(state.step), write=writer)
            distributed.sync("jaxcnn-fit-resumed")  # everyone has read the checkpoint before it changes
        elif metrics_path.exists() and writer:
            metrics_path.unlink()
    elif resume:
        raise ValueError("resume=True needs out_dir")
    if mesh is not None:
        state = distributed.replicate(state, mesh)

    # The step last checkpointed and the last evaluation (step, result): a run that ends on an epoch
    # boundary has already saved and evaluated its final state in the loop.
    saved_step, last_eval = -1, (-1, None)

    def save_checkpoint(state: TrainState) -> None:
        nonlocal saved_step
        if out is None or int(state.step) == saved_step:
            return
        saved_step = int(state.step)
        if writer:
            ckpt.save(out, distributed.local_copy(state), {**meta, "step": int(state.step)})
        distributed.sync(f"jaxcnn-checkpoint-{int(state.step)}")  # no process runs ahead of the saved state

    def run_evaluation(state: TrainState) -> dict:
        nonlocal last_eval
        if last_eval[0] == int(state.step):
            return last_eval[1]
        params, model_state = distributed.local_copy((state.params, state.model_state))
        result = evaluate(model, params, model_state, data.x_test, data.y_test, loss_fn=loss_fn, eval_step=eval_step)
        last_eval = (int(state.step), result)
        return result

    step_fn = make_train_step(model, optimizer, loss_fn, augment, mesh=mesh, compute_dtype=compute_dtype)
    eval_step = make_eval_step(model, loss_fn, compute_dtype=compute_dtype)
    bar = _Progress(total_steps, int(state.step), writer and (sys.stderr.isatty() if progress is None else progress))
    window_loss, window_acc, window_n, window_start = 0.0, 0.0, 0, time.perf_counter()

    def log(row: dict) -> None:
        history.append(row)
        if out is not None and writer:
            _append_jsonl(out / "metrics.jsonl", row)

    try:
        step = int(state.step)
        while step < total_steps:
            epoch, start_step = divmod(step, steps_per_epoch)
            for xb, yb in _epoch_batches(
                data.x_train, data.y_train, batch_size, seed=seed, epoch=epoch, start_step=start_step, mesh=mesh
            ):
                state, metrics = step_fn(state, xb, yb)
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
                result = run_evaluation(state)
                log(
                    {
                        "step": step,
                        "epoch": step / steps_per_epoch,
                        "test_loss": result["loss"],
                        "test_accuracy": result["accuracy"],
                    }
                )
                if not bar.bar and progress is not False and writer:
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
    test = run_evaluation(state)
    return FitResult(state, history, test)
