"""CIFAR-10 from its binary distribution (``cifar-10-binary.tar.gz``, Krizhevsky 2009).

The archive holds ``cifar-10-batches-bin/data_batch_{1..5}.bin`` (50,000 training images) and
``test_batch.bin`` (10,000 test images). Each is a sequence of 3,073-byte records: one label byte (0-9),
then the 32x32 image as three 1,024-byte planes (red, green, blue), each row-major. They are parsed
strictly (the record length, 10,000 records a file, labels below 10; a truncated file is refused naming
it) into uint8 ``(N, 32, 32, 3)`` arrays, cached once as ``cifar10.npz`` next to the archive (atomically),
and read as float32 ``k / 255`` (:class:`~jaxcnn.data.arrays.ScaledImages`).

It is looked for, in order, in: ``data_dir``, ``$JAXCNN_DATA`` (each also with a ``cifar10``
subdirectory), and the user cache ``<cache>/cifar10`` -- as the extracted ``cifar-10-batches-bin``
directory or as the archive, whose SHA-256 must equal the published one
(:data:`CIFAR10_SHA256`; the CIFAR page publishes its MD5, c32a1d4ab5d03f1284b67883e8d87530, and the
SHA-256 below is the one torchvision's and TensorFlow Datasets' loaders check). If none holds it, the
archive is downloaded into the cache and kept only when its SHA-256 matches.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._files import atomic_write
from ..errors import DataNotFoundError, FileFormatError
from .arrays import ScaledImages
from .fetch import cache_dir, download, sha256_file

__all__ = ["CIFAR10_URL", "CIFAR10_ARCHIVE", "CIFAR10_SHA256", "CIFAR10_CLASSES", "load_cifar10", "parse_batch"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"  # 170,052,171 bytes
CIFAR10_SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_FOLDER = "cifar-10-batches-bin"
_TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
_TEST = ["test_batch.bin"]
_RECORD, _PER_FILE = 1 + 32 * 32 * 3, 10_000


def parse_batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch file's bytes as ``(images uint8 (10000, 32, 32, 3), labels int32)``."""
    if len(data) != _RECORD * _PER_FILE:
        records, rest = divmod(len(data), _RECORD)
        raise FileFormatError(
            f"{source}: {len(data)} bytes, expected {_RECORD * _PER_FILE} ({_PER_FILE} records of {_RECORD} bytes); "
            f"it holds {records} records and {rest} bytes more (truncated or not a CIFAR-10 batch)"
        )
    records = np.frombuffer(data, np.uint8).reshape(_PER_FILE, _RECORD)
    labels = records[:, 0].astype(np.int32)
    if labels.max() >= len(CIFAR10_CLASSES):
        raise FileFormatError(f"{source}: label {int(labels.max())} is out of range (CIFAR-10 has 10 classes)")
    images = records[:, 1:].reshape(_PER_FILE, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _read_members(read, names: list[str], where: str) -> tuple[np.ndarray, np.ndarray]:
    parts = [parse_batch(read(name), f"{where}/{name}") for name in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _from_directory(directory: Path) -> dict[str, np.ndarray]:
    def read(name):
        path = directory / name
        if not path.is_file():
            raise DataNotFoundError(f"{path} is missing (a CIFAR-10 binary directory holds {_TRAIN + _TEST})")
        return path.read_bytes()

    return _arrays(read, str(directory))


def _arrays(read, where: str) -> dict[str, np.ndarray]:
    x_train, y_train = _read_members(read, _TRAIN, where)
    x_test, y_test = _read_members(read, _TEST, where)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def _from_archive(path: Path, sha256: str) -> dict[str, np.ndarray]:
    actual = sha256_file(path)
    if actual != sha256:
        raise FileFormatError(f"{path}: SHA-256 {actual}, expected {sha256} (a damaged or different archive)")
    try:
        with tarfile.open(path, "r:gz") as archive:

            def read(name):
                try:
                    member = archive.extractfile(f"{_FOLDER}/{name}")
                except KeyError:
                    raise FileFormatError(f"{path}: has no member {_FOLDER}/{name}") from None
                return member.read()

            return _arrays(read, f"{path}:{_FOLDER}")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise FileFormatError(f"{path}: not a readable tar.gz archive ({err})") from None


def _search_path(data_dir) -> list[Path]:
    dirs = []
    for root in (data_dir, os.environ.get("JAXCNN_DATA") or None):
        if root is not None:
            dirs += [Path(root), Path(root) / "cifar10"]
    return [*dirs, cache_dir() / "cifar10"]


def _cached(directory: Path) -> Path:
    return directory / "cifar10.npz"


def _load_arrays(directory: Path, sha256: str) -> dict[str, np.ndarray] | None:
    """The arrays of the CIFAR-10 copy in ``directory`` (cached as ``cifar10.npz`` after the first parse,
    beside the data when it is writable), or None when it has none."""
    if _cached(directory).is_file():
        with np.load(_cached(directory), allow_pickle=False) as f:
            return {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    if (directory / _FOLDER).is_dir():
        arrays = _from_directory(directory / _FOLDER)
    elif (directory / CIFAR10_ARCHIVE).is_file():
        arrays = _from_archive(directory / CIFAR10_ARCHIVE, sha256)
    else:
        return None
    if os.access(directory, os.W_OK):
        atomic_write(_cached(directory), lambda f: np.savez(f, **arrays))
    return arrays


def load_cifar10(
    data_dir: str | os.PathLike | None = None,
    *,
    download_missing: bool = True,
    url: str = CIFAR10_URL,
    checksums: Mapping[str, str] | None = None,
    timeout: float = 60.0,
):
    """CIFAR-10 as a :class:`~jaxcnn.data.Dataset`: x ``(N, 32, 32, 3)`` read as float32 ``k / 255``, y
    int32 in [0, 10); 50,000 training and 10,000 test images, the class names in ``classes``.

    Searches the places in the module docstring; else (``download_missing``) downloads the archive into
    the cache, kept only if its SHA-256 equals ``checksums[CIFAR10_ARCHIVE]`` (default
    :data:`CIFAR10_SHA256`). Without it and without ``download_missing``: a
    :class:`~jaxcnn.errors.DataNotFoundError` listing the places searched."""
    from .datasets import _dataset

    sha256 = (checksums or {}).get(CIFAR10_ARCHIVE, CIFAR10_SHA256)
    arrays = next((a for a in map(lambda d: _load_arrays(d, sha256), _search_path(data_dir)) if a is not None), None)
    if arrays is None:
        target = cache_dir() / "cifar10"
        if not download_missing:
            searched = ", ".join(str(d) for d in _search_path(data_dir))
            raise DataNotFoundError(
                f"CIFAR-10 ({_FOLDER}/ or {CIFAR10_ARCHIVE}) not found in any of: {searched} (download it from "
                f"{CIFAR10_URL}, set JAXCNN_DATA, or allow the download)"
            )
        download(url, target / CIFAR10_ARCHIVE, sha256=sha256, timeout=timeout)
        arrays = _load_arrays(target, sha256)
    x_train, x_test = ScaledImages(arrays["x_train"]), ScaledImages(arrays["x_test"])
    return _dataset("cifar10", x_train, arrays["y_train"], x_test, arrays["y_test"], 10, classes=CIFAR10_CLASSES)


def write_archive(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` (``x_train`` 50,000 and ``x_test`` 10,000 uint8 images with their labels) as a
    ``cifar-10-binary.tar.gz`` in the published layout: the inverse of the parser, for tests and for users
    who keep their own copies in this format."""

    def records(x: np.ndarray, y: np.ndarray) -> bytes:
        planes = np.asarray(x, np.uint8).transpose(0, 3, 1, 2).reshape(len(x), -1)
        return np.concatenate([np.asarray(y, np.uint8)[:, None], planes], axis=1).tobytes()

    members = {
        **{name: records(arrays["x_train"][i * _PER_FILE : (i + 1) * _PER_FILE],
                         arrays["y_train"][i * _PER_FILE : (i + 1) * _PER_FILE]) for i, name in enumerate(_TRAIN)},
        _TEST[0]: records(arrays["x_test"], arrays["y_test"]),
    }  # fmt: skip

    def fill(f):
        with tarfile.open(fileobj=f, mode="w:gz", compresslevel=1) as archive:
            for name, data in members.items():
                info = tarfile.TarInfo(f"{_FOLDER}/{name}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))

    return atomic_write(path, fill)
