"""Backbones: a zoo network without its classifier, returning the feature map of every stage (timm's
``features_only``, torchvision's ``create_feature_extractor``), which detection and segmentation heads
are built on.

A *stage* ends where the resolution is about to halve: along the network's spine (its top-level layers,
and those inside a top-level ``features`` block), the last layer before the jump -- the product of the
strides so far, :func:`jaxcnn.summary`'s ``jump`` -- grows, and the last layer before the global pooling
or the classifier. For a ResNet that is ``relu`` (reduction 2), ``layer1`` (4), ``layer2`` (8), ``layer3``
(16) and ``layer4`` (32), timm's stages; for VGG the ReLU before each max pool; for DenseNet ``relu0`` and
the dense blocks (``norm5`` last); for GoogLeNet ``conv1``, ``conv3`` and the last Inception module of each
resolution. :data:`FeatureInfo` lists each stage's path, channels and reduction (its jump).

The backbone is the network cut after its last stage (later layers and auxiliary heads dropped); its
``apply`` returns the stage feature maps, in order. Its parameters are the full network's restricted to
what is kept: :meth:`Backbone.select` turns a full model's params (or state) -- e.g. from
:func:`~jaxcnn.models.from_torchvision` -- into the backbone's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from ..combinators import named, serial
from ..errors import ConfigError
from ..inspect import summary
from ..layers import Layer
from ..layers.core import capture_intermediates, describe

__all__ = ["FeatureInfo", "Backbone", "backbone", "stages"]

_STOPS = {"GlobalAvgPool", "GlobalMaxPool", "AdaptiveAvgPool", "Flatten", "Dense"}  # the head starts here


class FeatureInfo(NamedTuple):
    """One stage: where it ends (a dotted path, as :func:`jaxcnn.summary` lists it), its channels and its
    reduction (the input pixels between neighbouring units: the summary's jump)."""

    path: str
    channels: int
    reduction: int


class Backbone(NamedTuple):
    """``layer`` returns the stages' feature maps (a tuple, in order); ``feature_info`` describes them;
    ``select(tree)`` keeps the part of a full model's params or state the backbone uses."""

    layer: Layer
    feature_info: tuple[FeatureInfo, ...]
    select: Any


def _spine(rows) -> list:
    """The rows of the top-level layers, and of the layers inside a top-level ``features`` block, in order,
    up to the head (a global or adaptive pool, a flatten, a dense layer, or a field that is the whole input)."""
    spine = []
    for row in rows:
        top = row.depth == 0 or (row.depth == 1 and row.path.startswith("features."))
        if not top or (row.depth == 0 and row.path == "features"):
            continue
        if row.name in _STOPS or not isinstance(row.receptive_field, tuple) or row.jump is None:
            break
        spine.append(row)
    return spine


def stages(model: Layer, input_shape: Sequence[int]) -> tuple[FeatureInfo, ...]:
    """The stages of ``model`` on ``input_shape`` (batch included; the rule in the module docstring)."""
    spine = _spine(summary(model, tuple(input_shape)).rows)
    if not spine:
        raise ConfigError("backbone: the model has no spatial layers before its head")
    found = []
    for row, following in zip(spine, [*spine[1:], None]):
        if following is None or max(following.jump) > max(row.jump):
            channels = row.output_shape[-1]
            found.append(FeatureInfo(row.path, int(channels), int(round(max(row.jump)))))
    return tuple(found)


def _truncate(layer: Layer, path: list[str]) -> tuple[Layer, Any]:
    """``layer`` cut after the child at ``path`` (a list of names), and a function selecting the kept part
    of its params or state."""
    info = describe(layer)
    if info is None or info.kind not in ("named", "serial"):
        raise ConfigError(f"backbone: cannot cut inside a {info.kind if info else 'plain'} layer at {'.'.join(path)}")
    names = [name for name, _ in info.children]
    if path[0] not in names:
        raise ConfigError(f"backbone: no child {path[0]!r} among {names}")
    kept = [(name, child) for name, child in info.children[: names.index(path[0]) + 1]]
    selects = {name: (lambda tree: tree) for name, _ in kept}
    if len(path) > 1:
        last, inner = kept[-1]
        cut, selects[last] = _truncate(inner, path[1:])
        kept[-1] = (last, cut)
    if info.kind == "serial":
        select = lambda tree: tuple(selects[str(i)](tree[i]) for i in range(len(kept)))
        return serial(*(child for _, child in kept)), select
    select = lambda tree: {name: selects[name](tree[name]) for name, _ in kept}
    return named(*kept), select


def backbone(model: Layer | str, input_shape: Sequence[int] | None = None, **model_kwargs: Any) -> Backbone:
    """``model`` (a zoo model or its name in :data:`jaxcnn.models.MODELS`, built with ``model_kwargs``) without
    its classifier, returning the feature map of each stage (see the module docstring). ``input_shape``:
    one example's shape with the batch axis, e.g. ``(1, 224, 224, 3)`` (default: the zoo entry's)."""
    from . import MODELS, build

    if isinstance(model, str):
        if input_shape is None:
            input_shape = (1, *MODELS[model].input_shape) if model in MODELS else None
        model = build(model, **model_kwargs)
    if input_shape is None:
        raise ConfigError("backbone: give input_shape (with the batch axis) for a model that is not a zoo name")
    info = stages(model, input_shape)
    trunk, select = _truncate(model, info[-1].path.split("."))
    paths = [stage.path for stage in info]

    def init(key, shape):
        _, params, state = trunk.init(key, shape)
        by_path = {}
        for row in summary(trunk, tuple(shape)).rows:
            by_path.setdefault(row.path, row.output_shape)  # a DenseNet layer's row, then its body's
        return tuple(tuple(by_path[p]) for p in paths), params, state

    def apply(params, state, x, *, key=None, train=False):
        with capture_intermediates() as outputs:
            _, new_state = trunk.apply(params, state, x, key=key, train=train)
        return tuple(outputs[p] for p in paths), new_state

    return Backbone(Layer(init, apply), info, select)
