r"""Weights from torchvision: :func:`from_torchvision` builds a zoo model and fills its parameters and
batch-norm statistics from a torchvision ``state_dict``.

The models here name their parameter trees after torchvision's modules, so a key maps by name:
``layer1.0.conv1.weight`` is ``params["layer1"]["0"]["conv1"]["kernel"]``. Per leaf:

==========================  =================================  ===========================================
torchvision                 jaxcnn                             conversion
==========================  =================================  ===========================================
conv ``weight`` (O,I,H,W)   ``kernel`` (H,W,I,O)               ``transpose(2, 3, 1, 0)``
linear ``weight`` (O,I)     ``kernel`` (I,O)                   transpose; after a flatten, the I axis goes
                                                               from PyTorch's (C,H,W) order to ours (H,W,C)
``bias``                    ``bias``                           --
BN ``weight`` / ``bias``    ``scale`` / ``offset``             --
BN ``running_mean`` / _var  state ``mean`` / ``var``           (``num_batches_tracked`` is not needed)
==========================  =================================  ===========================================

A key that is missing, unexpected, or of the wrong shape is refused with a :class:`WeightsError`
naming the key and both shapes. Nothing is unpickled unless torch itself reads a ``.pth``
(``torch.load(..., weights_only=True)``); ``.safetensors`` files are read with the ``safetensors``
package's NumPy API, no torch needed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import (
    ConfigError,
    ConfigTypeError,
    DataNotFoundError,
    FileFormatError,
    MissingDependencyError,
    unknown_choice,
)
from ..layers import Layer
from ..layers.core import abstract_init
from .alexnet import alexnet
from .densenet import densenet121, densenet169, densenet201
from .googlenet import googlenet
from .resnet import resnet18, resnet34, resnet50, resnet101, resnet152
from .vgg import vgg11, vgg13, vgg16, vgg19

__all__ = [
    "from_torchvision",
    "to_torchvision",
    "save_torchvision",
    "head_layers",
    "NewHeadWarning",
    "TORCHVISION_MODELS",
    "WeightsError",
    "read_state_dict",
    "named_layers",
    "torch_shape",
    "to_torch_layout",
    "from_torch_layout",
]


class WeightsError(FileFormatError):
    """A state dict that does not fit the model: a missing, unexpected or misshapen key."""


class TorchvisionModel(NamedTuple):
    build: Callable[..., Layer]
    flattened: Mapping[str, tuple[int, int, int]]  # linear layers fed by a flatten: their input's (C, H, W)


def _vgg_builder(depth: int, batch_norm: bool):
    fn = {11: vgg11, 13: vgg13, 16: vgg16, 19: vgg19}[depth]
    return lambda **kw: fn(**{"batch_norm": batch_norm, **kw})


_AUX_FC1 = {"aux1.fc1": (128, 4, 4), "aux2.fc1": (128, 4, 4)}

TORCHVISION_MODELS: dict[str, TorchvisionModel] = {
    "alexnet": TorchvisionModel(alexnet, {"classifier.1": (256, 6, 6)}),
    **{
        f"vgg{d}{'_bn' if bn else ''}": TorchvisionModel(_vgg_builder(d, bn), {"classifier.0": (512, 7, 7)})
        for d in (11, 13, 16, 19)
        for bn in (False, True)
    },
    "googlenet": TorchvisionModel(googlenet, _AUX_FC1),
    **{
        f"resnet{d}": TorchvisionModel(fn, {})
        for d, fn in zip((18, 34, 50, 101, 152), (resnet18, resnet34, resnet50, resnet101, resnet152))
    },
    **{
        f"densenet{d}": TorchvisionModel(fn, {})
        for d, fn in zip((121, 169, 201), (densenet121, densenet169, densenet201))
    },
}


def read_state_dict(weights: Any) -> dict[str, np.ndarray]:
    """A ``state_dict`` as ``{key: numpy array}`` from a mapping of torch tensors or arrays, a module
    with ``state_dict()``, a ``.pth``/``.pt`` path (needs torch) or a ``.safetensors`` path (needs the
    ``safetensors`` package, not torch)."""
    if isinstance(weights, (str, os.PathLike)):
        weights = _read_file(Path(weights))
    elif hasattr(weights, "state_dict") and callable(weights.state_dict):
        weights = weights.state_dict()
    if not isinstance(weights, Mapping):
        raise ConfigTypeError(
            f"weights must be a state dict, a module, or a .pth/.safetensors path, got {type(weights)}"
        )
    return {str(k): _to_numpy(v) for k, v in weights.items()}


def _read_file(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise DataNotFoundError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(str(path))
    if path.suffix in (".pth", ".pt"):
        try:
            import torch
        except ImportError:
            raise MissingDependencyError(
                f"reading {path} needs torch (pip install torch==2.13.0); without torch, convert it to "
                ".safetensors, which jaxcnn reads with the safetensors package alone"
            ) from None
        return torch.load(path, map_location="cpu", weights_only=True)
    raise ConfigError(f"weights file must end in .pth, .pt or .safetensors, got {path}")


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
        return value.float().numpy() if str(value.dtype) in ("torch.bfloat16",) else value.numpy()
    return np.asarray(value)


# ---------------------------------------------------------------------------------------------
# The mapping
# ---------------------------------------------------------------------------------------------


def named_layers(tree: Any, prefix: str = "") -> dict[str, dict]:
    """Every layer's own arrays in a params or state pytree (or a Flax collection): each non-empty dict
    whose values are all arrays, by its dotted path (``"layer1.0.conv1"``; a ``serial`` child by its
    index), in the tree's order, which is the order the layers run in."""
    if isinstance(tree, dict) and tree and all(hasattr(v, "shape") for v in tree.values()):
        return {prefix: tree}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (tuple, list)) else ()
    found = {}
    for key, child in items:
        found.update(named_layers(child, f"{prefix}.{key}" if prefix else str(key)))
    return found


def _expected(path: str, node: dict) -> dict[str, tuple[str, str]]:
    """torchvision key -> (tree, leaf) for one layer: conv/linear (``kernel``) or batch norm (``scale``)."""
    if "kernel" in node:
        keys = {f"{path}.weight": ("params", "kernel")}
        if "bias" in node:
            keys[f"{path}.bias"] = ("params", "bias")
        return keys
    return {
        f"{path}.weight": ("params", "scale"),
        f"{path}.bias": ("params", "offset"),
        f"{path}.running_mean": ("state", "mean"),
        f"{path}.running_var": ("state", "var"),
    }


def torch_shape(ours: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch shape of one of our arrays: a kernel ``(*window, in, out)`` -> ``(out, in, *window)``,
    a dense kernel ``(in, out)`` -> ``(out, in)``; vectors as they are."""
    if len(ours) < 2:
        return tuple(ours)
    return (ours[-1], ours[-2], *ours[:-2])


def _flatten_order(kernel: np.ndarray, chw: tuple[int, int, int], *, to_torch: bool) -> np.ndarray:
    """A dense kernel ``(in, out)`` fed by a flatten, its ``in`` rows reordered between our (H, W, C)
    flattening and PyTorch's (C, H, W)."""
    c, h, w = chw
    if to_torch:
        return kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1)
    return kernel.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(c * h * w, -1)


def to_torch_layout(value: np.ndarray, flatten_chw: tuple[int, int, int] | None = None) -> np.ndarray:
    """One of our arrays in PyTorch's layout (:func:`torch_shape`); ``flatten_chw``: the ``(C, H, W)`` of the
    map a flatten feeds into this dense kernel. The exact inverse of :func:`from_torch_layout`."""
    value = np.asarray(value)
    if value.ndim == 2 and flatten_chw is not None:
        value = _flatten_order(value, flatten_chw, to_torch=True)
    return value if value.ndim < 2 else np.moveaxis(value, (-1, -2), (0, 1))


def from_torch_layout(value: np.ndarray, flatten_chw: tuple[int, int, int] | None = None) -> np.ndarray:
    """A PyTorch array in our layout: ``(out, in, *window)`` -> ``(*window, in, out)``, ``(out, in)`` ->
    ``(in, out)`` (``flatten_chw``: reorder the rows a flatten feeds from (C, H, W) to (H, W, C))."""
    value = np.asarray(value)
    value = value if value.ndim < 2 else np.moveaxis(value, (0, 1), (-1, -2))
    return _flatten_order(value, flatten_chw, to_torch=False) if value.ndim == 2 and flatten_chw else value


def _convert(key: str, value: np.ndarray, ours: tuple[int, ...], flattened: Mapping[str, Any]) -> np.ndarray:
    """A torchvision array in our layout, its shape checked first."""
    if value.shape != torch_shape(ours):
        raise WeightsError(f"{key}: expected shape {torch_shape(ours)} (torchvision's layout), got {value.shape}")
    return from_torch_layout(value, flattened.get(key.rsplit(".", 1)[0]))


def head_layers(params: Any) -> list[str]:
    """The paths of the layers that produce the logits: the last layer with a 2-D kernel (a dense layer) of
    the network, and of each auxiliary head (GoogLeNet's ``aux1``, ``aux2``)."""
    dense = [path for path, node in named_layers(params).items() if np.ndim(node.get("kernel")) == 2]
    heads = {}
    for path in dense:
        heads[path.split(".")[0] if path.startswith("aux") else ""] = path
    return list(heads.values())


def _expected_keys(nodes: dict) -> dict[str, tuple[str, str, str]]:
    """torchvision key -> (tree, layer path, leaf) for every array of a model's params and state."""
    expected = {}
    for path, node in nodes["params"].items():
        expected.update({k: (tree, path, leaf) for k, (tree, leaf) in _expected(path, node).items()})
    return expected


class NewHeadWarning(UserWarning):
    """:func:`from_torchvision` initialised the classifier afresh (``num_classes`` differs from the file's)."""


def _fill(
    params: Any, state: Any, weights: dict[str, np.ndarray], flattened: Mapping[str, Any], heads: Sequence[str] = ()
) -> list[str]:
    """Replace every leaf of ``params`` and ``state`` (nested dicts, changed in place) by its
    torchvision counterpart; refuse missing, unexpected and misshapen keys, except the keys of the layers
    ``heads``, which keep their values when their shapes differ. Returns the keys so kept."""
    nodes = {"params": named_layers(params), "state": named_layers(state)}
    expected = _expected_keys(nodes)
    unexpected = sorted(k for k in weights if k not in expected and not k.endswith(".num_batches_tracked"))
    if unexpected:
        raise WeightsError(f"unexpected key {unexpected[0]!r} (shape {weights[unexpected[0]].shape}) in the state dict")
    missing = sorted(k for k in expected if k not in weights)
    if missing:
        tree, path, leaf = expected[missing[0]]
        shape = torch_shape(nodes[tree][path][leaf].shape)
        raise WeightsError(f"missing key {missing[0]!r} (the model expects shape {shape}) in the state dict")
    kept = []
    for key, (tree, path, leaf) in expected.items():
        node = nodes[tree][path]
        if path in heads and weights[key].shape != torch_shape(node[leaf].shape):
            kept.append(key)
            continue
        node[leaf] = jnp.asarray(_convert(key, weights[key], node[leaf].shape, flattened), jnp.float32)
    return kept


def from_torchvision(name: str, weights: Any, *, seed: int = 0, **model_kwargs: Any) -> tuple[Layer, Any, Any]:
    """``(model, params, state)``: the zoo model torchvision calls ``name`` (``"resnet50"``, ``"vgg16"``,
    ``"vgg16_bn"``, ``"googlenet"``, ``"densenet121"``, ``"alexnet"``, ...; :data:`TORCHVISION_MODELS`)
    with the weights of a torchvision ``state_dict``.

    ``weights``: a state dict (torch tensors or NumPy arrays), a torch module, or a path to a ``.pth``
    (read with ``torch.load(..., weights_only=True)``) or ``.safetensors`` file. ``num_classes`` is read
    from the weights unless given; other ``model_kwargs`` go to the model (``googlenet``'s
    ``transform_input=True`` for torchvision's ImageNet weights). The model is built for 224x224x3 inputs
    (any size works at ``apply``).

    Fine-tuning: with a ``num_classes`` other than the file's, the classifier (:func:`head_layers`: the last
    dense layer, and the auxiliary heads' of GoogLeNet) is initialised afresh from ``seed`` and every other
    array loaded; a :class:`NewHeadWarning` names the keys so initialised. Any other mismatch is refused.
    """
    if name not in TORCHVISION_MODELS:
        raise unknown_choice("torchvision model", name, sorted(TORCHVISION_MODELS))
    spec = TORCHVISION_MODELS[name]
    state_dict = read_state_dict(weights)
    if "num_classes" not in model_kwargs:
        model_kwargs["num_classes"] = _num_classes(state_dict)
    if name == "googlenet" and "aux_logits" not in model_kwargs:
        model_kwargs["aux_logits"] = any(k.startswith("aux1.") for k in state_dict)
    model = spec.build(**model_kwargs)
    new_head = model_kwargs["num_classes"] != _num_classes(state_dict)
    if new_head:  # initialised for real: the head keeps these values
        _, params, state = _init(model, seed)
        params, state = jax.tree_util.tree_map(np.asarray, (params, state))
    else:
        _, *shapes = abstract_init(model, (1, 224, 224, 3))
        params, state = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    kept = _fill(params, state, state_dict, spec.flattened, head_layers(params) if new_head else ())
    if kept:
        warnings.warn(
            NewHeadWarning(f"{name}: initialised afresh for {model_kwargs['num_classes']} classes: {', '.join(kept)}"),
            stacklevel=2,
        )
    return model, params, state


def _init(model: Layer, seed: int):
    """``model.init`` on one 224x224x3 example, compiled as one function."""
    box = {}

    def init(key):
        box["shape"], params, state = model.init(key, (1, 224, 224, 3))
        return params, state

    params, state = jax.jit(init)(jax.random.key(seed))
    return box["shape"], params, state


def to_torchvision(name: str, params: Any, state: Any) -> dict[str, np.ndarray]:
    """The torchvision ``state_dict`` of the zoo model ``name``'s ``params`` and ``state`` (torchvision's key
    names and layouts, float32 NumPy arrays, ``num_batches_tracked`` 0 for every batch norm): the exact
    inverse of :func:`from_torchvision`, ready for ``torchvision.models.<name>().load_state_dict(..., strict=True)``
    (via ``torch.from_numpy``) or :func:`save_torchvision`."""
    if name not in TORCHVISION_MODELS:
        raise unknown_choice("torchvision model", name, sorted(TORCHVISION_MODELS))
    flattened = TORCHVISION_MODELS[name].flattened
    nodes = {"params": named_layers(params), "state": named_layers(state)}
    out = {}
    for key, (tree, path, leaf) in _expected_keys(nodes).items():
        layout = to_torch_layout(np.asarray(nodes[tree][path][leaf], np.float32), flattened.get(path))
        out[key] = np.array(layout, order="C")  # a writable copy, so torch.from_numpy takes it without a warning
        if leaf == "var":
            out[key.rsplit(".", 1)[0] + ".num_batches_tracked"] = np.zeros((), np.int64)
    return out


def save_torchvision(path: str | os.PathLike, state_dict: Mapping[str, np.ndarray]) -> Path:
    """Write a state dict (:func:`to_torchvision`) as ``.safetensors`` (the ``safetensors`` package, no torch)
    or ``.pth`` (``torch.save`` of tensors; needs torch), atomically."""
    from .._files import atomic_write

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import save

        return atomic_write(path, lambda f: f.write(save(dict(state_dict))))
    if path.suffix in (".pth", ".pt"):
        try:
            import torch
        except ImportError:
            raise MissingDependencyError(f"writing {path} needs torch; write a .safetensors file without it") from None
        tensors = {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}
        return atomic_write(path, lambda f: torch.save(tensors, f))
    raise ConfigError(f"a torchvision weights file must end in .safetensors, .pth or .pt, got {path}")


def _num_classes(state_dict: Mapping[str, np.ndarray]) -> int:
    """The rows of the last linear layer's weight (torchvision puts the classifier last)."""
    linear = [k for k, v in state_dict.items() if k.endswith(".weight") and v.ndim == 2 and not k.startswith("aux")]
    if not linear:
        raise WeightsError("the state dict has no linear layer, so num_classes cannot be read from it")
    return int(state_dict[linear[-1]].shape[0])
