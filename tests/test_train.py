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


def test_resume_in_process_is_bit_identical(tiny_data, tmp_path):
    full = _fit(tiny_data, tmp_path / "full")
    _fit(tiny_data, tmp_path / "cut", checkpoint_every=5, max_steps=10)  # stops mid-epoch 2
    assert checkpoint.read_meta(tmp_path / "cut")["step"] == 10
    resumed = _fit(tiny_data, tmp_path / "cut", checkpoint_every=5, resume=True)
    assert int(resumed.state.step) == 24
    assert _equal_trees(full.state, resumed.state)

    # the replay did not duplicate metrics: training rows strictly increase in step, and after the cut
    # (step 10, where the stopped run logged its partial window) they are the uninterrupted run's rows
    def train_steps(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["step"] for line in lines if "loss" in json.loads(line)]

    cut, full_steps = train_steps("cut"), train_steps("full")
    assert cut == sorted(set(cut))
    assert [s for s in cut if s > 10] == [s for s in full_steps if s > 10]


def test_jitted_step_does_not_recompile(tiny_data):
    model = models.lenet5(num_classes=4)
    opt = optax.adam(1e-3)
    state = train.init_train_state(model, (32, 28, 28, 1), opt, seed=0)
    step = train.make_train_step(model, opt)
    x, y = jnp.asarray(tiny_data.x_train[:32]), jnp.asarray(tiny_data.y_train[:32])
    state, _ = step(state, x, y)
    state, _ = step(state, x, y)
    assert step._cache_size() == 1


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
    ]
    killed, full = tmp_path / "killed", tmp_path / "full"
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxcnn", *args, "--out", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        step = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                step = checkpoint.read_meta(killed)["step"]
            except checkpoint.CheckpointError:
                step = 0
            if step >= 30:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    stopped_at = checkpoint.read_meta(killed)["step"]
    assert 30 <= stopped_at < 320 and stopped_at % 16 != 0 or stopped_at >= 30  # mid-run, usually mid-epoch
    resumed = _cli(*args, "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    uninterrupted = _cli(*args, "--out", str(full))
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    header = lambda d: json.loads((d / checkpoint.CHECKPOINT_NAME).read_bytes().split(b"\n")[1])
    assert header(killed)["meta"]["step"] == header(full)["meta"]["step"] == 320
    assert header(killed)["sha256"] == header(full)["sha256"]  # bit-identical parameters and optimizer state


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
