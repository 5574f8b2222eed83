r"""See inside a network: a per-layer summary with shapes, parameters, FLOPs and receptive fields, and the
intermediate feature maps of any layer.

:func:`summary` walks a model's layer tree (the descriptions jaxcnn's layers and combinators carry,
:func:`jaxcnn.layers.core.describe`) by shape arithmetic and ``jax.eval_shape``; nothing is run. Per
spatial axis the receptive field ``r`` of a unit, the jump ``j`` between neighbouring units (the product
of the strides so far) and the start (the input position, in pixels, of the centre of the first unit's
field; 0 is the centre of the first input pixel) follow the standard recurrences for a window of ``k``
taps with dilation ``d``, stride ``s`` and padding ``lo`` before::

    r_out = r_in + (k - 1) d j_in        j_out = j_in s        start_out = start_in + ((k - 1) d / 2 - lo) j_in

so unit ``i`` of a layer sees input positions ``start + i j -+ (r - 1) / 2`` (clipped to the input).
Where branches meet (``parallel`` + ``concatenate``, Inception modules, residual additions, DenseNet's
concatenations) a unit's field is the union, i.e. the largest, of its branches'. After a global pool, a
flatten or a dense layer over a flattened map every unit sees the whole input (``"all"``); after a
transposed convolution or an adaptive pool with uneven windows the field is not a box and is not given.

FLOPs are those of the forward pass for the given input shape (batch included): a multiply-add counts 2
(convolutions, dense layers), pools one operation per window element read, other layers a few per output
element. Activation memory is the sum of every layer's output size in float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax

from .errors import ConfigError
from .layers import Layer
from .layers.core import abstract_init, capture_intermediates, describe
from .layers.rules import ALL, kind_rules

__all__ = [
    "LayerSummary",
    "SummaryTotal",
    "Summary",
    "summary",
    "intermediates",
    "receptive_box",
    "COMBINATORS",
]


# per spatial axis (r, j, start); ALL; or None (not a box)
Field = Any


class LayerSummary(NamedTuple):
    """One row of :func:`summary`: a layer (or a combinator, whose totals include its children)."""

    path: str  # dotted, as in the params tree: "layer1.0.conv1"
    name: str  # the layer's kind: "Conv", "MaxPool", "named", "branches", ...
    depth: int  # nesting level (0: a child of the model)
    output_shape: Any  # a shape, or a tuple of shapes
    params: int  # trainable parameters (a combinator: of all its children)
    flops: int  # forward FLOPs for the summary's input shape
    receptive_field: tuple[float, ...] | str | None  # r per spatial axis; "all"; None: not a box
    jump: tuple[float, ...] | None  # j per spatial axis
    start: tuple[float, ...] | None  # centre of the first unit's field per spatial axis


class SummaryTotal(NamedTuple):
    params: int  # trainable parameters
    state: int  # non-trainable values (batch-norm running statistics)
    flops: int  # forward FLOPs
    activation_bytes: int  # every layer's output, float32


class Summary(NamedTuple):
    """:func:`summary`'s result: ``rows`` and ``total``; ``str()`` of it is a table."""

    model: str
    input_shape: tuple[int, ...]
    rows: list[LayerSummary]
    total: SummaryTotal
    stages: dict[str, str] | None = None  # path -> "stage k, /reduction": the backbone's stages, when asked

    def __str__(self) -> str:
        return _table(self)


# ---------------------------------------------------------------------------------------------
# Receptive fields
# ---------------------------------------------------------------------------------------------


def _identity_field(spatial: Sequence[int]) -> Field:
    return tuple((1.0, 1.0, 0.0) for _ in spatial)


def _union(fields: Sequence[Field]) -> Field:
    """The field of units fed by several branches: the smallest box holding all of theirs."""
    if any(f is None for f in fields):
        return None
    if any(f == ALL for f in fields):
        return ALL
    out = []
    for axis in zip(*fields):
        if len({j for _, j, _ in axis}) > 1:
            return None
        lo = min(start - (r - 1) / 2 for r, _, start in axis)
        hi = max(start + (r - 1) / 2 for r, _, start in axis)
        out.append((hi - lo + 1, axis[0][1], (lo + hi) / 2))
    return tuple(out)


def receptive_box(row: LayerSummary, unit: Sequence[int], input_spatial: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """The input positions ``[lo, hi]`` per axis that unit ``unit`` (spatial indices) of ``row``'s output
    sees, clipped to an input of ``input_spatial``."""
    if row.receptive_field == ALL:
        return tuple((0, n - 1) for n in input_spatial)
    if row.receptive_field is None:
        raise ConfigError(f"{row.path}: the receptive field is not a box")
    box = []
    for r, j, start, i, n in zip(row.receptive_field, row.jump, row.start, unit, input_spatial):
        centre = start + i * j
        box.append((max(0, math.ceil(centre - (r - 1) / 2)), min(n - 1, math.floor(centre + (r - 1) / 2))))
    return tuple(box)


# ---------------------------------------------------------------------------------------------
# The walk
# ---------------------------------------------------------------------------------------------


def _spatial(shape) -> tuple[int, ...]:
    return tuple(shape[1:-1])


def _leaf_field(kind: str, config: dict, in_shape, out_shape, field: Field) -> Field:
    """The field after a leaf layer, by its kind's rule (:func:`jaxcnn.layers.rules.kind_rules`, registered
    beside the layer); None for an input that is not one array."""
    if not isinstance(in_shape, tuple) or not in_shape or isinstance(in_shape[0], tuple):
        return None
    return kind_rules(kind).field(config, in_shape, out_shape, field)


def _leaf_flops(kind: str, config: dict, in_shape, out_shape, params) -> int:
    """Forward FLOPs of one leaf layer, by its kind's rule; ``weights``: its kernels' entries."""
    weights = sum(int(p.size) for p in jax.tree_util.tree_leaves(params) if p.ndim > 1)
    return kind_rules(kind).flops(config, in_shape, out_shape, weights)


def _count(tree) -> int:
    return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(tree))


def _row(path, kind, depth, out_shape, params, flops, field) -> LayerSummary:
    box = _is_box(field)
    r = tuple(f[0] for f in field) if box else (field if field == ALL else None)
    jump, start = (tuple(f[1] for f in field), tuple(f[2] for f in field)) if box else (None, None)
    return LayerSummary(path, kind, depth, out_shape, params, flops, r, jump, start)


class _Walk:
    """Walks a layer tree on shapes, collecting rows; receptive fields ride along with the shapes."""

    def __init__(self):
        self.rows: list[LayerSummary] = []
        self.key = jax.random.key(0)

    def walk(self, layer: Layer, path: str, depth: int, in_shape, field):
        """``(output shape, field, state count)`` of ``layer`` on ``in_shape``; rows for it and inside it."""
        info = describe(layer)
        if info is None or not info.children:
            return self.leaf(layer, info, path, depth, in_shape, field)
        start = len(self.rows)
        out_shape, new_field, state = self.children(info, path, depth, in_shape, field)
        inner = [r for r in self.rows[start:] if r.name not in COMBINATORS]
        params, flops = sum(r.params for r in inner), sum(r.flops for r in inner)
        self.rows.insert(start, _row(path, info.kind, depth, out_shape, params, flops, new_field))
        return out_shape, new_field, state

    def children(self, info, path, depth, in_shape, field):
        return getattr(self, "_" + info.kind)(info, path, depth, in_shape, field)

    def leaf(self, layer: Layer, info, path: str, depth: int, in_shape, field):
        kind, config = (info.kind, info.config) if info is not None else ("(unknown)", {})
        out_shape, params, state = abstract_init(layer, in_shape, self.key)
        if kind == "fan_out":
            new_field = (field,) * config["n"]
        elif kind == "concatenate":
            new_field = _union(field) if not _is_box(field) and isinstance(field, tuple) else field
        elif info is None:
            new_field = None
        else:
            new_field = _leaf_field(kind, config, in_shape, out_shape, field)
        flops = _leaf_flops(kind, config, in_shape, out_shape, params)
        self.rows.append(_row(path, kind, depth, out_shape, _count(params), flops, new_field))
        return out_shape, new_field, _count(state)

    # one method per combinator kind ------------------------------------------------------------

    def _sequence(self, children, path, depth, shape, field):
        state = 0
        for name, child in children:
            shape, field, s = self.walk(child, _join(path, name), depth + 1, shape, field)
            state += s
        return shape, field, state

    def _serial(self, info, path, depth, shape, field):
        return self._sequence(info.children, path, depth, shape, field)

    def _named(self, info, path, depth, shape, field):
        taps, heads = info.config.get("taps", {}), dict(info.children)
        state, tapped = 0, {}
        for name, child in info.children:
            if name in taps:
                continue
            shape, field, s = self.walk(child, _join(path, name), depth + 1, shape, field)
            state += s
            for tap in (t for t, after in taps.items() if after == name):
                tapped[tap] = self.walk(heads[tap], _join(path, tap), depth + 1, shape, field)
                state += tapped[tap][2]
        if not taps:
            return shape, field, state
        return (shape, *(tapped[t][0] for t in taps)), field, state

    def _each(self, info, path, depth, shapes, fields):
        """Every child on its own input: ``(outputs, fields, state)``."""
        outs, new_fields, state = [], [], 0
        for (name, child), shape, field in zip(info.children, shapes, fields):
            out, f, s = self.walk(child, _join(path, name), depth + 1, shape, field)
            outs.append(out)
            new_fields.append(f)
            state += s
        return outs, new_fields, state

    def _parallel(self, info, path, depth, shapes, fields):
        fields = fields if isinstance(fields, tuple) and not _is_box(fields) else (fields,) * len(shapes)
        outs, new_fields, state = self._each(info, path, depth, shapes, fields)
        return tuple(outs), tuple(new_fields), state

    def _branches(self, info, path, depth, shape, field):
        n = len(info.children)
        outs, fields, state = self._each(info, path, depth, (shape,) * n, (field,) * n)
        return (*outs[0][:-1], sum(o[-1] for o in outs)), _union(fields), state

    def _residual(self, info, path, depth, shape, field):
        outs, fields, state = self._each(info, path, depth, (shape, shape), (field, field))
        return outs[0], _union(fields), state

    def _residual_block(self, info, path, depth, shape, field):
        body = [(n, c) for n, c in info.children if n != "downsample"]
        out, body_field, state = self._sequence(body, path, depth, shape, field)
        skip_field = field
        for name, child in info.children:
            if name == "downsample":
                _, skip_field, s = self.walk(child, _join(path, name), depth + 1, shape, field)
                state += s
        return out, _union([body_field, skip_field]), state

    def _dense_concat(self, info, path, depth, shape, field):
        ((_, child),) = info.children
        child_info = describe(child)
        if child_info is not None and child_info.children:  # the body's layers directly under this row
            out, f, state = self.children(child_info, path, depth, shape, field)
        else:
            out, f, state = self._sequence([("", child)], path, depth, shape, field)
        return (*out[:-1], shape[-1] + out[-1]), _union([field, f]), state


def _is_box(field) -> bool:
    """A per-axis tuple of ``(r, j, start)`` (not ``"all"``, None, or a tuple of several fields)."""
    return isinstance(field, tuple) and all(
        isinstance(axis, tuple) and len(axis) == 3 and all(isinstance(v, (int, float)) for v in axis) for axis in field
    )


COMBINATORS = {"serial", "named", "parallel", "branches", "residual", "residual_block", "dense_concat"}


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path and name else path or name


def summary(model: Layer, input_shape: Sequence[int], *, name: str = "", stages: bool = False) -> Summary:
    """One row per layer of ``model`` on ``input_shape`` (batch axis included, e.g. ``(1, 224, 224, 3)``),
    nested combinators with their dotted paths, and a total; ``print()`` it for a table. Computed by
    shape arithmetic and ``jax.eval_shape``: nothing is run (see the module docstring). ``stages``: mark
    where each of the backbone's stages ends (:func:`jaxcnn.models.backbone`)."""
    input_shape = tuple(int(d) for d in input_shape)
    walk = _Walk()
    info = describe(model)
    field = _identity_field(_spatial(input_shape))
    if info is not None and info.children:  # the model's own children are the top-level rows
        _, _, state = walk.children(info, "", -1, input_shape, field)
    else:
        _, _, state = walk.walk(model, "", 0, input_shape, field)
    leaves = [r for r in walk.rows if r.name not in COMBINATORS]
    params = sum(r.params for r in leaves)
    flops = sum(r.flops for r in leaves)
    memory = 4 * sum(_size(r.output_shape) for r in leaves)
    marks = None
    if stages:
        from .models.backbone import stages as backbone_stages

        found = backbone_stages(model, input_shape)
        marks = {info.path: f"stage {k + 1}, /{info.reduction}" for k, info in enumerate(found)}
    total = SummaryTotal(params, state, flops, memory)
    return Summary(name or getattr(model, "__name__", ""), input_shape, walk.rows, total, marks)


def _size(shape) -> int:
    if shape and isinstance(shape[0], tuple):
        return sum(_size(s) for s in shape)
    return math.prod(shape) if shape else 0


# ---------------------------------------------------------------------------------------------
# Intermediate outputs
# ---------------------------------------------------------------------------------------------


def intermediates(
    model: Layer, params: Any, state: Any, x: Any, paths: Sequence[str] | None = None, *, train: bool = False
) -> dict:
    """The outputs of the layers at ``paths`` (dotted, as in :func:`summary`; all when None) for input
    ``x``, plus the model's output under ``""``. Differentiable (``jax.grad`` through any of them)."""
    with capture_intermediates() as outputs:
        y, _ = model.apply(params, state, x, train=train)
    outputs[""] = y
    if paths is None:
        return dict(outputs)
    missing = [p for p in paths if p not in outputs]
    if missing:
        raise KeyError(f"no layer at path {missing[0]!r}; the model's paths include {sorted(outputs)[:12]}...")
    return {p: outputs[p] for p in paths}


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


def _fmt_shape(shape) -> str:
    if shape and isinstance(shape[0], tuple):
        return " ".join(_fmt_shape(s) for s in shape)
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _fmt_axes(values) -> str:
    if values is None:
        return "-"
    if values == ALL:
        return "all"
    return "x".join(f"{v:g}" for v in values)


def _fmt_count(n: int) -> str:
    return f"{n:,}" if n < 10**9 else f"{n / 1e9:,.2f} G"


def _table(s: Summary) -> str:
    header = ("layer", "kind", "output shape", "params", "FLOPs", "receptive field", "jump", "start")
    if s.stages is not None:
        header = (*header, "stage")
    lines, seen = [], set()  # (a DenseNet layer's row, then its body's at the same path: marked once)
    for r in s.rows:
        indent = "  " * max(r.depth, 0)
        label = indent + (r.path.rsplit(".", 1)[-1] if r.path else "(model)")
        lines.append(
            (
                label,
                r.name,
                _fmt_shape(r.output_shape),
                f"{r.params:,}",
                _fmt_count(r.flops),
                _fmt_axes(r.receptive_field),
                _fmt_axes(r.jump),
                _fmt_axes(r.start),
                *(() if s.stages is None else (s.stages.get(r.path, "") if r.path not in seen else "",)),
            )  # fmt: skip
        )
        seen.add(r.path)
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def fmt(row):  # names, kinds, shapes and stages to the left, numbers to the right
        cells = (c.ljust(w) if i < 3 or i == 8 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        return "  ".join(cells).rstrip()

    t = s.total
    foot = (
        f"total: {t.params:,} parameters, {t.state:,} non-trainable state values, "
        f"{_fmt_count(t.flops)} forward FLOPs, {t.activation_bytes / 2**20:,.1f} MiB of activations (float32)"
    )
    title = f"{s.model or 'model'} on input {_fmt_shape(s.input_shape)}"
    return "\n".join([title, fmt(header), "-" * len(fmt(header)), *map(fmt, lines), foot])
