"""DP-SGD inside :func:`jaxcnn.train.fit`: the Poisson sampler of each step's batch and the private step.

``fit(build, data, privacy=DPConfig(clip, noise_multiplier, delta))`` trains with these instead of the
shuffled fixed batches and the mean gradient. Both are pure in the step number, as the ordinary loop is:

* step ``t``'s batch is a Poisson sample (every training example joins with probability
  ``q = batch_size / len(x_train)``) drawn from ``fold_in(fold_in(PRNGKey(seed), SAMPLER), t)``, padded to
  a fixed capacity with a mask (:func:`jaxcnn.privacy.poisson_batch`);
* its augmentation, dropout and noise keys are split from ``fold_in(state.key, t)``.

So a run resumed from the checkpoint of step ``t`` samples the same batches and draws the same noise as an
uninterrupted one, and the accountant's epsilon, a function of ``(sigma, q, steps, delta)``, continues
with the step count. Under a data-parallel mesh each device computes its examples' norms and weighted
cotangents; XLA all-reduces the clipped sum; the noise key is replicated, so the noise is drawn once, the
same on every device, and added once to the all-reduced sum.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import distributed, privacy
from ..errors import ConfigError
from .step import TrainState

__all__ = ["SAMPLER", "PoissonSampler", "make_dp_train_step"]

SAMPLER = 0x5A3F1  # the fold_in tag of the sampler's key (apart from init's and the steps')


class PoissonSampler:
    """Step ``t``'s Poisson batch of ``num_examples`` at ``rate``: ``(indices, mask)`` on the host, of
    ``capacity`` rows (:func:`jaxcnn.privacy.poisson_capacity`, rounded up to a multiple of ``multiple``,
    the number of devices the batch is split over)."""

    def __init__(self, seed: int, num_examples: int, rate: float, multiple: int = 1):
        self.rate = rate
        capacity = privacy.poisson_capacity(num_examples, rate)
        self.capacity = -(-capacity // multiple) * multiple
        root = jax.random.fold_in(jax.random.PRNGKey(seed), SAMPLER)
        self._sample = jax.jit(
            lambda t: privacy.poisson_batch(jax.random.fold_in(root, t), num_examples, rate, self.capacity)[:2]
        )

    def __call__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        indices, mask = jax.device_get(self._sample(step))
        return np.asarray(indices), np.asarray(mask)


def make_dp_train_step(
    build: Callable,
    optimizer: optax.GradientTransformation,
    loss: Callable,
    dp: privacy.DPConfig,
    *,
    expected_batch_size: float,
    augment: Callable | None = None,
    mesh: jax.sharding.Mesh | None = None,
    donate: bool = False,
) -> Callable[[TrainState, jax.Array, jax.Array, jax.Array], tuple[TrainState, dict]]:
    """A jitted ``step(state, x, y, mask) -> (state, {"loss", "accuracy", "clipped"})``: the noisy clipped
    gradient (:func:`jaxcnn.privacy.clipped_sum_and_outputs`, :func:`jaxcnn.privacy.add_noise`), then
    ``optimizer``. ``loss(outputs, y)`` is the batch's mean loss, as for every step (each example's is
    ``loss`` of that example alone, by ``jax.vmap``); the metrics are means over the examples the mask
    keeps ("clipped": the fraction whose norm exceeded ``dp.clip``). With ``mesh``, as
    :func:`jaxcnn.train.make_train_step`: state replicated, ``x``, ``y``, ``mask`` split."""

    def per_example(out, y):
        return jax.vmap(lambda o, t: loss(o[None], t[None]))(out, y)

    if dp.augmult > 1 and augment is None:
        raise ConfigError(f"privacy: augmult={dp.augmult} draws augmentations of each example; give augment")

    def step(state: TrainState, x: jax.Array, y: jax.Array, mask: jax.Array):
        augment_key, dropout_key, noise_key = jax.random.split(jax.random.fold_in(state.key, state.step), 3)
        if dp.augmult > 1:
            x, y = privacy.augmented_views(augment_key, x, augment, dp.augmult), jnp.repeat(y, dp.augmult)
        elif augment is not None:
            x = augment(augment_key, x)
        total, norms, out = privacy.clipped_sum_and_outputs(
            build, per_example, state.params, state.model_state, (x, y), clip=dp.clip, mask=mask, key=dropout_key,
            ghost=dp.ghost, method=dp.method, augmult=dp.augmult,
        )  # fmt: skip
        grads = privacy.add_noise(total, clip=dp.clip, noise_multiplier=dp.noise_multiplier,
                                  expected_batch_size=expected_batch_size, noise_key=noise_key)  # fmt: skip
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        kept = mask.astype(jnp.float32)
        count = jnp.maximum(jnp.sum(kept), 1.0)
        views = jnp.repeat(kept, dp.augmult)  # loss and accuracy over every view of the kept examples
        correct = jnp.argmax(out.reshape(out.shape[0], -1), axis=-1) == y
        metrics = {
            "loss": jnp.sum(views * per_example(out, y)) / (count * dp.augmult),
            "accuracy": jnp.sum(views * correct) / (count * dp.augmult),
            "clipped": jnp.sum(kept * (norms > dp.clip)) / count,
        }
        return TrainState(params, state.model_state, opt_state, state.step + 1, state.key), metrics

    donation = {"donate_argnums": 0} if donate else {}
    if mesh is None:
        return jax.jit(step, **donation)
    replicated, split = distributed.replicated_sharding(mesh), distributed.data_sharding(mesh)
    return jax.jit(step, in_shardings=(replicated, split, split, split), out_shardings=(replicated, replicated),
                   **donation)  # fmt: skip
