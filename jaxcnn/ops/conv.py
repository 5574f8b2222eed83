r"""Convolution and transposed convolution, 1-D/2-D/3-D, channels-last, with hand-derived VJPs.

``docs/derivations.md`` derives every piece: #conv-forward, #conv-input-gradient, #conv-weight-gradient,
#transposed-convolution, #conv-formulations.

Forward (what CNNs call convolution is a cross-correlation), per spatial dimension::

    z[b, i, co] = sum_{u, ci} w[u, ci, co] * xpad[b, s*i + d*u, ci]

``x`` is ``(N, *spatial, C_in)``, ``w`` is ``(*window, C_in // groups, C_out)``; ``xpad`` is ``x`` with
``lo`` zeros before and ``hi`` zeros after each spatial axis. With ``groups = g`` the channels split into
``g`` independent blocks (depthwise: ``g = C_in``).

Input gradient -- a stride-1 correlation of the **upsampled** cotangent with the **flipped** kernel,
in/out channels swapped::

    dx[b, p, ci] = sum_{i, u : s*i + d*u = p + lo} w[u, ci, co] * dz[b, i, co]

The cotangent gets ``s - 1`` zeros between samples (``s(o-1)+1`` rows) and is padded by
``(kd - 1 - lo, kd - 1 - hi + r)`` (:func:`~jaxcnn.ops._padding.input_grad_padding`), so the ``r`` rows
that no strided window reached come back with zero gradient.

Weight gradient -- a correlation of the padded input with the cotangent, the batch contracted::

    dw[u, ci, co] = sum_{b, i} xpad[b, s*i + d*u, ci] * dz[b, i, co]

The cotangent acts as the kernel, upsampled by ``s`` (``rhs_dilation=s``), sliding with stride ``d``
over the input padded by ``(lo, hi - r)`` (:func:`~jaxcnn.ops._padding.weight_grad_padding`).

Transposed convolution is the input-gradient map of a forward convolution ``A``, so its VJP reuses the
three pieces with roles exchanged: forward = ``A``'s input gradient; input gradient = ``A`` itself;
weight gradient = ``A``'s weight gradient with input and cotangent swapped.

The three correlations above, each one convolution call (the input gradient with ``lhs_dilation`` = stride),
are what runs on GPUs and TPUs; the choice is made per platform when the computation is lowered
(``lax.platform_dependent``; :func:`use_formulation` forces one). Where a faster formulation of the same
sums was measured on XLA:CPU (``benchmarks/NOTES.md``), ``fast_forward`` / ``fast_input_grad`` /
``fast_weight_grad`` pick it by shape: depthwise kernels as shifted elementwise products, the forward of a
kernel with a window of at most 32 taps times input channels (a first layer) as shifted products too, the
pointwise weight gradient as one matrix product, the weight gradient of larger float32/bfloat16 batches in
chunks of about 16 examples; on the ``cpu`` platform only. Each is tested equal to the single-call piece
(``tests/test_formulations.py``). Products of bfloat16/float16 operands are summed in float32 in every
formulation (``preferred_element_type``) and rounded once.

Forward-mode differentiation (``jax.jvp``, ``jacfwd``, ``hessian``) of these ``custom_vjp`` functions is
not supported by JAX; reverse-over-reverse (``grad`` of ``grad``) is, because every backward pass is
written in differentiable ``lax`` operations.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from .. import xla_cpu
from ..errors import ConfigError, ConfigTypeError, unknown_choice
from ._padding import (
    Pads,
    conv_output_size,
    dilated_size,
    input_grad_padding,
    normalize_padding,
    transpose_output_size,
    weight_grad_padding,
)
from ._precision import accumulation_dtype
from ._validate import as_positive_int, check_floating, normalize_tuple, spatial_rank
from ._windows import place_shifted, shifted_slices, window_offsets

OPS = ("conv", "conv_transpose")  # the ops this module adds to jaxcnn.ops (each with a reference twin)
__all__ = [*OPS, "ConvSpec", "conv_spec", "conv_transpose_spec", "use_formulation", "FORMULATIONS"]


class ConvSpec(NamedTuple):
    """A forward convolution's normalised, hashable configuration (``nondiff_argnums`` material)."""

    strides: tuple[int, ...]
    padding: Pads  # (lo, hi) per spatial dim, non-negative for conv, possibly negative hi inside conv_transpose
    dilation: tuple[int, ...]
    groups: int


# ---------------------------------------------------------------------------------------------
# Validation and normalisation (shared with jaxcnn.reference)
# ---------------------------------------------------------------------------------------------


def _check_kernel(x: Any, w: Any, name: str) -> int:
    check_floating(x, "x", name)
    check_floating(w, "w", name)
    if x.dtype != w.dtype:
        raise ConfigTypeError(f"{name}: x and w must have the same dtype, got x {x.dtype} and w {w.dtype}")
    nd = spatial_rank(x, "x", name, extra_dims=2)
    if w.ndim != x.ndim:
        raise ConfigError(
            f"{name}: w must have rank {x.ndim} (*window, in, out) to match x of shape {tuple(x.shape)}, "
            f"got w of shape {tuple(w.shape)}"
        )
    if any(k <= 0 for k in w.shape[:nd]):
        raise ConfigError(f"{name}: window (w.shape[:{nd}]) must be positive, got {tuple(w.shape[:nd])}")
    return nd


def conv_spec(x: Any, w: Any, stride: Any, padding: Any, dilation: Any, groups: Any) -> ConvSpec:
    """Validate ``conv``'s arguments against ``x`` and ``w`` and normalise them to a :class:`ConvSpec`."""
    nd = _check_kernel(x, w, "conv")
    groups = as_positive_int(groups, "groups")
    strides = normalize_tuple(stride, nd, "stride")
    dilation = normalize_tuple(dilation, nd, "dilation")
    c_in, (c_in_per_group, c_out) = x.shape[-1], w.shape[-2:]
    if c_in % groups:
        raise ConfigError(f"conv: groups (={groups}) must divide the input channels x.shape[-1] (={c_in})")
    if c_out % groups:
        raise ConfigError(f"conv: groups (={groups}) must divide the output channels w.shape[-1] (={c_out})")
    if c_in != c_in_per_group * groups:
        raise ConfigError(
            f"conv: input channels x.shape[-1] (={c_in}) must equal w.shape[-2] * groups (={c_in_per_group} * {groups})"
        )
    spatial, window = x.shape[1:-1], w.shape[:nd]
    pads = normalize_padding(padding, spatial, window, strides, dilation)
    for axis, (n, k, d, (lo, hi)) in enumerate(zip(spatial, window, dilation, pads)):
        if dilated_size(k, d) > n + lo + hi:
            raise ConfigError(
                f"conv: kernel of size {k} with dilation {d} (spans {dilated_size(k, d)}) is larger than "
                f"the padded input along spatial axis {axis} (size {n} + padding {(lo, hi)} = {n + lo + hi})"
            )
    return ConvSpec(strides, pads, dilation, groups)


def conv_transpose_spec(
    x: Any, w: Any, stride: Any, padding: Any, dilation: Any, output_padding: Any, groups: Any
) -> tuple[ConvSpec, tuple[int, ...]]:
    """Validate ``conv_transpose``'s arguments; return the spec of the convolution ``A`` it transposes
    (from the output back to ``x``) and the output's spatial shape."""
    name = "conv_transpose"
    nd = _check_kernel(x, w, name)
    groups = as_positive_int(groups, "groups")
    strides = normalize_tuple(stride, nd, "stride")
    dilation = normalize_tuple(dilation, nd, "dilation")
    c_in, c_in_w = x.shape[-1], w.shape[-1]
    if c_in_w % groups:
        raise ConfigError(f"{name}: groups (={groups}) must divide w.shape[-1] (={c_in_w})")
    if c_in != c_in_w:
        raise ConfigError(
            f"{name}: input channels x.shape[-1] (={c_in}) must equal w.shape[-1] (={c_in_w}); w is laid out "
            f"as the kernel of the convolution being transposed, (*window, C_out // groups, C_in)"
        )
    spatial, window = x.shape[1:-1], w.shape[:nd]
    pads = normalize_padding(padding, spatial, window, strides, dilation, allow_strings=False)
    out_pad = normalize_tuple(output_padding, nd, "output_padding", minimum=0)
    for s, d, op in zip(strides, dilation, out_pad):
        if op >= max(s, d):
            raise ConfigError(
                f"{name}: output_padding must be smaller than max(stride, dilation) in each dimension, "
                f"got output_padding={out_pad} with stride={strides} and dilation={dilation}"
            )
    out_spatial = tuple(
        transpose_output_size(n, k, s, d, lo, hi, op)
        for n, k, s, d, (lo, hi), op in zip(spatial, window, strides, dilation, pads, out_pad)
    )
    if any(m <= 0 for m in out_spatial):
        raise ConfigError(
            f"{name}: padding {pads} is too large for input spatial shape {tuple(spatial)}: the output "
            f"spatial shape would be {out_spatial}"
        )
    # A maps the output (length m) back to x (length n): padding (lo, hi - output_padding) makes
    # (m + lo + hi - op - kd) = (n - 1) s exactly, so A has n outputs and no unreached rows.
    a_pads = tuple((lo, hi - op) for (lo, hi), op in zip(pads, out_pad))
    return ConvSpec(strides, a_pads, dilation, groups), out_spatial


# ---------------------------------------------------------------------------------------------
# The three building blocks, each one lax.conv_general_dilated call
# ---------------------------------------------------------------------------------------------


def _channels_last(nd: int) -> tuple[int, ...]:
    """Dimension numbers (batch, feature, *spatial) of a channels-last array with ``nd`` spatial axes."""
    return (0, nd + 1, *range(1, nd + 1))


def _kernel_dims(nd: int) -> tuple[int, ...]:
    """Dimension numbers (out feature, in feature, *spatial) of a ``(*window, in, out)`` kernel."""
    return (nd + 1, nd, *range(nd))


def flip_and_swap(w: jax.Array, groups: int) -> jax.Array:
    """The kernel of the input-gradient correlation: every spatial axis reversed and, within each group,
    in/out channels exchanged: ``(*window, C_in//g, C_out)`` -> ``(*window, C_out//g, C_in)``."""
    nd = w.ndim - 2
    *window, c_in_g, c_out = w.shape
    w = lax.rev(w, tuple(range(nd)))
    w = w.reshape(*window, c_in_g, groups, c_out // groups)
    w = jnp.swapaxes(w, nd, nd + 2)  # (*window, C_out//g, g, C_in//g): group j's outputs become inputs
    return w.reshape(*window, c_out // groups, groups * c_in_g)


def _dims(nd: int) -> lax.ConvDimensionNumbers:
    """Channels-last input and output, a ``(*window, in, out)`` kernel."""
    return lax.ConvDimensionNumbers(_channels_last(nd), _kernel_dims(nd), _channels_last(nd))


def _correlate(lhs, rhs, dtype, **conv_args) -> jax.Array:
    """One ``conv_general_dilated``, summed in :func:`accumulation_dtype` and returned in ``dtype``."""
    out = lax.conv_general_dilated(lhs, rhs, preferred_element_type=accumulation_dtype(dtype), **conv_args)
    return out.astype(dtype)


def forward(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """``z = conv(x, w)``: the correlation in the module docstring."""
    nd = x.ndim - 2
    return _correlate(
        x, w, x.dtype, window_strides=spec.strides, padding=spec.padding, rhs_dilation=spec.dilation,
        dimension_numbers=_dims(nd), feature_group_count=spec.groups,
    )  # fmt: skip


def upsample(dz: jax.Array, strides: tuple[int, ...], pads: Pads) -> jax.Array:
    """Put ``s - 1`` zeros between neighbouring cotangent samples along each spatial axis, then pad
    (or crop, where negative) by ``pads``; batch and channel axes are untouched."""
    config = [(0, 0, 0), *((lo, hi, s - 1) for s, (lo, hi) in zip(strides, pads)), (0, 0, 0)]
    return lax.pad(dz, jnp.zeros((), dz.dtype), config)


def _input_grad_pads(in_spatial: tuple[int, ...], window: tuple[int, ...], spec: ConvSpec) -> Pads:
    """The upsampled cotangent's padding in the input-gradient correlation (``input_grad_padding``)."""
    return tuple(
        input_grad_padding(n, k, s, d, lo, hi)
        for n, k, s, d, (lo, hi) in zip(in_spatial, window, spec.strides, spec.dilation, spec.padding)
    )


def input_grad(dz: jax.Array, w: jax.Array, in_spatial: tuple[int, ...], spec: ConvSpec) -> jax.Array:
    """``dx``: the upsampled, padded cotangent correlated at stride 1 with the flipped, swapped kernel
    (the zeros between samples written out, as the notes write it: the CPU formulation)."""
    nd = dz.ndim - 2
    pads = _input_grad_pads(in_spatial, w.shape[:nd], spec)
    return _correlate(
        upsample(dz, spec.strides, pads), flip_and_swap(w, spec.groups), dz.dtype, window_strides=(1,) * nd,
        padding=((0, 0),) * nd, rhs_dilation=spec.dilation, dimension_numbers=_dims(nd),
        feature_group_count=spec.groups,
    )  # fmt: skip


def input_grad_dilated(dz: jax.Array, w: jax.Array, in_spatial: tuple[int, ...], spec: ConvSpec) -> jax.Array:
    """:func:`input_grad` with the upsampling left to the convolution (``lhs_dilation`` = stride): the
    canonical backward-data form that XLA hands to cuDNN / the TPU convolution unit, which skip the
    zeros instead of multiplying by them."""
    nd = dz.ndim - 2
    pads = _input_grad_pads(in_spatial, w.shape[:nd], spec)
    return _correlate(
        dz, flip_and_swap(w, spec.groups), dz.dtype, window_strides=(1,) * nd, padding=pads,
        lhs_dilation=spec.strides, rhs_dilation=spec.dilation, dimension_numbers=_dims(nd),
        feature_group_count=spec.groups,
    )  # fmt: skip


def _weight_grad_pads(in_spatial: tuple[int, ...], window: tuple[int, ...], spec: ConvSpec) -> Pads:
    """The input's padding in the weight-gradient correlation, per spatial axis (``weight_grad_padding``)."""
    return tuple(
        weight_grad_padding(n, k, s, d, lo, hi)
        for n, k, s, d, (lo, hi) in zip(in_spatial, window, spec.strides, spec.dilation, spec.padding)
    )


def weight_grad(x: jax.Array, dz: jax.Array, window: tuple[int, ...], spec: ConvSpec) -> jax.Array:
    """``dw``: the padded input correlated with the cotangent (dilated by the stride, sliding with the
    dilation), batch and space contracted, one block of channels per group: one batch-contracting
    convolution (the canonical backward-filter form)."""
    nd = x.ndim - 2
    pads = _weight_grad_pads(x.shape[1:-1], window, spec)
    # Batch plays the contracted feature: x's channels become the "batch" (split into groups by
    # batch_group_count), the cotangent's batch its "input feature", its channels the "output feature".
    dims = lax.ConvDimensionNumbers(
        lhs_spec=(nd + 1, 0, *range(1, nd + 1)),
        rhs_spec=(nd + 1, 0, *range(1, nd + 1)),
        out_spec=(nd, nd + 1, *range(nd)),  # -> (*window, C_in // g, C_out)
    )
    return _correlate(
        x, dz, x.dtype, window_strides=spec.dilation, padding=pads, rhs_dilation=spec.strides,
        dimension_numbers=dims, batch_group_count=spec.groups,
    )  # fmt: skip


# Measured on XLA:CPU (benchmarks/NOTES.md): the batch-contracting correlation above runs 1.6-2.5x
# faster when the batch is cut into chunks of ~16 examples whose weight gradients are summed; the
# patch matrix XLA builds for one chunk stays in cache. Same math, another summation order.
WEIGHT_GRAD_CHUNK = 16
MAX_WEIGHT_GRAD_CHUNKS = 32  # bounds the unrolled graph for very large batches
# Per example, the patch matrix has (output positions) x (window taps) x (input channels per group)
# entries. Below this, a chunk is too little work to pay for its own call (the MNIST-1D convs: 95-750).
MIN_PATCH_SIZE_TO_CHUNK = 4096
# Under XLA's own convolution emitter (the route `jaxcnn train` sets: xla_cpu.convolution_route() ==
# "xla") the single call is as fast as the chunks up to LeNet's and fashion_cnn's first convolutions
# (15,000-19,600 entries), where chunking ran at 0.85-0.94x of autodiff; resnet20's (36,864-147,456) still
# gain 1.3x from chunking there (benchmarks/NOTES.md, "XLA:CPU's convolution routes").
MIN_PATCH_SIZE_TO_CHUNK_XLA_EMITTER = 32768


def weight_grad_chunks(batch: int, dtype, patch_size: int, *, route: str | None = None) -> int:
    """How many batch chunks :func:`weight_grad_chunked` uses (1 means the textbook single call).

    Only float32/bfloat16/float16 inputs with at least two chunks' worth of examples, each example
    carrying a patch matrix of at least ``MIN_PATCH_SIZE_TO_CHUNK`` entries
    (``MIN_PATCH_SIZE_TO_CHUNK_XLA_EMITTER`` under XLA's own convolution emitter; ``route``, by default
    :func:`jaxcnn.xla_cpu.convolution_route`), are split; float64 keeps the single call (XLA:CPU has no
    fast float64 convolution, so nothing was gained there).
    """
    route = xla_cpu.convolution_route() if route is None else route
    smallest = MIN_PATCH_SIZE_TO_CHUNK_XLA_EMITTER if route == "xla" else MIN_PATCH_SIZE_TO_CHUNK
    if jnp.dtype(dtype) == jnp.float64 or batch < 2 * WEIGHT_GRAD_CHUNK or patch_size < smallest:
        return 1
    return min(-(-batch // WEIGHT_GRAD_CHUNK), MAX_WEIGHT_GRAD_CHUNKS)


def weight_grad_chunked(x: jax.Array, dz: jax.Array, window: tuple[int, ...], spec: ConvSpec, chunks: int) -> jax.Array:
    """:func:`weight_grad` as a sum over ``chunks`` slices of the batch: ``dw = sum_c dw(x_c, dz_c)``.

    XLA:CPU runs the batch-contracting correlation with the contracted batch as the minor axis of both
    operands. Both are therefore laid out once, before slicing, as ``(chunk, C_in, *spatial, n)`` and
    ``(chunk, *out, n, C_out)``, so each chunk's operands are contiguous in the layout the convolution
    reads (measured 12% faster on the fashion_cnn step than slicing first and letting XLA transpose
    every chunk). A batch that does not divide evenly is padded with zero examples, which add nothing.
    """
    nd = x.ndim - 2
    size = -(-x.shape[0] // chunks)
    extra = size * chunks - x.shape[0]
    if extra:
        x = jnp.pad(x, [(0, extra)] + [(0, 0)] * (nd + 1))
        dz = jnp.pad(dz, [(0, extra)] + [(0, 0)] * (nd + 1))
    space = tuple(range(2, nd + 2))
    x_blocks = x.reshape(chunks, size, *x.shape[1:]).transpose(0, nd + 2, *space, 1)  # (chunk, C_in, *sp, n)
    dz_blocks = dz.reshape(chunks, size, *dz.shape[1:]).transpose(0, *space, 1, nd + 2)  # (chunk, *out, n, C_out)
    pads = _weight_grad_pads(x.shape[1:-1], window, spec)
    # The same correlation as weight_grad, with the operands' axes already in the order it contracts.
    dims = lax.ConvDimensionNumbers(
        lhs_spec=(0, nd + 1, *range(1, nd + 1)),  # C_in as "batch", the n examples as "feature"
        rhs_spec=(nd + 1, nd, *range(nd)),  # the cotangent as kernel: C_out out, n in
        out_spec=(0, nd + 1, *range(1, nd + 1)),  # (C_in // g, *window, C_out)
    )
    total = None
    for k in range(chunks):
        part = lax.conv_general_dilated(
            x_blocks[k],
            dz_blocks[k],
            window_strides=spec.dilation,
            padding=pads,
            rhs_dilation=spec.strides,
            dimension_numbers=dims,
            batch_group_count=spec.groups,
            preferred_element_type=accumulation_dtype(x.dtype),  # partial sums of bf16/f16 stay float32
        )
        total = part if total is None else total + part
    return jnp.moveaxis(total, 0, nd).astype(x.dtype)  # (*window, C_in // g, C_out)


def is_pointwise(window: tuple[int, ...], spec: ConvSpec) -> bool:
    """A 1x1 (x1) convolution without padding or groups: a matrix product at every output position."""
    return all(k == 1 for k in window) and all(p == (0, 0) for p in spec.padding) and spec.groups == 1


def weight_grad_pointwise(x: jax.Array, dz: jax.Array, spec: ConvSpec) -> jax.Array:
    """:func:`weight_grad` of a pointwise convolution as one matrix product (no window to slide)::

        dw[ci, co] = sum_{b, i} x[b, s*i, ci] * dz[b, i, co]

    The strided samples ``x[:, ::s]`` are the only input rows the forward read. The product is written
    ``dz^T x`` rather than ``x^T dz``: XLA:CPU copies a dot's left operand into contraction-minor
    layout, and ``dz`` is the cheaper array to copy (``x`` is usually a fused batch-norm/ReLU output,
    which the copy would recompute in transposed order).
    """
    nd = x.ndim - 2
    (sampled,) = shifted_slices(x, [(0,) * nd], spec.strides, spec.padding, dz.shape[1:-1])
    contract = tuple(range(nd + 1))
    acc = accumulation_dtype(x.dtype)
    dw_t = lax.dot_general(dz, sampled, ((contract, contract), ((), ())), preferred_element_type=acc)  # (C_out, C_in)
    return dw_t.T.reshape(*(1,) * nd, x.shape[-1], dz.shape[-1]).astype(x.dtype)


def fast_weight_grad(x: jax.Array, dz: jax.Array, window: tuple[int, ...], spec: ConvSpec) -> jax.Array:
    """The weight gradient in the formulation measured fastest for this shape and dtype."""
    if is_depthwise((*window, w_in_channels(x, spec), dz.shape[-1]), spec):
        return depthwise_weight_grad(x, dz, window, spec)
    if is_pointwise(window, spec) and jnp.dtype(x.dtype) != jnp.float64:
        return weight_grad_pointwise(x, dz, spec)
    patch_size = math.prod(dz.shape[1:-1]) * math.prod(window) * w_in_channels(x, spec)
    chunks = weight_grad_chunks(x.shape[0], x.dtype, patch_size)
    return weight_grad(x, dz, window, spec) if chunks == 1 else weight_grad_chunked(x, dz, window, spec, chunks)


def w_in_channels(x: jax.Array, spec: ConvSpec) -> int:
    """Input channels per group: the kernel's ``C_in // groups`` axis."""
    return x.shape[-1] // spec.groups


# ---------------------------------------------------------------------------------------------
# Depthwise convolution as a sum of shifted products
# ---------------------------------------------------------------------------------------------
# Measured on XLA:CPU (benchmarks/NOTES.md): a feature-grouped convolution with one channel per group
# runs 15-30x slower than its arithmetic needs (forward and input gradient) and the batch-grouped weight
# gradient computes all C x C channel pairs. With one channel per group, the correlation is K shifted
# elementwise products, which XLA fuses into single loops. Same sums, written per tap.


# Each tap is one slice in the graph (and one pad in the backward pass): compilation grows with the
# taps (a 5x5x5 window's grad compiled in 3.3 s, 7x7x7 in 6.5 s), so larger windows keep the grouped
# convolution. 64 covers 8x8, 4x4x4 and 1-D windows up to 64.
MAX_DEPTHWISE_TAPS = 64


def is_depthwise(w_shape: tuple[int, ...], spec: ConvSpec) -> bool:
    """One input and one output channel per group (``groups = C_in = C_out``, kernel ``(*window, 1, C)``),
    with at most ``MAX_DEPTHWISE_TAPS`` window taps."""
    return w_shape[-2] == 1 and w_shape[-1] == spec.groups and math.prod(w_shape[:-2]) <= MAX_DEPTHWISE_TAPS


def _taps(x: jax.Array, window: tuple[int, ...], spec: ConvSpec, out_spatial: tuple[int, ...]) -> list[jax.Array]:
    """``x_u[b, i, c] = xpad[b, s*i + d*u, c]`` for every tap ``u`` of the window, row-major."""
    return shifted_slices(x, window_offsets(window, spec.dilation), spec.strides, spec.padding, out_spatial)


def depthwise_forward(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """``z[b, i, c] = sum_u x_u[b, i, c] * w[u, 0, c]``: :func:`forward` for a depthwise kernel."""
    nd = x.ndim - 2
    window = w.shape[:nd]
    acc = accumulation_dtype(x.dtype)
    out_spatial = output_shape(x.shape, window, w.shape[-1], spec)[1:-1]
    taps_w = w.reshape(-1, w.shape[-1]).astype(acc)
    z = sum(x_u.astype(acc) * taps_w[k] for k, x_u in enumerate(_taps(x, window, spec, out_spatial)))
    return z.astype(x.dtype)


def depthwise_input_grad(dz: jax.Array, w: jax.Array, in_spatial: tuple[int, ...], spec: ConvSpec) -> jax.Array:
    """``dx[b, p, c] = sum_{i, u : s*i + d*u = p + lo} w[u, 0, c] * dz[b, i, c]``: each tap's products
    placed back where that tap read them (the adjoint of the shifted slices; :func:`input_grad`'s
    correlation of the upsampled cotangent with the flipped kernel, one channel at a time)."""
    nd = dz.ndim - 2
    window = w.shape[:nd]
    acc = accumulation_dtype(dz.dtype)
    taps_w = w.reshape(-1, w.shape[-1]).astype(acc)
    per_tap = [dz.astype(acc) * taps_w[k] for k in range(taps_w.shape[0])]
    dx = place_shifted(per_tap, window_offsets(window, spec.dilation), spec.strides, spec.padding, in_spatial)
    return dx.astype(dz.dtype)


def depthwise_weight_grad(x: jax.Array, dz: jax.Array, window: tuple[int, ...], spec: ConvSpec) -> jax.Array:
    """``dw[u, 0, c] = sum_{b, i} x_u[b, i, c] * dz[b, i, c]``: :func:`weight_grad` for a depthwise kernel."""
    nd = x.ndim - 2
    acc = accumulation_dtype(x.dtype)
    batch_and_space = tuple(range(nd + 1))
    per_tap = [
        jnp.sum(x_u.astype(acc) * dz.astype(acc), axis=batch_and_space)
        for x_u in _taps(x, window, spec, dz.shape[1:-1])
    ]
    return jnp.stack(per_tap).reshape(*window, 1, dz.shape[-1]).astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# A forward convolution with few products per output (a network's first layer) as shifted products
# ---------------------------------------------------------------------------------------------
# Measured on XLA:CPU (benchmarks/NOTES.md, "A first layer's forward as shifted products"): a convolution
# reading one to three input channels through a window ran 1.5-7x slower through XLA's convolution emitter
# than the same sum written as one fused loop of K * C_in broadcast products; at 50 products the two were
# even, at 75 the convolution won. A 1x1 window is left to the convolution (a pointwise product: with 32
# input channels the shifted form was 0.65x).
MAX_NARROW_PRODUCTS = 32


def is_narrow(w_shape: tuple[int, ...], spec: ConvSpec) -> bool:
    """An ungrouped kernel with a window of more than one tap whose output reads at most
    ``MAX_NARROW_PRODUCTS`` inputs (window taps times input channels): LeNet's and Fashion-MNIST's 5x5
    first layers (25), a CIFAR network's 3x3 RGB stem (27)."""
    taps, products = math.prod(w_shape[:-2]), math.prod(w_shape[:-1])
    return spec.groups == 1 and taps > 1 and w_shape[-1] > 0 and 0 < products <= MAX_NARROW_PRODUCTS


def narrow_forward(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """``z[b, i, :] = sum_{u, c} x_u[b, i, c] * w[u, c, :]``: :func:`forward` as one product per tap and
    input channel, each a slice of ``x`` broadcast over the output channels."""
    nd = x.ndim - 2
    window = w.shape[:nd]
    acc = accumulation_dtype(x.dtype)
    out_spatial = output_shape(x.shape, window, w.shape[-1], spec)[1:-1]
    taps_w = w.reshape(-1, w.shape[-2], w.shape[-1]).astype(acc)
    products = (
        x_u[..., c : c + 1].astype(acc) * taps_w[k, c]
        for k, x_u in enumerate(_taps(x, window, spec, out_spatial))
        for c in range(x.shape[-1])
    )
    return sum(products).astype(x.dtype)


# The three pieces in the formulation measured fastest for the kernel's shape.


def fast_forward(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    if is_depthwise(w.shape, spec):
        return depthwise_forward(x, w, spec)
    return narrow_forward(x, w, spec) if is_narrow(w.shape, spec) else forward(x, w, spec)


def fast_input_grad(dz: jax.Array, w: jax.Array, in_spatial: tuple[int, ...], spec: ConvSpec) -> jax.Array:
    if is_depthwise(w.shape, spec):
        return depthwise_input_grad(dz, w, in_spatial, spec)
    return input_grad(dz, w, in_spatial, spec)


# ---------------------------------------------------------------------------------------------
# One formulation per backend, chosen when the computation is lowered
# ---------------------------------------------------------------------------------------------
# The formulations above were measured faster on XLA:CPU. A GPU or TPU compiler recognises the canonical
# forms instead -- one convolution forward, the input gradient as one convolution with lhs_dilation =
# stride, the weight gradient as one batch-contracting convolution -- and hands them to cuDNN's
# backward-data / backward-filter kernels or the TPU's convolution unit. ``lax.platform_dependent``
# picks per platform at lowering time, so one jitted function lowered for CPU and for CUDA/ROCm/TPU gets
# each its own. ``use_formulation`` forces one (tests run both on a CPU and compare them).

FORMULATIONS = ("auto", "cpu", "canonical")
_FORMULATION: contextvars.ContextVar[str] = contextvars.ContextVar("jaxcnn_conv_formulation", default="auto")


@contextlib.contextmanager
def use_formulation(name: str):
    """Trace the convolutions inside the block with ``"cpu"`` (the XLA:CPU formulations), ``"canonical"``
    (the single-call forms accelerators expect), or ``"auto"`` (the default: by lowering platform).
    It applies when a function is traced: a function already jitted keeps what it was traced with."""
    if name not in FORMULATIONS:
        raise unknown_choice("formulation", name, FORMULATIONS)
    token = _FORMULATION.set(name)
    try:
        yield
    finally:
        _FORMULATION.reset(token)


def _by_backend(cpu: Callable, canonical: Callable, *args: jax.Array) -> jax.Array:
    mode = _FORMULATION.get()
    if mode == "cpu":
        return cpu(*args)
    if mode == "canonical":
        return canonical(*args)
    return lax.platform_dependent(*args, cpu=cpu, default=canonical)


def backend_forward(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    return _by_backend(lambda x, w: fast_forward(x, w, spec), lambda x, w: forward(x, w, spec), x, w)


def backend_input_grad(dz: jax.Array, w: jax.Array, in_spatial: tuple[int, ...], spec: ConvSpec) -> jax.Array:
    return _by_backend(
        lambda dz, w: fast_input_grad(dz, w, in_spatial, spec),
        lambda dz, w: input_grad_dilated(dz, w, in_spatial, spec),
        dz,
        w,
    )


def backend_weight_grad(x: jax.Array, dz: jax.Array, window: tuple[int, ...], spec: ConvSpec) -> jax.Array:
    return _by_backend(
        lambda x, dz: fast_weight_grad(x, dz, window, spec), lambda x, dz: weight_grad(x, dz, window, spec), x, dz
    )


# ---------------------------------------------------------------------------------------------
# conv
# ---------------------------------------------------------------------------------------------


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    return backend_forward(x, w, spec)


def _conv_fwd(x, w, spec):
    return backend_forward(x, w, spec), (x, w)


def _conv_bwd(spec, residuals, dz):
    x, w = residuals
    nd = x.ndim - 2
    dx = backend_input_grad(dz, w, x.shape[1:-1], spec)
    dw = backend_weight_grad(x, dz, w.shape[:nd], spec)
    return dx.astype(x.dtype), dw.astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv(x: Any, w: Any, *, stride: Any = 1, padding: Any = "VALID", dilation: Any = 1, groups: int = 1):
    """N-d convolution (cross-correlation) of channels-last ``x`` with ``w``, hand-derived VJP.

    Args:
      x: ``(N, *spatial, C_in)`` with 1, 2 or 3 spatial axes.
      w: ``(*window, C_in // groups, C_out)``.
      stride: int or tuple of ints, one per spatial axis.
      padding: ``"VALID"``, ``"SAME"``, an int (symmetric), or a sequence with, per spatial axis, an int
        or a ``(lo, hi)`` pair; non-negative.
      dilation: int or tuple, the kernel's dilation (holes between taps).
      groups: feature groups; ``groups = C_in`` with ``C_out = m * C_in`` is depthwise (with ``m = 1`` and at
        most ``MAX_DEPTHWISE_TAPS`` taps it runs as shifted elementwise products).

    Returns:
      ``(N, *out_spatial, C_out)`` with ``out = floor((n + lo + hi - d(k-1) - 1) / s) + 1``.
    """
    x, w = jnp.asarray(x), jnp.asarray(w)
    return _conv(x, w, conv_spec(x, w, stride, padding, dilation, groups))


# ---------------------------------------------------------------------------------------------
# conv_transpose
# ---------------------------------------------------------------------------------------------


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_transpose(x: jax.Array, w: jax.Array, spec: ConvSpec, out_spatial: tuple[int, ...]) -> jax.Array:
    return backend_input_grad(x, w, out_spatial, spec)


def _conv_transpose_fwd(x, w, spec, out_spatial):
    return backend_input_grad(x, w, out_spatial, spec), (x, w)


def _conv_transpose_bwd(spec, out_spatial, residuals, dy):
    x, w = residuals
    nd = x.ndim - 2
    # y = A^T x, so dx = A dy and dw is A's weight gradient with input dy and cotangent x.
    dx = backend_forward(dy, w, spec)
    dw = backend_weight_grad(dy, x, w.shape[:nd], spec)
    return dx.astype(x.dtype), dw.astype(w.dtype)


_conv_transpose.defvjp(_conv_transpose_fwd, _conv_transpose_bwd)


def conv_transpose(
    x: Any,
    w: Any,
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    output_padding: Any = 0,
    groups: int = 1,
):
    """Transposed ("expanding") convolution with PyTorch's semantics, hand-derived VJP.

    ``conv_transpose(y, w, ...)`` is the adjoint of ``conv(., w, stride=stride, padding=padding,
    dilation=dilation, groups=groups)``: ``<conv(a, w), b> = <a, conv_transpose(b, w)>`` whenever the
    shapes match (``output_padding`` picks among the input lengths a strided conv maps to one length).

    Args:
      x: ``(N, *spatial, C_in)``.
      w: laid out as the kernel of the convolution being transposed, ``(*window, C_out // groups, C_in)``.
      stride, dilation: ints or tuples.
      padding: an int or per-axis ints / ``(lo, hi)`` pairs, removed from the output as in PyTorch.
      output_padding: extra rows at the end of each axis, ``0 <= output_padding < max(stride, dilation)``.
      groups: feature groups.

    Returns:
      ``(N, *out_spatial, C_out)`` with ``out = (n-1)s - lo - hi + d(k-1) + 1 + output_padding``.
    """
    x, w = jnp.asarray(x), jnp.asarray(w)
    spec, out_spatial = conv_transpose_spec(x, w, stride, padding, dilation, output_padding, groups)
    return _conv_transpose(x, w, spec, out_spatial)


def output_shape(in_shape, window, c_out, spec: ConvSpec) -> tuple[int, ...]:
    """The shape ``conv`` returns for an input of ``in_shape``, computed on ints (no tracing)."""
    spatial = tuple(
        conv_output_size(n, k, s, d, lo, hi)
        for n, k, s, d, (lo, hi) in zip(in_shape[1:-1], window, spec.strides, spec.dilation, spec.padding)
    )
    return (in_shape[0], *spatial, c_out)
