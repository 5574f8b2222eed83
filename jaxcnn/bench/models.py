"""Model level: one training step of each zoo model, jaxcnn vs JAX autodiff vs Flax vs PyTorch eager (CPU).

    python -m jaxcnn.bench.models [--quick] [--repeats N] [--models lenet5 fashion_cnn ...] [--batch 128]
                                [--impls jaxcnn autodiff flax torch] [--matmul-size 2048] [--torch-threads N]
                                [--out DIR | --json PATH]

A step is forward, backward (softmax cross-entropy, mean over the batch), and an SGD update with momentum
0.9 and learning rate 0.01 (``optax.sgd`` / ``torch.optim.SGD``), float32, in train mode: batch norm
normalises with batch statistics and updates its running averages, dropout drops. The implementations:

- ``jaxcnn``: ``jaxcnn.models.<name>()``, the hand-derived VJPs;
- ``autodiff``: ``jaxcnn.models.<name>(ops=jaxcnn.reference)``, the same network on ``lax`` + JAX autodiff;
- ``flax``: the `flax.linen` twin in ``jaxcnn/bench/flax_models.py``;
- ``torch_nchw`` and ``torch_channels_last``: the PyTorch twin in ``jaxcnn/bench/torch_models.py``, eager,
  on NCHW tensors and on ``torch.channels_last`` ones; ``torch_best`` is the faster of the two.
  ``torch.set_num_threads`` is left at its default unless ``--torch-threads`` says otherwise (the JSON
  records ``torch.get_num_threads()``).
  Without torch installed (``pip install torch==2.13.0``) these columns say n/a.

All start from the same parameters (jaxcnn's init, copied into the twins) and the same batch. The JAX
steps are jitted; every implementation is timed alternately in one process (`jaxcnn.bench.timing.compare`,
medians), the parameters fed unchanged to every call (PyTorch updates its own in place). mnist1d_cnn has
no Flax/PyTorch twin and is timed for jaxcnn and autodiff only.

Step FLOPs are defined once per model as 3x the forward FLOPs that XLA's ``cost_analysis()`` counts for
the jitted autodiff (``jaxcnn.reference``) forward pass in train mode at the benchmark batch (backward
~ 2x forward: one pass for input cotangents, one for weight gradients; the SGD update is not counted).
Achieved GFLOP/s = step FLOPs / step time; "of peak" divides by the measured float32 matmul peak (the
faster of a jitted ``jnp.dot`` and ``torch.mm`` of two ``--matmul-size`` square matrices, 2 n^3 FLOPs).
Writes ``models.json`` (see `jaxcnn.bench.output` for where).
"""

from __future__ import annotations

import argparse
import importlib.util
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcnn import losses, models, reference

from . import output
from .timing import compare
from .twins import BENCHMARKED, TWINS

IMPLEMENTATIONS = ("jaxcnn", "autodiff", "flax", "torch_nchw", "torch_channels_last")
JAX_IMPLEMENTATIONS = ("jaxcnn", "autodiff", "flax")
# What --impls accepts: "torch" means both memory layouts.
CHOICES = ("jaxcnn", "autodiff", "flax", "torch")
# Columns of the summary: "torch_best" is the faster PyTorch layout.
SUMMARY = ("jaxcnn", "autodiff", "flax", "torch_best")
LEARNING_RATE, MOMENTUM = 0.01, 0.9


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def expand_choices(choices) -> tuple[str, ...]:
    """``--impls`` words as implementation names, in IMPLEMENTATIONS order (``torch``: both layouts,
    dropped when torch is not installed)."""
    chosen = set(choices)
    if "torch" in chosen:
        chosen.discard("torch")
        if torch_available():
            chosen |= {"torch_nchw", "torch_channels_last"}
    return tuple(name for name in IMPLEMENTATIONS if name in chosen)


def step_fn(model, loss, optimizer):
    """The jitted jaxcnn / autodiff training step."""

    def step(params, model_state, opt_state, x, y, key):
        def loss_of(p):
            out, new_state = model.apply(p, model_state, x, key=key, train=True)
            return loss(out, y), new_state

        (value, new_state), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, opt_state, value

    return jax.jit(step)


def flax_step_fn(module, optimizer):
    """The jitted Flax training step (batch statistics as a mutable collection, dropout from ``key``)."""

    def step(params, batch_stats, opt_state, x, y, key):
        def loss_of(p):
            out, mutated = module.apply(
                {"params": p, **batch_stats}, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"]
            )
            return optax.softmax_cross_entropy_with_integer_labels(out, y).mean(), mutated

        (value, new_stats), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, value

    return jax.jit(step)


def torch_step_fn(model, x, y):
    """The eager PyTorch training step: zero grads, forward, cross-entropy, backward, SGD update."""
    import torch

    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


@dataclass
class Prepared:
    """One model at one batch and input shape, ready to step in each requested implementation."""

    model: str
    batch: int
    input_shape: tuple[int, ...]
    params: int
    jitted: dict = field(default_factory=dict)  # JAX implementation -> (jitted step, its arguments)
    torch_steps: dict = field(default_factory=dict)  # PyTorch layout -> zero-argument step

    def candidates(self) -> dict:
        """Zero-argument callables, one full training step each, in IMPLEMENTATIONS order."""
        steps = {name: (lambda f=f, a=a: f(*a)) for name, (f, a) in self.jitted.items()}
        steps.update(self.torch_steps)
        return {name: steps[name] for name in IMPLEMENTATIONS if name in steps}


def prepare(name: str, batch: int, implementations, *, input_shape=None, seed: int = 0) -> Prepared:
    """Build the steps of ``implementations`` (names from IMPLEMENTATIONS) for model ``name``; ``input_shape``
    (without the batch axis) defaults to the model's own. Flax and PyTorch are skipped for models without
    twins."""
    default_shape, factory = BENCHMARKED[name]
    shape = tuple(input_shape or default_shape)
    optimizer = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)
    hand = factory()
    _, params, model_state = hand.init(jax.random.PRNGKey(seed), (batch, *shape))
    rng = np.random.default_rng(seed)
    x_np = rng.standard_normal((batch, *shape)).astype(np.float32)
    y_np = rng.integers(0, 10, batch)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np, jnp.int32)
    key = jax.random.PRNGKey(seed + 1)
    prepared = Prepared(name, batch, shape, models.count_params(params))
    wanted = set(implementations) if name in TWINS else set(implementations) & {"jaxcnn", "autodiff"}
    if "jaxcnn" in wanted:
        step = step_fn(hand, losses.softmax_cross_entropy, optimizer)
        prepared.jitted["jaxcnn"] = (step, (params, model_state, optimizer.init(params), x, y, key))
    if "autodiff" in wanted:
        step = step_fn(factory(ops=reference), reference.softmax_cross_entropy, optimizer)
        prepared.jitted["autodiff"] = (step, (params, model_state, optimizer.init(params), x, y, key))
    if "flax" in wanted:
        from . import flax_models

        module = flax_models.make(name)
        template = module.init(jax.random.PRNGKey(seed), x[:2], train=False)
        variables = flax_models.params_from_jaxcnn(template, params, model_state)
        batch_stats = {"batch_stats": variables["batch_stats"]} if "batch_stats" in variables else {}
        args = (variables["params"], batch_stats, optimizer.init(variables["params"]), x, y, key)
        prepared.jitted["flax"] = (flax_step_fn(module, optimizer), args)
    layouts = [layout for layout in ("torch_nchw", "torch_channels_last") if layout in wanted]
    if layouts and torch_available():
        import torch

        from . import torch_models

        x_nchw = torch.from_numpy(np.ascontiguousarray(x_np.transpose(0, 3, 1, 2)))
        y_torch = torch.from_numpy(y_np.astype(np.int64))
        for layout in layouts:
            net = torch_models.load_jaxcnn_params(torch_models.make(name, shape), params, model_state)
            x_layout = x_nchw
            if layout == "torch_channels_last":
                net = net.to(memory_format=torch.channels_last)
                x_layout = x_nchw.contiguous(memory_format=torch.channels_last)
            prepared.torch_steps[layout] = torch_step_fn(net, x_layout, y_torch)
    return prepared


def forward_flops(name: str, batch: int, input_shape=None) -> float:
    """FLOPs of the jitted autodiff (``jaxcnn.reference``) forward pass in train mode, by XLA's cost analysis."""
    default_shape, factory = BENCHMARKED[name]
    shape = (batch, *(input_shape or default_shape))
    model = factory(ops=reference)
    _, params, state = model.init(jax.random.PRNGKey(0), shape)
    forward = jax.jit(lambda p, s, x, k: model.apply(p, s, x, key=k, train=True)[0])
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    cost = forward.lower(params, state, x, jax.random.PRNGKey(1)).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
        cost = cost[0]
    return float(cost["flops"])


def step_flops(name: str, batch: int, input_shape=None) -> float:
    """The step FLOPs used for GFLOP/s: 3x the forward FLOPs (see the module docstring)."""
    return 3.0 * forward_flops(name, batch, input_shape)


def matmul_peak(size: int = 2048, repeats: int = 5) -> dict:
    """float32 matmul throughput in GFLOP/s: a jitted ``jnp.dot`` and, if installed, ``torch.mm`` of two
    ``size`` x ``size`` matrices, timed alternately; ``best_gflops`` is the faster."""
    rng = np.random.default_rng(0)
    a_np, b_np = (rng.standard_normal((size, size)).astype(np.float32) for _ in range(2))
    a, b = jnp.asarray(a_np), jnp.asarray(b_np)
    dot = jax.jit(jnp.dot)
    candidates = {"jax": lambda: dot(a, b)}
    if torch_available():
        import torch

        ta, tb = torch.from_numpy(a_np), torch.from_numpy(b_np)
        candidates["torch"] = lambda: torch.mm(ta, tb)
    times = compare(candidates, repeats=repeats)
    flops = 2.0 * size**3
    gflops = {name: flops / (ms * 1e-3) / 1e9 for name, ms in times.items()}
    best = max(gflops, key=gflops.get)
    return {
        "size": size,
        "jax_gflops": gflops["jax"],
        "torch_gflops": gflops.get("torch"),
        "best_gflops": gflops[best],
        "best": best,
    }


def _ratio(a, b):
    return None if a is None or b is None else a / b


def summarize(prepared: Prepared, times: dict, flops: float, peak_gflops: float | None) -> dict:
    """One JSON row: ms per step of every implementation (None when not run), the faster PyTorch layout,
    ratios to jaxcnn, examples/s, achieved GFLOP/s and its fraction of the matmul peak."""
    row = {
        "model": prepared.model,
        "batch": prepared.batch,
        "input_shape": list(prepared.input_shape),
        "params": prepared.params,
        "step_gflop": flops / 1e9,
    }
    for name in IMPLEMENTATIONS:
        row[f"{name}_ms"] = times.get(name)
    layouts = {k: times[k] for k in ("torch_nchw", "torch_channels_last") if k in times}
    row["torch_best_layout"] = min(layouts, key=layouts.get).removeprefix("torch_") if layouts else None
    row["torch_best_ms"] = min(layouts.values()) if layouts else None
    jaxcnn_ms = row["jaxcnn_ms"]
    row["speedup"] = _ratio(row["autodiff_ms"], jaxcnn_ms)  # autodiff / jaxcnn, the original column
    for name in ("autodiff", "flax", "torch_best"):
        row[f"{name}_over_jaxcnn"] = _ratio(row[f"{name}_ms"], jaxcnn_ms)
    for name in SUMMARY:
        ms = row[f"{name}_ms"]
        row[f"{name}_examples_per_s"] = None if ms is None else prepared.batch / ms * 1e3
        row[f"{name}_gflops"] = None if ms is None else flops / (ms * 1e-3) / 1e9
        row[f"{name}_peak_fraction"] = _ratio(row[f"{name}_gflops"], peak_gflops)
    return row


def bench_model(name: str, batch: int, repeats: int, implementations=IMPLEMENTATIONS, peak_gflops=None) -> dict:
    prepared = prepare(name, batch, implementations)
    times = compare(prepared.candidates(), repeats=repeats)
    return summarize(prepared, times, step_flops(name, batch), peak_gflops)


def _cell(value, fmt: str, suffix: str = "") -> str:
    return "n/a" if value is None else format(value, fmt) + suffix


def markdown(rows: list[dict]) -> str:
    """The model table: ms/step per implementation, ratios to jaxcnn, jaxcnn throughput and GFLOP/s."""
    batches = sorted({r["batch"] for r in rows})
    lines = [
        f"| model (batch {', '.join(map(str, batches))}) | jaxcnn ms | autodiff ms | flax ms | torch NCHW ms | "
        "torch channels-last ms | autodiff / jaxcnn | flax / jaxcnn | torch best / jaxcnn | jaxcnn examples/s | "
        "jaxcnn GFLOP/s (of peak) | torch best GFLOP/s (of peak) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def gflops(r, name):
        value, fraction = r.get(f"{name}_gflops"), r.get(f"{name}_peak_fraction")
        if value is None:
            return "n/a"
        return f"{value:.1f}" + ("" if fraction is None else f" ({fraction:.0%})")

    for r in rows:
        lines.append(
            f"| {r['model']} | {_cell(r.get('jaxcnn_ms'), '.1f')} | {_cell(r.get('autodiff_ms'), '.1f')} | "
            f"{_cell(r.get('flax_ms'), '.1f')} | {_cell(r.get('torch_nchw_ms'), '.1f')} | "
            f"{_cell(r.get('torch_channels_last_ms'), '.1f')} | {_cell(r.get('speedup'), '.2f', 'x')} | "
            f"{_cell(r.get('flax_over_jaxcnn'), '.2f', 'x')} | {_cell(r.get('torch_best_over_jaxcnn'), '.2f', 'x')} | "
            f"{_cell(r.get('jaxcnn_examples_per_s'), ',.0f')} | {gflops(r, 'jaxcnn')} | {gflops(r, 'torch_best')} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxcnn.bench.models", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(BENCHMARKED), default=list(BENCHMARKED))
    parser.add_argument("--batch", type=int, default=128, help="examples per step (default 128)")
    parser.add_argument(
        "--impls", nargs="+", choices=CHOICES, default=list(CHOICES), help="implementations (default all)"
    )
    parser.add_argument("--quick", action="store_true", help="lenet5 and mnist1d_cnn only, 5 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 11, quick 5)")
    parser.add_argument("--matmul-size", type=int, default=2048, help="square matrices of the peak (default 2048)")
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="torch.set_num_threads(N) (default: leave torch's default)"
    )
    output.add_output_arguments(parser)
    args = parser.parse_args(argv)
    names = ["lenet5", "mnist1d_cnn"] if args.quick else args.models
    repeats = args.repeats or (5 if args.quick else 11)
    implementations = expand_choices(args.impls)
    meta = {**output.library_versions(), **output.machine(), "repeats": repeats, "batch": args.batch}
    if torch_available():
        import torch

        if args.torch_threads is not None:
            torch.set_num_threads(args.torch_threads)
        meta["torch_num_threads"] = torch.get_num_threads()
    elif "torch" in args.impls:
        print("torch is not installed (pip install torch==2.13.0): its columns say n/a", flush=True)
    peak = matmul_peak(args.matmul_size, repeats=min(repeats, 5))
    meta["matmul_peak"] = peak
    meta["flops"] = "3x the XLA cost_analysis() FLOPs of the jitted autodiff forward pass (train mode)"
    print(
        f"float32 matmul {peak['size']}x{peak['size']}: jax {peak['jax_gflops']:.1f} GFLOP/s, torch "
        f"{_cell(peak['torch_gflops'], '.1f')} GFLOP/s; peak {peak['best_gflops']:.1f} GFLOP/s",
        flush=True,
    )
    rows = []
    for name in names:
        rows.append(bench_model(name, args.batch, repeats, implementations, peak["best_gflops"]))
        r = rows[-1]
        timings = "  ".join(f"{k} {r[f'{k}_ms']:.1f}" for k in IMPLEMENTATIONS if r[f"{k}_ms"] is not None)
        print(f"{name:16s} ms/step: {timings}", flush=True)
    print()
    print(markdown(rows))
    output.write_json(output.json_path(args, "models"), {"meta": meta, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
