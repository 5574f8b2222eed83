"""bfloat16 on XLA:CPU: what runs faster in it on this CPU, and why fashion_cnn's step does not.

    python -m jaxcnn.bench.bfloat16_cpu [--repeats 15] [--out DIR | --json PATH]

Under whatever route ``XLA_FLAGS`` gives this process (``jaxcnn train``'s float32 route:
``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce``), alternating in one process:

- a 2048 x 2048 matrix product in float32 and in bfloat16 (summed in float32): GFLOP/s. A CPU with AMX
  runs the bfloat16 one several times faster;
- fashion_cnn's 5x5 32->64 convolution forward (128 x 14 x 14, SAME): one convolution in float32 and in
  bfloat16 (with the dtype in which XLA's emitter computes it: ``f32`` for a bfloat16 input it converted),
  and in bfloat16 as im2col and one product, the patch matrix built as one concatenation along the
  channels or in two stacking steps (the five column shifts, then the five row shifts of those); the patch
  matrix alone each way, and the product alone on a ready patch matrix;
- fashion_cnn's ``jaxcnn train`` step (Adam, batch 128) in float32, in bfloat16, and in float32 with only
  its dense layers' products in bfloat16 (``jaxcnn.ops.dense``'s product patched for the trace), all three
  under this process's route (``jaxcnn train --dtype bfloat16`` itself gives XLA's emitter everything:
  ``python -m jaxcnn.bench.cpu_routes --routes xla --dtypes bfloat16`` times that).

Writes ``bfloat16_cpu.json``. Nothing in the library is changed by it.
"""

from __future__ import annotations

import argparse
import importlib
import re
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from . import output
from .cpu_routes import CONV, convolution, emitter_dtype
from .timing import compare

dense_ops = importlib.import_module("jaxcnn.ops.dense")  # the module (jaxcnn.ops.dense is also the op's name)

MATMUL_SIZE = 2048


def _padded(x: jax.Array, k: int) -> jax.Array:
    """``x`` (N, H, W, C) with SAME padding for an odd ``k`` x ``k`` window at stride 1."""
    return jnp.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))


def patches_concatenated(x: jax.Array, k: int) -> jax.Array:
    """The (N, H, W, k*k*C) patch matrix as one concatenation of the k*k shifted images along the channels."""
    h, w, xp = x.shape[1], x.shape[2], _padded(x, k)
    return jnp.concatenate([xp[:, i : i + h, j : j + w] for i in range(k) for j in range(k)], axis=-1)


def patches_stacked(x: jax.Array, k: int) -> jax.Array:
    """The same patch matrix in two stacking steps: the k column shifts of the padded image, (N, H+k-1, W,
    k, C), then the k row shifts of that, (N, H, W, k, k, C), reshaped to (N, H, W, k*k*C)."""
    n, h, w, c = x.shape
    xp = _padded(x, k)
    columns = jnp.stack([xp[:, :, j : j + w] for j in range(k)], axis=3)
    return jnp.stack([columns[:, i : i + h] for i in range(k)], axis=3).reshape(n, h, w, k * k * c)


def im2col_forward(x: jax.Array, w: jax.Array, patches) -> jax.Array:
    """The SAME, stride-1 convolution of ``x`` (N, H, W, C) with ``w`` (k, k, C, O) as one product of the
    patch matrix with the kernel's (k*k*C, O) matrix, summed in float32."""
    k, _, c, o = w.shape
    return jnp.einsum("nhwp,po->nhwo", patches(x, k), w.reshape(k * k * c, o), preferred_element_type=jnp.float32)


def matmul_case(repeats: int) -> dict:
    rng = np.random.default_rng(0)
    a32 = jax.device_put(rng.standard_normal((MATMUL_SIZE, MATMUL_SIZE)).astype(np.float32))
    a16 = a32.astype(jnp.bfloat16)
    product = jax.jit(lambda a: jnp.matmul(a, a, preferred_element_type=jnp.float32))
    times = compare({"float32": lambda: product(a32), "bfloat16": lambda: product(a16)}, repeats=repeats)
    flops = 2 * MATMUL_SIZE**3
    return {"size": MATMUL_SIZE, **{f"{k}_ms": v for k, v in times.items()},
            **{f"{k}_gflops": flops / v / 1e6 for k, v in times.items()}}  # fmt: skip


def convolution_case(repeats: int) -> dict:
    b, n, ci, co, k = (CONV[key] for key in ("batch", "size", "c_in", "c_out", "kernel"))
    rng = np.random.default_rng(0)
    x32 = jax.device_put(rng.standard_normal((b, n, n, ci)).astype(np.float32))
    w32 = jax.device_put(rng.standard_normal((k, k, ci, co)).astype(np.float32))
    x16, w16 = x32.astype(jnp.bfloat16), w32.astype(jnp.bfloat16)
    conv32, conv16 = (jax.jit(convolution).lower(x, w).compile() for x, w in ((x32, w32), (x16, w16)))
    by_concat = jax.jit(lambda x, w: im2col_forward(x, w, patches_concatenated))
    by_stack = jax.jit(lambda x, w: im2col_forward(x, w, patches_stacked))
    concat_only, stack_only = jax.jit(lambda x: patches_concatenated(x, k)), jax.jit(lambda x: patches_stacked(x, k))
    ready = patches_stacked(x16, k).reshape(-1, k * k * ci)
    product = jax.jit(lambda p, w: jnp.matmul(p, w.reshape(-1, co), preferred_element_type=jnp.float32))
    candidates = {
        "conv_float32": lambda: conv32(x32, w32),
        "conv_bfloat16": lambda: conv16(x16, w16),
        "im2col_concatenated_bfloat16": lambda: by_concat(x16, w16),
        "im2col_stacked_bfloat16": lambda: by_stack(x16, w16),
        "patches_concatenated_bfloat16": lambda: concat_only(x16),
        "patches_stacked_bfloat16": lambda: stack_only(x16),
        "product_alone_bfloat16": lambda: product(ready, w16),
    }
    times = compare(candidates, repeats=repeats)
    return {**CONV, **{f"{key}_ms": ms for key, ms in times.items()},
            "conv_float32_emitter_dtype": emitter_dtype(conv32),
            "conv_bfloat16_emitter_dtype": emitter_dtype(conv16)}  # fmt: skip


def _bfloat16_product(a: jax.Array, b: jax.Array) -> jax.Array:
    """``dense_ops._matmul`` with both operands in bfloat16, summed in float32, back in the result dtype."""
    dtype = jnp.result_type(a, b)
    return jnp.matmul(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), preferred_element_type=jnp.float32).astype(dtype)


def step_case(repeats: int, name: str = "fashion_cnn") -> dict:
    from .. import train
    from .cpu_routes import cli_step_inputs, time_steps

    model, optimizer, state, x, y = cli_step_inputs(name)
    lowered = {
        "float32": train.make_train_step(model, optimizer).lower(state, x, y),
        "bfloat16": train.make_train_step(model, optimizer, compute_dtype=jnp.bfloat16).lower(state, x, y),
    }
    with mock.patch.object(dense_ops, "_matmul", _bfloat16_product):  # read when the step is traced
        lowered["float32_dense_bfloat16"] = train.make_train_step(model, optimizer).lower(state, x, y)
    times = time_steps(lowered, state, x, y, repeats)
    bf16_products = {k: len(re.findall(r"stablehlo.dot_general.*bf16", p.as_text())) for k, p in lowered.items()}
    return {"model": name, **{f"{k}_ms": v for k, v in times.items()}, "bfloat16_products": bf16_products}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxcnn.bench.bfloat16_cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--model", default="fashion_cnn", help="the model whose CLI step is timed")
    output.add_output_arguments(parser)
    args = parser.parse_args(argv)
    matmul, convolution = matmul_case(args.repeats), convolution_case(args.repeats)
    step = step_case(args.repeats, args.model)
    print(f"{MATMUL_SIZE}^2 product: float32 {matmul['float32_gflops']:.0f} GFLOP/s, "
          f"bfloat16 {matmul['bfloat16_gflops']:.0f} GFLOP/s")  # fmt: skip
    shape = "{kernel}x{kernel} {c_in}->{c_out} at {batch}x{size}x{size}".format(**CONV)
    for key, value in convolution.items():
        if key.endswith("_ms"):
            print(f"{shape} {key[:-3]:30s} {value:7.2f} ms")
    print(f"convolution instruction dtype: float32 input {convolution['conv_float32_emitter_dtype']}, "
          f"bfloat16 input {convolution['conv_bfloat16_emitter_dtype']}")  # fmt: skip
    print(f"{step['model']} step: " + ", ".join(f"{k[:-3]} {v:.1f} ms" for k, v in step.items() if k.endswith("_ms")))
    print(f"matrix products with bfloat16 operands: {step['bfloat16_products']}")
    meta = {**output.library_versions(), **output.machine(), "repeats": args.repeats}
    payload = {"meta": meta, "matmul": matmul, "convolution": convolution, "step": step}
    output.write_json(output.json_path(args, "bfloat16_cpu"), payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
