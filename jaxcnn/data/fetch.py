"""The user cache directory, atomic file writes, and checksum-verified downloads.

- The cache is ``$XDG_CACHE_HOME/jaxcnn`` when ``XDG_CACHE_HOME`` is set to an absolute path, else
  ``~/.cache/jaxcnn``.
- Writes go through :func:`jaxcnn._files.atomic_write` (re-exported here): a temporary file in the
  destination's own directory, flushed and fsynced, only then renamed over the destination with
  :func:`os.replace`: a reader sees the old file or the complete new one, never a partial one. On any
  error the temporary file is removed; a full disk is a :class:`WriteError` naming the path.
- :func:`download` additionally checks the byte count against ``Content-Length`` (a connection
  closed mid-body is an error, not a short file) and the SHA-256 before the rename.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

from .._files import WriteError, atomic_write
from ..errors import ConfigError, DownloadError

__all__ = ["DownloadError", "ChecksumError", "WriteError", "cache_dir", "atomic_write", "sha256_file", "download"]

_CHUNK = 1 << 20


class ChecksumError(DownloadError):
    """A downloaded file's SHA-256 differs from the published one."""


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jaxcnn`` (absolute values only, per the XDG spec) or ``~/.cache/jaxcnn``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "jaxcnn"


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
        raise ConfigError(f"download: url must be http or https, got {url!r}")
    expected = sha256.strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise ConfigError(f"download: sha256 must be 64 hex digits, got {sha256!r} for {url}")
    dest = Path(dest)

    def fetch(f: BinaryIO) -> None:
        digest, received, announced = hashlib.sha256(), 0, None

        def network(call):
            try:
                return call()
            except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
                raise DownloadError(f"download of {url} failed after {received} bytes: {err}") from err

        with network(lambda: urllib.request.urlopen(url, timeout=timeout)) as response:
            announced = response.headers.get("Content-Length")
            while chunk := network(lambda: response.read(_CHUNK)):
                f.write(chunk)  # a full disk here is atomic_write's WriteError, naming dest
                digest.update(chunk)
                received += len(chunk)
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
