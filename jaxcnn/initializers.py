r"""Parameter initializers: ``init(key, shape, dtype=jnp.float32) -> array``.

Fans are computed for kernels laid out ``(*window, in, out)`` (conv) or ``(in, out)`` (dense)::

    fan_in  = prod(window) * in        fan_out = prod(window) * out

A 1-D shape (a bias) has ``fan_in = fan_out = shape[0]``; a 0-D shape has fans of 1. Layers pass the
kernel's fans to a *bias* initializer through the keyword-only ``fan_in`` / ``fan_out`` overrides that
every initializer here accepts (any user initializer that declares a ``fan_in`` keyword gets them
too), so ``bias_init="pytorch_default"`` draws from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with the
kernel's ``fan_in``, exactly as PyTorch does.

========================  ===============================================  ============================
name                      distribution                                      variance
========================  ===============================================  ============================
``he_normal``             ``N(0, 2 / fan_in)`` (Kaiming, ReLU gain)         ``2 / fan_in``
``he_uniform``            ``U(-b, b)``, ``b = sqrt(6 / fan_in)``            ``2 / fan_in``
``glorot_normal``         ``N(0, 2 / (fan_in + fan_out))`` (Xavier)         ``2 / (fan_in + fan_out)``
``glorot_uniform``        ``U(-b, b)``, ``b = sqrt(6 / (fan_in + fan_out))`` ``2 / (fan_in + fan_out)``
``lecun_normal``          ``N(0, 1 / fan_in)``                              ``1 / fan_in``
``lecun_uniform``         ``U(-b, b)``, ``b = sqrt(3 / fan_in)``            ``1 / fan_in``
``pytorch_default``       ``U(-b, b)``, ``b = 1 / sqrt(fan_in)``            ``1 / (3 fan_in)``
``zeros`` / ``ones``      constants
========================  ===============================================  ============================

The normal initializers are *untruncated* (PyTorch's ``kaiming_normal_``/``xavier_normal_``; unlike
``jax.nn.initializers``, which truncate at two standard deviations and rescale). ``pytorch_default`` is
PyTorch's default for ``nn.Conv*d``/``nn.Linear`` weights -- ``kaiming_uniform_(a=sqrt(5))``, whose
bound ``sqrt(6 / ((1 + a^2) fan_in))`` is ``1 / sqrt(fan_in)`` -- and for their biases.
The aliases ``kaiming_*`` and ``xavier_*`` name the same functions.

jaxcnn's layers default to ``he_normal`` kernels and ``zeros`` biases (the ResNet paper's choice for
ReLU networks); pass ``kernel_init="pytorch_default", bias_init="pytorch_default"`` for PyTorch's.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from .errors import ConfigError, ConfigTypeError

__all__ = [
    "Initializer",
    "compute_fans",
    "he_normal",
    "he_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "glorot_normal",
    "glorot_uniform",
    "xavier_normal",
    "xavier_uniform",
    "lecun_normal",
    "lecun_uniform",
    "pytorch_default",
    "zeros",
    "ones",
    "get",
    "call",
    "NAMES",
]


class Initializer(Protocol):
    def __call__(self, key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array: ...


def compute_fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a ``(*window, in, out)`` kernel, an ``(in, out)`` matrix or a vector."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _fans(shape, fan_in, fan_out) -> tuple[int, int]:
    computed_in, computed_out = compute_fans(shape)
    fan_in = computed_in if fan_in is None else fan_in
    fan_out = computed_out if fan_out is None else fan_out
    if fan_in < 1 or fan_out < 1:
        raise ConfigError(
            f"initializer: fans must be positive, got fan_in={fan_in}, fan_out={fan_out} for shape {tuple(shape)}"
        )
    return fan_in, fan_out


def _normal(key, shape, dtype, std):
    return (std * jax.random.normal(key, tuple(shape), dtype)).astype(dtype)


def _uniform(key, shape, dtype, bound):
    return jax.random.uniform(key, tuple(shape), dtype, minval=-bound, maxval=bound)


def he_normal(key, shape, dtype=jnp.float32, *, fan_in=None, fan_out=None):
    """Kaiming normal (fan-in mode, ReLU gain ``sqrt(2)``): ``N(0, 2 / fan_in)``."""
    fan_in, _ = _fans(shape, fan_in, fan_out)
    return _normal(key, shape, dtype, math.sqrt(2.0 / fan_in))


def he_uniform(key, shape, dtype=jnp.float32, *, fan_in=None, fan_out=None):
    """Kaiming uniform (fan-in mode, ReLU gain): ``U(-sqrt(6 / fan_in), sqrt(6 / fan_in))``."""
    fan_in, _ = _fans(shape, fan_in, fan_out)
    return _uniform(key, shape, dtype, math.sqrt(6.0 / fan_in))


def glorot_normal(key, shape, dtype=jnp.float32, *, fan_in=None, fan_out=None):
    """Glorot/Xavier normal: ``N(0, 2 / (fan_in + fan_out))``."""
    fan_in, fan_out = _fans(shape, fan_in, fan_out)
    return _normal(key, shape, dtype, math.sqrt(2.0 / (fan_in + fan_out)))


def glorot_uniform(key, shape, dtype=jnp.float32, *, fan_in=None, fan_out=None):
    """Glorot/Xavier uniform: ``U(-b, b)`` with ``b = sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = _fans(shape, fan_in, fan_out)
    return _uniform(key, shape, dtype, math.sqrt(6.0 / (fan_in + fan_out)))


def lecun_normal(key, shape, dtype=jnp.float32, *, fan_in=None, fan_out=None):
    """LeCun normal: ``N(0, 1 / fan_in)``."""
    fan_in, _ = _fans(shape, fan_in, fan_out)
    return _normal(key, shape, dtype, math.sqrt(1.0 / fan_in))


def lecun_uniform(key, shape, dtype=jnp.float32, *, fan_in=None, fan_out=None):
    """LeCun uniform: ``U(-sqrt(3 / fan_in), sqrt(3 / fan_in))``."""
    fan_in, _ = _fans(shape, fan_in, fan_out)
    return _uniform(key, shape, dtype, math.sqrt(3.0 / fan_in))


def pytorch_default(key, shape, dtype=jnp.float32, *, fan_in=None, fan_out=None):
    """PyTorch's default for conv/linear weights and biases: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

    For a bias, pass the kernel's ``fan_in`` (the layers do).
    """
    fan_in, _ = _fans(shape, fan_in, fan_out)
    return _uniform(key, shape, dtype, 1.0 / math.sqrt(fan_in))


def zeros(key, shape, dtype=jnp.float32, *, fan_in=None, fan_out=None):
    """All zeros (the key is ignored)."""
    del key, fan_in, fan_out
    return jnp.zeros(tuple(shape), dtype)


def ones(key, shape, dtype=jnp.float32, *, fan_in=None, fan_out=None):
    """All ones (the key is ignored)."""
    del key, fan_in, fan_out
    return jnp.ones(tuple(shape), dtype)


kaiming_normal = he_normal
kaiming_uniform = he_uniform
xavier_normal = glorot_normal
xavier_uniform = glorot_uniform

_BY_NAME: dict[str, Callable[..., jax.Array]] = {
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "kaiming_normal": kaiming_normal,
    "kaiming_uniform": kaiming_uniform,
    "glorot_normal": glorot_normal,
    "glorot_uniform": glorot_uniform,
    "xavier_normal": xavier_normal,
    "xavier_uniform": xavier_uniform,
    "lecun_normal": lecun_normal,
    "lecun_uniform": lecun_uniform,
    "pytorch_default": pytorch_default,
    "zeros": zeros,
    "ones": ones,
}

NAMES: tuple[str, ...] = tuple(_BY_NAME)


def get(init: Any, arg: str = "init") -> Callable[..., jax.Array]:
    """An initializer from a callable (returned as is) or one of :data:`NAMES`.

    ``arg`` names the argument in error messages (``kernel_init``, ``bias_init``, ...).
    """
    if isinstance(init, str):
        try:
            return _BY_NAME[init]
        except KeyError:
            raise ConfigError(f"Unknown {arg}: {init!r}. It needs to be a callable or one of {list(NAMES)}") from None
    if callable(init):
        return init
    raise ConfigTypeError(f"{arg} must be a callable or one of {list(NAMES)}, got {init!r}")


def _accepts_fans(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return False
    return "fan_in" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def call(init: Callable[..., jax.Array], key, shape, dtype=jnp.float32, *, fan_in=None, fan_out=None) -> jax.Array:
    """``init(key, shape, dtype)``, passing ``fan_in``/``fan_out`` when given and ``init`` accepts them.

    Checks that the result has the requested shape and dtype, naming the initializer otherwise.
    """
    shape = tuple(int(d) for d in shape)
    if (fan_in is not None or fan_out is not None) and _accepts_fans(init):
        out = init(key, shape, dtype, fan_in=fan_in, fan_out=fan_out)
    else:
        out = init(key, shape, dtype)
    out = jnp.asarray(out)
    if tuple(out.shape) != shape:
        raise ConfigError(f"initializer {init!r} returned shape {tuple(out.shape)}, expected {shape}")
    return out.astype(dtype)
