"""Weights and models out of jaxcnn: StableHLO for serving, safetensors for any framework, torchvision
state dicts for PyTorch users.

- :func:`export_stablehlo`: ``jax.export`` of the eval-mode forward pass -- the run's input preprocessing
  included when it had one (:mod:`jaxcnn.data.transforms`), the parameters inside as constants, the batch
  dimension symbolic -- lowered for ``cpu``, ``cuda`` and ``tpu`` together, each platform getting its own
  convolution formulation (:func:`jaxcnn.ops.use_formulation`'s ``"auto"``). A program that never imports
  jaxcnn loads it with ``jax.export.deserialize(open(path, "rb").read()).call(x)``.
- :func:`export_safetensors`: params and state as ``params.<path>.<leaf>`` / ``state.<path>.<leaf>`` keys
  (``params.layer1.0.conv1.kernel``), readable by ``safetensors.numpy.load_file``.
- :func:`export_torchvision`: the torchvision ``state_dict`` (:func:`jaxcnn.models.to_torchvision`), as
  ``.safetensors`` or ``.pth``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._files import atomic_write, atomic_write_bytes
from .errors import ConfigError, MissingDependencyError, unknown_choice
from .layers import Layer
from .models.torchvision import TORCHVISION_MODELS, named_layers, save_torchvision, to_torchvision
from .train.step import primary_output

__all__ = ["PLATFORMS", "FORMATS", "export_stablehlo", "load_stablehlo", "export_safetensors", "export_torchvision"]

PLATFORMS = ("cpu", "cuda", "tpu")
FORMATS = ("stablehlo", "safetensors", "torchvision")


def _forward(model: Layer, params: Any, state: Any, preprocess: Callable | None) -> Callable:
    """The eval-mode forward pass with the parameters closed over: images -> logits (float32)."""
    params, state = jax.tree_util.tree_map(jnp.asarray, (params, state))

    def forward(x):
        if preprocess is not None:
            x = preprocess(x)
        out, _ = model.apply(params, state, x, train=False)
        return primary_output(out).astype(jnp.float32)

    return forward


def export_stablehlo(
    path: str | os.PathLike,
    model: Layer,
    params: Any,
    state: Any,
    example_shape: Sequence[int],
    *,
    dtype: Any = jnp.float32,
    preprocess: Callable | None = None,
    platforms: Sequence[str] = PLATFORMS,
) -> Path:
    """Serialise ``model``'s eval-mode forward pass on inputs ``(batch, *example_shape)`` of ``dtype`` (the
    batch symbolic) with ``params``/``state`` inside, for ``platforms``, to ``path`` (written atomically).
    ``preprocess`` (e.g. :func:`jaxcnn.data.transforms.imagenet_eval`) runs first, inside the export."""
    from jax import export

    unknown = sorted(set(platforms) - set(PLATFORMS))
    if unknown:
        raise unknown_choice("platform", unknown[0], PLATFORMS)
    (batch,) = export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, *example_shape), dtype)
    exported = export.export(jax.jit(_forward(model, params, state, preprocess)), platforms=tuple(platforms))(spec)
    return atomic_write_bytes(path, exported.serialize())


def load_stablehlo(path: str | os.PathLike):
    """The ``jax.export.Exported`` in ``path``: ``.call(x)`` runs it, ``.platforms`` says for what."""
    from jax import export

    return export.deserialize(bytearray(Path(path).read_bytes()))


def export_safetensors(path: str | os.PathLike, params: Any, state: Any) -> Path:
    """``params`` and ``state`` as a ``.safetensors`` file with dotted keys (see the module docstring)."""
    try:
        from safetensors.numpy import save
    except ImportError:
        raise MissingDependencyError(
            "exporting safetensors needs the safetensors package: pip install safetensors"
        ) from None
    arrays = {}
    for prefix, tree in (("params", params), ("state", state)):
        for layer, node in named_layers(tree).items():
            for leaf, value in node.items():
                arrays[f"{prefix}.{layer}.{leaf}" if layer else f"{prefix}.{leaf}"] = np.ascontiguousarray(value)
    return atomic_write(path, lambda f: f.write(save(arrays)))


def export_torchvision(path: str | os.PathLike, name: str, params: Any, state: Any) -> Path:
    """``params`` and ``state`` of the zoo model ``name`` as torchvision's state dict, ``.safetensors`` or
    ``.pth``, for ``torchvision.models.<name>(...).load_state_dict(..., strict=True)``."""
    if name not in TORCHVISION_MODELS:
        raise ConfigError(
            f"--format torchvision needs a torchvision model, and {name!r} is not one of {sorted(TORCHVISION_MODELS)}"
        )
    return save_torchvision(path, to_torchvision(name, params, state))
