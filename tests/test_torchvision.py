"""The full-size architectures against torchvision, an oracle that shares nothing with jaxcnn: equal
parameter counts, equal logits from the same (random) weights loaded through ``from_torchvision``, and
equal gradients in float64 (the hand-derived VJPs on real architectures against torch autograd).

torch and torchvision are optional test oracles (``pip install -e ".[torch]"``); without them this
module is skipped, unless ``JAXCNN_REQUIRE_TORCH=1`` (set by ``.ci/run``), where they must be there.
"""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import require, require_module

from jaxcnn import layers, losses, models
from jaxcnn.layers.core import abstract_init
from jaxcnn.models.torchvision import TORCHVISION_MODELS, WeightsError

pytestmark = pytest.mark.slow  # 224x224 networks against an optional oracle

torch = require_module("torch", "pip install -e '.[torch]'", "JAXCNN_REQUIRE_TORCH")


@pytest.fixture(scope="module")
def tv():
    """torchvision's model definitions. Its compiled operators do not load against the CPU build of
    torch (``operator torchvision::nms does not exist``); the models do once ``register_fake`` (used
    only to register those operators' meta kernels) is a no-op -- patched here, in the tests only."""
    try:
        import torchvision
    except (ImportError, RuntimeError):
        real = torch.library.register_fake
        torch.library.register_fake = lambda *args, **kwargs: lambda fn: fn
        try:
            for name in [m for m in sys.modules if m.startswith("torchvision")]:
                del sys.modules[name]
            import torchvision
        except ImportError:
            require("JAXCNN_REQUIRE_TORCH", "torchvision is not installed (pip install -e '.[torch]')")
        finally:
            torch.library.register_fake = real
    return torchvision.models


def _torch_model(tv, name: str, seed: int = 0):
    """A torchvision model with random weights and random batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    kwargs = {"init_weights": True} if name == "googlenet" else {}
    model = getattr(tv, name)(weights=None, **kwargs)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _logits(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name", sorted(TORCHVISION_MODELS))
def test_parameter_count_equals_torchvision(tv, name):
    torch_count = sum(p.numel() for p in getattr(tv, name)(weights=None).parameters())
    aux = {"aux_logits": True} if name == "googlenet" else {}  # torchvision's googlenet() has the heads
    model = TORCHVISION_MODELS[name].build(**aux)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), (1, 224, 224, 3))[1])
    assert models.count_params(params) == torch_count


@pytest.mark.parametrize("name", sorted(TORCHVISION_MODELS))
def test_torchvision_weights_give_torchvision_logits(tv, name):
    reference = _torch_model(tv, name)
    model, params, state = models.from_torchvision(name, reference.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = jax.jit(lambda p, s, x: model.apply(p, s, x)[0])(params, state, x)
    assert _rel(_logits(got), expected) <= 1e-4
    if name == "googlenet":  # the auxiliary heads, on the inception 4a / 4d outputs torch computes
        taps = {}
        for tap, after in (("aux1", "inception4a"), ("aux2", "inception4d")):
            getattr(reference, after).register_forward_hook(lambda m, i, o, tap=tap: taps.update({tap: o}))
        with torch.no_grad():
            reference(torch.from_numpy(x.transpose(0, 3, 1, 2)))
            aux = [reference.aux1(taps["aux1"]).numpy(), reference.aux2(taps["aux2"]).numpy()]
        assert _rel(got[1], aux[0]) <= 1e-4 and _rel(got[2], aux[1]) <= 1e-4


def _randomised(params, state, seed):
    """Every array drawn afresh: kernels He-scaled, scales in [0.5, 1.5], offsets and biases around 0, running
    means around 0 and variances in [0.5, 1.5] (an initialised network's zero biases, unit scales and fresh
    statistics would hide a swapped pair)."""
    rng = np.random.default_rng(seed)

    def draw(path, a):
        leaf = jax.tree_util.keystr(path[-1:])
        if a.ndim > 1:
            return rng.standard_normal(a.shape) * np.sqrt(2.0 / np.prod(a.shape[:-1]))
        return rng.uniform(0.5, 1.5, a.shape) if leaf in ("['scale']", "['var']") else rng.normal(0, 0.1, a.shape)

    return jax.tree_util.tree_map_with_path(lambda p, a: jnp.asarray(draw(p, a), a.dtype), (params, state))


@pytest.mark.parametrize("name", sorted(TORCHVISION_MODELS))
def test_to_torchvision_loads_strictly_into_torchvision_and_gives_our_logits(tv, name):
    """Weights out: jaxcnn's own (random) parameters and batch-norm statistics, 10 classes, as a state
    dict that torchvision's model takes with ``strict=True`` and that gives jaxcnn's logits."""
    aux = {"aux_logits": True} if name == "googlenet" else {}
    model = TORCHVISION_MODELS[name].build(num_classes=10, **aux)
    _, params, state = abstract_init(model, (1, 224, 224, 3))  # shapes only: every array is drawn below
    params, state = _randomised(params, state, seed=5)
    weights = models.to_torchvision(name, params, state)
    reference = getattr(tv, name)(weights=None, num_classes=10, **({"init_weights": False} if aux else {}))
    reference.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()}, strict=True)
    x = np.random.default_rng(0).standard_normal((2, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        expected = reference.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = jax.jit(lambda p, s, x: model.apply(p, s, x)[0])(params, state, x)
    assert _rel(_logits(got), expected) <= 1e-4


def _torch_grads(reference, x, labels):
    reference.train()
    out = reference(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(labels))
    loss.backward()
    return float(loss.detach()), {k: p.grad.numpy() for k, p in reference.named_parameters()}


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_train_mode_gradients_equal_torch_autograd_in_float64(tv, name):
    """Every parameter's gradient of the cross-entropy, batch norm in train mode (batch statistics),
    through the hand-derived VJPs, equals torch autograd's to 1e-9 in float64."""
    reference = _torch_model(tv, name).double()
    model, params, state = models.from_torchvision(name, reference.state_dict())
    params, state = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), (params, state))
    rng = np.random.default_rng(1)
    x, labels = rng.standard_normal((4, 32, 32, 3)), np.array([3, 1, 4, 1])
    torch_loss, torch_grads = _torch_grads(reference, x, labels)

    def loss(p):
        out, new_state = model.apply(p, state, jnp.asarray(x), train=True)
        return losses.softmax_cross_entropy(out, labels), new_state

    (value, new_state), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    assert abs(float(value) - torch_loss) <= 1e-12 * abs(torch_loss)
    ours = _as_torch_state_dict(grads, name)
    assert set(ours) == set(torch_grads)
    errors = {k: _rel(ours[k], torch_grads[k]) for k in torch_grads}
    assert max(errors.values()) <= 1e-9, sorted(errors.items(), key=lambda kv: -kv[1])[:3]
    # the running statistics moved as torch's did (momentum 0.1 there is 0.9 here; unbiased variance)
    running = {k: v.numpy() for k, v in reference.state_dict().items() if "running" in k}
    ours_state = _as_torch_state_dict(new_state, name)
    assert max(_rel(ours_state[k], running[k]) for k in running) <= 1e-12


def _as_torch_state_dict(tree, name: str) -> dict[str, np.ndarray]:
    """Our params (or state) tree as torchvision keys and layouts: the inverse of from_torchvision."""
    from jaxcnn.models.torchvision import named_layers

    nodes = named_layers(tree)
    out = {}
    for path, node in nodes.items():
        for leaf, value in node.items():
            value = np.asarray(value)
            key = {"kernel": "weight", "bias": "bias", "scale": "weight", "offset": "bias"}.get(leaf)
            key = key or {"mean": "running_mean", "var": "running_var"}[leaf]
            if value.ndim == 4:
                value = value.transpose(3, 2, 0, 1)
            elif value.ndim == 2:
                value = value.T
            out[f"{path}.{key}"] = value
    return out


def test_weight_files_pth_and_safetensors(tv, tmp_path):
    reference = _torch_model(tv, "resnet18")
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    from safetensors.torch import save_file

    save_file(reference.state_dict(), str(tmp_path / "resnet18.safetensors"))
    _, from_pth, _ = models.from_torchvision("resnet18", tmp_path / "resnet18.pth")
    _, from_dict, _ = models.from_torchvision("resnet18", reference.state_dict())
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(from_pth), jax.tree.leaves(from_dict)))
    # .safetensors needs no torch: read in a process where importing torch fails
    code = (
        "import sys; sys.modules['torch'] = None; import numpy as np, jax; from jaxcnn import models; "
        f"m, p, s = models.from_torchvision('resnet18', {str(tmp_path / 'resnet18.safetensors')!r}); "
        f"np.save({str(tmp_path / 'fc.npy')!r}, np.asarray(p['fc']['kernel']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "fc.npy"), np.asarray(from_dict["fc"]["kernel"]))


def test_refused_state_dicts_name_the_key_and_both_shapes(tv):
    good = {k: v.numpy() for k, v in _torch_model(tv, "resnet18").state_dict().items()}
    missing = {k: v for k, v in good.items() if k != "layer2.0.downsample.0.weight"}
    with pytest.raises(
        WeightsError, match=r"missing key 'layer2.0.downsample.0.weight' \(the model expects shape \(128, 64, 1, 1\)\)"
    ):
        models.from_torchvision("resnet18", missing)
    with pytest.raises(WeightsError, match=r"unexpected key 'layer5.0.conv1.weight' \(shape \(3, 3\)\)"):
        models.from_torchvision("resnet18", {**good, "layer5.0.conv1.weight": np.zeros((3, 3))})
    bad = {**good, "layer1.0.conv2.weight": np.zeros((64, 64, 5, 5), np.float32)}
    with pytest.raises(
        WeightsError, match=r"layer1.0.conv2.weight: expected shape \(64, 64, 3, 3\) .*got \(64, 64, 5, 5\)"
    ):
        models.from_torchvision("resnet18", bad)
    with pytest.raises(ValueError, match="Unknown torchvision model: 'resnet19'"):
        models.from_torchvision("resnet19", good)
    _, params, _ = models.from_torchvision(
        "resnet18", {**good, "fc.weight": good["fc.weight"][:7], "fc.bias": good["fc.bias"][:7]}
    )
    assert params["fc"]["kernel"].shape == (512, 7)  # num_classes read from the weights


@pytest.mark.parametrize(
    "n, k, s, p",
    [
        (112, 3, 2, 0),
        (56, 3, 2, 0),
        (28, 3, 2, 0),
        (14, 2, 2, 0),
        (7, 2, 2, 0),
        (9, 3, 2, 1),
        (10, 3, 3, 1),
        (5, 3, 1, 1),
        (5, 2, 3, 1),
        (8, 2, 3, 1),
    ],
)
def test_max_pool_ceil_mode_matches_torch(n, k, s, p):
    x = np.random.default_rng(n).standard_normal((2, n, n + 1, 3))
    pool = layers.MaxPool(k, stride=s, padding=p, ceil_mode=True)
    out_shape, _, _ = pool.init(None, x.shape)
    got, vjp = jax.vjp(lambda x: pool.apply({}, {}, x)[0], jnp.asarray(x))
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2)).requires_grad_()
    expected = torch.nn.functional.max_pool2d(xt, k, s, p, ceil_mode=True)
    assert tuple(out_shape) == got.shape == tuple(expected.permute(0, 2, 3, 1).shape)
    np.testing.assert_array_equal(np.asarray(got), expected.detach().numpy().transpose(0, 2, 3, 1))
    dy = np.random.default_rng(1).standard_normal(got.shape)
    expected.backward(torch.from_numpy(dy.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(dy))[0]), xt.grad.numpy().transpose(0, 2, 3, 1), atol=1e-12)
