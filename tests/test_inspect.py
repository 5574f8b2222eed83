"""Looking inside a network: summary rows against the network itself, receptive fields checked
empirically (the support of one unit's input gradient through the hand-derived VJPs), the shape
helpers, feature maps, and the summary / inspect commands."""

import json
import re
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiered

import jaxcnn
from jaxcnn import combinators, inspect, layers, models, shapes
from jaxcnn.cli import main

KEY = jax.random.key(0)


# ---------------------------------------------------------------------------------------------
# Receptive fields, empirically
# ---------------------------------------------------------------------------------------------


def _abstract(model, shape):
    """``model.init``'s params and state as ShapeDtypeStructs (traced, not run)."""
    return jax.eval_shape(lambda: model.init(KEY, shape)[1:])


def _avg_for_max():
    """The ops with max pooling swapped for mean pooling of the same geometry: a max pool's gradient
    reaches one input per window, a mean pool's every input the window covers (the field)."""
    ops = {name: getattr(jaxcnn.ops, name) for name in jaxcnn.ops.__all__}
    ops["max_pool"] = lambda x, window, *, stride=None, padding="VALID": jaxcnn.ops.avg_pool(
        x, window, stride=stride, padding=padding
    )
    ops["global_max_pool"] = jaxcnn.ops.global_avg_pool
    return SimpleNamespace(**ops)


def _positive(tree, seed):
    """Weights in (0.5, 1.5) / fan-in, batch-norm running means 0: every path from input to unit
    contributes a positive amount, so nothing cancels and the gradient is non-zero exactly where the
    unit reads."""
    rng = np.random.default_rng(seed)

    def leaf(path, x):
        name = str(path[-1].key) if hasattr(path[-1], "key") else ""
        fan_in = np.prod(x.shape[:-1]) if x.ndim > 1 else 1
        value = 0.0 if name == "mean" else rng.uniform(0.5, 1.5, x.shape) / fan_in
        return jnp.asarray(value, jnp.float64)

    return jax.tree_util.tree_map_with_path(leaf, tree)


def _within_the_input(row, unit, spatial) -> bool:
    """The unit's field does not run past the input's end. (Past the end, rows that no strided window
    of some layer reaches cut the true field short of the recurrence's box; before the start and
    elsewhere the box is exact.)"""
    return all(
        s + i * j + (r - 1) / 2 <= n - 1
        for r, j, s, i, n in zip(row.receptive_field, row.jump, row.start, unit, spatial)
    )


def _deepest_unit(rows, input_shape):
    """The deepest layer with a box field and a unit of it (middle, else first) that fits the input."""
    spatial = input_shape[1:-1]
    boxed = [r for r in rows if isinstance(r.receptive_field, tuple) and len(r.output_shape) == len(input_shape)]
    for row in reversed(boxed):
        for unit in (tuple(n // 2 for n in row.output_shape[1:-1]), (0,) * len(spatial)):
            if _within_the_input(row, unit, spatial):
                return row, unit
    raise AssertionError("no layer with a box field fits the input")


def _support_matches_the_field(model, input_shape):
    """Compare the non-zero support of d unit / d input with the summary's receptive box, for a unit of
    the deepest layer that has one inside the input."""
    row, unit = _deepest_unit(inspect.summary(model, input_shape).rows, input_shape)
    params, state = _abstract(model, input_shape)
    params, state = _positive(params, 1), _positive(state, 2)
    x = jnp.asarray(np.random.default_rng(3).uniform(0.5, 1.5, input_shape))

    def value(x):
        # every channel of the unit: behind a concatenation channels see different fields, and the
        # unit's field is their union (the largest)
        return jnp.sum(inspect.intermediates(model, params, state, x, [row.path])[row.path][(0, *unit)])

    grad = np.asarray(jax.jit(jax.grad(value))(x))[0]  # one compile, not one per eager primitive
    support = np.abs(grad).sum(axis=-1) > 0
    box = inspect.receptive_box(row, unit, input_shape[1:-1])
    expected = np.zeros(input_shape[1:-1], bool)
    expected[tuple(slice(lo, hi + 1) for lo, hi in box)] = True
    assert np.array_equal(support, expected), (
        row.path,
        row.receptive_field,
        row.start,
        box,
        np.argwhere(support)[[0, -1]],
    )
    return row


SMALL_NETS = {
    "strides, dilation, padding": lambda L: combinators.serial(
        L.Conv(2, 3, stride=2, padding=1),
        L.Relu,
        L.Conv(2, 3, dilation=2, padding=(1, 2)),
        L.Conv(2, (2, 3), stride=(1, 2)),
    ),
    "pools and SAME": lambda L: combinators.serial(
        L.Conv(2, 5, padding="SAME"),
        L.MaxPool(3, stride=2, padding=1),
        L.AvgPool(2),
        L.Conv(2, 3, dilation=2, padding="SAME"),
    ),
    "ceil-mode pool, stride > kernel is avoided": lambda L: combinators.serial(
        L.Conv(2, 4, stride=2), L.MaxPool(3, stride=2, ceil_mode=True), L.Conv(2, 2, stride=2)
    ),
    "1-D": lambda L: combinators.serial(
        L.Conv(2, 5, stride=2, padding=1), L.Conv(2, 3, stride=2, dilation=2), L.MaxPool(2)
    ),
    "branches and residual": lambda L: combinators.serial(
        combinators.branches(("a", L.Conv(2, 1)), ("b", L.Conv(2, 5, padding=2))),
        combinators.residual_block(("c", L.Conv(4, 3, stride=2, padding=1)), downsample=L.Conv(4, 1, stride=2)),
        combinators.dense_concat(L.Conv(2, 3, padding=1)),
    ),
    "adaptive pool, evenly dividing": lambda L: combinators.serial(
        L.Conv(2, 2, stride=(1, 1)), L.AdaptiveAvgPool((9, 8)), L.Conv(2, 3, padding=1), L.Conv(2, 2)
    ),  # 36x32 -> 9x8: windows of 4x4 at stride 4, a box field with jump 4
}
SMALL_SHAPES = {"1-D": (1, 41, 2)}


@pytest.mark.parametrize("name", list(SMALL_NETS))
def test_receptive_field_is_the_support_of_the_input_gradient(name):
    model = SMALL_NETS[name](layers.bind(_avg_for_max()))
    row = _support_matches_the_field(model, SMALL_SHAPES.get(name, (1, 37, 33, 2)))
    if name.startswith("adaptive"):  # the adaptive pool's rule was what set this field
        assert row.jump == (4, 4) and row.receptive_field == (2 + 3 * 1 + 2 * 4 + 1 * 4, 2 + 3 * 1 + 2 * 4 + 1 * 4)


ZOO_SHAPES = {
    "alexnet": (1, 99, 99, 3),
    "alexnet_lrn": (1, 99, 99, 3),
    "vgg11": (1, 64, 64, 3),
    "googlenet": (1, 64, 64, 3),
    "resnet18": (1, 64, 64, 3),
    "resnet50": (1, 64, 64, 3),
    "densenet121": (1, 64, 64, 3),
}
SMALL_ZOO = [n for n, s in models.MODELS.items() if s.input_shape[0] < 100 and s.outputs != "images"]


@pytest.mark.parametrize("name", tiered(SMALL_ZOO + list(ZOO_SHAPES)))
def test_zoo_receptive_fields_are_the_support_of_the_input_gradient(name):
    spec = models.MODELS[name]
    model = spec.constructor(num_classes=4, ops=_avg_for_max())
    _support_matches_the_field(model, ZOO_SHAPES.get(name, (1, *spec.input_shape)))


def test_the_notes_receptive_fields_of_alexnet_and_vgg16():
    alexnet = {r.path: r for r in inspect.summary(models.alexnet(), (1, 224, 224, 3)).rows}
    assert alexnet["features.12"].receptive_field == (195, 195) and alexnet["features.12"].jump == (32, 32)
    vgg = {r.path: r for r in inspect.summary(models.vgg16(), (1, 224, 224, 3)).rows}
    assert vgg["features.30"].receptive_field == (212, 212) and vgg["features.30"].output_shape == (1, 7, 7, 512)
    assert vgg["classifier.6"].receptive_field == "all"


# ---------------------------------------------------------------------------------------------
# Summary rows against the network
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", tiered(sorted(models.MODELS)))
def test_summary_totals_and_shapes_agree_with_the_network(name):
    spec = models.MODELS[name]
    model = models.build(name, 7)
    shape = (2, *spec.input_shape)
    s = inspect.summary(model, shape)
    params, state = _abstract(model, shape)
    assert s.total.params == models.count_params(params) and s.total.state == models.count_params(state)
    captured = jax.eval_shape(
        lambda p, st: inspect.intermediates(model, p, st, jnp.zeros(shape, jnp.float32)), params, state
    )
    rows = {}
    for r in s.rows:
        rows.setdefault(r.path, r)  # a DenseNet layer's row, then its body's at the same path
    for path, out in captured.items():
        if path in rows:  # every layer the summary lists has the shape the network computes
            got = tuple(o.shape for o in out) if isinstance(out, tuple) else out.shape
            assert rows[path].output_shape == got, path
    assert len([p for p in captured if p in rows]) >= len([r for r in s.rows if r.path]) - 1


def test_summary_counts_flops_and_memory():
    s = inspect.summary(
        combinators.serial(layers.Conv(4, 3), layers.Relu, layers.Flatten, layers.Dense(5)), (2, 6, 6, 3)
    )
    conv, relu, flat, dense = s.rows
    assert conv.flops == 2 * (2 * 4 * 4) * (3 * 3 * 3 * 4) + 2 * 4 * 4 * 4  # multiply-adds, then the bias add
    assert relu.flops == 2 * 4 * 4 * 4 and flat.flops == 0 and dense.flops == 2 * 2 * 64 * 5 + 2 * 5
    assert s.total.flops == sum(r.flops for r in s.rows)
    assert s.total.activation_bytes == 4 * (128 + 128 + 128 + 10)
    assert s.total.params == 3 * 3 * 3 * 4 + 4 + 64 * 5 + 5
    text = str(s)
    assert "receptive field" in text and re.search(r"total: 437 parameters", text)


# ---------------------------------------------------------------------------------------------
# Shape helpers: the notes' arithmetic
# ---------------------------------------------------------------------------------------------


def test_shape_helpers():
    assert shapes.conv_output_size(6, 3) == 4 and shapes.conv_output_size(6, 3, stride=2) == 2  # the 6x6 example
    assert shapes.conv_output_size(5, 3) == 3 and shapes.conv_output_size(5, 3, stride=2) == 2  # the 5x5 example
    assert shapes.conv_output_size(32, 5) == 28 and shapes.conv_output_size(224, 11, stride=4, padding=2) == 55
    assert shapes.conv_output_size(7, 3, padding="SAME", stride=2) == 4 and shapes.same_padding(7, 3, stride=2) == (
        1,
        1,
    )
    assert shapes.same_padding(6, 3, stride=2) == (0, 1) and shapes.same_padding(5, 3, dilation=2) == (2, 2)
    assert shapes.conv_output_size(9, 3, dilation=2, padding=(1, 0)) == 6
    assert (
        shapes.pool_output_size(112, 3, stride=2) == 55
        and shapes.pool_output_size(112, 3, stride=2, ceil_mode=True) == 56
    )
    assert (
        shapes.pool_output_size(5, 2, stride=3, padding=1, ceil_mode=True) == 2
    )  # the last window may not start in padding
    assert shapes.conv_transpose_output_size(7, 3, stride=2, padding=1, output_padding=1) == 14
    with pytest.raises(ValueError, match=r"does not fit an input of 3"):
        shapes.conv_output_size(3, 5)
    with pytest.raises(ValueError, match="stride must be a positive int, got 0"):
        shapes.conv_output_size(8, 3, stride=0)


# ---------------------------------------------------------------------------------------------
# Feature maps and the commands
# ---------------------------------------------------------------------------------------------


def test_feature_maps_are_the_layer_outputs():
    from jaxcnn import plots

    model = models.lenet5()
    _, params, state = model.init(KEY, (1, 28, 28, 1))
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(28, 28, 1)), jnp.float32)
    maps = plots.feature_maps(model, params, state, x, ["0", "3"])
    conv1 = layers.Conv(6, 5, padding="SAME").apply(params[0], {}, x[None])[0][0]
    np.testing.assert_allclose(maps["0"], conv1, rtol=1e-6)
    assert maps["3"].shape == (10, 10, 16)
    with pytest.raises(KeyError, match="no layer at path '9.9'"):
        plots.feature_maps(model, params, state, x, ["9.9"])


@pytest.mark.parametrize("name", tiered(sorted(models.MODELS)))
def test_cli_summary_prints_every_zoo_model(name, capsys):
    assert main(["summary", "--model", name]) == 0
    out = capsys.readouterr().out
    spec = models.MODELS[name]
    num_classes = 1000 if spec.input_shape == (224, 224, 3) else 10
    params = jax.eval_shape(lambda: models.build(name, num_classes).init(KEY, (1, *spec.input_shape))[1])
    assert f"total: {models.count_params(params):,} parameters" in out
    assert out.count("\n") > 5


@pytest.mark.slow
def test_cli_inspect_writes_the_pictures(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "synthetic", "--epochs", "1", "--no-plots", "--out", str(run)]) == 0
    assert main(["inspect", "--checkpoint", str(run), "--index", "5"]) == 0
    for name in ("feature_maps_5.png", "filters.png", "receptive_field_5.png"):
        assert (run / "inspect" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert main(["inspect", "--checkpoint", str(run), "--index", "999"]) == 2
    assert "--index must be in [0, 128)" in capsys.readouterr().err
    assert json.loads((run / "summary.json").read_text())["steps"] == 16
