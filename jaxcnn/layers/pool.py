r"""Pooling layers: ``MaxPool``, ``AvgPool``, ``LpPool`` (windowed) and the value layers
``GlobalAvgPool``, ``GlobalMaxPool`` (over every spatial axis), each one op of :mod:`jaxcnn.ops.pool`
with its hand-derived VJP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from .. import ops as _default_ops
from ..ops.conv import output_shape as conv_output_shape
from ..ops.pool import check_p, pool_spec
from ._config import WindowConfig, as_bool, check_ops, noting, spatial_input, struct
from .core import Layer, constructor, value_layers

__all__ = ["MaxPool", "AvgPool", "LpPool", "GlobalAvgPool", "GlobalMaxPool"]


class _PoolAsConv(NamedTuple):
    """A pool's spec in the form the conv output-size arithmetic reads (dilation 1)."""

    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]


def _pool(layer: str, op_name: str, window, stride, padding, ops, **op_kwargs) -> Layer:
    cfg = WindowConfig.make(window, stride, 1, padding, window_arg="window")
    ops = check_ops(ops, op_name)

    def init(key, input_shape):
        shape, nd, win = cfg.input(input_shape, layer)
        with noting(layer, shape):
            spec = pool_spec(struct(shape), win, cfg.strides(nd), padding, op_name)
        as_conv = _PoolAsConv(spec.strides, spec.padding, (1,) * nd)
        return conv_output_shape(shape, win, shape[-1], as_conv), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return getattr(ops, op_name)(x, window, stride=stride, padding=padding, **op_kwargs), state

    return Layer(init, apply)


@constructor("max_pool")
def MaxPool(
    window: int | Sequence[int], *, stride: Any = None, padding: Any = "VALID", ops: Any = _default_ops
) -> Layer:
    """Max pooling (``stride=None`` means ``stride = window``; padding counts as ``-inf``); the gradient
    of each window goes to its first maximum."""
    return _pool("MaxPool", "max_pool", window, stride, padding, ops)


@constructor("avg_pool")
def AvgPool(
    window: int | Sequence[int],
    *,
    stride: Any = None,
    padding: Any = "VALID",
    count_include_pad: bool = True,
    ops: Any = _default_ops,
) -> Layer:
    """Mean pooling; ``count_include_pad=False`` divides by the in-bounds count of each window."""
    count_include_pad = as_bool(count_include_pad, "count_include_pad")
    return _pool("AvgPool", "avg_pool", window, stride, padding, ops, count_include_pad=count_include_pad)


@constructor("lp_pool")
def LpPool(
    window: int | Sequence[int],
    *,
    p: float,
    stride: Any = None,
    padding: Any = "VALID",
    ops: Any = _default_ops,
) -> Layer:
    """Power-mean pooling ``y = (mean over window of |x|^p)^(1/p)``, ``p >= 1`` (``p = 1``: mean of
    ``|x|``; large ``p``: max of ``|x|``)."""
    p = check_p(p)
    return _pool("LpPool", "lp_pool", window, stride, padding, ops, p=p)


def _global_pool(layer: str, op_name: str, ops: Any) -> Layer:
    ops = check_ops(ops, op_name)

    def init(key, input_shape):
        shape, _ = spatial_input(input_shape, layer, None, "")
        return (shape[0], shape[-1]), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return getattr(ops, op_name)(x), state

    return Layer(init, apply)


@value_layers("global_avg_pool", "global_max_pool")
def _global_pools(ops: Any) -> dict[str, Layer]:
    return {
        "GlobalAvgPool": _global_pool("GlobalAvgPool", "global_avg_pool", ops),
        "GlobalMaxPool": _global_pool("GlobalMaxPool", "global_max_pool", ops),
    }


_DEFAULT = _global_pools(_default_ops)
GlobalAvgPool: Layer = _DEFAULT["GlobalAvgPool"]  # (N, *spatial, C) -> (N, C), mean
GlobalMaxPool: Layer = _DEFAULT["GlobalMaxPool"]  # (N, *spatial, C) -> (N, C), max
