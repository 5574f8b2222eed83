"""The model zoo: shapes, parameter counts, whole-network gradients against the reference twins,
per-example gradients under vmap, serialization, a training step, and bad arguments."""

import collections
import re

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import per_array_error, tiered

import jaxcnn
from jaxcnn import losses, models, reference
from jaxcnn.gradcheck import relative_error
from jaxcnn.layers import core

KEY = jax.random.key(0)
RTOL = 1e-10


def to64(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


def normal(shape, seed=0, dtype=jnp.float64):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def abstract_init(model, shape):
    return core.abstract_init(model, shape, KEY)


def random_like(tree, seed):
    """Random float64 values for an abstract params/state pytree: kernels ~ N(0, 1/fan_in), batch-norm
    scales and running variances around 1, biases, offsets and running means around 0 -- so biases and
    affine terms are exercised with non-trivial values."""
    rng = np.random.default_rng(seed)
    paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    leaves = []
    for path, leaf in paths:
        name = str(path[-1].key) if hasattr(path[-1], "key") else ""
        if leaf.ndim >= 2:
            fan_in = int(np.prod(leaf.shape[:-1]))
            value = rng.standard_normal(leaf.shape) / np.sqrt(fan_in)
        elif name in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, leaf.shape)
        else:
            value = 0.1 * rng.standard_normal(leaf.shape)
        leaves.append(jnp.asarray(value, jnp.float64))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def resnet20_a(num_classes=10, *, ops=jaxcnn.ops):
    return models.resnet20(num_classes, shortcut="A", ops=ops)


def resnet8_conv(num_classes=10, *, ops=jaxcnn.ops):
    return models.resnet(8, num_classes, shortcut="conv", ops=ops)


# (factory, natural input shape, other input shapes to sweep)
MODELS = {
    "lenet5": (models.lenet5, (2, 28, 28, 1), [(1, 32, 32, 1), (3, 28, 28, 1)]),
    "seed_cnn": (models.seed_cnn, (2, 28, 28, 1), [(1, 32, 32, 3)]),
    "fashion_cnn": (models.fashion_cnn, (2, 28, 28, 1), [(1, 32, 32, 3)]),
    "resnet20_A": (resnet20_a, (2, 32, 32, 3), [(2, 28, 28, 1), (1, 8, 8, 3)]),
    "resnet8_conv": (resnet8_conv, (2, 32, 32, 3), [(2, 28, 28, 1), (1, 9, 9, 2)]),
    "resnet20_conv": (models.resnet20, (2, 32, 32, 3), [(2, 28, 28, 1)]),
    "vgg_small": (models.vgg_small, (2, 28, 28, 1), [(1, 32, 32, 3), (2, 8, 8, 1)]),
    "mobilenet_small": (models.mobilenet_small, (2, 28, 28, 1), [(1, 32, 32, 3), (2, 5, 5, 1)]),
    "mnist1d_cnn": (models.mnist1d_cnn, (3, 40, 1), [(1, 64, 1), (2, 40, 2)]),
    "cnn3d": (models.cnn3d, (2, 16, 16, 16, 1), [(1, 8, 6, 4, 2)]),
    "conv_autoencoder": (models.conv_autoencoder, (2, 28, 28, 1), [(1, 32, 16, 1)]),
}


# Each model at its natural input shape in the default tier, at the other sizes it accepts in the slow one.
SHAPE_CASES = [(name, natural) for name, (_, natural, _) in MODELS.items()] + [
    pytest.param(name, shape, marks=pytest.mark.slow) for name, (_, _, others) in MODELS.items() for shape in others
]


@pytest.mark.parametrize("name, shape", SHAPE_CASES)
def test_apply_shape_equals_init_shape(name, shape):
    factory, natural, _ = MODELS[name]
    model = factory()
    out_shape, params, state = abstract_init(model, shape)
    for batch in (1, 4):
        x = jax.ShapeDtypeStruct((batch, *shape[1:]), jnp.float32)
        for train in (False, True):
            y, new_state = jax.eval_shape(
                lambda p, s, x, train=train: model.apply(p, s, x, key=jax.random.key(1), train=train), params, state, x
            )
            assert y.shape == (batch, *out_shape[1:]) and y.dtype == jnp.float32
            assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)
    if shape != natural:
        return
    # and once for real, at the natural shape (random parameters: running every initializer for every
    # kernel shape would only add PRNG compilations; initializers are tested on their own)
    params, state = random_like(params, seed=0), random_like(state, seed=1)
    y, _ = jax.jit(lambda p, s, x: model.apply(p, s, x, key=jax.random.key(1), train=True))(
        params, state, normal(natural)
    )
    assert y.shape == out_shape and y.dtype == jnp.float64
    assert np.all(np.isfinite(np.asarray(y)))


class SpyOps:
    """jaxcnn.ops, counting the calls of each op."""

    def __init__(self):
        self.calls = collections.Counter()

    def __getattr__(self, name):
        op = getattr(jaxcnn.ops, name)

        def counted(*args, **kwargs):
            self.calls[name] += 1
            return op(*args, **kwargs)

        return counted


EXPECTED_OPS = {
    "lenet5": {"conv": 2, "relu": 4, "max_pool": 2, "dense": 3},
    "seed_cnn": {"conv": 2, "sigmoid": 3, "avg_pool": 2, "dense": 2, "softmax": 1},
    "fashion_cnn": {"conv": 2, "relu": 3, "max_pool": 2, "dense": 2},
    # stem + 9 blocks of two convs, BN after each; option A shortcuts are plain jax.numpy
    "resnet20_A": {"conv": 19, "batch_norm": 19, "relu": 19, "global_avg_pool": 1, "dense": 1},
    # stem + 3 blocks, two of them with a projection shortcut (conv + BN)
    "resnet8_conv": {"conv": 9, "batch_norm": 9, "relu": 7, "global_avg_pool": 1, "dense": 1},
    "resnet20_conv": {"conv": 21, "batch_norm": 21, "relu": 19, "global_avg_pool": 1, "dense": 1},
    "vgg_small": {"conv": 6, "batch_norm": 6, "relu": 6, "max_pool": 3, "global_avg_pool": 1, "dense": 1},
    "mobilenet_small": {"conv": 11, "batch_norm": 11, "relu": 11, "global_avg_pool": 1, "dense": 1},
    "mnist1d_cnn": {"conv": 3, "relu": 3, "dense": 1},
    "cnn3d": {"conv": 2, "relu": 2, "max_pool": 1, "global_avg_pool": 1, "dense": 1},
    "conv_autoencoder": {"conv": 2, "relu": 3, "conv_transpose": 2, "sigmoid": 1},
}


@pytest.mark.parametrize("name", list(MODELS))
def test_models_compute_only_through_ops_and_init_runs_none(name):
    factory, natural, _ = MODELS[name]
    spy = SpyOps()
    model = factory(ops=spy)
    _, params, state = abstract_init(model, natural)
    assert not spy.calls  # init is shape arithmetic: no forward pass
    x = jax.ShapeDtypeStruct(natural, jnp.float32)
    jax.eval_shape(lambda p, s, x: model.apply(p, s, x, key=jax.random.key(0), train=True), params, state, x)
    assert dict(spy.calls) == EXPECTED_OPS[name]


# Exact parameter counts (trainable params only; batch-norm running statistics are state).
#
# LeNet-5 on 28x28x1 (conv1 SAME so 28 -> 28 -> 14 -> 10 -> 5): 5*5*1*6+6 = 156, 5*5*6*16+16 = 2,416,
#   400*120+120 = 48,120, 120*84+84 = 10,164, 84*10+10 = 850 -> 61,706.
# ResNet-20 (n = 3, convs without bias, BN = 2 params per channel), C input channels:
#   stem 3*3*C*16 + 32; stage 1: 3 * (2*2,304 + 64) = 14,016;
#   stage 2: 4,608 + 9,216 + 128 = 13,952 plus 2 * (2*9,216 + 128) = 37,120;
#   stage 3: 18,432 + 36,864 + 256 = 55,552 plus 2 * (2*36,864 + 256) = 147,968; dense 64*10+10 = 650.
#   Option A: 269,290 + 144 C = 269,722 for C = 3 (the paper's "0.27M") and 269,434 for C = 1.
#   Option "conv" adds the projections 16*32 + 64 and 32*64 + 128 = 2,752: 272,474 (C = 3).
# ResNet-8 conv (n = 1) on C = 3: stem 464 + stage1 4,672 + stage2 13,952 + 576 + stage3 55,552 + 2,176 + 650.
PARAM_COUNTS = [
    ("lenet5", (1, 28, 28, 1), 61_706),
    ("seed_cnn", (1, 28, 28, 1), 156 + 1_812 + 12_352 + 650),
    ("fashion_cnn", (1, 28, 28, 1), 832 + 51_264 + 3_212_288 + 10_250),
    ("resnet20_A", (1, 32, 32, 3), 269_722),
    ("resnet20_A", (1, 28, 28, 1), 269_434),
    ("resnet20_conv", (1, 32, 32, 3), 272_474),
    ("resnet20_conv", (1, 28, 28, 1), 272_186),
    ("resnet8_conv", (1, 32, 32, 3), 464 + 4_672 + 13_952 + 576 + 55_552 + 2_176 + 650),
    ("vgg_small", (1, 28, 28, 1), 285_984 + 896 + 1_290),
    ("mobilenet_small", (1, 28, 28, 1), 36_874),
    ("mnist1d_cnn", (1, 40, 1), 150 + 1_900 + 1_900 + 1_260),
    ("cnn3d", (1, 16, 16, 16, 1), 224 + 3_472 + 170),
    ("conv_autoencoder", (1, 28, 28, 1), 160 + 4_640 + 4_624 + 145),
]


@pytest.mark.parametrize("name, shape, count", PARAM_COUNTS, ids=[f"{n}-{s}" for n, s, _ in PARAM_COUNTS])
def test_parameter_counts(name, shape, count):
    _, params, _ = abstract_init(MODELS[name][0](), shape)
    assert models.count_params(params) == count


def test_resnet_state_holds_the_running_statistics():
    _, params, state = abstract_init(models.resnet20(shortcut="A"), (1, 32, 32, 3))
    # 19 batch norms: (16 + 3*2*16 + 3*2*32 + 3*2*64) channels, two statistics each
    assert models.count_params(state) == 2 * (16 + 6 * (16 + 32 + 64))
    assert models.count_params(params) == 269_722


def _loss_fn(name, model, loss_module, x, state):
    """A scalar loss of the model's output: cross-entropy of logits, NLL of probabilities (seed_cnn), MSE
    of the reconstruction (autoencoder). train=True, so batch norm uses batch statistics and dropout a
    fixed mask."""
    labels = np.arange(x.shape[0]) % 10

    def loss(params):
        y, new_state = model.apply(params, state, x, key=jax.random.key(42), train=True)
        if name == "conv_autoencoder":
            value = loss_module.mse(y, x)
        elif name == "seed_cnn":  # ends in Softmax: probabilities
            value = -jnp.mean(jnp.log(y[np.arange(x.shape[0]), labels]))
        else:
            value = loss_module.softmax_cross_entropy(y, labels)
        return value, new_state

    return loss


# Small inputs keep the float64 reference run quick; every model still has its full depth.
GRAD_INPUTS = {
    "lenet5": (2, 28, 28, 1),
    "seed_cnn": (2, 28, 28, 1),
    "fashion_cnn": (2, 28, 28, 1),
    "resnet20_A": (2, 8, 8, 3),
    "resnet8_conv": (2, 8, 8, 3),
    "vgg_small": (2, 16, 16, 1),
    "mobilenet_small": (2, 8, 8, 1),
    "mnist1d_cnn": (3, 40, 1),
    "cnn3d": (2, 6, 6, 6, 1),
    "conv_autoencoder": (2, 8, 8, 1),
}


# The default tier covers every kind of network (plain, batch norm and residual, depthwise, transposed, 1-D,
# 3-D); the slow tier adds the models built from the same layers.
@pytest.mark.parametrize("name", tiered(GRAD_INPUTS, slow={"seed_cnn", "fashion_cnn", "resnet8_conv", "vgg_small"}))
def test_whole_network_gradient_equals_reference_twin(name):
    """jax.grad through the hand-derived ops equals jax.grad of the same network built from the
    jaxcnn.reference twins (autodiff), with the same parameters, to 1e-10 in float64."""
    factory, shape = MODELS[name][0], GRAD_INPUTS[name]
    model, twin = factory(), factory(ops=reference)
    _, params, state = abstract_init(model, shape)
    assert jax.tree_util.tree_structure((params, state)) == jax.tree_util.tree_structure(abstract_init(twin, shape)[1:])
    params, state = random_like(params, seed=1), random_like(state, seed=2)
    x = normal(shape)
    if name == "conv_autoencoder":
        x = jax.nn.sigmoid(x)
    (loss, new_state), grads = jax.jit(jax.value_and_grad(_loss_fn(name, model, losses, x, state), has_aux=True))(
        params
    )
    (loss_ref, new_state_ref), grads_ref = jax.jit(
        jax.value_and_grad(_loss_fn(name, twin, reference, x, state), has_aux=True)
    )(params)
    assert abs(loss - loss_ref) <= RTOL * abs(loss_ref)
    assert per_array_error(grads, grads_ref) <= RTOL
    assert per_array_error(new_state, new_state_ref) <= RTOL
    assert np.isfinite(float(loss)) and relative_error(grads, jax.tree_util.tree_map(jnp.zeros_like, grads)) > 0


def test_resnet_eval_mode_gradient_equals_reference_twin():
    model, twin = models.resnet(8, shortcut="A"), models.resnet(8, shortcut="A", ops=reference)
    _, params, state = abstract_init(model, (2, 8, 8, 3))
    params, state = random_like(params, seed=1), random_like(state, seed=2)
    x, labels = normal((2, 8, 8, 3)), np.array([1, 7])

    def loss(m, lm):
        return lambda p: lm.softmax_cross_entropy(m.apply(p, state, x)[0], labels)

    g, g_ref = jax.jit(jax.grad(loss(model, losses)))(params), jax.jit(jax.grad(loss(twin, reference)))(params)
    assert per_array_error(g, g_ref) <= RTOL


def test_vmap_gives_per_example_outputs_and_gradients():
    model = models.lenet5()
    _, params, state = abstract_init(model, (1, 28, 28, 1))
    params = random_like(params, seed=3)
    x, labels = normal((3, 28, 28, 1)), np.array([3, 0, 9])

    def single_output(p, xi):
        return model.apply(p, state, xi[None])[0][0]

    def single_loss(p, xi, yi):
        return losses.softmax_cross_entropy(model.apply(p, state, xi[None])[0], yi[None])

    outputs = jax.jit(jax.vmap(single_output, in_axes=(None, 0)))(params, x)
    grads = jax.jit(jax.vmap(jax.grad(single_loss), in_axes=(None, 0, 0)))(params, x, labels)
    batched = model.apply(params, state, x)[0]
    assert relative_error(outputs, batched) <= 1e-13
    output_one, grad_one = jax.jit(single_output), jax.jit(jax.grad(single_loss))
    for i in range(x.shape[0]):
        assert relative_error(outputs[i], output_one(params, x[i])) <= 1e-13
        g_i = grad_one(params, x[i], labels[i])
        assert relative_error(jax.tree_util.tree_map(lambda g, i=i: g[i], grads), g_i) <= 1e-12
    # the batch gradient of the mean loss is the mean of the per-example gradients
    g_batch = jax.jit(jax.grad(lambda p: losses.softmax_cross_entropy(model.apply(p, state, x)[0], labels)))(params)
    assert relative_error(jax.tree_util.tree_map(lambda g: g.mean(axis=0), grads), g_batch) <= 1e-12


def test_params_and_state_survive_flax_serialization():
    model = models.resnet(8, shortcut="conv")
    _, params, state = abstract_init(model, (2, 8, 8, 3))
    params, state = random_like(params, seed=0), random_like(state, seed=1)
    state = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), state)  # mixed dtypes survive too
    blob = flax.serialization.to_bytes({"params": params, "state": state})
    params0 = jax.tree_util.tree_map(jnp.zeros_like, params)
    state0 = jax.tree_util.tree_map(jnp.zeros_like, state)
    restored = flax.serialization.from_bytes({"params": params0, "state": state0}, blob)
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure({"params": params, "state": state})
    flat = jax.tree_util.tree_leaves({"params": params, "state": state})
    for a, b in zip(jax.tree_util.tree_leaves(restored), flat, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_optax_training_step_reduces_the_loss_without_recompiling():
    model = models.fashion_cnn(dropout=0.25)
    _, params, state = model.init(KEY, (8, 12, 12, 1))
    x = normal((8, 12, 12, 1), dtype=jnp.float32)
    labels = np.arange(8) % 10
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)

    traces = []

    @jax.jit
    def step(params, state, opt_state, key):
        traces.append(1)  # runs once per trace; a retrace is what a recompilation starts with

        def loss(p):
            logits, new_state = model.apply(p, state, x, key=key, train=True)
            return losses.softmax_cross_entropy(logits, labels), new_state

        (value, new_state), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, opt_state, value

    def eval_loss(p):
        return float(losses.softmax_cross_entropy(model.apply(p, state, x)[0], labels))

    before = eval_loss(params)
    for i in range(10):
        params, state, opt_state, _ = step(params, state, opt_state, jax.random.key(i))
    # One trace, so one compilation (see _cache_size in tests/helpers.py).
    assert len(traces) == 1 and step._cache_size() <= 1
    assert eval_loss(params) < 0.5 * before


def test_batch_norm_models_update_state_in_train_mode_only():
    model = models.mobilenet_small()
    _, params, state = abstract_init(model, (4, 8, 8, 1))
    params, state = random_like(params, seed=0), random_like(state, seed=1)
    x = normal((4, 8, 8, 1))
    apply = jax.jit(model.apply, static_argnames="train")
    y_eval, same = apply(params, state, x)
    assert relative_error(same, state) == 0
    np.testing.assert_array_equal(apply(params, state, x)[0], y_eval)  # deterministic
    _, trained = apply(params, state, x, train=True)
    assert relative_error(trained, state) > 0


def test_model_outputs():
    x = jax.nn.sigmoid(normal((2, 28, 28, 1)))
    ae = models.conv_autoencoder()
    out_shape, params, state = abstract_init(ae, x.shape)
    assert params[1][0]["kernel"].shape == (3, 3, 16, 32)  # the decoder's first ConvTranspose
    y, _ = ae.apply(random_like(params, seed=0), state, x)
    assert out_shape == y.shape == x.shape and np.all((np.asarray(y) > 0) & (np.asarray(y) < 1))
    seed = models.seed_cnn(num_classes=5)
    _, params, state = abstract_init(seed, x.shape)
    p, _ = seed.apply(random_like(params, seed=0), state, x)
    np.testing.assert_allclose(np.sum(p, axis=-1), 1.0, rtol=1e-12)  # probabilities, not logits
    assert p.shape == (2, 5)


BAD_ARGUMENTS = [
    (lambda: models.resnet(21), "depth must be 6n + 2 for a positive int n (8, 14, 20, 32, 44, 56, 110, ...), got 21"),
    (lambda: models.resnet(2), "got 2"),
    (lambda: models.resnet(20.0), "got 20.0"),
    (lambda: models.resnet(20, shortcut="B"), "Unknown shortcut: 'B'. It needs to be one of ['conv', 'A']"),
    (lambda: models.lenet5(num_classes=0), "features must be a positive int, got 0"),
    (lambda: models.fashion_cnn(dropout=1.5), "rate must be in [0, 1) (the probability of dropping), got 1.5"),
    (lambda: models.vgg_small(config=(32, "X")), "config entries must be positive ints (conv widths) or 'M'"),
    (lambda: models.mobilenet_small(blocks=(32,)), "blocks entries must be (features, stride) pairs, got 32"),
    (lambda: models.cnn3d(features=(8,)), "features must be a pair of channel counts (f1, f2), got (8,)"),
    (lambda: models.conv_autoencoder(features=(16, 32, 64)), "features must be a pair of channel counts"),
    (lambda: models.zero_pad_shortcut(0, 2), "features must be a positive int, got 0"),
]


@pytest.mark.parametrize("make, message", BAD_ARGUMENTS, ids=[m for _, m in BAD_ARGUMENTS])
def test_bad_arguments_are_refused_by_name(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_zero_pad_shortcut():
    layer = models.zero_pad_shortcut(8, 2)
    out_shape, params, state = layer.init(KEY, (2, 5, 6, 3))
    assert out_shape == (2, 3, 3, 8) and params == {} and state == {}
    x = normal((2, 5, 6, 3))
    y, _ = layer.apply(params, state, x)
    np.testing.assert_array_equal(y[..., :3], x[:, ::2, ::2, :])
    np.testing.assert_array_equal(y[..., 3:], 0)
    message = "input channels input_shape[-1] (=9) must not exceed features (=8)"
    with pytest.raises(ValueError, match=re.escape(message)):
        layer.init(KEY, (2, 5, 6, 9))
