r"""Layers: pure ``(init, apply)`` pairs built only from :mod:`jaxcnn.ops` (hand-derived VJPs).

The contract every layer (and every combinator and model) keeps::

    class Layer(NamedTuple):
        init:  init(key, input_shape) -> (output_shape, params, state)
        apply: apply(params, state, x, *, key=None, train=False) -> (y, new_state)

- ``input_shape`` includes the batch axis (channels-last, ``(N, *spatial, C)``); ``init`` infers the
  output shape by shape arithmetic alone, and ``apply`` works for any batch size.
- ``params`` (trainable) and ``state`` (non-trainable: batch-norm running statistics) are dicts of
  arrays, ``{}`` when a layer has none, so ``optax``, ``jax.tree_util`` and ``flax.serialization``
  handle them. Parameters are created as float32; cast the pytrees (``jax.tree.map``) for float64.
- Randomness is explicit: only :func:`Dropout` uses ``key``, and only when ``train=True``. ``train``
  is a Python bool (a static argument under ``jax.jit``).

Configuration is validated and normalised once, when a layer is constructed (errors name the argument
and its value); shape errors (channels not divisible by ``groups``, wrong input rank, a kernel larger
than the padded input) are raised by ``init``.

Parameterless layers without configuration are *values* (``Relu``, ``Sigmoid``, ``Tanh``, ``Softmax``,
``LogSoftmax``, ``Flatten``, ``Identity``, ``GlobalAvgPool``, ``GlobalMaxPool``); configurable ones are
functions returning a :class:`Layer`.

**Choosing the ops.** Every constructor takes a keyword-only ``ops`` (default :mod:`jaxcnn.ops`): any
object with the same functions, in practice :mod:`jaxcnn.reference`, whose twins are differentiated by
JAX's own autodiff. :func:`bind` returns every constructor and value layer bound to one ``ops``, so the
same network can be built twice and its hand-derived gradients compared with autodiff's::

    R = jaxcnn.layers.bind(jaxcnn.reference)
    twin = jaxcnn.serial(R.Conv(8, (3, 3)), R.Relu, R.Flatten, R.Dense(10))

Operations that are not ops -- adding a bias (a broadcasting ``+``), reshapes, dropout's mask, the
eval-mode batch-norm affine map -- are plain ``jax.numpy`` that autodiff differentiates.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import operator
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from jax import lax

from . import initializers as _inits
from . import ops as _default_ops
from .ops._padding import dilated_size, is_int, normalize_padding
from .ops._validate import check_positive_int
from .ops.conv import conv_spec, conv_transpose_spec
from .ops.conv import output_shape as _conv_output_shape
from .ops.pool import check_p, pool_spec

__all__ = [
    "Layer",
    "InitFn",
    "ApplyFn",
    "bind",
    "Conv",
    "ConvTranspose",
    "DepthwiseConv",
    "SeparableConv",
    "Dense",
    "MaxPool",
    "AvgPool",
    "LpPool",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "Flatten",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "LogSoftmax",
    "Dropout",
    "BatchNorm",
    "Identity",
]

Shape = tuple[int, ...]


class InitFn(Protocol):
    def __call__(self, key: jax.Array, input_shape: Any) -> tuple[Any, Any, Any]: ...


class ApplyFn(Protocol):
    def __call__(
        self, params: Any, state: Any, x: Any, *, key: jax.Array | None = None, train: bool = False
    ) -> tuple[Any, Any]: ...


class Layer(NamedTuple):
    """A layer: ``init(key, input_shape) -> (output_shape, params, state)`` and
    ``apply(params, state, x, *, key=None, train=False) -> (y, new_state)``."""

    init: InitFn
    apply: ApplyFn


# ---------------------------------------------------------------------------------------------
# Validation helpers (construction time and init time)
# ---------------------------------------------------------------------------------------------


def _bool(value: Any, arg: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{arg} must be a bool, got {value!r}")
    return value


def _real(value: Any, arg: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{arg} must be a real number, got {value!r}")
    return float(value)


def _int_or_tuple(value: Any, arg: str, *, minimum: int = 1) -> tuple[int | tuple[int, ...], int | None]:
    """Validate an int or a tuple of 1-3 ints, each ``>= minimum``; return it and its rank (None for an
    int, which applies to every spatial axis)."""
    what = {0: "a non-negative int", 1: "a positive int"}[minimum]
    msg = f"{arg} must be {what} or tuple of ints, got {value!r}"
    if is_int(value):
        if operator.index(value) < minimum:
            raise ValueError(msg)
        return operator.index(value), None
    if isinstance(value, Sequence) and not isinstance(value, str):
        if not all(is_int(v) for v in value):
            raise TypeError(msg)
        if not 1 <= len(value) <= 3:
            raise ValueError(f"{arg} must have 1, 2 or 3 entries (one per spatial axis), got {value!r}")
        if any(operator.index(v) < minimum for v in value):
            raise ValueError(msg)
        return tuple(operator.index(v) for v in value), len(value)
    raise TypeError(msg)


def _padding_rank(padding: Any) -> int | None:
    """Validate ``padding`` (a string, an int, or per-axis ints / ``(lo, hi)`` pairs); return its rank
    (None for a string or an int)."""
    if isinstance(padding, str):
        normalize_padding(padding, (1,), (1,), (1,), (1,))  # refuses anything but VALID / SAME
        return None
    if is_int(padding):
        normalize_padding(padding, (1,), (1,), (1,), (1,))
        return None
    if isinstance(padding, Sequence) and 1 <= len(padding) <= 3:
        nd = len(padding)
        normalize_padding(padding, (1,) * nd, (1,) * nd, (1,) * nd, (1,) * nd)
        return nd
    raise (ValueError if isinstance(padding, Sequence) else TypeError)(
        f"padding must be 'VALID', 'SAME', an int, or a sequence of 1-3 ints or (lo, hi) pairs, got {padding!r}"
    )


def _common_rank(**ranked: tuple[Any, int | None]) -> tuple[int | None, str]:
    """The number of spatial axes the tuple-valued arguments agree on (None when all are ints), and
    those arguments as ``"name=value, ..."`` for messages."""
    ranks = {name: r for name, (_, r) in ranked.items() if r is not None}
    given = ", ".join(f"{name}={value!r}" for name, (value, r) in ranked.items() if r is not None)
    if len(set(ranks.values())) > 1:
        raise ValueError(f"the tuple arguments must have one entry per spatial axis, got {given}")
    return next(iter(ranks.values()), None), given


def _expand(value: int | tuple[int, ...], nd: int) -> tuple[int, ...]:
    return (value,) * nd if isinstance(value, int) else value


def _shape_arg(input_shape: Any, layer: str) -> Shape:
    """``input_shape`` as a tuple of ints; the batch entry may be -1 (unknown), the others are >= 1."""
    msg = f"{layer}: input_shape must be a tuple of ints (N, ..., C), got {input_shape!r}"
    if not isinstance(input_shape, Sequence) or isinstance(input_shape, str):
        raise TypeError(msg)
    if not all(is_int(d) for d in input_shape):
        raise TypeError(msg)
    shape = tuple(operator.index(d) for d in input_shape)
    if len(shape) == 0 or shape[0] < -1 or any(d < 1 for d in shape[1:]):
        raise ValueError(
            f"{layer}: input_shape must be (N, ..., C) with N >= 0 (or -1) and positive other sizes, got {shape}"
        )
    return shape


def _spatial_shape(input_shape: Any, layer: str, nd: int | None, because: str) -> tuple[Shape, int]:
    """Validate a channels-last ``(N, *spatial, C)`` shape with ``nd`` (or, if None, 1-3) spatial axes."""
    shape = _shape_arg(input_shape, layer)
    if nd is None:
        if len(shape) not in (3, 4, 5):
            raise ValueError(
                f"{layer}: input_shape must have rank 3, 4 or 5 (N, *spatial, C), got {shape} of rank {len(shape)}"
            )
        return shape, len(shape) - 2
    if len(shape) != nd + 2:
        raise ValueError(
            f"{layer}: input_shape must have rank {nd + 2} (N, *spatial, C) to match {because}, "
            f"got {shape} of rank {len(shape)}"
        )
    return shape, nd


def _struct(shape: Shape, dtype=jnp.float32) -> jax.ShapeDtypeStruct:
    """A stand-in array for the ops' own argument checks (which read only shape and dtype)."""
    return jax.ShapeDtypeStruct((max(shape[0], 1), *shape[1:]), dtype)


@contextlib.contextmanager
def _noting(layer: str, shape: Shape):
    """Around the ops' own argument checks at init: errors get a note naming the layer and input shape."""
    try:
        yield
    except (ValueError, TypeError) as err:
        err.add_note(f"while initialising {layer} on input_shape {shape}")
        raise


def _check_ops(ops: Any, *names: str) -> Any:
    missing = [n for n in names if not callable(getattr(ops, n, None))]
    if missing:
        raise TypeError(f"ops must provide {', '.join(missing)} (like jaxcnn.ops or jaxcnn.reference), got {ops!r}")
    return ops


def _check_train(train: Any, layer: str) -> bool:
    if not isinstance(train, bool):
        raise TypeError(f"{layer}: train must be a Python bool (static under jax.jit), got {train!r}")
    return train


def _init_kernel_and_bias(key, kernel_shape, bias_size, kernel_init, bias_init, use_bias):
    """``{"kernel": ..., "bias": ...}``; the bias initializer is told the kernel's fans."""
    k_key, b_key = jax.random.split(key)
    params = {"kernel": _inits.call(kernel_init, k_key, kernel_shape)}
    if use_bias:
        fan_in, fan_out = _inits.compute_fans(kernel_shape)
        params["bias"] = _inits.call(bias_init, b_key, (bias_size,), fan_in=fan_in, fan_out=fan_out)
    return params


class _WindowConfig(NamedTuple):
    """Validated window / stride / dilation / padding of a conv or pool; ``rank`` None = from the input."""

    window: int | tuple[int, ...]
    stride: int | tuple[int, ...] | None
    dilation: int | tuple[int, ...]
    padding: Any
    rank: int | None
    rank_from: str  # the tuple arguments that fixed the rank, "name=value, ..."

    @classmethod
    def make(cls, window, stride, dilation, padding, *, window_arg="kernel_size", **extra):
        """``extra``: more ``name=(value, rank)`` arguments whose rank must agree (output_padding)."""
        window_r = _int_or_tuple(window, window_arg)
        stride_r = (None, None) if stride is None else _int_or_tuple(stride, "stride")
        dilation_r = _int_or_tuple(dilation, "dilation")
        padding_r = (padding, _padding_rank(padding))
        rank, rank_from = _common_rank(
            **{window_arg: window_r, "stride": stride_r, "dilation": dilation_r, "padding": padding_r}, **extra
        )
        return cls(window_r[0], stride_r[0], dilation_r[0], padding, rank, rank_from)

    def input(self, input_shape: Any, layer: str) -> tuple[Shape, int, tuple[int, ...]]:
        """The validated input shape, its number of spatial axes and the window as a tuple."""
        shape, nd = _spatial_shape(input_shape, layer, self.rank, self.rank_from)
        return shape, nd, _expand(self.window, nd)

    def strides(self, nd: int) -> tuple[int, ...]:
        return _expand(self.window if self.stride is None else self.stride, nd)


# ---------------------------------------------------------------------------------------------
# Convolutions
# ---------------------------------------------------------------------------------------------


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
    ops: Any = _default_ops,
) -> Layer:
    r"""N-d convolution (cross-correlation) ``y = conv(x, kernel) + bias``, channels-last.

    The number of spatial axes (1, 2 or 3) is the length of ``kernel_size`` (or of ``stride``,
    ``dilation``, ``padding`` when those are tuples); an int ``kernel_size`` applies to every spatial
    axis of whatever input ``init`` sees. Params: ``kernel`` ``(*window, C_in // groups, features)``
    and, with ``use_bias``, ``bias`` ``(features,)``. Output length per axis
    ``floor((n + lo + hi - d(k-1) - 1) / s) + 1``; ``padding`` is ``"VALID"``, ``"SAME"``, an int, or
    per-axis ints / ``(lo, hi)`` pairs (see :func:`jaxcnn.ops.conv`).
    """
    features = check_positive_int(features, "features")
    cfg = _WindowConfig.make(kernel_size, stride, dilation, padding)
    groups = check_positive_int(groups, "groups")
    if features % groups:
        raise ValueError(f"features (={features}) must be divisible by groups (={groups})")
    use_bias = _bool(use_bias, "use_bias")
    kernel_init = _inits.get(kernel_init, "kernel_init")
    bias_init = _inits.get(bias_init, "bias_init")
    ops = _check_ops(ops, "conv")

    def init(key, input_shape):
        shape, nd, window = cfg.input(input_shape, "Conv")
        c_in = shape[-1]
        if c_in % groups:
            raise ValueError(f"Conv: input channels input_shape[-1] (={c_in}) must be divisible by groups (={groups})")
        kernel_shape = (*window, c_in // groups, features)
        with _noting("Conv", shape):
            spec = conv_spec(_struct(shape), _struct(kernel_shape), cfg.strides(nd), padding, dilation, groups)
        out = _conv_output_shape(shape, window, features, spec)
        return out, _init_kernel_and_bias(key, kernel_shape, features, kernel_init, bias_init, use_bias), {}

    def apply(params, state, x, *, key=None, train=False):
        y = ops.conv(x, params["kernel"], stride=stride, padding=padding, dilation=dilation, groups=groups)
        if use_bias:
            y = y + params["bias"]
        return y, state

    return Layer(init, apply)


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
        totals = [max(dilated_size(k, d) - s, 0) for k, s, d in zip(window, strides, dilation, strict=True)]
        pads = tuple((t // 2, t - t // 2) for t in totals)
        return pads, tuple(max(s - dilated_size(k, d), 0) for k, s, d in zip(window, strides, dilation, strict=True))
    return padding, output_padding


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
    features = check_positive_int(features, "features")
    out_pad, out_pad_rank = _int_or_tuple(output_padding, "output_padding", minimum=0)
    cfg = _WindowConfig.make(kernel_size, stride, dilation, padding, output_padding=(out_pad, out_pad_rank))
    if isinstance(padding, str) and padding.upper() == "SAME" and any(_expand(out_pad, cfg.rank or 1)):
        raise ValueError(f"output_padding must be 0 with padding='SAME' (which sets it), got {output_padding!r}")
    groups = check_positive_int(groups, "groups")
    if features % groups:
        raise ValueError(f"features (={features}) must be divisible by groups (={groups})")
    use_bias = _bool(use_bias, "use_bias")
    kernel_init = _inits.get(kernel_init, "kernel_init")
    bias_init = _inits.get(bias_init, "bias_init")
    ops = _check_ops(ops, "conv_transpose")

    def resolve(nd):
        window, strides, dil = _expand(cfg.window, nd), cfg.strides(nd), _expand(cfg.dilation, nd)
        return _transpose_padding(padding, _expand(out_pad, nd), window, strides, dil)

    def init(key, input_shape):
        shape, nd, window = cfg.input(input_shape, "ConvTranspose")
        c_in = shape[-1]
        if c_in % groups:
            raise ValueError(
                f"ConvTranspose: input channels input_shape[-1] (={c_in}) must be divisible by groups (={groups})"
            )
        kernel_shape = (*window, features // groups, c_in)
        pads, op = resolve(nd)
        with _noting("ConvTranspose", shape):
            _, out_spatial = conv_transpose_spec(
                _struct(shape), _struct(kernel_shape), cfg.strides(nd), pads, dilation, op, groups
            )
        params = _init_kernel_and_bias(key, kernel_shape, features, kernel_init, bias_init, use_bias)
        return (shape[0], *out_spatial, features), params, {}

    def apply(params, state, x, *, key=None, train=False):
        pads, op = resolve(params["kernel"].ndim - 2)
        y = ops.conv_transpose(
            x, params["kernel"], stride=stride, padding=pads, dilation=dilation, output_padding=op, groups=groups
        )
        if use_bias:
            y = y + params["bias"]
        return y, state

    return Layer(init, apply)


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
    cfg = _WindowConfig.make(kernel_size, stride, dilation, padding)
    depth_multiplier = check_positive_int(depth_multiplier, "depth_multiplier")
    use_bias = _bool(use_bias, "use_bias")
    kernel_init = _inits.get(kernel_init, "kernel_init")
    bias_init = _inits.get(bias_init, "bias_init")
    ops = _check_ops(ops, "conv")

    def init(key, input_shape):
        shape, nd, window = cfg.input(input_shape, "DepthwiseConv")
        c_in = shape[-1]
        c_out = c_in * depth_multiplier
        kernel_shape = (*window, 1, c_out)
        with _noting("DepthwiseConv", shape):
            spec = conv_spec(_struct(shape), _struct(kernel_shape), cfg.strides(nd), padding, dilation, c_in)
        out = _conv_output_shape(shape, window, c_out, spec)
        return out, _init_kernel_and_bias(key, kernel_shape, c_out, kernel_init, bias_init, use_bias), {}

    def apply(params, state, x, *, key=None, train=False):
        kernel = params["kernel"]
        groups = kernel.shape[-1] // depth_multiplier
        y = ops.conv(x, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups)
        if use_bias:
            y = y + params["bias"]
        return y, state

    return Layer(init, apply)


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
    features = check_positive_int(features, "features")
    cfg = _WindowConfig.make(kernel_size, stride, dilation, padding)
    depth_multiplier = check_positive_int(depth_multiplier, "depth_multiplier")
    use_bias = _bool(use_bias, "use_bias")
    kernel_init = _inits.get(kernel_init, "kernel_init")
    bias_init = _inits.get(bias_init, "bias_init")
    ops = _check_ops(ops, "conv")

    def init(key, input_shape):
        shape, nd, window = cfg.input(input_shape, "SeparableConv")
        c_in = shape[-1]
        c_mid = c_in * depth_multiplier
        dw_shape, pw_shape = (*window, 1, c_mid), (*(1,) * nd, c_mid, features)
        with _noting("SeparableConv", shape):
            spec = conv_spec(_struct(shape), _struct(dw_shape), cfg.strides(nd), padding, dilation, c_in)
        out = _conv_output_shape(shape, window, features, spec)
        dw_key, pw_key = jax.random.split(key)
        pointwise = _init_kernel_and_bias(pw_key, pw_shape, features, kernel_init, bias_init, use_bias)
        params = {"depthwise": _inits.call(kernel_init, dw_key, dw_shape), "pointwise": pointwise.pop("kernel")}
        params.update(pointwise)
        return out, params, {}

    def apply(params, state, x, *, key=None, train=False):
        dw = params["depthwise"]
        h = ops.conv(x, dw, stride=stride, padding=padding, dilation=dilation, groups=dw.shape[-1] // depth_multiplier)
        y = ops.conv(h, params["pointwise"])
        if use_bias:
            y = y + params["bias"]
        return y, state

    return Layer(init, apply)


# ---------------------------------------------------------------------------------------------
# Dense
# ---------------------------------------------------------------------------------------------


def Dense(
    features: int,
    *,
    use_bias: bool = True,
    kernel_init: Any = "he_normal",
    bias_init: Any = "zeros",
    ops: Any = _default_ops,
) -> Layer:
    r"""Fully connected ``y = x W + b`` over the last axis: ``(N, ..., in) -> (N, ..., features)``.

    Params: ``kernel`` ``(in, features)``, ``bias`` ``(features,)`` (the bias goes through
    ``ops.dense``'s hand-derived ``db = sum dz``)."""
    features = check_positive_int(features, "features")
    use_bias = _bool(use_bias, "use_bias")
    kernel_init = _inits.get(kernel_init, "kernel_init")
    bias_init = _inits.get(bias_init, "bias_init")
    ops = _check_ops(ops, "dense")

    def init(key, input_shape):
        shape = _shape_arg(input_shape, "Dense")
        if len(shape) < 2:
            raise ValueError(f"Dense: input_shape must be (N, ..., in) with rank >= 2, got {shape}")
        params = _init_kernel_and_bias(key, (shape[-1], features), features, kernel_init, bias_init, use_bias)
        return (*shape[:-1], features), params, {}

    def apply(params, state, x, *, key=None, train=False):
        return ops.dense(x, params["kernel"], params["bias"] if use_bias else None), state

    return Layer(init, apply)


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------


def _pool(layer: str, op_name: str, window, stride, padding, ops, **op_kwargs) -> Layer:
    cfg = _WindowConfig.make(window, stride, 1, padding, window_arg="window")
    ops = _check_ops(ops, op_name)

    def init(key, input_shape):
        shape, nd, win = cfg.input(input_shape, layer)
        with _noting(layer, shape):
            spec = pool_spec(_struct(shape), win, cfg.strides(nd), padding, op_name)
        out = _conv_output_shape(shape, win, shape[-1], _pool_as_conv(spec))
        return out, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return getattr(ops, op_name)(x, window, stride=stride, padding=padding, **op_kwargs), state

    return Layer(init, apply)


class _PoolAsConv(NamedTuple):
    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]


def _pool_as_conv(spec) -> _PoolAsConv:
    """A pool's spec in the form the conv output-size arithmetic reads (dilation 1)."""
    return _PoolAsConv(spec.strides, spec.padding, (1,) * len(spec.strides))


def MaxPool(
    window: int | Sequence[int], *, stride: Any = None, padding: Any = "VALID", ops: Any = _default_ops
) -> Layer:
    """Max pooling (``stride=None`` means ``stride = window``; padding counts as ``-inf``); the gradient
    of each window goes to its first maximum."""
    return _pool("MaxPool", "max_pool", window, stride, padding, ops)


def AvgPool(
    window: int | Sequence[int],
    *,
    stride: Any = None,
    padding: Any = "VALID",
    count_include_pad: bool = True,
    ops: Any = _default_ops,
) -> Layer:
    """Mean pooling; ``count_include_pad=False`` divides by the in-bounds count of each window."""
    count_include_pad = _bool(count_include_pad, "count_include_pad")
    return _pool("AvgPool", "avg_pool", window, stride, padding, ops, count_include_pad=count_include_pad)


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
    ops = _check_ops(ops, op_name)

    def init(key, input_shape):
        shape, _ = _spatial_shape(input_shape, layer, None, "")
        return (shape[0], shape[-1]), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return getattr(ops, op_name)(x), state

    return Layer(init, apply)


# ---------------------------------------------------------------------------------------------
# Shape and activation layers
# ---------------------------------------------------------------------------------------------


def _flatten() -> Layer:
    def init(key, input_shape):
        shape = _shape_arg(input_shape, "Flatten")
        if len(shape) < 2:
            raise ValueError(f"Flatten: input_shape must be (N, ...) with rank >= 2, got {shape}")
        return (shape[0], math.prod(shape[1:])), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return jnp.reshape(x, (x.shape[0], -1)), state

    return Layer(init, apply)


def _identity() -> Layer:
    def init(key, input_shape):
        return input_shape, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return x, state

    return Layer(init, apply)


def _elementwise(layer: str, op_name: str, ops: Any, **op_kwargs) -> Layer:
    ops = _check_ops(ops, op_name)

    def init(key, input_shape):
        return _shape_arg(input_shape, layer), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return getattr(ops, op_name)(x, **op_kwargs), state

    return Layer(init, apply)


def LeakyRelu(negative_slope: float = 0.01, *, ops: Any = _default_ops) -> Layer:
    """``x`` where ``x > 0`` else ``negative_slope * x``."""
    negative_slope = _real(negative_slope, "negative_slope")
    return _elementwise("LeakyRelu", "leaky_relu", ops, negative_slope=negative_slope)


# ---------------------------------------------------------------------------------------------
# Dropout and batch norm
# ---------------------------------------------------------------------------------------------


def Dropout(rate: float) -> Layer:
    r"""Inverted dropout: with ``train=True`` each element is dropped (set to 0) with probability
    ``rate`` and the survivors are scaled by ``1 / (1 - rate)``, so the expectation is unchanged;
    ``train=False`` is the identity.

    ``rate`` is the probability of *dropping*, in ``[0, 1)``. ``apply(..., train=True)`` needs ``key``;
    the same key gives the same mask.
    """
    rate = _real(rate, "rate")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate must be in [0, 1) (the probability of dropping), got {rate!r}")

    def init(key, input_shape):
        return _shape_arg(input_shape, "Dropout"), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        if not _check_train(train, "Dropout") or rate == 0.0:
            return x, state
        if key is None:
            raise ValueError("Dropout: apply(..., train=True) needs a PRNG key, got key=None; pass key=...")
        keep = jax.random.bernoulli(key, 1.0 - rate, jnp.shape(x))
        return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), jnp.result_type(x))), state

    return Layer(init, apply)


def BatchNorm(
    *,
    momentum: float = 0.9,
    epsilon: float = 1e-5,
    scale_init: Any = "ones",
    offset_init: Any = "zeros",
    ops: Any = _default_ops,
) -> Layer:
    r"""Batch normalisation over every axis but the last (channels).

    ``train=True``: ``y = scale * (x - mu) / sqrt(var + epsilon) + offset`` with the batch statistics
    of the ``m = size / C`` elements per channel (``ops.batch_norm``, hand-derived VJP), and the running
    averages in the new state move toward them::

        mean <- momentum * mean + (1 - momentum) * mu
        var  <- momentum * var  + (1 - momentum) * var_batch * m / (m - 1)

    the batch statistics taken under ``jax.lax.stop_gradient``. The running variance is fed the
    *unbiased* batch variance ``m / (m - 1) * var``, as PyTorch does (normalisation itself uses the
    biased one). ``momentum`` is the weight of the *old* value (Flax/Keras convention; PyTorch's
    ``momentum=0.1`` is ``momentum=0.9`` here). ``train=True`` needs ``m >= 2``.

    ``train=False``: ``y = scale * (x - mean) / sqrt(var + epsilon) + offset`` with the running
    averages; deterministic, state unchanged (plain ``jax.numpy``, differentiated by autodiff).

    Params: ``scale``, ``offset`` ``(C,)``. State: ``mean`` (zeros), ``var`` (ones), ``(C,)`` float32;
    updates keep the state's dtype.
    """
    momentum = _real(momentum, "momentum")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    epsilon = _real(epsilon, "epsilon")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon!r}")
    scale_init = _inits.get(scale_init, "scale_init")
    offset_init = _inits.get(offset_init, "offset_init")
    ops = _check_ops(ops, "batch_norm")

    def init(key, input_shape):
        shape = _shape_arg(input_shape, "BatchNorm")
        if len(shape) < 2:
            raise ValueError(f"BatchNorm: input_shape must be (N, ..., C) with rank >= 2, got {shape}")
        c = shape[-1]
        s_key, o_key = jax.random.split(key)
        params = {"scale": _inits.call(scale_init, s_key, (c,)), "offset": _inits.call(offset_init, o_key, (c,))}
        state = {"mean": jnp.zeros((c,), jnp.float32), "var": jnp.ones((c,), jnp.float32)}
        return shape, params, state

    def apply(params, state, x, *, key=None, train=False):
        scale, offset = params["scale"], params["offset"]
        if not _check_train(train, "BatchNorm"):
            inv = lax.rsqrt(state["var"] + epsilon)
            y = (x - state["mean"]) * (scale * inv) + offset
            return y.astype(jnp.result_type(x)), state
        m = math.prod(jnp.shape(x)[:-1])
        if m < 2:
            raise ValueError(
                f"BatchNorm: train=True needs at least 2 elements per channel, got x of shape {tuple(jnp.shape(x))}"
            )
        y, mu, var = ops.batch_norm(x, scale, offset, epsilon=epsilon)
        mu, var = lax.stop_gradient(mu), lax.stop_gradient(var) * (m / (m - 1))
        new_state = {
            "mean": (momentum * state["mean"] + (1 - momentum) * mu).astype(state["mean"].dtype),
            "var": (momentum * state["var"] + (1 - momentum) * var).astype(state["var"].dtype),
        }
        return y, new_state

    return Layer(init, apply)


# ---------------------------------------------------------------------------------------------
# Value layers and bind
# ---------------------------------------------------------------------------------------------


def _values(ops: Any) -> dict[str, Layer]:
    return {
        "Relu": _elementwise("Relu", "relu", ops),
        "Sigmoid": _elementwise("Sigmoid", "sigmoid", ops),
        "Tanh": _elementwise("Tanh", "tanh", ops),
        "Softmax": _elementwise("Softmax", "softmax", ops),
        "LogSoftmax": _elementwise("LogSoftmax", "log_softmax", ops),
        "GlobalAvgPool": _global_pool("GlobalAvgPool", "global_avg_pool", ops),
        "GlobalMaxPool": _global_pool("GlobalMaxPool", "global_max_pool", ops),
        "Flatten": _flatten(),
        "Identity": _identity(),
    }


_DEFAULT_VALUES = _values(_default_ops)
Relu: Layer = _DEFAULT_VALUES["Relu"]  # max(x, 0)
Sigmoid: Layer = _DEFAULT_VALUES["Sigmoid"]  # 1 / (1 + exp(-x))
Tanh: Layer = _DEFAULT_VALUES["Tanh"]
Softmax: Layer = _DEFAULT_VALUES["Softmax"]  # over the last axis
LogSoftmax: Layer = _DEFAULT_VALUES["LogSoftmax"]  # over the last axis
GlobalAvgPool: Layer = _DEFAULT_VALUES["GlobalAvgPool"]  # (N, *spatial, C) -> (N, C), mean
GlobalMaxPool: Layer = _DEFAULT_VALUES["GlobalMaxPool"]  # (N, *spatial, C) -> (N, C), max
Flatten: Layer = _DEFAULT_VALUES["Flatten"]  # (N, ...) -> (N, prod(...))
Identity: Layer = _DEFAULT_VALUES["Identity"]

_CONSTRUCTORS = {
    "Conv": Conv,
    "ConvTranspose": ConvTranspose,
    "DepthwiseConv": DepthwiseConv,
    "SeparableConv": SeparableConv,
    "Dense": Dense,
    "MaxPool": MaxPool,
    "AvgPool": AvgPool,
    "LpPool": LpPool,
    "LeakyRelu": LeakyRelu,
    "BatchNorm": BatchNorm,
}


def bind(ops: Any) -> SimpleNamespace:
    """Every layer constructor and value layer, built on ``ops`` (e.g. :mod:`jaxcnn.reference`).

    ``bind(jaxcnn.ops)`` is equivalent to this module. Layers without ops (``Dropout``, ``Flatten``,
    ``Identity``) are included so a network can be written against the namespace alone.
    """
    _check_ops(ops, *_default_ops.__all__)

    def bound(constructor):
        def make(*args, **kwargs):
            if "ops" in kwargs:
                raise TypeError(f"{constructor.__name__}: ops is already bound to {ops!r}")
            return constructor(*args, ops=ops, **kwargs)

        make.__name__ = make.__qualname__ = constructor.__name__
        make.__doc__ = constructor.__doc__
        return make

    namespace = {name: bound(fn) for name, fn in _CONSTRUCTORS.items()}
    namespace.update(_values(ops))
    namespace["Dropout"] = Dropout
    namespace["ops"] = ops
    return SimpleNamespace(**namespace)
