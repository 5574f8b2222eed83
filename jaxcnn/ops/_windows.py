r"""Sliding windows as strided slices, and their adjoint: the shared core of the pooling backward passes
and the depthwise convolution.

A window of offsets ``u`` (dilated: ``d*u``) slides with stride ``s`` over ``xpad``, the input padded by
``(lo, hi)`` per spatial axis. The slice at offset ``u`` is ``x_u[i] = xpad[s*i + d*u]``; its adjoint
sends a value ``g_u[i]`` back to input position ``p = s*i + d*u - lo``. Both are written with
``lax.slice`` / ``lax.pad``, so they are differentiable again and fuse into the surrounding arithmetic.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from jax import lax

from ._padding import Pads


def window_offsets(window: tuple[int, ...], dilation: tuple[int, ...] | None = None) -> list[tuple[int, ...]]:
    """The offsets ``d*u`` of a window's taps in row-major order (the order that breaks max-pool ties)."""
    dilation = dilation or (1,) * len(window)
    return [tuple(d * u for d, u in zip(dilation, taps)) for taps in itertools.product(*(range(k) for k in window))]


def shifted_slices(
    x: jax.Array,
    offsets: list[tuple[int, ...]],
    strides: tuple[int, ...],
    pads: Pads,
    out_spatial: tuple[int, ...],
    pad_value: float = 0.0,
) -> list[jax.Array]:
    """``[x_u for u in offsets]`` with ``x_u[b, i, c] = xpad[b, s*i + u, c]``, each ``(N, *out_spatial, C)``."""
    xpad = lax.pad(x, jnp.asarray(pad_value, x.dtype), [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)])
    slices = []
    for u in offsets:
        limit = (x.shape[0], *(ui + s * (o - 1) + 1 for ui, s, o in zip(u, strides, out_spatial)), x.shape[-1])
        slices.append(lax.slice(xpad, (0, *u, 0), limit, (1, *strides, 1)))
    return slices


def place_shifted(
    per_offset: list[jax.Array],
    offsets: list[tuple[int, ...]],
    strides: tuple[int, ...],
    pads: Pads,
    in_spatial: tuple[int, ...],
) -> jax.Array:
    """The adjoint of :func:`shifted_slices` (padding cropped): ``dx[p] = sum_{s*i + u = p + lo} g_u[i]``.

    Offset ``u``'s values land at ``p = s*i + u - lo``: insert ``s - 1`` zeros between them (interior
    padding), pad ``u - lo`` before, and whatever completes the length ``n`` after; negative pads crop.
    """
    total = None
    for u, g in zip(offsets, per_offset):
        config = [(0, 0, 0)]
        for n, ui, s, (lo, _), o in zip(in_spatial, u, strides, pads, g.shape[1:-1]):
            before = ui - lo
            config.append((before, n - before - (s * (o - 1) + 1), s - 1))
        config.append((0, 0, 0))
        placed = lax.pad(g, jnp.zeros((), g.dtype), config)
        total = placed if total is None else total + placed
    return total
