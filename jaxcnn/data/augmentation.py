r"""Random data augmentation in JAX for image batches ``(N, H, W, C)``: jit-able, reproducible from a key.

Each random op draws one independent transform per example from its key and applies it to all
channels; each has a deterministic core that takes the transform explicitly:

- translation: :func:`pad_and_crop` zero-pads by ``pad`` and cuts ``H x W`` windows at per-example
  offsets in ``[0, 2 * pad]`` (offset ``pad`` is the identity); :func:`random_crop` draws the offsets.
- horizontal flip: :func:`flip_horizontal` reverses the W axis; :func:`random_flip` flips each example
  with probability ``p``.
- rotation: :func:`rotate` turns each image counter-clockwise (as displayed, row 0 at the top) by its
  angle in degrees about the centre ``((H - 1) / 2, (W - 1) / 2)``, sampling bilinearly with
  ``jax.scipy.ndimage.map_coordinates`` and zero outside; :func:`random_rotate` draws angles uniform
  in ``[-max_degrees, max_degrees]``.

:func:`augment` composes rotation, then translation, then flip, each with its own subkey of
``jax.random.split(key, 3)``, so enabling one op never changes another's draw. Its options are Python
values (static under ``jax.jit``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates

from ..errors import ConfigError, ConfigTypeError

__all__ = [
    "AUGMENTATIONS",
    "pad_and_crop",
    "random_crop",
    "flip_horizontal",
    "random_flip",
    "rotate",
    "random_rotate",
    "augment",
    "roll_signal",
]


def _check_batch(x: Any, op: str) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ConfigError(f"{op}: x must be a batch of images (N, H, W, C), got shape {tuple(x.shape)}")
    return x


def _check_pad(pad: Any, op: str) -> int:
    if not isinstance(pad, int) or isinstance(pad, bool) or pad < 0:
        raise ConfigError(f"{op}: pad must be a non-negative Python int, got {pad!r}")
    return pad


def pad_and_crop(x: Any, offsets: Any, pad: int) -> jax.Array:
    """Zero-pad H and W by ``pad``, then take the ``H x W`` window at ``offsets[i] = (row, col)``.

    ``offsets`` is integer ``(N, 2)`` in ``[0, 2 * pad]``; out-of-range values are clamped (as by
    ``lax.dynamic_slice``). Content moves by ``pad - offset`` pixels (down, right).
    """
    x = _check_batch(x, "pad_and_crop")
    pad = _check_pad(pad, "pad_and_crop")
    offsets = jnp.asarray(offsets)
    if offsets.shape != (x.shape[0], 2) or not jnp.issubdtype(offsets.dtype, jnp.integer):
        raise ConfigError(
            f"pad_and_crop: offsets must be integer with shape ({x.shape[0]}, 2), "
            f"got {offsets.dtype} {tuple(offsets.shape)}"
        )
    if pad == 0:
        return x
    _, h, w, c = x.shape
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    zero = jnp.zeros((), offsets.dtype)

    def window(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], zero), (h, w, c))

    return jax.vmap(window)(padded, offsets)


def random_crop(key: jax.Array, x: Any, pad: int) -> jax.Array:
    """Random translation by up to ``pad`` pixels per axis: :func:`pad_and_crop` at uniform offsets."""
    x = _check_batch(x, "random_crop")
    pad = _check_pad(pad, "random_crop")
    offsets = jax.random.randint(key, (x.shape[0], 2), 0, 2 * pad + 1, dtype=jnp.int32)
    return pad_and_crop(x, offsets, pad)


def flip_horizontal(x: Any) -> jax.Array:
    """Mirror every image left-right (reverse the W axis)."""
    return _check_batch(x, "flip_horizontal")[:, :, ::-1, :]


def random_flip(key: jax.Array, x: Any, p: float = 0.5) -> jax.Array:
    """Flip each example left-right independently with probability ``p``."""
    x = _check_batch(x, "random_flip")
    flip = jax.random.bernoulli(key, p, (x.shape[0],))
    return jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)


def rotate(x: Any, degrees: Any) -> jax.Array:
    """Rotate image ``i`` counter-clockwise by ``degrees[i]`` about its centre; bilinear, zero fill.

    Output pixel ``(r, c)`` samples the input at ``(cr + dr cos t + dc sin t, cc + dc cos t - dr sin t)``
    with ``dr = r - cr``, ``dc = c - cc``. ``degrees`` is a scalar or ``(N,)``; x must be floating.
    """
    x = _check_batch(x, "rotate")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ConfigTypeError(f"rotate: x must be floating (bilinear interpolation), got dtype {x.dtype}")
    n, h, w, _ = x.shape
    degrees = jnp.broadcast_to(jnp.asarray(degrees, x.dtype), (n,))
    theta = jnp.deg2rad(degrees)
    cr, cc = (h - 1) / 2, (w - 1) / 2
    dr = jnp.arange(h, dtype=x.dtype)[:, None] - cr
    dc = jnp.arange(w, dtype=x.dtype)[None, :] - cc

    def one(image, t):
        cos, sin = jnp.cos(t), jnp.sin(t)
        rows = cr + dr * cos + dc * sin
        cols = cc + dc * cos - dr * sin

        def channel(plane):
            return map_coordinates(plane, [rows, cols], order=1, mode="constant", cval=0.0)

        return jax.vmap(channel, in_axes=-1, out_axes=-1)(image)

    return jax.vmap(one)(x, theta).astype(x.dtype)


def random_rotate(key: jax.Array, x: Any, max_degrees: float) -> jax.Array:
    """Rotate each example by an angle drawn uniformly from ``[-max_degrees, max_degrees]``."""
    x = _check_batch(x, "random_rotate")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ConfigTypeError(f"random_rotate: x must be floating, got dtype {x.dtype}")
    degrees = jax.random.uniform(key, (x.shape[0],), x.dtype, -max_degrees, max_degrees)
    return rotate(x, degrees)


def augment(key: jax.Array, x: Any, *, crop_pad: int = 0, flip: bool = False, rotate_deg: float = 0.0) -> jax.Array:
    """Random rotation (``rotate_deg`` > 0), translation (``crop_pad`` > 0) and flip (``flip``), in that order.

    With every option at its default the batch comes back unchanged. Jit with
    ``jax.jit(augment, static_argnames=("crop_pad", "flip", "rotate_deg"))`` or close over the options.
    """
    x = _check_batch(x, "augment")
    crop_pad = _check_pad(crop_pad, "augment")
    if rotate_deg < 0:
        raise ConfigError(f"augment: rotate_deg must be >= 0, got {rotate_deg}")
    k_rotate, k_crop, k_flip = jax.random.split(key, 3)
    if rotate_deg:
        x = random_rotate(k_rotate, x, rotate_deg)
    if crop_pad:
        x = random_crop(k_crop, x, crop_pad)
    if flip:
        x = random_flip(k_flip, x)
    return x


# The image augmentations a run names (``--augment NAME``): the options of :func:`augment`.
AUGMENTATIONS: dict[str, dict[str, Any]] = {
    "standard": dict(crop_pad=2, flip=True, rotate_deg=10.0),  # translations, flips, small rotations
    "pad4-flip": dict(crop_pad=4, flip=True),  # the CIFAR recipe of He et al. (2016): pad 4, crop, flip
}


def roll_signal(key: jax.Array, x: Any, max_shift: int) -> jax.Array:
    """Random circular shift of 1-D signals ``(N, L, C)``: each example is rolled along ``L`` by its own
    integer drawn uniformly from ``[-max_shift, max_shift]`` (positive moves content to later samples),
    all channels together. MNIST-1D's own generator places each digit at a random circular offset, so
    this is the invariance its test set needs. ``max_shift`` is a static Python int (0: the identity).
    """
    x = jnp.asarray(x)
    if x.ndim != 3:
        raise ConfigError(f"roll_signal: x must be a batch of signals (N, L, C), got shape {tuple(x.shape)}")
    max_shift = _check_pad(max_shift, "roll_signal")
    if max_shift == 0:
        return x
    shifts = jax.random.randint(key, (x.shape[0],), -max_shift, max_shift + 1)
    return jax.vmap(lambda xi, s: jnp.roll(xi, s, axis=0))(x, shifts)
