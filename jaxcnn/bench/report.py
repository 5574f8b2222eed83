"""Markdown tables and PNG plots from the benchmark JSON files.

    python -m jaxcnn.bench.report [--out DIR]

Reads whichever of ``ops.json``, ``models.json`` and ``scaling.json`` are in ``DIR`` (default
``benchmarks/results/``) and writes there ``report.md`` and the plots (matplotlib, Agg backend):
``models_step_time.png`` (ms per training step per model and implementation, bars),
``scaling_batch.png`` and ``scaling_image.png`` (step time against batch size and image size, log-log)
and ``memory.png`` (XLA's temporaries per step, peak RSS per process).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import output
from .models import IMPLEMENTATIONS
from .models import markdown as models_markdown
from .ops import markdown as ops_markdown

LABELS = {
    "jaxcnn": "jaxcnn",
    "autodiff": "JAX autodiff",
    "flax": "flax.linen",
    "torch_nchw": "PyTorch NCHW",
    "torch_channels_last": "PyTorch channels-last",
}
COLORS = {
    "jaxcnn": "tab:blue",
    "autodiff": "tab:orange",
    "flax": "tab:green",
    "torch_nchw": "tab:red",
    "torch_channels_last": "tab:purple",
}
MIB = 2**20


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _load(directory: Path, name: str) -> dict | None:
    path = directory / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _implementations(rows: list[dict]) -> list[str]:
    return [i for i in IMPLEMENTATIONS if any(r.get(f"{i}_ms") is not None for r in rows)]


def _ms(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def plot_models(rows: list[dict], path: Path) -> Path:
    """Grouped bars: ms per training step of each model (log scale), one bar per implementation."""
    plt = _pyplot()
    impls = _implementations(rows)
    width = 0.8 / max(len(impls), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(rows)), 4))
    for k, impl in enumerate(impls):
        xs = [i + (k - (len(impls) - 1) / 2) * width for i, r in enumerate(rows) if r.get(f"{impl}_ms") is not None]
        ys = [r[f"{impl}_ms"] for r in rows if r.get(f"{impl}_ms") is not None]
        ax.bar(xs, ys, width, label=LABELS[impl], color=COLORS[impl])
    ax.set_xticks(range(len(rows)), [f"{r['model']}\n(batch {r['batch']})" for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("ms per training step (lower is better)")
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_sweep(rows: list[dict], x_key: str, x_label: str, path: Path) -> Path:
    """Log-log lines of ms per step against ``x_key``, one panel per model, one line per implementation."""
    plt = _pyplot()
    from matplotlib.ticker import LogFormatter

    names = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        model_rows = sorted((r for r in rows if r["model"] == name), key=lambda r: r[x_key])
        for impl in _implementations(model_rows):
            points = [(r[x_key], r[f"{impl}_ms"]) for r in model_rows if r.get(f"{impl}_ms") is not None]
            ax.plot(*zip(*points), "o-", label=LABELS[impl], color=COLORS[impl])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        xs = [r[x_key] for r in model_rows]
        ax.set_xticks(xs, [str(x) for x in xs])  # label the measured sizes, not powers of 2
        ax.set_xticks([], minor=True)
        ax.yaxis.set_major_formatter("{x:g}")
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))  # labels some minors on short ranges
        ax.set_xlabel(x_label)
        ax.set_ylabel("ms per training step")
        ax.set_title(name)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_memory(memory: dict, path: Path) -> Path:
    """Bars: XLA temporaries of the compiled step (JAX implementations) and the peak RSS each process added."""
    plt = _pyplot()
    panels = [("xla", "temp_bytes", "XLA temporaries per step (MiB)"), ("rss", "step_bytes", "peak RSS added (MiB)")]
    panels = [p for p in panels if memory.get(p[0])]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(6 * max(len(panels), 1), 4), squeeze=False)
    for ax, (kind, key, title) in zip(axes[0], panels):
        rows = memory[kind]
        names = list(dict.fromkeys(f"{r['model']}\n(batch {r['batch']})" for r in rows))
        impls = [i for i in IMPLEMENTATIONS if any(r["implementation"] == i for r in rows)]
        width = 0.8 / max(len(impls), 1)
        for k, impl in enumerate(impls):
            mine = [r for r in rows if r["implementation"] == impl]
            xs = [names.index(f"{r['model']}\n(batch {r['batch']})") + (k - (len(impls) - 1) / 2) * width for r in mine]
            ax.bar(xs, [r[key] / MIB for r in mine], width, label=LABELS[impl], color=COLORS[impl])
        ax.set_xticks(range(len(names)), names)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.3)
        ax.legend(fontsize="small", loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def _environment(meta: dict) -> list[str]:
    parts = [f"jax {meta.get('jax', '?')}", f"flax {meta.get('flax', '?')}", f"torch {meta.get('torch') or 'n/a'}"]
    if meta.get("torch_num_threads") is not None:
        parts.append(f"{meta['torch_num_threads']} torch threads")
    if meta.get("cpu_count"):
        parts.append(f"{meta['cpu_count']} CPU cores ({meta.get('machine', '?')})")
    if meta.get("date"):
        parts.append(f"measured {meta['date']}")
    lines = ["Environment: " + ", ".join(parts) + f"; medians of {meta.get('repeats', '?')} alternating rounds."]
    peak = meta.get("matmul_peak")
    if peak:
        torch_peak = "n/a" if peak.get("torch_gflops") is None else f"{peak['torch_gflops']:.1f}"
        lines.append(
            f"float32 matmul peak ({peak['size']}x{peak['size']}): {peak['best_gflops']:.1f} GFLOP/s "
            f"(jnp.dot {peak['jax_gflops']:.1f}, torch.mm {torch_peak})."
        )
    if meta.get("flops"):
        lines.append(f"Step FLOPs: {meta['flops']}.")
    return lines


def sweep_markdown(rows: list[dict], x_key: str, x_label: str) -> str:
    impls = _implementations(rows)
    lines = [
        f"| model | {x_label} | " + " | ".join(f"{LABELS[i]} ms" for i in impls) + " | autodiff / jaxcnn |",
        "|---|---:|" + "---:|" * (len(impls) + 1),
    ]
    for r in rows:
        ratio = "n/a"
        if r.get("jaxcnn_ms") and r.get("autodiff_ms"):
            ratio = f"{r['autodiff_ms'] / r['jaxcnn_ms']:.2f}x"
        cells = " | ".join(_ms(r.get(f"{i}_ms")) for i in impls)
        lines.append(f"| {r['model']} | {r[x_key]} | {cells} | {ratio} |")
    return "\n".join(lines)


def memory_markdown(memory: dict) -> str:
    lines = []
    if memory.get("xla"):
        lines += [
            "XLA's compiled memory statistics of the jitted step (`memory_analysis()`):",
            "",
            "| model | batch | implementation | temporaries MiB | arguments MiB | outputs MiB |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for r in memory["xla"]:
            lines.append(
                f"| {r['model']} | {r['batch']} | {LABELS[r['implementation']]} | {r['temp_bytes'] / MIB:.1f} | "
                f"{r['argument_bytes'] / MIB:.1f} | {r['output_bytes'] / MIB:.1f} |"
            )
        lines.append("")
    if memory.get("rss"):
        lines += [
            "Peak resident set size of a fresh process per implementation: the baseline after the imports and "
            "jaxcnn's parameter init, the peak after building the step and running it, and the difference "
            "(compilation included):",
            "",
            "| model | batch | implementation | baseline MiB | peak MiB | added MiB |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for r in memory["rss"]:
            lines.append(
                f"| {r['model']} | {r['batch']} | {LABELS[r['implementation']]} | "
                f"{r['baseline_bytes'] / MIB:.0f} | {r['peak_bytes'] / MIB:.0f} | {r['step_bytes'] / MIB:.0f} |"
            )
    return "\n".join(lines)


def write_report(directory: str | Path) -> Path:
    """Write ``report.md`` and the PNG plots for the JSON files in ``directory``; returns the report's path."""
    directory = Path(directory)
    sections = ["# jaxcnn benchmark report", ""]
    models = _load(directory, "models")
    if models and models.get("rows"):
        rows = models["rows"]
        sections += ["## Training step", ""]
        sections += _environment(models.get("meta", {"jax": models.get("jax")})) + [""]
        sections += [models_markdown(rows), ""]
        sections += [f"![step time per model]({plot_models(rows, directory / 'models_step_time.png').name})", ""]
    ops = _load(directory, "ops")
    if ops and ops.get("rows"):
        sections += ["## Ops (forward + backward)", "", ops_markdown(ops["rows"]), ""]
    scaling = _load(directory, "scaling")
    if scaling:
        if scaling.get("batch_sweep"):
            rows = scaling["batch_sweep"]
            plot = plot_sweep(rows, "batch", "batch size", directory / "scaling_batch.png")
            sections += ["## Step time against batch size", "", sweep_markdown(rows, "batch", "batch"), ""]
            sections += [f"![scaling with batch size]({plot.name})", ""]
        if scaling.get("image_sweep"):
            rows = scaling["image_sweep"]
            plot = plot_sweep(rows, "image_size", "image size (pixels per side)", directory / "scaling_image.png")
            batch = ", ".join(sorted({str(r["batch"]) for r in rows}))
            sections += [f"## Step time against image size (batch {batch})", ""]
            sections += [sweep_markdown(rows, "image_size", "image size"), ""]
            sections += [f"![scaling with image size]({plot.name})", ""]
        if scaling.get("memory"):
            plot = plot_memory(scaling["memory"], directory / "memory.png")
            sections += ["## Memory", "", memory_markdown(scaling["memory"]), ""]
            sections += [f"![memory]({plot.name})", ""]
    path = directory / "report.md"
    path.write_text("\n".join(sections))
    print(f"wrote {path}", flush=True)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxcnn.bench.report", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", metavar="DIR", default=str(output.RESULTS_DIR), help="the JSON files' directory (default %(default)s)"
    )
    args = parser.parse_args(argv)
    directory = Path(args.out)
    if not any((directory / f"{name}.json").exists() for name in ("ops", "models", "scaling")):
        parser.error(f"no ops.json, models.json or scaling.json in {directory}")
    write_report(directory)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
