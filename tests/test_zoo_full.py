"""The full-size architectures and the named combinators they are built with: shapes, parameter names,
whole-network gradients against the reference twins, and training through ``jaxcnn train``.
(Against torchvision itself: tests/test_torchvision.py.)"""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import per_array_error, tiered

import jaxcnn
from jaxcnn import combinators, layers, losses, models, reference, train
from jaxcnn.cli import main
from jaxcnn.layers import core

KEY = jax.random.key(0)
RTOL = 1e-10


def abstract_init(model, shape):
    return core.abstract_init(model, shape, KEY)


def random_like(tree, seed):
    """float64 values: kernels ~ N(0, 1/fan_in), BN scales and variances in [0.5, 1.5], others ~ 0.1 N(0, 1)."""
    rng = np.random.default_rng(seed)
    paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    leaves = []
    for path, leaf in paths:
        name = str(path[-1].key) if hasattr(path[-1], "key") else ""
        if leaf.ndim >= 2:
            value = rng.standard_normal(leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
        elif name in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, leaf.shape)
        else:
            value = 0.1 * rng.standard_normal(leaf.shape)
        leaves.append(jnp.asarray(value, jnp.float64))
    return jax.tree_util.tree_unflatten(treedef, leaves)


# name -> (factory taking ops=, a small input it accepts)
SMALL = {
    "alexnet_lrn": (lambda ops=jaxcnn.ops: models.alexnet(10, lrn=True, ops=ops), (2, 67, 67, 3)),
    "vgg11_bn": (lambda ops=jaxcnn.ops: models.vgg11(10, batch_norm=True, ops=ops), (2, 32, 32, 3)),
    "googlenet_aux": (lambda ops=jaxcnn.ops: models.googlenet(10, aux_logits=True, ops=ops), (2, 40, 40, 3)),
    "resnet50": (lambda ops=jaxcnn.ops: models.resnet50(10, ops=ops), (2, 32, 32, 3)),
    "densenet_bc16": (lambda ops=jaxcnn.ops: models.densenet_bc(10, depth=16, growth_rate=4, ops=ops), (2, 8, 8, 3)),
}


@pytest.mark.parametrize("name", tiered(sorted(models.MODELS)))
def test_every_zoo_model_applies_to_the_shape_its_init_promised(name):
    spec = models.MODELS[name]
    model = models.build(name, 10, for_training=True)
    out_shape, params, state = abstract_init(model, (2, *spec.input_shape))
    for train_mode in (False, True):
        x = jax.ShapeDtypeStruct((3, *spec.input_shape), jnp.float32)
        y, new_state = jax.eval_shape(
            lambda p, s, x, t=train_mode: model.apply(p, s, x, key=KEY, train=t), params, state, x
        )
        shapes = [tuple(o.shape) for o in (y if isinstance(y, tuple) else (y,))]
        promised = out_shape if isinstance(out_shape[0], tuple) else (out_shape,)
        assert shapes == [(3, *tuple(o)[1:]) for o in promised]
        assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) for n in SMALL])
def test_whole_network_gradient_equals_the_reference_twin(name):
    """Train mode (batch statistics, dropout with a fixed key), float64, every parameter to 1e-10."""
    factory, shape = SMALL[name]
    model, twin = factory(), factory(ops=reference)
    _, params, state = abstract_init(model, shape)
    params, state = random_like(params, 1), random_like(state, 2)
    x = jnp.asarray(np.random.default_rng(3).standard_normal(shape))
    labels = np.arange(shape[0]) % 10

    def loss(m, lm):
        def f(p):
            out, new_state = m.apply(p, state, x, key=jax.random.key(4), train=True)
            outs = out if isinstance(out, tuple) else (out,)
            return sum(lm.softmax_cross_entropy(o, labels) for o in outs), new_state

        return jax.jit(jax.value_and_grad(f, has_aux=True))

    (value, new_state), grads = loss(model, losses)(params)
    (value_ref, new_state_ref), grads_ref = loss(twin, reference)(params)
    assert abs(float(value) - float(value_ref)) <= RTOL * abs(float(value_ref))
    assert per_array_error(grads, grads_ref) <= RTOL
    assert per_array_error(new_state, new_state_ref) <= RTOL


def test_parameter_trees_are_named_like_torchvision():
    _, params, state = abstract_init(models.resnet50(), (1, 224, 224, 3))
    assert params["layer2"]["0"]["downsample"]["0"]["kernel"].shape == (1, 1, 256, 512)
    assert params["layer3"]["5"]["bn3"]["scale"].shape == (1024,) and "downsample" not in params["layer3"]["5"]
    assert state["layer1"]["0"]["bn1"]["mean"].shape == (64,)
    _, params, _ = abstract_init(models.googlenet(aux_logits=True), (1, 224, 224, 3))
    assert params["inception4a"]["branch2"]["1"]["conv"]["kernel"].shape == (3, 3, 96, 208)
    assert params["aux2"]["fc1"]["kernel"].shape == (2048, 1024)
    _, params, _ = abstract_init(models.densenet121(), (1, 224, 224, 3))
    assert params["features"]["denseblock3"]["denselayer24"]["conv2"]["kernel"].shape == (3, 3, 128, 32)
    assert params["features"]["transition2"]["conv"]["kernel"].shape == (1, 1, 512, 256)


@pytest.mark.slow
def test_googlenet_trains_on_its_auxiliary_heads_and_is_evaluated_on_its_logits():
    config = train.run.RunConfig(dataset="synthetic", model="googlenet")
    model, loss, eval_loss = train.run.build_model(config, 4)
    out_shape, _, _ = abstract_init(model, (2, 64, 64, 3))
    assert out_shape == ((2, 4), (2, 4), (2, 4))  # (logits, aux1, aux2)
    logits, aux1, aux2 = (jnp.asarray(np.random.default_rng(i).standard_normal((5, 4))) for i in range(3))
    labels = np.array([0, 1, 2, 3, 0])
    ce = lambda z: float(losses.softmax_cross_entropy(z, labels))
    assert float(loss((logits, aux1, aux2), labels)) == pytest.approx(ce(logits) + 0.3 * (ce(aux1) + ce(aux2)))
    assert float(eval_loss((logits, aux1, aux2), labels)) == pytest.approx(ce(logits))
    assert train.primary_output((logits, aux1)) is logits


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [
        "--model googlenet --input-shape 32,32,3 --batch-size 8 --augment",
        "--model resnet18 --input-shape 32,32,3 --batch-size 8 --augment",
        "--model densenet_bc --batch-size 8",
    ],
)
def test_the_new_models_train_through_the_cli(argv, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--dataset", "synthetic", *argv.split(), "--max-steps", "2", "--no-plots", "--out", str(out)]
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 2 and np.isfinite(rows[-1]["loss"])
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and summary["steps"] == 2


# ---------------------------------------------------------------------------------------------
# The named combinators
# ---------------------------------------------------------------------------------------------


def test_named_is_serial_with_named_parameters_and_taps():
    net = combinators.named(("conv", layers.Conv(3, 3)), ("relu", layers.Relu), ("fc", layers.Dense(2)))
    twin = combinators.serial(layers.Conv(3, 3), layers.Relu, layers.Dense(2))
    out, params, state = net.init(KEY, (2, 5, 5, 1))
    _, params_s, _ = twin.init(KEY, (2, 5, 5, 1))
    assert out == (2, 3, 3, 2) and set(params) == {"conv", "relu", "fc"} and state["relu"] == {}
    x = jnp.ones((2, 5, 5, 1), jnp.float32)
    same = {"conv": params_s[0], "relu": {}, "fc": params_s[2]}
    np.testing.assert_array_equal(net.apply(same, state, x)[0], twin.apply(params_s, ({}, {}, {}), x)[0])
    tapped = combinators.named(
        ("conv", layers.Conv(3, 3)), ("fc", layers.Dense(2)), taps={"side": ("conv", layers.Flatten)}
    )
    out, params, _ = tapped.init(KEY, (2, 5, 5, 1))
    assert out == ((2, 3, 3, 2), (2, 27)) and set(params) == {"conv", "fc", "side"}
    y, side = tapped.apply(params, {"conv": {}, "fc": {}, "side": {}}, x)[0]
    conv_out = layers.Conv(3, 3).apply(params["conv"], {}, x)[0]
    np.testing.assert_array_equal(side, conv_out.reshape(2, -1))


def test_branches_dense_concat_and_residual_block():
    inception = combinators.branches(("a", layers.Conv(2, 1)), ("b", layers.Conv(3, 3, padding=1)))
    out, params, _ = inception.init(KEY, (2, 4, 4, 5))
    assert out == (2, 4, 4, 5) and set(params) == {"a", "b"}
    grow = combinators.dense_concat(layers.Conv(3, 3, padding=1))
    out, params, _ = grow.init(KEY, (2, 4, 4, 5))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 4, 4, 5)), jnp.float32)
    y, _ = grow.apply(params, {}, x)
    assert out == y.shape == (2, 4, 4, 8) and np.array_equal(y[..., :5], x)
    block = combinators.residual_block(
        ("conv1", layers.Conv(4, 3, padding=1)),
        ("relu", layers.Relu),
        downsample=layers.Conv(4, 1),
        activation=layers.Relu,
    )
    out, params, state = block.init(KEY, (2, 4, 4, 5))
    assert set(params) == {"conv1", "relu", "downsample"}
    y, _ = block.apply(params, state, x)
    body = jax.nn.relu(layers.Conv(4, 3, padding=1).apply(params["conv1"], {}, x)[0])
    skip = layers.Conv(4, 1).apply(params["downsample"], {}, x)[0]
    np.testing.assert_allclose(y, jax.nn.relu(body + skip), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (
            lambda: combinators.named(("a", layers.Relu), ("a", layers.Relu)),
            ValueError,
            "names must be unique, got ['a', 'a']",
        ),
        (lambda: combinators.named(layers.Relu), TypeError, "named: arguments must be (name, layer) pairs"),
        (
            lambda: combinators.named(("a", layers.Relu), taps={"t": ("b", layers.Relu)}),
            ValueError,
            "tap 't' must follow one of the children ['a']",
        ),
        (lambda: combinators.branches(("a", layers.Dense)), TypeError, "branches: argument 0 must be a Layer"),
        (
            lambda: combinators.residual_block(("downsample", layers.Relu)),
            ValueError,
            "'downsample' names the shortcut",
        ),
    ],
)
def test_named_combinator_errors(make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make()


def test_residual_block_refuses_mismatched_shapes():
    block = combinators.residual_block(("conv", layers.Conv(4, 3)))  # 5x5 -> 3x3, identity shortcut 5x5
    with pytest.raises(
        ValueError, match=r"residual_block: body output shape \(2, 3, 3, 4\) and shortcut output shape \(2, 5, 5, 5\)"
    ):
        block.init(KEY, (2, 5, 5, 5))
