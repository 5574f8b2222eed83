"""A first layer's forward as shifted products: where it beats XLA:CPU's convolution, and what it gives a step.

    python -m jaxcnn.bench.narrow [--repeats 15] [--models fashion_cnn lenet5 resnet20] [--out DIR | --json PATH]

Two measurements under whatever route ``XLA_FLAGS`` gives this process (``jaxcnn train``'s:
``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce``):

- the forward (with a ReLU, as in a network) of convolutions with 5 to 147 window taps times input
  channels and of two 1x1 convolutions, as one convolution (:func:`jaxcnn.ops.conv.forward`) and as shifted products
  (:func:`jaxcnn.ops.conv.narrow_forward`), alternating in one process; this is what placed
  ``MAX_NARROW_PRODUCTS``;
- the training step ``jaxcnn train`` runs (Adam, batch 128) of each model in ``--models``, traced once with
  the shifted products and once with ``MAX_NARROW_PRODUCTS = 0`` (every forward one convolution),
  alternating in one process.

Writes ``narrow.json``. Nothing in the library is changed by it.
"""

from __future__ import annotations

import argparse
import importlib
from unittest import mock

import jax
import numpy as np

from . import output
from .timing import compare

conv_ops = importlib.import_module("jaxcnn.ops.conv")  # the module (jaxcnn.ops.conv is also the op's name)

# (input, kernel, stride, padding): taps x input channels = 25, 25, 27, 50, 75, 147, 5, and two 1x1
# windows (16, 32), which is_narrow leaves to the convolution
FORWARDS = [
    ((128, 28, 28, 1), (5, 5, 1, 32), 1, 2),  # fashion_cnn's first layer
    ((128, 28, 28, 1), (5, 5, 1, 6), 1, 2),  # LeNet-5's
    ((128, 32, 32, 3), (3, 3, 3, 16), 1, 1),  # resnet20's stem
    ((128, 28, 28, 2), (5, 5, 2, 32), 1, 2),
    ((128, 28, 28, 3), (5, 5, 3, 32), 1, 2),
    ((8, 224, 224, 3), (7, 7, 3, 64), 2, 3),  # torchvision's stem
    ((128, 40, 1), (5, 1, 16), 1, 2),  # MNIST-1D's first layer
    ((128, 32, 32, 16), (1, 1, 16, 32), 2, 0),  # resnet20's first projection shortcut
    ((128, 8, 8, 32), (1, 1, 32, 64), 1, 0),  # a pointwise convolution
]


def forward_case(x_shape, w_shape, stride, padding, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    x = jax.device_put(rng.standard_normal(x_shape).astype(np.float32))
    w = jax.device_put(0.1 * rng.standard_normal(w_shape).astype(np.float32))
    spec = conv_ops.conv_spec(x, w, stride, padding, 1, 1)
    forms = {"convolution": conv_ops.forward, "shifted_products": conv_ops.narrow_forward}
    jitted = {name: jax.jit(lambda x, w, f=f: jax.nn.relu(f(x, w, spec))) for name, f in forms.items()}
    times = compare({name: (lambda f=f: f(x, w)) for name, f in jitted.items()}, repeats=repeats)
    products = int(np.prod(w_shape[:-1]))
    return {"x": x_shape, "w": w_shape, "products": products, **{f"{k}_ms": v for k, v in times.items()},
            "convolution_over_shifted": times["convolution"] / times["shifted_products"]}  # fmt: skip


def step_case(name: str, repeats: int) -> dict:
    from .. import train
    from .cpu_routes import cli_step_inputs, time_steps

    model, optimizer, state, x, y = cli_step_inputs(name)
    lowered = {}
    for label, limit in [("shifted_products", conv_ops.MAX_NARROW_PRODUCTS), ("convolution", 0)]:
        with mock.patch.object(conv_ops, "MAX_NARROW_PRODUCTS", limit):  # read when the step is traced
            lowered[label] = train.make_train_step(model, optimizer).lower(state, x, y)
    convolutions = {label: program.as_text().count("stablehlo.convolution") for label, program in lowered.items()}
    times = time_steps(lowered, state, x, y, repeats)
    return {"model": name, **{f"{k}_ms": v for k, v in times.items()}, "convolutions": convolutions}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxcnn.bench.narrow", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--models", nargs="*", default=["fashion_cnn", "lenet5", "resnet20"])
    output.add_output_arguments(parser)
    args = parser.parse_args(argv)
    forwards = [forward_case(*case, args.repeats) for case in FORWARDS]
    for row in forwards:
        print(f"{row['products']:4d} products {str(row['w']):18s} convolution {row['convolution_ms']:7.2f} ms  "
              f"shifted {row['shifted_products_ms']:7.2f} ms  {row['convolution_over_shifted']:.2f}x")  # fmt: skip
    steps = [step_case(name, args.repeats) for name in args.models]
    for row in steps:
        print(f"{row['model']:12s} step: shifted products {row['shifted_products_ms']:.1f} ms, "
              f"convolution {row['convolution_ms']:.1f} ms")  # fmt: skip
    meta = {**output.library_versions(), **output.machine(), "repeats": args.repeats}
    output.write_json(output.json_path(args, "narrow"), {"meta": meta, "forwards": forwards, "steps": steps})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
