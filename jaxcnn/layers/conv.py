r"""Convolutional layers: ``Conv``, ``ConvTranspose``, ``DepthwiseConv``, ``SeparableConv``.

Each is ``y = op(x, kernel) + bias`` with ``op`` one of :func:`jaxcnn.ops.conv` /
:func:`jaxcnn.ops.conv_transpose` (hand-derived VJPs); the bias add is a broadcasting ``+`` that JAX
differentiates. Kernels are channels-last, ``(*window, C_in // groups, C_out)``. The number of spatial
axes (1, 2 or 3) is the length of ``kernel_size`` (or of ``stride``, ``dilation``, ``padding`` when those
are tuples); an int ``kernel_size`` applies to every spatial axis of whatever input ``init`` sees.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

from .. import initializers as _inits
from .. import ops as _default_ops
from ..errors import ConfigError
from ..ops._padding import dilated_size
from ..ops.conv import conv_spec, conv_transpose_spec
from ..ops.conv import output_shape as conv_output_shape
from . import rules
from ._config import (
    KernelConfig,
    WindowConfig,
    as_bool,
    as_positive_int,
    check_divisible,
    check_ops,
    expand,
    int_or_tuple,
    noting,
    struct,
)
from .core import Layer, annotate, constructor

__all__ = ["Conv", "ConvTranspose", "DepthwiseConv", "SeparableConv"]

# How each kind changes a unit's receptive field and what its forward pass costs (jaxcnn.inspect.summary).
for _kind in ("Conv", "DepthwiseConv", "SeparableConv"):
    rules.register_kind(_kind, field=rules.window_field, flops=rules.kernel_flops, feature_maps=True)
# every input position scatters every weight; the field of a transposed convolution's unit is not a box
rules.register_kind("ConvTranspose", field=rules.no_field, flops=rules.transposed_kernel_flops)


def _conv_geometry(layer: str, cfg: WindowConfig, input_shape: Any, channels: Callable[[int], tuple[int, int]]):
    """``(output_shape, kernel_shape)`` of a convolution on ``input_shape``, checked by ``conv_spec``;
    ``channels(c_in) -> (c_out, groups)``."""
    shape, nd, window = cfg.input(input_shape, layer)
    c_out, groups = channels(shape[-1])
    check_divisible(f"{layer}: input channels input_shape[-1]", shape[-1], groups)
    kernel_shape = (*window, shape[-1] // groups, c_out)
    with noting(layer, shape):
        spec = conv_spec(struct(shape), struct(kernel_shape), cfg.strides(nd), cfg.padding, cfg.dilation, groups)
    return conv_output_shape(shape, window, c_out, spec), kernel_shape


def _conv_layer(
    layer: str,
    cfg: WindowConfig,
    kernel: KernelConfig,
    ops: Any,
    *,
    channels: Callable[[int], tuple[int, int]],
    groups_of: Callable[[tuple[int, ...]], int],
    standardize: bool = False,
) -> Layer:
    """``conv(x, kernel) + bias``. ``channels(c_in) -> (c_out, groups)`` fixes the kernel at ``init``;
    ``groups_of(kernel_shape)`` recovers the groups in ``apply`` from the parameters. ``standardize``: the
    kernel goes through ``ops.weight_standardize`` first."""

    def init(key, input_shape):
        out, kernel_shape = _conv_geometry(layer, cfg, input_shape, channels)
        return out, kernel.init(key, kernel_shape, kernel_shape[-1]), {}

    def apply(params, state, x, *, key=None, train=False):
        w = ops.weight_standardize(params["kernel"]) if standardize else params["kernel"]
        y = _conv_apply(ops, cfg, w, x, groups_of)
        return kernel.add_bias(y, params), state

    return annotate(Layer(init, apply), layer, **cfg.geometry())


def _conv_apply(ops: Any, cfg: WindowConfig, w: Any, x: Any, groups_of: Callable[[tuple[int, ...]], int]):
    return ops.conv(x, w, stride=cfg.stride, padding=cfg.padding, dilation=cfg.dilation, groups=groups_of(w.shape))


@constructor("conv", "weight_standardize")
def Conv(
    features: int,
    kernel_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: Any = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    use_bias: bool = True,
    kernel_init: Any = "he_normal",
    bias_init: Any = "zeros",
    standardize: bool = False,
    ops: Any = _default_ops,
) -> Layer:
    r"""N-d convolution (cross-correlation) ``y = conv(x, kernel) + bias``, channels-last.

    Params: ``kernel`` ``(*window, C_in // groups, features)`` and, with ``use_bias``, ``bias``
    ``(features,)``. Output length per axis ``floor((n + lo + hi - d(k-1) - 1) / s) + 1``; ``padding`` is
    ``"VALID"``, ``"SAME"``, an int, or per-axis ints / ``(lo, hi)`` pairs (see :func:`jaxcnn.ops.conv`).
    ``standardize=True`` convolves with ``weight_standardize(kernel)`` (weight standardisation: each output
    channel's filter centred, with unit norm; :func:`jaxcnn.ops.weight_standardize`), timm's ``StdConv2d``.
    """
    features = as_positive_int(features, "features")
    cfg = WindowConfig.make(kernel_size, stride, dilation, padding)
    groups = as_positive_int(groups, "groups")
    check_divisible("features", features, groups)
    kernel = KernelConfig.make(use_bias, kernel_init, bias_init)
    standardize = as_bool(standardize, "standardize")
    ops = check_ops(ops, "conv", *(("weight_standardize",) if standardize else ()))
    return _conv_layer(
        "Conv", cfg, kernel, ops, channels=lambda c_in: (features, groups), groups_of=lambda _: groups,
        standardize=standardize,
    )  # fmt: skip


def _depthwise(m: int) -> dict:
    """Depthwise geometry: ``C_out = m C_in`` in ``C_in`` groups; the groups are ``C_out / m``."""
    return dict(channels=lambda c_in: (c_in * m, c_in), groups_of=lambda kernel_shape: kernel_shape[-1] // m)


@constructor("conv")
def DepthwiseConv(
    kernel_size: int | Sequence[int],
    *,
    depth_multiplier: int = 1,
    stride: int | Sequence[int] = 1,
    padding: Any = "VALID",
    dilation: int | Sequence[int] = 1,
    use_bias: bool = True,
    kernel_init: Any = "he_normal",
    bias_init: Any = "zeros",
    ops: Any = _default_ops,
) -> Layer:
    r"""Depthwise convolution: every input channel convolved with its own ``depth_multiplier`` filters
    (``groups = C_in``), so ``C_out = depth_multiplier * C_in``. Params: ``kernel``
    ``(*window, 1, C_in * depth_multiplier)`` (``fan_in = prod(window)``), ``bias`` ``(C_out,)``."""
    cfg = WindowConfig.make(kernel_size, stride, dilation, padding)
    m = as_positive_int(depth_multiplier, "depth_multiplier")
    kernel = KernelConfig.make(use_bias, kernel_init, bias_init)
    ops = check_ops(ops, "conv")
    return _conv_layer("DepthwiseConv", cfg, kernel, ops, **_depthwise(m))


@constructor("conv")
def SeparableConv(
    features: int,
    kernel_size: int | Sequence[int],
    *,
    depth_multiplier: int = 1,
    stride: int | Sequence[int] = 1,
    padding: Any = "VALID",
    dilation: int | Sequence[int] = 1,
    use_bias: bool = True,
    kernel_init: Any = "he_normal",
    bias_init: Any = "zeros",
    ops: Any = _default_ops,
) -> Layer:
    r"""Depthwise-separable convolution: a depthwise ``kernel_size`` convolution (``groups = C_in``, no
    bias) followed by a pointwise ``1x1`` convolution to ``features`` channels (``+ bias``).

    Params: ``depthwise`` ``(*window, 1, C_in * depth_multiplier)``, ``pointwise``
    ``(1, ..., 1, C_in * depth_multiplier, features)`` and ``bias`` ``(features,)``: ``prod(window) C_in m
    + C_in m features (+ features)`` parameters instead of ``prod(window) C_in features``. Stride,
    padding and dilation apply to the depthwise stage.
    """
    features = as_positive_int(features, "features")
    cfg = WindowConfig.make(kernel_size, stride, dilation, padding)
    m = as_positive_int(depth_multiplier, "depth_multiplier")
    kernel = KernelConfig.make(use_bias, kernel_init, bias_init)
    ops = check_ops(ops, "conv")
    depthwise = _depthwise(m)

    def init(key, input_shape):
        out, dw_shape = _conv_geometry("SeparableConv", cfg, input_shape, depthwise["channels"])
        dw_key, pw_key = jax.random.split(key)
        pointwise = kernel.init(pw_key, (*(1,) * (len(dw_shape) - 2), dw_shape[-1], features), features)
        params = {"depthwise": _inits.call(kernel.kernel_init, dw_key, dw_shape), "pointwise": pointwise.pop("kernel")}
        params.update(pointwise)
        return (*out[:-1], features), params, {}

    def apply(params, state, x, *, key=None, train=False):
        h = _conv_apply(ops, cfg, params["depthwise"], x, depthwise["groups_of"])
        return kernel.add_bias(ops.conv(h, params["pointwise"]), params), state

    return annotate(Layer(init, apply), "SeparableConv", **cfg.geometry())


def _transpose_padding(padding, output_padding, window, strides, dilation):
    """Explicit ``(pads, output_padding)`` for ``ops.conv_transpose``.

    ``"VALID"`` is zero padding. ``"SAME"`` makes the output ``n * s`` long and the layer the exact
    adjoint of a ``"SAME"`` convolution on inputs whose length is a multiple of the stride: the
    convolution pads ``total = max(kd - s, 0)`` (``lo = total // 2``), and ``output_padding =
    max(s - kd, 0)`` restores the rows a short kernel never reaches.
    """
    nd = len(window)
    if isinstance(padding, str):
        if padding.upper() == "VALID":
            return ((0, 0),) * nd, output_padding
        spans = [dilated_size(k, d) for k, d in zip(window, dilation, strict=True)]
        totals = [max(kd - s, 0) for kd, s in zip(spans, strides)]
        pads = tuple((t // 2, t - t // 2) for t in totals)
        return pads, tuple(max(s - kd, 0) for kd, s in zip(spans, strides))
    return padding, output_padding


@constructor("conv_transpose")
def ConvTranspose(
    features: int,
    kernel_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: Any = "VALID",
    dilation: int | Sequence[int] = 1,
    output_padding: int | Sequence[int] = 0,
    groups: int = 1,
    use_bias: bool = True,
    kernel_init: Any = "he_normal",
    bias_init: Any = "zeros",
    ops: Any = _default_ops,
) -> Layer:
    r"""Transposed ("expanding") convolution with PyTorch's semantics, ``+ bias``.

    Output length per axis ``(n - 1) s - lo - hi + d(k - 1) + 1 + output_padding``. ``padding`` is an
    int or per-axis ints / ``(lo, hi)`` pairs removed from the output (PyTorch), ``"VALID"`` (= 0), or
    ``"SAME"`` (output ``n * s``; the exact adjoint of ``Conv(..., padding="SAME")``, ``output_padding``
    must then be 0). Params: ``kernel`` laid out as the kernel of the convolution being transposed,
    ``(*window, features // groups, C_in)`` (see :func:`jaxcnn.ops.conv_transpose`), and ``bias``
    ``(features,)``. Initializers see that layout, so ``fan_in = prod(window) * features // groups``,
    the value PyTorch computes for ``ConvTranspose*d``.
    """
    features = as_positive_int(features, "features")
    out_pad, out_pad_rank = int_or_tuple(output_padding, "output_padding", minimum=0)
    cfg = WindowConfig.make(kernel_size, stride, dilation, padding, output_padding=(out_pad, out_pad_rank))
    if isinstance(padding, str) and padding.upper() == "SAME" and any(expand(out_pad, cfg.rank or 1)):
        raise ConfigError(f"output_padding must be 0 with padding='SAME' (which sets it), got {output_padding!r}")
    groups = as_positive_int(groups, "groups")
    check_divisible("features", features, groups)
    kernel = KernelConfig.make(use_bias, kernel_init, bias_init)
    ops = check_ops(ops, "conv_transpose")

    def resolve(nd):
        window, strides, dil = expand(cfg.window, nd), cfg.strides(nd), expand(cfg.dilation, nd)
        return _transpose_padding(padding, expand(out_pad, nd), window, strides, dil)

    def init(key, input_shape):
        shape, nd, window = cfg.input(input_shape, "ConvTranspose")
        check_divisible("ConvTranspose: input channels input_shape[-1]", shape[-1], groups)
        kernel_shape = (*window, features // groups, shape[-1])
        pads, op = resolve(nd)
        with noting("ConvTranspose", shape):
            _, out_spatial = conv_transpose_spec(
                struct(shape), struct(kernel_shape), cfg.strides(nd), pads, dilation, op, groups
            )
        return (shape[0], *out_spatial, features), kernel.init(key, kernel_shape, features), {}

    def apply(params, state, x, *, key=None, train=False):
        pads, op = resolve(params["kernel"].ndim - 2)
        y = ops.conv_transpose(
            x, params["kernel"], stride=stride, padding=pads, dilation=dilation, output_padding=op, groups=groups
        )
        return kernel.add_bias(y, params), state

    return annotate(Layer(init, apply), "ConvTranspose", **cfg.geometry(), output_padding=out_pad)
