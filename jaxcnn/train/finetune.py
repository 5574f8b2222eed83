"""Fine-tuning: start from a weights file, replace the classifier, freeze what should not move.

- :func:`load_weights`: a torchvision state dict (``.pth``, ``.pt``, ``.safetensors``;
  :func:`jaxcnn.models.from_torchvision`) or a jaxcnn checkpoint (a run directory or its ``.msgpack``), read
  into a model's params and state. Every array must fit, except the classifier's
  (:func:`jaxcnn.models.head_layers`), which keeps its fresh initialisation when the number of classes
  differs; the keys so initialised are returned.
- :func:`param_groups`: each parameter's group -- ``"head"`` (the classifier), ``"frozen"`` (what
  ``freeze`` keeps fixed: everything but the head for ``"backbone"``, the batch norms' scales and offsets
  for ``"bn"``) or ``"body"`` -- and :func:`grouped_optimizer` the optax ``multi_transform`` that updates
  the head at its own learning rate and the frozen arrays not at all (``optax.set_to_zero``, so they carry
  no optimizer state). With ``freeze`` other than ``"none"`` the batch norms also run on their running
  statistics (:func:`jaxcnn.layers.frozen_batch_norm`), which therefore stay as loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

from .. import checkpoint
from ..errors import ConfigError, unknown_choice
from ..models.torchvision import TORCHVISION_MODELS, from_torchvision, head_layers, named_layers

__all__ = ["FREEZE", "TORCH_SUFFIXES", "is_torchvision_file", "load_weights", "param_groups", "grouped_optimizer"]

FREEZE = ("none", "backbone", "bn")
TORCH_SUFFIXES = (".pth", ".pt", ".safetensors")


def is_torchvision_file(path: str | Path) -> bool:
    return Path(path).suffix in TORCH_SUFFIXES


def _flat(params: Any, state: Any) -> dict[str, np.ndarray]:
    """``{"params.<layer>.<leaf>" | "state.<layer>.<leaf>": array}``."""
    out = {}
    for prefix, tree in (("params", params), ("state", state)):
        for layer, node in named_layers(tree).items():
            out.update({f"{prefix}.{layer}.{leaf}": np.asarray(value) for leaf, value in node.items()})
    return out


def _assign(target: Any, tree_name: str, source: dict, heads: set[str], origin: str, fresh: list) -> Any:
    """``target`` (a params or state tree) with every array taken from ``source`` by its dotted key; an array
    of a head layer whose shape differs keeps its value (and is listed in ``fresh``)."""
    nodes = named_layers(target)
    out = {}
    for layer, node in nodes.items():
        for leaf, value in node.items():
            key = f"{tree_name}.{layer}.{leaf}"
            if key not in source:
                raise ConfigError(f"{origin} has no {key} (the model needs shape {np.shape(value)})")
            if np.shape(source[key]) == np.shape(value):
                out[key] = source[key].astype(np.asarray(value).dtype)
            elif layer in heads:
                out[key] = np.asarray(value)
                fresh.append(key)
            else:
                raise ConfigError(
                    f"{origin}: {key} has shape {np.shape(source[key])}, the model needs {np.shape(value)}"
                )

    def leaf(path, value):
        keys = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
        return out.get(f"{tree_name}.{'.'.join(map(str, keys))}", value)

    return jax.tree_util.tree_map_with_path(leaf, target)


def load_weights(path: str | Path, model_name: str, params: Any, state: Any) -> tuple[Any, Any, list[str]]:
    """``(params, state, fresh keys)``: ``params``/``state`` (the run's model, freshly initialised) with every
    array from the weights file at ``path`` (see the module docstring)."""
    path = Path(path)
    heads = set(head_layers(params))
    if is_torchvision_file(path):
        if model_name not in TORCHVISION_MODELS:
            raise ConfigError(f"--weights {path} holds torchvision weights; --model must be one of "
                              f"{sorted(TORCHVISION_MODELS)}, got {model_name!r}")  # fmt: skip
        _, loaded, loaded_state = from_torchvision(model_name, path)  # with the file's own classifier
        source = _flat(loaded, loaded_state)
    else:
        tree, _ = checkpoint.read_arrays(path)
        if not isinstance(tree, dict) or "params" not in tree:
            raise ConfigError(f"--weights {path} is not a jaxcnn training checkpoint (it has no params)")
        source = _flat(tree["params"], tree.get("model_state", {}))
    fresh: list[str] = []
    params = _assign(params, "params", source, heads, str(path), fresh)
    state = _assign(state, "state", source, heads, str(path), fresh)
    return params, state, fresh


def param_groups(params: Any, state: Any, freeze: str) -> Any:
    """A pytree like ``params`` of group names: "head", "frozen" or "body" (see the module docstring)."""
    if freeze not in FREEZE:
        raise unknown_choice("freeze", freeze, FREEZE)
    heads, norms = set(head_layers(params)), {p for p, n in named_layers(state).items() if "var" in n}

    def group(path, _):
        keys = [str(getattr(k, "key", getattr(k, "idx", ""))) for k in path]
        layer = ".".join(keys[:-1])
        if layer in heads:
            return "head"
        if freeze == "backbone" or (freeze == "bn" and layer in norms):
            return "frozen"
        return "body"

    return jax.tree_util.tree_map_with_path(group, params)


def grouped_optimizer(groups: Any, body: optax.GradientTransformation, head: optax.GradientTransformation):
    """optax's ``multi_transform``: ``head`` on the head, ``body`` on the body, nothing on the frozen."""
    return optax.multi_transform({"head": head, "body": body, "frozen": optax.set_to_zero()}, groups)
