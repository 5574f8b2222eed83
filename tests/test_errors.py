"""Invalid configuration is refused before any computation, naming the argument and its value.

Each check runs under ``jax.eval_shape`` too: the error is raised at trace time, not by XLA.
"""

import jax
import jax.numpy as jnp
import pytest

from jaxcnn import losses, ops, reference

X = jnp.zeros((2, 8, 8, 4))
W = jnp.zeros((3, 3, 4, 6))

CASES = [
    # (op, args, kwargs, exception, message regex)
    (
        "conv",
        (X, W),
        dict(stride=(0, 1)),
        ValueError,
        r"stride must be a positive int or tuple of 2 ints, got \(0, 1\)",
    ),
    ("conv", (X, W), dict(stride=-2), ValueError, r"stride must be a positive int .* got -2"),
    ("conv", (X, W), dict(dilation=(1, 0)), ValueError, r"dilation must be a positive int .* got \(1, 0\)"),
    ("conv", (X, W), dict(stride=(1, 1, 1)), ValueError, r"stride must be .*tuple of 2 ints, got \(1, 1, 1\)"),
    ("conv", (X, W), dict(padding="FULL"), ValueError, r"padding must be one of \['VALID', 'SAME'.*got 'FULL'"),
    ("conv", (X, W), dict(padding=-1), ValueError, r"padding must be .*non-negative.*got -1"),
    ("conv", (X, W), dict(padding=((1, 2),)), ValueError, r"padding must be .*got \(\(1, 2\),\)"),
    ("conv", (X, W), dict(groups=0), ValueError, r"groups must be a positive int, got 0"),
    ("conv", (X, W), dict(groups=3), ValueError, r"groups \(=3\) must divide the input channels x.shape\[-1\] \(=4\)"),
    (
        "conv",
        (X, jnp.zeros((3, 3, 2, 5))),
        dict(groups=2),
        ValueError,
        r"groups \(=2\) must divide the output channels",
    ),
    (
        "conv",
        (X, jnp.zeros((3, 3, 3, 6))),
        {},
        ValueError,
        r"input channels x.shape\[-1\] \(=4\) must equal w.shape\[-2\] \* groups \(=3 \* 1\)",
    ),
    ("conv", (jnp.zeros((8, 4)), W), {}, ValueError, r"x must have rank 3, 4 or 5 .* got shape \(8, 4\)"),
    ("conv", (X, jnp.zeros((3, 4, 6))), {}, ValueError, r"w must have rank 4 .* got w of shape \(3, 4, 6\)"),
    (
        "conv",
        (X, jnp.zeros((9, 3, 4, 6))),
        {},
        ValueError,
        r"kernel of size 9 .* larger than the padded input along spatial axis 0",
    ),
    (
        "conv",
        (X, jnp.zeros((5, 3, 4, 6))),
        dict(dilation=2),
        ValueError,
        r"kernel of size 5 with dilation 2 \(spans 9\)",
    ),
    ("conv", (X.astype(jnp.int32), W), {}, TypeError, r"x must be a floating-point array, got dtype int32"),
    (
        "conv_transpose",
        (X, jnp.zeros((3, 3, 6, 4))),
        dict(stride=2, output_padding=2),
        ValueError,
        r"output_padding must be smaller than max\(stride, dilation\).*got output_padding=\(2, 2\)",
    ),
    (
        "conv_transpose",
        (X, jnp.zeros((3, 3, 6, 4))),
        dict(output_padding=-1),
        ValueError,
        r"output_padding must be a non-negative int .* got -1",
    ),
    (
        "conv_transpose",
        (X, jnp.zeros((3, 3, 6, 5))),
        {},
        ValueError,
        r"input channels x.shape\[-1\] \(=4\) must equal w.shape\[-1\] \(=5\)",
    ),
    (
        "conv_transpose",
        (X, jnp.zeros((3, 3, 6, 4))),
        dict(padding="SAME"),
        ValueError,
        r"padding must be one of \[an int",
    ),
    ("conv_transpose", (X, jnp.zeros((3, 3, 6, 4))), dict(padding=9), ValueError, r"padding .* is too large"),
    (
        "conv",
        (X, jnp.zeros((3, 3, 1, 4), jnp.bfloat16)),
        dict(groups=4),
        TypeError,
        r"x and w must have the same dtype, got x float(32|64) and w bfloat16",
    ),
    (
        "conv_transpose",
        (X, jnp.zeros((3, 3, 6, 4), jnp.float16)),
        {},
        TypeError,
        r"x and w must have the same dtype, got x float(32|64) and w float16",
    ),
    ("max_pool", (X, 0), {}, ValueError, r"window must be a positive int or tuple of 2 ints, got 0"),
    ("max_pool", (X, (2, 2)), dict(stride=(2, 0)), ValueError, r"stride must be a positive int .* got \(2, 0\)"),
    ("max_pool", (X, 9), {}, ValueError, r"window 9 is larger than the padded input along spatial axis 0"),
    ("max_pool", (X, 2), dict(padding=2), ValueError, r"padding must be smaller than the window"),
    ("max_pool", (X, 2), dict(padding="full"), ValueError, r"padding must be one of .*got 'full'"),
    ("avg_pool", (X, (2, 2, 2)), {}, ValueError, r"window must be .*tuple of 2 ints, got \(2, 2, 2\)"),
    ("avg_pool", (X, 2), dict(count_include_pad=1), TypeError, r"count_include_pad must be a bool, got 1"),
    ("lp_pool", (X, 2), dict(p=0.5), ValueError, r"p must be a finite real number >= 1, got 0.5"),
    ("lp_pool", (X, 2), dict(p="2"), TypeError, r"p must be a real number >= 1, got '2'"),
    ("global_avg_pool", (jnp.zeros((2, 4)),), {}, ValueError, r"x must have rank 3, 4 or 5"),
    (
        "dense",
        (jnp.zeros((2, 3)), jnp.zeros((4, 5))),
        {},
        ValueError,
        r"x.shape\[-1\] \(=3\) must equal w.shape\[0\] \(=4\)",
    ),
    (
        "dense",
        (jnp.zeros((2, 3)), jnp.zeros((3, 5)), jnp.zeros((4,))),
        {},
        ValueError,
        r"b must have shape \(5,\), got \(4,\)",
    ),
    ("dense", (jnp.zeros((2, 3)), jnp.zeros((3,))), {}, ValueError, r"w must have shape \(in, out\), got shape \(3,\)"),
    ("softmax", (X,), dict(axis=4), ValueError, r"axis 4 is out of range for an array of rank 4"),
    ("leaky_relu", (X,), dict(negative_slope="a"), TypeError, r"negative_slope must be a real number, got 'a'"),
    ("batch_norm", (X, jnp.ones(3), jnp.zeros(4)), {}, ValueError, r"scale must have shape \(4,\), got \(3,\)"),
    (
        "batch_norm",
        (X, jnp.ones(4), jnp.zeros(4)),
        dict(epsilon=0.0),
        ValueError,
        r"epsilon must be a positive number, got 0.0",
    ),
    (
        "group_norm",
        (X, jnp.ones(4), jnp.zeros(4)),
        dict(groups=3),
        ValueError,
        r"group_norm: groups must divide the 4 channels, got 3",
    ),
    (
        "group_norm",
        (X, jnp.ones(4), jnp.zeros(4)),
        dict(groups=0),
        ValueError,
        r"group_norm: groups must be a positive int, got 0",
    ),
    (
        "group_norm",
        (X, jnp.ones(3), jnp.zeros(4)),
        dict(groups=1),
        ValueError,
        r"group_norm: scale must have shape \(4,\), got \(3,\)",
    ),
    ("weight_standardize", (jnp.ones(4),), {}, ValueError, r"w must have shape \(\.\.\., fan_in, C_out\).*\(4,\)"),
    ("weight_standardize", (jnp.ones((3, 4)),), dict(epsilon=-1.0), ValueError, r"epsilon must be a positive.*-1.0"),
    ("weight_standardize", (jnp.ones((3, 4), jnp.int32),), {}, TypeError, r"w must be a floating-point array"),
]


@pytest.mark.parametrize("impl", [ops, reference], ids=["ops", "reference"])
@pytest.mark.parametrize("name,args,kwargs,exc,msg", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_refused_with_its_value(impl, name, args, kwargs, exc, msg):
    fn = getattr(impl, name)
    with pytest.raises(exc, match=msg):
        fn(*args, **kwargs)
    arrays = [i for i, a in enumerate(args) if isinstance(a, jax.Array)]

    def traced(*array_args):
        full = list(args)
        for i, a in zip(arrays, array_args):
            full[i] = a
        return fn(*full, **kwargs)

    with pytest.raises(exc, match=msg):  # at trace time too, with abstract arrays
        jax.eval_shape(traced, *(args[i] for i in arrays))


LOSS_CASES = [
    (
        "softmax_cross_entropy",
        (jnp.zeros((4, 3)), jnp.zeros(4)),
        TypeError,
        r"labels must be integer class indices, got dtype float",
    ),
    (
        "softmax_cross_entropy",
        (jnp.zeros((4, 3)), jnp.zeros(5, jnp.int32)),
        ValueError,
        r"labels must have shape \(4,\) .* got \(5,\)",
    ),
    (
        "softmax_cross_entropy",
        (jnp.zeros((4, 3)), jnp.asarray([0, 1, 3, 2])),
        ValueError,
        r"labels must lie in \[0, 3\), got values in \[0, 3\]",
    ),
    ("mse", (jnp.zeros((4, 3)), jnp.zeros((3, 4))), ValueError, r"same shape, got \(4, 3\) and \(3, 4\)"),
]


@pytest.mark.parametrize("impl", [losses, reference], ids=["losses", "reference"])
@pytest.mark.parametrize("name,args,exc,msg", LOSS_CASES, ids=[c[0] for c in LOSS_CASES])
def test_bad_loss_input_is_refused(impl, name, args, exc, msg):
    with pytest.raises(exc, match=msg):
        getattr(impl, name)(*args)


def test_out_of_range_labels_under_jit_give_nan_not_a_wrong_loss():
    loss = jax.jit(losses.softmax_cross_entropy)(jnp.zeros((2, 3)), jnp.asarray([0, 7]))
    assert jnp.isnan(loss)
