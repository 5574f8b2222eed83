r"""The IDX file format (MNIST, Fashion-MNIST), plain or gzip-compressed, parsed strictly.

Layout, all integers big-endian::

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions d (>= 1)
    4 * d       the dimensions, one uint32 each
    payload     prod(dims) elements of that type, big-endian, C order -- and nothing after it

So the 32-bit magic number is ``(type << 8) | d``: 2051 = 0x00000803 for a uint8 image stack
``(N, rows, cols)`` and 2049 = 0x00000801 for a uint8 label vector ``(N,)``.

Every check failure raises :class:`IDXFormatError` naming the file: a bad gzip stream, an unknown type
or wrong magic, a header cut short, a payload shorter than the header promises (a truncated file) or
longer (trailing bytes). A damaged file never parses into a silently shorter array.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ConfigTypeError, FileFormatError

__all__ = [
    "IDXFormatError",
    "IMAGES_MAGIC",
    "LABELS_MAGIC",
    "parse_idx",
    "read_idx",
    "encode_idx",
]

IMAGES_MAGIC = 0x00000803  # 2051: uint8, 3 dimensions (N, rows, cols)
LABELS_MAGIC = 0x00000801  # 2049: uint8, 1 dimension (N,)

# IDX type code -> big-endian numpy dtype.
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class IDXFormatError(FileFormatError):
    """An IDX file (or its gzip wrapper) is malformed, truncated or not the kind expected."""


def _describe_magic(magic: int) -> str:
    type_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    kind = _DTYPES[type_code].name if type_code in _DTYPES else f"unknown type 0x{type_code:02X}"
    return f"0x{magic:08X} ({magic}: {kind}, {ndim} dims)"


def parse_idx(data: bytes, *, source: str = "<bytes>", expected_magic: int | None = None) -> np.ndarray:
    """Decode uncompressed IDX bytes into a native-endian array of the file's shape.

    ``source`` names the data in error messages; ``expected_magic`` (e.g. :data:`IMAGES_MAGIC`)
    rejects a file of another type or rank.
    """
    if len(data) < 4:
        raise IDXFormatError(f"{source}: IDX header needs at least 4 bytes, the file has {len(data)}")
    (magic,) = struct.unpack(">I", data[:4])
    if expected_magic is not None and magic != expected_magic:
        raise IDXFormatError(
            f"{source}: bad magic number {_describe_magic(magic)}, expected {_describe_magic(expected_magic)}"
        )
    if magic >> 16 != 0:
        raise IDXFormatError(f"{source}: bad magic number 0x{magic:08X}: the first two bytes must be zero")
    type_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    if type_code not in _DTYPES:
        raise IDXFormatError(f"{source}: unknown IDX element type 0x{type_code:02X} in magic 0x{magic:08X}")
    if ndim == 0:
        raise IDXFormatError(f"{source}: magic 0x{magic:08X} declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXFormatError(
            f"{source}: header declares {ndim} dimensions ({header} header bytes), the file has {len(data)} bytes"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual < expected:
        raise IDXFormatError(
            f"{source}: truncated: shape {shape} needs {expected} payload bytes, the file has {actual}"
        )
    if actual > expected:
        raise IDXFormatError(
            f"{source}: {actual - expected} trailing bytes after the {expected}-byte payload of shape {shape}"
        )
    flat = np.frombuffer(data, dtype=dtype, offset=header)
    return flat.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def read_idx(path: str | os.PathLike, *, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file from ``path``; gzip compression is detected from the content, not the name."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
            raise IDXFormatError(f"{path}: corrupt or truncated gzip data: {err}") from err
    elif path.suffix == ".gz":
        raise IDXFormatError(f"{path}: named .gz but does not start with the gzip magic bytes 1f 8b")
    return parse_idx(raw, source=str(path), expected_magic=expected_magic)


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of ``array`` (uint8, int8, int16, int32, float32 or float64; at least 1-D)."""
    array = np.asarray(array)
    codes = {dt.newbyteorder("=").name: code for code, dt in _DTYPES.items()}
    if array.dtype.name not in codes:
        raise ConfigTypeError(f"encode_idx: dtype {array.dtype} has no IDX type code (valid: {sorted(codes)})")
    if array.ndim == 0 or array.ndim > 255:
        raise ConfigError(f"encode_idx: array must have 1 to 255 dimensions, got shape {array.shape}")
    code = codes[array.dtype.name]
    header = struct.pack(">I", (code << 8) | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()
