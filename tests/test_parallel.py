"""Scaling out: data parallelism over a device mesh, several processes, and bfloat16 mixed precision.

JAX in the pytest process is already initialised with one CPU device, so the multi-device checks run in
subprocesses with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (4 devices in one process; two
processes of 2 devices joined by ``jax.distributed`` with Gloo collectives), each with a time limit.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxcnn
from jaxcnn import checkpoint, layers, models, train
from jaxcnn.cli import main

REPO = Path(__file__).resolve().parents[1]


def _env(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    return env


def _run_script(source: str, devices: int, timeout: float = 150) -> dict:
    """Run ``source`` in a fresh Python with ``devices`` CPU devices; it prints one JSON line last."""
    proc = subprocess.run(
        [sys.executable, "-c", source], env=_env(devices), cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# One process, four devices
# ---------------------------------------------------------------------------------------------

FOUR_DEVICES = textwrap.dedent(
    """
    import io, json, contextlib
    import jax, numpy as np, optax
    import jaxcnn
    from jaxcnn import data, distributed, layers, train
    from jaxcnn.cli import main

    assert jax.device_count() == 4, jax.devices()
    out = {}

    def model():
        return jaxcnn.serial(
            layers.Conv(4, (3, 3), padding="SAME", use_bias=False), layers.BatchNorm(), layers.Relu,
            layers.MaxPool((2, 2)), layers.Flatten, layers.Dense(3),
        )

    def max_rel(a, b):  # the largest normwise relative difference of two trees' leaves
        errs = [float(np.linalg.norm(np.asarray(x, np.float64) - np.asarray(y, np.float64))
                      / (np.linalg.norm(np.asarray(y, np.float64)) + 1e-30))
                for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)]
        return max(errs)

    # one hand-made step on a 1-device mesh and on a 4-device mesh, from the same state and batch
    net, opt = model(), optax.sgd(0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8, 8, 2)).astype(np.float32)
    y = rng.integers(0, 3, 8).astype(np.int32)
    state0 = train.init_train_state(net, x.shape, opt, seed=0)
    runs = {}
    for n in (1, 4):
        mesh = distributed.make_mesh(n)
        step = train.make_train_step(net, opt, mesh=mesh)
        state = distributed.replicate(state0, mesh)
        xb, yb = distributed.shard_batch((x, y), mesh)
        new_state, metrics = step(state, xb, yb)
        runs[n] = (new_state, metrics, xb, yb, step.lower(state, xb, yb).compile().as_text())
    (s1, m1, *_), (s4, m4, xb4, yb4, hlo4) = runs[1], runs[4]
    out["params_rel_err"] = max_rel(s4.params, s1.params)
    out["bn_state_rel_err"] = max_rel(s4.model_state, s1.model_state)
    out["opt_state_rel_err"] = max_rel(s4.opt_state, s1.opt_state)
    out["loss"] = [float(m1["loss"]), float(m4["loss"])]
    out["params_changed"] = max_rel(s4.params, state0.params) > 1e-3
    # batch-norm's running mean after one step is (1 - momentum) * the mean of the *global* batch's conv output
    first = layers.Conv(4, (3, 3), padding="SAME", use_bias=False)
    z, _ = first.apply(state0.params[0], {}, x)
    running_mean = np.asarray(s4.model_state[1]["mean"])
    z = np.asarray(z)
    out["bn_mean_is_global"] = float(np.max(np.abs(running_mean - 0.1 * np.mean(z, axis=(0, 1, 2)))))
    out["bn_mean_of_one_shard"] = float(np.max(np.abs(running_mean - 0.1 * np.mean(z[:2], axis=(0, 1, 2)))))
    leaves = jax.tree_util.tree_leaves(s4)
    out["state_replicated_on_4"] = all(l.is_fully_replicated and len(l.sharding.device_set) == 4 for l in leaves)
    out["batch_spec"] = [list(xb4.sharding.spec), list(yb4.sharding.spec)]
    out["batch_devices"] = len(xb4.sharding.device_set)
    out["batch_replicated"] = xb4.is_fully_replicated
    out["batch_shards"] = sorted([list(s.data.shape) for s in xb4.addressable_shards])
    out["all_reduce_in_hlo"] = "all-reduce" in hlo4

    # fit on 4 devices equals fit on 1 device (synthetic data, the batch-norm model, 3 steps)
    ds = data.load("synthetic", image_shape=(8, 8), num_classes=3, num_train=64, num_test=16)
    fits = {n: train.fit(model(), ds, epochs=1, batch_size=16, optimizer=optax.adam(1e-2), devices=n,
                         max_steps=3, progress=False) for n in (1, 4)}
    out["fit_rel_err"] = max_rel(fits[4].state.params, fits[1].state.params)
    out["fit_test_acc"] = [fits[1].test["accuracy"], fits[4].test["accuracy"]]
    out["fit_sharded"] = len(jax.tree_util.tree_leaves(fits[4].state.params)[0].sharding.device_set)
    try:
        train.fit(model(), ds, epochs=1, batch_size=6, optimizer=optax.sgd(0.1), devices=4, progress=False)
    except ValueError as e:
        out["fit_error"] = str(e)

    # the CLI: a batch the devices do not divide, and more devices than there are
    for name, argv in (("cli_batch", ["--batch-size", "30"]), ("cli_devices", ["--devices", "8"])):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main([*"train --dataset synthetic --max-steps 1 --no-plots --out /nonexistent/x".split(), *argv])
        out[name] = [code, err.getvalue()]
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def four_devices():
    return _run_script(FOUR_DEVICES, devices=4)


@pytest.mark.slow
def test_a_step_on_four_devices_equals_one_device_with_batch_norm(four_devices):
    r = four_devices
    assert r["params_changed"]
    assert r["params_rel_err"] < 2e-5, r
    assert r["bn_state_rel_err"] < 2e-5, r
    assert r["opt_state_rel_err"] < 2e-5, r
    assert abs(r["loss"][0] - r["loss"][1]) < 1e-5 * abs(r["loss"][0])


@pytest.mark.slow
def test_batch_norm_statistics_are_those_of_the_global_batch(four_devices):
    assert four_devices["bn_mean_is_global"] < 1e-5
    assert four_devices["bn_mean_of_one_shard"] > 1e-3  # so the check above tells the two apart


@pytest.mark.slow
def test_state_is_replicated_and_the_batch_is_split_over_four_devices(four_devices):
    r = four_devices
    assert r["state_replicated_on_4"]
    assert r["batch_spec"] == [["data"], ["data"]]
    assert r["batch_devices"] == 4 and not r["batch_replicated"]
    assert r["batch_shards"] == [[2, 8, 8, 2]] * 4
    assert r["all_reduce_in_hlo"]  # XLA inserted the gradient (and batch-statistics) all-reduce


@pytest.mark.slow
def test_fit_on_four_devices_equals_fit_on_one(four_devices):
    r = four_devices
    assert r["fit_rel_err"] < 1e-4, r
    assert r["fit_test_acc"][0] == r["fit_test_acc"][1]
    assert r["fit_sharded"] == 4


@pytest.mark.slow
def test_a_batch_the_devices_do_not_divide_is_refused_in_one_line(four_devices):
    r = four_devices
    assert r["fit_error"].startswith("batch size 6 is not divisible by the number of devices 4")
    code, err = r["cli_batch"]
    assert code == 2 and err.strip().splitlines() == [
        "jaxcnn train: error: batch size 30 is not divisible by the number of devices 4; "
        "use a multiple of 4 or fewer devices"
    ]
    code, err = r["cli_devices"]
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--devices must be at most 4 (the local devices of this process), got 8" in err


# ---------------------------------------------------------------------------------------------
# Two processes of two devices each vs one process of four
# ---------------------------------------------------------------------------------------------

# Runs the real CLI; records the final parameters of every process (process 1 writes no checkpoint).
DRIVER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from jaxcnn import cli, distributed
    from jaxcnn.train import run as train

    dump, argv = sys.argv[1], sys.argv[2:]
    real_fit = train.fit  # the fit that `jaxcnn train` calls

    def fit(*args, **kwargs):
        result = real_fit(*args, **kwargs)
        import jax
        leaves = jax.tree_util.tree_leaves(distributed.local_copy(result.state.params))
        np.savez(dump, *[np.asarray(leaf) for leaf in leaves], process_count=jax.process_count(),
                 devices=jax.device_count(), step=int(distributed.local_copy(result.state.step)))
        return result

    train.fit = fit
    sys.exit(cli.main(argv))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _leaves(npz) -> list[np.ndarray]:
    return [npz[f"arr_{i}"] for i in range(len([k for k in npz.files if k.startswith("arr_")]))]


@pytest.mark.slow
def test_two_processes_train_like_one_process_on_four_devices(tmp_path):
    deadline = time.monotonic() + 180
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    common = "train --dataset synthetic --model lenet5 --batch-size 32 --optimizer momentum --lr 0.05 --log-every 1"
    common = [*common.split(), "--no-plots"]
    procs: list[subprocess.Popen] = []

    def wait_all(group):
        for p in group:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        for p in group:
            assert p.returncode == 0, p.stderr.read()[-4000:]

    def launch(extra, devices, dump):
        p = subprocess.Popen(
            [sys.executable, str(driver), str(dump), *common, *extra],
            env=_env(devices),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(p)
        return p

    def two_processes(extra, tag):
        port = _free_port()
        group = [
            launch(
                [*extra, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
                2,
                tmp_path / f"{tag}-{i}.npz",
            )
            for i in range(2)
        ]
        wait_all(group)

    try:
        # 2 processes x 2 devices: 2 steps, then resumed by both processes from process 0's checkpoint to step 4
        multi = tmp_path / "multi"
        two_processes(["--out", str(multi), "--max-steps", "2"], "first")
        assert checkpoint.read_meta(multi)["step"] == 2
        two_processes(["--out", str(multi), "--max-steps", "4", "--resume"], "resumed")
        # 1 process x 4 devices, 4 steps
        single = tmp_path / "single"
        wait_all([launch(["--out", str(single), "--max-steps", "4"], 4, tmp_path / "single.npz")])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            if p.stderr:
                p.stderr.close()

    p0, p1 = np.load(tmp_path / "resumed-0.npz"), np.load(tmp_path / "resumed-1.npz")
    ref = np.load(tmp_path / "single.npz")
    assert int(p0["process_count"]) == 2 and int(p0["devices"]) == 4 and int(p0["step"]) == 4
    assert int(ref["process_count"]) == 1 and int(ref["devices"]) == 4 and int(ref["step"]) == 4
    for a, b, r in zip(_leaves(p0), _leaves(p1), _leaves(ref), strict=True):
        np.testing.assert_array_equal(a, b)  # both processes hold the same parameters
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-6)  # and they are the single-process ones
    assert not np.allclose(_leaves(np.load(tmp_path / "first-0.npz"))[0], _leaves(p0)[0])  # training moved them
    # process 0 alone wrote the checkpoint and the metrics: one row per step, none twice
    opt, _ = train.make_optimizer("momentum", 0.05, total_steps=32)
    target = train.init_train_state(models.lenet5(num_classes=4), (32, 28, 28, 1), opt, seed=0)
    saved, _ = checkpoint.load(multi, target)
    for a, c in zip(_leaves(p0), jax.tree_util.tree_leaves(saved.params), strict=True):
        np.testing.assert_array_equal(a, c)
    rows = [json.loads(line) for line in (multi / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    header = lambda d: json.loads((d / checkpoint.CHECKPOINT_NAME).read_bytes().split(b"\n")[1])
    assert header(multi)["meta"]["step"] == header(single)["meta"]["step"] == 4
    assert json.loads((multi / "summary.json").read_text())["steps"] == 4


# ---------------------------------------------------------------------------------------------
# Mixed precision (in this process: one device)
# ---------------------------------------------------------------------------------------------


def _bn_model():
    return jaxcnn.serial(
        layers.Conv(4, (3, 3), padding="SAME", use_bias=False),
        layers.BatchNorm(),
        layers.Relu,
        layers.Flatten,
        layers.Dense(3),
    )


def _conv_input_dtypes(jaxpr) -> list[str]:
    """The dtypes of every ``conv_general_dilated``'s operands in ``jaxpr`` and its sub-jaxprs."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            found += [str(v.aval.dtype) for v in eqn.invars]
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else [value]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += _conv_input_dtypes(inner)
    return found


@pytest.fixture(scope="module")
def bf16_setup():
    model = _bn_model()
    _, params, state = model.init(jax.random.key(0), (1, 6, 6, 2))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(8, 6, 6, 2)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 3, 8), jnp.int32)
    return model, params, state, x, y


def test_bfloat16_policy_computes_in_bfloat16_and_returns_float32_gradients(bf16_setup):
    model, params, state, x, y = bf16_setup
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.float32)}
    objective = train.make_objective(model, compute_dtype=jnp.bfloat16)
    grad = jax.grad(lambda p: objective(p, state, x, y, None)[0])
    grads = grad(params)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(grads)} == {jnp.dtype(jnp.float32)}
    loss, (out, new_state) = objective(params, state, x, y, None)
    assert loss.dtype == jnp.float32 and out.dtype == jnp.float32
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(new_state)} == {jnp.dtype(jnp.float32)}
    # forward and backward convolutions (3 in all: y = x*w, dx, dw) run on bfloat16 operands ...
    dtypes = _conv_input_dtypes(jax.make_jaxpr(grad)(params).jaxpr)
    assert len(dtypes) >= 4 and set(dtypes) == {"bfloat16"}, dtypes
    # ... which the float32 policy does not do (so the check above can tell them apart)
    plain = train.make_objective(model)
    dtypes32 = _conv_input_dtypes(jax.make_jaxpr(jax.grad(lambda p: plain(p, state, x, y, None)[0]))(params).jaxpr)
    assert dtypes32 and set(dtypes32) == {"float32"}
    # the bfloat16 gradient approximates the float32 one
    exact = jax.grad(lambda p: plain(p, state, x, y, None)[0])(params)
    for g, e in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(exact)):
        assert float(jnp.linalg.norm(g - e)) <= 0.05 * float(jnp.linalg.norm(e))


def test_bfloat16_training_steps_reduce_the_loss(bf16_setup):
    model, params, state, x, y = bf16_setup
    opt = optax.adam(3e-2)
    train_state = train.init_train_state(model, x.shape, opt, seed=0)
    step = train.make_train_step(model, opt, compute_dtype=jnp.bfloat16)
    losses = []
    for _ in range(15):
        train_state, metrics = step(train_state, x, y)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0], losses
    for tree in (train_state.params, train_state.opt_state, train_state.model_state):
        floats = [leaf for leaf in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)]
        assert {leaf.dtype for leaf in floats} == {jnp.dtype(jnp.float32)}


def test_compute_dtype_is_checked():
    with pytest.raises(ValueError, match="compute_dtype must be a floating dtype such as jnp.bfloat16, got int32"):
        train.make_objective(_bn_model(), compute_dtype=jnp.int32)


@pytest.mark.slow
def test_cli_dtype_bfloat16_trains_and_evaluates(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*"train --dataset synthetic --max-steps 3 --no-plots --dtype bfloat16 --out".split(), str(out)]
    assert main(argv) == 0
    meta = checkpoint.read_meta(out)
    assert meta["config"]["dtype"] == "bfloat16" and meta["step"] == 3
    assert "bfloat16 compute" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert f"accuracy {summary['test_accuracy']:.4f}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--num-processes", "2"], "--num-processes and --process-id need --coordinator HOST:PORT"),
        (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "--coordinator must be HOST:PORT"),
        (
            ["--coordinator", "127.0.0.1:1234"],
            "--coordinator 127.0.0.1:1234 needs --num-processes P and --process-id I",
        ),
        (
            ["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"],
            "--process-id must be in [0, 2) (--num-processes), got 2",
        ),
        (["--coordinator", "auto", "--process-id", "0"], "--coordinator auto detects the processes"),
        (["--devices", "0"], "argument --devices: must be a positive int, got '0'"),
    ],
)
def test_cli_scaling_flags_are_checked_in_one_line(argv, message, capsys, tmp_path):
    try:  # all refused before jax.distributed.initialize is called
        code = main(["train", "--dataset", "synthetic", "--out", str(tmp_path / "x"), "--no-plots", *argv])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "x").exists()
