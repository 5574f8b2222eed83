"""Your own data: image folders (decoded once into a memory-mapped cache), arrays in an .npz, CIFAR-10's
binary distribution, bad input refused in one line with nothing half-written left, and the validation
split that chooses the best epoch without ever looking at the test set."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import sigkill_after_checkpoint
from PIL import Image

from jaxcnn import checkpoint, data, errors
from jaxcnn.cli import main
from jaxcnn.data import cifar
from jaxcnn.data.arrays import ScaledImages
from jaxcnn.train import run

CLASSES = ["bird", "cat", "dog"]


def _write_folder(root: Path, counts=None, size=(8, 6), seed=0, mode="L") -> dict:
    """PNG images under root/<split>/<class>/, named so that file order differs from creation order;
    returns the arrays written, per split, in the loader's order (classes sorted, files sorted)."""
    rng = np.random.default_rng(seed)
    counts = counts or {"train": 5, "test": 2}
    written = {}
    for split, n in counts.items():
        xs, ys = [], []
        for name in CLASSES:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in reversed(range(n)):
                shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
                pixels = rng.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(pixels, mode).save(root / split / name / f"img{i:02d}.png")
        for label, name in enumerate(CLASSES):
            for i in range(n):
                pixels = np.asarray(Image.open(root / split / name / f"img{i:02d}.png"))
                xs.append(pixels.reshape(size[1], size[0], -1))
                ys.append(label)
        written[split] = (np.stack(xs), np.asarray(ys))
    return written


def _no_partial_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(".part")]


# ---------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------


def test_a_folder_loads_in_torchvision_order_as_uint8_over_255(tmp_path, capsys):
    written = _write_folder(tmp_path / "images", {"train": 4, "val": 2, "test": 3})
    ds = data.load("folder", data_dir=tmp_path / "images")
    assert ds.classes == tuple(CLASSES) and ds.num_classes == 3 and ds.input_shape == (6, 8, 1)
    for split in ("train", "val", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        pixels, labels = written[split]
        assert isinstance(x, ScaledImages) and isinstance(x.pixels, np.memmap)  # read through a memory map
        np.testing.assert_array_equal(y, labels)
        np.testing.assert_array_equal(x[np.arange(len(y))], pixels.astype(np.float32) / np.float32(255))
    assert "decoding 27 images" in capsys.readouterr().err


def test_save_folder_writes_what_load_folder_reads_back(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (12, 5, 4, 3), dtype=np.uint8)
    y = np.array([2, 0, 1, 2, 2, 0, 1, 1, 0, 2, 0, 1])
    data.save_folder(tmp_path, x[:9], y[:9], split="train", classes=["ant", "bee", "cow"])
    near = np.clip(x[9:] - 0.4, 0, None) / 255  # floats round to the nearest k / 255
    data.save_folder(tmp_path, near, y[9:], split="test", classes=["ant", "bee", "cow"])
    assert sorted(p.name for p in (tmp_path / "train" / "cow").iterdir()) == ["0.png", "3.png", "4.png"]
    ds = data.load_folder(tmp_path, quiet=True)
    order = np.argsort(y[:9], kind="stable")  # classes in order, rows in order within each
    np.testing.assert_array_equal(np.asarray(ds.x_train[:]), x[:9][order] / np.float32(255))
    np.testing.assert_array_equal(ds.y_train, y[:9][order])
    np.testing.assert_array_equal(np.asarray(ds.x_test[:]), x[9:][np.argsort(y[9:], kind="stable")] / np.float32(255))
    with pytest.raises(errors.ConfigError, match="split must be one of train, val, test, got 'dev'"):
        data.save_folder(tmp_path, x, y, split="dev")
    with pytest.raises(errors.ConfigError, match="classes must name every label .* got \\('T-shirt/top', 'b', 'c'\\)"):
        data.save_folder(tmp_path, x, y, split="val", classes=("T-shirt/top", "b", "c"))


def test_the_second_load_reads_the_cache_and_says_so(tmp_path, capsys):
    _write_folder(tmp_path / "images")
    first = data.load("folder", data_dir=tmp_path / "images")
    assert "decoding 21 images" in capsys.readouterr().err
    again = data.load("folder", data_dir=tmp_path / "images")
    err = capsys.readouterr().err
    assert "reading 21 cached images from" in err and "decoding" not in err
    assert again.x_train.pixels.filename == first.x_train.pixels.filename
    # a changed image is another cache
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "images" / "train" / "cat" / "img00.png")
    changed = data.load("folder", data_dir=tmp_path / "images")
    assert "decoding 21 images" in capsys.readouterr().err
    assert changed.x_train.pixels.filename != first.x_train.pixels.filename


def test_images_are_resized_to_the_input_shape_and_colour_is_kept(tmp_path):
    _write_folder(tmp_path / "images", mode="RGB")
    ds = data.load("folder", data_dir=tmp_path / "images")
    assert ds.input_shape == (6, 8, 3)  # RGB images stay RGB
    small = data.load("folder", data_dir=tmp_path / "images", input_shape=(3, 4, 1))
    path = tmp_path / "images" / "train" / "bird" / "img00.png"
    expected = np.asarray(Image.open(path).convert("L").resize((4, 3), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(small.x_train.pixels[0, :, :, 0], expected)


def test_a_read_only_folder_caches_in_the_user_cache(tmp_path, monkeypatch):
    _write_folder(tmp_path / "images")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as if the data were read-only
    ds = data.load("folder", data_dir=tmp_path / "images")
    assert Path(ds.x_train.pixels.filename).is_relative_to(tmp_path / "cache" / "jaxcnn" / "folders")
    assert not (tmp_path / "images" / ".jaxcnn-cache").exists()


def _bad_folder(tmp_path, problem):
    root = tmp_path / "images"
    _write_folder(root, size=(8, 6))
    if problem == "corrupt":
        (root / "train" / "cat" / "img01.png").write_bytes(b"\x89PNG not really")
        return root, root / "train" / "cat" / "img01.png", "not a readable image"
    if problem == "truncated":  # a valid header, the pixels cut off: found while decoding into the cache
        path = root / "test" / "dog" / "img00.png"
        path.write_bytes(path.read_bytes()[:60])
        return root, path, "not a readable image"
    if problem == "empty":
        for p in (root / "train" / "dog").iterdir():
            p.unlink()
        (root / "train" / "dog" / "notes.txt").write_text("not an image")
        return root, root / "train" / "dog", "is empty: no image files"
    if problem == "missing class":
        for p in (root / "test" / "bird").iterdir():
            p.unlink()
        (root / "test" / "bird").rmdir()
        return root, root / "test" / "bird", "class 'bird' of train/ is missing from test/"
    if problem == "mixed sizes":
        Image.fromarray(np.zeros((7, 8), np.uint8)).save(root / "test" / "cat" / "img01.png")
        return root, root / "test" / "cat" / "img01.png", "8x7 pixels, but"
    raise AssertionError(problem)


@pytest.mark.parametrize("problem", ["corrupt", "truncated", "empty", "missing class", "mixed sizes"])
def test_bad_folders_are_refused_in_one_line_naming_the_file_and_leave_no_partial_cache(tmp_path, capsys, problem):
    root, culprit, message = _bad_folder(tmp_path, problem)
    with pytest.raises(errors.FileFormatError, match=message) as info:
        data.load("folder", data_dir=root)
    assert str(culprit) in str(info.value) and "\n" not in str(info.value)
    assert _no_partial_files(root) and not list((root / ".jaxcnn-cache").glob("*/meta.json"))
    capsys.readouterr()
    code = main(["train", "--dataset", "folder", "--data-dir", str(root), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("jaxcnn train: error: ") and str(culprit) in err[-1]


def test_a_cache_writer_killed_midway_leaves_no_cache(tmp_path, monkeypatch):
    from jaxcnn.data import folder

    _write_folder(tmp_path / "images")
    calls = {"n": 0}
    real = folder._decode

    def dies(path, geometry):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt  # as if the process were interrupted while filling the cache
        return real(path, geometry)

    monkeypatch.setattr(folder, "_decode", dies)
    with pytest.raises(KeyboardInterrupt):
        data.load("folder", data_dir=tmp_path / "images")
    cache = tmp_path / "images" / ".jaxcnn-cache"
    assert _no_partial_files(tmp_path) and not list(cache.glob("*/meta.json"))
    monkeypatch.setattr(folder, "_decode", real)
    assert len(data.load("folder", data_dir=tmp_path / "images").x_train) == 15


# ---------------------------------------------------------------------------------------------
# Arrays in an .npz
# ---------------------------------------------------------------------------------------------


def _npz(path, **arrays):
    rng = np.random.default_rng(1)
    base = dict(
        x_train=rng.integers(0, 256, (12, 5, 4, 2), dtype=np.uint8),
        y_train=np.arange(12) % 4,
        x_test=rng.integers(0, 256, (6, 5, 4, 2), dtype=np.uint8),
        y_test=np.arange(6) % 4,
    )
    np.savez(path, **{**base, **arrays})
    return {**base, **arrays}


def test_an_npz_loads_with_its_shapes_labels_and_validation_split(tmp_path):
    arrays = _npz(tmp_path / "a.npz", x_val=np.ones((3, 5, 4, 2), np.float32), y_val=np.array([0, 3, 1]))
    ds = data.load("npz", data_dir=tmp_path / "a.npz")
    assert ds.num_classes == 4 and ds.input_shape == (5, 4, 2) and ds.has_validation
    np.testing.assert_array_equal(ds.x_train[:], arrays["x_train"] / np.float32(255))  # uint8 read as k / 255
    assert ds.x_val.dtype == np.float32 and ds.y_val.tolist() == [0, 3, 1]
    signals = _npz(tmp_path / "s.npz", x_train=np.zeros((12, 40, 1), np.float32), x_test=np.zeros((6, 40, 1)))
    assert data.load("npz", data_dir=tmp_path / "s.npz").input_shape == (40, 1) and signals


@pytest.mark.parametrize(
    "arrays, message",
    [
        (dict(y_test=np.array([0, 1, 2, 3, 4, 1])), "y_test has label 4, out of range for the 4 classes"),
        (dict(y_train=np.arange(12) % 4 - 1), "y_train has a negative label"),
        (dict(x_test=np.zeros((6, 5, 5, 2), np.uint8)), r"x_test examples are \(5, 5, 2\), x_train's are \(5, 4, 2\)"),
        (dict(y_train=np.arange(11) % 4), r"y_train must be \(N,\) with N = 12"),
        (dict(y_train=(np.arange(12) % 4).astype(np.float32)), "y_train must hold integer labels"),
        (dict(x_val=np.zeros((2, 5, 4, 2), np.uint8)), "needs x_val and y_val together"),
    ],
)
def test_bad_npz_files_are_refused_in_one_line(tmp_path, arrays, message):
    _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(errors.FileFormatError, match=message) as info:
        data.load("npz", data_dir=tmp_path / "bad.npz")
    assert str(tmp_path / "bad.npz") in str(info.value)
    (tmp_path / "missing.npz").write_bytes(b"PK not a zip")
    with pytest.raises(errors.FileFormatError, match="not a readable .npz"):
        data.load("npz", data_dir=tmp_path / "missing.npz")


# ---------------------------------------------------------------------------------------------
# CIFAR-10
# ---------------------------------------------------------------------------------------------


def _cifar_arrays():
    """60,000 images in CIFAR-10's shapes that gzip compresses to almost nothing: each carries its label
    and its index in two pixels."""
    index = np.arange(60_000)
    y = (index * 7) % 10
    x = np.zeros((60_000, 32, 32, 3), np.uint8)
    x[:, 0, 0, 0], x[:, 31, 31, 2], x[:, 5, :, 1] = y, index % 256, (index // 256)[:, None]
    return {"x_train": x[:50_000], "y_train": y[:50_000], "x_test": x[50_000:], "y_test": y[50_000:]}


@pytest.fixture(scope="module")
def cifar_archive(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cifar")
    arrays = _cifar_arrays()
    path = cifar.write_archive(directory / cifar.CIFAR10_ARCHIVE, arrays)
    return path, hashlib.sha256(path.read_bytes()).hexdigest(), arrays


def test_the_cifar_binary_layout_is_parsed_channel_planes_to_channels_last():
    record = bytes([7]) + bytes(range(256)) * 12  # label 7, then 3 planes of 1,024 bytes each
    images, labels = cifar.parse_batch(record * 10_000, "batch")
    assert labels[0] == 7 and images.shape == (10_000, 32, 32, 3)
    flat = np.frombuffer(record[1:], np.uint8)
    assert images[0, 0, 1, 0] == flat[1] and images[0, 0, 1, 2] == flat[2048 + 1]  # red, blue at row 0, col 1
    assert images[0, 1, 0, 1] == flat[1024 + 32]  # green at row 1, col 0


@pytest.mark.slow
def test_cifar10_loads_from_its_archive_checked_against_the_checksum(cifar_archive, tmp_path):
    path, sha, arrays = cifar_archive
    ds = data.load("cifar10", data_dir=path.parent, checksums={cifar.CIFAR10_ARCHIVE: sha})
    assert ds.classes == cifar.CIFAR10_CLASSES and ds.input_shape == (32, 32, 3)
    assert len(ds.x_train) == 50_000 and len(ds.x_test) == 10_000
    for split in ("train", "test"):
        np.testing.assert_array_equal(getattr(ds, f"x_{split}").pixels, arrays[f"x_{split}"])
        np.testing.assert_array_equal(getattr(ds, f"y_{split}"), arrays[f"y_{split}"])
    assert (path.parent / "cifar10.npz").is_file() and _no_partial_files(path.parent)  # parsed once, cached
    copy = _copy_archive(path, tmp_path)
    with pytest.raises(errors.FileFormatError, match=f"{copy / cifar.CIFAR10_ARCHIVE}: SHA-256 {sha}, expected "):
        data.load("cifar10", data_dir=copy)  # the published checksum refuses it


def _copy_archive(path, directory):
    (directory / cifar.CIFAR10_ARCHIVE).write_bytes(path.read_bytes())
    return directory


def test_a_truncated_cifar_batch_is_refused_naming_the_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    record = bytes(3073)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (folder / name).write_bytes(record * 10_000)
    (folder / "data_batch_3.bin").write_bytes(record * 9_999 + bytes(100))
    with pytest.raises(errors.FileFormatError, match=r"data_batch_3.bin: 30727027 bytes, expected 30730000"):
        data.load("cifar10", data_dir=tmp_path)
    assert not (tmp_path / "cifar10.npz").exists()


def test_cifar10_is_downloaded_and_verified_when_nowhere_else(cifar_archive, tmp_path, monkeypatch):
    from data_server import serve

    path, sha, arrays = cifar_archive
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("JAXCNN_DATA", raising=False)
    with serve({f"/{cifar.CIFAR10_ARCHIVE}": (path.read_bytes(), "ok")}) as (base, log):
        url = base + cifar.CIFAR10_ARCHIVE
        ds = data.load("cifar10", data_dir=tmp_path / "empty", url=url, checksums={cifar.CIFAR10_ARCHIVE: sha})
        assert len(ds.x_test) == 10_000 and log == [f"/{cifar.CIFAR10_ARCHIVE}"]
        assert (tmp_path / "cache" / "jaxcnn" / "cifar10" / cifar.CIFAR10_ARCHIVE).is_file()
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other-cache"))
        with pytest.raises(errors.DownloadError, match="checksum mismatch"):  # the published SHA-256 refuses it
            data.load("cifar10", data_dir=tmp_path / "empty", url=url)
        assert not list((tmp_path / "other-cache").rglob("*.gz")) and _no_partial_files(tmp_path)
    with pytest.raises(errors.DataNotFoundError, match="not found in any of"):
        data.load("cifar10", data_dir=tmp_path / "nowhere", download_missing=False)


# ---------------------------------------------------------------------------------------------
# The validation split
# ---------------------------------------------------------------------------------------------


def test_the_validation_split_is_stratified_seeded_and_pure():
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    train, val = data.validation_split(labels, 0.1, seed=3)
    assert np.bincount(labels[val]).tolist() == [1, 2, 3, 4]  # a tenth of every class
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))
    again, other = data.validation_split(labels, 0.1, seed=3), data.validation_split(labels, 0.1, seed=4)
    assert np.array_equal(again[1], val) and not np.array_equal(other[1], val)
    assert len(data.validation_split(np.array([0, 0, 1]), 0.9, seed=0)[0]) == 2  # each class keeps one
    with pytest.raises(errors.ConfigError, match=r"val_fraction must be in \[0, 1\), got 1.0"):
        data.validation_split(labels, 1.0, seed=0)


def test_scaled_images_index_like_the_float_array_they_stand_for():
    pixels = np.random.default_rng(0).integers(0, 256, (20, 3, 2, 1), dtype=np.uint8)
    full = pixels.astype(np.float32) / np.float32(255)
    x = ScaledImages(pixels)
    rows = np.array([7, 2, 2, 19, 0])  # unsorted, repeated
    for index in (3, slice(4, 9), rows):
        np.testing.assert_array_equal(x[index], full[index])
    view = x.subset(np.array([5, 1, 9])).subset(np.array([2, 0]))  # a view of a view
    np.testing.assert_array_equal(view[:], full[[9, 5]])
    assert view.shape == (2, 3, 2, 1) and len(view) == 2 and np.asarray(view).dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Training on your own data, choosing on validation
# ---------------------------------------------------------------------------------------------


def _tiny_model():
    from jaxcnn import layers, serial

    return serial(layers.Conv(4, 3), layers.Relu, layers.Flatten, layers.Dense(4))


def _fit_with_validation(ds, out, **settings):
    import optax

    from jaxcnn import train

    config = train.FitConfig(epochs=5, batch_size=16, optimizer=optax.adam(3e-2), progress=False, log_every=4)
    return train.fit(_tiny_model(), ds, config._replace(out_dir=out, **settings))


def test_no_choice_reads_the_test_set(tmp_path):
    """The best epoch, its state and every row that chooses are the same when the test labels are
    shuffled; only the reported test numbers change."""
    ds = data.make_synthetic(num_train=96, num_test=64, image_shape=(8, 8), noise=0.6, seed=5)
    train_rows, val_rows = data.validation_split(ds.y_train, 0.25, seed=0)
    ds = ds._replace(x_train=ds.x_train[train_rows], y_train=ds.y_train[train_rows],
                     x_val=ds.x_train[val_rows], y_val=ds.y_train[val_rows])  # fmt: skip
    shuffled = ds._replace(y_test=np.random.default_rng(1).permutation(ds.y_test))
    runs = []
    for name, dataset in (("a", ds), ("b", shuffled)):
        result = _fit_with_validation(dataset, tmp_path / name, eval_test_every_epoch=True)
        runs.append(result)
    a, b = runs
    assert a.best is not None and {k: v for k, v in a.best.items() if k != "test"} == {
        k: v for k, v in b.best.items() if k != "test"
    }
    strip = lambda history: [
        {k: v for k, v in r.items() if not k.startswith(("test", "examples", "time"))} for r in history
    ]
    assert strip(a.history) == strip(b.history)  # every training and validation row
    assert (tmp_path / "a" / "best.msgpack").read_bytes() == (tmp_path / "b" / "best.msgpack").read_bytes()
    assert (tmp_path / "a" / "checkpoint.msgpack").read_bytes() == (tmp_path / "b" / "checkpoint.msgpack").read_bytes()
    assert a.best["test"]["accuracy"] != b.best["test"]["accuracy"]  # the shuffle did change the test set
    # the best epoch is the first of the highest validation accuracies, and best.msgpack holds its state
    val = [r for r in a.history if "val_accuracy" in r]
    assert a.best["step"] == max(val, key=lambda r: r["val_accuracy"])["step"]
    assert checkpoint.read_meta(tmp_path / "a", name="best.msgpack")["step"] == a.best["step"]
    assert all("test_accuracy" in r for r in val)  # asked for: reported every epoch


def test_without_the_flag_the_test_set_is_read_once_at_the_end(tmp_path, monkeypatch):
    from jaxcnn.train import loop

    ds = data.make_synthetic(num_train=64, num_test=32, image_shape=(8, 8), seed=2)
    ds = ds._replace(x_val=ds.x_test[:16], y_val=ds.y_test[:16])
    reads = []
    real = loop.evaluate

    def counted(model, params, state, x, y, **kwargs):
        reads.append("test" if x is ds.x_test else "val")
        return real(model, params, state, x, y, **kwargs)

    monkeypatch.setattr(loop, "evaluate", counted)
    result = _fit_with_validation(ds, None)
    assert reads.count("val") == 5 and reads.count("test") == (1 if result.best["step"] == 20 else 2)
    assert not any("test_accuracy" in r for r in result.history)


@pytest.fixture(scope="module")
def fashion_subset(tmp_path_factory):
    """30 training and 10 test images of every Fashion-MNIST class (the IDX files' first ones), written as
    PNG class folders and, in the folder's order (class, then file name), as IDX files."""
    directory = data.find_fashion_mnist()
    if directory is None:
        from helpers import require

        require("JAXCNN_REQUIRE_DATA", "Fashion-MNIST files not found (apt-get install dataset-fashion-mnist)")
    full = data.load_fashion_mnist(download=False)
    root = tmp_path_factory.mktemp("fashion")
    idx_dir = root / "idx"
    idx_dir.mkdir()
    for split, per_class in (("train", 30), ("test", 10)):
        x, y = getattr(full, f"x_{split}"), getattr(full, f"y_{split}")
        rows = np.concatenate([np.flatnonzero(y == label)[:per_class] for label in range(10)])  # folder order
        pixels = np.rint(x[rows, :, :, 0] * 255).astype(np.uint8)
        for row, image, label in zip(rows, pixels, y[rows]):
            folder = root / "png" / split / f"{label}-{data.FASHION_MNIST_CLASSES[label].replace('/', '-')}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{row:05d}.png")
        prefix = "train" if split == "train" else "t10k"
        import gzip

        (idx_dir / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(data.encode_idx(pixels)))
        labels = y[rows].astype(np.uint8)
        (idx_dir / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(data.encode_idx(labels)))
    return root


FOLDER_RUN = "--model lenet5 --epochs 3 --batch-size 30 --optimizer adam --lr 0.003 --log-every 3 --no-plots".split()


@pytest.mark.slow
def test_a_png_folder_trains_to_exactly_the_accuracy_of_the_idx_files(fashion_subset, tmp_path, capsys):
    import dataclasses

    folder_out = tmp_path / "folder"
    args = ["train", "--dataset", "folder", "--data-dir", str(fashion_subset / "png"), *FOLDER_RUN]
    assert main([*args, "--out", str(folder_out)]) == 0
    summary = json.loads((folder_out / "summary.json").read_text())
    config = run.RunConfig(**{**summary["config"], "input_shape": None})
    # the same examples, the same order and seed, from the IDX files through the in-memory float32 path
    idx = data.load_fashion_mnist(fashion_subset / "idx", download=False, expected_counts=None)
    idx = run.with_validation(
        idx, dataclasses.replace(config, dataset="fashion-mnist"), tmp_path / "idx", recorded=False
    )
    setup = run.set_up(config, idx)
    result = run.train(config, setup, idx, tmp_path / "idx", progress=False)
    assert summary["test_accuracy"] == result.test["accuracy"]
    assert summary["best_test_accuracy"] == result.best["test"]["accuracy"]
    assert summary["best_epoch"] == result.best["epoch"] and summary["validation"] == len(idx.x_val) == 30
    for name in ("checkpoint.msgpack", "best.msgpack"):  # bit-identical parameters and optimizer state
        header = lambda d: json.loads((d / name).read_bytes().split(b"\n")[1])
        assert header(folder_out)["sha256"] == header(tmp_path / "idx")["sha256"], name
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(folder_out), "--which", "best"]) == 0  # reproduces the best's number
    assert f"accuracy {summary['best_test_accuracy']:.4f}" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "again")]) == 0  # the second run reads the cache
    assert "reading 400 cached images" in capsys.readouterr().err


def _header(directory, name="checkpoint.msgpack"):
    return json.loads((directory / name).read_bytes().split(b"\n")[1])


@pytest.mark.slow
def test_a_folder_run_killed_mid_epoch_resumes_bit_identically(tmp_path):
    import subprocess
    import sys

    _write_folder(tmp_path / "images", {"train": 60, "test": 10}, size=(28, 28))
    args = ["train", "--dataset", "folder", "--data-dir", str(tmp_path / "images"), "--model", "lenet5",
            "--epochs", "12", "--batch-size", "16", "--checkpoint-every", "7", "--no-plots"]  # fmt: skip
    killed, full = tmp_path / "killed", tmp_path / "full"
    cli = lambda *more: subprocess.run([sys.executable, "-m", "jaxcnn", *args, *more], capture_output=True, text=True)
    assert cli("--out", str(tmp_path / "warm")).returncode == 0  # builds the cache: the timed runs only read it
    stopped = sigkill_after_checkpoint([sys.executable, "-m", "jaxcnn", *args, "--out", str(killed)], killed, 28)
    assert 28 <= stopped < 120 and stopped % 10 != 0  # 10 steps an epoch (162 examples): killed mid-epoch
    resumed, uninterrupted = cli("--out", str(killed), "--resume"), cli("--out", str(full))
    assert resumed.returncode == 0 and uninterrupted.returncode == 0, resumed.stderr + uninterrupted.stderr
    for name in ("checkpoint.msgpack", "best.msgpack"):
        assert _header(killed, name)["sha256"] == _header(full, name)["sha256"], name
    assert (killed / "split.npz").read_bytes() == (full / "split.npz").read_bytes()
    rows = lambda d: [
        {k: v for k, v in r.items() if k != "time_s"}  # the wall clock differs
        for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
        if "val_loss" in r
    ]
    assert rows(killed) == rows(full)
