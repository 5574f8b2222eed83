"""Configuration checks for the layer constructors (construction time) and their ``init`` (shape time).

Built on the ops' own arithmetic and checks (:mod:`jaxcnn.ops._padding`, :mod:`jaxcnn.ops._validate`):
a layer normalises its arguments once, when it is constructed, and every error names the argument and
its value; shape errors are raised by ``init``, with a note naming the layer and the input shape.
"""

from __future__ import annotations

import contextlib
import numbers
import operator
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .. import initializers as _inits
from ..errors import ConfigError, ConfigTypeError
from ..ops._padding import normalize_padding
from ..ops._validate import as_positive_int, is_int, normalize_tuple

Shape = tuple[int, ...]

__all__ = [
    "Shape",
    "as_bool",
    "as_real",
    "as_positive_int",
    "check_ops",
    "check_train",
    "input_shape_arg",
    "spatial_input",
    "struct",
    "noting",
    "expand",
    "int_or_tuple",
    "WindowConfig",
    "KernelConfig",
    "check_divisible",
]


def as_bool(value: Any, arg: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigTypeError(f"{arg} must be a bool, got {value!r}")
    return value


def as_real(value: Any, arg: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigTypeError(f"{arg} must be a real number, got {value!r}")
    return float(value)


def check_ops(ops: Any, *names: str) -> Any:
    """``ops`` (``jaxcnn.ops``, ``jaxcnn.reference`` or a look-alike) provides every op in ``names``."""
    missing = [n for n in names if not callable(getattr(ops, n, None))]
    if missing:
        raise ConfigTypeError(
            f"ops must provide {', '.join(missing)} (like jaxcnn.ops or jaxcnn.reference), got {ops!r}"
        )
    return ops


def check_train(train: Any, layer: str) -> bool:
    if not isinstance(train, bool):
        raise ConfigTypeError(f"{layer}: train must be a Python bool (static under jax.jit), got {train!r}")
    return train


def input_shape_arg(input_shape: Any, layer: str, *, min_rank: int = 1, what: str = "(N, ..., C)") -> Shape:
    """``input_shape`` as a tuple of ints; the batch entry may be -1 (unknown), the others are >= 1."""
    msg = f"{layer}: input_shape must be a tuple of ints (N, ..., C), got {input_shape!r}"
    if not isinstance(input_shape, Sequence) or isinstance(input_shape, str):
        raise ConfigTypeError(msg)
    if not all(is_int(d) for d in input_shape):
        raise ConfigTypeError(msg)
    shape = tuple(operator.index(d) for d in input_shape)
    if len(shape) == 0 or shape[0] < -1 or any(d < 1 for d in shape[1:]):
        raise ConfigError(
            f"{layer}: input_shape must be (N, ..., C) with N >= 0 (or -1) and positive other sizes, got {shape}"
        )
    if len(shape) < min_rank:
        raise ConfigError(f"{layer}: input_shape must be {what} with rank >= {min_rank}, got {shape}")
    return shape


def spatial_input(input_shape: Any, layer: str, nd: int | None, because: str) -> tuple[Shape, int]:
    """Validate a channels-last ``(N, *spatial, C)`` shape with ``nd`` (or, if None, 1-3) spatial axes."""
    shape = input_shape_arg(input_shape, layer)
    if nd is None:
        if len(shape) not in (3, 4, 5):
            raise ConfigError(
                f"{layer}: input_shape must have rank 3, 4 or 5 (N, *spatial, C), got {shape} of rank {len(shape)}"
            )
        return shape, len(shape) - 2
    if len(shape) != nd + 2:
        raise ConfigError(
            f"{layer}: input_shape must have rank {nd + 2} (N, *spatial, C) to match {because}, "
            f"got {shape} of rank {len(shape)}"
        )
    return shape, nd


def struct(shape: Shape, dtype=jnp.float32) -> jax.ShapeDtypeStruct:
    """A stand-in array for the ops' own argument checks (which read only shape and dtype)."""
    return jax.ShapeDtypeStruct((max(shape[0], 1), *shape[1:]), dtype)


@contextlib.contextmanager
def noting(layer: str, shape: Shape):
    """Around the ops' own argument checks at init: errors get a note naming the layer and input shape."""
    try:
        yield
    except (ValueError, TypeError) as err:
        err.add_note(f"while initialising {layer} on input_shape {shape}")
        raise


def expand(value: int | tuple[int, ...], nd: int) -> tuple[int, ...]:
    """An int for every spatial axis, or a tuple already one entry per axis."""
    return (value,) * nd if isinstance(value, int) else value


def int_or_tuple(value: Any, arg: str, *, minimum: int = 1) -> tuple[int | tuple[int, ...], int | None]:
    """Validate an int or a tuple of 1-3 ints, each ``>= minimum`` (:func:`~jaxcnn.ops._validate.normalize_tuple`);
    return it and its rank (None for an int, which applies to every spatial axis)."""
    values = normalize_tuple(value, None, arg, minimum=minimum)
    return (values[0], None) if is_int(value) else (values, len(values))


def _padding_rank(padding: Any) -> int | None:
    """Validate ``padding`` (a string, an int, or per-axis ints / ``(lo, hi)`` pairs); return its rank
    (None for a string or an int), by normalising it against a one-row stand-in."""
    if isinstance(padding, str) or is_int(padding):
        normalize_padding(padding, (1,), (1,), (1,), (1,))  # refuses anything but VALID / SAME / n >= 0
        return None
    if isinstance(padding, Sequence) and 1 <= len(padding) <= 3:
        nd = len(padding)
        normalize_padding(padding, (1,) * nd, (1,) * nd, (1,) * nd, (1,) * nd)
        return nd
    raise (ConfigError if isinstance(padding, Sequence) else ConfigTypeError)(
        f"padding must be 'VALID', 'SAME', an int, or a sequence of 1-3 ints or (lo, hi) pairs, got {padding!r}"
    )


def _common_rank(**ranked: tuple[Any, int | None]) -> tuple[int | None, str]:
    """The number of spatial axes the tuple-valued arguments agree on (None when all are ints), and
    those arguments as ``"name=value, ..."`` for messages."""
    ranks = {name: r for name, (_, r) in ranked.items() if r is not None}
    given = ", ".join(f"{name}={value!r}" for name, (value, r) in ranked.items() if r is not None)
    if len(set(ranks.values())) > 1:
        raise ConfigError(f"the tuple arguments must have one entry per spatial axis, got {given}")
    return next(iter(ranks.values()), None), given


class WindowConfig(NamedTuple):
    """Validated window / stride / dilation / padding of a conv or pool; ``rank`` None = from the input."""

    window: int | tuple[int, ...]
    stride: int | tuple[int, ...] | None
    dilation: int | tuple[int, ...]
    padding: Any
    rank: int | None
    rank_from: str  # the tuple arguments that fixed the rank, "name=value, ..."

    @classmethod
    def make(cls, window, stride, dilation, padding, *, window_arg="kernel_size", **extra):
        """``extra``: more ``name=(value, rank)`` arguments whose rank must agree (output_padding)."""
        window_r = int_or_tuple(window, window_arg)
        stride_r = (None, None) if stride is None else int_or_tuple(stride, "stride")
        dilation_r = int_or_tuple(dilation, "dilation")
        padding_r = (padding, _padding_rank(padding))
        rank, rank_from = _common_rank(
            **{window_arg: window_r, "stride": stride_r, "dilation": dilation_r, "padding": padding_r}, **extra
        )
        return cls(window_r[0], stride_r[0], dilation_r[0], padding, rank, rank_from)

    def input(self, input_shape: Any, layer: str) -> tuple[Shape, int, tuple[int, ...]]:
        """The validated input shape, its number of spatial axes and the window as a tuple."""
        shape, nd = spatial_input(input_shape, layer, self.rank, self.rank_from)
        return shape, nd, expand(self.window, nd)

    def strides(self, nd: int) -> tuple[int, ...]:
        return expand(self.window if self.stride is None else self.stride, nd)

    def geometry(self) -> dict:
        """The window, stride, dilation and padding as given (for :class:`~jaxcnn.layers.core.LayerInfo`)."""
        return dict(window=self.window, stride=self.window if self.stride is None else self.stride,
                    dilation=self.dilation, padding=self.padding)  # fmt: skip


class KernelConfig(NamedTuple):
    """What every layer with a kernel shares: the bias flag and the two initialisers, checked once."""

    use_bias: bool
    kernel_init: Any
    bias_init: Any

    @classmethod
    def make(cls, use_bias: Any, kernel_init: Any, bias_init: Any) -> KernelConfig:
        use_bias = as_bool(use_bias, "use_bias")
        return cls(use_bias, _inits.get(kernel_init, "kernel_init"), _inits.get(bias_init, "bias_init"))

    def init(self, key: jax.Array, kernel_shape: Shape, bias_size: int) -> dict:
        """``{"kernel": ..., "bias": ...}``; the bias initialiser is told the kernel's fans."""
        k_key, b_key = jax.random.split(key)
        params = {"kernel": _inits.call(self.kernel_init, k_key, kernel_shape)}
        if self.use_bias:
            fan_in, fan_out = _inits.compute_fans(kernel_shape)
            params["bias"] = _inits.call(self.bias_init, b_key, (bias_size,), fan_in=fan_in, fan_out=fan_out)
        return params

    def add_bias(self, y: jax.Array, params: dict) -> jax.Array:
        """``y + bias`` over the channel axis (a broadcasting add, differentiated by JAX)."""
        return y + params["bias"] if self.use_bias else y


def check_divisible(what: str, value: int, groups: int) -> None:
    """``value`` splits into ``groups`` equal blocks: "``what`` (=6) must be divisible by groups (=4)"."""
    if value % groups:
        raise ConfigError(f"{what} (={value}) must be divisible by groups (={groups})")
