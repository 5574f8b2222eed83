r"""Datasets as host (NumPy) arrays in one container, and the :func:`load` entry point.

Every loader returns a :class:`Dataset`: inputs float32 channels-last, labels int32 in
``[0, num_classes)``.

==================  ===============================  =================  =====================================
name                train / test                     input shape        scaling
==================  ===============================  =================  =====================================
``fashion-mnist``   60,000 / 10,000 (files)          ``(28, 28, 1)``    uint8 / 255, in [0, 1]
``mnist1d``         4,000 / 1,000 (generated)        ``(40, 1)``        as generated: standardised over the
                                                                        whole set (mean 0, std 1), not [0, 1]
``digits``          1,438 / 359 (scikit-learn)       ``(8, 8, 1)``      0..16 / 16, in [0, 1]
``synthetic``       any (generated from a seed)      any ``(*s, C)``    in [0, 1]
==================  ===============================  =================  =====================================

Fashion-MNIST is looked for, in order, in: ``data_dir``, ``$JAXCNN_DATA``, Debian's
``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``), and the user cache
(``<cache>/fashion-mnist``, see :func:`jaxcnn.data.fetch.cache_dir`). For ``data_dir`` and
``$JAXCNN_DATA`` both the directory itself and its ``fashion-mnist`` subdirectory are tried. The first
directory holding all four files is used. Local copies are validated by parsing (magic numbers,
dimensions, exact payload length, matching counts, label range, and the 60,000 / 10,000 counts), not by
checksum: Debian recompressed the files, so their gzip bytes differ from upstream's. If no directory
has them, the files missing from the cache are downloaded from ``base_url`` and kept only if their
SHA-256 equals the published one.
"""

from __future__ import annotations

import importlib.metadata
import os
import random
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import ConfigError, DataNotFoundError, MissingDependencyError, unknown_choice
from ..ops._validate import as_int
from .arrays import ScaledImages
from .fetch import atomic_write, cache_dir, download
from .idx import IMAGES_MAGIC, LABELS_MAGIC, IDXFormatError, read_idx

__all__ = [
    "Dataset",
    "DATASETS",
    "load",
    "load_fashion_mnist",
    "find_fashion_mnist",
    "fetch_fashion_mnist",
    "load_mnist1d",
    "load_digits",
    "make_synthetic",
    "FASHION_MNIST_URL",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_SHA256",
    "FASHION_MNIST_CLASSES",
]

DATASETS = ("fashion-mnist", "mnist1d", "digits", "synthetic", "cifar10", "folder", "npz")


class Dataset(NamedTuple):
    """A train/test split, and optionally a validation split: ``x_*`` channels-last ``(N, *input_shape)``,
    float32 NumPy arrays or :class:`~jaxcnn.data.arrays.ScaledImages` (uint8 read as float32 ``k / 255``,
    possibly memory-mapped); ``y_*`` int32 ``(N,)`` in ``[0, num_classes)``."""

    x_train: Any
    y_train: np.ndarray
    x_test: Any
    y_test: np.ndarray
    num_classes: int
    name: str
    x_val: Any = None  # the validation split (None: none)
    y_val: np.ndarray | None = None
    classes: tuple[str, ...] | None = None  # class names, when the dataset has its own

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example, e.g. ``(28, 28, 1)``."""
        return tuple(self.x_train.shape[1:])

    @property
    def has_validation(self) -> bool:
        return self.x_val is not None and len(self.x_val) > 0

    @property
    def class_names(self) -> tuple[str, ...]:
        """Human-readable class names: the dataset's own (folder names, CIFAR-10's, Fashion-MNIST's garment
        names), else the digits ``"0"``, ``"1"``, ..."""
        if self.classes is not None:
            return tuple(self.classes)
        if self.name == "fashion-mnist":
            return FASHION_MNIST_CLASSES
        return tuple(str(k) for k in range(self.num_classes))

    def __repr__(self) -> str:
        val = f", val={self.x_val.shape}" if self.has_validation else ""
        return (
            f"Dataset(name={self.name!r}, train={self.x_train.shape}{val}, test={self.x_test.shape}, "
            f"num_classes={self.num_classes})"
        )


def _examples(x: Any) -> Any:
    """float32 contiguous, or :class:`ScaledImages` as they are."""
    return x if isinstance(x, ScaledImages) else np.ascontiguousarray(x, dtype=np.float32)


def _labels(y: Any) -> np.ndarray:
    return np.ascontiguousarray(y, dtype=np.int32)


def _dataset(name, x_train, y_train, x_test, y_test, num_classes, *, x_val=None, y_val=None, classes=None) -> Dataset:
    val = (None, None) if x_val is None else (_examples(x_val), _labels(y_val))
    return Dataset(
        _examples(x_train), _labels(y_train), _examples(x_test), _labels(y_test), int(num_classes), name, *val,
        None if classes is None else tuple(classes),
    )  # fmt: skip


# --- Fashion-MNIST ------------------------------------------------------------------------------

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# SHA-256 of the upstream gzip files (sizes 26,421,880 / 29,515 / 4,422,102 / 5,148 bytes), as listed in
# TensorFlow Datasets' tensorflow_datasets/url_checksums/fashion_mnist.txt.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Read at call time, so tests can point it elsewhere.
SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)


def _fashion_cache(cache: str | os.PathLike | None) -> Path:
    return (Path(cache) if cache is not None else cache_dir()) / "fashion-mnist"


def _fashion_search_path(data_dir, cache) -> list[Path]:
    dirs: list[Path] = []
    for root in (data_dir, os.environ.get("JAXCNN_DATA") or None):
        if root is not None:
            dirs += [Path(root), Path(root) / "fashion-mnist"]
    return [*dirs, *SYSTEM_DIRS, _fashion_cache(cache)]


def _has_all(directory: Path) -> bool:
    return all((directory / f).is_file() for f in FASHION_MNIST_FILES.values())


def find_fashion_mnist(
    data_dir: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None = None
) -> Path | None:
    """The first directory on the search path (see the module doc) holding all four files, or None."""
    return next((d for d in _fashion_search_path(data_dir, cache_dir) if _has_all(d)), None)


def fetch_fashion_mnist(
    *,
    cache_dir: str | os.PathLike | None = None,
    base_url: str = FASHION_MNIST_URL,
    checksums: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download the files missing from ``<cache>/fashion-mnist``, each verified against ``checksums``.

    ``checksums`` maps file name to SHA-256 (default :data:`FASHION_MNIST_SHA256`); a file without an
    entry is never downloaded unverified. Returns the cache directory.
    """
    sums = FASHION_MNIST_SHA256 if checksums is None else checksums
    target = _fashion_cache(cache_dir)
    missing = [f for f in FASHION_MNIST_FILES.values() if not (target / f).is_file()]
    unverifiable = [f for f in missing if f not in sums]
    if unverifiable:  # checked before any download starts
        raise KeyError(f"fetch_fashion_mnist: no SHA-256 for {unverifiable} in checksums (has {sorted(sums)})")
    for fname in missing:
        download(base_url.rstrip("/") + "/" + fname, target / fname, sha256=sums[fname], timeout=timeout)
    return target


def _read_split(directory: Path, split: str, expected_count: int | None) -> tuple[np.ndarray, np.ndarray]:
    images_path = directory / FASHION_MNIST_FILES[f"{split}_images"]
    labels_path = directory / FASHION_MNIST_FILES[f"{split}_labels"]
    images = read_idx(images_path, expected_magic=IMAGES_MAGIC)
    labels = read_idx(labels_path, expected_magic=LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise IDXFormatError(f"{images_path}: images must be 28x28, got {images.shape[1]}x{images.shape[2]}")
    if len(images) != len(labels):
        raise IDXFormatError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    if expected_count is not None and len(labels) != expected_count:
        raise IDXFormatError(f"{labels_path}: expected {expected_count} {split} examples, found {len(labels)}")
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise IDXFormatError(f"{labels_path}: labels must lie in [0, 10), found {int(labels.max())}")
    return images, labels


def load_fashion_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    base_url: str = FASHION_MNIST_URL,
    checksums: Mapping[str, str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    timeout: float = 60.0,
    expected_counts: tuple[int, int] | None = (60_000, 10_000),
) -> Dataset:
    """Fashion-MNIST: x ``(N, 28, 28, 1)`` float32 = uint8 / 255, y int32 in [0, 10).

    Searches the directories in the module doc, else (``download=True``) fetches into the cache with
    :func:`fetch_fashion_mnist`. ``expected_counts`` are the (train, test) sizes to insist on; ``None``
    accepts any size (e.g. a small mirror for tests). Raises :class:`~jaxcnn.errors.DataNotFoundError` (a
    ``FileNotFoundError``) listing the places searched when the files are absent and ``download`` is false.
    """
    directory = find_fashion_mnist(data_dir, cache_dir=cache_dir)
    if directory is None:
        if not download:
            searched = ", ".join(str(d) for d in _fashion_search_path(data_dir, cache_dir))
            raise DataNotFoundError(
                f"Fashion-MNIST files {sorted(FASHION_MNIST_FILES.values())} not found in any of: {searched} "
                "(install Debian's dataset-fashion-mnist, set JAXCNN_DATA, or pass download=True)"
            )
        directory = fetch_fashion_mnist(cache_dir=cache_dir, base_url=base_url, checksums=checksums, timeout=timeout)
    counts = (None, None) if expected_counts is None else expected_counts
    x_train, y_train = _read_split(directory, "train", counts[0])
    x_test, y_test = _read_split(directory, "test", counts[1])
    scale = np.float32(255)  # divide, so each value is the float32 nearest to k / 255
    x_train, x_test = (x[..., None].astype(np.float32) / scale for x in (x_train, x_test))
    return _dataset("fashion-mnist", x_train, y_train, x_test, y_test, 10)


# --- MNIST-1D -----------------------------------------------------------------------------------

_MNIST1D_KEYS = {"x": (4000, 40), "y": (4000,), "x_test": (1000, 40), "y_test": (1000,)}


def _generate_mnist1d() -> dict[str, np.ndarray]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:
        raise MissingDependencyError("load_mnist1d needs the mnist1d package: pip install mnist1d") from err
    # make_dataset reseeds the global NumPy and `random` generators; leave the caller's streams intact.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {k: np.asarray(data[k]) for k in _MNIST1D_KEYS}


def _read_mnist1d_cache(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in _MNIST1D_KEYS}
    except (OSError, ValueError, KeyError, EOFError) as err:
        warnings.warn(f"ignoring unreadable MNIST-1D cache {path} ({err}); regenerating", stacklevel=3)
        return None
    bad = {k: a.shape for k, a in arrays.items() if a.shape != _MNIST1D_KEYS[k]}
    if bad:
        warnings.warn(f"ignoring MNIST-1D cache {path} with wrong shapes {bad}; regenerating", stacklevel=3)
        return None
    return arrays


def load_mnist1d(*, data_dir: str | os.PathLike | None = None, regenerate: bool = False) -> Dataset:
    """MNIST-1D from the ``mnist1d`` package's default arguments: x ``(N, 40, 1)`` float32, y in [0, 10).

    4,000 train / 1,000 test signals, standardised by the generator over the whole set (mean 0, std 1).
    Generating takes a few seconds, so the arrays are cached as ``mnist1d-<version>.npz`` in
    ``data_dir`` (default ``<cache>/mnist1d``), written atomically; ``regenerate`` ignores the cache.
    The global NumPy and ``random`` generator states are restored after generation.
    """
    try:
        version = importlib.metadata.version("mnist1d")
    except importlib.metadata.PackageNotFoundError as err:
        raise MissingDependencyError("load_mnist1d needs the mnist1d package: pip install mnist1d") from err
    directory = Path(data_dir) if data_dir is not None else cache_dir() / "mnist1d"
    path = directory / f"mnist1d-{version}.npz"
    arrays = None if regenerate or not path.is_file() else _read_mnist1d_cache(path)
    if arrays is None:
        arrays = _generate_mnist1d()
        atomic_write(path, lambda f: np.savez(f, **arrays))
    return _dataset("mnist1d", arrays["x"][..., None], arrays["y"], arrays["x_test"][..., None], arrays["y_test"], 10)


# --- scikit-learn digits ------------------------------------------------------------------------


def load_digits(*, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 1,797 8x8 digits: x ``(N, 8, 8, 1)`` float32 = value / 16, y in [0, 10).

    The split is a permutation from ``np.random.default_rng(seed)``: the first
    ``round(test_fraction * 1797)`` examples (359 by default) are the test set.
    """
    if not 0 < test_fraction < 1:
        raise ConfigError(f"load_digits: test_fraction must lie in (0, 1), got {test_fraction}")
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as err:
        raise MissingDependencyError("load_digits needs scikit-learn: pip install scikit-learn") from err
    bunch = sk_load_digits()
    x = bunch.images[..., None] / 16.0
    y = bunch.target
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    return _dataset("digits", x[train], y[train], x[test], y[test], 10)


# --- synthetic ----------------------------------------------------------------------------------


def make_synthetic(
    *,
    num_train: int = 512,
    num_test: int = 128,
    image_shape: Sequence[int] = (8, 8),
    channels: int = 1,
    num_classes: int = 4,
    noise: float = 0.25,
    seed: int = 0,
) -> Dataset:
    """A small learnable set: x ``(N, *image_shape, channels)`` float32 in [0, 1], y balanced in [0, K).

    Each class has a fixed random prototype (uniform in [0, 1]); an example is its class's prototype
    plus Gaussian noise of standard deviation ``noise``, clipped to [0, 1]. Everything is a pure function
    of the arguments; classes are separable by nearest prototype when ``noise`` is moderate.
    """
    shape = tuple(int(s) for s in image_shape)
    for arg, value in (("num_train", num_train), ("num_test", num_test), ("channels", channels)):
        as_int(value, f"make_synthetic: {arg}", minimum=1)
    if not shape or min(shape) < 1:
        raise ConfigError(f"make_synthetic: image_shape must be non-empty and positive, got {tuple(image_shape)}")
    as_int(num_classes, "make_synthetic: num_classes", minimum=2)
    if noise < 0:
        raise ConfigError(f"make_synthetic: noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    example = (*shape, channels)
    prototypes = rng.uniform(0.0, 1.0, size=(num_classes, *example))

    def split(n):
        labels = rng.permutation(np.arange(n) % num_classes)
        x = prototypes[labels] + noise * rng.standard_normal((n, *example))
        return np.clip(x, 0.0, 1.0), labels

    x_train, y_train = split(num_train)
    x_test, y_test = split(num_test)
    return _dataset("synthetic", x_train, y_train, x_test, y_test, num_classes)


# --- entry point --------------------------------------------------------------------------------


def load(name: str, *, data_dir: str | os.PathLike | None = None, **kwargs: Any) -> Dataset:
    """Load a dataset by name: one of :data:`DATASETS` (case and ``_`` vs ``-`` are ignored).

    ``data_dir`` is where Fashion-MNIST and CIFAR-10 are looked for first, where MNIST-1D caches its
    generated arrays, the image folder's root (``folder``: ``DIR/train/<class>/*``, ...) or the ``.npz``
    file (``npz``); digits and synthetic read no files and ignore it. Other keyword arguments go to the
    dataset's loader: :func:`load_fashion_mnist`, :func:`load_mnist1d`, :func:`load_digits`,
    :func:`make_synthetic`, :func:`~jaxcnn.data.folder.load_folder` (``input_shape``),
    :func:`~jaxcnn.data.folder.load_npz`, :func:`~jaxcnn.data.cifar.load_cifar10`.
    """
    from .cifar import load_cifar10
    from .folder import load_folder, load_npz

    key = str(name).strip().lower().replace("_", "-")
    if key == "fashion-mnist":
        return load_fashion_mnist(data_dir, **kwargs)
    if key == "mnist1d":
        return load_mnist1d(data_dir=data_dir, **kwargs)
    if key == "digits":
        return load_digits(**kwargs)
    if key == "synthetic":
        return make_synthetic(**kwargs)
    if key == "folder":
        return load_folder(data_dir, **kwargs)
    if key == "npz":
        return load_npz(data_dir, **kwargs)
    if key == "cifar10":
        return load_cifar10(data_dir, **kwargs)
    raise unknown_choice("dataset", name, DATASETS)
