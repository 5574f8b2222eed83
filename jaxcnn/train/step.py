"""One training step and its pieces: the ``TrainState`` pytree, the objective (with the mixed-precision
policy), the jitted train and eval steps, evaluation, and per-example gradients.

Reproducibility: the dropout and augmentation key of step ``t`` is ``fold_in(state.key, t)``, a pure
function of the seed and the step, so a resumed run replays exactly the keys of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import distributed, losses
from ..errors import ConfigError, ConfigTypeError
from ..layers import Layer, frozen_batch_norm

__all__ = [
    "TrainState",
    "init_train_state",
    "make_objective",
    "per_example_grads",
    "make_train_step",
    "make_eval_step",
    "evaluate",
    "cross_entropy_loss",
    "probability_nll_loss",
    "aux_cross_entropy_loss",
    "primary_output",
    "primary_cross_entropy_loss",
    "LOSSES",
    "as_compute_dtype",
]


class TrainState(NamedTuple):
    """Everything a training run carries from step to step (a pytree; checkpointed whole)."""

    params: Any  # trainable parameters
    model_state: Any  # non-trainable variables (batch-norm running statistics)
    opt_state: Any  # optax state
    step: jax.Array  # int32 scalar: number of updates applied
    key: jax.Array  # uint32[2] raw PRNG key; step t uses fold_in(key, t)


def cross_entropy_loss(outputs: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy of logits (the hand-derived ``losses.softmax_cross_entropy``)."""
    return losses.softmax_cross_entropy(outputs, labels)


def primary_output(outputs: Any) -> jax.Array:
    """The logits of a model's outputs: the array itself, or the first of a tuple ``(logits, *aux)``
    (GoogLeNet's auxiliary classifiers)."""
    return outputs[0] if isinstance(outputs, tuple) else outputs


def aux_cross_entropy_loss(outputs: Any, labels: jax.Array, aux_weight: float = 0.3) -> jax.Array:
    """``CE(logits) + aux_weight * sum(CE(aux))`` for ``outputs = (logits, *aux)``: GoogLeNet's training
    loss (Szegedy et al., 2015: the auxiliary losses weighted 0.3, the heads discarded at inference)."""
    logits, *aux = outputs
    total = losses.softmax_cross_entropy(logits, labels)
    for head in aux:
        total = total + aux_weight * losses.softmax_cross_entropy(head, labels)
    return total


def probability_nll_loss(outputs: jax.Array, labels: jax.Array) -> jax.Array:
    """Negative log-likelihood for models that end in a Softmax layer (their outputs are probabilities).

    ``-mean log p[label]`` written in ``jax.numpy`` and differentiated by JAX's autodiff (the Softmax
    layer before it has its hand-derived VJP)."""
    picked = jnp.take_along_axis(outputs, labels[:, None], axis=-1)[:, 0]
    return -jnp.mean(jnp.log(jnp.maximum(picked, jnp.finfo(outputs.dtype).tiny)))


def primary_cross_entropy_loss(outputs: Any, labels: jax.Array) -> jax.Array:
    """Cross-entropy of the logits alone (:func:`primary_output`): GoogLeNet's test loss."""
    return cross_entropy_loss(primary_output(outputs), labels)


# The loss that fits a model's outputs (jaxcnn.models.ModelSpec.outputs): (training loss, test loss).
LOSSES: dict[str, tuple[Callable, Callable]] = {
    "logits": (cross_entropy_loss, cross_entropy_loss),
    "probabilities": (probability_nll_loss, probability_nll_loss),
    "logits+aux": (aux_cross_entropy_loss, primary_cross_entropy_loss),
}


def init_train_state(
    model: Layer, input_shape: tuple[int, ...], optimizer: optax.GradientTransformation, seed: int
) -> TrainState:
    """Initialise parameters from ``seed`` and the optimizer state; step 0."""
    init_key, run_key = jax.random.split(jax.random.PRNGKey(seed))
    _, params, model_state = model.init(init_key, input_shape)
    return TrainState(params, model_state, optimizer.init(params), jnp.zeros((), jnp.int32), run_key)


def as_compute_dtype(compute_dtype: Any) -> jnp.dtype | None:
    """``None`` or a floating dtype; anything else is refused naming the value."""
    if compute_dtype is None:
        return None
    try:
        dtype = jnp.dtype(compute_dtype)
    except TypeError:
        raise ConfigTypeError(
            f"compute_dtype must be None or a floating dtype such as jnp.bfloat16, got {compute_dtype!r}"
        ) from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ConfigError(f"compute_dtype must be a floating dtype such as jnp.bfloat16, got {dtype}")
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
    dtype = as_compute_dtype(compute_dtype)

    def objective(params, model_state, x, y, key):
        out, new_model_state = model.apply(
            _cast_floating(params, dtype), model_state, _cast_floating(x, dtype), key=key, train=train
        )
        if dtype is not None:
            out = jax.tree_util.tree_map(lambda o: o.astype(jnp.promote_types(dtype, jnp.float32)), out)
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
        raise ConfigTypeError(f"batch must be a pair (x, y), got {type(batch).__name__}")
    x, y = batch
    if jnp.ndim(x) < 1 or jnp.ndim(y) < 1 or jnp.shape(x)[0] != jnp.shape(y)[0]:
        raise ConfigError(
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
    donate: bool = False,
    freeze_batch_norm: bool = False,
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, dict]]:
    """A jitted ``step(state, x, y) -> (state, {"loss", "accuracy"})``.

    ``augment(key, x)``, if given, transforms the batch with the step's key before the forward pass.
    ``compute_dtype``: the mixed-precision policy of :func:`make_objective`. ``freeze_batch_norm``: every
    batch norm applies its running statistics and leaves them unchanged
    (:func:`jaxcnn.layers.frozen_batch_norm`), for fine-tuning. ``donate=True`` donates
    ``state`` to the step (its buffers are reused for the new state, so parameters and optimizer state
    are not held twice in device memory; the ``state`` passed in must not be used again).

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

        with frozen_batch_norm() if freeze_batch_norm else contextlib.nullcontext():  # applies at trace time
            (loss, (out, model_state)), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        accuracy = jnp.mean(jnp.argmax(primary_output(out), axis=-1) == y)
        return TrainState(params, model_state, opt_state, state.step + 1, state.key), {
            "loss": loss,
            "accuracy": accuracy,
        }

    donation = {"donate_argnums": 0} if donate else {}
    if mesh is None:
        return jax.jit(step, **donation)
    replicated, split = distributed.replicated_sharding(mesh), distributed.data_sharding(mesh)
    return jax.jit(step, in_shardings=(replicated, split, split), out_shardings=(replicated, replicated), **donation)


def make_eval_step(
    model: Layer,
    loss_fn: Callable = cross_entropy_loss,
    *,
    compute_dtype: Any = None,
    transform: Callable | None = None,
) -> Callable:
    """A jitted ``eval_step(params, model_state, x, y) -> (sum of losses, number correct, outputs)``.

    ``compute_dtype``: the forward pass's dtype as in :func:`make_objective` (the loss is float32).
    ``transform(x)``: the inputs' preprocessing at evaluation (e.g. :func:`jaxcnn.data.transforms.imagenet_eval`).
    """
    objective = make_objective(model, loss_fn, compute_dtype=compute_dtype, train=False)

    def eval_step(params, model_state, x, y):
        x = x if transform is None else transform(x)
        loss, (out, _) = objective(params, model_state, x, y, None)
        out = primary_output(out)
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
    transform: Callable | None = None,
) -> dict:
    """Mean loss and accuracy over ``(x, y)`` in eval mode, plus the predictions.

    Runs where ``params`` live; for parameters replicated over a mesh pass
    ``jaxcnn.distributed.local_copy`` of them (as :func:`fit` does) to evaluate on one local device.
    ``compute_dtype``: the forward pass's dtype (see :func:`make_objective`; ignored with ``eval_step``).
    """
    eval_step = eval_step or make_eval_step(model, loss_fn, compute_dtype=compute_dtype, transform=transform)
    total_loss, correct, predictions = 0.0, 0, []
    for start in range(0, len(x), batch_size):
        xb, yb = jnp.asarray(x[start : start + batch_size]), jnp.asarray(y[start : start + batch_size])
        loss_sum, n_correct, out = eval_step(params, model_state, xb, yb)
        total_loss += float(loss_sum)
        correct += int(n_correct)
        predictions.append(np.asarray(jnp.argmax(out, axis=-1)))
    n = len(x)
    return {"loss": total_loss / n, "accuracy": correct / n, "predictions": np.concatenate(predictions)}
