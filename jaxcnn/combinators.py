r"""Combinators: layers made of layers, keeping the :class:`~jaxcnn.layers.Layer` contract.

- :func:`serial` ``(f1, ..., fk)``: ``x -> fk(...f1(x))``.
- :func:`parallel` ``(f1, ..., fk)``: ``(x1, ..., xk) -> (f1(x1), ..., fk(xk))``.
- :func:`fan_out` ``(n)``: ``x -> (x, ..., x)``.
- :func:`concatenate` ``(axis)``: ``(x1, ..., xk) -> concat(x1, ..., xk, axis)``.
- :func:`residual` ``(block, shortcut)``: ``x -> block(x) + shortcut(x)``.
- :func:`named` ``((name, f), ...)``: :func:`serial` with params keyed by name (torchvision's module names),
  with optional side outputs (``taps``, GoogLeNet's auxiliary heads).
- :func:`branches` ``((name, f), ...)``: ``x -> concat(f1(x), ..., fk(x))`` (an Inception module).
- :func:`dense_concat` ``(f)``: ``x -> concat(x, f(x))`` (a DenseNet layer).
- :func:`residual_block` ``((name, f), ..., downsample=, activation=)``: a torchvision-style ResNet block.

Params and state of :func:`serial` and :func:`parallel` are **tuples** with one entry per child, in
order (``params[i]`` belongs to the ``i``-th layer); :func:`residual`'s are dicts
``{"block": ..., "shortcut": ...}``. Keys are split deterministically, once per child, with
``jax.random.split(key, len(layers))`` (``residual``: 2); when ``apply`` gets ``key=None`` every child
gets ``None``. ``train`` is passed to every child unchanged.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from .errors import ConfigError, ConfigTypeError
from .layers import Identity, Layer
from .layers.core import annotate, apply_child
from .ops._validate import as_positive_int, is_int

__all__ = [
    "serial",
    "parallel",
    "fan_out",
    "concatenate",
    "residual",
    "named",
    "branches",
    "dense_concat",
    "residual_block",
]


def _check_layers(layers: Sequence[Any], combinator: str) -> tuple[Layer, ...]:
    for i, layer in enumerate(layers):
        if not (callable(getattr(layer, "init", None)) and callable(getattr(layer, "apply", None))):
            hint = " (a constructor? call it, e.g. Dense(10))" if callable(layer) else ""
            raise ConfigTypeError(
                f"{combinator}: argument {i} must be a Layer with init and apply, got {layer!r}{hint}"
            )
    return tuple(Layer(layer.init, layer.apply) for layer in layers)


def _split(key: Any, n: int) -> Sequence[Any]:
    """``n`` child keys, or ``n`` Nones when ``key`` is None."""
    if key is None:
        return (None,) * n
    return tuple(jax.random.split(key, n)) if n else ()


def _init_key(key: Any, combinator: str) -> Any:
    if key is None:
        raise ConfigError(f"{combinator}: init needs a PRNG key (jax.random.key(0)), got key=None")
    return key


def _check_children(tree: Any, n: int, arg: str, combinator: str) -> tuple:
    if not isinstance(tree, (tuple, list)) or len(tree) != n:
        got = f"{type(tree).__name__} of length {len(tree)}" if isinstance(tree, (tuple, list)) else repr(tree)
        raise ConfigError(f"{combinator}: {arg} must be a tuple with one entry per layer ({n}), got {got}")
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
        for i, (layer, p, s, k) in enumerate(zip(layers, params, state, _split(key, n), strict=True)):
            x, s = apply_child(str(i), layer, p, s, x, key=k, train=train)
            new_states.append(s)
        return x, tuple(new_states)

    return annotate(Layer(init, apply), "serial", tuple((str(i), layer) for i, layer in enumerate(layers)))


def parallel(*layers: Layer) -> Layer:
    """Layers side by side: the input is a tuple ``(x1, ..., xk)``, the output ``(f1(x1), ..., fk(xk))``.

    ``init`` takes a tuple of ``k`` input shapes and returns a tuple of output shapes. Params and state
    are tuples, one entry per layer.
    """
    layers = _check_layers(layers, "parallel")
    n = len(layers)

    def _inputs(xs, arg):
        if not isinstance(xs, (tuple, list)) or len(xs) != n:
            raise ConfigError(f"parallel: {arg} must be a tuple with one entry per layer ({n}), got {xs!r}")
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
        for i, (layer, p, s, k, xi) in enumerate(zip(layers, params, state, _split(key, n), xs, strict=True)):
            y, s = apply_child(str(i), layer, p, s, xi, key=k, train=train)
            ys.append(y)
            new_states.append(s)
        return tuple(ys), tuple(new_states)

    return annotate(Layer(init, apply), "parallel", tuple((str(i), layer) for i, layer in enumerate(layers)))


def fan_out(n: int) -> Layer:
    """``x -> (x,) * n``: feeds one input to the ``n`` branches of a :func:`parallel`."""
    n = as_positive_int(n, "n")

    def init(key, input_shape):
        return (input_shape,) * n, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return (x,) * n, state

    return annotate(Layer(init, apply), "fan_out", n=n)


def concatenate(axis: int = -1) -> Layer:
    """``(x1, ..., xk) -> jnp.concatenate([x1, ..., xk], axis)``; ``axis`` counts the batch axis, so the
    default ``-1`` joins channels. Every other axis must agree."""
    if not is_int(axis):
        raise ConfigTypeError(f"axis must be an int, got {axis!r}")
    axis = operator.index(axis)

    def init(key, input_shape):
        if (
            not isinstance(input_shape, (tuple, list))
            or not input_shape
            or not all(isinstance(s, (tuple, list)) for s in input_shape)
        ):
            raise ConfigError(f"concatenate: input_shape must be a non-empty tuple of shapes, got {input_shape!r}")
        shapes = [tuple(s) for s in input_shape]
        rank = len(shapes[0])
        if any(len(s) != rank for s in shapes):
            raise ConfigError(f"concatenate: every input must have the same rank, got shapes {shapes}")
        if not -rank <= axis < rank:
            raise ConfigError(f"concatenate: axis (={axis}) is out of range for inputs of rank {rank}")
        ax = axis % rank
        rest = {s[:ax] + s[ax + 1 :] for s in shapes}
        if len(rest) > 1:
            raise ConfigError(f"concatenate: input shapes must agree except along axis {axis}, got {shapes}")
        out = list(shapes[0])
        out[ax] = sum(s[ax] for s in shapes)
        return tuple(out), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return jnp.concatenate(list(x), axis=axis), state

    return annotate(Layer(init, apply), "concatenate", axis=axis)


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
            raise ConfigError(
                f"residual: block output shape {tuple(block_shape)} and shortcut output shape "
                f"{tuple(shortcut_shape)} must agree (input shape {tuple(input_shape)})"
            )
        params = {"block": block_params, "shortcut": shortcut_params}
        return block_shape, params, {"block": block_state, "shortcut": shortcut_state}

    def apply(params, state, x, *, key=None, train=False):
        block_key, shortcut_key = _split(key, 2)
        y, block_state = apply_child("block", block, params["block"], state["block"], x, key=block_key, train=train)
        s, shortcut_state = apply_child(
            "shortcut", shortcut, params["shortcut"], state["shortcut"], x, key=shortcut_key, train=train
        )
        return y + s, {"block": block_state, "shortcut": shortcut_state}

    return annotate(Layer(init, apply), "residual", (("block", block), ("shortcut", shortcut)))


def _check_pairs(pairs: Sequence[Any], combinator: str) -> tuple[tuple[str, Layer], ...]:
    names = [p[0] if isinstance(p, (tuple, list)) and len(p) == 2 else None for p in pairs]
    if not all(isinstance(n, str) and n for n in names):
        raise ConfigTypeError(
            f"{combinator}: arguments must be (name, layer) pairs with non-empty string names, got {pairs!r}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"{combinator}: names must be unique, got {names}")
    layers = _check_layers([layer for _, layer in pairs], combinator)
    return tuple(zip(names, layers))


def _check_named(tree: Any, names: Sequence[str], arg: str, combinator: str) -> dict:
    if not isinstance(tree, dict) or set(tree) != set(names):
        got = sorted(tree) if isinstance(tree, dict) else repr(tree)
        raise ConfigError(f"{combinator}: {arg} must be a dict with the keys {sorted(names)}, got {got}")
    return tree


def named(*pairs: tuple[str, Layer], taps: Mapping[str, tuple[str, Layer]] | None = None) -> Layer:
    """Layers in sequence, like :func:`serial`, whose params and state are dicts keyed by name.

    ``named(("conv1", Conv(64, 7, stride=2)), ("bn1", BatchNorm()), ("relu", Relu))``: the parameter
    tree reads like the module tree of a PyTorch model (``params["conv1"]["kernel"]``), which is how
    :func:`jaxcnn.models.from_torchvision` maps ``state_dict`` keys onto it.

    ``taps`` adds side outputs: ``{"aux1": ("inception4a", head)}`` applies ``head`` (its params under
    ``"aux1"``) to the output of child ``"inception4a"``; the layer then returns ``(y, *taps)`` in the
    order of ``taps``. Keys are split once per child and tap, in that order.
    """
    pairs = _check_pairs(pairs, "named")
    taps = dict(taps or {})
    children = [name for name, _ in pairs]
    for tap, (after, head) in taps.items():
        if after not in children or tap in children:
            raise ConfigError(
                f"named: tap {tap!r} must follow one of the children {children} under a new name, got {after!r}"
            )
        _check_layers([head], "named")
    names = children + list(taps)

    def init(key, input_shape):
        keys = dict(zip(names, _split(_init_key(key, "named"), len(names))))
        params, states, shape, tapped = {}, {}, input_shape, {}
        for i, (name, layer) in enumerate(pairs):
            try:
                shape, params[name], states[name] = layer.init(keys[name], shape)
            except (ValueError, TypeError) as err:
                err.add_note(f"in named: layer {name!r} ({i} of {len(pairs)})")
                raise
            for tap, (after, head) in taps.items():
                if after == name:
                    tapped[tap], params[tap], states[tap] = head.init(keys[tap], shape)
        return ((shape, *(tapped[t] for t in taps)) if taps else shape), params, states

    def apply(params, state, x, *, key=None, train=False):
        params = _check_named(params, names, "params", "named")
        state = _check_named(state, names, "state", "named")
        keys = dict(zip(names, _split(key, len(names))))
        new_states, tapped = {}, {}
        for name, layer in pairs:
            x, new_states[name] = apply_child(name, layer, params[name], state[name], x, key=keys[name], train=train)
            for tap, (after, head) in taps.items():
                if after == name:
                    tapped[tap], new_states[tap] = apply_child(
                        tap, head, params[tap], state[tap], x, key=keys[tap], train=train
                    )
        return ((x, *(tapped[t] for t in taps)) if taps else x), new_states

    return annotate(
        Layer(init, apply),
        "named",
        (*pairs, *((tap, head) for tap, (_, head) in taps.items())),
        taps={t: a for t, (a, _) in taps.items()},
    )


def _concat_shapes(shapes: Sequence[tuple[int, ...]], combinator: str) -> tuple[int, ...]:
    """The shape of the inputs joined along the last axis; every other axis must agree."""
    if len({tuple(s[:-1]) for s in shapes}) > 1:
        raise ConfigError(f"{combinator}: the outputs must agree except in channels, got shapes {list(shapes)}")
    return (*shapes[0][:-1], sum(s[-1] for s in shapes))


def branches(*pairs: tuple[str, Layer]) -> Layer:
    """``x -> concat([f1(x), ..., fk(x)], channels)`` with params ``{name: ...}``: an Inception module
    (its branches named as torchvision names them: ``branch1`` ... ``branch4``). The same as
    ``serial(fan_out(k), parallel(...), concatenate())`` with named parameters."""
    pairs = _check_pairs(pairs, "branches")
    names = [name for name, _ in pairs]

    def init(key, input_shape):
        keys = _split(_init_key(key, "branches"), len(pairs))
        shapes, params, states = [], {}, {}
        for (name, layer), k in zip(pairs, keys):
            shape, params[name], states[name] = layer.init(k, input_shape)
            shapes.append(tuple(shape))
        return _concat_shapes(shapes, "branches"), params, states

    def apply(params, state, x, *, key=None, train=False):
        params = _check_named(params, names, "params", "branches")
        state = _check_named(state, names, "state", "branches")
        ys, new_states = [], {}
        for (name, layer), k in zip(pairs, _split(key, len(pairs))):
            y, new_states[name] = apply_child(name, layer, params[name], state[name], x, key=k, train=train)
            ys.append(y)
        return jnp.concatenate(ys, axis=-1), new_states

    return annotate(Layer(init, apply), "branches", pairs)


def dense_concat(layer: Layer) -> Layer:
    """``x -> concat([x, layer(x)], channels)``: a DenseNet layer, each layer fed every earlier feature
    map. Params and state are ``layer``'s own."""
    (layer,) = _check_layers([layer], "dense_concat")

    def init(key, input_shape):
        shape, params, state = layer.init(key, input_shape)
        return _concat_shapes([tuple(input_shape), tuple(shape)], "dense_concat"), params, state

    def apply(params, state, x, *, key=None, train=False):
        y, state = apply_child("", layer, params, state, x, key=key, train=train)
        return jnp.concatenate([x, y], axis=-1), state

    return annotate(Layer(init, apply), "dense_concat", (("", layer),))


def residual_block(
    *pairs: tuple[str, Layer], downsample: Layer | None = None, activation: Layer | None = None
) -> Layer:
    """``x -> activation(body(x) + shortcut(x))`` with ``body = named(*pairs)`` and the shortcut the
    identity or ``downsample``: a ResNet block whose params read like torchvision's
    (``{"conv1": ..., "bn1": ..., ..., "downsample": ...}``). ``activation`` is a parameterless layer
    (``Relu``) or None. Keys: the body's, then the shortcut's."""
    body = named(*pairs)
    names = [name for name, _ in pairs]
    if "downsample" in names:
        raise ConfigError("residual_block: 'downsample' names the shortcut; give that child another name")
    shortcut, post = _check_layers([downsample or Identity, activation or Identity], "residual_block")

    def init(key, input_shape):
        body_key, shortcut_key = _split(_init_key(key, "residual_block"), 2)
        shape, params, state = body.init(body_key, input_shape)
        skip_shape, skip_params, skip_state = shortcut.init(shortcut_key, input_shape)
        if tuple(shape) != tuple(skip_shape):
            raise ConfigError(
                f"residual_block: body output shape {tuple(shape)} and shortcut output shape {tuple(skip_shape)} "
                f"must agree (input shape {tuple(input_shape)})"
            )
        if downsample is not None:
            params, state = {**params, "downsample": skip_params}, {**state, "downsample": skip_state}
        return post.init(None, shape)[0], params, state

    def apply(params, state, x, *, key=None, train=False):
        body_key, shortcut_key = _split(key, 2)
        y, new_state = body.apply(
            {n: params[n] for n in names}, {n: state[n] for n in names}, x, key=body_key, train=train
        )
        if downsample is not None:
            skip, new_state["downsample"] = apply_child(
                "downsample", shortcut, params["downsample"], state["downsample"], x, key=shortcut_key, train=train
            )
        else:
            skip = x
        return post.apply({}, {}, y + skip)[0], new_state

    children = (*pairs, *((("downsample", downsample),) if downsample is not None else ()))
    return annotate(Layer(init, apply), "residual_block", children, activation=post)
