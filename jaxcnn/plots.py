"""PNG plots of a training run (matplotlib, Agg backend): curves, first-layer filters, a confusion matrix,
and saliency maps computed through the hand-derived VJPs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._files import atomic_write

__all__ = [
    "plot_curves",
    "plot_filters",
    "plot_confusion",
    "saliency",
    "plot_saliency",
    "first_kernel",
    "plot_run",
    "feature_maps",
    "plot_feature_maps",
    "unit_saliency",
    "plot_receptive_field",
]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    """Write ``fig`` as a PNG atomically (a full disk is one error naming ``path``) and close it."""
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        _pyplot().close(fig)
    return Path(path)


def plot_curves(history: Sequence[dict], path: str | Path) -> Path:
    """Training loss/accuracy per logged step and, per epoch, validation (and test, when it was evaluated)
    loss/accuracy, against epochs; the best validation epoch marked."""
    plt = _pyplot()
    train = [r for r in history if "loss" in r]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot([r["epoch"] for r in train], [r["loss"] for r in train], label="train")
    ax_acc.plot([r["epoch"] for r in train], [r["accuracy"] for r in train], label="train")
    for split in ("val", "test"):
        rows = [r for r in history if f"{split}_loss" in r]
        if rows:
            epochs = [r["epoch"] for r in rows]
            ax_loss.plot(epochs, [r[f"{split}_loss"] for r in rows], "o-", label=split)
            ax_acc.plot(epochs, [r[f"{split}_accuracy"] for r in rows], "o-", label=split)
    val = [r for r in history if "val_accuracy" in r]
    if val:
        best = max(val, key=lambda r: r["val_accuracy"])  # the first of equals, as fit chooses
        ax_acc.axvline(best["epoch"], color="grey", linestyle=":", label=f"best val (epoch {best['epoch']:g})")
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def first_kernel(params: Any) -> np.ndarray | None:
    """The first convolution kernel in the params tree (flattening order), ``(*window, C_in, C_out)``."""
    for leaf in jax.tree_util.tree_leaves(params):
        if np.ndim(leaf) in (3, 4, 5):
            return np.asarray(leaf)
    return None


def plot_filters(params: Any, path: str | Path) -> Path | None:
    """The first conv layer's filters as a grid of images (2-D kernels; in colour for 3-channel inputs)
    or curves (1-D kernels)."""
    kernel = first_kernel(params)
    if kernel is None:
        return None
    plt = _pyplot()
    if kernel.ndim == 5:  # 3-D kernels: show the middle depth slice
        kernel = kernel[kernel.shape[0] // 2]
    n = kernel.shape[-1]
    cols = min(n, 8)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.4 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        if kernel.ndim == 3:  # 1-D: (width, C_in, C_out)
            ax.plot(kernel[:, :, i])
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
        elif kernel.shape[2] == 3:  # RGB filters in colour, each stretched to [0, 1]
            k = kernel[:, :, :, i]
            ax.imshow((k - k.min()) / (np.ptp(k) or 1.0))
        else:
            ax.imshow(kernel[:, :, :, i].mean(axis=-1), cmap="RdBu_r")
        ax.set_title(str(i), fontsize=8)
    fig.suptitle("first-layer filters")
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, path: str | Path, class_names: Sequence[str] | None = None
) -> Path:
    """Counts of (true, predicted) class pairs."""
    plt = _pyplot()
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    image = ax.imshow(matrix, cmap="Blues")
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    ax.set_xticks(range(num_classes), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(num_classes), names, fontsize=8)
    for i in range(num_classes):
        for j in range(num_classes):
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                fontsize=6,
                color="white" if matrix[i, j] > matrix.max() / 2 else "black",
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(image)
    fig.tight_layout()
    return _save(fig, path)


def saliency(model, params, model_state, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Gradient of each example's top output with respect to its input, through the hand-derived VJPs.

    Returns ``(grads, top_class)``; ``grads`` has ``x``'s shape.
    """

    def top_score(xi):
        out, _ = model.apply(params, model_state, xi[None], train=False)
        logits = out[0] if isinstance(out, tuple) else out  # (logits, *aux): the logits
        return jnp.max(logits[0]), jnp.argmax(logits[0])

    grads, top = jax.vmap(jax.grad(top_score, has_aux=True))(x)
    return grads, top


def plot_saliency(model, params, model_state, x: np.ndarray, path: str | Path) -> Path:
    """Inputs (top row) and ``|d top logit / d input|`` (bottom row) for a few examples."""
    plt = _pyplot()
    grads, top = saliency(model, params, model_state, jnp.asarray(x))
    grads, x = np.abs(np.asarray(grads)), np.asarray(x)
    n = len(x)
    fig, axes = plt.subplots(2, n, figsize=(1.8 * n, 3.8), squeeze=False)
    for i in range(n):
        if x.ndim == 3:  # 1-D signals
            axes[0, i].plot(x[i, :, 0])
            axes[1, i].plot(grads[i, :, 0], color="tab:red")
        else:
            axes[0, i].imshow(x[i, ..., 0], cmap="gray")
            axes[1, i].imshow(grads[i].max(axis=-1), cmap="hot")
        axes[0, i].set_title(f"pred {int(top[i])}", fontsize=8)
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("saliency")
    fig.tight_layout()
    return _save(fig, path)


def plot_run(out: Path, model: Any, state: Any, data: Any, result: Any) -> list[Path | None]:
    """The plots of a finished ``jaxcnn train`` run in ``out``: curves, filters, confusion, saliency."""
    out = Path(out)
    return [
        plot_curves(result.history, out / "curves.png"),
        plot_filters(state.params, out / "filters.png"),
        plot_confusion(
            data.y_test,
            result.test["predictions"],
            data.num_classes,
            out / "confusion.png",
            getattr(data, "class_names", None),
        ),  # fmt: skip
        plot_saliency(model, state.params, state.model_state, data.x_test[:6], out / "saliency.png"),
    ]


# ---------------------------------------------------------------------------------------------
# Inside a network: feature maps and what one unit sees
# ---------------------------------------------------------------------------------------------


def _one_example(x: Any) -> jax.Array:
    x = jnp.asarray(x)
    return x if x.ndim >= 3 and x.shape[0] == 1 else x[None]


def feature_maps(model, params, state, x, layers: Sequence[str]) -> dict[str, np.ndarray]:
    """Every channel of the layers at ``layers`` (dotted paths, as :func:`jaxcnn.summary` lists them) for
    one input ``x`` (``(H, W, C)`` or ``(1, H, W, C)``): ``{path: (*spatial, channels)}``."""
    from .inspect import intermediates

    outputs = intermediates(model, params, state, _one_example(x), list(layers))
    return {path: np.asarray(out[0]) for path, out in outputs.items()}


def plot_feature_maps(
    model, params, state, x, layers: Sequence[str], path: str | Path, *, max_channels: int = 32
) -> Path:
    """The input and every channel (up to ``max_channels``) of each layer in ``layers``, one row block per
    layer."""
    plt = _pyplot()
    maps = feature_maps(model, params, state, x, layers)
    cols = 8
    blocks = [(name, m) for name, m in maps.items()]
    heights = [1] + [-(-min(m.shape[-1], max_channels) // cols) for _, m in blocks]
    fig, axes = plt.subplots(sum(heights), cols, figsize=(1.3 * cols, 1.35 * sum(heights)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    image = np.asarray(_one_example(x))[0]
    axes[0, 0].imshow(_displayable(image), cmap=None if image.shape[-1] == 3 else "gray")
    axes[0, 0].set_title("input", fontsize=8)
    row = 1
    for (name, m), h in zip(blocks, heights[1:]):
        for c in range(min(m.shape[-1], max_channels)):
            ax = axes[row + c // cols, c % cols]
            if m.ndim == 3:
                ax.imshow(m[..., c], cmap="viridis")
            else:
                ax.plot(m[..., c])
            ax.set_title(f"{name} [{c}]" if c == 0 else str(c), fontsize=7, loc="left")
        row += h
    fig.tight_layout()
    return _save(fig, path)


def _displayable(image: np.ndarray) -> np.ndarray:
    """An image stretched to [0, 1]; single-channel images as 2-D."""
    image = (image - image.min()) / (np.ptp(image) or 1.0)
    return image if image.shape[-1] == 3 else image[..., 0]


def unit_saliency(model, params, state, x, layer: str, unit: Sequence[int], channel: int) -> np.ndarray:
    """``d output[layer][0, *unit, channel] / d x`` through the hand-derived VJPs: what one unit of a
    layer sees of input ``x`` (``(H, W, C)`` or ``(1, H, W, C)``), with the input's shape (no batch)."""
    from .inspect import intermediates

    def unit_value(xb):
        return intermediates(model, params, state, xb, [layer])[layer][(0, *unit, channel)]

    return np.asarray(jax.grad(unit_value)(_one_example(x))[0])


def plot_receptive_field(model, params, state, x, layer: str, unit: Sequence[int], path: str | Path) -> Path:
    """The input, ``|d unit / d input|`` for the most active channel of ``unit`` in ``layer``, and the
    unit's computed receptive field (:func:`jaxcnn.summary`) drawn as a box on both."""
    from matplotlib.patches import Rectangle

    from .inspect import intermediates, receptive_box, summary

    plt = _pyplot()
    xb = _one_example(x)
    activation = np.asarray(intermediates(model, params, state, xb, [layer])[layer][(0, *unit)])
    channel = int(np.argmax(activation))
    grad = np.abs(unit_saliency(model, params, state, xb, layer, unit, channel)).max(axis=-1)
    row = next(r for r in summary(model, xb.shape).rows if r.path == layer)
    (top, bottom), (left, right) = receptive_box(row, unit, xb.shape[1:-1])
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
    axes[0].imshow(_displayable(np.asarray(xb[0])), cmap=None if xb.shape[-1] == 3 else "gray")
    axes[1].imshow(grad, cmap="hot")
    for ax, title in zip(axes, ("input", f"|d unit / d input|, channel {channel}")):
        ax.add_patch(
            Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False, ec="cyan", lw=1.5)
        )
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{layer} unit {tuple(unit)}: receptive field {bottom - top + 1}x{right - left + 1} (box)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
