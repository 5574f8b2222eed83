r"""Combinators: layers made of layers, keeping the :class:`~jaxcnn.layers.Layer` contract.

- :func:`serial` ``(f1, ..., fk)``: ``x -> fk(...f1(x))``.
- :func:`parallel` ``(f1, ..., fk)``: ``(x1, ..., xk) -> (f1(x1), ..., fk(xk))``.
- :func:`fan_out` ``(n)``: ``x -> (x, ..., x)``.
- :func:`concatenate` ``(axis)``: ``(x1, ..., xk) -> concat(x1, ..., xk, axis)``.
- :func:`residual` ``(block, shortcut)``: ``x -> block(x) + shortcut(x)``.

Params and state of :func:`serial` and :func:`parallel` are **tuples** with one entry per child, in
order (``params[i]`` belongs to the ``i``-th layer); :func:`residual`'s are dicts
``{"block": ..., "shortcut": ...}``. Keys are split deterministically, once per child, with
``jax.random.split(key, len(layers))`` (``residual``: 2); when ``apply`` gets ``key=None`` every child
gets ``None``. ``train`` is passed to every child unchanged.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from .layers import Identity, Layer
from .ops._padding import is_int
from .ops._validate import as_positive_int

__all__ = ["serial", "parallel", "fan_out", "concatenate", "residual"]


def _check_layers(layers: Sequence[Any], combinator: str) -> tuple[Layer, ...]:
    for i, layer in enumerate(layers):
        if not (callable(getattr(layer, "init", None)) and callable(getattr(layer, "apply", None))):
            hint = " (a constructor? call it, e.g. Dense(10))" if callable(layer) else ""
            raise TypeError(f"{combinator}: argument {i} must be a Layer with init and apply, got {layer!r}{hint}")
    return tuple(Layer(layer.init, layer.apply) for layer in layers)


def _split(key: Any, n: int) -> Sequence[Any]:
    """``n`` child keys, or ``n`` Nones when ``key`` is None."""
    if key is None:
        return (None,) * n
    return tuple(jax.random.split(key, n)) if n else ()


def _init_key(key: Any, combinator: str) -> Any:
    if key is None:
        raise ValueError(f"{combinator}: init needs a PRNG key (jax.random.key(0)), got key=None")
    return key


def _check_children(tree: Any, n: int, arg: str, combinator: str) -> tuple:
    if not isinstance(tree, (tuple, list)) or len(tree) != n:
        got = f"{type(tree).__name__} of length {len(tree)}" if isinstance(tree, (tuple, list)) else repr(tree)
        raise ValueError(f"{combinator}: {arg} must be a tuple with one entry per layer ({n}), got {got}")
    return tuple(tree)


def serial(*layers: Layer) -> Layer:
    """Layers in sequence: the output of each is the input of the next. ``serial()`` is the identity.

    Params and state are tuples, one entry per layer.
    """
    layers = _check_layers(layers, "serial")
    n = len(layers)

    def init(key, input_shape):
        keys = _split(_init_key(key, "serial"), n)
        params, states, shape = [], [], input_shape
        for i, (layer, k) in enumerate(zip(layers, keys, strict=True)):
            try:
                shape, p, s = layer.init(k, shape)
            except (ValueError, TypeError) as err:
                err.add_note(f"in serial: layer {i} of {n}")
                raise
            params.append(p)
            states.append(s)
        return shape, tuple(params), tuple(states)

    def apply(params, state, x, *, key=None, train=False):
        params = _check_children(params, n, "params", "serial")
        state = _check_children(state, n, "state", "serial")
        new_states = []
        for layer, p, s, k in zip(layers, params, state, _split(key, n), strict=True):
            x, s = layer.apply(p, s, x, key=k, train=train)
            new_states.append(s)
        return x, tuple(new_states)

    return Layer(init, apply)


def parallel(*layers: Layer) -> Layer:
    """Layers side by side: the input is a tuple ``(x1, ..., xk)``, the output ``(f1(x1), ..., fk(xk))``.

    ``init`` takes a tuple of ``k`` input shapes and returns a tuple of output shapes. Params and state
    are tuples, one entry per layer.
    """
    layers = _check_layers(layers, "parallel")
    n = len(layers)

    def _inputs(xs, arg):
        if not isinstance(xs, (tuple, list)) or len(xs) != n:
            raise ValueError(f"parallel: {arg} must be a tuple with one entry per layer ({n}), got {xs!r}")
        return tuple(xs)

    def init(key, input_shape):
        shapes = _inputs(input_shape, "input_shape")
        keys = _split(_init_key(key, "parallel"), n)
        outs, params, states = [], [], []
        for i, (layer, k, shape) in enumerate(zip(layers, keys, shapes, strict=True)):
            try:
                out, p, s = layer.init(k, shape)
            except (ValueError, TypeError) as err:
                err.add_note(f"in parallel: layer {i} of {n}")
                raise
            outs.append(out)
            params.append(p)
            states.append(s)
        return tuple(outs), tuple(params), tuple(states)

    def apply(params, state, x, *, key=None, train=False):
        xs = _inputs(x, "x")
        params = _check_children(params, n, "params", "parallel")
        state = _check_children(state, n, "state", "parallel")
        ys, new_states = [], []
        for layer, p, s, k, xi in zip(layers, params, state, _split(key, n), xs, strict=True):
            y, s = layer.apply(p, s, xi, key=k, train=train)
            ys.append(y)
            new_states.append(s)
        return tuple(ys), tuple(new_states)

    return Layer(init, apply)


def fan_out(n: int) -> Layer:
    """``x -> (x,) * n``: feeds one input to the ``n`` branches of a :func:`parallel`."""
    n = as_positive_int(n, "n")

    def init(key, input_shape):
        return (input_shape,) * n, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return (x,) * n, state

    return Layer(init, apply)


def concatenate(axis: int = -1) -> Layer:
    """``(x1, ..., xk) -> jnp.concatenate([x1, ..., xk], axis)``; ``axis`` counts the batch axis, so the
    default ``-1`` joins channels. Every other axis must agree."""
    if not is_int(axis):
        raise TypeError(f"axis must be an int, got {axis!r}")
    axis = operator.index(axis)

    def init(key, input_shape):
        if (
            not isinstance(input_shape, (tuple, list))
            or not input_shape
            or not all(isinstance(s, (tuple, list)) for s in input_shape)
        ):
            raise ValueError(f"concatenate: input_shape must be a non-empty tuple of shapes, got {input_shape!r}")
        shapes = [tuple(s) for s in input_shape]
        rank = len(shapes[0])
        if any(len(s) != rank for s in shapes):
            raise ValueError(f"concatenate: every input must have the same rank, got shapes {shapes}")
        if not -rank <= axis < rank:
            raise ValueError(f"concatenate: axis (={axis}) is out of range for inputs of rank {rank}")
        ax = axis % rank
        rest = {s[:ax] + s[ax + 1 :] for s in shapes}
        if len(rest) > 1:
            raise ValueError(f"concatenate: input shapes must agree except along axis {axis}, got {shapes}")
        out = list(shapes[0])
        out[ax] = sum(s[ax] for s in shapes)
        return tuple(out), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return jnp.concatenate(list(x), axis=axis), state

    return Layer(init, apply)


def residual(block: Layer, shortcut: Layer = Identity) -> Layer:
    """``x -> block(x) + shortcut(x)``, the skip connection of a residual network.

    The shortcut is the identity by default, or any layer that maps the input to ``block``'s output
    shape (a strided ``1x1`` convolution, a parameter-free subsample-and-pad, ...). ``init`` refuses
    output shapes that differ. Params and state: ``{"block": ..., "shortcut": ...}``.
    """
    block, shortcut = _check_layers((block, shortcut), "residual")

    def init(key, input_shape):
        block_key, shortcut_key = _split(_init_key(key, "residual"), 2)
        block_shape, block_params, block_state = block.init(block_key, input_shape)
        shortcut_shape, shortcut_params, shortcut_state = shortcut.init(shortcut_key, input_shape)
        if tuple(block_shape) != tuple(shortcut_shape):
            raise ValueError(
                f"residual: block output shape {tuple(block_shape)} and shortcut output shape "
                f"{tuple(shortcut_shape)} must agree (input shape {tuple(input_shape)})"
            )
        params = {"block": block_params, "shortcut": shortcut_params}
        return block_shape, params, {"block": block_state, "shortcut": shortcut_state}

    def apply(params, state, x, *, key=None, train=False):
        block_key, shortcut_key = _split(key, 2)
        y, block_state = block.apply(params["block"], state["block"], x, key=block_key, train=train)
        s, shortcut_state = shortcut.apply(params["shortcut"], state["shortcut"], x, key=shortcut_key, train=train)
        return y + s, {"block": block_state, "shortcut": shortcut_state}

    return Layer(init, apply)
