"""Scaling and memory: training-step time against batch size and image size, and peak memory of a step.

    python -m jaxcnn.bench.scaling [--quick] [--parts batch image memory] [--impls jaxcnn autodiff [flax torch]]
        [--models lenet5 fashion_cnn] [--batches 1 2 4 ... 512]
        [--image-model resnet20] [--image-sizes 28 32 48 64 96 128] [--image-batch 32]
        [--memory-models lenet5 resnet20] [--memory-batch 128] [--memory-impls jaxcnn autodiff flax torch]
        [--repeats N] [--out DIR | --json PATH]

The step is the one of `jaxcnn.bench.models` (forward, backward, SGD momentum, train mode, float32); each
point times its implementations alternately (`jaxcnn.bench.timing.compare`, medians).

- ``batch``: every model in ``--models`` at every size in ``--batches`` on its own input shape.
- ``image``: ``--image-model`` on square ``S x S`` images (its own channel count) for every ``S`` in
  ``--image-sizes``, at ``--image-batch``. The default resnet20 ends in global average pooling, so its
  parameters do not depend on the image size; lenet5 and fashion_cnn grow their first dense layer.
- ``memory``, per model in ``--memory-models`` at ``--memory-batch``: XLA's compiled memory statistics
  of the jitted step (``jitted.lower(...).compile().memory_analysis()``: temporaries, arguments,
  outputs) for each JAX implementation, and the peak resident set size of a fresh subprocess per
  implementation (a process's peak only grows, so each implementation gets its own; Linux ``VmHWM``,
  else ``ru_maxrss``). The subprocess imports what it needs, initialises jaxcnn's parameters (which
  every implementation starts from) and notes its peak as the baseline; then it builds the step and
  runs it 3 times. "Added" = peak - baseline: the step's compilation (XLA/LLVM, for the JAX
  implementations), its buffers, and the twin's copy of the parameters.

The full sweep (10 batch sizes x 2 models, 6 image sizes of resnet20, memory of 2 models x 5
implementations) takes a while on 2 cores; ``--parts`` and the lists restrict it, ``--quick`` is a small
version (lenet5 only). Writes ``scaling.json`` (see `jaxcnn.bench.output` for where).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from . import output

PARTS = ("batch", "image", "memory")
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
DEFAULT_IMAGE_SIZES = (28, 32, 48, 64, 96, 128)
QUICK = dict(
    models=["lenet5"],
    batches=[1, 8, 64],
    image_model="lenet5",
    image_sizes=[28, 48],
    image_batch=16,
    memory_models=["lenet5"],
    memory_batch=32,
    repeats=3,
)


def _timed_row(prepared, repeats: int) -> dict:
    from .timing import compare

    times = compare(prepared.candidates(), repeats=repeats)
    row = {"model": prepared.model, "batch": prepared.batch, "input_shape": list(prepared.input_shape)}
    row.update({f"{name}_ms": ms for name, ms in times.items()})
    return row


def batch_sweep(model_names, batches, implementations, repeats: int) -> list[dict]:
    """Step time of each model at each batch size (its own input shape)."""
    from .models import prepare

    rows = []
    for name in model_names:
        for batch in batches:
            rows.append(_timed_row(prepare(name, batch, implementations), repeats))
            _print_row(rows[-1], f"{name} batch {batch}")
    return rows


def image_sweep(model_name: str, sizes, batch: int, implementations, repeats: int) -> list[dict]:
    """Step time of one model on square images of each size (the model's own channel count)."""
    from .models import prepare
    from .twins import BENCHMARKED

    channels = BENCHMARKED[model_name][0][-1]
    rows = []
    for size in sizes:
        prepared = prepare(model_name, batch, implementations, input_shape=(size, size, channels))
        rows.append({**_timed_row(prepared, repeats), "image_size": size})
        _print_row(rows[-1], f"{model_name} {size}x{size}x{channels} batch {batch}")
    return rows


def _print_row(row: dict, label: str) -> None:
    times = "  ".join(f"{k.removesuffix('_ms')} {v:.2f}" for k, v in row.items() if k.endswith("_ms"))
    print(f"{label:36s} ms/step: {times}", flush=True)


MEMORY_FIELDS = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes")


def xla_memory(model_name: str, batch: int, implementations) -> list[dict]:
    """XLA's compiled memory statistics of the jitted step of each JAX implementation."""
    from .models import JAX_IMPLEMENTATIONS, prepare

    prepared = prepare(model_name, batch, [i for i in implementations if i in JAX_IMPLEMENTATIONS])
    rows = []
    for impl, (step, args) in prepared.jitted.items():
        stats = step.lower(*args).compile().memory_analysis()
        row = {"model": model_name, "batch": batch, "implementation": impl}
        for name in MEMORY_FIELDS:
            row[name.removesuffix("_size_in_bytes") + "_bytes"] = int(getattr(stats, name))
        peak = getattr(stats, "peak_memory_in_bytes", None)
        row["peak_bytes"] = int(peak) if peak else None
        rows.append(row)
        print(
            f"{model_name} batch {batch} {impl:9s} XLA temp {row['temp_bytes'] / 2**20:8.1f} MiB  "
            f"arguments {row['argument_bytes'] / 2**20:6.1f} MiB  outputs {row['output_bytes'] / 2**20:6.1f} MiB",
            flush=True,
        )
    return rows


def _max_rss_bytes() -> int:
    """This process's peak resident set size: ``VmHWM`` on Linux (the peak of this program's own address
    space; ``ru_maxrss`` of a child also counts the parent's RSS at the fork that started it), else
    ``ru_maxrss`` (KiB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def rss_child(model_name: str, impl: str, batch: int, steps: int) -> dict:
    """Run in the subprocess: import, initialise jaxcnn's parameters (every implementation starts from
    them), note the peak RSS (the baseline), build the step and run it ``steps`` times, note it again."""
    import jax

    from . import models
    from .twins import BENCHMARKED

    if impl.startswith("torch"):
        import torch  # noqa: F401
    elif impl == "flax":
        from . import flax_models  # noqa: F401
    after_imports = _max_rss_bytes()
    shape, factory = BENCHMARKED[model_name]
    factory().init(jax.random.PRNGKey(0), (batch, *shape))
    baseline = _max_rss_bytes()
    prepared = models.prepare(model_name, batch, [impl])
    (step,) = prepared.candidates().values()
    from .timing import block

    for _ in range(steps):
        block(step())
    peak = _max_rss_bytes()
    return {
        "after_imports_bytes": after_imports,
        "baseline_bytes": baseline,
        "peak_bytes": peak,
        "step_bytes": peak - baseline,
    }


def process_rss(model_name: str, impl: str, batch: int, steps: int = 3) -> dict:
    """Peak RSS of a fresh ``python -m jaxcnn.bench.scaling --rss-child ...`` process for one implementation."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the checkout holding jaxcnn/, if not installed
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "jaxcnn.bench.scaling", "--rss-child", model_name, impl, str(batch), str(steps)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip().splitlines()[-1:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    row = {"model": model_name, "batch": batch, "implementation": impl, "steps": steps, **result}
    print(
        f"{model_name} batch {batch} {impl:19s} peak RSS {row['peak_bytes'] / 2**20:8.1f} MiB "
        f"(baseline {row['baseline_bytes'] / 2**20:.1f} MiB, added {row['step_bytes'] / 2**20:.1f} MiB)",
        flush=True,
    )
    return row


def memory(model_names, batch: int, implementations) -> dict:
    from .models import JAX_IMPLEMENTATIONS

    xla, rss = [], []
    for name in model_names:
        xla += xla_memory(name, batch, [i for i in implementations if i in JAX_IMPLEMENTATIONS])
        for impl in implementations:
            rss.append(process_rss(name, impl, batch))
    return {"xla": xla, "rss": rss}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxcnn.bench.scaling", description=__doc__.splitlines()[0])
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--rss-child"]:  # internal: one implementation's peak RSS, printed as JSON
        model_name, impl, batch, steps = argv[1:5]
        print(json.dumps(rss_child(model_name, impl, int(batch), int(steps))))
        return 0
    from .models import CHOICES, expand_choices
    from .twins import BENCHMARKED

    parser.add_argument("--quick", action="store_true", help="a small sweep on lenet5 only, 3 repeats")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to run (default all)")
    parser.add_argument(
        "--impls", nargs="+", choices=CHOICES, default=["jaxcnn", "autodiff"], help="timed (default jaxcnn autodiff)"
    )
    parser.add_argument(
        "--models", nargs="+", choices=sorted(BENCHMARKED), default=["lenet5", "fashion_cnn"], help="batch sweep models"
    )
    parser.add_argument("--batches", nargs="+", type=int, default=list(DEFAULT_BATCHES), help="batch sweep sizes")
    parser.add_argument("--image-model", choices=sorted(BENCHMARKED), default="resnet20", help="image sweep model")
    parser.add_argument(
        "--image-sizes", nargs="+", type=int, default=list(DEFAULT_IMAGE_SIZES), help="image sweep sizes (pixels)"
    )
    parser.add_argument("--image-batch", type=int, default=32, help="image sweep batch (default 32)")
    parser.add_argument(
        "--memory-models", nargs="+", choices=sorted(BENCHMARKED), default=["lenet5", "resnet20"], help="memory models"
    )
    parser.add_argument("--memory-batch", type=int, default=128, help="memory batch (default 128)")
    parser.add_argument(
        "--memory-impls", nargs="+", choices=CHOICES, default=list(CHOICES), help="memory implementations (default all)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per point (default 7, quick 3)")
    output.add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:  # the quick sweep replaces the lists that were left at their defaults
        for name, value in QUICK.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    if args.image_model == "mnist1d_cnn" and "image" in args.parts:
        parser.error("--image-model must be a 2-D image model, got mnist1d_cnn")
    repeats = args.repeats or 7
    impls, memory_impls = expand_choices(args.impls), expand_choices(args.memory_impls)
    meta = {**output.library_versions(), **output.machine(), "repeats": repeats, "implementations": list(impls)}
    result: dict = {"meta": meta}
    start = time.perf_counter()
    if "batch" in args.parts:
        result["batch_sweep"] = batch_sweep(args.models, args.batches, impls, repeats)
    if "image" in args.parts:
        result["image_sweep"] = image_sweep(args.image_model, args.image_sizes, args.image_batch, impls, repeats)
    if "memory" in args.parts:
        result["memory"] = memory(args.memory_models, args.memory_batch, memory_impls)
    meta["wall_s"] = time.perf_counter() - start
    output.write_json(output.json_path(args, "scaling"), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
