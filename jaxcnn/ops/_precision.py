"""Where a bfloat16 or float16 op sums: in float32, rounded once to the op's dtype.

Products summed by a convolution or a matrix product ask for a float32 result
(``preferred_element_type``); statistics and backward passes that add several terms per element (a
pool's adjoint puts one term per window offset into each input position) widen their operands first and
round the result once. Besides the accuracy, this is the fast form on XLA:CPU: it computes each
bfloat16 elementwise operation in float32 and rounds back to bfloat16 after every one, and inside a
backward pass's fusion those round trips cost more than the arithmetic (a 2x2 average pool's adjoint at
128 x 28 x 28 x 32: 12.1 ms with bfloat16 intermediates, 0.61 ms widened, the same values;
benchmarks/NOTES.md, "Pool backward passes in float32 for bfloat16"). float32 and float64 are left as
they are.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def accumulation_dtype(dtype) -> jnp.dtype:
    """float32 for bfloat16/float16, the dtype itself for float32 and float64."""
    return jnp.promote_types(dtype, jnp.float32)


def widened(x: jax.Array) -> jax.Array:
    """``x`` in :func:`accumulation_dtype` of its dtype."""
    return x.astype(accumulation_dtype(x.dtype))
