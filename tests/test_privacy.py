"""Differentially private training: per-example gradient norms from the layers' inputs and cotangents
against the norms of materialised per-example gradients (every branch, every layer kind), the clipped
sum against clipping materialised gradients, the noise, Poisson sampling, the refusals, and the
accountant against the Gaussian mechanism's exact privacy curve (Balle & Wang, 2018)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import require_module

import jaxcnn
from jaxcnn import errors, models, privacy, serial
from jaxcnn.layers import bind


def _mixed(ops):
    """Every layer kind the norms are derived for: strided, padded, dilated, grouped and depthwise
    convolutions, group norm, dense with and without bias."""
    L = bind(ops)
    return serial(
        L.Conv(6, (3, 3), stride=2, padding=1), L.GroupNorm(3), L.Tanh,
        L.Conv(6, (3, 3), groups=2, dilation=2), L.Relu,
        L.DepthwiseConv((2, 2), depth_multiplier=2), L.Flatten, L.Dense(7), L.Tanh, L.Dense(4, use_bias=False),
    )  # fmt: skip


def _phased(ops):
    """Windows a whole number of strides, undilated: patches taken by stride phase (odd input sizes,
    padding, a stride of (2, 1), groups, depthwise with a multiplier)."""
    L = bind(ops)
    return serial(
        L.Conv(6, (4, 3), stride=(2, 1), padding=1), L.Tanh,
        L.Conv(4, (2, 4), stride=2, groups=2, padding=((0, 1), (1, 1))), L.Relu,
        L.DepthwiseConv((2, 2), depth_multiplier=2, stride=2), L.Flatten, L.Dense(4),
    )  # fmt: skip


def _signal(ops):
    L = bind(ops)
    return serial(L.Conv(5, 4, stride=3, padding="SAME"), L.Tanh, L.SeparableConv(4, 3, padding=1), L.Dense(3),
                  L.Flatten, L.Dense(4))  # fmt: skip


def _volume(ops):
    L = bind(ops)
    return serial(L.Conv(4, 2, padding=1), L.GroupNorm(2), L.Relu, L.Flatten, L.Dense(4))


def _standardized(ops):
    """Weight-standardised convolutions (strided and padded; grouped, without a bias) beside plain ones: their
    per-example gradients mapped back through the standardisation."""
    L = bind(ops)
    return serial(
        L.Conv(6, (3, 3), stride=2, padding=1, standardize=True), L.Tanh,
        L.Conv(6, (3, 2), groups=3, use_bias=False, standardize=True), L.Relu,
        L.Conv(4, (2, 2)), L.Flatten, L.Dense(4),
    )  # fmt: skip


def _one_conv(ops):
    return bind(ops).Conv(4, 3)  # a bare layer: its params are {"kernel", "bias"}, no path prefix


NETS = {
    "mixed-2d": (_mixed, (5, 12, 12, 4)),
    "phased-2d": (_phased, (4, 13, 15, 2)),
    "signal-1d": (_signal, (4, 11, 2)),  # the dense layer sees a sequence: T = 4 positions
    "volume-3d": (_volume, (3, 4, 4, 3, 2)),
    "one-conv": (_one_conv, (3, 3, 1)),
    "standardized-2d": (_standardized, (4, 11, 12, 3)),  # outputs (3, 1, 4): 4 "classes" at one position
    "tanh_cnn": (lambda ops: models.tanh_cnn(ops=ops), (3, 28, 28, 1)),
}


def loss(outputs, labels):
    """Per-example cross-entropy of the outputs, flattened to (N, classes)."""
    return privacy.per_example_cross_entropy(outputs.reshape(outputs.shape[0], -1), labels)


def _setup(name):
    build, shape = NETS[name]
    model = build(jaxcnn.ops)
    _, params, state = model.init(jax.random.key(0), shape)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    x = jax.random.normal(jax.random.key(1), shape, jnp.float64)
    y = jnp.arange(shape[0]) % 4
    return build, model, params, state, x, y


def _materialised(model, params, state, x, y):
    """Every example's whole gradient, by jax.vmap of jax.grad over single examples."""

    def one(p, xi, yi):
        out, _ = model.apply(p, state, xi[None], train=True)
        return loss(out, yi[None])[0]

    return jax.vmap(jax.grad(one), in_axes=(None, 0, 0))(params, x, y)


def _norms(grads, n):
    return np.sqrt(sum(np.sum(np.reshape(g, (n, -1)) ** 2, 1) for g in jax.tree_util.tree_leaves(grads)))


# Every layer kind (mixed-2d) with the per-layer rule and forced down each branch, and the one-layer net, in
# the default tier; the phased, 1-D and 3-D nets and tanh_cnn (its rule is checked below) in the slow one.
NORM_CASES = [
    pytest.param(
        name,
        ghost,
        marks=[]
        if name in ("mixed-2d", "one-conv", "standardized-2d") and (ghost == "auto" or name == "mixed-2d")
        else [pytest.mark.slow],
    )  # fmt: skip
    for name in NETS
    for ghost in privacy.GHOST
]


@pytest.mark.parametrize("name, ghost", NORM_CASES)
def test_norms_equal_those_of_materialised_per_example_gradients(name, ghost):
    build, model, params, state, x, y = _setup(name)
    expected = _norms(_materialised(model, params, state, x, y), x.shape[0])
    norms = jax.jit(lambda p, x: privacy.per_example_grad_norms(build, loss, p, state, (x, y), ghost=ghost))(params, x)
    np.testing.assert_allclose(norms, expected, rtol=1e-10)


def test_the_auto_rule_picks_ghost_or_formed_per_layer(monkeypatch):
    """Bu et al.'s rule: ghost where 2 T^2 <= D p. tanh_cnn's first conv (T = 169, D = 64, p = 16) is formed;
    its second (T = 25, D = 256, p = 32) and its dense layers (T = 1) are ghost."""
    chosen = []
    real_ghost, real_formed = privacy._ghost, privacy._formed
    monkeypatch.setattr(privacy, "_ghost", lambda u, dz: chosen.append(("ghost", u.shape[-1])) or real_ghost(u, dz))
    monkeypatch.setattr(privacy, "_formed", lambda u, dz: chosen.append(("formed", u.shape[-1])) or real_formed(u, dz))
    build, _, params, state, x, y = _setup("tanh_cnn")
    jax.eval_shape(lambda p, x: privacy.per_example_grad_norms(build, loss, p, state, (x, y)), params, x)  # traced
    assert chosen == [("formed", 169), ("ghost", 25), ("ghost", 1), ("ghost", 1)]


# Both forms on the one-layer net and on every layer kind; the other nets in the slow tier.
SUM_CASES = [
    pytest.param(
        name,
        method,
        marks=[]
        if (name, method)
        in {
            ("one-conv", "two-pass"),
            ("mixed-2d", "bookkeeping"),
            ("phased-2d", "bookkeeping"),
            ("standardized-2d", "bookkeeping"),
        }
        else [pytest.mark.slow],
    )  # fmt: skip
    for name in ("one-conv", "mixed-2d", "phased-2d", "signal-1d", "volume-3d", "standardized-2d")
    for method in privacy.METHODS
]


@pytest.mark.parametrize("name, method", SUM_CASES)
def test_the_clipped_sum_equals_clipping_materialised_gradients(name, method):
    build, model, params, state, x, y = _setup(name)
    grads = _materialised(model, params, state, x, y)
    norms = _norms(grads, x.shape[0])
    clip = float(np.median(norms))  # some examples clipped, some not
    mask = (np.arange(x.shape[0]) != 1).astype(int)
    factors = np.minimum(1, clip / (norms + 1e-6)) * mask
    expected = jax.tree_util.tree_map(lambda g: np.tensordot(factors, np.asarray(g), 1), grads)
    total, got_norms = privacy.clipped_grad_sum(build, loss, params, state, (x, y), clip=clip, mask=mask, method=method)
    np.testing.assert_allclose(got_norms, norms, rtol=1e-10)
    for a, b in zip(jax.tree_util.tree_leaves(total), jax.tree_util.tree_leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", [pytest.param("mixed-2d", marks=pytest.mark.slow), "phased-2d"])
def test_chunks_of_examples_give_the_same_norms_and_sum(name, monkeypatch):
    """Norms taken a few examples at a time (:data:`privacy.CHUNK_BYTES` small enough for one example per
    chunk, then two where the batch divides) equal those of the whole batch at once, and so does the clipped
    sum formed from them; also with two views of each example (``augmult=2``)."""
    build, model, params, state, x, y = _setup(name)
    pairs = (jnp.repeat(x, 2, axis=0) + 0.1 * jax.random.normal(jax.random.key(3), (2 * len(x), *x.shape[1:])),
             jnp.repeat(y, 2))  # fmt: skip
    for batch, augmult in (((x, y), 1), (pairs, 2)):
        monkeypatch.undo()
        whole = privacy.clipped_grad_sum(build, loss, params, state, batch, clip=0.3, augmult=augmult)
        for per_chunk in [k for k in (1, 2) if x.shape[0] % k == 0]:
            monkeypatch.setattr(privacy, "_chunk_size", lambda n, _, k=per_chunk: k)
            chunked = privacy.clipped_grad_sum(build, loss, params, state, batch, clip=0.3, augmult=augmult)
            for a, b in zip(jax.tree_util.tree_leaves(chunked), jax.tree_util.tree_leaves(whole), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "name, method",
    [
        ("phased-2d", "bookkeeping"),
        pytest.param("mixed-2d", "bookkeeping", marks=pytest.mark.slow),
        pytest.param("phased-2d", "two-pass", marks=pytest.mark.slow),
    ],
)
def test_augmult_views_are_one_example_each(name, method):
    """With augmentation multiplicity K an example's gradient is that of the mean of its K views' losses:
    the norms and the clipped sum equal those of such gradients, materialised example by example."""
    build, model, params, state, x, y = _setup(name)
    views = 3
    xv = privacy.augmented_views(jax.random.key(5), x, lambda k, x: x + jax.random.normal(k, x.shape), views)
    yv = jnp.repeat(y, views)
    shifts = privacy.augmented_views(jax.random.key(5), x, lambda k, x: x + jax.random.normal(k, ()), views)
    offsets = np.asarray(shifts).reshape(x.shape[0], views, -1) - np.asarray(x).reshape(x.shape[0], 1, -1)
    np.testing.assert_allclose(offsets, offsets[:1, :, :1] + 0 * offsets, atol=1e-12)  # row i K + k: view k of i
    assert len(np.unique(np.round(offsets[0, :, 0], 9))) == views

    def mean_of_views(p, xi, yi):
        out, _ = model.apply(p, state, xi, train=True)
        return jnp.mean(loss(out, yi))

    grads = jax.vmap(jax.grad(mean_of_views), in_axes=(None, 0, 0))(
        params, xv.reshape(x.shape[0], views, *x.shape[1:]), yv.reshape(-1, views)
    )
    norms = _norms(grads, x.shape[0])
    clip = float(np.median(norms))
    mask = (np.arange(x.shape[0]) != 2).astype(int)
    factors = np.minimum(1, clip / (norms + 1e-6)) * mask
    expected = jax.tree_util.tree_map(lambda g: np.tensordot(factors, np.asarray(g), 1), grads)
    got = privacy.per_example_grad_norms(build, loss, params, state, (xv, yv), augmult=views)
    np.testing.assert_allclose(got, norms, rtol=1e-10)
    total, _ = privacy.clipped_grad_sum(build, loss, params, state, (xv, yv), clip=clip, mask=mask, method=method,
                                        augmult=views)  # fmt: skip
    for a, b in zip(jax.tree_util.tree_leaves(total), jax.tree_util.tree_leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_augmult_is_checked_naming_its_value():
    build, _, params, state, x, y = _setup("one-conv")
    with pytest.raises(errors.ConfigError, match=r"augmult must be a positive integer, got 0"):
        privacy.per_example_grad_norms(build, loss, params, state, (x, y), augmult=0)
    with pytest.raises(errors.ConfigError, match=r"augmult=2 views per example need a multiple of 2 rows, got 3"):
        privacy.clipped_grad_sum(build, loss, params, state, (x, y), clip=1.0, augmult=2)


def test_the_chunk_size_divides_the_batch_within_the_bytes_it_is_given(monkeypatch):
    monkeypatch.setattr(privacy, "CHUNK_BYTES", 1000)
    assert privacy._chunk_size(2048, 10) == 64  # at most 100 examples, and a divisor of 2048
    assert privacy._chunk_size(90, 10) == 90  # all of them fit
    assert privacy._chunk_size(2318, 10) == 61  # 2318 = 2 x 19 x 61
    assert privacy._chunk_size(2368, 10) == 64  # 2368 = 64 x 37: 64 before 74, a multiple of 8 first
    assert privacy._chunk_size(2311, 10) == 2311  # a prime: no divisor in [25, 100], one chunk
    assert privacy._chunk_size(4096, 10**6) == 1  # one example already past the bytes


def test_an_unreachable_clip_gives_the_batch_gradient_and_one_example_moves_the_sum_by_at_most_c():
    build, model, params, state, x, y = _setup("mixed-2d")

    def batch_loss(p):
        return jnp.sum(loss(model.apply(p, state, x, train=True)[0], y))

    unclipped, _ = privacy.clipped_grad_sum(build, loss, params, state, (x, y), clip=1e30)
    for a, b in zip(jax.tree_util.tree_leaves(unclipped), jax.tree_util.tree_leaves(jax.grad(batch_loss)(params))):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)
    clip = 0.05  # below every norm here: each example's clipped gradient has norm C
    full, norms = privacy.clipped_grad_sum(build, loss, params, state, (x, y), clip=clip)
    assert np.all(np.asarray(norms) > clip)
    for i in range(x.shape[0]):  # remove example i (its mask 0): the sum moves by exactly its clipped gradient
        mask = np.arange(x.shape[0]) != i
        without, _ = privacy.clipped_grad_sum(build, loss, params, state, (x, y), clip=clip, mask=mask)
        moved = np.sqrt(sum(np.sum((np.asarray(a) - np.asarray(b)) ** 2) for a, b in zip(
            jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(without))))  # fmt: skip
        assert moved <= clip * (1 + 1e-9) and moved > clip * (1 - 1e-4)


def _wide_dense(ops):
    return bind(ops).Dense(64)  # 1,088 parameters for one cheap layer: enough coordinates to see the noise


def test_the_noisy_gradient_divides_by_the_expected_batch_and_adds_noise_of_sigma_c():
    _, params, state = _wide_dense(jaxcnn.ops).init(jax.random.key(0), (1, 16))
    x = jax.random.normal(jax.random.key(1), (5, 16), jnp.float32)
    args = (_wide_dense, loss, params, state, (x, jnp.arange(5)))
    clean, _ = privacy.clipped_grad_sum(*args, clip=0.5)
    quiet, _ = privacy.noisy_gradient(*args, clip=0.5, noise_multiplier=0.0, expected_batch_size=4.0,
                                      noise_key=jax.random.key(3))  # fmt: skip
    for a, b in zip(jax.tree_util.tree_leaves(quiet), jax.tree_util.tree_leaves(clean)):
        np.testing.assert_allclose(a, np.asarray(b) / 4.0, rtol=1e-12)
    noisy, _ = privacy.noisy_gradient(*args, clip=0.5, noise_multiplier=3.0, expected_batch_size=4.0,
                                      noise_key=jax.random.key(3))  # fmt: skip
    noise = np.concatenate(
        [
            (np.asarray(a) - np.asarray(b) / 4.0).ravel()
            for a, b in zip(jax.tree_util.tree_leaves(noisy), jax.tree_util.tree_leaves(clean))
        ]
    )
    assert noise.size > 500 and abs(noise.std() / (3.0 * 0.5 / 4.0) - 1) < 0.1 and abs(noise.mean()) < 0.05
    leaves = jax.tree_util.tree_leaves(noisy)
    assert not np.allclose(np.asarray(leaves[0]).ravel()[:3], np.asarray(leaves[1]).ravel()[:3])  # own key each


def test_batch_norm_is_refused_naming_the_layer_and_group_norm():
    build = lambda ops: models.resnet20(ops=ops)
    model = build(jaxcnn.ops)
    _, params, state = model.init(jax.random.key(0), (2, 32, 32, 3))
    with pytest.raises(errors.ConfigError, match=r"the BatchNorm at params '1' normalises .* use GroupNorm"):
        privacy.per_example_grad_norms(build, loss, params, state,
                                       (jnp.zeros((2, 32, 32, 3), jnp.float32), jnp.zeros(2, int)))  # fmt: skip


def test_parameters_of_other_layers_are_refused_by_name():
    def build(ops):
        L = bind(ops)
        return serial(L.ConvTranspose(3, 2, stride=2), L.Flatten, L.Dense(2))

    _, params, state = build(jaxcnn.ops).init(jax.random.key(0), (2, 3, 3, 1))
    with pytest.raises(errors.ConfigError, match=r"no such layer uses 0.bias, 0.kernel"):
        privacy.per_example_grad_norms(build, loss, params, state,
                                       (jnp.zeros((2, 3, 3, 1), jnp.float32), jnp.zeros(2, int)))  # fmt: skip
    with pytest.raises(errors.ConfigError, match="ghost must be one of auto, always, never, got 'sometimes'"):
        privacy.per_example_grad_norms(build, None, params, state, (None, None), ghost="sometimes")
    with pytest.raises(errors.ConfigError, match="clip must be a positive number, got 0"):
        privacy.clipped_grad_sum(build, None, params, state, (None, None), clip=0)


def test_poisson_batches_sample_each_example_independently_at_the_rate():
    n, q = 1000, 0.05
    capacity = privacy.poisson_capacity(n, q)
    assert capacity == math.ceil(50 + 6 * math.sqrt(50 * 0.95)) + 1
    sample = jax.jit(lambda k: privacy.poisson_batch(k, n, q, capacity))
    sizes, hits = [], np.zeros(n)
    for i in range(200):
        indices, mask, size = map(np.asarray, sample(jax.random.key(i)))
        chosen = indices[mask]
        assert mask.sum() == size and len(set(chosen)) == size and np.all(np.diff(chosen) > 0)
        sizes.append(size)
        hits[chosen] += 1
    assert abs(np.mean(sizes) - n * q) < 4 * math.sqrt(n * q * (1 - q) / 200)
    assert abs(hits[: n // 2].sum() - hits[n // 2 :].sum()) < 4 * math.sqrt(hits.sum())  # no position favoured
    again = sample(jax.random.key(7))
    np.testing.assert_array_equal(again[0], sample(jax.random.key(7))[0])
    with pytest.raises(errors.ConfigError, match=r"rate must be in \(0, 1\], got 1.5"):
        privacy.poisson_capacity(n, 1.5)


def test_large_capacities_are_a_multiple_of_64_within_64_of_six_sigmas():
    """Tramer & Boneh's q = 2048 / 60000: mean + 6 sigma + 1 = 2,316 rows, rounded to 2,368 = 64 x 37 (so the
    norms' chunks of 64 examples divide it); below 1,024 the capacity is the formula's own."""
    q = 2048 / 60000
    bound = math.ceil(2048 + 6 * math.sqrt(2048 * (1 - q))) + 1
    assert privacy.poisson_capacity(60000, q) == 2368 and bound == 2316
    assert privacy.poisson_capacity(20000, 0.05) == 1216  # 1,186 rounded up
    assert privacy.poisson_capacity(20000, 0.04) == math.ceil(800 + 6 * math.sqrt(800 * 0.96)) + 1 == 968
    assert privacy.poisson_capacity(1100, 0.99) == 1100  # never more rows than examples


def _gaussian_delta(eps, mu):
    """The Gaussian mechanism's exact delta(eps) for sensitivity / sigma = mu (Balle & Wang, 2018, Thm 8)."""
    from scipy.stats import norm

    return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2)


@pytest.mark.parametrize("sigma,steps", [(1.0, 1), (2.0, 4), (0.8, 9)])
def test_the_accountant_matches_the_gaussian_mechanisms_exact_curve(sigma, steps):
    require_module("dp_accounting", "pip install 'jaxcnn[dp]'", "JAXCNN_REQUIRE_DP")
    from scipy.optimize import brentq

    delta = 1e-5
    mu = math.sqrt(steps) / sigma  # k Gaussian steps compose to one Gaussian with mu = sqrt(k) / sigma
    exact = brentq(lambda e: _gaussian_delta(e, mu) - delta, 1e-6, 100)
    pld = privacy.epsilon(sigma, 1.0, steps, delta)
    rdp = privacy.epsilon(sigma, 1.0, steps, delta, accountant="rdp")
    assert exact <= pld <= exact * 1.01 + 1e-3  # PLD: tight, pessimistic by its discretisation only
    assert rdp > pld  # RDP's conversion to (eps, delta) is loose


def test_calibration_finds_the_noise_for_a_target_epsilon():
    require_module("dp_accounting", "pip install 'jaxcnn[dp]'", "JAXCNN_REQUIRE_DP")
    q, steps, rdp = 0.05, 60, dict(accountant="rdp")  # RDP: quick to evaluate (PLD's is the slow test below)
    sigma = privacy.calibrate_noise(2.0, q, steps, 1e-5, **rdp)
    assert privacy.epsilon(sigma, q, steps, 1e-5, **rdp) <= 2.0 < privacy.epsilon(sigma * 0.99, q, steps, 1e-5, **rdp)
    with pytest.raises(errors.ConfigError, match="accountant must be 'pld' or 'rdp', got 'gdp'"):
        privacy.epsilon(1.0, q, 1, 1e-5, accountant="gdp")


def test_the_accountant_gives_opacus_known_values():
    """Opacus' accountant tests: sigma 1.5, q 0.04, 2250 steps, delta 1e-5: RDP 7.33, PLD about 6.77."""
    require_module("dp_accounting", "pip install 'jaxcnn[dp]'", "JAXCNN_REQUIRE_DP")
    assert abs(privacy.epsilon(1.5, 0.04, 2250, 1e-5, accountant="rdp") - 7.33) < 0.01
    assert abs(privacy.epsilon(1.5, 0.04, 2250, 1e-5) - 6.77) < 0.02


@pytest.mark.slow
def test_tramer_and_bonehs_fashion_mnist_run_spends_about_2_4_at_sigma_2_15():
    require_module("dp_accounting", "pip install 'jaxcnn[dp]'", "JAXCNN_REQUIRE_DP")
    q, steps = 2048 / 60000, 1172  # 40 epochs at batch 2048
    assert abs(privacy.epsilon(2.15, q, steps, 1e-5) - 2.39) < 0.01  # issue 20's "about 2.4" (PLD)
    sigma = privacy.calibrate_noise(3.0, q, steps, 1e-5)
    assert 1.75 < sigma < 1.85 and privacy.epsilon(sigma, q, steps, 1e-5) <= 3.0


def test_tanh_cnn_with_weight_standardization_is_tanh_cnn_of_centred_unit_norm_filters():
    """Same parameters; its output is the plain network's with each conv filter centred and scaled to unit
    norm (numpy, per output channel)."""
    plain, standardized = models.tanh_cnn(), models.tanh_cnn(weight_standardization=True)
    _, params, state = standardized.init(jax.random.key(0), (2, 28, 28, 1))
    assert jax.tree_util.tree_map(jnp.shape, params) == jax.tree_util.tree_map(
        jnp.shape, plain.init(jax.random.key(0), (2, 28, 28, 1))[1]
    )

    def unit(w):
        rows = np.asarray(w, np.float64).reshape(-1, w.shape[-1])
        rows = rows - rows.mean(0)
        return jnp.asarray((rows / np.linalg.norm(rows, axis=0)).reshape(w.shape), w.dtype)

    by_hand = [dict(p, kernel=unit(p["kernel"])) if i in (0, 3) else p for i, p in enumerate(params)]
    x = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1), jnp.float32)
    np.testing.assert_allclose(
        standardized.apply(params, state, x)[0], plain.apply(by_hand, state, x)[0], rtol=1e-5, atol=1e-6
    )
