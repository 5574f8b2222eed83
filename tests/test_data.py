"""jaxcnn.data: IDX parsing, Fashion-MNIST lookup and verified download, datasets, batching, augmentation.

Downloads are exercised only against a loopback server (tests/data_server.py) serving small generated
IDX files. Real-data tests need Debian's dataset-fashion-mnist, mnist1d and scikit-learn: without them
they skip, except when ``JAXCNN_REQUIRE_DATA=1`` (set by ``.ci/run``), where a missing one fails.
"""

import gzip
import hashlib
import importlib.util
import random
import socket
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from data_server import serve
from helpers import require
from hypothesis import given
from hypothesis import strategies as st

from jaxcnn import data
from jaxcnn.data import datasets as ds_module
from jaxcnn.data import fetch

FILES = data.FASHION_MNIST_FILES


def _missing(reason):
    require("JAXCNN_REQUIRE_DATA", reason)


def _require_module(name, install):
    if importlib.util.find_spec(name) is None:
        _missing(f"{name} is not installed ({install})")


# --- generated Fashion-MNIST-format files ---------------------------------------------------------


def _fake_split(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8)


def _fake_files(n_train=20, n_test=8, seed=0):
    """file name -> gzip bytes of a small, valid Fashion-MNIST-format set."""
    xtr, ytr = _fake_split(n_train, seed)
    xte, yte = _fake_split(n_test, seed + 1)
    arrays = {"train_images": xtr, "train_labels": ytr, "test_images": xte, "test_labels": yte}
    return {FILES[k]: gzip.compress(data.encode_idx(a), mtime=0) for k, a in arrays.items()}


def _write_files(directory, files):
    directory.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (directory / name).write_bytes(blob)
    return directory


def _sha(files):
    return {name: hashlib.sha256(blob).hexdigest() for name, blob in files.items()}


def _leftovers(directory):
    """Anything in directory that is not a complete, named data file (temporary downloads)."""
    return sorted(p.name for p in directory.iterdir() if p.name not in FILES.values()) if directory.exists() else []


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail any test here that opens a connection to a host other than 127.0.0.1."""
    real = socket.create_connection

    def guarded(address, *args, **kwargs):
        if address[0] != "127.0.0.1":
            raise AssertionError(f"test tried to reach {address[0]}: only 127.0.0.1 is allowed")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)


@pytest.fixture
def no_system_dirs(monkeypatch):
    """Hide the Debian directory and $JAXCNN_DATA so only the paths a test gives are searched."""
    monkeypatch.setattr(ds_module, "SYSTEM_DIRS", ())
    monkeypatch.delenv("JAXCNN_DATA", raising=False)


# --- IDX ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4)])
def test_idx_roundtrip(dtype, shape):
    a = (np.arange(np.prod(shape)) - 2).astype(dtype).reshape(shape)
    blob = data.encode_idx(a)
    assert len(blob) == 4 + 4 * len(shape) + a.nbytes
    b = data.parse_idx(blob)
    assert b.dtype == np.dtype(dtype) and b.shape == shape
    np.testing.assert_array_equal(a, b)
    b[...] = 0  # a writable, independent copy


def test_idx_magic_numbers():
    images = data.encode_idx(np.zeros((2, 28, 28), np.uint8))
    labels = data.encode_idx(np.zeros(2, np.uint8))
    assert images[:4] == (2051).to_bytes(4, "big") == bytes([0, 0, 8, 3])
    assert labels[:4] == (2049).to_bytes(4, "big") == bytes([0, 0, 8, 1])
    assert data.parse_idx(images, expected_magic=data.idx.IMAGES_MAGIC).shape == (2, 28, 28)
    with pytest.raises(data.IDXFormatError, match=r"x\.idx: bad magic number 0x00000801 \(2049.*expected 0x00000803"):
        data.parse_idx(labels, source="x.idx", expected_magic=data.idx.IMAGES_MAGIC)


@pytest.mark.parametrize(
    "blob, match",
    [
        (b"\x00\x00\x08", "at least 4 bytes"),
        (b"\x01\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x07", "first two bytes must be zero"),
        (b"\x00\x00\x07\x01" + b"\x00\x00\x00\x01" + b"\x07", "unknown IDX element type 0x07"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x03" + b"\x00\x00\x00\x02", r"3 dimensions \(16 header bytes\), the file has 8"),
        (b"\x00\x00\x08\x01" + b"\x00\x00\x00\x03" + b"\x01\x02", "truncated: shape \\(3,\\) needs 3 payload bytes"),
        (b"\x00\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x01\x02", "1 trailing bytes"),
        (b"\x00\x00\x0b\x01" + b"\x00\x00\x00\x02" + b"\x00\x01\x00", "needs 4 payload bytes, the file has 3"),
    ],
)
def test_idx_rejects_malformed(blob, match):
    with pytest.raises(data.IDXFormatError, match=match):
        data.parse_idx(blob, source="f.idx")


def test_read_idx_plain_and_gzip(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    (tmp_path / "plain").write_bytes(data.encode_idx(a))
    (tmp_path / "packed.gz").write_bytes(gzip.compress(data.encode_idx(a)))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "plain"), a)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "packed.gz"), a)


def test_encode_idx_rejects_bad_input():
    with pytest.raises(TypeError, match="dtype uint16"):
        data.encode_idx(np.zeros(2, np.uint16))
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        data.encode_idx(np.uint8(3))


# --- damaged local copies: every one is an error naming the file -----------------------------------


def _damage(kind, files):
    """Return (files, name of the file the error must name) for one kind of damage."""
    files = dict(files)
    tri, trl = FILES["train_images"], FILES["train_labels"]
    raw = gzip.decompress(files[tri])
    if kind == "not gzip":
        files[tri] = b"this is not gzip data"
    elif kind == "bad gzip body":
        blob = bytearray(files[tri])
        blob[len(blob) // 2 : len(blob) // 2 + 64] = bytes(64)
        files[tri] = bytes(blob)
    elif kind == "truncated gzip":
        files[tri] = files[tri][: len(files[tri]) // 2]
    elif kind == "wrong magic":
        files[tri] = files[trl]
    elif kind == "short payload":
        files[tri] = gzip.compress(raw[:-1])
    elif kind == "trailing bytes":
        files[tri] = gzip.compress(raw + b"\x00")
    elif kind == "count mismatch":
        files[trl] = gzip.compress(data.encode_idx(np.zeros(19, np.uint8)))
    elif kind == "label out of range":
        files[trl] = gzip.compress(data.encode_idx(np.full(20, 10, np.uint8)))
        return files, trl
    elif kind == "not 28x28":
        files[tri] = gzip.compress(data.encode_idx(np.zeros((20, 27, 28), np.uint8)))
    return files, tri


@pytest.mark.parametrize(
    "kind, match",
    [
        ("not gzip", "does not start with the gzip magic"),
        ("bad gzip body", "corrupt or truncated gzip data"),
        ("truncated gzip", "corrupt or truncated gzip data"),
        ("wrong magic", "bad magic number 0x00000801"),
        ("short payload", "truncated: shape \\(20, 28, 28\\) needs 15680 payload bytes, the file has 15679"),
        ("trailing bytes", "1 trailing bytes"),
        ("count mismatch", "holds 20 images but .* holds 19 labels"),
        ("label out of range", r"labels must lie in \[0, 10\), found 10"),
        ("not 28x28", "images must be 28x28, got 27x28"),
    ],
)
def test_damaged_local_copy_raises_naming_file(tmp_path, no_system_dirs, kind, match):
    files, culprit = _damage(kind, _fake_files())
    directory = _write_files(tmp_path / "fm", files)
    with pytest.raises(data.IDXFormatError, match=match) as info:
        data.load_fashion_mnist(directory, download=False, cache_dir=tmp_path / "cache", expected_counts=None)
    assert str(directory / culprit) in str(info.value)


def test_unexpected_example_count_raises(tmp_path, no_system_dirs):
    directory = _write_files(tmp_path / "fm", _fake_files())
    with pytest.raises(data.IDXFormatError, match="expected 60000 train examples, found 20"):
        data.load_fashion_mnist(directory, download=False, cache_dir=tmp_path / "cache")


# --- Fashion-MNIST lookup order -----------------------------------------------------------------


def test_search_order(tmp_path, monkeypatch):
    """data_dir, then $JAXCNN_DATA (or its fashion-mnist/), then system dirs, then the cache."""
    dirs = {
        "arg": _write_files(tmp_path / "arg", _fake_files(11, 1)),
        "env": _write_files(tmp_path / "env" / "fashion-mnist", _fake_files(12, 1)),
        "system": _write_files(tmp_path / "system", _fake_files(13, 1)),
        "cache": _write_files(tmp_path / "cache" / "fashion-mnist", _fake_files(14, 1)),
    }
    monkeypatch.setenv("JAXCNN_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(ds_module, "SYSTEM_DIRS", (dirs["system"],))

    def found():
        ds = data.load_fashion_mnist(
            tmp_path / "arg", download=False, cache_dir=tmp_path / "cache", expected_counts=None
        )
        return len(ds.y_train)

    assert data.find_fashion_mnist(tmp_path / "arg", cache_dir=tmp_path / "cache") == dirs["arg"]
    assert found() == 11
    (dirs["arg"] / FILES["test_labels"]).unlink()  # an incomplete directory is passed over
    assert found() == 12
    monkeypatch.delenv("JAXCNN_DATA")
    assert found() == 13
    monkeypatch.setattr(ds_module, "SYSTEM_DIRS", ())
    assert found() == 14


def test_not_found_without_download_lists_places(tmp_path, no_system_dirs):
    with pytest.raises(FileNotFoundError, match="not found in any of") as info:
        data.load_fashion_mnist(tmp_path / "nowhere", download=False, cache_dir=tmp_path / "cache")
    assert str(tmp_path / "nowhere") in str(info.value)
    assert str(tmp_path / "cache" / "fashion-mnist") in str(info.value)


def test_cache_dir_honours_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.cache_dir() == tmp_path / "jaxcnn"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # ignored, as the XDG spec says
    assert data.cache_dir() == Path.home() / ".cache" / "jaxcnn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.cache_dir() == Path.home() / ".cache" / "jaxcnn"


# --- download (loopback server only) ------------------------------------------------------------


def _routes(files, overrides=None):
    routes = {"/" + name: (blob, "ok") for name, blob in files.items()}
    routes.update(overrides or {})
    return routes


def test_download_good(tmp_path, monkeypatch, no_system_dirs):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    files = _fake_files()
    with serve(_routes(files)) as (url, log):
        ds = data.load_fashion_mnist(base_url=url, checksums=_sha(files), timeout=5, expected_counts=(20, 8))
        assert sorted(log) == sorted("/" + f for f in FILES.values())
        again = data.load_fashion_mnist(base_url=url, checksums=_sha(files), timeout=5, expected_counts=(20, 8))
        assert len(log) == 4, "a second load must read the cache, not download again"
    cache = tmp_path / "xdg" / "jaxcnn" / "fashion-mnist"
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == files
    xtr, ytr = _fake_split(20, 0)
    np.testing.assert_array_equal(ds.x_train[..., 0], xtr.astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.y_train, ytr)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32 and ds.x_test.shape == (8, 28, 28, 1)
    np.testing.assert_array_equal(again.x_test, ds.x_test)


def test_download_checksum_mismatch_leaves_nothing(tmp_path, no_system_dirs):
    files = _fake_files()
    name = FILES["train_images"]
    corrupted = bytearray(files[name])
    corrupted[100] ^= 0xFF
    with serve(_routes(files, {"/" + name: (bytes(corrupted), "ok")})) as (url, _):
        with pytest.raises(data.ChecksumError, match=f"checksum mismatch for {url}{name}"):
            data.fetch_fashion_mnist(cache_dir=tmp_path, base_url=url, checksums=_sha(files), timeout=5)
    cache = tmp_path / "fashion-mnist"
    assert not (cache / name).exists()
    assert _leftovers(cache) == []


@pytest.mark.parametrize(
    "behaviour, match", [("truncate", r"interrupted: received \d+ of \d+ bytes"), ("stall", "timed out")]
)
def test_download_interrupted_leaves_nothing(tmp_path, no_system_dirs, behaviour, match):
    files = _fake_files(n_train=60)  # gzip of random pixels: about 47 kB, several reads
    name = FILES["train_images"]
    size = len(files[name])
    with serve(_routes(files, {"/" + name: (files[name], behaviour)})) as (url, _):
        with pytest.raises(data.DownloadError, match=match) as info:
            data.load_fashion_mnist(cache_dir=tmp_path, base_url=url, checksums=_sha(files), timeout=0.5)
    assert f"{url}{name}" in str(info.value)
    assert behaviour == "stall" or f"received {size // 2} of {size} bytes" in str(info.value)
    cache = tmp_path / "fashion-mnist"
    assert not (cache / name).exists()
    assert _leftovers(cache) == []


def test_download_http_error_and_missing_checksum(tmp_path, no_system_dirs):
    files = _fake_files()
    del_name = FILES["train_labels"]
    with serve(_routes({k: v for k, v in files.items() if k != del_name})) as (url, log):
        with pytest.raises(data.DownloadError, match=f"download of {url}{del_name} failed.*404"):
            data.fetch_fashion_mnist(cache_dir=tmp_path, base_url=url, checksums=_sha(files), timeout=5)
        n_requests = len(log)
        sums = {k: v for k, v in _sha(files).items() if k != FILES["test_images"]}
        with pytest.raises(KeyError, match=r"no SHA-256 for \['t10k-images-idx3-ubyte.gz'\]"):
            data.fetch_fashion_mnist(cache_dir=tmp_path, base_url=url, checksums=sums, timeout=5)
        assert len(log) == n_requests, "nothing is downloaded when a file cannot be verified"
    assert _leftovers(tmp_path / "fashion-mnist") == []


def test_loopback_guard_blocks_other_hosts(tmp_path):
    with pytest.raises(AssertionError, match="only 127.0.0.1 is allowed"):
        data.download("http://192.0.2.1/x.gz", tmp_path / "x.gz", sha256="0" * 64, timeout=1)
    assert list(tmp_path.iterdir()) == []


def test_download_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="http or https, got 'file:///etc/hostname'"):
        data.download("file:///etc/hostname", tmp_path / "x", sha256="0" * 64)
    with pytest.raises(ValueError, match="64 hex digits, got 'abc'"):
        data.download("http://127.0.0.1:9/x", tmp_path / "x", sha256="abc")


def test_published_checksums_cover_the_files():
    assert set(data.FASHION_MNIST_SHA256) == set(FILES.values())
    assert all(len(v) == 64 and int(v, 16) >= 0 for v in data.FASHION_MNIST_SHA256.values())
    assert data.FASHION_MNIST_URL == "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


def test_atomic_write_failure_keeps_old_file(tmp_path):
    target = tmp_path / "f.bin"
    fetch.atomic_write(target, lambda f: f.write(b"old"))

    def failing(f):
        f.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        fetch.atomic_write(target, failing)
    assert target.read_bytes() == b"old" and target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


# --- real Fashion-MNIST -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion():
    directory = data.find_fashion_mnist()
    if directory is None:
        _missing("Fashion-MNIST files not found (apt-get install dataset-fashion-mnist)")
    return data.load_fashion_mnist(download=False)


def test_real_fashion_mnist(fashion):
    assert fashion.name == "fashion-mnist" and fashion.num_classes == 10
    assert fashion.x_train.shape == (60000, 28, 28, 1) and fashion.x_test.shape == (10000, 28, 28, 1)
    assert fashion.x_train.dtype == np.float32 and fashion.y_train.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(fashion.y_train, minlength=10), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(fashion.y_test, minlength=10), np.full(10, 1000))
    for x in (fashion.x_train, fashion.x_test):
        assert x.min() == 0.0 and x.max() == 1.0
        np.testing.assert_array_equal(np.round(x[:500] * 255) / np.float32(255), x[:500])  # values k / 255
    assert 0.2 < fashion.x_train.mean() < 0.4  # mostly background, not all-zero or all-one
    assert fashion.input_shape == (28, 28, 1)
    assert fashion.class_names[0] == "T-shirt/top" and fashion.class_names[9] == "Ankle boot"


# --- MNIST-1D -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist1d(tmp_path_factory):
    """Generated once into a temporary cache; also records the global RNG state around generation."""
    _require_module("mnist1d", "pip install mnist1d")
    directory = tmp_path_factory.mktemp("mnist1d")
    np.random.seed(1234)
    random.seed(1234)
    before = (np.random.get_state()[1].copy(), random.getstate())
    ds = data.load("mnist1d", data_dir=directory)
    after = (np.random.get_state()[1].copy(), random.getstate())
    return ds, directory, before, after


def test_mnist1d_matches_generator(mnist1d):
    ds, directory, _, _ = mnist1d
    from mnist1d.data import get_dataset_args, make_dataset

    ref = make_dataset(get_dataset_args())
    assert ds.x_train.shape == (4000, 40, 1) and ds.x_test.shape == (1000, 40, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32 and ds.num_classes == 10
    np.testing.assert_array_equal(ds.x_train[..., 0], ref["x"].astype(np.float32))
    np.testing.assert_array_equal(ds.y_test, ref["y_test"])
    assert set(np.unique(ds.y_train)) == set(range(10))
    assert abs(float(ds.x_train.mean())) < 0.05 and 0.9 < float(ds.x_train.std()) < 1.1


def test_mnist1d_restores_global_rng(mnist1d):
    _, _, before, after = mnist1d
    np.testing.assert_array_equal(before[0], after[0])
    assert before[1] == after[1]


def test_mnist1d_reads_its_cache(mnist1d, monkeypatch):
    ds, directory, _, _ = mnist1d
    [cached] = list(directory.glob("mnist1d-*.npz"))
    assert _leftovers(directory) == [cached.name]

    def fail():
        raise AssertionError("generated again despite the cache")

    monkeypatch.setattr(ds_module, "_generate_mnist1d", fail)
    again = data.load_mnist1d(data_dir=directory)
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    np.testing.assert_array_equal(again.y_test, ds.y_test)


def test_mnist1d_regenerates_corrupt_cache(mnist1d, tmp_path, monkeypatch):
    ds, directory, _, _ = mnist1d
    [cached] = list(directory.glob("mnist1d-*.npz"))
    (tmp_path / cached.name).write_bytes(b"garbage")
    arrays = {"x": ds.x_train[..., 0], "y": ds.y_train, "x_test": ds.x_test[..., 0], "y_test": ds.y_test}
    monkeypatch.setattr(ds_module, "_generate_mnist1d", lambda: arrays)
    with pytest.warns(UserWarning, match="unreadable MNIST-1D cache"):
        again = data.load_mnist1d(data_dir=tmp_path)
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten cache now reads cleanly
        data.load_mnist1d(data_dir=tmp_path)


# --- digits, synthetic, load() ------------------------------------------------------------------


def test_digits():
    _require_module("sklearn", "pip install scikit-learn")
    from sklearn.datasets import load_digits

    ds = data.load("digits")
    assert ds.x_train.shape == (1438, 8, 8, 1) and ds.x_test.shape == (359, 8, 8, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    full = load_digits()
    both = np.concatenate([ds.y_train, ds.y_test])
    np.testing.assert_array_equal(np.bincount(both), np.bincount(full.target))
    # Every example comes from the original set, with its own label.
    flat = {row.tobytes(): label for row, label in zip((full.images / 16).astype(np.float32), full.target)}
    assert all(flat[x[..., 0].tobytes()] == y for x, y in zip(ds.x_test, ds.y_test))
    same = data.load_digits(seed=0)
    other = data.load_digits(seed=1)
    np.testing.assert_array_equal(same.y_test, ds.y_test)
    assert not np.array_equal(other.y_test, ds.y_test)
    with pytest.raises(ValueError, match="test_fraction must lie in \\(0, 1\\), got 1.5"):
        data.load_digits(test_fraction=1.5)


def test_synthetic_is_deterministic_and_learnable():
    kw = dict(num_train=200, num_test=100, image_shape=(5, 7), channels=3, num_classes=5, seed=3)
    ds = data.make_synthetic(**kw)
    assert ds.x_train.shape == (200, 5, 7, 3) and ds.x_test.shape == (100, 5, 7, 3)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    np.testing.assert_array_equal(np.bincount(ds.y_train), np.full(5, 40))
    again = data.make_synthetic(**kw)
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    np.testing.assert_array_equal(again.y_test, ds.y_test)
    assert not np.array_equal(data.make_synthetic(**{**kw, "seed": 4}).x_train, ds.x_train)
    # Learnable: the nearest class mean of the training set classifies the test set.
    means = np.stack([ds.x_train[ds.y_train == k].mean(0) for k in range(5)])
    dist = ((ds.x_test[:, None] - means[None]) ** 2).sum(axis=(2, 3, 4))
    assert (dist.argmin(1) == ds.y_test).mean() > 0.95


def test_synthetic_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        data.make_synthetic(num_classes=1)
    with pytest.raises(ValueError, match="num_train must be >= 1, got 0"):
        data.make_synthetic(num_train=0)
    with pytest.raises(ValueError, match="image_shape must be non-empty and positive"):
        data.make_synthetic(image_shape=(0, 3))


def test_load_names():
    ds = data.load("Synthetic", num_train=8, num_test=4)
    assert isinstance(ds, data.Dataset) and ds.name == "synthetic" and ds.input_shape == (8, 8, 1)
    assert "train=(8, 8, 8, 1)" in repr(ds)
    assert ds.class_names == ("0", "1", "2", "3")
    with pytest.raises(
        ValueError,
        match=r"Unknown dataset: 'imagenet'. It needs to be one of \['fashion-mnist', 'mnist1d', 'digits', "
        r"'synthetic', 'cifar10', 'folder', 'npz'\]",
    ):
        data.load("imagenet")


def test_load_fashion_alias_uses_data_dir(tmp_path, no_system_dirs):
    directory = _write_files(tmp_path / "fm", _fake_files())
    ds = data.load("Fashion_MNIST", data_dir=directory, download=False, expected_counts=(20, 8))
    assert ds.x_train.shape == (20, 28, 28, 1)


# --- batching -----------------------------------------------------------------------------------


def test_epoch_permutation_is_pure():
    a = data.epoch_permutation(100, seed=7, epoch=3)
    np.testing.assert_array_equal(a, data.epoch_permutation(100, seed=7, epoch=3))
    np.testing.assert_array_equal(np.sort(a), np.arange(100))
    assert not np.array_equal(a, data.epoch_permutation(100, seed=7, epoch=4))
    assert not np.array_equal(a, data.epoch_permutation(100, seed=8, epoch=3))


@given(
    n=st.integers(0, 40),
    batch_size=st.integers(1, 12),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**32),
    epoch=st.integers(0, 50),
    data_=st.data(),
)
def test_batches_cover_epoch_and_resume(n, batch_size, drop_last, shuffle, seed, epoch, data_):
    x = np.arange(n) * 10
    y = np.arange(n)
    kw = dict(seed=seed, epoch=epoch, drop_last=drop_last, shuffle=shuffle)
    total = data.num_batches(n, batch_size, drop_last=drop_last)
    full = list(data.batches(x, y, batch_size, **kw))
    assert len(full) == total
    for step, (xb, yb) in enumerate(full):
        np.testing.assert_array_equal(xb, yb * 10)  # x and y stay paired
        np.testing.assert_array_equal(yb, data.batch_indices(n, batch_size, step=step, **kw))
        assert len(yb) == batch_size or (not drop_last and step == total - 1)
    seen = np.concatenate([yb for _, yb in full]) if full else np.zeros(0, int)
    assert len(seen) == (n // batch_size * batch_size if drop_last else n)
    assert len(np.unique(seen)) == len(seen)
    if not shuffle:
        np.testing.assert_array_equal(seen, np.arange(len(seen)))
    start = data_.draw(st.integers(0, total))
    resumed = list(data.batches(x, y, batch_size, start_step=start, **kw))
    assert len(resumed) == total - start
    for (xa, ya), (xb, yb) in zip(resumed, full[start:]):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_batches_differ_between_epochs_and_work_on_jax_arrays():
    x = jnp.arange(64, dtype=jnp.float32)
    y = jnp.arange(64, dtype=jnp.int32)
    e0 = [np.asarray(b) for _, b in data.batches(x, y, 16, seed=0, epoch=0)]
    e1 = [np.asarray(b) for _, b in data.batches(x, y, 16, seed=0, epoch=1)]
    assert not all(np.array_equal(a, b) for a, b in zip(e0, e1))
    np.testing.assert_array_equal(np.sort(np.concatenate(e0)), np.arange(64))


def test_batching_rejects_bad_arguments():
    x = np.zeros(10)
    with pytest.raises(ValueError, match="same length, got 10 and 9"):
        next(data.batches(x, np.zeros(9), 2, seed=0, epoch=0))
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        next(data.batches(x, x, 0, seed=0, epoch=0))
    with pytest.raises(ValueError, match="start_step must be <= 5 \\(batches per epoch\\), got 6"):
        next(data.batches(x, x, 2, seed=0, epoch=0, start_step=6))
    with pytest.raises(ValueError, match="epoch must be >= 0, got -1"):
        data.epoch_permutation(10, seed=0, epoch=-1)
    with pytest.raises(TypeError, match="seed must be an integer, got 1.5"):
        data.epoch_permutation(10, seed=1.5, epoch=0)
    with pytest.raises(ValueError, match="step must be < 3"):
        data.batch_indices(10, 3, seed=0, epoch=0, step=3)
    assert data.num_batches(10, 3) == 3 and data.num_batches(10, 3, drop_last=False) == 4


# --- augmentation -------------------------------------------------------------------------------


@pytest.fixture
def images():
    """A float32 batch with H != W and 2 channels, so swapped axes show."""
    return jnp.asarray(np.random.default_rng(0).uniform(size=(6, 12, 10, 2)), jnp.float32)


def _shift_np(x, dy, dx):
    """x (H, W, C) moved down by dy and right by dx, zero-filled."""
    out = np.zeros_like(x)
    h, w = x.shape[:2]
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_pad_and_crop_translates(images):
    pad = 3
    offsets = jnp.asarray([[3, 3], [0, 0], [6, 6], [1, 5], [3, 0], [6, 2]], jnp.int32)
    out = np.asarray(data.pad_and_crop(images, offsets, pad))
    assert out.shape == images.shape and out.dtype == np.float32
    for i, (oy, ox) in enumerate(np.asarray(offsets)):
        np.testing.assert_array_equal(out[i], _shift_np(np.asarray(images[i]), pad - oy, pad - ox))
    np.testing.assert_array_equal(out[0], images[0])  # offset == pad: the identity


def test_random_crop(images):
    key = jax.random.key(1)
    out = np.asarray(data.random_crop(key, images, 2))
    np.testing.assert_array_equal(out, data.random_crop(key, images, 2))
    shifts = set()
    for i in range(len(out)):
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if np.array_equal(out[i], _shift_np(np.asarray(images[i]), dy, dx))
        ]
        assert len(matches) == 1
        shifts.add(matches[0])
    assert len(shifts) > 1  # per-example offsets
    np.testing.assert_array_equal(data.random_crop(key, images, 0), images)  # translation by 0


def test_flip(images):
    key = jax.random.key(2)
    once = data.random_flip(key, images)
    np.testing.assert_array_equal(data.random_flip(key, once), images)  # same key: flip twice = identity
    np.testing.assert_array_equal(data.flip_horizontal(data.flip_horizontal(images)), images)
    np.testing.assert_array_equal(data.flip_horizontal(images), np.asarray(images)[:, :, ::-1])
    np.testing.assert_array_equal(data.random_flip(key, images, p=1.0), data.flip_horizontal(images))
    np.testing.assert_array_equal(data.random_flip(key, images, p=0.0), images)
    big = jnp.tile(images, (8, 1, 1, 1))  # 48 examples: some flipped, some not
    flipped = np.all(np.asarray(data.random_flip(key, big)) != np.asarray(big), axis=(1, 2, 3))
    assert 0 < flipped.sum() < len(big)


def test_rotate(images):
    np.testing.assert_allclose(data.rotate(images, 0.0), images, rtol=0, atol=1e-7)
    np.testing.assert_allclose(data.random_rotate(jax.random.key(0), images, 0.0), images, rtol=0, atol=1e-7)
    square = images[:, :10]
    np.testing.assert_allclose(data.rotate(square, 90.0), np.rot90(np.asarray(square), 1, axes=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(data.rotate(images, 180.0), np.asarray(images)[:, ::-1, ::-1], atol=1e-5)
    per_example = data.rotate(square, jnp.asarray([0.0, 90, 180, 270, -90, 360], jnp.float32))
    expected = [np.rot90(np.asarray(square[i]), k, axes=(0, 1)) for i, k in enumerate([0, 1, 2, 3, 3, 0])]
    np.testing.assert_allclose(per_example, np.stack(expected), atol=1e-5)
    # Half-way between grid points, bilinear interpolation averages the four neighbours.
    ones = jnp.ones((1, 9, 9, 1), jnp.float32)
    small = data.rotate(ones, 10.0)
    assert small.dtype == jnp.float32 and float(small[0, 4, 4, 0]) == pytest.approx(1.0)
    assert float(small[0, 0, 0, 0]) < 1.0  # corners rotate out of the image and fill with zeros


def test_random_rotate_angles_per_example(images):
    key = jax.random.key(3)
    out = data.random_rotate(key, images, 15.0)
    np.testing.assert_array_equal(out, data.random_rotate(key, images, 15.0))
    angles = jax.random.uniform(key, (6,), jnp.float32, -15.0, 15.0)
    np.testing.assert_allclose(out, data.rotate(images, angles), atol=1e-6)
    assert float(jnp.max(jnp.abs(angles))) <= 15.0 and len(np.unique(np.asarray(angles))) == 6


def test_augment_reproducible_jittable_and_key_dependent(images):
    opts = dict(crop_pad=2, flip=True, rotate_deg=10.0)
    key = jax.random.key(4)
    eager = data.augment(key, images, **opts)
    assert eager.shape == images.shape and eager.dtype == jnp.float32
    np.testing.assert_array_equal(eager, data.augment(key, images, **opts))
    jitted = jax.jit(data.augment, static_argnames=("crop_pad", "flip", "rotate_deg"))(key, images, **opts)
    np.testing.assert_allclose(jitted, eager, rtol=0, atol=1e-6)
    other = data.augment(jax.random.key(5), images, **opts)
    assert not np.allclose(other, eager)
    np.testing.assert_array_equal(data.augment(key, images), images)  # nothing enabled: unchanged
    # Each op uses its own subkey: enabling flip does not change the crop.
    k_rotate, k_crop, k_flip = jax.random.split(key, 3)
    np.testing.assert_array_equal(data.augment(key, images, crop_pad=2), data.random_crop(k_crop, images, 2))
    np.testing.assert_array_equal(
        data.augment(key, images, crop_pad=2, flip=True),
        data.random_flip(k_flip, data.random_crop(k_crop, images, 2)),
    )


def test_augment_dtypes_and_errors(images):
    key = jax.random.PRNGKey(0)  # raw uint32 keys work too
    as_uint8 = (images * 255).astype(jnp.uint8)
    out = data.augment(key, as_uint8, crop_pad=1, flip=True)
    assert out.dtype == jnp.uint8 and out.shape == images.shape
    with pytest.raises(TypeError, match="rotate: x must be floating.*uint8"):
        data.augment(key, as_uint8, rotate_deg=5.0)
    with pytest.raises(
        ValueError, match=r"augment: x must be a batch of images \(N, H, W, C\), got shape \(12, 10, 2\)"
    ):
        data.augment(key, images[0], flip=True)
    with pytest.raises(ValueError, match="pad must be a non-negative Python int, got -1"):
        data.random_crop(key, images, -1)
    with pytest.raises(ValueError, match=r"offsets must be integer with shape \(6, 2\)"):
        data.pad_and_crop(images, jnp.zeros((6, 3), jnp.int32), 1)
    with pytest.raises(ValueError, match="rotate_deg must be >= 0, got -3"):
        data.augment(key, images, rotate_deg=-3)


def test_roll_signal_shifts_each_signal_circularly():
    x = jnp.asarray(np.arange(2 * 10 * 3, dtype=np.float32).reshape(2, 10, 3))
    key = jax.random.key(7)
    rolled = data.roll_signal(key, x, 4)
    np.testing.assert_array_equal(rolled, jax.jit(data.roll_signal, static_argnums=2)(key, x, 4))
    for i in range(2):  # each example is its own circular shift, channels together, within +-4
        shifts = [s for s in range(-4, 5) if np.array_equal(np.roll(np.asarray(x[i]), s, axis=0), rolled[i])]
        assert len(shifts) == 1
    assert not np.array_equal(data.roll_signal(jax.random.key(8), x, 4), rolled)
    np.testing.assert_array_equal(data.roll_signal(key, x, 0), x)
    with pytest.raises(ValueError, match=r"roll_signal: x must be a batch of signals \(N, L, C\)"):
        data.roll_signal(key, x[0], 2)
