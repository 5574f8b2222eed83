"""DP-SGD inside the training loop and ``jaxcnn train --dp-*``: the step against the privacy module's own
pieces, Poisson batches per step, bit-identical resume (sampler, noise, accounting), the epsilon written
where the issue asks, the refusals, and (slow) two devices against one."""

import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import require_module
from test_parallel import _run_script

import jaxcnn
from jaxcnn import checkpoint, data, errors, layers, privacy, serial, train
from jaxcnn.cli import main
from jaxcnn.train import dp as train_dp


def _small(ops):
    L = layers.bind(ops)
    return serial(L.Conv(4, (3, 3), stride=2), L.Tanh, L.Flatten, L.Dense(3))


@pytest.fixture(scope="module")
def tiny():
    return data.load("synthetic", image_shape=(8, 8), num_classes=3, num_train=96, num_test=24)


DP = privacy.DPConfig(clip=0.5, noise_multiplier=1.2, delta=1e-5)


def _fit(tiny, out, **settings):
    config = dict(epochs=2, batch_size=16, optimizer=optax.sgd(0.3, momentum=0.9), privacy=DP, progress=False)
    return train.fit(_small, tiny, out_dir=out, **{**config, **settings})


def test_the_step_is_the_noisy_clipped_sum_of_its_poisson_batch(tiny):
    opt = optax.sgd(0.3)
    sampler = train_dp.PoissonSampler(0, len(tiny.x_train), 16 / len(tiny.x_train))
    indices, mask = sampler(3)
    again, _ = train_dp.PoissonSampler(0, len(tiny.x_train), 16 / len(tiny.x_train))(3)
    assert np.array_equal(indices, again) and not np.array_equal(indices, sampler(4)[0])  # pure in the step
    x, y = jnp.asarray(tiny.x_train[indices]), jnp.asarray(tiny.y_train[indices])
    state = train.init_train_state(_small(jaxcnn.ops), x.shape, opt, seed=0)._replace(step=jnp.int32(3))
    step = train_dp.make_dp_train_step(_small, opt, train.cross_entropy_loss, DP, expected_batch_size=16.0)
    new, metrics = step(state, x, y, jnp.asarray(mask))

    _, _, noise_key = jax.random.split(jax.random.fold_in(state.key, 3), 3)
    total, norms = privacy.clipped_grad_sum(_small, privacy.per_example_cross_entropy, state.params,
                                            state.model_state, (x, y), clip=DP.clip, mask=mask)  # fmt: skip
    grads = privacy.add_noise(total, clip=DP.clip, noise_multiplier=DP.noise_multiplier, expected_batch_size=16.0,
                              noise_key=noise_key)  # fmt: skip
    expected = optax.apply_updates(state.params, opt.update(grads, opt.init(state.params))[0])
    for a, b in zip(jax.tree_util.tree_leaves(new.params), jax.tree_util.tree_leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    kept = np.asarray(mask, bool)
    assert abs(float(metrics["clipped"]) - np.mean(np.asarray(norms)[kept] > DP.clip)) < 1e-6


def test_with_augmult_the_step_clips_the_mean_of_each_examples_augmented_views(tiny):
    """DPConfig(augmult=3): the step draws three augmentations of every sampled example from its augment key
    and clips each example's mean gradient over them (the metrics count every view of the kept examples)."""
    opt, dp = optax.sgd(0.3), DP._replace(augmult=3)
    indices, mask = train_dp.PoissonSampler(0, len(tiny.x_train), 16 / len(tiny.x_train))(2)
    x, y = jnp.asarray(tiny.x_train[indices]), jnp.asarray(tiny.y_train[indices])
    state = train.init_train_state(_small(jaxcnn.ops), x.shape, opt, seed=0)._replace(step=jnp.int32(2))

    def augment(key, x):
        return x + 0.5 * jax.random.normal(key, x.shape, x.dtype)

    step = train_dp.make_dp_train_step(_small, opt, train.cross_entropy_loss, dp, expected_batch_size=16.0,
                                       augment=augment)  # fmt: skip
    new, metrics = step(state, x, y, jnp.asarray(mask))

    augment_key, _, noise_key = jax.random.split(jax.random.fold_in(state.key, 2), 3)
    views = privacy.augmented_views(augment_key, x, augment, 3)
    total, _ = privacy.clipped_grad_sum(_small, privacy.per_example_cross_entropy, state.params, state.model_state,
                                        (views, jnp.repeat(y, 3)), clip=dp.clip, mask=mask, augmult=3)  # fmt: skip
    grads = privacy.add_noise(total, clip=dp.clip, noise_multiplier=dp.noise_multiplier, expected_batch_size=16.0,
                              noise_key=noise_key)  # fmt: skip
    expected = optax.apply_updates(state.params, opt.update(grads, opt.init(state.params))[0])
    for a, b in zip(jax.tree_util.tree_leaves(new.params), jax.tree_util.tree_leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    logits, _ = _small(jaxcnn.ops).apply(state.params, state.model_state, views)
    kept = np.repeat(np.asarray(mask, bool), 3)
    accuracy = np.mean((np.argmax(np.asarray(logits), -1) == np.repeat(np.asarray(y), 3))[kept])
    assert abs(float(metrics["accuracy"]) - accuracy) < 1e-6
    with pytest.raises(errors.ConfigError, match=r"augmult=3 draws augmentations of each example; give augment"):
        train_dp.make_dp_train_step(_small, opt, train.cross_entropy_loss, dp, expected_batch_size=16.0)
    with pytest.raises(errors.ConfigError, match=r"augmult must be a positive integer, got 0"):
        DP._replace(augmult=0).checked()


def test_fit_steps_through_the_samplers_batches_by_global_step(tiny):
    """fit's private run equals the step applied by hand to sampler(t) for t = 0, 1, ... (into epoch 2)."""
    result = train.fit(_small, tiny, epochs=2, batch_size=16, optimizer=optax.sgd(0.3), privacy=DP, max_steps=8,
                       progress=False)  # fmt: skip
    sampler = train_dp.PoissonSampler(0, len(tiny.x_train), 16 / len(tiny.x_train))
    step = train_dp.make_dp_train_step(_small, optax.sgd(0.3), train.cross_entropy_loss, DP, expected_batch_size=16.0)
    state = train.init_train_state(_small(jaxcnn.ops), (16, 8, 8, 1), optax.sgd(0.3), seed=0)
    for t in range(8):
        indices, mask = sampler(t)
        state, _ = step(state, tiny.x_train[indices], tiny.y_train[indices], mask)
    for a, b in zip(jax.tree_util.tree_leaves(result.state.params), jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_resumed_private_run_is_bit_identical_and_spends_the_same_epsilon(tiny, tmp_path):
    full = _fit(tiny, tmp_path / "full")
    _fit(tiny, tmp_path / "cut", checkpoint_every=4, max_steps=8)  # stops mid-epoch 2 (6 steps an epoch)
    resumed = _fit(tiny, tmp_path / "cut", checkpoint_every=4, resume=True)
    assert int(resumed.state.step) == 12
    for a, b in zip(jax.tree_util.tree_leaves(full.state), jax.tree_util.tree_leaves(resumed.state), strict=True):
        assert np.array_equal(np.asarray(jax.random.key_data(a) if a.dtype == jax.dtypes.prng_key else a),
                              np.asarray(jax.random.key_data(b) if b.dtype == jax.dtypes.prng_key else b))  # fmt: skip
    assert resumed.epsilon == full.epsilon
    with pytest.raises(checkpoint.CheckpointError, match="privacy="):  # other noise: another accounting
        _fit(tiny, tmp_path / "cut", resume=True, privacy=DP._replace(noise_multiplier=2.0))
    require_module("dp_accounting", "pip install 'jaxcnn[dp]'", "JAXCNN_REQUIRE_DP")
    assert full.epsilon == pytest.approx(privacy.epsilon(1.2, 16 / 96, 12, 1e-5))
    epochs = [r for r in full.history if "epsilon" in r]
    assert [r["epoch"] for r in epochs] == [1.0, 2.0]
    assert epochs[0]["epsilon"] == pytest.approx(privacy.epsilon(1.2, 16 / 96, 6, 1e-5))
    assert epochs[0]["epsilon"] < full.epsilon


def test_private_training_is_refused_for_what_it_cannot_do(tiny):
    bn = lambda ops: serial(layers.bind(ops).Conv(2, 3), layers.bind(ops).BatchNorm(), layers.Flatten, layers.Dense(3))
    with pytest.raises(errors.ConfigError, match=r"the BatchNorm at params '1' .* use GroupNorm"):
        train.fit(bn, tiny, epochs=1, batch_size=16, optimizer=optax.sgd(0.1), privacy=DP, progress=False)
    with pytest.raises(errors.ConfigError, match="privacy needs the model as a function of its ops"):
        train.fit(_small(jaxcnn.ops), tiny, epochs=1, batch_size=16, optimizer=optax.sgd(0.1), privacy=DP)
    with pytest.raises(errors.ConfigError, match="privacy: clip must be a positive number, got -1"):
        train.fit(_small, tiny, epochs=1, batch_size=16, optimizer=optax.sgd(0.1), privacy=DP._replace(clip=-1))
    with pytest.raises(errors.ConfigError, match=r"privacy: delta must be in \(0, 1\), got 2"):
        train.fit(_small, tiny, epochs=1, batch_size=16, optimizer=optax.sgd(0.1), privacy=DP._replace(delta=2))
    with pytest.raises(errors.ConfigError, match="privacy trains in float32"):
        train.fit(_small, tiny, epochs=1, batch_size=16, optimizer=optax.sgd(0.1), privacy=DP,
                  compute_dtype=jnp.bfloat16)  # fmt: skip


def _cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_cli_dp_noise_trains_and_writes_epsilon(tmp_path, capsys):
    require_module("dp_accounting", "pip install 'jaxcnn[dp]'", "JAXCNN_REQUIRE_DP")
    out = tmp_path / "run"
    argv = (f"train --dataset synthetic --model tanh_cnn --epochs 2 --batch-size 32 --optimizer momentum --lr 0.1 "
            f"--dp-noise 1.1 --dp-clip 0.5 --augment --dp-augmult 2 --no-plots --out {out}").split()  # fmt: skip
    code, stdout, stderr = _cli(argv, capsys)
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    n = 512 - summary["validation"]  # the synthetic set's 512 training examples, less those held out
    steps = 2 * (n // 32)
    assert summary["steps"] == steps
    assert summary["epsilon"] == pytest.approx(privacy.epsilon(1.1, 32 / n, steps, 1e-5))
    assert summary["noise_multiplier"] == 1.1 and summary["clip"] == 0.5 and summary["delta"] == 1e-5
    assert summary["augmult"] == 2 and summary["config"]["dp_augmult"] == 2
    assert f"epsilon {summary['epsilon']:.3f}" in stdout
    assert "epoch 2: val loss" in stderr and f"epsilon {summary['epsilon']:.3f}" in stderr.splitlines()[-1]


@pytest.mark.parametrize(
    "flags, message",
    [
        ("--dp-epsilon 2 --dp-noise 1", "give --dp-epsilon or --dp-noise, not both; got 2.0 and 1.0"),
        ("--dp-clip 0.1", "--dp-clip 0.1 applies to private training: add --dp-epsilon or --dp-noise"),
        ("--dp-noise 1 --dtype bfloat16", "private training computes in float32, got --dtype bfloat16"),
        ("--dp-noise 1 --dp-delta 1.5", r"--dp-delta must be in \(0, 1\), got 1.5"),
        ("--dp-augmult 2", "--dp-augmult 2 applies to private training: add --dp-epsilon or --dp-noise"),
        ("--dp-noise 1 --dp-augmult 3", "--dp-augmult 3 draws augmentations of each example: add --augment"),
        pytest.param(
            "--dp-noise 1 --model resnet20", r"the BatchNorm at params .* use GroupNorm", marks=pytest.mark.slow
        ),  # fmt: skip
    ],
)
def test_cli_dp_flags_are_checked_in_one_line(flags, message, tmp_path, capsys):
    argv = f"train --dataset synthetic --epochs 1 --batch-size 16 --max-steps 1 --no-plots --out {tmp_path} {flags}"
    code, _, stderr = _cli(argv.split(), capsys)
    assert code != 0
    last = stderr.strip().splitlines()[-1]
    assert "Traceback" not in stderr and __import__("re").search(message, last), stderr


@pytest.mark.slow
def test_cli_dp_epsilon_calibrates_the_noise_and_spends_at_most_it(tmp_path, capsys):
    require_module("dp_accounting", "pip install 'jaxcnn[dp]'", "JAXCNN_REQUIRE_DP")
    out = tmp_path / "run"
    argv = (f"train --dataset synthetic --model tanh_cnn --epochs 2 --batch-size 32 --optimizer momentum --lr 0.1 "
            f"--dp-epsilon 4 --no-plots --out {out}").split()  # fmt: skip
    code, _, stderr = _cli(argv, capsys)
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    sigma, steps = summary["noise_multiplier"], summary["steps"]
    assert summary["config"]["dp_noise"] == sigma and summary["clip"] == 1.0
    assert 3.95 < summary["epsilon"] <= 4.0
    rate = 32 / (512 - summary["validation"])
    assert privacy.epsilon(sigma * 0.99, rate, steps, 1e-5) > 4.0  # the smallest such noise
    assert f"noise multiplier {sigma:.4f} spends epsilon 4.0" in stderr


TWO_DEVICES = textwrap.dedent(
    """
    import json
    import jax, numpy as np, optax
    from jaxcnn import data, layers, privacy, serial, train

    assert jax.device_count() == 2, jax.devices()

    def small(ops):
        L = layers.bind(ops)
        return serial(L.Conv(4, (3, 3), stride=2), L.Tanh, L.Flatten, L.Dense(3))

    ds = data.load("synthetic", image_shape=(8, 8), num_classes=3, num_train=96, num_test=24)
    dp = privacy.DPConfig(clip=0.5, noise_multiplier=1.2)
    fits = {n: train.fit(small, ds, epochs=1, batch_size=16, optimizer=optax.sgd(0.3), privacy=dp, devices=n,
                         progress=False) for n in (1, 2)}
    one, two = (jax.tree_util.tree_leaves(fits[n].state.params) for n in (1, 2))
    print(json.dumps({
        "max_abs": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(one, two)),
        "moved": max(float(np.max(np.abs(np.asarray(a)))) for a in one),
        "sharded": len(two[0].sharding.device_set),
        "epsilon": [fits[1].epsilon, fits[2].epsilon],
    }))
    """
)


@pytest.mark.slow
def test_private_training_on_two_devices_equals_one_device():
    """Each device clips its own examples; the noise is drawn once (the same key everywhere) and added once
    to the all-reduced sum. Added on each device before the sum, it would be twice as large in variance."""
    r = _run_script(TWO_DEVICES, devices=2)
    assert r["sharded"] == 2 and r["moved"] > 0.1
    assert r["max_abs"] < 1e-5, r
    assert r["epsilon"][0] == r["epsilon"][1]
