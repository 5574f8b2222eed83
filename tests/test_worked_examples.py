"""The lecture notes' worked numbers, reproduced through the public ops and their hand-derived VJPs.

Indices in formulas are 1-based as in the notes (``x11`` is ``x[0, 0]``). Integer-valued float64 inputs
make every convolution sum exact, so most comparisons are exact. Each convolution example runs along
both of ``conv``'s code paths: one input and one output channel is the depthwise path (shifted
elementwise products); a second output channel (with a zero cotangent) sends it through the
``lax.conv_general_dilated`` correlations with the flipped kernel.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import ops
from jaxcnn.layers import Conv, Dense
from jaxcnn.losses import softmax_cross_entropy

PATHS = ["depthwise", "general"]

# Distinct primes: a term taken from the wrong position changes the sum.
X3 = np.array([[2.0, 3, 5], [7, 11, 13], [17, 19, 23]])
W2 = np.array([[29.0, 31], [37, 41]])


def _value_and_vjp(f, x, w, dy):
    y, vjp = jax.vjp(f, x, w)
    return y, vjp(dy)


def _conv_and_grads(x, w, dy, path, **kwargs):
    """``(y, dx, dw)`` for a single-channel 2-D ``x`` and kernel ``w`` and cotangent ``dy`` of ``y``.

    ``path="general"`` adds a second output channel (kernel ``w + 1``, zero cotangent), so the
    convolution is no longer depthwise; its weight gradient must then be zero.
    """
    x4 = jnp.asarray(x)[None, :, :, None]
    if path == "depthwise":
        w4, dy4 = w[:, :, None, None], dy[None, :, :, None]
    else:
        w4 = np.stack([w, w + 1], axis=-1)[:, :, None, :]
        dy4 = np.stack([dy, np.zeros_like(dy)], axis=-1)[None]
    y, (dx, dw) = jax.jit(lambda x, w, dy: _value_and_vjp(lambda x, w: ops.conv(x, w, **kwargs), x, w, dy))(
        x4, jnp.asarray(w4), jnp.asarray(dy4)
    )
    if path == "general":
        np.testing.assert_array_equal(np.asarray(dw[:, :, 0, 1]), 0.0)
    return np.asarray(y[0, :, :, 0]), np.asarray(dx[0, :, :, 0]), np.asarray(dw[:, :, 0, 0])


# ---------------------------------------------------------------------------------------------
# Backpropagation through a convolution
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_valid_3x3_input_2x2_kernel_gradients(path):
    """Notes: 3x3 input, 2x2 kernel, no padding, stride 1, 2x2 output. ``dE/dw = x * dE/dy`` (valid
    correlation) and ``dE/dx`` = full correlation of ``dE/dy`` with the flipped kernel; all 13 entries."""
    (x11, x12, x13), (x21, x22, x23), (x31, x32, x33) = X3
    (w11, w12), (w21, w22) = W2
    dy = np.array([[43.0, 47], [53, 59]])
    (dy11, dy12), (dy21, dy22) = dy
    y, dx, dw = _conv_and_grads(X3, W2, dy, path)

    y_expected = [
        [w11 * x11 + w12 * x12 + w21 * x21 + w22 * x22, w11 * x12 + w12 * x13 + w21 * x22 + w22 * x23],
        [w11 * x21 + w12 * x22 + w21 * x31 + w22 * x32, w11 * x22 + w12 * x23 + w21 * x32 + w22 * x33],
    ]
    dw_expected = [
        [
            dy11 * x11 + dy12 * x12 + dy21 * x21 + dy22 * x22,  # dE/dw11
            dy11 * x12 + dy12 * x13 + dy21 * x22 + dy22 * x23,  # dE/dw12
        ],
        [
            dy11 * x21 + dy12 * x22 + dy21 * x31 + dy22 * x32,  # dE/dw21
            dy11 * x22 + dy12 * x23 + dy21 * x32 + dy22 * x33,  # dE/dw22
        ],
    ]
    dx_expected = [
        [
            dy11 * w11,  # dE/dx11
            dy11 * w12 + dy12 * w11,  # dE/dx12
            dy12 * w12,  # dE/dx13
        ],
        [
            dy11 * w21 + dy21 * w11,  # dE/dx21
            dy11 * w22 + dy12 * w21 + dy21 * w12 + dy22 * w11,  # dE/dx22
            dy12 * w22 + dy22 * w12,  # dE/dx23
        ],
        [
            dy21 * w21,  # dE/dx31
            dy21 * w22 + dy22 * w21,  # dE/dx32
            dy22 * w22,  # dE/dx33
        ],
    ]
    np.testing.assert_array_equal(y, y_expected)
    np.testing.assert_array_equal(dw, dw_expected)
    np.testing.assert_array_equal(dx, dx_expected)


@pytest.mark.parametrize("path", PATHS)
def test_padded_3x3_input_2x2_kernel_gradients(path):
    """Notes: the same 3x3 input and 2x2 kernel with padding 1 (4x4 output, 4x4 cotangent ``dz``), e.g.
    ``dL/dx11 = dz11 w22 + dz12 w21 + dz21 w12 + dz22 w11``; all nine ``dL/dx`` and four ``dL/dw``.

    ``x_ij`` sits at padded position ``(i+1, j+1)``; output ``(a, b)`` reads padded rows ``a..a+1``,
    columns ``b..b+1``, so ``z_ab = sum_uv w_uv x_(a+u-2)(b+v-2)`` over the taps inside the input.
    """
    (x11, x12, x13), (x21, x22, x23), (x31, x32, x33) = X3
    (w11, w12), (w21, w22) = W2
    dz = np.array([[43.0, 47, 53, 59], [61, 67, 71, 73], [79, 83, 89, 97], [101, 103, 107, 109]])
    (dz11, dz12, dz13, dz14), (dz21, dz22, dz23, dz24), (dz31, dz32, dz33, dz34), (dz41, dz42, dz43, dz44) = dz
    _, dx, dw = _conv_and_grads(X3, W2, dz, path, padding=1)

    dx_expected = [
        [
            dz11 * w22 + dz12 * w21 + dz21 * w12 + dz22 * w11,  # dL/dx11
            dz12 * w22 + dz13 * w21 + dz22 * w12 + dz23 * w11,  # dL/dx12
            dz13 * w22 + dz14 * w21 + dz23 * w12 + dz24 * w11,  # dL/dx13
        ],
        [
            dz21 * w22 + dz22 * w21 + dz31 * w12 + dz32 * w11,  # dL/dx21
            dz22 * w22 + dz23 * w21 + dz32 * w12 + dz33 * w11,  # dL/dx22
            dz23 * w22 + dz24 * w21 + dz33 * w12 + dz34 * w11,  # dL/dx23
        ],
        [
            dz31 * w22 + dz32 * w21 + dz41 * w12 + dz42 * w11,  # dL/dx31
            dz32 * w22 + dz33 * w21 + dz42 * w12 + dz43 * w11,  # dL/dx32
            dz33 * w22 + dz34 * w21 + dz43 * w12 + dz44 * w11,  # dL/dx33
        ],
    ]
    # fmt: off
    dw11 = (dz22 * x11 + dz23 * x12 + dz24 * x13   # outputs a, b = 2..4 read x_(a-1)(b-1)
            + dz32 * x21 + dz33 * x22 + dz34 * x23
            + dz42 * x31 + dz43 * x32 + dz44 * x33)
    dw12 = (dz21 * x11 + dz22 * x12 + dz23 * x13   # a = 2..4, b = 1..3 read x_(a-1)b
            + dz31 * x21 + dz32 * x22 + dz33 * x23
            + dz41 * x31 + dz42 * x32 + dz43 * x33)
    dw21 = (dz12 * x11 + dz13 * x12 + dz14 * x13   # a = 1..3, b = 2..4 read x_a(b-1)
            + dz22 * x21 + dz23 * x22 + dz24 * x23
            + dz32 * x31 + dz33 * x32 + dz34 * x33)
    dw22 = (dz11 * x11 + dz12 * x12 + dz13 * x13   # a, b = 1..3 read x_ab
            + dz21 * x21 + dz22 * x22 + dz23 * x23
            + dz31 * x31 + dz32 * x32 + dz33 * x33)
    # fmt: on
    dw_expected = [[dw11, dw12], [dw21, dw22]]
    np.testing.assert_array_equal(dx, dx_expected)
    np.testing.assert_array_equal(dw, dw_expected)


# ---------------------------------------------------------------------------------------------
# Forward convolutions with stride
# ---------------------------------------------------------------------------------------------

IMAGE_6X6 = np.array(
    [
        [1.0, 0, 0, 0, 0, 1],
        [0, 1, 0, 0, 1, 0],
        [0, 0, 1, 1, 0, 0],
        [1, 0, 0, 0, 1, 0],
        [0, 1, 0, 0, 1, 0],
        [0, 0, 1, 0, 1, 0],
    ]
)
DIAGONAL_FILTER = np.array([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1]])

IMAGE_5X5 = np.array(
    [[1.0, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]],
)
X_FILTER = np.array([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]])


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "image, kernel, stride, expected",
    [
        (IMAGE_6X6, DIAGONAL_FILTER, 1, [[3, -1, -3, -1], [-3, 1, 0, -3], [-3, -3, 0, 1], [3, -2, -2, -1]]),
        (IMAGE_6X6, DIAGONAL_FILTER, 2, [[3, -3], [-3, 0]]),
        (IMAGE_5X5, X_FILTER, 1, [[4, 3, 4], [2, 4, 3], [2, 3, 4]]),
        (IMAGE_5X5, X_FILTER, 2, [[4, 4], [2, 4]]),
    ],
    ids=["6x6-diagonal-stride1", "6x6-diagonal-stride2", "5x5-x-stride1", "5x5-x-stride2"],
)
def test_binary_image_feature_maps(image, kernel, stride, expected, path):
    """Notes: the 6x6 binary image with the diagonal filter (4x4 map at stride 1, 2x2 at stride 2) and
    the 5x5 image with the X filter (3x3 at stride 1, 2x2 at stride 2)."""
    dy = np.ones(np.shape(expected))
    y, _, _ = _conv_and_grads(image, kernel, dy, path, stride=stride)
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("path", PATHS)
def test_stride2_backward_is_stride1_backward_of_upsampled_cotangent(path):
    """Notes: backpropagating through the stride-2 convolution of the 5x5 image equals backpropagating
    through the stride-1 convolution with the 2x2 derivative map upsampled to 3x3, zeros between samples."""
    dz = np.array([[2.0, 3], [5, 7]])
    upsampled = np.array([[2.0, 0, 3], [0, 0, 0], [5, 0, 7]])
    np.testing.assert_array_equal(upsampled[::2, ::2], dz)
    _, dx2, dw2 = _conv_and_grads(IMAGE_5X5, X_FILTER, dz, path, stride=2)
    _, dx1, dw1 = _conv_and_grads(IMAGE_5X5, X_FILTER, upsampled, path, stride=1)
    np.testing.assert_array_equal(dx2, dx1)
    np.testing.assert_array_equal(dw2, dw1)
    assert np.any(dx2 != 0) and np.any(dw2 != 0)


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------

POOL_INPUT = np.array([[1.0, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]])


def _pool_and_grad(pool, x, dy=None, **kwargs):
    """``(y, dx)`` of a 2x2, stride-2 pool of a single-channel 2-D ``x``; ``dy`` defaults to ones."""
    y, vjp = jax.vjp(lambda x: pool(x, 2, **kwargs), jnp.asarray(x)[None, :, :, None])
    dy = np.ones(y.shape) if dy is None else np.asarray(dy)[None, :, :, None]
    (dx,) = vjp(jnp.asarray(dy))
    return np.asarray(y[0, :, :, 0]), np.asarray(dx[0, :, :, 0])


def test_max_pool_values_and_gradient():
    """Notes: 2x2 max pooling, stride 2, of the 4x4 map gives [[6, 8], [3, 4]]; the gradient of a ones
    cotangent is 1 at each window's maximum and 0 elsewhere."""
    y, dx = _pool_and_grad(ops.max_pool, POOL_INPUT)
    np.testing.assert_array_equal(y, [[6, 8], [3, 4]])
    np.testing.assert_array_equal(dx, [[0, 0, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 1]])


def test_max_pool_gradient_goes_to_first_maximum_on_ties():
    """The notes' rule for max pooling's backward pass with ties: each window's cotangent goes to its
    first maximum in row-major order (three tied 8s, two tied 6s, three tied 3s, two tied 4s)."""
    x = np.array([[6.0, 1, 8, 8], [5, 6, 7, 8], [3, 3, 0, 4], [3, 1, 4, 2]])
    y, dx = _pool_and_grad(ops.max_pool, x, dy=[[2.0, 3], [5, 7]])
    np.testing.assert_array_equal(y, [[6, 8], [3, 4]])
    np.testing.assert_array_equal(dx, [[2, 0, 3, 0], [0, 0, 0, 0], [5, 0, 0, 7], [0, 0, 0, 0]])


def test_mean_pool_values_and_gradient():
    """Notes: 2x2 mean pooling, stride 2: [[3.25, 5.25], [2, 2]]; the gradient of a ones cotangent is
    1/4 at every input."""
    y, dx = _pool_and_grad(ops.avg_pool, POOL_INPUT)
    np.testing.assert_array_equal(y, [[3.25, 5.25], [2, 2]])
    np.testing.assert_array_equal(dx, np.full((4, 4), 0.25))


def test_p_norm_pool_values_and_gradient():
    """Notes: 2x2 p-norm pooling with p = 5, ``y = (1/K sum x^p)^(1/p)`` with K = 4:
    [[4.86, 6.61], [2.38, 3.16]] (the notes truncate 4.865 to 4.86). The gradient of a ones cotangent
    is ``(1/K) x^(p-1) y^(1-p)`` with ``y`` the output of ``x``'s window."""
    p, k = 5, 4
    y, dx = _pool_and_grad(ops.lp_pool, POOL_INPUT, p=p)
    np.testing.assert_allclose(y, [[4.86, 6.61], [2.38, 3.16]], atol=0.01)
    # The notes print 8 in the top-right: that is the window's maximum, not its 5-norm mean.
    assert abs(y[0, 1] - 8) > 1
    windows = POOL_INPUT.reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(2, 2, 4)
    np.testing.assert_allclose(y, np.mean(windows**p, axis=-1) ** (1 / p), rtol=1e-12)
    y_per_input = np.kron(y, np.ones((2, 2)))
    np.testing.assert_allclose(dx, POOL_INPUT ** (p - 1) * y_per_input ** (1 - p) / k, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Softmax cross-entropy
# ---------------------------------------------------------------------------------------------


def test_softmax_cross_entropy_gradient_is_prediction_minus_target():
    """Notes: ``dL/dz = y_hat - y`` for softmax followed by cross-entropy. Our loss is the mean over the
    batch, so a batch of one gives ``softmax(z) - onehot(label)`` and a batch of B divides by B."""
    z = np.array([1.0, -0.5, 2.0, 0.3, -1.2])
    label = 2
    y_hat = np.asarray(ops.softmax(z))
    np.testing.assert_allclose(y_hat, np.exp(z) / np.exp(z).sum(), rtol=1e-14)
    onehot = np.eye(5)[label]
    grad = jax.grad(softmax_cross_entropy)(z[None], np.array([label]))
    np.testing.assert_allclose(grad[0], y_hat - onehot, rtol=1e-12, atol=1e-15)
    batch = np.stack([z, z, z])
    grad3 = jax.grad(softmax_cross_entropy)(batch, np.array([label, label, label]))
    np.testing.assert_allclose(grad3, np.tile((y_hat - onehot) / 3, (3, 1)), rtol=1e-12, atol=1e-15)


def test_softmax_cross_entropy_notes_arithmetic():
    """Notes: ``y_hat = [0.5, 0, 0.1, 0.2, 0.1]`` and ``y = e_1`` give ``dL/dz = [-0.5, 0, 0.1, 0.2, 0.1]``.
    Plain arithmetic: those five numbers sum to 0.9, not 1 (and a softmax is never exactly 0), so they
    are not a real softmax output; the identity itself is checked on one above."""
    y_hat = np.array([0.5, 0, 0.1, 0.2, 0.1])
    y = np.eye(5)[0]
    np.testing.assert_allclose(y_hat - y, [-0.5, 0, 0.1, 0.2, 0.1], rtol=0, atol=1e-15)
    assert abs(y_hat.sum() - 0.9) < 1e-12


# ---------------------------------------------------------------------------------------------
# Parameter counts
# ---------------------------------------------------------------------------------------------


def _count(layer, input_shape):
    _, params, _ = layer.init(jax.random.key(0), input_shape)
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))


def test_conv_layer_parameter_count():
    """Notes: a 5x5 convolution with 100 filters on a one-channel 200x200 image has 2,500 weights,
    2,600 with one bias per filter, independent of the image size."""
    assert _count(Conv(100, (5, 5), use_bias=False), (1, 200, 200, 1)) == 2_500
    assert _count(Conv(100, (5, 5)), (1, 200, 200, 1)) == 2_600


def test_dense_layer_parameter_count():
    """Notes: the same 200x200 image densely connected to 100 units needs 4,000,000 weights."""
    assert _count(Dense(100, use_bias=False), (1, 200 * 200)) == 4_000_000
    assert _count(Dense(100), (1, 200 * 200)) == 4_000_100
