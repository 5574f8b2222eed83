"""torchvision's ImageNet preprocessing, on batches of images, in JAX (so a jitted step, ``jaxcnn eval`` and an
exported model all apply the same one).

- :func:`imagenet_eval`: ``Resize(256)`` (the shorter side to 256, the longer in proportion, bilinear with
  antialiasing), ``CenterCrop(224)``, then ``Normalize(IMAGENET_MEAN, IMAGENET_STD)`` of the ``[0, 1]`` values:
  what torchvision's ImageNet weights expect at evaluation.
- :func:`imagenet_train`: ``RandomResizedCrop(224)`` (a crop of 8%-100% of the area with aspect ratio in
  [3/4, 4/3], resized to 224x224) and ``RandomHorizontalFlip()``, then the same normalisation.

Images are channels-last ``(N, H, W, 3)``, uint8 or floating in ``[0, 1]`` (a uint8 ``k`` is ``k / 255``).
Resizing is :func:`jax.image.resize` (``"linear"``, ``antialias=True``), a triangle filter widened by the
downscale factor like PIL's bilinear resize that torchvision calls on PIL images: measured here within one
uint8 level of it; a test compares both on images with torchvision's own transforms.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ..errors import ConfigError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Preprocessing",
    "PREPROCESSING",
    "resize_shorter",
    "center_crop",
    "normalize",
    "imagenet_eval",
    "imagenet_train",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _float(images: Any) -> jax.Array:
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ConfigError(f"images must be a batch (N, H, W, C), got shape {tuple(images.shape)}")
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255
    return images.astype(jnp.promote_types(images.dtype, jnp.float32))


def resize_shorter(images: Any, size: int) -> jax.Array:
    """Every image with its shorter side ``size`` and the longer ``int(size * long / short)``
    (torchvision's ``Resize(size)``), bilinear with antialiasing."""
    x = _float(images)
    h, w = x.shape[1:3]
    new = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    return jax.image.resize(x, (x.shape[0], *new, x.shape[-1]), "linear", antialias=True)


def center_crop(images: Any, size: int) -> jax.Array:
    """The central ``size`` x ``size`` of every image (torchvision's ``CenterCrop``: the top-left corner at
    ``int(round((h - size) / 2))``)."""
    x = _float(images)
    h, w = x.shape[1:3]
    if h < size or w < size:
        raise ConfigError(f"center_crop: images of {h}x{w} are smaller than the crop {size}x{size}")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[:, top : top + size, left : left + size, :]


def normalize(images: Any, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> jax.Array:
    """``(x - mean) / std`` per channel."""
    x = _float(images)
    return (x - jnp.asarray(mean, x.dtype)) / jnp.asarray(std, x.dtype)


def imagenet_eval(images: Any, *, resize: int = 256, crop: int = 224) -> jax.Array:
    """torchvision's ImageNet evaluation transform: resize the shorter side, center crop, normalise."""
    return normalize(center_crop(resize_shorter(images, resize), crop))


def _crop_box(key: jax.Array, h: int, w: int, scale, ratio) -> tuple[jax.Array, ...]:
    """torchvision's ``RandomResizedCrop.get_params``, for one image: up to 10 tries of an area in ``scale``
    and a log-uniform aspect ratio in ``ratio``; else the centre crop of the clamped ratio."""
    area = h * w
    keys = jax.random.split(key, 4)
    target = area * jax.random.uniform(keys[0], (10,), minval=scale[0], maxval=scale[1])
    log_ratio = jax.random.uniform(keys[1], (10,), minval=math.log(ratio[0]), maxval=math.log(ratio[1]))
    aspect = jnp.exp(log_ratio)
    cw, ch = jnp.round(jnp.sqrt(target * aspect)), jnp.round(jnp.sqrt(target / aspect))
    fits = (cw > 0) & (ch > 0) & (cw <= w) & (ch <= h)
    first = jnp.argmax(fits)
    ok = fits[first]
    in_ratio = w / h
    if in_ratio < min(ratio):
        fallback_w, fallback_h = w, round(w / min(ratio))
    elif in_ratio > max(ratio):
        fallback_w, fallback_h = round(h * max(ratio)), h
    else:
        fallback_w, fallback_h = w, h
    cw = jnp.where(ok, cw[first], fallback_w).astype(jnp.int32)
    ch = jnp.where(ok, ch[first], fallback_h).astype(jnp.int32)
    top = jnp.where(ok, jax.random.randint(keys[2], (), 0, h - ch + 1), (h - ch) // 2)
    left = jnp.where(ok, jax.random.randint(keys[3], (), 0, w - cw + 1), (w - cw) // 2)
    return top, left, ch, cw


def _crop_weights(out_size: int, in_size: int, start: jax.Array, length: jax.Array) -> jax.Array:
    """The ``(out_size, in_size)`` matrix that resamples rows ``[start, start + length)`` of an axis of
    ``in_size`` to ``out_size`` the way PIL's bilinear resize does a cropped image: output ``i`` is centred at
    ``(i + 0.5) length / out_size`` in the crop, weighs each crop row ``j`` by the triangle
    ``1 - |(j + 0.5 - centre) / s|`` (``s = max(length / out_size, 1)``: widened when shrinking, which
    antialiases), rows outside the crop not at all, and the weights are normalised."""
    scale = length / out_size
    support = jnp.maximum(scale, 1.0)
    centre = (jnp.arange(out_size) + 0.5)[:, None] * scale
    j = jnp.arange(in_size)[None, :] - start
    weights = jnp.maximum(1 - jnp.abs((j + 0.5 - centre) / support), 0.0)
    weights = jnp.where((j >= 0) & (j < length), weights, 0.0)
    return weights / jnp.sum(weights, axis=1, keepdims=True)


def _resized_crop(image: jax.Array, box, size: int) -> jax.Array:
    """The ``box`` ``(top, left, height, width)`` of one ``(H, W, C)`` image resized to ``size`` x ``size``,
    as torchvision's ``resized_crop`` crops and then resizes it (two resampling matrices, so the box may be
    traced)."""
    top, left, ch, cw = (jnp.asarray(b, image.dtype) for b in box)
    rows = _crop_weights(size, image.shape[0], top, ch)
    cols = _crop_weights(size, image.shape[1], left, cw)
    return jnp.einsum("ih,hwc,jw->ijc", rows, image, cols)


def imagenet_train(key: jax.Array, images: Any, *, size: int = 224, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's ImageNet training transform: a random resized crop and a random horizontal flip per
    image (keys split from ``key``), then normalise."""
    x = _float(images)
    h, w = x.shape[1:3]
    crop_keys, flip_keys = jnp.split(jax.random.split(key, 2 * x.shape[0]), 2)
    boxes = jax.vmap(lambda k: _crop_box(k, h, w, scale, ratio))(crop_keys)
    out = jax.vmap(lambda image, box: _resized_crop(image, box, size))(x, boxes)
    flip = jax.vmap(lambda k: jax.random.bernoulli(k))(flip_keys)
    out = jnp.where(flip[:, None, None, None], out[:, :, ::-1, :], out)
    return normalize(out)


class Preprocessing(NamedTuple):
    """A run's input transform by name: ``eval(x)`` at evaluation (and in an export), ``train(key, x)``
    at each training step."""

    name: str
    eval: Any
    train: Any


PREPROCESSING = {
    "imagenet": Preprocessing("imagenet", imagenet_eval, imagenet_train),
}
