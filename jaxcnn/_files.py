"""Writing files so that an interruption or a full disk never leaves a partial one.

:func:`atomic_write` fills a temporary file in the destination's own directory, flushes and fsyncs
it, and only then renames it over the destination (:func:`os.replace`) and fsyncs the directory: a
reader sees the old file or the complete new one. On any error the temporary file is removed; an
operating-system failure (a full disk, a missing permission, a read-only file system) is raised as
one :class:`WriteError` whose message names the path, the previous file intact. Checkpoints, metrics,
summaries, plots and downloaded data all go through here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import WriteError

__all__ = [
    "WriteError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_directory",
    "append_text",
    "remove_stale_temporaries",
]


def _write_error(path: Path, err: OSError, what: str) -> WriteError:
    reason = err.strerror or str(err)
    return WriteError(err.errno, f"cannot write {path}: {reason}; {what}")


def _fsync_dir(directory: Path) -> None:
    """Persist a rename in ``directory`` (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed writer of ``path`` left beside it (``.NAME.*.part``); for a
    file with a single writer, which calls this before writing it again."""
    path = Path(path)
    stale = sorted(path.parent.glob(f"{_temporary_prefix(path)}*.part")) if path.parent.is_dir() else []
    for tmp in stale:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            tmp.unlink()
    return stale


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Create or replace ``path`` atomically: ``write(f)`` fills a temporary file beside it, which is
    then renamed over ``path``. Errors ``write`` raises itself propagate unchanged (after clean-up);
    a failing system call (it carries an ``errno``) becomes a :class:`WriteError` naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".part")
    except OSError as err:
        raise _write_error(path, err, "nothing was written") from err
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide outputs and shared data from other users
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None and not isinstance(err, WriteError):
            raise _write_error(path, err, "the previous version, if any, is intact") from err
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """:func:`atomic_write` of a byte string."""
    return atomic_write(path, lambda f: f.write(data))


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append ``text`` to ``path`` (for logs that grow line by line); a failure is a :class:`WriteError`."""
    path = Path(path)
    try:
        with path.open("a") as f:
            f.write(text)
    except OSError as err:
        raise _write_error(path, err, "the lines written before are intact") from err


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Create the directory ``path`` atomically: the block fills a temporary directory beside it
    (``.NAME.*.part``), which is renamed to ``path`` when the block ends; on any error, or when ``path``
    appeared meanwhile, the temporary directory is removed. Readers see no directory or a complete one,
    and temporaries a killed writer left are removed first (:func:`remove_stale_temporaries`)."""
    path = Path(path)
    try:
        remove_stale_temporaries(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".part"))
    except OSError as err:
        raise _write_error(path, err, "nothing was written") from err
    try:
        yield tmp
        for child in tmp.iterdir():
            with open(child, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        if path.exists():  # another writer finished first: its directory stands
            shutil.rmtree(tmp, ignore_errors=True)
            return
        os.rename(tmp, path)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) and err.errno is not None and not isinstance(err, WriteError):
            raise _write_error(path, err, "the previous version, if any, is intact") from err
        raise
    _fsync_dir(path.parent)
