"""Per-example gradients: vmap over the hand-derived VJPs equals a loop of single-example gradients, and
their mean is the batch gradient (float64)."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import layers, reference, train


def _model(ops=jaxcnn.ops):
    L = layers.bind(ops)
    return jaxcnn.serial(
        L.Conv(3, (3, 3), padding="SAME"), L.Relu, L.MaxPool((2, 2)), L.Flatten, L.Dense(5), L.Tanh, L.Dense(4)
    )


def _f64(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


@pytest.fixture(scope="module")
def setup():
    model = _model()
    _, params, state = model.init(jax.random.key(0), (1, 6, 6, 2))
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((7, 6, 6, 2)), jnp.float64)
    y = jnp.asarray(rng.integers(0, 4, 7), jnp.int32)
    return model, _f64(params), state, x, y


def _leaves(tree):
    return jax.tree_util.tree_leaves(tree)


def test_per_example_grads_equal_a_loop_of_single_example_gradients(setup):
    model, params, state, x, y = setup
    grads = train.per_example_grads(model, train.cross_entropy_loss, params, state, (x, y))
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
    for g, p in zip(_leaves(grads), _leaves(params)):
        assert g.shape == (7, *p.shape) and g.dtype == jnp.float64
    grad_one = jax.jit(jax.grad(lambda p, xi, yi: train.cross_entropy_loss(model.apply(p, state, xi)[0], yi)))
    for i in range(len(x)):
        single = grad_one(params, x[i : i + 1], y[i : i + 1])
        for g, s in zip(_leaves(grads), _leaves(single)):
            np.testing.assert_allclose(g[i], s, rtol=1e-12, atol=1e-14)
    # the examples really differ (a broadcast of one gradient would pass the mean test below)
    first = _leaves(grads)[0]
    assert not np.allclose(first[0], first[1])


def test_mean_of_per_example_grads_is_the_batch_gradient(setup):
    model, params, state, x, y = setup
    grads = train.per_example_grads(model, train.cross_entropy_loss, params, state, (x, y))
    batch = jax.jit(jax.grad(lambda p: train.cross_entropy_loss(model.apply(p, state, x, train=True)[0], y)))(params)
    for g, b in zip(_leaves(grads), _leaves(batch)):
        np.testing.assert_allclose(jnp.mean(g, axis=0), b, rtol=1e-12, atol=1e-14)


def test_per_example_grads_jit_and_match_the_autodiff_twin(setup):
    model, params, state, x, y = setup
    fast = jax.jit(partial(train.per_example_grads, model, train.cross_entropy_loss))
    grads = fast(params, state, (x, y))
    twin = train.per_example_grads(_model(ops=reference), train.cross_entropy_loss, params, state, (x, y))
    for g, r in zip(_leaves(grads), _leaves(twin)):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-13)


def test_per_example_grads_use_running_statistics_for_batch_norm():
    model = jaxcnn.serial(layers.Conv(2, (3, 3)), layers.BatchNorm(), layers.Relu, layers.Flatten, layers.Dense(3))
    _, params, state = model.init(jax.random.key(2), (1, 5, 5, 1))
    params = _f64(params)
    state = jax.tree_util.tree_map(lambda a: a + 0.5, _f64(state))  # non-trivial running mean and variance
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((3, 5, 5, 1)))
    y = jnp.asarray([0, 2, 1], jnp.int32)
    grads = train.per_example_grads(model, train.cross_entropy_loss, params, state, (x, y))
    loss = lambda p, xi, yi: train.cross_entropy_loss(model.apply(p, state, xi, train=False)[0], yi)
    grad_one = jax.jit(jax.grad(loss))
    for i in range(3):  # train=False: each example alone, normalised with the running statistics
        single = grad_one(params, x[i : i + 1], y[i : i + 1])
        for g, s in zip(_leaves(grads), _leaves(single)):
            np.testing.assert_allclose(g[i], s, rtol=1e-12, atol=1e-14)


def test_per_example_grads_refuse_a_bad_batch(setup):
    model, params, state, x, y = setup
    with pytest.raises(ValueError, match=r"same leading \(example\) dimension, got shapes \(7, 6, 6, 2\) and \(6,\)"):
        train.per_example_grads(model, train.cross_entropy_loss, params, state, (x, y[:6]))
    with pytest.raises(TypeError, match="batch must be a pair"):
        train.per_example_grads(model, train.cross_entropy_loss, params, state, x)
