r"""Pooling layers: ``MaxPool``, ``AvgPool``, ``LpPool`` (windowed) and the value layers
``GlobalAvgPool``, ``GlobalMaxPool`` (over every spatial axis), each one op of :mod:`jaxcnn.ops.pool`
with its hand-derived VJP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from .. import ops as _default_ops
from ..errors import ConfigError
from ..ops._padding import normalize_padding, with_ceil_mode
from ..ops._validate import is_int
from ..ops.conv import output_shape as conv_output_shape
from ..ops.pool import check_adaptive_avg_pool, check_p, pool_spec
from . import rules
from ._config import WindowConfig, as_bool, check_ops, expand, input_shape_arg, noting, spatial_input, struct
from .core import Layer, annotate, constructor, value_layers

__all__ = ["MaxPool", "AvgPool", "LpPool", "AdaptiveAvgPool", "GlobalAvgPool", "GlobalMaxPool"]

# How each kind changes a unit's receptive field and what its forward pass costs (jaxcnn.inspect.summary).
for _kind in ("MaxPool", "AvgPool", "LpPool"):
    rules.register_kind(_kind, field=rules.window_field, flops=rules.window_flops)
for _kind in ("GlobalAvgPool", "GlobalMaxPool"):
    rules.register_kind(_kind, field=rules.global_field, flops=rules.input_flops)


def _adaptive_field(config, in_shape, out_shape, field):
    """Evenly dividing sizes are a pool with window = stride = n / m; uneven windows are not a box with one
    jump."""
    spatial, out = tuple(in_shape[1:-1]), tuple(out_shape[1:-1])
    if field in (None, rules.ALL):
        return field
    if any(n % m for n, m in zip(spatial, out)):
        return None
    k = tuple(n // m for n, m in zip(spatial, out))
    return rules.window_recurrence(field, k, k, (1,) * len(k), ((0, 0),) * len(k))


rules.register_kind("AdaptiveAvgPool", field=_adaptive_field, flops=rules.input_flops)


class _PoolAsConv(NamedTuple):
    """A pool's spec in the form the conv output-size arithmetic reads (dilation 1)."""

    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]


def _padding_for(cfg: WindowConfig, spatial: tuple[int, ...], ceil_mode: bool) -> Any:
    """The layer's padding, with ``ceil_mode`` as the extra end padding PyTorch's rounding implies."""
    if not ceil_mode:
        return cfg.padding
    nd = len(spatial)
    window, strides = expand(cfg.window, nd), cfg.strides(nd)
    return with_ceil_mode(spatial, window, strides, normalize_padding(cfg.padding, spatial, window, strides, (1,) * nd))


def _pool(layer: str, op_name: str, window, stride, padding, ops, ceil_mode=False, **op_kwargs) -> Layer:
    cfg = WindowConfig.make(window, stride, 1, padding, window_arg="window")
    ceil_mode = as_bool(ceil_mode, "ceil_mode")
    ops = check_ops(ops, op_name)

    def init(key, input_shape):
        shape, nd, win = cfg.input(input_shape, layer)
        with noting(layer, shape):
            pads = _padding_for(cfg, shape[1:-1], ceil_mode)
            spec = pool_spec(struct(shape), win, cfg.strides(nd), pads, op_name)
        as_conv = _PoolAsConv(spec.strides, spec.padding, (1,) * nd)
        return conv_output_shape(shape, win, shape[-1], as_conv), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        pads = _padding_for(cfg, tuple(x.shape[1:-1]), ceil_mode)
        return getattr(ops, op_name)(x, window, stride=stride, padding=pads, **op_kwargs), state

    return annotate(Layer(init, apply), layer, **cfg.geometry(), ceil_mode=ceil_mode)


@constructor("max_pool")
def MaxPool(
    window: int | Sequence[int],
    *,
    stride: Any = None,
    padding: Any = "VALID",
    ceil_mode: bool = False,
    ops: Any = _default_ops,
) -> Layer:
    """Max pooling (``stride=None`` means ``stride = window``; padding counts as ``-inf``); the gradient
    of each window goes to its first maximum.

    ``ceil_mode=True`` rounds the output length up, as PyTorch's ``MaxPool2d(..., ceil_mode=True)``
    (GoogLeNet's pools): ``ceil((n + lo + hi - k) / s) + 1``, less one if the last window would start in
    the end padding. It is expressed as extra end padding (:func:`~jaxcnn.ops._padding.ceil_mode_padding`),
    so the op and its backward pass are the ordinary padded max pool."""
    return _pool("MaxPool", "max_pool", window, stride, padding, ops, ceil_mode)


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

    return annotate(Layer(init, apply), layer)


@constructor("adaptive_avg_pool")
def AdaptiveAvgPool(output_size: Any, *, ops: Any = _default_ops) -> Layer:
    """Average pooling to a fixed ``output_size`` (an int, or one int or None per spatial axis; None keeps
    that axis), with PyTorch's windows ``[floor(i n / m), ceil((i + 1) n / m))``: what lets a classifier
    head (AlexNet's 6x6, VGG's 7x7) accept any input size. See :func:`jaxcnn.ops.adaptive_avg_pool`."""
    entries = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,)
    if not 1 <= len(entries) <= 3 or not all(m is None or (is_int(m) and m >= 1) for m in entries):
        raise ConfigError(
            f"output_size must be a positive int or a tuple of 1-3 positive ints or None, got {output_size!r}"
        )
    ops = check_ops(ops, "adaptive_avg_pool")

    def init(key, input_shape):
        shape = input_shape_arg(input_shape, "AdaptiveAvgPool")
        with noting("AdaptiveAvgPool", shape):
            _, sizes = check_adaptive_avg_pool(struct(shape), output_size)
        out = tuple(n if m is None else m for n, m in zip(shape[1:-1], sizes))
        return (shape[0], *out, shape[-1]), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return ops.adaptive_avg_pool(x, output_size), state

    return annotate(Layer(init, apply), "AdaptiveAvgPool", output_size=output_size)


@value_layers("global_avg_pool", "global_max_pool")
def _global_pools(ops: Any) -> dict[str, Layer]:
    return {
        "GlobalAvgPool": _global_pool("GlobalAvgPool", "global_avg_pool", ops),
        "GlobalMaxPool": _global_pool("GlobalMaxPool", "global_max_pool", ops),
    }


_DEFAULT = _global_pools(_default_ops)
GlobalAvgPool: Layer = _DEFAULT["GlobalAvgPool"]  # (N, *spatial, C) -> (N, C), mean
GlobalMaxPool: Layer = _DEFAULT["GlobalMaxPool"]  # (N, *spatial, C) -> (N, C), max
