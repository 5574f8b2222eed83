"""Checkpoints without pickle: a msgpack payload from ``flax.serialization`` plus a JSON header.

File layout (one file, ``<dir>/checkpoint.msgpack``; ``best.msgpack``, the state of the best validation
accuracy, is written the same way)::

    b"JAXCNN-CKPT\\n"                     magic line
    <header JSON, one line>\\n             {"format": 1, "sha256": ..., "size": ..., "meta": {...}}
    <payload>                              flax.serialization.to_bytes(state)

Writes are atomic (:func:`jaxcnn._files.atomic_write`): the bytes go to a temporary file in the same
directory, are flushed and fsync'd, then renamed over the old checkpoint (``os.replace``), and the
directory is fsync'd. An interrupted write leaves the previous checkpoint intact, and a full disk is a
one-line :class:`WriteError` naming the path. Reads verify the magic line, the payload's length and
SHA-256, and that the stored tree has exactly the structure and shapes of the expected one, so a
checkpoint of another model or a damaged file is refused with a message instead of loading garbage.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from ._files import WriteError, atomic_write_bytes, remove_stale_temporaries
from .errors import FileFormatError

__all__ = [
    "CheckpointError",
    "WriteError",
    "save",
    "load",
    "read_meta",
    "read_arrays",
    "CHECKPOINT_NAME",
    "BEST_NAME",
]

CHECKPOINT_NAME = "checkpoint.msgpack"
BEST_NAME = "best.msgpack"  # the state of the best validation accuracy, in the same format
_MAGIC = b"JAXCNN-CKPT\n"
_FORMAT = 1


class CheckpointError(FileFormatError):
    """A checkpoint that is missing, damaged, or does not fit the model it is loaded into."""


def _path(directory: str | os.PathLike, name: str = CHECKPOINT_NAME) -> Path:
    return Path(directory) / name


def _to_host(tree: Any) -> Any:
    """Device arrays (sharded ones too) as NumPy; typed PRNG keys as their raw key data."""

    def leaf(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)

    return jax.tree_util.tree_map(leaf, tree)


def save(directory: str | os.PathLike, tree: Any, meta: dict | None = None, *, name: str = CHECKPOINT_NAME) -> Path:
    """Atomically write ``tree`` (a pytree of arrays) and JSON-serialisable ``meta`` to ``directory/name``."""
    payload = serialization.to_bytes(_to_host(tree))
    header = {
        "format": _FORMAT,
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "meta": meta or {},
    }
    data = _MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload
    path = _path(directory, name)
    remove_stale_temporaries(path)  # left by a writer killed mid-write; there is one writer per run
    atomic_write_bytes(path, data)
    return path


def _read(directory: str | os.PathLike, name: str = CHECKPOINT_NAME) -> tuple[dict, bytes, Path]:
    path = _path(directory, name)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    data = path.read_bytes()
    if not data.startswith(_MAGIC):
        raise CheckpointError(f"{path} is not a jaxcnn checkpoint (bad magic line)")
    end = data.find(b"\n", len(_MAGIC))
    try:
        header = json.loads(data[len(_MAGIC) : end])
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is damaged: unreadable header ({e})") from None
    if end < 0 or not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise CheckpointError(f"{path} is damaged or of an unknown format: header {header!r}")
    payload = data[end + 1 :]
    if len(payload) != header.get("size"):
        raise CheckpointError(f"{path} is damaged: payload has {len(payload)} bytes, header says {header.get('size')}")
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise CheckpointError(f"{path} is damaged: payload SHA-256 does not match its header")
    return header, payload, path


def read_meta(directory: str | os.PathLike, *, name: str = CHECKPOINT_NAME) -> dict:
    """The metadata stored with a checkpoint (verifies the file's integrity too)."""
    return _read(directory, name)[0]["meta"]


def read_arrays(path: str | os.PathLike) -> tuple[dict, dict]:
    """``(tree, meta)`` of a checkpoint file, or of a run directory's ``checkpoint.msgpack``: the stored
    pytree as nested dicts of NumPy arrays (tuples keyed ``"0"``, ``"1"``, ...), for reading a checkpoint
    into another structure (fine-tuning with a new head)."""
    path = Path(path)
    directory, name = (path, CHECKPOINT_NAME) if path.is_dir() else (path.parent, path.name)
    header, payload, _ = _read(directory, name)
    return serialization.msgpack_restore(payload), header["meta"]


def _describe(tree: Any) -> list[str]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [f"{jax.tree_util.keystr(path)}: {np.shape(leaf)} {np.asarray(leaf).dtype}" for path, leaf in flat]


def load(directory: str | os.PathLike, target: Any, *, name: str = CHECKPOINT_NAME) -> tuple[Any, dict]:
    """Read a checkpoint into the structure of ``target``; return ``(tree, meta)``.

    ``target`` is a pytree with the expected structure, shapes and dtypes (e.g. a freshly initialised
    train state); anything else is refused with the first difference.
    """
    header, payload, path = _read(directory, name)
    host_target = _to_host(target)
    try:
        raw = serialization.msgpack_restore(payload)
        restored = serialization.from_state_dict(host_target, raw)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} does not fit this model: {e}") from None
    expected, got = _describe(host_target), _describe(restored)
    if expected != got:
        diff = next(
            ((e, g) for e, g in zip(expected, got) if e != g), (f"{len(expected)} leaves", f"{len(got)} leaves")
        )
        raise CheckpointError(f"{path} does not fit this model: expected {diff[0]}, found {diff[1]}")
    return restored, header["meta"]
