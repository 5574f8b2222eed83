"""``conv_matrix``: the convolution as the matrix ``M`` with ``conv(x).ravel() == M @ x.ravel()``.

``M.T`` must then be the transposed convolution and the hand-derived input gradient; gradients
through ``M`` must equal the hand-derived weight gradient.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn.ops.matrix as matrix_module
from jaxcnn.ops import conv, conv_transpose
from jaxcnn.ops.conv import conv_spec, output_shape
from jaxcnn.ops.matrix import MAX_CONV_MATRIX_ENTRIES, conv_matrix

TOL = 1e-12

# (one example's shape (*spatial, C_in), window, C_out, conv keyword arguments)
CONFIGS = {
    "1d-stride2-asym-pad-unreached-row": ((9, 2), (3,), 3, dict(stride=2, padding=((1, 2),))),
    "1d-dilation2-same": ((8, 1), (3,), 2, dict(dilation=2, padding="SAME")),
    "1d-window-all-padding-rows": ((2, 1), (3,), 1, dict(padding=3)),
    "2d-notes-3x3-2x2": ((3, 3, 1), (2, 2), 1, {}),
    "2d-stride-dilation-asym-pad": (
        (5, 6, 3),
        (3, 2),
        4,
        dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2)),
    ),
    "2d-same-stride2": ((7, 6, 2), (3, 3), 3, dict(stride=2, padding="SAME")),
    "2d-groups2": ((4, 5, 4), (2, 2), 6, dict(groups=2, padding=1)),
    "2d-depthwise": ((6, 5, 3), (3, 3), 3, dict(groups=3, padding="SAME")),
    "2d-depthwise-multiplier2": ((5, 5, 2), (2, 3), 4, dict(groups=2, stride=(1, 2))),
    "2d-depthwise-stride-dilation": (
        (7, 6, 2),
        (2, 2),
        2,
        dict(groups=2, stride=2, dilation=2, padding=((0, 1), (1, 0))),
    ),
    "3d-stride-dilation-pad": (
        (4, 5, 3, 2),
        (2, 3, 2),
        3,
        dict(stride=(1, 2, 1), padding=((1, 0), (0, 1), (1, 1)), dilation=(2, 1, 1)),
    ),
    "3d-depthwise-stride2": ((3, 4, 4, 2), (2, 2, 2), 2, dict(groups=2, stride=2)),
}


def _problem(name, seed=0):
    """``(x, w, dz, kwargs)`` in float64: one example, its kernel and a cotangent of the output's shape."""
    in_shape, window, c_out, kwargs = CONFIGS[name]
    rng = np.random.default_rng(seed)
    groups = kwargs.get("groups", 1)
    x = rng.standard_normal(in_shape)
    w = rng.standard_normal((*window, in_shape[-1] // groups, c_out))
    spec = conv_spec(jax.ShapeDtypeStruct((1, *in_shape), x.dtype), w, **_spec_args(kwargs))
    dz = rng.standard_normal(output_shape((1, *in_shape), window, c_out, spec)[1:])
    return x, w, dz, kwargs


def _spec_args(kwargs):
    return {"stride": 1, "padding": "VALID", "dilation": 1, "groups": 1, **kwargs}


def _matrix(w, shape, kwargs):
    """``conv_matrix`` jitted: one compile, not one per eager primitive of its scatter."""
    return jax.jit(lambda w: conv_matrix(w, shape, **kwargs))(w)


def _close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("name", CONFIGS)
def test_matrix_times_input_is_the_convolution(name):
    """``conv(x).ravel() == M @ x.ravel()``; ``M`` has one row per output entry, one column per input entry."""
    x, w, dz, kwargs = _problem(name)
    m = _matrix(w, x.shape, kwargs)
    assert m.shape == (dz.size, x.size) and m.dtype == jnp.float64
    _close(m @ x.ravel(), conv(x[None], w, **kwargs).ravel())


@pytest.mark.parametrize("name", CONFIGS)
def test_matrix_transpose_is_the_transposed_convolution(name):
    """``conv_transpose(y).ravel() == M.T @ y.ravel()`` with the forward's explicit padding and, as
    ``output_padding``, the rows its strided windows leave unreached."""
    x, w, y, kwargs = _problem(name)
    args = _spec_args(kwargs)
    spec = conv_spec(jax.ShapeDtypeStruct((1, *x.shape), x.dtype), w, **args)
    window = w.shape[:-2]
    unreached = [
        (n + lo + hi - d * (k - 1) - 1) % s
        for n, k, s, d, (lo, hi) in zip(x.shape[:-1], window, spec.strides, spec.dilation, spec.padding)
    ]
    out = conv_transpose(
        y[None],
        w,
        stride=spec.strides,
        padding=spec.padding,
        dilation=spec.dilation,
        output_padding=tuple(unreached),
        groups=spec.groups,
    )
    assert out.shape == (1, *x.shape)
    _close(out.ravel(), _matrix(w, x.shape, kwargs).T @ y.ravel())


@pytest.mark.parametrize("name", CONFIGS)
def test_matrix_transpose_is_the_hand_derived_input_gradient(name):
    """The VJP of ``conv`` in ``x`` (upsampled cotangent correlated with the flipped kernel) is ``M.T dz``."""
    x, w, dz, kwargs = _problem(name)
    dx = jax.jit(lambda x, dz: jax.vjp(lambda x: conv(x, w, **kwargs), x)[1](dz)[0])(x[None], dz[None])
    _close(dx.ravel(), _matrix(w, x.shape, kwargs).T @ dz.ravel())


@pytest.mark.parametrize("name", CONFIGS)
def test_gradient_through_matrix_is_the_hand_derived_weight_gradient(name):
    """``d/dw <dz, M(w) x>`` by autodiff through ``M``'s scatter equals ``conv``'s hand-derived weight gradient."""
    x, w, dz, kwargs = _problem(name)
    dw_matrix = jax.jit(jax.grad(lambda w: dz.ravel() @ conv_matrix(w, x.shape, **kwargs) @ x.ravel()))(w)
    dw = jax.jit(lambda w: jax.vjp(lambda w: conv(x[None], w, **kwargs), w)[1](dz[None])[0])(w)
    _close(dw_matrix, dw)


def test_notes_example_is_exactly_the_4x9_matrix():
    """Lecture notes: 3x3 input, 2x2 kernel, no padding, stride 1 -> ``M`` is 4x9, one row per window
    (the notes print its 9x4 transpose). Distinct primes as kernel values, compared exactly."""
    w11, w12, w21, w22 = 2.0, 3.0, 5.0, 7.0
    w = np.array([[w11, w12], [w21, w22]]).reshape(2, 2, 1, 1)
    expected = np.array(
        [
            [w11, w12, 0, w21, w22, 0, 0, 0, 0],
            [0, w11, w12, 0, w21, w22, 0, 0, 0],
            [0, 0, 0, w11, w12, 0, w21, w22, 0],
            [0, 0, 0, 0, w11, w12, 0, w21, w22],
        ]
    )
    np.testing.assert_array_equal(np.asarray(conv_matrix(w, (3, 3, 1))), expected)
    np.testing.assert_array_equal(np.asarray(conv_matrix(w, (1, 3, 3, 1))), expected)  # batch axis of 1


def test_works_under_jit_and_in_float32():
    """Index arrays are NumPy constants at trace time: ``jit`` over ``w`` gives the same matrix."""
    x, w, _, kwargs = _problem("2d-groups2")
    build = jax.jit(lambda w: conv_matrix(w, x.shape, **kwargs))
    np.testing.assert_array_equal(np.asarray(build(w)), np.asarray(conv_matrix(w, x.shape, **kwargs)))
    m32 = conv_matrix(w.astype(np.float32), x.shape, **kwargs)
    assert m32.dtype == jnp.float32


def test_refuses_matrices_over_the_size_limit():
    """A 65x65 single-channel input with a 1x1 kernel needs a 4225 x 4225 matrix: over 2**24 entries."""
    assert MAX_CONV_MATRIX_ENTRIES == 2**24
    w = np.ones((1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"\(4225, 4225\) = 17850625 entries.*16777216"):
        conv_matrix(w, (65, 65, 1))


def test_size_limit_is_inclusive(monkeypatch):
    """The notes' 4x9 matrix has 36 entries: built at a limit of 36, refused at 35."""
    w = np.ones((2, 2, 1, 1))
    monkeypatch.setattr(matrix_module, "MAX_CONV_MATRIX_ENTRIES", 36)
    assert conv_matrix(w, (3, 3, 1)).shape == (4, 9)
    monkeypatch.setattr(matrix_module, "MAX_CONV_MATRIX_ENTRIES", 35)
    with pytest.raises(ValueError, match=r"\(4, 9\) = 36 entries"):
        conv_matrix(w, (3, 3, 1))


W2D = np.ones((2, 2, 1, 1))


@pytest.mark.parametrize(
    "w, input_shape, kwargs, error, match",
    [
        (W2D, (2, 3, 3, 1), {}, ValueError, "batch size 2"),
        (W2D, (3, 1), {}, ValueError, "2 spatial axes"),
        (W2D, (1, 1, 3, 3, 1), {}, ValueError, "2 spatial axes"),
        (W2D, (0, 3, 1), {}, ValueError, "positive"),
        (W2D, (3.0, 3, 1), {}, TypeError, "tuple of ints"),
        (W2D, "331", {}, TypeError, "tuple of ints"),
        (W2D, 3, {}, TypeError, "tuple of ints"),
        (W2D, (3, 3, 2), {}, ValueError, "must equal w.shape"),
        (W2D, (1, 3, 1), {}, ValueError, "larger than"),
        (W2D, (3, 3, 1), {"padding": "FULL"}, ValueError, "padding"),
        (W2D, (3, 3, 1), {"stride": 0}, ValueError, "stride"),
        (np.ones((2, 2, 1, 3)), (3, 3, 2), {"groups": 2}, ValueError, "groups"),
        (np.ones((2, 2, 1, 1), dtype=np.int32), (3, 3, 1), {}, TypeError, "floating"),
        (np.ones((2, 2)), (3, 3), {}, ValueError, "rank 3, 4 or 5"),
    ],
)
def test_argument_errors(w, input_shape, kwargs, error, match):
    """Bad shapes and configurations are refused with a message naming the problem."""
    with pytest.raises(error, match=match):
        conv_matrix(w, input_shape, **kwargs)
