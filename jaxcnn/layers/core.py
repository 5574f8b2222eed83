r"""The layer protocol and :func:`bind`.

The contract every layer (and every combinator and model) keeps::

    class Layer(NamedTuple):
        init:  init(key, input_shape) -> (output_shape, params, state)
        apply: apply(params, state, x, *, key=None, train=False) -> (y, new_state)

Layer families register their constructors here (:func:`constructor`, :func:`value_layers`), so
:func:`bind` can build every one of them on another ``ops`` (in practice :mod:`jaxcnn.reference`).
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any, NamedTuple, Protocol

import jax

from ..errors import ConfigTypeError
from ._config import check_ops

__all__ = [
    "Layer",
    "InitFn",
    "ApplyFn",
    "bind",
    "abstract_init",
    "constructor",
    "value_layers",
    "ops_free",
    "LayerInfo",
    "describe",
    "annotate",
    "capture_intermediates",
    "apply_child",
]


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
            raise ConfigTypeError(f"{constructor_fn.__name__}: ops is already bound to {ops!r}")
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


def abstract_init(layer: Layer, input_shape: Any, key: jax.Array | None = None) -> tuple[Any, Any, Any]:
    """``layer.init`` traced, not run: the output shape (plain ints, from the shape arithmetic) and params
    and state as ``jax.ShapeDtypeStruct`` pytrees. Nothing is computed or allocated."""
    box = {}

    def init(key):
        box["out"], params, state = layer.init(key, input_shape)
        return params, state

    params, state = jax.eval_shape(init, jax.random.key(0) if key is None else key)
    return box["out"], params, state


# ---------------------------------------------------------------------------------------------
# What a layer is (for jaxcnn.inspect) and its intermediate outputs
# ---------------------------------------------------------------------------------------------


class LayerInfo(NamedTuple):
    """A description of a layer for :func:`jaxcnn.inspect.summary`: its kind (``"Conv"``, ``"MaxPool"``,
    ``"serial"``, ...), its configuration (window geometry for convolutions and pools) and, for a
    combinator, its children in order with their names. Descriptive only: nothing computes with it."""

    kind: str
    config: dict
    children: tuple[tuple[str, Any], ...] = ()


# keyed by the layer's init function, so a description lives exactly as long as its layer
_INFO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def annotate(layer: Layer, kind: str, children: tuple[tuple[str, Any], ...] = (), **config: Any) -> Layer:
    """Attach a :class:`LayerInfo` to ``layer`` (returned unchanged)."""
    _INFO[layer.init] = LayerInfo(kind, config, tuple(children))
    return layer


def describe(layer: Any) -> LayerInfo | None:
    """The :class:`LayerInfo` of a layer built by jaxcnn, None for one built by hand."""
    try:
        return _INFO.get(layer.init)
    except TypeError:  # not weak-referenceable
        return None


# While capture_intermediates is active: (the dict being filled, the current path).
_CAPTURE: contextvars.ContextVar[tuple[dict, str] | None] = contextvars.ContextVar("jaxcnn_capture", default=None)


@contextlib.contextmanager
def capture_intermediates() -> Iterator[dict]:
    """Record the output of every child of every combinator applied inside the block, by its dotted path
    (``"features.0"``, ``"layer1.0.conv1"``; a ``serial`` child by its index)::

        with capture_intermediates() as outputs:
            logits, _ = model.apply(params, state, x)
        outputs["layer1.0.conv1"]

    Works under ``jax.jit``/``jax.grad`` when the captured values are returned from the traced function.
    """
    token = _CAPTURE.set(({}, ""))
    try:
        yield _CAPTURE.get()[0]
    finally:
        _CAPTURE.reset(token)


def apply_child(name: str, layer: Layer, params: Any, state: Any, x: Any, *, key: Any, train: bool):
    """``layer.apply`` for a combinator's child ``name``: its path extends the current one, and its output
    is recorded when :func:`capture_intermediates` is active."""
    capture = _CAPTURE.get()
    if capture is None:
        return layer.apply(params, state, x, key=key, train=train)
    outputs, prefix = capture
    path = f"{prefix}.{name}" if prefix and name else prefix or name
    token = _CAPTURE.set((outputs, path))
    try:
        y, new_state = layer.apply(params, state, x, key=key, train=train)
    finally:
        _CAPTURE.reset(token)
    outputs[path] = y
    return y, new_state
