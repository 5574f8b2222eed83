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
``ghost="always"|"never"`` forces one. A bias's gradient is ``sum_t dz_t``; group norm's scale and offset
are ``sum_t dy_t xhat_t`` and ``sum_t dy_t`` per channel, from its saved input.

The inputs and cotangents come from one forward and backward pass of the model built on a namespace of
ops (:func:`jaxcnn.layers.bind`) whose ``conv``, ``dense`` and ``group_norm`` record their input and add a
zero "tap" to their output: the gradient of the summed per-example losses with respect to a tap is that
layer's output cotangent, example by example (no layer may couple the examples: batch norm in train mode
is refused). Every parameter must belong to one of those layers; any other is refused by name.

**The clipped sum** ``sum_i c_i g_i`` with ``c_i = min(1, C / (||g_i|| + 1e-6))`` needs no ``g_i`` either:
for each layer it is ``sum_i c_i U_i^T dZ_i``, the layer's ordinary weight gradient (the op's own
hand-derived VJP) given the weighted cotangent ``c_i dZ_i`` -- the book-keeping form (Bu et al., 2023),
which reuses the inputs and cotangents the norms came from, so a DP step is one forward and one backward
pass plus the norms. The two-pass form (``method="two-pass"``) differentiates ``sum_i c_i loss_i`` in a
second backward pass instead. :func:`noisy_gradient` adds ``N(0, sigma^2 C^2)`` to the sum and divides by
the expected batch size ``q N`` (DP-SGD as Abadi et al., 2016, publish it).

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
from .ops.norm import group_xhat

__all__ = [
    "per_example_cross_entropy",
    "per_example_grad_norms",
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
    """One recorded op call: its kind, the parameter paths it used by role, and its configuration."""

    op: str
    params: dict  # role ("w", "b", "scale", "offset") -> params path
    config: dict


class _TapOps:
    """:mod:`jaxcnn.ops`, except that ``conv``, ``dense`` and ``group_norm`` record their input and the
    params they were given, and add ``taps[k]`` (zeros) to the ``k``-th call's output."""

    def __init__(self, paths: dict[int, str], taps: list | None = None):
        self._paths, self.taps, self.calls, self.inputs, self.out_shapes = paths, taps, [], [], []

    def __getattr__(self, name: str) -> Any:
        return getattr(_ops, name)

    def _path(self, array: Any, op: str) -> str:
        if id(array) not in self._paths:
            raise ConfigError(f"privacy: {op} was given an array that is not a parameter (cast or computed)")
        return self._paths[id(array)]

    def _record(self, op: str, x: Any, y: jax.Array, params: dict, config: dict) -> jax.Array:
        k = len(self.calls)
        self.calls.append(_Call(op, {role: self._path(a, op) for role, a in params.items()}, config))
        self.inputs.append(x)
        self.out_shapes.append(jax.ShapeDtypeStruct(y.shape, y.dtype))
        return y if self.taps is None else y + self.taps[k]

    def conv(self, x, w, **config):
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


def _record(model: Build, loss, params, state, x, y, key) -> _Tape:
    probe, x = {}, jnp.asarray(x)

    def shapes(params, x):
        out, ops = _forward(model, params, state, x, key, None)
        probe["calls"], probe["shapes"] = ops.calls, ops.out_shapes
        return out

    jax.eval_shape(shapes, params, x)

    def total(taps):
        out, ops = _forward(model, params, state, x, key, taps)
        return jnp.sum(loss(out, y)), (ops.inputs, out)

    zeros = [jnp.zeros(s.shape, s.dtype) for s in probe["shapes"]]  # the taps
    cotangents, (inputs, out) = jax.grad(total, has_aux=True)(zeros)
    return _Tape(probe["calls"], inputs, cotangents, out)


# ---------------------------------------------------------------------------------------------
# Per-layer squared norms
# ---------------------------------------------------------------------------------------------


def _ghost(u: jax.Array, dz: jax.Array) -> jax.Array:
    """``sum_{t,t'} (u_t . u_t')(dz_t . dz_t')`` per example (and group): ``u`` ``(N, T, G, D)``,
    ``dz`` ``(N, T, G, p)``."""
    if u.shape[1] == 1:  # one position: ||u||^2 ||dz||^2
        return jnp.sum(jnp.sum(u * u, -1) * jnp.sum(dz * dz, -1), axis=(1, 2))
    gram_u = jnp.einsum("ntgd,nsgd->ngts", u, u)
    gram_z = jnp.einsum("ntgp,nsgp->ngts", dz, dz)
    return jnp.sum(gram_u * gram_z, axis=(1, 2, 3))


def _formed(u: jax.Array, dz: jax.Array) -> jax.Array:
    """``||U_i^T dZ_i||^2`` per example, the layer's per-example gradient formed and reduced at once."""
    g = jnp.einsum("ntgd,ntgp->ngdp", u, dz)
    return jnp.sum(g * g, axis=(1, 2, 3))


def _weight_norms(u: jax.Array, dz: jax.Array, ghost: str) -> jax.Array:
    t, d, p = u.shape[1], u.shape[3], dz.shape[3]
    use_ghost = ghost == "always" or (ghost == "auto" and 2 * t * t <= d * p)
    return _ghost(u, dz) if use_ghost else _formed(u, dz)


def _conv_patches(x: jax.Array, w_shape: tuple[int, ...], config: dict, out_spatial: tuple[int, ...]) -> tuple:
    """Example by example, the input patches each output position sees: ``(N, T, G, (C_in / G) k)``, a
    group's channels contiguous (each channel's window taps together). Strided slices of the padded input,
    one per window tap: data movement only (``lax.conv_general_dilated_patches`` would multiply by an
    identity kernel, ``D`` times the work)."""
    spec = conv_spec(x, jnp.zeros(w_shape, x.dtype), config.get("stride", 1), config.get("padding", "VALID"),
                     config.get("dilation", 1), config.get("groups", 1))  # fmt: skip
    window = w_shape[: x.ndim - 2]
    taps = [tuple(t * d for t, d in zip(tap, spec.dilation)) for tap in itertools.product(*map(range, window))]
    patches = jnp.stack(shifted_slices(x, taps, spec.strides, spec.padding, out_spatial), axis=-1)  # (N, *out, C, k)
    n, g = x.shape[0], spec.groups
    return patches.reshape(n, -1, g, (x.shape[-1] // g) * len(taps)), g


def _bias_after(call: _Call, params_by_path: dict) -> str | None:
    """The path of the bias a conv layer adds to this convolution's output (``Conv``, ``DepthwiseConv``:
    beside ``kernel``; ``SeparableConv``: beside ``pointwise``, not ``depthwise``), if it has one."""
    layer, name = call.params["w"].rsplit(".", 1) if "." in call.params["w"] else ("", call.params["w"])
    bias = f"{layer}.bias" if layer else "bias"
    return bias if name in ("kernel", "pointwise") and bias in params_by_path else None


def _call_norms(call: _Call, params_by_path: dict, x: jax.Array, dz: jax.Array, ghost: str) -> jax.Array:
    n = x.shape[0]
    if call.op == "conv":
        w = params_by_path[call.params["w"]]
        u, g = _conv_patches(x, w.shape, call.config, dz.shape[1:-1])
        sq = _weight_norms(u, dz.reshape(n, -1, g, dz.shape[-1] // g), ghost)
        bias = _bias_after(call, params_by_path)
        return sq + (0 if bias is None else jnp.sum(jnp.sum(dz.reshape(n, -1, dz.shape[-1]), 1) ** 2, -1))
    if call.op == "dense":
        u, dzr = x.reshape(n, -1, 1, x.shape[-1]), dz.reshape(n, -1, 1, dz.shape[-1])
        sq = _weight_norms(u, dzr, ghost)
        return sq + (jnp.sum(jnp.sum(dzr, 1) ** 2, (1, 2)) if "b" in call.params else 0)
    xhat = group_xhat(x, call.config["groups"], call.config.get("epsilon", 1e-5))  # group_norm
    dy = dz.reshape(n, -1, dz.shape[-1])
    return jnp.sum(jnp.sum(dy * xhat.reshape(dy.shape), 1) ** 2, -1) + jnp.sum(jnp.sum(dy, 1) ** 2, -1)


def _batch(batch: Any) -> tuple[Any, Any]:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise ConfigError(f"batch must be a pair (x, y), got {type(batch).__name__}")
    return batch[0], batch[1]


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


def _tape_norms(tape: _Tape, by_path: dict, ghost: str) -> jax.Array:
    n = tape.inputs[0].shape[0] if tape.inputs else 0
    sq = sum(_call_norms(c, by_path, a, dz, ghost) for c, a, dz in zip(tape.calls, tape.inputs, tape.cotangents))
    return jnp.sqrt(jnp.zeros(n, tape.cotangents[0].dtype) + sq)


def per_example_grad_norms(
    model: Build, loss: Callable, params: Any, state: Any, batch: Any, *, key: Any = None, ghost: str = "auto"
) -> jax.Array:
    """``||d loss_i / d params||`` for every example ``i`` of ``batch = (x, y)``, shape ``(N,)``, without
    forming any example's gradient of the whole model (see the module docstring).

    ``model(ops)`` returns the model built on the ops namespace ``ops`` (a zoo model:
    ``lambda ops: models.tanh_cnn(ops=ops)``; a network of ``layers.bind(ops)``'s layers); ``loss(outputs,
    y)`` returns per-example losses ``(N,)`` (:func:`per_example_cross_entropy`). The model is applied with
    ``train=True`` and ``key``.
    """
    _check_ghost(ghost)
    x, y = _batch(batch)
    tape = _record(model, loss, params, state, x, y, key)
    by_path = _by_path(params)
    _check_covered(tape.calls, by_path)
    return _tape_norms(tape, by_path, ghost)


# ---------------------------------------------------------------------------------------------
# The clipped sum and DP-SGD's noisy gradient
# ---------------------------------------------------------------------------------------------

METHODS = ("bookkeeping", "two-pass")


def _call_weighted(call: _Call, by_path: dict, x: jax.Array, cdz: jax.Array) -> dict[str, jax.Array]:
    """``sum_i c_i dparams_i`` of one layer: the op's own VJP with respect to its parameters, given the
    weighted cotangent ``c_i dz_i`` (a conv layer's bias: ``sum_{i,t} c_i dz_it``)."""
    paths = list(call.params.values())
    _, vjp = jax.vjp(lambda *ps: getattr(_ops, call.op)(x, *ps, **call.config), *(by_path[p] for p in paths))
    grads = dict(zip(paths, vjp(cdz)))
    bias = _bias_after(call, by_path) if call.op == "conv" else None
    if bias is not None:
        grads[bias] = jnp.sum(cdz, axis=tuple(range(cdz.ndim - 1)))
    return grads


def _bookkeeping_sum(tape: _Tape, by_path: dict, factors: jax.Array, params: Any) -> Any:
    """The weighted gradient from the recorded inputs and cotangents: no second pass through the model."""
    grads = {}
    for call, x, dz in zip(tape.calls, tape.inputs, tape.cotangents):
        cdz = dz * factors.reshape((-1,) + (1,) * (dz.ndim - 1)).astype(dz.dtype)
        grads.update(_call_weighted(call, by_path, x, cdz))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), [grads[p] for p in by_path])


def _clip_factors(norms: jax.Array, clip: float, mask: Any) -> jax.Array:
    factors = jnp.minimum(1.0, clip / (norms + 1e-6))
    return factors if mask is None else factors * jnp.asarray(mask, factors.dtype)


def _clipped(
    model: Build, loss, params, state, x, y, *, clip, mask, key, ghost, method
) -> tuple[Any, jax.Array, Any]:  # fmt: skip
    """The clipped sum, the norms and the model's outputs (one forward pass's)."""
    if not (isinstance(clip, (int, float)) and not isinstance(clip, bool) and clip > 0):
        raise ConfigError(f"clip must be a positive number, got {clip!r}")
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    _check_ghost(ghost)
    tape = _record(model, loss, params, state, x, y, key)
    by_path = _by_path(params)
    _check_covered(tape.calls, by_path)
    norms = _tape_norms(tape, by_path, ghost)
    factors = lax.stop_gradient(_clip_factors(norms, clip, mask))
    if method == "bookkeeping":
        return _bookkeeping_sum(tape, by_path, factors, params), norms, tape.outputs

    def weighted(params):  # the two-pass form: a second backward pass, of the weighted losses
        out, _ = model(_ops).apply(params, state, x, key=key, train=True)
        return jnp.sum(factors * loss(out, y))

    return jax.grad(weighted)(params), norms, tape.outputs


class ClippedSum(NamedTuple):
    total: Any  # sum_i m_i c_i g_i, like params
    norms: jax.Array  # ||g_i||, (N,)
    outputs: Any  # the model's outputs on the batch (the forward pass the norms came from)


def clipped_sum_and_outputs(
    model: Build, loss: Callable, params: Any, state: Any, batch: Any, *, clip: float, mask: Any = None,
    key: Any = None, ghost: str = "auto", method: str = "bookkeeping",
) -> ClippedSum:  # fmt: skip
    """:func:`clipped_grad_sum` with the model's outputs too (a training step reports loss and accuracy
    from them without another forward pass)."""
    x, y = _batch(batch)
    return ClippedSum(*_clipped(model, loss, params, state, x, y, clip=clip, mask=mask, key=key, ghost=ghost,
                                method=method))  # fmt: skip


def clipped_grad_sum(
    model: Build, loss: Callable, params: Any, state: Any, batch: Any, *, clip: float, mask: Any = None,
    key: Any = None, ghost: str = "auto", method: str = "bookkeeping",
) -> tuple[Any, jax.Array]:  # fmt: skip
    """``sum_i m_i min(1, clip / (||g_i|| + 1e-6)) g_i`` (``m`` the batch mask, default all ones) and the
    norms ``||g_i||``, without forming any ``g_i``.

    ``method="bookkeeping"`` (the default; Bu et al., 2023) forms each layer's weighted gradient from the
    input and cotangent the norms were computed from, through the op's own VJP with the cotangent
    ``c_i dz_i``; ``"two-pass"`` differentiates ``sum_i c_i loss_i`` in a second backward pass through the
    whole model. Both give the same sum; benchmarks/NOTES.md has their times."""
    total, norms, _ = clipped_sum_and_outputs(model, loss, params, state, batch, clip=clip, mask=mask, key=key,
                                              ghost=ghost, method=method)  # fmt: skip
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
    method: str = "bookkeeping",
) -> tuple[Any, jax.Array]:  # fmt: skip
    """DP-SGD's gradient: ``(clipped sum + N(0, (noise_multiplier * clip)^2 I)) / expected_batch_size``,
    and the per-example norms. ``expected_batch_size`` is ``q N`` under Poisson sampling (not the realised
    size, which would leak it); any optax optimizer takes it from there."""
    total, norms = clipped_grad_sum(model, loss, params, state, batch, clip=clip, mask=mask, key=key, ghost=ghost,
                                    method=method)  # fmt: skip
    noise = dict(clip=clip, noise_multiplier=noise_multiplier, expected_batch_size=expected_batch_size)
    return add_noise(total, **noise, noise_key=noise_key), norms


def make_dp_step(
    model: Build, loss: Callable, optimizer: Any, *, clip: float, noise_multiplier: float,
    expected_batch_size: float, ghost: str = "auto", method: str = "bookkeeping",
) -> Callable:  # fmt: skip
    """A jitted DP-SGD step ``(params, state, opt_state, x, y, mask, noise_key) -> (params, opt_state,
    norms)``: :func:`noisy_gradient`, then any optax ``optimizer``. ``x``, ``y``, ``mask`` are a
    :func:`poisson_batch` of fixed capacity, so the step compiles once. (``jaxcnn.train.fit`` with
    ``privacy=DPConfig(...)`` is the same step inside the training loop.)"""
    import optax

    def step(params, state, opt_state, x, y, mask, noise_key):
        grads, norms = noisy_gradient(model, loss, params, state, (x, y), clip=clip,
                                      noise_multiplier=noise_multiplier, expected_batch_size=expected_batch_size,
                                      noise_key=noise_key, mask=mask, ghost=ghost, method=method)  # fmt: skip
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, norms

    return jax.jit(step)


class DPConfig(NamedTuple):
    """DP-SGD's settings for :func:`jaxcnn.train.fit` (``privacy=DPConfig(...)``): each step samples a
    Poisson batch at rate ``batch_size / len(x_train)``, clips every example's gradient to ``clip``, adds
    ``N(0, (noise_multiplier * clip)^2)`` and divides by the expected batch size; the accountant reports the
    epsilon spent at ``delta``. :func:`calibrate_noise` finds the noise multiplier for a target epsilon."""

    clip: float
    noise_multiplier: float
    delta: float = 1e-5
    accountant: str = "pld"
    ghost: str = "auto"
    method: str = "bookkeeping"

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
    about ``Phi(-sigmas)`` (1e-9 for 6): the mean plus ``sigmas`` binomial standard deviations."""
    if not 0 < rate <= 1:
        raise ConfigError(f"rate must be in (0, 1], got {rate!r}")
    mean = num_examples * rate
    return min(num_examples, math.ceil(mean + sigmas * math.sqrt(mean * (1 - rate))) + 1)


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
