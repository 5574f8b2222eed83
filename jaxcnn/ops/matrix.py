r"""The convolution as a matrix: the dense ``M`` with ``conv(x, w).ravel() == M @ x.ravel()``.

For one example, per spatial dimension (``xpad`` is ``x`` padded by ``(lo, hi)``)::

    z[i, co] = sum_{u, ci} w[u, ci, co] * xpad[s*i + d*u, ci]

is linear in ``x``, so it is a matrix product. Flattening the output ``(*out_spatial, C_out)`` and the
input ``(*spatial, C_in)`` in row-major (channels-last) order, the matrix has one row per output entry
``(i, co)`` and one column per input entry ``(p, ci)``::

    M[(i, co), (p, ci)] = w[u, ci - g*C_in/groups, co]   where p = s*i + d*u - lo,  g = co // (C_out/groups)

for every tap ``u`` whose ``p`` lands inside the input (taps landing in the padding multiply zeros and
are dropped) and every input channel ``ci`` of output channel ``co``'s group; all other entries are 0.

This is the picture of the lecture notes: a 3x3 input and a 2x2 kernel without padding give a 2x2
output, so ``M`` is 4x9, each row the kernel's four entries placed at one window::

    [[w11, w12, 0,   w21, w22, 0,   0,   0,   0  ],
     [0,   w11, w12, 0,   w21, w22, 0,   0,   0  ],
     [0,   0,   0,   w11, w12, 0,   w21, w22, 0  ],
     [0,   0,   0,   0,   w11, w12, 0,   w21, w22]]

(the notes print its 9x4 transpose). Two facts follow from ``z = M x``:

- ``M.T`` is the transposed convolution: ``conv_transpose(y, w, stride, padding, dilation, groups)``
  (explicit padding, ``output_padding`` = the rows the strided windows leave unreached) is ``M.T y``;
- ``M.T`` is the input gradient: ``dx = M.T dz``, what the hand-derived VJP of ``conv`` computes as a
  correlation of the upsampled cotangent with the flipped kernel.

``M`` is mostly zeros and has ``prod(out) * C_out * prod(spatial) * C_in`` entries, so it is for
teaching and testing, never for computing a convolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError, ConfigTypeError
from ._validate import is_int
from .conv import ConvSpec, conv_spec, output_shape

__all__ = ["conv_matrix", "MAX_CONV_MATRIX_ENTRIES"]

# 2**24 entries: 128 MiB in float64, 64 MiB in float32.
MAX_CONV_MATRIX_ENTRIES = 2**24


def _example_shape(input_shape: Any, w: jax.Array) -> tuple[int, ...]:
    """``(1, *spatial, C_in)`` from ``(*spatial, C_in)`` or ``(1, *spatial, C_in)``; ``w`` fixes the rank."""
    nd = w.ndim - 2
    if not 1 <= nd <= 3:
        raise ConfigError(
            f"conv_matrix: w must have rank 3, 4 or 5 (*window, C_in // groups, C_out), got shape {tuple(w.shape)}"
        )
    if isinstance(input_shape, str) or not isinstance(input_shape, Sequence) or not all(map(is_int, input_shape)):
        raise ConfigTypeError(f"conv_matrix: input_shape must be a tuple of ints, got {input_shape!r}")
    shape = tuple(int(n) for n in input_shape)
    if len(shape) == nd + 1:
        shape = (1, *shape)
    elif len(shape) != nd + 2:
        raise ConfigError(
            f"conv_matrix: input_shape must be (*spatial, C_in) with {nd} spatial axes to match w of shape "
            f"{tuple(w.shape)}, or (1, *spatial, C_in); got {shape}"
        )
    elif shape[0] != 1:
        raise ConfigError(
            f"conv_matrix: the matrix acts on a single example, so a batch axis must be 1; got input_shape "
            f"{shape} with batch size {shape[0]}"
        )
    if any(n < 1 for n in shape):
        raise ConfigError(f"conv_matrix: input_shape must be positive, got {tuple(input_shape)}")
    return shape


def _axis_taps(n: int, k: int, s: int, d: int, lo: int, o: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Along one axis, every (output ``i``, tap ``u``, input ``p = s*i + d*u - lo``) with ``0 <= p < n``."""
    i_parts, u_parts = [], []
    for u in range(k):
        first = max(0, -(-(lo - d * u) // s))  # smallest i with p >= 0
        last = min(o - 1, (n - 1 + lo - d * u) // s)  # largest i with p <= n - 1
        i = np.arange(first, last + 1)
        i_parts.append(i)
        u_parts.append(np.full(i.shape, u))
    i, u = np.concatenate(i_parts), np.concatenate(u_parts)
    return i, u, s * i + d * u - lo


def _spatial_taps(
    in_spatial: tuple[int, ...], window: tuple[int, ...], out_spatial: tuple[int, ...], spec: ConvSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-major flat (output position, tap, input position) of every tap that lands inside the input."""
    out_flat = tap_flat = in_flat = np.zeros(1, dtype=np.int64)
    for n, k, s, d, (lo, _), o in zip(in_spatial, window, spec.strides, spec.dilation, spec.padding, out_spatial):
        i, u, p = _axis_taps(n, k, s, d, lo, o)
        out_flat = (out_flat[:, None] * o + i).ravel()
        tap_flat = (tap_flat[:, None] * k + u).ravel()
        in_flat = (in_flat[:, None] * n + p).ravel()
    return out_flat, tap_flat, in_flat


def _placement(
    in_shape: tuple[int, ...], w_shape: tuple[int, ...], out_shape: tuple[int, ...], spec: ConvSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, cols, taps)``: ``M[rows[j], cols[j]] = w.ravel()[taps[j]]``, computed with NumPy."""
    nd = len(w_shape) - 2
    c_in, (c_in_g, c_out) = in_shape[-1], w_shape[-2:]
    out_flat, tap_flat, in_flat = _spatial_taps(in_shape[1:-1], w_shape[:nd], out_shape[1:-1], spec)
    co, ci_local = (a.ravel() for a in np.meshgrid(np.arange(c_out), np.arange(c_in_g), indexing="ij"))
    ci = co // (c_out // spec.groups) * c_in_g + ci_local  # output channel co reads its own group's inputs
    rows = out_flat[:, None] * c_out + co
    cols = in_flat[:, None] * c_in + ci
    taps = (tap_flat[:, None] * c_in_g + ci_local) * c_out + co
    return rows.ravel(), cols.ravel(), taps.ravel()


def conv_matrix(
    w: Any, input_shape: Any, *, stride: Any = 1, padding: Any = "VALID", dilation: Any = 1, groups: int = 1
) -> jax.Array:
    """The dense matrix ``M`` of ``conv(., w, stride, padding, dilation, groups)`` on one example.

    ``conv(x[None], w, ...).ravel() == M @ x.ravel()`` for ``x`` of shape ``input_shape``, with
    ``M[(i, co), (p, ci)] = w[u, ci mod C_in/groups, co]`` where ``p = s*i + d*u - lo`` (module docstring):
    for a 3x3 input and a 2x2 kernel without padding ``M`` is the notes' 4x9 matrix whose rows are the
    kernel placed at each of the four windows. ``M.T`` is the transposed convolution and the input
    gradient (``dx = M.T dz``).

    Args:
      w: the kernel, ``(*window, C_in // groups, C_out)``, floating point.
      input_shape: one example's shape ``(*spatial, C_in)`` (no batch axis). ``(1, *spatial, C_in)`` is
        accepted too (the rank of ``w`` tells the two apart); any other batch size is refused.
      stride, padding, dilation, groups: as in :func:`jaxcnn.ops.conv`, validated by its ``conv_spec``.

    Returns:
      ``M`` of shape ``(prod(out_spatial) * C_out, prod(spatial) * C_in)``, ``w``'s dtype, rows and
      columns in row-major channels-last order. It is built from ``w`` by one scatter with index arrays
      computed by NumPy at trace time, so it is differentiable in ``w`` and works under ``jax.jit``
      (with ``input_shape`` and the configuration static).

    Raises:
      ValueError: if ``M`` would have more than ``MAX_CONV_MATRIX_ENTRIES = 2**24`` entries (128 MiB
        in float64), or for a batch size other than 1 or an invalid configuration.
      TypeError: for a non-integer ``input_shape`` or a non-floating ``w``.
    """
    w = jnp.asarray(w)
    shape = _example_shape(input_shape, w)
    spec = conv_spec(jax.ShapeDtypeStruct(shape, w.dtype), w, stride, padding, dilation, groups)
    out = output_shape(shape, w.shape[: w.ndim - 2], w.shape[-1], spec)
    size = (math.prod(out[1:]), math.prod(shape[1:]))
    entries = size[0] * size[1]
    if entries > MAX_CONV_MATRIX_ENTRIES:
        raise ConfigError(
            f"conv_matrix: the matrix for input_shape {shape[1:]} and kernel {tuple(w.shape)} would have shape "
            f"{size} = {entries} entries, more than MAX_CONV_MATRIX_ENTRIES = {MAX_CONV_MATRIX_ENTRIES}"
        )
    rows, cols, taps = _placement(shape, tuple(w.shape), out, spec)
    return jnp.zeros(size, w.dtype).at[rows, cols].add(w.ravel()[taps], unique_indices=True)
