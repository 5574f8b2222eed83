"""The ops under JAX's transformations: jit, vmap, grad-of-grad, finite differences, dtypes, no recompiles,
and the documented lack of forward mode."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close
from jax.test_util import check_grads

from jaxcnn import losses, ops, reference
from jaxcnn.gradcheck import relative_error
from jaxcnn.ops._padding import unreached_rows
from jaxcnn.ops.conv import conv_spec


def _n(rng, *shape, dtype=np.float64):
    return jnp.asarray(rng.standard_normal(shape), dtype)


BF16_RTOL = 2e-2  # bfloat16 keeps 8 significant bits (2^-8 = 3.9e-3 per rounding), summed over a window

# Each op bound to a configuration, with argument shapes; used by the finite-difference,
# grad-of-grad and dtype tests.
CASES = {
    "conv": (
        functools.partial(ops.conv, stride=(2, 1), padding=((1, 2), (0, 1)), dilation=(1, 2)),
        [(2, 7, 6, 2), (3, 2, 2, 3)],
    ),
    "conv_grouped_1d": (functools.partial(ops.conv, stride=3, padding="SAME", groups=2), [(2, 9, 4), (3, 2, 4)]),
    "conv_3d": (functools.partial(ops.conv, stride=2, padding=1), [(1, 4, 5, 3, 2), (2, 2, 2, 2, 2)]),
    "conv_transpose": (
        functools.partial(ops.conv_transpose, stride=2, padding=(1, 0), output_padding=1),
        [(2, 4, 3, 3), (3, 2, 2, 3)],
    ),
    "max_pool": (functools.partial(ops.max_pool, window=(2, 3), stride=(2, 1), padding="SAME"), [(2, 5, 6, 2)]),
    "avg_pool": (
        functools.partial(ops.avg_pool, window=3, stride=2, padding=1, count_include_pad=False),
        [(2, 7, 7, 2)],
    ),
    "lp_pool": (functools.partial(ops.lp_pool, window=2, p=3), [(2, 6, 4, 2)]),
    "global_avg_pool": (ops.global_avg_pool, [(2, 3, 4, 2)]),
    "global_max_pool": (ops.global_max_pool, [(2, 3, 4, 2)]),
    "dense": (ops.dense, [(3, 4), (4, 5), (5,)]),
    "relu": (ops.relu, [(3, 4)]),
    "leaky_relu": (ops.leaky_relu, [(3, 4)]),
    "sigmoid": (ops.sigmoid, [(3, 4)]),
    "tanh": (ops.tanh, [(3, 4)]),
    "softmax": (ops.softmax, [(3, 4)]),
    "log_softmax": (ops.log_softmax, [(3, 4)]),
    "batch_norm": (ops.batch_norm, [(6, 2, 3), (3,), (3,)]),
    "mse": (losses.mse, [(3, 4), (3, 4)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_finite_differences_second_order(name, rng):
    fn, shapes = CASES[name]
    args = [_n(rng, *s) for s in shapes]
    check_grads(jax.jit(fn), args, order=2, modes=["rev"])  # jit: one compile per shape, not per primitive


def test_softmax_cross_entropy_finite_differences(rng):
    labels = jnp.asarray([0, 2, 1, 2])
    check_grads(lambda z: losses.softmax_cross_entropy(z, labels), [_n(rng, 4, 3)], order=2, modes=["rev"])


@pytest.mark.parametrize("name", ["conv", "max_pool", "batch_norm", "sigmoid"])
def test_grad_of_grad_matches_reference(name, rng):
    fn, shapes = CASES[name]
    ref = getattr(reference, name)
    keywords = getattr(fn, "keywords", {})
    args = [_n(rng, *s) for s in shapes]

    def grad_norm(f):
        def g(*a):
            out = jax.tree_util.tree_leaves(f(*a))[0]
            grads = jax.grad(lambda *b: jnp.sum(jnp.sin(jax.tree_util.tree_leaves(f(*b))[0])), argnums=0)(*a)
            return jnp.sum(grads**2) + jnp.sum(out)

        return g

    hand = jax.jit(jax.grad(grad_norm(fn)))(*args)
    auto = jax.jit(jax.grad(grad_norm(functools.partial(ref, **keywords))))(*args)
    assert_close(hand, auto, 1e-10, name)


def test_forward_mode_raises_documented_error(rng):
    x, w = _n(rng, 1, 5, 5, 1), _n(rng, 3, 3, 1, 2)
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jvp(lambda x: ops.conv(x, w), (x,), (x,))
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jacfwd(ops.relu)(x)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bfloat16_inputs_give_bfloat16_cotangents(name, rng):
    fn, shapes = CASES[name]
    args = [_n(rng, *s, dtype=jnp.bfloat16) for s in shapes]
    y, vjp = jax.vjp(jax.jit(fn), *args)
    for leaf in jax.tree_util.tree_leaves(y)[:1]:
        assert leaf.dtype == jnp.bfloat16
    cot = jax.tree_util.tree_map(lambda leaf: _n(rng, *leaf.shape, dtype=leaf.dtype), y)
    grads = vjp(cot)
    for a, g in zip(args, grads):
        assert g.dtype == jnp.bfloat16, (name, g.dtype)
        assert g.shape == a.shape
        assert bool(jnp.all(jnp.isfinite(g.astype(jnp.float32))))
    # the same computation in float32 on the same (bfloat16-representable) inputs: the bfloat16
    # cotangents may differ only by bfloat16 rounding (8 significant bits, accumulated over the op)
    y32, vjp32 = jax.vjp(jax.jit(fn), *[a.astype(jnp.float32) for a in args])
    grads32 = vjp32(jax.tree_util.tree_map(lambda c: c.astype(jnp.float32), cot))
    for g, g32 in zip(grads, grads32):
        err = relative_error(g.astype(jnp.float32), g32)
        assert err <= BF16_RTOL, (name, err)


def test_mixed_dtypes_cast_cotangents_to_primals(rng):
    # float32 activations with bfloat16 weights promote to a float32 output and cotangent; each input's
    # cotangent must still come back in that input's own dtype.
    x, w, b = _n(rng, 3, 4, dtype=jnp.float32), _n(rng, 4, 5, dtype=jnp.bfloat16), _n(rng, 5, dtype=jnp.bfloat16)
    y, vjp = jax.vjp(ops.dense, x, w, b)
    assert y.dtype == jnp.float32
    dx, dw, db = vjp(jnp.ones_like(y))
    assert (dx.dtype, dw.dtype, db.dtype) == (jnp.float32, jnp.bfloat16, jnp.bfloat16)


def _tiny_net(params, x):
    h = ops.relu(ops.conv(x, params["w1"], stride=2, padding="SAME"))
    h = ops.max_pool(h, 2)
    h = ops.sigmoid(ops.conv(h, params["w2"], padding=1, groups=2))
    return ops.dense(ops.global_avg_pool(h), params["w3"], params["b3"])


def _tiny_params(rng, dtype=np.float64):
    return {
        "w1": _n(rng, 3, 3, 1, 4, dtype=dtype),
        "w2": _n(rng, 3, 3, 2, 4, dtype=dtype),
        "w3": _n(rng, 4, 3, dtype=dtype),
        "b3": _n(rng, 3, dtype=dtype),
    }


def _tiny_loss(params, x, y):
    return losses.softmax_cross_entropy(_tiny_net(params, x), y)


def test_jit_matches_eager(rng):
    params, x, y = _tiny_params(rng), _n(rng, 4, 12, 12, 1), jnp.asarray([0, 1, 2, 1])
    eager = jax.value_and_grad(_tiny_loss)(params, x, y)
    jitted = jax.jit(jax.value_and_grad(_tiny_loss))(params, x, y)
    assert_close(jitted, eager, 1e-12, "jit")


def test_vmap_per_example_gradients_equal_a_loop(rng):
    params, x, y = _tiny_params(rng), _n(rng, 5, 12, 12, 1), jnp.asarray([0, 1, 2, 1, 0])

    def single(params, xi, yi):
        return _tiny_loss(params, xi[None], yi[None])

    per_example = jax.jit(jax.vmap(jax.grad(single), in_axes=(None, 0, 0)))(params, x, y)
    grad_one = jax.jit(jax.grad(single))  # compiled once for the loop below
    for i in range(x.shape[0]):
        one = grad_one(params, x[i], y[i])
        assert_close(jax.tree_util.tree_map(lambda g: g[i], per_example), one, 1e-10, f"example {i}")
    # their mean is the batch gradient
    batch = jax.jit(jax.grad(_tiny_loss))(params, x, y)
    assert_close(jax.tree_util.tree_map(lambda g: g.mean(0), per_example), batch, 1e-10, "mean")


def test_vmap_of_each_op_matches_a_loop(rng):
    for name, (fn, shapes) in CASES.items():
        if name in ("batch_norm", "mse"):
            continue  # batch statistics / a scalar mean couple the examples by design
        args = [_n(rng, 3, *shapes[0])] + [_n(rng, *s) for s in shapes[1:]]
        in_axes = (0,) + (None,) * (len(args) - 1)
        batched = jax.jit(jax.vmap(fn, in_axes=in_axes))(*args)
        one = jax.jit(fn)
        for i in range(3):
            assert_close(batched[i], one(args[0][i], *args[1:]), 1e-12, name)


def test_jitted_step_does_not_recompile(rng):
    params, x, y = _tiny_params(rng, np.float32), _n(rng, 4, 12, 12, 1, dtype=np.float32), jnp.asarray([0, 1, 2, 1])

    traces = []

    @jax.jit
    def step(params, x, y):
        traces.append(1)  # runs once per trace: a recompilation starts with a retrace
        loss, grads = jax.value_and_grad(_tiny_loss)(params, x, y)
        return jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads), loss

    params, loss0 = step(params, x, y)
    assert len(traces) == 1 and step._cache_size() <= 1  # (see _cache_size in tests/helpers.py)
    for _ in range(3):
        params, loss = step(params, x, y)
    assert len(traces) == 1 and step._cache_size() <= 1
    assert float(loss) < float(loss0)


def test_sigmoid_does_not_overflow():
    x = jnp.asarray([-800.0, -300.0, -100.0, 0.0, 100.0, 300.0, 800.0])
    y, vjp = jax.vjp(ops.sigmoid, x)
    (g,) = vjp(jnp.ones_like(x))
    assert bool(jnp.all(jnp.isfinite(y))) and bool(jnp.all(jnp.isfinite(g)))
    assert float(y[0]) == 0.0 and float(y[-1]) == 1.0 and float(y[3]) == 0.5
    assert float(g[3]) == 0.25 and float(g[0]) == 0.0
    # far tails keep relative precision: sigmoid(-100) = e^-100 / (1 + e^-100)
    np.testing.assert_allclose(float(y[2]), np.exp(-100.0), rtol=1e-14)
    x32 = x.astype(jnp.float32)
    assert bool(jnp.all(jnp.isfinite(jax.grad(lambda v: ops.sigmoid(v).sum())(x32))))


def test_lp_pool_gradient_is_zero_on_all_zero_windows():
    x = jnp.zeros((1, 4, 4, 1)).at[0, 0, 0, 0].set(2.0)
    for p in (1, 2, 3.5):
        g = jax.grad(lambda v: ops.lp_pool(v, 2, p=p).sum())(x)
        assert bool(jnp.all(jnp.isfinite(g)))
        assert float(jnp.abs(g[0, 2:, :, 0]).sum()) == 0.0 and float(jnp.abs(g[0, :, 2:, 0]).sum()) == 0.0
        # the one non-zero window: y = (2^p / 4)^(1/p), dy/dx = (1/4) 2^(p-1) y^(1-p)
        y = (2.0**p / 4) ** (1 / p)
        np.testing.assert_allclose(float(g[0, 0, 0, 0]), 0.25 * 2 ** (p - 1) * y ** (1 - p), rtol=1e-12)


def test_max_pool_ties_go_to_first_maximum():
    # A 2x2 window of equal values: all the gradient goes to its top-left element (row-major first).
    x = jnp.ones((1, 2, 2, 1))
    g = jax.grad(lambda v: ops.max_pool(v, 2).sum())(x)
    np.testing.assert_array_equal(np.asarray(g)[0, :, :, 0], [[1.0, 0.0], [0.0, 0.0]])
    # overlapping windows that pick the same input accumulate (+=)
    x = jnp.asarray([0.0, 5.0, 1.0, 0.0]).reshape(1, 4, 1)
    g = jax.grad(lambda v: ops.max_pool(v, 2, stride=1).sum())(x)
    np.testing.assert_array_equal(np.asarray(g)[0, :, 0], [0.0, 2.0, 1.0, 0.0])


def test_global_max_pool_tie_goes_to_first():
    x = jnp.asarray([[[3.0], [1.0], [3.0]]])
    g = jax.grad(lambda v: ops.global_max_pool(v).sum())(x)
    np.testing.assert_array_equal(np.asarray(g)[0, :, 0], [1.0, 0.0, 0.0])


def test_batch_norm_statistics_get_their_own_cotangents(rng):
    x, scale, offset = _n(rng, 5, 3), _n(rng, 3), _n(rng, 3)

    def f(fn):
        def loss(x):
            y, mean, var = fn(x, scale, offset)
            return jnp.sum(jnp.sin(y)) + jnp.sum(mean**2) + jnp.sum(jnp.cos(var))

        return loss

    assert_close(jax.grad(f(ops.batch_norm))(x), jax.grad(f(reference.batch_norm))(x), 1e-10, "stats")


def test_conv_transpose_is_the_adjoint_of_conv(rng):
    # <conv(a, w), b> = <a, conv_transpose(b, w)> for every configuration, with output_padding = r.
    configs = [
        dict(stride=1, padding=0, dilation=1, groups=1),
        dict(stride=2, padding=1, dilation=1, groups=1),
        dict(stride=(3, 2), padding=((0, 2), (1, 0)), dilation=(1, 2), groups=2),
        dict(stride=2, padding=2, dilation=3, groups=3),
    ]
    for cfg in configs:
        a, w = _n(rng, 2, 11, 10, 6), _n(rng, 3, 2, 6 // cfg["groups"], 6)
        z = ops.conv(a, w, **cfg)
        b = _n(rng, *z.shape)
        spec = conv_spec(a, w, cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"])
        r = tuple(
            unreached_rows(n, k, s, d, lo, hi)
            for n, k, s, d, (lo, hi) in zip(a.shape[1:-1], w.shape[:2], spec.strides, spec.dilation, spec.padding)
        )
        t = ops.conv_transpose(b, w, output_padding=r, **cfg)
        assert t.shape == a.shape
        np.testing.assert_allclose(float(jnp.vdot(z, b)), float(jnp.vdot(a, t)), rtol=1e-12)
        # and the whole Jacobian: conv_transpose's matrix is conv's matrix transposed
        jac_conv = jax.jit(jax.jacrev(lambda v: ops.conv(v, w, **cfg)))(a).reshape(z.size, a.size)
        jac_t = jax.jit(jax.jacrev(lambda v: ops.conv_transpose(v, w, output_padding=r, **cfg)))(b)
        jac_t = jac_t.reshape(a.size, z.size)
        np.testing.assert_allclose(np.asarray(jac_t), np.asarray(jac_conv).T, atol=1e-12)
