"""The user cache directory, atomic file writes, and checksum-verified downloads.

- The cache is ``$XDG_CACHE_HOME/jaxcnn`` when ``XDG_CACHE_HOME`` is set to an absolute path, else
  ``~/.cache/jaxcnn``.
- Writes go to a temporary file in the destination's own directory, are flushed and fsynced, and
  only then renamed over the destination with :func:`os.replace`: a reader sees the old file or the
  complete new one, never a partial one. On any error the temporary file is removed.
- :func:`download` additionally checks the byte count against ``Content-Length`` (a connection
  closed mid-body is an error, not a short file) and the SHA-256 before the rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["DownloadError", "ChecksumError", "cache_dir", "atomic_write", "sha256_file", "download"]

_CHUNK = 1 << 20


class DownloadError(OSError):
    """A download failed: HTTP error, connection problem, or fewer bytes than announced."""


class ChecksumError(DownloadError):
    """A downloaded file's SHA-256 differs from the published one."""


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jaxcnn`` (absolute values only, per the XDG spec) or ``~/.cache/jaxcnn``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "jaxcnn"


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


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Create ``path`` atomically: ``write(f)`` fills a temporary file beside it, which is then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide shared data files from other users
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: str | os.PathLike, *, sha256: str, timeout: float = 60.0) -> Path:
    """Fetch ``url`` (http or https) into ``dest`` if and only if its SHA-256 equals ``sha256``.

    Raises :class:`DownloadError` for HTTP errors, connection failures and bodies shorter than their
    ``Content-Length``; :class:`ChecksumError` for a digest mismatch. In every failure case ``dest`` is
    left as it was and no temporary file remains. ``timeout`` bounds each blocking socket operation.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"download: url must be http or https, got {url!r}")
    expected = sha256.strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise ValueError(f"download: sha256 must be 64 hex digits, got {sha256!r} for {url}")
    dest = Path(dest)

    def fetch(f: BinaryIO) -> None:
        digest, received, announced = hashlib.sha256(), 0, None
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                announced = response.headers.get("Content-Length")
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            raise DownloadError(f"download of {url} failed after {received} bytes: {err}") from err
        if announced is not None and received != int(announced):
            raise DownloadError(
                f"download of {url} was interrupted: received {received} of {announced} bytes (Content-Length)"
            )
        actual = digest.hexdigest()
        if actual != expected:
            raise ChecksumError(
                f"checksum mismatch for {url} ({received} bytes): SHA-256 {actual}, expected {expected}; "
                f"nothing was written to {dest}"
            )

    return atomic_write(dest, fetch)
