"""Data-parallel throughput: the jitted LeNet-5 train step on a 1-device mesh vs an N-device mesh.

Run as ``python -m jaxcnn.bench.scaling_devices [--devices 2] [--batch-size 128] [--repeats 30]``. On a
CPU-only machine the N devices are host-platform devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``, which this script sets itself when JAX has not
started yet). Both steps are timed alternately in one process (``jaxcnn.bench.timing.compare``: median of
``--repeats`` rounds) on the same batch, so machine noise hits them alike. Prints examples/s of each and
the ratio.

On a CPU the "devices" share the same cores, and one device already runs XLA's CPU kernels on a
multi-threaded pool, so a ratio near (or below) 1 is expected there; the mesh pays off with real
accelerators.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=2, help="devices of the larger mesh (default 2)")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch size (default 128)")
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds per candidate (default 30)")
    args = parser.parse_args(argv)
    if args.devices < 2 or args.batch_size % args.devices or args.repeats < 1:
        parser.error(
            f"need --devices >= 2 dividing --batch-size, --repeats >= 1; got {args.devices}, "
            f"{args.batch_size}, {args.repeats}"
        )
    if "jax" not in sys.modules and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        flag = f"--xla_force_host_platform_device_count={args.devices}"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()

    import jax
    import numpy as np
    import optax

    from jaxcnn import distributed, models, train

    from .timing import compare

    if jax.device_count() < args.devices:
        parser.error(f"--devices {args.devices} but JAX has {jax.device_count()} device(s): {jax.devices()}")
    model, optimizer = models.lenet5(), optax.adam(1e-3)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.batch_size, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, args.batch_size).astype(np.int32)
    state0 = train.init_train_state(model, x.shape, optimizer, seed=0)
    candidates = {}
    for n in (1, args.devices):
        mesh = distributed.make_mesh(n)
        step = train.make_train_step(model, optimizer, mesh=mesh)
        state = distributed.replicate(state0, mesh)
        xb, yb = distributed.shard_batch((x, y), mesh)
        candidates[f"{n} device(s)"] = lambda step=step, state=state, xb=xb, yb=yb: step(state, xb, yb)
    ms = compare(candidates, repeats=args.repeats, warmup=3)
    print(
        f"lenet5 train step, global batch {args.batch_size}, {jax.devices()[0].platform}, "
        f"{os.cpu_count()} CPU cores, median of {args.repeats} alternating rounds:"
    )
    for name, t in ms.items():
        print(f"  {name:12s} {t:8.2f} ms/step  {args.batch_size / t * 1e3:10,.0f} examples/s")
    one, many = ms["1 device(s)"], ms[f"{args.devices} device(s)"]
    print(f"throughput ratio {args.devices} devices / 1 device: {one / many:.2f}")


if __name__ == "__main__":
    main()
