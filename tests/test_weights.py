"""Weights in and out: a torchvision state dict into a model with another number of classes, fine-tuning
with a frozen backbone or frozen batch norms, backbones that return each stage's features, torchvision's
ImageNet transforms, and exports (StableHLO a program without jaxcnn can call, safetensors, torchvision
state dicts that load back exactly)."""

import json
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import FULL_SIZE, jit_init, tiered
from PIL import Image, ImageFilter

from jaxcnn import checkpoint, export, inspect, models, serial
from jaxcnn.cli import main
from jaxcnn.data import transforms
from jaxcnn.layers import BatchNorm, Conv, Dense, Flatten, Relu
from jaxcnn.models.torchvision import TORCHVISION_MODELS, named_layers
from jaxcnn.train import finetune

KEY = jax.random.key(0)


def _random_weights(name, num_classes, seed=0):
    """A torchvision state dict of random values for the zoo model ``name`` (from our own layout, so no
    torch is needed): ``to_torchvision`` of randomly filled params and state."""
    model = TORCHVISION_MODELS[name].build(
        num_classes=num_classes, **({"aux_logits": True} if name == "googlenet" else {})
    )
    _, params, state = _abstract(model)
    rng = np.random.default_rng(seed)
    fill = lambda s: rng.standard_normal(s.shape, np.float32) * np.float32(0.05) + np.float32(s.ndim == 1)
    params, state = jax.tree_util.tree_map(fill, (params, state))
    return models.to_torchvision(name, params, state), params, state


def _small_npz(tmp_path, n_train=48, n_test=16, shape=(32, 32, 3), classes=4, seed=0):
    """A small learnable .npz (class-dependent means), so a CLI run of a 224-class network takes a few steps."""
    rng = np.random.default_rng(seed)
    split = {}
    for name, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % classes
        split[f"x_{name}"] = np.clip(rng.normal(0.2 + 0.2 * y[:, None, None, None], 0.2, (n, *shape)), 0, 1)
        split[f"y_{name}"] = y.astype(np.int32)
    path = tmp_path / "small.npz"
    np.savez(path, **{k: v.astype(np.float32) if k.startswith("x") else v for k, v in split.items()})
    return str(path)


def _he_like(model, input_shape, seed=0):
    """Float64 params and state for ``model`` drawn in numpy from its abstract shapes (compiling the init of a
    DenseNet takes longer than the test): kernels He-normal over their fan-in, vectors (biases, batch-norm
    scales, running variances) 1 +- 0.05."""
    from jaxcnn.layers.core import abstract_init

    _, params, state = abstract_init(model, input_shape)
    rng = np.random.default_rng(seed)

    def fill(a):
        if len(a.shape) <= 1:
            return jnp.asarray(1.0 + 0.05 * rng.standard_normal(a.shape), jnp.float64)
        return jnp.asarray(rng.standard_normal(a.shape) * np.sqrt(2.0 / np.prod(a.shape[:-1])), jnp.float64)

    return jax.tree_util.tree_map(fill, (params, state))


def _abstract(model):
    from jaxcnn.layers.core import abstract_init

    return abstract_init(model, (1, 224, 224, 3))


def _flat(tree):
    return {f"{layer}.{leaf}": np.asarray(v) for layer, node in named_layers(tree).items() for leaf, v in node.items()}


# ---------------------------------------------------------------------------------------------
# torchvision weights in, with a new head; and out again
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "googlenet"])
def test_a_1000_class_state_dict_loads_into_a_10_class_model_with_a_new_head(name):
    weights, params, state = _random_weights(name, 1000)
    kwargs = {"aux_logits": True} if name == "googlenet" else {}
    with pytest.warns(models.NewHeadWarning, match="initialised afresh for 10 classes") as caught:
        _, tuned, tuned_state = models.from_torchvision(name, weights, num_classes=10, **kwargs)
    heads = set(models.head_layers(tuned))
    assert heads == ({"fc"} if name == "resnet18" else {"fc", "aux1.fc2", "aux2.fc2"})
    for key in (f"{h}.{leaf}" for h in heads for leaf in ("weight", "bias")):
        assert key in str(caught[0].message)
    ours, theirs = _flat(tuned), _flat(params)
    for key, value in ours.items():
        if key.rsplit(".", 1)[0] in heads:
            assert value.shape[-1] == 10 and (key.endswith("bias") or np.std(value) > 0)  # initialised afresh
        else:
            np.testing.assert_array_equal(value, theirs[key], err_msg=key)  # every other array is the file's
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(tuned_state),
                                                      jax.tree_util.tree_leaves(state)))  # fmt: skip
    weights["layer1.0.conv1.weight" if name == "resnet18" else "conv1.conv.weight"] = np.zeros((3, 3))
    with pytest.raises(models.WeightsError, match="expected shape"):  # any other mismatch is still refused
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", models.NewHeadWarning)
            models.from_torchvision(name, weights, num_classes=10, **kwargs)


@pytest.mark.parametrize("name", tiered(sorted(TORCHVISION_MODELS), slow=set(TORCHVISION_MODELS) - {"resnet18"}))
def test_from_torchvision_of_to_torchvision_is_the_identity(name):
    weights, params, state = _random_weights(name, 7, seed=3)
    assert all(k.endswith("num_batches_tracked") == (v.dtype == np.int64) for k, v in weights.items())
    _, loaded, loaded_state = models.from_torchvision(name, weights)
    for a, b in zip(jax.tree_util.tree_leaves((loaded, loaded_state)), jax.tree_util.tree_leaves((params, state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    again = models.to_torchvision(name, loaded, loaded_state)
    assert again.keys() == weights.keys() and all(np.array_equal(again[k], weights[k]) for k in weights)


def test_a_torchvision_file_round_trips_through_safetensors(tmp_path):
    weights, params, _ = _random_weights("resnet18", 5)
    path = models.save_torchvision(tmp_path / "r18.safetensors", weights)
    _, loaded, _ = models.from_torchvision("resnet18", path)
    np.testing.assert_array_equal(loaded["fc"]["kernel"], params["fc"]["kernel"])
    with pytest.raises(ValueError, match="must end in .safetensors, .pth or .pt"):
        models.save_torchvision(tmp_path / "r18.bin", weights)


# ---------------------------------------------------------------------------------------------
# Fine-tuning: what moves and what does not
# ---------------------------------------------------------------------------------------------


def _small_bn_net():
    from jaxcnn import combinators

    return combinators.named(("conv", Conv(4, 3)), ("bn", BatchNorm()), ("relu", Relu), ("flat", Flatten),
                             ("fc", Dense(3)))  # fmt: skip


@pytest.mark.parametrize("freeze", ["none", "backbone", "bn"])
def test_grouped_optimizer_moves_only_what_is_not_frozen_and_keeps_no_state_for_it(freeze):
    from jaxcnn import train

    model = _small_bn_net()
    _, params, state = jit_init(model, KEY, (4, 6, 6, 2))
    groups = finetune.param_groups(params, state, freeze)
    assert groups["fc"] == {"kernel": "head", "bias": "head"}
    expected_conv = "frozen" if freeze == "backbone" else "body"
    expected_bn = "body" if freeze == "none" else "frozen"
    assert groups["conv"]["kernel"] == expected_conv and groups["bn"]["scale"] == expected_bn
    optimizer = finetune.grouped_optimizer(groups, optax.adam(0.1), optax.adam(0.3))
    trained = train.init_train_state(model, (4, 6, 6, 2), optimizer, 0)._replace(params=params, model_state=state)
    trained = trained._replace(opt_state=optimizer.init(params))
    step = train.make_train_step(model, optimizer, freeze_batch_norm=freeze != "none")
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 6, 6, 2)), jnp.float32)
    new, _ = step(trained, x, jnp.arange(4) % 3)
    for path, group in jax.tree_util.tree_leaves_with_path(groups):
        before, after = (np.asarray(jax.tree_util.tree_reduce(lambda a, b: b, t)) for t in (
            _at(params, path), _at(new.params, path)))  # fmt: skip
        assert np.array_equal(before, after) == (group == "frozen"), (path, group)
    # the running statistics move only when batch norm trains
    moved = not np.array_equal(new.model_state["bn"]["mean"], state["bn"]["mean"])
    assert moved == (freeze == "none")
    # frozen arrays carry no optimizer state: adam's moments exist for the trained arrays only
    moments = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(new.opt_state))
    trained_size = sum(int(np.size(v)) for (p, v), (_, g) in zip(jax.tree_util.tree_leaves_with_path(params),
                                                                 jax.tree_util.tree_leaves_with_path(groups))
                       if g != "frozen")  # fmt: skip
    assert moments == 2 * trained_size + 2  # and one step count for each of the two adams


def _at(tree, path):
    for key in path:
        tree = tree[getattr(key, "key", getattr(key, "idx", None))]
    return tree


@pytest.mark.slow
@pytest.mark.parametrize("freeze", ["backbone", "bn"])
def test_cli_fine_tuning_keeps_the_frozen_arrays_bit_identical(tmp_path, freeze, capsys):
    weights, params, state = _random_weights("resnet18", 1000)
    path = models.save_torchvision(tmp_path / "resnet18.safetensors", weights)
    out = tmp_path / "run"
    args = ["train", "--dataset", "npz", "--data-dir", _small_npz(tmp_path), "--model", "resnet18", "--epochs", "2",
            "--batch-size", "16", "--weights", str(path), "--freeze", freeze, "--preprocessing", "none",
            "--head-lr", "0.01", "--no-plots", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    assert "a new classifier for this dataset: params.fc.bias, params.fc.kernel" in capsys.readouterr().err
    saved, _ = checkpoint.read_arrays(out)
    ours, theirs = _flat(saved["params"]), _flat(params)
    batch_norms = {key.rsplit(".", 1)[0] for key in _flat(state)}  # the layers with running statistics
    for key, value in ours.items():
        frozen = not key.startswith("fc.") and (freeze == "backbone" or key.rsplit(".", 1)[0] in batch_norms)
        if frozen:
            np.testing.assert_array_equal(value, theirs[key], err_msg=key)
        elif key.startswith("fc."):
            assert value.shape[-1] == 4 and not np.allclose(value, 0)
        else:
            assert not np.array_equal(value, theirs[key]), key  # trained
    for key, value in _flat(saved["model_state"]).items():  # every running statistic, as loaded
        np.testing.assert_array_equal(value, _flat(state)[key], err_msg=key)
    frozen_size = sum(v.size for k, v in ours.items() if not k.startswith("fc."))
    if freeze == "backbone":  # the optimizer state holds nothing for the frozen arrays
        assert sum(np.size(v) for v in jax.tree_util.tree_leaves(saved["opt_state"])) < frozen_size // 100


# ---------------------------------------------------------------------------------------------
# Backbones
# ---------------------------------------------------------------------------------------------

FAMILIES = ["alexnet", "vgg11_bn", "googlenet", "resnet50", "densenet121", "lenet5", "resnet20", "mobilenet_small",
            "densenet_bc", "mnist1d_cnn", "cnn3d"]  # fmt: skip


@pytest.mark.parametrize("name", tiered(FAMILIES, slow=FULL_SIZE | {"mobilenet_small", "resnet20"}))
def test_backbone_stages_have_the_summarys_jumps_and_return_those_feature_maps(name):
    spec = models.MODELS[name]
    shape = (2, *(min(n, 96) for n in spec.input_shape[:-1]), spec.input_shape[-1])
    bb = models.backbone(name, shape)
    rows = {}
    for row in inspect.summary(models.build(name), shape).rows:
        rows.setdefault(row.path, row)
    reductions = [info.reduction for info in bb.feature_info]
    assert reductions == sorted(reductions) and len(set(reductions)) == len(reductions)  # one per resolution
    for info in bb.feature_info:
        assert info.reduction == max(rows[info.path].jump) and info.channels == rows[info.path].output_shape[-1]
    full = models.build(name)
    params, state = _he_like(full, shape)  # float64: no rounding
    x = jnp.asarray(np.random.default_rng(0).uniform(size=shape), jnp.float64)
    features, _ = jax.jit(lambda p, s, x: bb.layer.apply(p, s, x))(bb.select(params), bb.select(state), x)
    paths = [info.path for info in bb.feature_info]
    captured = jax.jit(lambda p, s, x: inspect.intermediates(full, p, s, x, paths))(params, state, x)
    assert len(features) == len(bb.feature_info)
    for info, feature in zip(bb.feature_info, features):
        np.testing.assert_allclose(np.asarray(feature), np.asarray(captured[info.path]), rtol=1e-10, atol=1e-12)
        assert feature.shape[-1] == info.channels


def test_resnet_stages_are_timms():
    bb = models.backbone("resnet50")
    assert [(i.path, i.channels, i.reduction) for i in bb.feature_info] == [
        ("relu", 64, 2), ("layer1", 256, 4), ("layer2", 512, 8), ("layer3", 1024, 16), ("layer4", 2048, 32)
    ]  # fmt: skip
    assert "stage 5, /32" in str(inspect.summary(models.resnet50(), (1, 224, 224, 3), stages=True))


# ---------------------------------------------------------------------------------------------
# torchvision's ImageNet transforms
# ---------------------------------------------------------------------------------------------


def _image(shape, seed=0):
    pixels = (np.random.default_rng(seed).random((*shape, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(1.5)))


@pytest.mark.parametrize("shape", [(300, 400), (500, 333), (256, 256), (230, 700)])
def test_the_eval_transform_is_pils_resize_and_crop_to_uint8_rounding(shape):
    """torchvision's Resize(256) + CenterCrop(224) on a PIL image, written out with PIL here."""
    image = _image(shape)
    h, w = shape
    size = (256, int(256 * w / h)) if h <= w else (int(256 * h / w), 256)
    resized = np.asarray(Image.fromarray(image).resize(size[::-1], Image.Resampling.BILINEAR))
    top, left = int(round((size[0] - 224) / 2)), int(round((size[1] - 224) / 2))
    expected = resized[top : top + 224, left : left + 224] / 255.0
    ours = np.asarray(transforms.center_crop(transforms.resize_shorter(image[None], 256), 224))[0]
    assert np.max(np.abs(np.round(ours * 255) - np.round(expected * 255))) <= 1
    normalised = np.asarray(transforms.imagenet_eval(image[None]))[0]
    np.testing.assert_allclose(normalised, (ours - transforms.IMAGENET_MEAN) / transforms.IMAGENET_STD, atol=1e-5)


@pytest.mark.slow
def test_the_train_transform_crops_resizes_and_flips(monkeypatch):
    image = _image((120, 90))
    box = (10, 5, 60, 50)
    crop = np.asarray(Image.fromarray(image[10:70, 5:55]).resize((224, 224), Image.Resampling.BILINEAR))
    ours = np.asarray(transforms._resized_crop(jnp.asarray(image, jnp.float32) / 255, box, 224)) * 255
    assert np.max(np.abs(np.round(ours) - crop)) <= 1  # the crop, then PIL's resize
    batch = np.stack([image] * 4)
    out = np.asarray(transforms.imagenet_train(jax.random.key(3), batch))
    assert out.shape == (4, 224, 224, 3)
    assert len({float(np.round(o.sum(), 2)) for o in out}) == 4  # every image its own crop
    again = np.asarray(transforms.imagenet_train(jax.random.key(3), batch))
    np.testing.assert_array_equal(out, again)  # a pure function of the key


@pytest.mark.slow
def test_the_transforms_equal_torchvisions(torchvision_transforms):
    T = torchvision_transforms
    for shape in [(300, 400), (500, 333)]:
        image = _image(shape, seed=1)
        expected = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])(Image.fromarray(image))
        ours = np.asarray(transforms.center_crop(transforms.resize_shorter(image[None], 256), 224))[0]
        assert np.max(np.abs(np.round(ours * 255) - np.round(expected.numpy().transpose(1, 2, 0) * 255))) <= 1


@pytest.fixture
def torchvision_transforms():
    from helpers import require_module

    torch = require_module("torch", "pip install -e '.[torch]'", "JAXCNN_REQUIRE_TORCH")
    real = torch.library.register_fake
    torch.library.register_fake = lambda *args, **kwargs: lambda fn: fn
    try:
        import torchvision.transforms as T
    finally:
        torch.library.register_fake = real
    return T


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------

CALLER = """
import sys, numpy as np
from jax import export
exported = export.deserialize(bytearray(open(sys.argv[1], "rb").read()))
x = np.load(sys.argv[2])
np.save(sys.argv[3], np.asarray(exported.call(x)))
print(" ".join(exported.platforms), "jaxcnn" in sys.modules)
"""


@pytest.mark.slow
def test_exported_stablehlo_runs_without_jaxcnn_at_any_batch_for_three_platforms(tmp_path):
    model = models.lenet5()
    _, params, state = jit_init(model, KEY, (1, 28, 28, 1))
    path = export.export_stablehlo(tmp_path / "lenet5.stablehlo", model, params, state, (28, 28, 1))
    for batch in (1, 7):
        x = np.random.default_rng(batch).uniform(size=(batch, 28, 28, 1)).astype(np.float32)
        np.save(tmp_path / "x.npy", x)
        argv = [sys.executable, "-c", CALLER, str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["cpu", "cuda", "tpu", "False"]  # every platform, and no jaxcnn imported
        expected = jax.jit(lambda p, s, x: model.apply(p, s, x)[0])(params, state, x)
        np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-5)


def test_the_export_carries_each_platforms_own_convolutions(tmp_path):
    """One file: the CPU's formulation on cpu, the canonical one (lhs_dilation) on cuda and tpu."""
    model = serial(Conv(4, 3, stride=2), Relu, Flatten, Dense(2))
    _, params, state = jit_init(model, KEY, (1, 9, 9, 3))
    path = export.export_stablehlo(tmp_path / "m", model, params, state, (9, 9, 3))
    exported = export.load_stablehlo(path)
    assert exported.platforms == ("cpu", "cuda", "tpu")
    text = exported.mlir_module()
    assert text.count("stablehlo.convolution") >= 1 and "platform_index" in text  # a switch on the platform


def test_safetensors_export_has_dotted_keys(tmp_path):
    from safetensors.numpy import load_file

    model = _small_bn_net()
    _, params, state = jit_init(model, KEY, (2, 6, 6, 2))
    arrays = load_file(str(export.export_safetensors(tmp_path / "m.safetensors", params, state)))
    assert sorted(arrays) == ["params.bn.offset", "params.bn.scale", "params.conv.bias", "params.conv.kernel",
                              "params.fc.bias", "params.fc.kernel", "state.bn.mean", "state.bn.var"]  # fmt: skip
    np.testing.assert_array_equal(arrays["params.conv.kernel"], params["conv"]["kernel"])


@pytest.mark.slow
def test_the_cli_exports_a_run_in_every_format(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "npz", "--data-dir", _small_npz(tmp_path), "--model", "resnet18", "--epochs",
                 "2", "--batch-size", "16", "--no-plots", "--out", str(out)]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    for fmt, name in (("stablehlo", "m.stablehlo"), ("safetensors", "m.safetensors"), ("torchvision", "tv.pth")):
        assert main(["export", "--checkpoint", str(out), "--format", fmt, "--out", str(tmp_path / name)]) == 0
    _, tv_params, _ = models.from_torchvision("resnet18", tmp_path / "tv.pth")
    best, _ = checkpoint.read_arrays(out / "best.msgpack")
    np.testing.assert_array_equal(tv_params["fc"]["kernel"], best["params"]["fc"]["kernel"])
    assert summary["best_step"] == checkpoint.read_meta(out, name="best.msgpack")["step"]
