"""Your own data: a directory of images per class, or arrays in an ``.npz`` file.

**Image folders** (the layout of torchvision's ``ImageFolder`` and Keras' ``image_dataset_from_directory``)::

    DIR/train/<class>/*.png|jpg|bmp|...      the training set
    DIR/test/<class>/...                     the test set (the same classes)
    DIR/val/<class>/...                      a validation set, if there is one

Classes are sorted by name and labelled 0, 1, ...; within a class the files are sorted by name (hidden
files and files that are not images are skipped, as ``ImageFolder`` does). Every image is decoded with
Pillow once, as grey (when every image is grey) or RGB, resized to ``input_shape`` ``(H, W, C)`` with
bilinear interpolation when it is given (else every image must have the same size), and written to a
cache of uint8 arrays (``x_<split>.npy``, ``y_<split>.npy``): ``DIR/.jaxcnn-cache/<key>`` when ``DIR`` is
writable, else ``<cache>/folders/<key>`` (:func:`jaxcnn.data.fetch.cache_dir`), where ``<key>`` hashes
every file's name, size and modification time and the decoding options. The cache is written atomically
(a complete directory or none) and read back through memory maps (:class:`~jaxcnn.data.arrays.ScaledImages`),
so a second run starts at once and a dataset larger than memory is read a batch at a time.

**Arrays**: ``x_train, y_train, x_test, y_test`` (optionally ``x_val, y_val``) in one ``.npz``; integer
labels in ``[0, K)``, channels-last examples (images ``(N, H, W, C)`` or signals ``(N, L, C)``); uint8
inputs read as ``k / 255``, floating ones as float32.

Bad input -- an unreadable or corrupt image, an empty class directory, a class missing from a split,
mixed sizes without ``input_shape``, labels out of range, mismatched shapes -- is refused with one line
naming the file (:class:`~jaxcnn.errors.FileFormatError`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .._files import atomic_directory
from ..errors import ConfigError, DataNotFoundError, FileFormatError, MissingDependencyError
from .arrays import ScaledImages
from .fetch import cache_dir

__all__ = [
    "IMAGE_SUFFIXES", "SPLITS", "FolderLayout", "scan_folder", "load_folder", "save_folder", "load_npz", "folder_cache"
]  # fmt: skip

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
SPLITS = ("train", "val", "test")  # val is optional
_CACHE_FORMAT = 1


class FolderLayout(NamedTuple):
    """What :func:`scan_folder` found: the class names and, per split, its files with their labels."""

    root: Path
    classes: tuple[str, ...]
    files: dict[str, list[tuple[Path, int]]]  # split -> [(path, label)], in label then file-name order


def _images(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _classes(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_folder(root: str | os.PathLike) -> FolderLayout:
    """The classes and files of ``root/train``, ``root/test`` and (if present) ``root/val``, checked: the
    same classes in every split, none empty."""
    root = Path(root)
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DataNotFoundError(f"{root / split} is not a directory: an image folder needs train/ and test/")
    classes = _classes(root / "train")
    if not classes:
        raise FileFormatError(f"{root / 'train'} has no class directories")
    files = {}
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        present = _classes(split_dir)
        missing, extra = sorted(set(classes) - set(present)), sorted(set(present) - set(classes))
        if missing:
            raise FileFormatError(f"{split_dir / missing[0]}: class {missing[0]!r} of train/ is missing from {split}/")
        if extra:
            raise FileFormatError(f"{split_dir / extra[0]}: class {extra[0]!r} is not in train/")
        files[split] = []
        for label, name in enumerate(classes):
            images = _images(split_dir / name)
            if not images:
                raise FileFormatError(f"{split_dir / name} is empty: no image files ({', '.join(IMAGE_SUFFIXES)})")
            files[split] += [(path, label) for path in images]
    return FolderLayout(root, tuple(classes), files)


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise MissingDependencyError("image folders need Pillow: pip install pillow") from None
    return Image


def _open(path: Path, *, decode: bool = True):
    """The image (Pillow; ``decode=False``: its header only, for the size and mode), or a one-line error
    naming the file."""
    Image = _pillow()
    try:
        with Image.open(path) as image:
            if not decode:
                return image.size, image.mode
            image.load()
            return image.copy()
    except Exception as err:  # Pillow raises many kinds (OSError, SyntaxError, ValueError, ...)
        raise FileFormatError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None


def _geometry(layout: FolderLayout, input_shape: Sequence[int] | None) -> tuple[int, int, int]:
    """``(H, W, C)`` of the decoded images: ``input_shape``, or the common size of every image (checked),
    with one channel when every image is grey and three otherwise."""
    if input_shape is not None:
        if len(input_shape) != 3 or min(input_shape) < 1 or input_shape[-1] not in (1, 3):
            raise ConfigError(f"input_shape for an image folder must be (H, W, 1) or (H, W, 3), got {input_shape}")
        return tuple(int(d) for d in input_shape)
    size, grey, first = None, True, None
    for path, _ in (f for split in layout.files.values() for f in split):
        image_size, mode = _open(path, decode=False)
        grey = grey and mode in ("L", "1", "I;16", "I", "F")
        if size is None:
            size, first = image_size, path
        elif image_size != size:
            raise FileFormatError(
                f"{path}: {image_size[0]}x{image_size[1]} pixels, but {first} has {size[0]}x{size[1]}; give "
                "--input-shape H,W,C to resize every image"
            )
    return size[1], size[0], 1 if grey else 3


def _decode(path: Path, geometry: tuple[int, int, int]) -> np.ndarray:
    """One image as uint8 ``(H, W, C)``: converted to grey or RGB, resized (bilinear) when it differs."""
    h, w, c = geometry
    image = _open(path).convert("L" if c == 1 else "RGB")
    if image.size != (w, h):
        image = image.resize((w, h), _pillow().Resampling.BILINEAR)
    return np.asarray(image, np.uint8).reshape(h, w, c)


def _key(layout: FolderLayout, geometry: tuple[int, int, int]) -> str:
    """A hash of every file's path (relative to the root), size and modification time, and of the
    decoding options: a changed, added or removed image gives another cache."""
    digest = hashlib.sha256(json.dumps([_CACHE_FORMAT, geometry, layout.classes]).encode())
    for split, files in layout.files.items():
        for path, label in files:
            stat = path.stat()
            entry = f"{split}\0{path.relative_to(layout.root)}\0{stat.st_size}\0{stat.st_mtime_ns}\0{label}\n"
            digest.update(entry.encode())
    return digest.hexdigest()[:24]


def folder_cache(root: str | os.PathLike, key: str) -> Path:
    """Where the cache of ``root`` with ``key`` lives: beside the data when that is writable, else in the
    user cache."""
    root = Path(root)
    if os.access(root, os.W_OK):
        return root / ".jaxcnn-cache" / key
    name = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return cache_dir() / "folders" / f"{root.name}-{name}" / key


def _write_cache(directory: Path, layout: FolderLayout, geometry: tuple[int, int, int]) -> None:
    """Decode every image into ``x_<split>.npy`` (a memory map filled image by image) and ``y_<split>.npy``."""
    with atomic_directory(directory) as tmp:
        for split, files in layout.files.items():
            x = np.lib.format.open_memmap(
                tmp / f"x_{split}.npy", mode="w+", dtype=np.uint8, shape=(len(files), *geometry)
            )
            for i, (path, _) in enumerate(files):
                x[i] = _decode(path, geometry)
            x.flush()
            del x
            np.save(tmp / f"y_{split}.npy", np.asarray([label for _, label in files], np.int32))
        meta = {"format": _CACHE_FORMAT, "classes": list(layout.classes), "geometry": list(geometry)}
        (tmp / "meta.json").write_text(json.dumps(meta))


def load_folder(data_dir: str | os.PathLike, *, input_shape: Sequence[int] | None = None, quiet: bool = False) -> Any:
    """An image folder (see the module docstring) as a :class:`~jaxcnn.data.Dataset` whose images are
    memory-mapped from the cache; the first call decodes and caches them (saying so on stderr unless
    ``quiet``), later ones read the cache (and say that)."""
    from .datasets import _dataset

    if data_dir is None:
        raise ConfigError("the folder dataset needs data_dir (--data-dir DIR with train/ and test/)")
    layout = scan_folder(data_dir)
    geometry = _geometry(layout, None if input_shape is None else tuple(input_shape))
    directory = folder_cache(layout.root, _key(layout, geometry))
    count = sum(len(files) for files in layout.files.values())
    if (directory / "meta.json").is_file():
        message = f"reading {count} cached images from {directory}"
    else:
        if not quiet:
            print(f"decoding {count} images of {layout.root} into {directory}", file=sys.stderr, flush=True)
        _write_cache(directory, layout, geometry)
        message = f"cached {count} images in {directory}"
    if not quiet:
        print(message, file=sys.stderr, flush=True)
    split = {s: _read_split(directory, s) for s in layout.files}
    val = split.get("val", (None, None))
    return _dataset(
        "folder", *split["train"], *split["test"], len(layout.classes), x_val=val[0], y_val=val[1],
        classes=layout.classes,
    )  # fmt: skip


def save_folder(
    root: str | os.PathLike, x: np.ndarray, y: np.ndarray, *, split: str, classes: Sequence[str] | None = None
) -> None:
    """Write images as PNG files ``root/<split>/<class>/<index>.png``, the layout :func:`load_folder`
    reads (its inverse, as :func:`~jaxcnn.data.encode_idx` is :func:`~jaxcnn.data.parse_idx`'s): ``x``
    ``(N, H, W, 1 or 3)``, uint8 or ``[0, 1]`` floats (rounded to ``k / 255``); ``y`` integer labels;
    ``classes`` the folder name of each label (default: the label, zero-padded so names sort as labels do).
    Files are numbered by their row, so the folder lists them in ``x``'s order within each class."""
    Image = _pillow()
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or y.shape != x.shape[:1]:
        raise ConfigError(f"x must be (N, H, W, 1 or 3) images with y's N labels, got x {x.shape}, y {y.shape}")
    pixels = x if x.dtype == np.uint8 else np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)
    names = (
        list(classes) if classes is not None else [f"{k:0{len(str(int(y.max())))}d}" for k in range(int(y.max()) + 1)]
    )
    bad = [name for name in names if not name or name.startswith(".") or "/" in name or os.sep in name]
    if bad or len(names) <= int(y.max()):
        raise ConfigError(f"classes must name every label with a folder name (no '/', not hidden), got {classes!r}")
    digits = len(str(len(x)))
    for i, (image, label) in enumerate(zip(pixels, y)):
        folder = Path(root) / split / names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(folder / f"{i:0{digits}d}.png")


def _read_split(directory: Path, split: str) -> tuple[ScaledImages, np.ndarray]:
    x = np.load(directory / f"x_{split}.npy", mmap_mode="r")
    return ScaledImages(x), np.load(directory / f"y_{split}.npy")


# --- arrays in an .npz ------------------------------------------------------------------------------


def _npz_examples(path: Path, arrays: dict, split: str) -> tuple[Any, np.ndarray]:
    x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
    if x.ndim < 2:
        raise FileFormatError(f"{path}: x_{split} must be (N, ..., C) channels-last examples, got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise FileFormatError(f"{path}: y_{split} must be (N,) with N = {len(x)} (x_{split}), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise FileFormatError(f"{path}: y_{split} must hold integer labels, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise FileFormatError(f"{path}: y_{split} has a negative label ({int(y.min())})")
    if x.dtype == np.uint8:
        return ScaledImages(x), y
    if not np.issubdtype(x.dtype, np.floating):
        raise FileFormatError(f"{path}: x_{split} must be uint8 or floating, got dtype {x.dtype}")
    return x, y


def load_npz(path: str | os.PathLike) -> Any:
    """Arrays in an ``.npz`` (see the module docstring) as a :class:`~jaxcnn.data.Dataset`; the number of
    classes is one more than the largest training label, and every other split's labels must be below it."""
    from .datasets import _dataset

    if path is None:
        raise ConfigError("the npz dataset needs data_dir (--data-dir FILE.npz)")
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"no .npz file at {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as err:  # a damaged zip, a pickled array, ...
        raise FileFormatError(f"{path}: not a readable .npz ({type(err).__name__}: {err})") from None
    required = ["x_train", "y_train", "x_test", "y_test"]
    missing = [k for k in required if k not in arrays]
    if missing or (("x_val" in arrays) != ("y_val" in arrays)):
        wanted = missing[0] if missing else "x_val and y_val together"
        raise FileFormatError(f"{path}: needs {wanted} (it has {sorted(arrays)})")
    splits = {s: _npz_examples(path, arrays, s) for s in SPLITS if f"x_{s}" in arrays}
    shapes = {s: tuple(x.shape[1:]) for s, (x, _) in splits.items()}
    for split, shape in shapes.items():
        if shape != shapes["train"]:
            raise FileFormatError(f"{path}: x_{split} examples are {shape}, x_train's are {shapes['train']}")
    num_classes = int(splits["train"][1].max()) + 1 if len(splits["train"][1]) else 0
    for split, (_, y) in splits.items():
        if len(y) and y.max() >= num_classes:
            raise FileFormatError(
                f"{path}: y_{split} has label {int(y.max())}, out of range for the {num_classes} classes of y_train"
            )
    val = splits.get("val", (None, None))
    return _dataset("npz", *splits["train"], *splits["test"], num_classes, x_val=val[0], y_val=val[1])
