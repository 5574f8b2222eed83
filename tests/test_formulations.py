"""Faster formulations chosen per shape equal the textbook ones they replace (benchmarks/NOTES.md)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close

from jaxcnn import ops, reference
from jaxcnn.ops.conv import (
    MAX_WEIGHT_GRAD_CHUNKS,
    MIN_PATCH_SIZE_TO_CHUNK,
    conv_spec,
    weight_grad,
    weight_grad_chunked,
    weight_grad_chunks,
)


def test_weight_grad_chunk_policy():
    big = MIN_PATCH_SIZE_TO_CHUNK
    assert weight_grad_chunks(128, jnp.float32, big) == 8
    assert weight_grad_chunks(100, jnp.float32, big) == 7  # 6 chunks of 16 and one of 4
    assert weight_grad_chunks(31, jnp.float32, big) == 1
    assert weight_grad_chunks(4096, jnp.bfloat16, big) == MAX_WEIGHT_GRAD_CHUNKS
    assert weight_grad_chunks(128, jnp.float64, big) == 1
    assert weight_grad_chunks(128, jnp.float32, big - 1) == 1  # too little work per example (MNIST-1D convs)


CONFIGS = [
    ((37, 9, 8, 4), (3, 2, 2, 6), dict(stride=(2, 3), padding=((1, 2), (0, 1)), dilation=(1, 2), groups=2)),
    ((40, 11, 3), (5, 3, 4), dict(stride=2, padding=1)),
    ((33, 5, 4, 4, 2), (2, 3, 2, 2, 3), dict(stride=(2, 1, 1), padding="SAME")),
    ((48, 8, 8, 4), (3, 3, 1, 8), dict(padding=1, groups=4)),
]


@pytest.mark.parametrize("x_shape,w_shape,kw", CONFIGS)
@pytest.mark.parametrize("chunks", [2, 3, 7])
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-13), (np.float32, 2e-6)])
def test_chunked_weight_grad_equals_textbook(x_shape, w_shape, kw, chunks, dtype, rtol, rng):
    x = jnp.asarray(rng.standard_normal(x_shape), dtype)
    w = jnp.asarray(rng.standard_normal(w_shape), dtype)
    spec = conv_spec(x, w, kw.get("stride", 1), kw.get("padding", "VALID"), kw.get("dilation", 1), kw.get("groups", 1))
    dz = jnp.asarray(rng.standard_normal(ops.conv(x, w, **kw).shape), dtype)
    window = w_shape[: len(w_shape) - 2]
    textbook = weight_grad(x, dz, window, spec)
    assert_close(weight_grad_chunked(x, dz, window, spec, chunks), textbook, rtol, "chunked")


def test_float32_conv_gradient_uses_chunks_and_matches_autodiff(rng):
    # batch 64 in float32, 16x16 output positions x 9 taps x 8 channels per example: the chunked path
    x = jnp.asarray(rng.standard_normal((64, 32, 32, 8)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 8, 5)), jnp.float32)
    assert weight_grad_chunks(x.shape[0], x.dtype, 16 * 16 * 9 * 8) == 4
    f = lambda impl: jax.grad(lambda w: jnp.sum(jnp.sin(impl.conv(x, w, stride=2, padding=1))))(w)
    assert_close(f(ops), f(reference), 2e-5, "dw")
