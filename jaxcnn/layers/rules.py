r"""What :func:`jaxcnn.inspect.summary` needs to know about each kind of layer, registered by the module that
defines the kind (``layers/conv.py`` registers ``"Conv"``, ``layers/pool.py`` ``"MaxPool"``, ...): how a
unit's receptive field changes through the layer, how many FLOPs its forward pass takes, and whether
its outputs are feature maps worth drawing.

A receptive field is, per spatial axis, ``(r, j, start)``: the field's size, the jump between
neighbouring units (the product of the strides so far) and the input position of the first unit's
centre; or :data:`ALL` (every unit sees the whole input); or None (not a box). For a window of ``k``
taps with dilation ``d``, stride ``s`` and padding ``lo`` before::

    r_out = r_in + (k - 1) d j_in        j_out = j_in s        start_out = start_in + ((k - 1) d / 2 - lo) j_in

FLOPs count 2 per multiply-add (kernels), 1 per element a pool reads, a few per output element otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from ..ops._padding import normalize_padding

__all__ = [
    "ALL",
    "KindRules",
    "register_kind",
    "kind_rules",
    "keep_field",
    "no_field",
    "window_field",
    "global_field",
    "window_recurrence",
    "kernel_flops",
    "transposed_kernel_flops",
    "elementwise_flops",
    "window_flops",
    "input_flops",
]

ALL = "all"  # a unit that sees the whole input

Field = Any  # per spatial axis (r, j, start); ALL; or None (not a box)


class KindRules(NamedTuple):
    """``field(config, in_shape, out_shape, field) -> field``; ``flops(config, in_shape, out_shape, weights)
    -> int`` (``weights``: the layer's kernel entries); ``feature_maps``: its outputs are maps of learned
    filters (the layers ``jaxcnn inspect`` draws)."""

    field: Callable[..., Field]
    flops: Callable[..., int]
    feature_maps: bool = False


def _size(shape) -> int:
    return math.prod(shape) if shape else 0


def keep_field(config, in_shape, out_shape, field) -> Field:
    """Elementwise layers, normalisation, a dense layer over the channel axis: the field is unchanged."""
    return field


def no_field(config, in_shape, out_shape, field) -> Field:
    """A layer after which a unit's field is not a box (a transposed convolution scatters)."""
    return None


def window_recurrence(field: Field, window, strides, dilation, pads) -> Field:
    """The recurrences of the module docstring, per axis; ``ALL`` and None pass through."""
    if field is None or field == ALL:
        return field
    return tuple(
        (r + (k - 1) * d * j, j * s, start + ((k - 1) * d / 2 - lo) * j)
        for (r, j, start), k, s, d, (lo, _) in zip(field, window, strides, dilation, pads)
    )


def window_field(config, in_shape, out_shape, field) -> Field:
    """A sliding window (convolutions, pools), from the layer's window, stride, dilation and padding.
    (ceil_mode only pads the end, which moves no unit's field: the recurrences read the front padding.)"""
    spatial = tuple(in_shape[1:-1])
    expand = lambda v: (v,) * len(spatial) if isinstance(v, int) else tuple(v)
    window, strides, dilation = expand(config["window"]), expand(config["stride"]), expand(config["dilation"])
    return window_recurrence(
        field, window, strides, dilation, normalize_padding(config["padding"], spatial, window, strides, dilation)
    )


def global_field(config, in_shape, out_shape, field) -> Field:
    """Global pools and flattening of a feature map: every unit after them sees the whole input."""
    return ALL if len(in_shape) > 2 or field == ALL else field


def kernel_flops(config, in_shape, out_shape, weights: int) -> int:
    """Convolutions and dense layers: every output position uses every weight, then the bias add."""
    return 2 * _size(out_shape[:-1]) * weights + _size(out_shape)


def transposed_kernel_flops(config, in_shape, out_shape, weights: int) -> int:
    """A transposed convolution: every input position scatters every weight, then the bias add."""
    return 2 * _size(in_shape[:-1]) * weights + _size(out_shape)


def elementwise_flops(per_output: int) -> Callable[..., int]:
    """``per_output`` operations per output element."""
    return lambda config, in_shape, out_shape, weights: per_output * _size(out_shape)


def window_flops(config, in_shape, out_shape, weights: int) -> int:
    """A pool reads its window once per output element."""
    window = config["window"]
    return _size(out_shape) * (window ** (len(in_shape) - 2) if isinstance(window, int) else _size(window))


def input_flops(config, in_shape, out_shape, weights: int) -> int:
    """Global and adaptive pools read every input element once."""
    return _size(in_shape)


_DEFAULT = KindRules(keep_field, elementwise_flops(1))
_RULES: dict[str, KindRules] = {}


def register_kind(kind: str, *, field=keep_field, flops=_DEFAULT.flops, feature_maps: bool = False) -> None:
    """Register the rules of layers described (:func:`jaxcnn.layers.core.annotate`) as ``kind``."""
    _RULES[kind] = KindRules(field, flops, feature_maps)


def kind_rules(kind: str) -> KindRules:
    """The rules of ``kind``; a kind nobody registered keeps the field and costs one FLOP per output."""
    return _RULES.get(kind, _DEFAULT)
