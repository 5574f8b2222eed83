r"""The layer protocol and :func:`bind`.

The contract every layer (and every combinator and model) keeps::

    class Layer(NamedTuple):
        init:  init(key, input_shape) -> (output_shape, params, state)
        apply: apply(params, state, x, *, key=None, train=False) -> (y, new_state)

Layer families register their constructors here (:func:`constructor`, :func:`value_layers`), so
:func:`bind` can build every one of them on another ``ops`` (in practice :mod:`jaxcnn.reference`).
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, NamedTuple, Protocol

import jax

from ._config import check_ops

__all__ = ["Layer", "InitFn", "ApplyFn", "bind", "constructor", "value_layers", "ops_free"]


class InitFn(Protocol):
    def __call__(self, key: jax.Array, input_shape: Any) -> tuple[Any, Any, Any]: ...


class ApplyFn(Protocol):
    def __call__(
        self, params: Any, state: Any, x: Any, *, key: jax.Array | None = None, train: bool = False
    ) -> tuple[Any, Any]: ...


class Layer(NamedTuple):
    """A layer: ``init(key, input_shape) -> (output_shape, params, state)`` and
    ``apply(params, state, x, *, key=None, train=False) -> (y, new_state)``."""

    init: InitFn
    apply: ApplyFn


# name -> constructor taking a keyword-only ``ops``; value-layer factories ``ops -> {name: Layer}``;
# layers that use no op at all; and every op name those use (what ``bind`` asks of its ``ops``).
_CONSTRUCTORS: dict[str, Callable[..., Layer]] = {}
_VALUE_FACTORIES: list[Callable[[Any], dict[str, Layer]]] = []
_OPS_FREE: dict[str, Any] = {}
_OPS_USED: set[str] = set()


def constructor(*op_names: str):
    """Register a layer constructor (it takes ``ops=``) that computes with the ops ``op_names``."""

    def register(fn):
        _CONSTRUCTORS[fn.__name__] = fn
        _OPS_USED.update(op_names)
        return fn

    return register


def value_layers(*op_names: str):
    """Register a factory ``ops -> {name: Layer}`` of parameterless value layers (``Relu``, ...)."""

    def register(factory):
        _VALUE_FACTORIES.append(factory)
        _OPS_USED.update(op_names)
        return factory

    return register


def ops_free(name: str, layer: Any) -> Any:
    """Register a layer or constructor that uses no op (``Dropout``, ``Flatten``, ``Identity``)."""
    _OPS_FREE[name] = layer
    return layer


def _bound(constructor_fn: Callable[..., Layer], ops: Any) -> Callable[..., Layer]:
    def make(*args, **kwargs):
        if "ops" in kwargs:
            raise TypeError(f"{constructor_fn.__name__}: ops is already bound to {ops!r}")
        return constructor_fn(*args, ops=ops, **kwargs)

    make.__name__ = make.__qualname__ = constructor_fn.__name__
    make.__doc__ = constructor_fn.__doc__
    return make


def bind(ops: Any) -> SimpleNamespace:
    """Every layer constructor and value layer, built on ``ops`` (e.g. :mod:`jaxcnn.reference`).

    ``bind(jaxcnn.ops)`` is equivalent to :mod:`jaxcnn.layers`. Layers without ops (``Dropout``,
    ``Flatten``, ``Identity``) are included so a network can be written against the namespace alone.
    """
    check_ops(ops, *sorted(_OPS_USED))
    namespace: dict[str, Any] = {name: _bound(fn, ops) for name, fn in _CONSTRUCTORS.items()}
    for factory in _VALUE_FACTORIES:
        namespace.update(factory(ops))
    namespace.update(_OPS_FREE)
    namespace["ops"] = ops
    return SimpleNamespace(**namespace)
