r"""Differentially private training: per-example gradient norms from each layer's input and output
cotangent, the clipped sum without per-example gradients, Poisson sampling and a privacy accountant.

**Per-example norms.** For a convolution or dense layer ``z = U w`` (``U_i`` the ``T x D`` matrix of example
``i``'s input patches, ``T`` output positions, ``D`` = window size x input channels per group), the
example's weight gradient is ``G_i = U_i^T dZ_i``: its input against its output cotangent, the two pieces
the hand-derived weight gradient already holds. Its squared norm needs no ``G_i``::

    ||G_i||^2 = sum_{t, t'} (u_t . u_t') (dz_t . dz_t')       (the "ghost norm"; Goodfellow 2015 for T = 1,
                                                              Li et al. 2021 / Bu et al. 2022 for T > 1)
    ||G_i||^2 = ||a_i||^2 ||dz_i||^2                          (a dense layer on one vector per example)

costing ``2 T^2 (D + p)`` per example against ``T D p`` for forming ``G_i`` (``p`` output channels per
group). Each layer takes the cheaper (Bu et al.'s mixed ghost clipping: ghost where ``2 T^2 <= D p``);
``ghost="always"|"never"`` forces one. A conv's patches ``U_i`` are taken a chunk of examples at a time
(:data:`CHUNK_BYTES`), so they are multiplied while still in cache. A bias's gradient is ``sum_t dz_t``;
group norm's scale and offset are ``sum_t dy_t xhat_t`` and ``sum_t dy_t`` per channel, from its saved
input. A convolution of a weight-standardised kernel (``Conv(standardize=True)``) forms its ``G_i`` and maps
each through the standardisation's VJP (a per-channel projection, linear in ``G_i``) before the norm.

The inputs and cotangents come from one forward and backward pass of the model built on a namespace of
ops (:func:`jaxcnn.layers.bind`) whose ``conv``, ``dense`` and ``group_norm`` record their input and add a
zero "tap" to their output: the gradient of the summed per-example losses with respect to a tap is that
layer's output cotangent, example by example (no layer may couple the examples: batch norm in train mode
is refused). Every parameter must belong to one of those layers; any other is refused by name.

**The clipped sum** ``sum_i c_i g_i`` with ``c_i = min(1, C / (||g_i|| + 1e-6))`` needs no ``g_i`` either:
for each layer it is ``sum_i c_i U_i^T dZ_i``, the layer's ordinary weight gradient (the op's own
hand-derived VJP) given the weighted cotangent ``c_i dZ_i``, or ``sum_i c_i G_i`` where the norms formed the
``G_i`` -- the book-keeping form (Bu et al., 2023), which reuses the inputs and cotangents (and gradients)
the norms came from, so a DP step is one forward and one backward pass plus the norms. The two-pass form
(``method="two-pass"``) differentiates ``sum_i c_i loss_i`` in a second backward pass instead.
:func:`noisy_gradient` adds ``N(0, sigma^2 C^2)`` to the sum and divides by the expected batch size ``q N``
(DP-SGD as Abadi et al., 2016, publish it).

**Poisson sampling** (:func:`poisson_batch`): each example joins a step's batch independently with
probability ``q``, in a fixed-capacity batch with a mask, so the step compiles once. **The accountant**
(:func:`epsilon`, :func:`calibrate_noise`) is Google's ``dp-accounting`` (``pip install jaxcnn[dp]``):
PLD by default, RDP on request.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from . import ops as _ops
from .errors import ConfigError, MissingDependencyError
from .layers import Layer
from .ops._windows import shifted_slices
from .ops.conv import conv_spec
from .ops.norm import WEIGHT_STANDARDIZE_EPSILON, group_xhat, standardize_transpose, standardized

__all__ = [
    "per_example_cross_entropy",
    "per_example_grad_norms",
    "augmented_views",
    "clipped_grad_sum",
    "clipped_sum_and_outputs",
    "ClippedSum",
    "DPConfig",
    "add_noise",
    "noisy_gradient",
    "make_dp_step",
    "poisson_capacity",
    "poisson_batch",
    "epsilon",
    "calibrate_noise",
]

Build = Callable[[Any], Layer]  # ops namespace -> the model built on it (e.g. lambda ops: models.tanh_cnn(ops=ops))
GHOST = ("auto", "always", "never")


def per_example_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``-log softmax(logits)[label]`` per example, shape ``(N,)``: the per-example loss DP-SGD clips."""
    log_p = _ops.log_softmax(logits, axis=-1)  # its hand-derived VJP
    return -jnp.take_along_axis(log_p, jnp.asarray(labels)[:, None], axis=-1)[:, 0]


# ---------------------------------------------------------------------------------------------
# Recording each layer's input and output cotangent
# ---------------------------------------------------------------------------------------------


class _Call(NamedTuple):
    """One recorded op call: its kind, the parameter paths it used by role, and its configuration;
    ``standardized``: a conv's kernel was ``weight_standardize(params["w"], epsilon=standardized)``."""

    op: str
    params: dict  # role ("w", "b", "scale", "offset") -> params path
    config: dict
    standardized: float | None = None


class _TapOps:
    """:mod:`jaxcnn.ops`, except that ``conv``, ``dense`` and ``group_norm`` record their input and the
    params they were given, and add ``taps[k]`` (zeros) to the ``k``-th call's output; a conv may be given
    ``weight_standardize`` of a parameter."""

    def __init__(self, paths: dict[int, str], taps: list | None = None):
        self._paths, self.taps, self.calls, self.inputs, self.out_shapes = paths, taps, [], [], []
        self._standardized: dict[int, tuple] = {}  # id(kernel) -> (kernel, its parameter's path, epsilon)

    def __getattr__(self, name: str) -> Any:
        return getattr(_ops, name)

    def _path(self, array: Any, op: str) -> str:
        if id(array) not in self._paths:
            raise ConfigError(f"privacy: {op} was given an array that is not a parameter (cast or computed)")
        return self._paths[id(array)]

    def _record(self, op: str, x: Any, y: jax.Array, params: dict, config: dict, standardized=None) -> jax.Array:
        k = len(self.calls)
        paths = {role: a if isinstance(a, str) else self._path(a, op) for role, a in params.items()}
        self.calls.append(_Call(op, paths, config, standardized))
        self.inputs.append(x)
        self.out_shapes.append(jax.ShapeDtypeStruct(y.shape, y.dtype))
        return y if self.taps is None else y + self.taps[k]

    def weight_standardize(self, w, *, epsilon=WEIGHT_STANDARDIZE_EPSILON):
        y = _ops.weight_standardize(w, epsilon=epsilon)
        self._standardized[id(y)] = (y, self._path(w, "weight_standardize"), epsilon)  # y kept: its id stays
        return y

    def conv(self, x, w, **config):
        if id(w) in self._standardized:
            _, path, epsilon = self._standardized[id(w)]
            return self._record("conv", x, _ops.conv(x, w, **config), {"w": path}, config, epsilon)
        return self._record("conv", x, _ops.conv(x, w, **config), {"w": w}, config)

    def dense(self, x, w, b=None):
        return self._record("dense", x, _ops.dense(x, w, b), {"w": w} | ({} if b is None else {"b": b}), {})

    def group_norm(self, x, scale, offset, **config):
        y = _ops.group_norm(x, scale, offset, **config)
        return self._record("group_norm", x, y, {"scale": scale, "offset": offset}, config)

    def batch_norm(self, x, scale, offset, **config):
        path = self._paths.get(id(scale), "?").rsplit(".", 1)[0]
        raise ConfigError(
            f"privacy: the BatchNorm at params '{path}' normalises with statistics of the whole batch, so one "
            "example's gradient depends on the others and cannot be clipped alone; use GroupNorm "
            "(jaxcnn.layers.GroupNorm) instead"
        )


def _by_path(params: Any) -> dict[str, Any]:
    """Every leaf of ``params`` by its dotted path (``"0.kernel"``, ``"layer1.0.conv1.kernel"``)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): leaf for path, leaf in flat}


def _paths(params: Any) -> dict[int, str]:
    return {id(leaf): path for path, leaf in _by_path(params).items()}


def _forward(model: Build, params, state, x, key, taps) -> tuple[Any, _TapOps]:
    ops = _TapOps(_paths(params), taps)
    out, _ = model(ops).apply(params, state, x, key=key, train=True)
    return out, ops


class _Tape(NamedTuple):
    """One forward and backward pass: every tapped call, its input, its per-example output cotangent
    (of the summed per-example losses), and the model's outputs."""

    calls: list[_Call]
    inputs: list
    cotangents: list
    outputs: Any


def _record(model: Build, loss, params, state, x, y, key, augmult: int = 1) -> _Tape:
    """The tape of ``sum_i loss_i``, ``loss_i`` the mean of example ``i``'s ``augmult`` rows' losses."""
    probe, x = {}, jnp.asarray(x)

    def shapes(params, x):
        out, ops = _forward(model, params, state, x, key, None)
        probe["calls"], probe["shapes"] = ops.calls, ops.out_shapes
        return out

    jax.eval_shape(shapes, params, x)

    def total(taps):
        out, ops = _forward(model, params, state, x, key, taps)
        return jnp.sum(loss(out, y)) / augmult, (ops.inputs, out)

    zeros = [jnp.zeros(s.shape, s.dtype) for s in probe["shapes"]]  # the taps
    cotangents, (inputs, out) = jax.grad(total, has_aux=True)(zeros)
    return _Tape(probe["calls"], inputs, cotangents, out)


# ---------------------------------------------------------------------------------------------
# Per-layer squared norms
# ---------------------------------------------------------------------------------------------


CHUNK_BYTES = 4 * 2**20
"""The per-layer norms run over the examples in chunks whose input patches (or Gram matrices) take about this
many bytes, so a chunk's patches are still in cache when they are multiplied; a whole batch's would be
written to memory and read back (tanh_cnn's first conv at batch 2048: 88 MB). benchmarks/NOTES.md has the
times."""


def _ghost(u: jax.Array, dz: jax.Array) -> jax.Array:
    """``sum_{t,t'} (u_t . u_t')(dz_t . dz_t')`` per example (and group): ``u`` ``(N, G, D, T)``,
    ``dz`` ``(N, T, G, p)``."""
    if u.shape[-1] == 1:  # one position: ||u||^2 ||dz||^2
        return jnp.sum(jnp.sum(u * u, (2, 3)) * jnp.sum(dz * dz, (1, 3)), axis=1)
    gram_u = jnp.einsum("ngdt,ngds->ngts", u, u)
    gram_z = jnp.einsum("ntgp,nsgp->ngts", dz, dz)
    return jnp.sum(gram_u * gram_z, axis=(1, 2, 3))


def _formed(u: jax.Array, dz: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``||G_i||^2`` and ``G_i = U_i^T dZ_i`` ``(N, G, D, p)``: the layer's per-example gradient, formed
    (the book-keeping sum weights it by the clip factors instead of taking the weight gradient again)."""
    g = jnp.einsum("ngdt,ntgp->ngdp", u, dz)
    return jnp.sum(g * g, axis=(1, 2, 3)), g


def _uses_ghost(t: int, d: int, p: int, ghost: str) -> bool:
    """Bu et al.'s rule (``ghost="auto"``): the ghost norm where ``2 T^2 <= D p``, else the formed gradient."""
    return ghost == "always" or (ghost == "auto" and 2 * t * t <= d * p)


def _weight_norms(u: jax.Array, dz: jax.Array, ghost: str) -> tuple[jax.Array, jax.Array | None]:
    """The squared norms of a layer's per-example weight gradients, and those gradients where formed."""
    return (_ghost(u, dz), None) if _uses_ghost(u.shape[3], u.shape[2], dz.shape[3], ghost) else _formed(u, dz)


def _chunk_size(n: int, per_example_bytes: int) -> int:
    """Examples per chunk: the largest divisor of ``n`` that keeps a chunk within :data:`CHUNK_BYTES` and is
    at least a quarter of that many, a multiple of 8 if there is one (a data-parallel mesh's devices then
    divide the chunk); else ``n`` (one chunk)."""
    target = max(1, CHUNK_BYTES // max(per_example_bytes, 1))
    if target >= n:
        return n
    sizes = [size for size in range(target, max(1, target // 4) - 1, -1) if n % size == 0]
    return max(sizes, key=lambda size: (size % 8 == 0, size), default=n)


def _in_chunks(fn: Callable, arrays: tuple, per_example_bytes: int) -> Any:
    """``fn(*arrays)``, example-wise, in chunks of :func:`_chunk_size` examples (``lax.fori_loop``, each
    chunk's results written into place); ``fn``'s outputs have the examples on their first axis. Chunk ``j``
    holds examples ``j, j + k, j + 2k, ...`` (``k`` chunks), so a data-parallel mesh's split of the examples
    stays within each chunk: no device gathers another's examples."""
    n = arrays[0].shape[0]
    size = _chunk_size(n, per_example_bytes)
    if size == n:
        return fn(*arrays)
    k = n // size
    strided = [a.reshape(size, k, *a.shape[1:]) for a in arrays]  # strided[:, j]: chunk j, in place
    shapes = jax.eval_shape(fn, *(a[:size] for a in arrays))
    empty = jax.tree_util.tree_map(lambda s: jnp.zeros((size, k, *s.shape[1:]), s.dtype), shapes)

    def chunk(j, out):
        result = fn(*(lax.dynamic_index_in_dim(a, j, axis=1, keepdims=False) for a in strided))
        return jax.tree_util.tree_map(lambda o, r: lax.dynamic_update_index_in_dim(o, r, j, axis=1), out, result)

    out = lax.fori_loop(0, k, chunk, empty)
    return jax.tree_util.tree_map(lambda o: o.reshape(n, *o.shape[2:]), out)


def _conv_patches(x: jax.Array, w_shape: tuple[int, ...], config: dict, out_spatial: tuple[int, ...]) -> tuple:
    """Example by example, the input patches each output position sees: ``(N, G, (C_in / G) k, T)``, a
    group's channels contiguous (each channel's window taps together), positions last. Strided slices of the
    padded input, one per window tap: data movement only (``lax.conv_general_dilated_patches`` would
    multiply by an identity kernel, ``D`` times the work)."""
    spec = conv_spec(x, jnp.zeros(w_shape, x.dtype), config.get("stride", 1), config.get("padding", "VALID"),
                     config.get("dilation", 1), config.get("groups", 1))  # fmt: skip
    window = w_shape[: x.ndim - 2]
    taps = [tuple(t * d for t, d in zip(tap, spec.dilation)) for tap in itertools.product(*map(range, window))]
    n, c, g = x.shape[0], x.shape[-1], spec.groups
    planes = jnp.moveaxis(x, -1, 1).reshape(n * c, *x.shape[1:-1], 1)  # each channel a plane of its own
    slices = shifted_slices(planes, taps, spec.strides, spec.padding, out_spatial)  # each (N C, *out, 1)
    patches = jnp.stack(slices, axis=1)  # (N C, k, *out, 1): stacked as sliced (reshaped first: 1.5x slower)
    return patches.reshape(n, g, (c // g) * len(taps), -1), g


def _kernel_layout(g: jax.Array, w_shape: tuple[int, ...]) -> jax.Array:
    """A conv's weight gradient ``(G, (C_in / G) k, p)`` as its kernel ``(*window, C_in / G, G p)``."""
    groups, p, window = g.shape[0], g.shape[-1], w_shape[:-2]
    g = g.reshape(groups, w_shape[-2], *window, p)
    return jnp.transpose(g, (*range(2, 2 + len(window)), 1, 0, 2 + len(window))).reshape(w_shape)


def _patch_layout(w: jax.Array, groups: int) -> jax.Array:
    """A kernel ``(*window, C_in / G, G p)`` as ``(G, (C_in / G) k, p)``: the inverse of :func:`_kernel_layout`."""
    nd, p = w.ndim - 2, w.shape[-1] // groups
    w = w.reshape(*w.shape[:-1], groups, p)
    return jnp.transpose(w, (nd + 1, nd, *range(nd), nd + 2)).reshape(groups, -1, p)


def _standardized_transpose(w: jax.Array, epsilon: float, groups: int) -> Callable[[jax.Array], jax.Array]:
    """For a conv whose kernel is ``weight_standardize(w)``: the map from per-example gradients with respect
    to that kernel, ``(N, G, D, p)``, to gradients with respect to ``w`` (the op's VJP, linear in the
    gradient, applied to each example's)."""
    what, s = standardized(w, epsilon)
    what, s = _patch_layout(what, groups), _patch_layout(jnp.broadcast_to(s, w.shape), groups)[:, :1]
    return lambda g: standardize_transpose(g, what, s, (2,)).astype(g.dtype)


def _bias_after(call: _Call, params_by_path: dict) -> str | None:
    """The path of the bias a conv layer adds to this convolution's output (``Conv``, ``DepthwiseConv``:
    beside ``kernel``; ``SeparableConv``: beside ``pointwise``, not ``depthwise``), if it has one."""
    layer, name = call.params["w"].rsplit(".", 1) if "." in call.params["w"] else ("", call.params["w"])
    bias = f"{layer}.bias" if layer else "bias"
    return bias if name in ("kernel", "pointwise") and bias in params_by_path else None


def _conv_norms(
    call: _Call, w_shape: tuple, has_bias: bool, x: jax.Array, dz: jax.Array, ghost: str, transpose: Callable | None
) -> tuple:  # fmt: skip
    """``x`` ``(N, V, *spatial, C_in)``, ``dz`` ``(N, V, *out, C_out)``: each example's ``V`` views are more
    output positions of one example (``T`` becomes ``V T``). ``transpose``: for a standardised kernel, the
    map of its formed gradients to the parameter's."""
    n, views = x.shape[:2]
    u, g = _conv_patches(x.reshape(n * views, *x.shape[2:]), w_shape, call.config, dz.shape[2:-1])
    u = jnp.moveaxis(u.reshape(n, views, *u.shape[1:]), 1, 3)  # (N, G, D, V, T)
    dz = dz.reshape(n, -1, dz.shape[-1])  # (N, V T, C_out)
    sq, formed = _weight_norms(u.reshape(*u.shape[:3], -1), dz.reshape(n, -1, g, dz.shape[-1] // g), ghost)
    if transpose is not None:
        formed = transpose(formed)
        sq = jnp.sum(formed * formed, axis=(1, 2, 3))
    return sq + (jnp.sum(jnp.sum(dz, 1) ** 2, -1) if has_bias else 0), formed


def _call_norms(call: _Call, params_by_path: dict, x: jax.Array, dz: jax.Array, ghost: str, augmult: int) -> tuple:
    """The squared per-example norms of one layer's parameters, and its per-example weight gradients where
    they were formed (a conv's, ``(N, G, D, p)``; else ``None``). Rows ``i augmult ... (i + 1) augmult - 1``
    of ``x`` and ``dz`` are example ``i``'s views."""
    n = x.shape[0] // augmult
    if call.op == "conv":
        w = params_by_path[call.params["w"]]
        has_bias = _bias_after(call, params_by_path) is not None
        t, groups, d = augmult * math.prod(dz.shape[1:-1]), x.shape[-1] // w.shape[-2], math.prod(w.shape[:-1])
        transpose = None
        if call.standardized is not None:  # the gradient is formed, to be mapped back through the standardisation
            ghost, transpose = "never", _standardized_transpose(w, call.standardized, groups)
        grams = 2 * t * t * groups if _uses_ghost(t, d, w.shape[-1] // groups, ghost) else 0
        per_example = x.dtype.itemsize * (t * d * groups + grams)  # the patches, and the Gram matrices
        views = (x.reshape(n, augmult, *x.shape[1:]), dz.reshape(n, augmult, *dz.shape[1:]))
        norms = lambda x, dz: _conv_norms(call, w.shape, has_bias, x, dz, ghost, transpose)  # noqa: E731
        return _in_chunks(norms, views, per_example)
    if call.op == "dense":
        u, dzr = jnp.swapaxes(x.reshape(n, -1, x.shape[-1]), 1, 2)[:, None], dz.reshape(n, -1, 1, dz.shape[-1])
        sq, _ = _weight_norms(u, dzr, ghost)
        return sq + (jnp.sum(jnp.sum(dzr, 1) ** 2, (1, 2)) if "b" in call.params else 0), None
    xhat = group_xhat(x, call.config["groups"], call.config.get("epsilon", 1e-5))  # group_norm
    dy = dz.reshape(n, -1, dz.shape[-1])
    return jnp.sum(jnp.sum(dy * xhat.reshape(dy.shape), 1) ** 2, -1) + jnp.sum(jnp.sum(dy, 1) ** 2, -1), None


def _batch(batch: Any) -> tuple[Any, Any]:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise ConfigError(f"batch must be a pair (x, y), got {type(batch).__name__}")
    return batch[0], batch[1]


def _check_augmult(augmult: int, x: Any = None) -> None:
    if isinstance(augmult, bool) or not isinstance(augmult, int) or augmult < 1:
        raise ConfigError(f"augmult must be a positive integer, got {augmult!r}")
    if x is not None and len(x) % augmult:
        raise ConfigError(f"augmult={augmult} views per example need a multiple of {augmult} rows, got {len(x)}")


def augmented_views(key: Any, x: Any, augment: Callable, augmult: int) -> jax.Array:
    """``augmult`` augmentations of every example, each example's views in consecutive rows (the layout the
    ``augmult`` of :func:`per_example_grad_norms` and :func:`clipped_grad_sum` reads): ``augment(key_k, x)``
    for ``augmult`` keys split from ``key``, interleaved to ``(N augmult, ...)``."""
    _check_augmult(augmult)
    views = jax.vmap(lambda k: augment(k, x))(jax.random.split(key, augmult))  # (augmult, N, ...)
    return jnp.swapaxes(views, 0, 1).reshape(-1, *views.shape[2:])


def _check_ghost(ghost: str) -> None:
    if ghost not in GHOST:
        raise ConfigError(f"ghost must be one of {', '.join(GHOST)}, got {ghost!r}")


def _check_covered(calls: list[_Call], by_path: dict) -> None:
    """Every parameter is used by exactly one tapped layer (conv, dense, group norm; a conv layer's bias)."""
    used = [p for c in calls for p in c.params.values()]
    shared = sorted({p for p in used if used.count(p) > 1})
    if shared:
        raise ConfigError(f"privacy: {', '.join(shared)} is used by more than one layer (shared weights); "
                          "per-example norms are derived for parameters each layer has alone")  # fmt: skip
    covered = set(used) | ({_bias_after(c, by_path) for c in calls if c.op == "conv"} - {None})
    missing = sorted(set(by_path) - covered)
    if missing:
        raise ConfigError(
            f"privacy: per-example norms are derived for conv, dense and group norm parameters; "
            f"no such layer uses {', '.join(missing)}"
        )


def _tape_norms(tape: _Tape, by_path: dict, ghost: str, augmult: int) -> tuple[jax.Array, list]:
    """The per-example norms over every layer, and each layer's formed per-example gradients (or ``None``)."""
    n = tape.inputs[0].shape[0] // augmult if tape.inputs else 0
    per_call = [_call_norms(c, by_path, a, dz, ghost, augmult)
                for c, a, dz in zip(tape.calls, tape.inputs, tape.cotangents)]  # fmt: skip
    sq = sum(sq for sq, _ in per_call)
    return jnp.sqrt(jnp.zeros(n, tape.cotangents[0].dtype) + sq), [formed for _, formed in per_call]


def per_example_grad_norms(
    model: Build, loss: Callable, params: Any, state: Any, batch: Any, *, key: Any = None, ghost: str = "auto",
    augmult: int = 1,
) -> jax.Array:  # fmt: skip
    """``||d loss_i / d params||`` for every example ``i`` of ``batch = (x, y)``, shape ``(N,)``, without
    forming any example's gradient of the whole model (see the module docstring).

    ``model(ops)`` returns the model built on the ops namespace ``ops`` (a zoo model:
    ``lambda ops: models.tanh_cnn(ops=ops)``; a network of ``layers.bind(ops)``'s layers); ``loss(outputs,
    y)`` returns per-example losses ``(N,)`` (:func:`per_example_cross_entropy`). The model is applied with
    ``train=True`` and ``key``.

    ``augmult`` (augmentation multiplicity, De et al., 2022): ``x`` holds ``augmult`` views of each example,
    example ``i``'s in rows ``i augmult`` to ``(i + 1) augmult - 1`` (:func:`augmented_views`); its gradient
    is that of the mean of its views' losses, so the result has ``len(x) / augmult`` norms.
    """
    _check_ghost(ghost)
    x, y = _batch(batch)
    _check_augmult(augmult, x)
    tape = _record(model, loss, params, state, x, y, key, augmult)
    by_path = _by_path(params)
    _check_covered(tape.calls, by_path)
    return _tape_norms(tape, by_path, ghost, augmult)[0]


# ---------------------------------------------------------------------------------------------
# The clipped sum and DP-SGD's noisy gradient
# ---------------------------------------------------------------------------------------------

METHODS = ("bookkeeping", "two-pass")


def _call_weighted(
    call: _Call, by_path: dict, x: jax.Array, cdz: jax.Array, factors: jax.Array, formed: jax.Array | None
) -> dict[str, jax.Array]:  # fmt: skip
    """``sum_i c_i dparams_i`` of one layer: ``sum_i c_i G_i`` where the per-example gradients ``G_i`` were
    formed for the norms, else the op's own VJP with respect to its parameters given the weighted cotangent
    ``c_i dz_i`` (a conv layer's bias: ``sum_{i,t} c_i dz_it``)."""
    paths = list(call.params.values())
    if formed is not None:  # a conv's kernel
        w = call.params["w"]
        grads = {w: _kernel_layout(jnp.tensordot(factors.astype(formed.dtype), formed, 1), by_path[w].shape)}
    else:
        _, vjp = jax.vjp(lambda *ps: getattr(_ops, call.op)(x, *ps, **call.config), *(by_path[p] for p in paths))
        grads = dict(zip(paths, vjp(cdz)))
    bias = _bias_after(call, by_path) if call.op == "conv" else None
    if bias is not None:
        grads[bias] = jnp.sum(cdz, axis=tuple(range(cdz.ndim - 1)))
    return grads


def _bookkeeping_sum(tape: _Tape, by_path: dict, factors: jax.Array, formed: list, params: Any, augmult: int) -> Any:
    """The weighted gradient from the recorded inputs and cotangents (and the per-example gradients formed
    for the norms): no second pass through the model. Every view of an example has the example's factor."""
    grads, rows = {}, jnp.repeat(factors, augmult)
    for call, x, dz, g in zip(tape.calls, tape.inputs, tape.cotangents, formed):
        cdz = dz * rows.reshape((-1,) + (1,) * (dz.ndim - 1)).astype(dz.dtype)
        grads.update(_call_weighted(call, by_path, x, cdz, factors, g))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), [grads[p] for p in by_path])


def _clip_factors(norms: jax.Array, clip: float, mask: Any) -> jax.Array:
    factors = jnp.minimum(1.0, clip / (norms + 1e-6))
    return factors if mask is None else factors * jnp.asarray(mask, factors.dtype)


def _clipped(
    model: Build, loss, params, state, x, y, *, clip, mask, key, ghost, method, augmult
) -> tuple[Any, jax.Array, Any]:  # fmt: skip
    """The clipped sum, the norms and the model's outputs (one forward pass's)."""
    if not (isinstance(clip, (int, float)) and not isinstance(clip, bool) and clip > 0):
        raise ConfigError(f"clip must be a positive number, got {clip!r}")
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    _check_ghost(ghost)
    _check_augmult(augmult, x)
    tape = _record(model, loss, params, state, x, y, key, augmult)
    by_path = _by_path(params)
    _check_covered(tape.calls, by_path)
    norms, formed = _tape_norms(tape, by_path, ghost, augmult)
    factors = lax.stop_gradient(_clip_factors(norms, clip, mask))
    if method == "bookkeeping":
        return _bookkeeping_sum(tape, by_path, factors, formed, params, augmult), norms, tape.outputs

    def weighted(params):  # the two-pass form: a second backward pass, of the weighted losses
        out, _ = model(_ops).apply(params, state, x, key=key, train=True)
        return jnp.sum(factors * jnp.mean(loss(out, y).reshape(-1, augmult), 1))

    return jax.grad(weighted)(params), norms, tape.outputs


class ClippedSum(NamedTuple):
    total: Any  # sum_i m_i c_i g_i, like params
    norms: jax.Array  # ||g_i||, (N,)
    outputs: Any  # the model's outputs on the batch (the forward pass the norms came from)


def clipped_sum_and_outputs(
    model: Build, loss: Callable, params: Any, state: Any, batch: Any, *, clip: float, mask: Any = None,
    key: Any = None, ghost: str = "auto", method: str = "bookkeeping", augmult: int = 1,
) -> ClippedSum:  # fmt: skip
    """:func:`clipped_grad_sum` with the model's outputs too (a training step reports loss and accuracy
    from them without another forward pass; one row per view)."""
    x, y = _batch(batch)
    return ClippedSum(*_clipped(model, loss, params, state, x, y, clip=clip, mask=mask, key=key, ghost=ghost,
                                method=method, augmult=augmult))  # fmt: skip


def clipped_grad_sum(
    model: Build, loss: Callable, params: Any, state: Any, batch: Any, *, clip: float, mask: Any = None,
    key: Any = None, ghost: str = "auto", method: str = "bookkeeping", augmult: int = 1,
) -> tuple[Any, jax.Array]:  # fmt: skip
    """``sum_i m_i min(1, clip / (||g_i|| + 1e-6)) g_i`` (``m`` the batch mask, default all ones) and the
    norms ``||g_i||``, without forming any ``g_i``.

    ``method="bookkeeping"`` (the default; Bu et al., 2023) forms each layer's weighted gradient from the
    input and cotangent the norms were computed from, through the op's own VJP with the cotangent
    ``c_i dz_i`` (or as ``sum_i c_i G_i`` where the norms formed the per-example gradients ``G_i``);
    ``"two-pass"`` differentiates ``sum_i c_i loss_i`` in a second backward pass through the whole model.
    Both give the same sum; benchmarks/NOTES.md has their times. ``augmult``: as for
    :func:`per_example_grad_norms` (``mask`` then has one entry per example, not per view)."""
    total, norms, _ = clipped_sum_and_outputs(model, loss, params, state, batch, clip=clip, mask=mask, key=key,
                                              ghost=ghost, method=method, augmult=augmult)  # fmt: skip
    return total, norms


def add_noise(total: Any, *, clip: float, noise_multiplier: float, expected_batch_size: float, noise_key: Any) -> Any:
    """``(total + N(0, (noise_multiplier * clip)^2 I)) / expected_batch_size``, one key per leaf split from
    ``noise_key``. Under a data-parallel mesh ``total`` is the all-reduced sum and ``noise_key`` the same on
    every device: the noise is drawn once and added once."""
    if not noise_multiplier >= 0:
        raise ConfigError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}")
    leaves, treedef = jax.tree_util.tree_flatten(total)
    keys = jax.random.split(noise_key, len(leaves))
    std = noise_multiplier * clip
    noisy = [(g + std * jax.random.normal(k, g.shape, g.dtype)) / expected_batch_size for g, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(treedef, noisy)


def noisy_gradient(
    model: Build, loss: Callable, params: Any, state: Any, batch: Any, *, clip: float, noise_multiplier: float,
    expected_batch_size: float, noise_key: Any, mask: Any = None, key: Any = None, ghost: str = "auto",
    method: str = "bookkeeping", augmult: int = 1,
) -> tuple[Any, jax.Array]:  # fmt: skip
    """DP-SGD's gradient: ``(clipped sum + N(0, (noise_multiplier * clip)^2 I)) / expected_batch_size``,
    and the per-example norms. ``expected_batch_size`` is ``q N`` under Poisson sampling (not the realised
    size, which would leak it); any optax optimizer takes it from there."""
    total, norms = clipped_grad_sum(model, loss, params, state, batch, clip=clip, mask=mask, key=key, ghost=ghost,
                                    method=method, augmult=augmult)  # fmt: skip
    noise = dict(clip=clip, noise_multiplier=noise_multiplier, expected_batch_size=expected_batch_size)
    return add_noise(total, **noise, noise_key=noise_key), norms


def make_dp_step(
    model: Build, loss: Callable, optimizer: Any, *, clip: float, noise_multiplier: float,
    expected_batch_size: float, ghost: str = "auto", method: str = "bookkeeping", augmult: int = 1,
) -> Callable:  # fmt: skip
    """A jitted DP-SGD step ``(params, state, opt_state, x, y, mask, noise_key) -> (params, opt_state,
    norms)``: :func:`noisy_gradient`, then any optax ``optimizer``. ``x``, ``y``, ``mask`` are a
    :func:`poisson_batch` of fixed capacity, so the step compiles once. (``jaxcnn.train.fit`` with
    ``privacy=DPConfig(...)`` is the same step inside the training loop.) With ``augmult`` > 1, ``x`` and
    ``y`` hold each example's views (:func:`augmented_views`), ``mask`` one entry per example."""
    import optax

    def step(params, state, opt_state, x, y, mask, noise_key):
        grads, norms = noisy_gradient(model, loss, params, state, (x, y), clip=clip,
                                      noise_multiplier=noise_multiplier, expected_batch_size=expected_batch_size,
                                      noise_key=noise_key, mask=mask, ghost=ghost, method=method,
                                      augmult=augmult)  # fmt: skip
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, norms

    return jax.jit(step)


class DPConfig(NamedTuple):
    """DP-SGD's settings for :func:`jaxcnn.train.fit` (``privacy=DPConfig(...)``): each step samples a
    Poisson batch at rate ``batch_size / len(x_train)``, clips every example's gradient to ``clip``, adds
    ``N(0, (noise_multiplier * clip)^2)`` and divides by the expected batch size; the accountant reports the
    epsilon spent at ``delta``. :func:`calibrate_noise` finds the noise multiplier for a target epsilon.
    ``augmult`` > 1 (De et al., 2022) draws that many augmentations of each sampled example (``fit``'s
    ``augment`` is then required) and clips the mean of their gradients: the privacy cost is the same, as
    each example still contributes one clipped gradient."""

    clip: float
    noise_multiplier: float
    delta: float = 1e-5
    accountant: str = "pld"
    ghost: str = "auto"
    method: str = "bookkeeping"
    augmult: int = 1  # augmentation multiplicity: views per example, each example's gradient their mean

    def checked(self) -> DPConfig:
        """Itself, once every field is valid (a ``ConfigError`` naming the field and value otherwise)."""
        for name in ("clip", "noise_multiplier"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"privacy: {name} must be a positive number, got {value!r}")
        if isinstance(self.delta, bool) or not isinstance(self.delta, (int, float)) or not 0 < self.delta < 1:
            raise ConfigError(f"privacy: delta must be in (0, 1), got {self.delta!r}")
        if self.accountant not in ("pld", "rdp"):
            raise ConfigError(f"accountant must be 'pld' or 'rdp', got {self.accountant!r}")
        _check_ghost(self.ghost)
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        _check_augmult(self.augmult)
        return self

    def epsilon(self, sampling_rate: float, steps: int) -> float:
        """The epsilon spent after ``steps`` steps at ``sampling_rate`` (0 before the first step)."""
        if steps == 0:
            return 0.0
        return epsilon(self.noise_multiplier, sampling_rate, steps, self.delta, accountant=self.accountant)


# ---------------------------------------------------------------------------------------------
# Poisson sampling
# ---------------------------------------------------------------------------------------------


def poisson_capacity(num_examples: int, rate: float, sigmas: float = 6.0) -> int:
    """A batch capacity that a Poisson sample of ``num_examples`` at ``rate`` exceeds with probability
    about ``Phi(-sigmas)`` (1e-9 for 6): the mean plus ``sigmas`` binomial standard deviations; from 1,024 on,
    rounded up to a multiple of 64 (at most 6% more rows), so that the norms can run in chunks of examples
    that divide the batch (:func:`_chunk_size`)."""
    if not 0 < rate <= 1:
        raise ConfigError(f"rate must be in (0, 1], got {rate!r}")
    mean = num_examples * rate
    capacity = math.ceil(mean + sigmas * math.sqrt(mean * (1 - rate))) + 1
    return min(num_examples, -(-capacity // 64) * 64 if capacity >= 1024 else capacity)


def poisson_batch(key: Any, num_examples: int, rate: float, capacity: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(indices, mask, size)``: every example joins independently with probability ``rate``; the first
    ``capacity`` of them (in index order) fill ``indices``, the rest of which is padding (``mask`` 0).
    ``size`` is the sampled count, which exceeds ``capacity`` only with the tiny probability
    :func:`poisson_capacity` leaves (those examples are then left out)."""
    joined = jax.random.bernoulli(key, rate, (num_examples,))
    (indices,) = jnp.nonzero(joined, size=capacity, fill_value=0)
    size = jnp.sum(joined)
    return indices, jnp.arange(capacity) < size, size


# ---------------------------------------------------------------------------------------------
# The accountant (Google's dp-accounting)
# ---------------------------------------------------------------------------------------------


def _dp_accounting():
    try:
        import dp_accounting
    except ImportError:
        raise MissingDependencyError("the privacy accountant needs dp-accounting: pip install 'jaxcnn[dp]'") from None
    return dp_accounting


def _accountant(accountant: str):
    dp = _dp_accounting()
    if accountant == "pld":
        return dp.pld.PLDAccountant()
    if accountant == "rdp":
        return dp.rdp.RdpAccountant()
    raise ConfigError(f"accountant must be 'pld' or 'rdp', got {accountant!r}")


def _event(noise_multiplier: float, rate: float, steps: int):
    dp = _dp_accounting()
    return dp.SelfComposedDpEvent(dp.PoissonSampledDpEvent(rate, dp.GaussianDpEvent(noise_multiplier)), steps)


def epsilon(
    noise_multiplier: float, sampling_rate: float, steps: int, delta: float, *, accountant: str = "pld"
) -> float:
    """The epsilon of ``steps`` Poisson-subsampled Gaussian steps (rate ``q``, noise ``sigma``) at ``delta``."""
    acc = _accountant(accountant)
    acc.compose(_event(noise_multiplier, sampling_rate, steps))
    return float(acc.get_epsilon(delta))


def calibrate_noise(
    target_epsilon: float, sampling_rate: float, steps: int, delta: float, *, accountant: str = "pld"
) -> float:
    """The smallest noise multiplier whose :func:`epsilon` is at most ``target_epsilon``."""
    dp = _dp_accounting()
    return float(
        dp.calibrate_dp_mechanism(
            lambda: _accountant(accountant),
            lambda sigma: _event(sigma, sampling_rate, steps),
            target_epsilon,
            delta,
            dp.LowerEndpointAndGuess(0.1, 1.0),
            tol=1e-3,
        )
    )
