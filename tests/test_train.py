"""Training: the step learns, checkpoints are atomic and refuse damage, and a killed run resumes exactly."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import sigkill_after_checkpoint

from jaxcnn import checkpoint, data, models, train
from jaxcnn.cli import main


@pytest.fixture(scope="module")
def tiny_data():
    return data.load("synthetic", image_shape=(28, 28), num_classes=4, num_train=256, num_test=64)


def _fit(tiny_data, out, **kwargs):
    opt, lr = train.make_optimizer("momentum", 0.05, total_steps=24)
    defaults = dict(
        epochs=3,
        batch_size=32,
        optimizer=opt,
        learning_rate=lr,
        out_dir=out,
        log_every=4,
        progress=False,
        meta={"model": "lenet5", "dataset": "synthetic"},
    )
    return train.fit(models.lenet5(num_classes=4), tiny_data, **{**defaults, **kwargs})


def _equal_trees(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


def test_training_reduces_the_loss_and_writes_metrics(tiny_data, tmp_path):
    result = _fit(tiny_data, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    assert {"step", "epoch", "loss", "accuracy", "lr", "examples_per_s"} <= set(train_rows[0])
    assert [r["step"] for r in rows if "test_accuracy" in r] == [8, 16, 24]
    assert result.test["accuracy"] > 0.5  # 4 classes: chance is 0.25
    assert int(result.state.step) == 24 and checkpoint.read_meta(tmp_path)["step"] == 24


def test_epoch_rows_carry_the_training_time_without_the_evaluations(tiny_data, tmp_path, monkeypatch):
    """``time_s`` (what the time-to-accuracy benchmark reads) counts the steps, not the evaluations: each
    evaluation here sleeps 1 s, an epoch of 8 small steps takes well under that."""
    from jaxcnn.train import loop

    real = loop._evaluate

    def slow_evaluate(*args, **kwargs):
        time.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "_evaluate", slow_evaluate)
    result = _fit(tiny_data, tmp_path)
    times = [r["time_s"] for r in result.history if "test_accuracy" in r]
    assert len(times) == 3 and 0 < times[0] < times[1] < times[2]
    assert times[1] - times[0] < 1.0 and times[2] - times[1] < 1.0, times


class _StepCounter(train.Callback):
    def __init__(self):
        self.steps = 0

    def on_step(self, loop, progress, state):
        self.steps += 1


def test_resume_in_process_is_bit_identical(tiny_data, tmp_path):
    full = _fit(tiny_data, tmp_path / "full")
    _fit(tiny_data, tmp_path / "cut", checkpoint_every=5, max_steps=10)  # stops mid-epoch 2
    assert checkpoint.read_meta(tmp_path / "cut")["step"] == 10
    counted = _StepCounter()
    resumed = _fit(tiny_data, tmp_path / "cut", checkpoint_every=5, resume=True, callbacks=[counted])
    assert int(resumed.state.step) == 24
    assert _equal_trees(full.state, resumed.state)
    assert counted.steps == 14  # it went on from step 10, rather than training again from scratch

    # the replay did not duplicate metrics: training rows strictly increase in step, and after the cut
    # (step 10, where the stopped run logged its partial window) they are the uninterrupted run's rows
    def train_steps(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["step"] for line in lines if "loss" in json.loads(line)]

    cut, full_steps = train_steps("cut"), train_steps("full")
    assert cut == sorted(set(cut))
    assert [s for s in cut if s > 10] == [s for s in full_steps if s > 10]


def test_jitted_step_does_not_recompile(tiny_data):
    lenet, traces = models.lenet5(num_classes=4), []

    def apply(*args, **kwargs):  # runs once per trace of the step: a recompilation starts with a retrace
        traces.append(1)
        return lenet.apply(*args, **kwargs)

    model, opt = lenet._replace(apply=apply), optax.adam(1e-3)
    state = train.init_train_state(model, (32, 28, 28, 1), opt, seed=0)
    step = train.make_train_step(model, opt)
    x, y = jnp.asarray(tiny_data.x_train[:32]), jnp.asarray(tiny_data.y_train[:32])
    state, _ = step(state, x, y)
    state, _ = step(state, x, y)
    assert len(traces) == 1 and step._cache_size() <= 1  # (see _cache_size in tests/helpers.py)


def test_checkpoint_round_trip_and_atomic_write(tmp_path, monkeypatch):
    tree = {"w": np.arange(6.0).reshape(2, 3), "step": np.int32(7), "key": jax.random.PRNGKey(3)}
    checkpoint.save(tmp_path, tree, {"model": "m"})
    restored, meta = checkpoint.load(tmp_path, tree)
    assert meta == {"model": "m"} and _equal_trees(tree, restored)
    before = (tmp_path / checkpoint.CHECKPOINT_NAME).read_bytes()

    def interrupted(src, dst):
        raise KeyboardInterrupt  # as if the process died between writing and renaming

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, {**tree, "w": tree["w"] + 1}, {"model": "m"})
    monkeypatch.undo()
    assert (tmp_path / checkpoint.CHECKPOINT_NAME).read_bytes() == before  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.CHECKPOINT_NAME]  # no temporary left


def test_damaged_checkpoints_are_refused(tmp_path):
    tree = {"w": np.ones((4, 4))}
    path = checkpoint.save(tmp_path, tree, {})
    good = path.read_bytes()
    path.write_bytes(good[:-3])
    with pytest.raises(checkpoint.CheckpointError, match="damaged: payload has"):
        checkpoint.load(tmp_path, tree)
    flipped = bytearray(good)
    flipped[-5] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(checkpoint.CheckpointError, match="SHA-256 does not match"):
        checkpoint.load(tmp_path, tree)
    path.write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match="not a jaxcnn checkpoint"):
        checkpoint.load(tmp_path, tree)
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint at"):
        checkpoint.load(tmp_path / "missing", tree)


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    opt = optax.sgd(0.1)
    lenet = train.init_train_state(models.lenet5(num_classes=4), (2, 28, 28, 1), opt, 0)
    checkpoint.save(tmp_path, lenet, {})
    other = train.init_train_state(models.lenet5(num_classes=10), (2, 28, 28, 1), opt, 0)  # same tree, new shapes
    mismatch = r"does not fit this model: expected .*\(10,\) float32, found .*\(4,\) float32"
    with pytest.raises(checkpoint.CheckpointError, match=mismatch):
        checkpoint.load(tmp_path, other)
    different = train.init_train_state(models.mnist1d_cnn(num_classes=4), (2, 40, 1), opt, 0)
    with pytest.raises(checkpoint.CheckpointError, match="does not fit this model"):
        checkpoint.load(tmp_path, different)


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "jaxcnn", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    args = [
        "train",
        "--dataset",
        "synthetic",
        "--model",
        "lenet5",
        "--epochs",
        "20",
        "--batch-size",
        "32",
        "--optimizer",
        "momentum",
        "--lr",
        "0.02",
        "--checkpoint-every",
        "10",
        "--log-every",
        "5",
        "--no-plots",
        "--val-fraction",
        "0",  # every example trains: 16 steps an epoch
    ]
    killed, full = tmp_path / "killed", tmp_path / "full"
    stopped_at = sigkill_after_checkpoint([sys.executable, "-m", "jaxcnn", *args, "--out", str(killed)], killed, 30)
    assert (
        30 <= stopped_at < 320
    )  # killed mid-run, after the checkpoint of step >= 30 (mid-epoch unless a multiple of 16)
    resumed = _cli(*args, "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    uninterrupted = _cli(*args, "--out", str(full))
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    header = lambda d: json.loads((d / checkpoint.CHECKPOINT_NAME).read_bytes().split(b"\n")[1])
    assert header(killed)["meta"]["step"] == header(full)["meta"]["step"] == 320
    assert header(killed)["sha256"] == header(full)["sha256"]  # bit-identical parameters and optimizer state


@pytest.mark.slow
def test_cli_train_eval_and_plots(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "synthetic", "--epochs", "1", "--out", str(out)]) == 0
    for name in ("curves.png", "filters.png", "confusion.png", "saliency.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    summary = json.loads((out / "summary.json").read_text())
    assert main(["eval", "--checkpoint", str(out)]) == 0
    assert 0.0 <= summary["test_accuracy"] <= 1.0


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--epochs", "0"], "argument --epochs: must be a positive int, got '0'"),
        (["train", "--lr", "-1"], "argument --lr: must be a positive float, got '-1'"),
        (["train", "--optimizer", "rmsprop"], "argument --optimizer: invalid choice: 'rmsprop'"),
        (
            ["train", "--dataset", "synthetic", "--model", "mnist1d_cnn", "--augment"],
            "--augment needs an image dataset",
        ),
        (["eval", "--checkpoint", "/nonexistent/run"], "no checkpoint at /nonexistent/run"),
    ],
)
def test_cli_errors_are_one_line(argv, message, capsys, tmp_path):
    if argv[0] == "train":
        argv = [*argv, "--out", str(tmp_path / "x"), "--max-steps", "1", "--no-plots"]
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err, err


def test_cli_resume_refuses_a_damaged_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "synthetic", "--epochs", "1", "--out", str(out), "--no-plots"]) == 0
    path = Path(out) / checkpoint.CHECKPOINT_NAME
    path.write_bytes(path.read_bytes()[:-10])
    capsys.readouterr()
    assert main(["train", "--dataset", "synthetic", "--out", str(out), "--resume"]) == 2
    assert "is damaged" in capsys.readouterr().err


@pytest.mark.slow
def test_a_kill_during_a_checkpoint_write_keeps_the_previous_checkpoint_and_resumes_exactly(tmp_path):
    args = [
        *"train --dataset synthetic --model lenet5 --epochs 3 --batch-size 32 --optimizer momentum --lr 0.02".split(),
        *"--checkpoint-every 10 --log-every 5 --no-plots --val-fraction 0".split(),  # 16 steps an epoch
    ]
    killed, full = tmp_path / "killed", tmp_path / "full"
    script = Path(__file__).with_name("kill_during_checkpoint.py")
    # the 3rd checkpoint (step 30) is killed between writing its bytes and renaming them into place
    proc = subprocess.run([sys.executable, str(script), "3", *args, "--out", str(killed)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert checkpoint.read_meta(killed)["step"] == 20  # the previous checkpoint, whole and verified
    assert [p.name.startswith(".checkpoint.msgpack.") for p in killed.iterdir()].count(True) == 1  # the torn one
    resumed = _cli(*args, "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not [p for p in killed.iterdir() if p.name.startswith(".checkpoint.msgpack.")]  # cleaned up
    assert _cli(*args, "--out", str(full)).returncode == 0
    header = lambda d: json.loads((d / checkpoint.CHECKPOINT_NAME).read_bytes().split(b"\n")[1])
    assert header(killed)["meta"]["step"] == header(full)["meta"]["step"] == 48
    assert header(killed)["sha256"] == header(full)["sha256"]


# `python -c LIMITED limit args...`: jaxcnn's CLI in a process whose writes beyond `limit` bytes fail
# with EFBIG (SIGXFSZ ignored, so write() returns the error), as they would on a full disk.
LIMITED = (
    "import resource, runpy, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "limit = int(sys.argv.pop(1)); resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)); "
    "sys.argv[0] = 'jaxcnn'; runpy.run_module('jaxcnn', run_name='__main__')"
)


@pytest.mark.slow
def test_a_failed_checkpoint_write_ends_the_run_in_one_line_with_the_previous_checkpoint_intact(tmp_path):
    out = tmp_path / "run"
    base = [sys.executable, "-m", "jaxcnn", *"train --dataset synthetic --batch-size 32 --no-plots".split()]
    assert subprocess.run([*base, "--epochs", "1", "--out", str(out)], capture_output=True).returncode == 0
    before = (out / checkpoint.CHECKPOINT_NAME).read_bytes()  # step 16, about 0.7 MB
    argv = [sys.executable, "-c", LIMITED, str(256 * 1024), *base[3:], "--epochs", "2", "--out", str(out), "--resume"]
    limited = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert limited.returncode == 2
    err = limited.stderr.strip().splitlines()  # the banner, epoch lines, then one line for the error
    assert "Traceback" not in limited.stderr and err[-1].startswith("jaxcnn train: error: "), err
    assert str(out / checkpoint.CHECKPOINT_NAME) in err[-1], err
    assert "File too large" in err[-1] and "previous version" in err[-1], err
    assert (out / checkpoint.CHECKPOINT_NAME).read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]


def _random_step_losses(model, augment, steps=4):
    """Losses of ``steps`` train steps on one fixed batch with learning rate 0: the parameters never
    change, so the losses differ only through each step's dropout mask or augmentation."""
    opt = optax.sgd(0.0)
    state = train.init_train_state(model, (8, 12, 12, 1), opt, seed=0)
    step = train.make_train_step(model, opt, augment=augment)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(8, 12, 12, 1)), jnp.float32)
    y = jnp.arange(8, dtype=jnp.int32) % 4
    first = state
    losses = []
    for _ in range(steps):
        state, metrics = step(state, x, y)
        losses.append(float(metrics["loss"]))
    again = step(first, x, y)[1]["loss"]  # step 0 once more: the same key, the same mask
    return losses, float(again)


def test_dropout_masks_and_augmentations_differ_between_steps_and_repeat_for_the_same_step():
    from jaxcnn import layers, serial

    with_dropout = serial(layers.Flatten, layers.Dense(32), layers.Dropout(0.5), layers.Dense(4))
    losses, again = _random_step_losses(with_dropout, None)
    assert len(set(losses)) == len(losses) and again == losses[0], losses
    plain = serial(layers.Flatten, layers.Dense(4))
    crop = lambda key, x: data.augment(key, x, crop_pad=2, flip=True)
    losses, again = _random_step_losses(plain, crop)
    assert len(set(losses)) == len(losses) and again == losses[0], losses
    losses, _ = _random_step_losses(plain, None)  # and without either, nothing changes between steps
    assert len(set(losses)) == 1


def test_resume_with_dropout_batch_norm_and_augmentation_is_bit_identical(tiny_data, tmp_path):
    from jaxcnn import layers, serial

    def run(out, **kwargs):
        model = serial(
            layers.Conv(4, 3, stride=2), layers.BatchNorm(), layers.Relu, layers.Flatten, layers.Dropout(0.3),
            layers.Dense(4),
        )  # fmt: skip
        opt, lr = train.make_optimizer("momentum", 0.05, total_steps=24)
        augment = lambda key, x: data.augment(key, x, crop_pad=2, flip=True, rotate_deg=10.0)
        return train.fit(
            model, tiny_data, epochs=3, batch_size=32, optimizer=opt, learning_rate=lr, out_dir=out, log_every=4,
            progress=False, augment=augment, **kwargs,
        )  # fmt: skip

    full = run(tmp_path / "full")
    run(tmp_path / "cut", checkpoint_every=5, max_steps=13)  # stops mid-epoch 2
    resumed = run(tmp_path / "cut", checkpoint_every=5, resume=True)
    assert int(resumed.state.step) == 24
    assert _equal_trees(full.state, resumed.state)  # parameters, running statistics, optimizer state
    assert not _equal_trees(full.state.model_state, train.init_train_state(
        serial(layers.Conv(4, 3, stride=2), layers.BatchNorm()), (32, 28, 28, 1), optax.sgd(0.1), 0
    ).model_state)  # fmt: skip


class _Recorder(train.Callback):
    """Every hook call, in order: (hook, step, the row's keys or None)."""

    def __init__(self):
        self.calls = []

    def on_start(self, loop, progress, state):
        self.calls.append(("start", progress.step, None))

    def on_step(self, loop, progress, state):
        self.calls.append(("step", progress.step, None))

    def on_log(self, loop, progress, row):
        self.calls.append(("log", progress.step, row))

    def on_evaluation(self, loop, progress, row, state):
        self.calls.append(("evaluation", progress.step, row))

    def on_end(self, loop, progress, state):
        self.calls.append(("end", progress.step, None))

    def on_close(self, loop, progress):
        self.calls.append(("close", progress.step, None))


def test_callbacks_see_every_step_row_and_evaluation_in_order(tiny_data, tmp_path):
    recorder = _Recorder()
    result = _fit(tiny_data, tmp_path, epochs=2, callbacks=[recorder])  # 8 steps an epoch, a row every 4
    hooks = [(hook, step) for hook, step, _ in recorder.calls]
    expected = [("start", 0)]
    for step in range(1, 17):
        expected += [("log", step)] if step % 4 == 0 else []
        expected += [("step", step)]
        expected += [("evaluation", step)] if step % 8 == 0 else []
    assert hooks == [*expected, ("end", 16), ("close", 16)]
    # the rows the callbacks saw are the run's history and metrics.jsonl, in the same order
    rows = [row for hook, _, row in recorder.calls if row is not None]
    assert rows == result.history
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == rows


def test_a_failing_run_still_closes_its_callbacks(tiny_data, tmp_path):
    class Stop(_Recorder):
        def on_log(self, loop, progress, row):
            super().on_log(loop, progress, row)
            raise KeyboardInterrupt  # as a user stopping the run

    stop = Stop()
    with pytest.raises(KeyboardInterrupt):
        _fit(tiny_data, tmp_path, callbacks=[stop])
    assert [hook for hook, _, _ in stop.calls][-2:] == ["log", "close"]


def test_fit_takes_a_frozen_config_or_its_fields_as_keywords(tiny_data):
    opt = optax.sgd(0.1)
    config = train.FitConfig(epochs=1, batch_size=64, optimizer=opt, progress=False)
    by_config = train.fit(models.lenet5(num_classes=4), tiny_data, config)
    by_keywords = train.fit(models.lenet5(num_classes=4), tiny_data, epochs=1, batch_size=64, optimizer=opt,
                            progress=False)  # fmt: skip
    replaced = train.fit(models.lenet5(num_classes=4), tiny_data, config._replace(batch_size=32), batch_size=64)
    for other in (by_keywords, replaced):
        assert _equal_trees(by_config.state, other.state) and _equal_trees(by_config.test, other.test)
    with pytest.raises(ValueError, match="fit got an unknown setting 'epoch'; FitConfig's fields are"):
        train.fit(models.lenet5(num_classes=4), tiny_data, config, epoch=3)
    with pytest.raises(ValueError, match="fit needs epochs, optimizer"):
        train.fit(models.lenet5(num_classes=4), tiny_data, batch_size=3)
    with pytest.raises(ValueError, match="callbacks must be jaxcnn.train.Callback instances, got"):
        train.fit(models.lenet5(num_classes=4), tiny_data, config, callbacks=[print])
    with pytest.raises(AttributeError):
        config.epochs = 2  # frozen


def test_the_cli_turns_library_errors_into_one_line_and_keeps_other_tracebacks(monkeypatch, capsys):
    from jaxcnn.errors import ConfigError
    from jaxcnn.train import run

    def broken(options):
        raise ZeroDivisionError("a bug, not a usage error")

    monkeypatch.setattr(run, "main", broken)
    with pytest.raises(ZeroDivisionError):  # a programming error keeps its traceback
        main(["train", "--dataset", "synthetic"])

    def refused(options):
        raise ConfigError(f"--epochs {options.epochs} does not fit\nsecond line")

    monkeypatch.setattr(run, "main", refused)
    assert main(["train", "--dataset", "synthetic", "--epochs", "3"]) == 2
    assert capsys.readouterr().err == "jaxcnn train: error: --epochs 3 does not fit\n"


def test_a_log_window_may_span_an_epochs_end(tiny_data):
    """With 8 steps an epoch and a row every 3 steps, the row of step 9 averages steps 7, 8 and 9."""
    per_step = _fit(tiny_data, None, epochs=2, log_every=1).history
    every_3 = _fit(tiny_data, None, epochs=2, log_every=3).history
    loss = {row["step"]: row["loss"] for row in per_step if "loss" in row}
    rows = {row["step"]: row for row in every_3 if "loss" in row}
    assert sorted(rows) == [3, 6, 9, 12, 15, 16]
    for step, first in ((9, 7), (12, 10), (16, 16)):
        window = [loss[s] for s in range(first, step + 1)]
        np.testing.assert_allclose(rows[step]["loss"], np.mean(window), rtol=1e-6)
