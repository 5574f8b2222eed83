"""The library's own errors: bad configuration and bad files, each in one line that names what is wrong.

Everything jaxcnn raises about what it was *given* -- an argument, a flag, a combination of them, a file,
a download -- is a :class:`JaxcnnError`; ``jaxcnn`` (the command) prints such an error as one line and
exits with status 2. Any other exception is a bug somewhere and keeps its traceback (as in
``flax.errors``). Each kind also derives from the builtin a caller would catch without knowing jaxcnn
(``ValueError``, ``TypeError``, ``FileNotFoundError``, ``OSError``), so ``except ValueError`` still works.

- :class:`ConfigError` (``ValueError``): a value out of range, an unknown choice, arguments that do not fit
  together;
- :class:`ConfigTypeError` (``TypeError``): an argument of the wrong type;
- :class:`FileFormatError` (``ValueError``): a file that is damaged or does not fit what it is loaded into
  (checkpoints, weights, IDX files, datasets);
- :class:`DataNotFoundError` (``FileNotFoundError``): a dataset or weights file that is not there;
- :class:`DownloadError` (``OSError``): a failed or unverifiable download;
- :class:`WriteError` (``OSError``): a file that could not be written;
- :class:`MissingDependencyError` (``ImportError``): an optional package that a feature needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "JaxcnnError",
    "ConfigError",
    "ConfigTypeError",
    "FileFormatError",
    "DataNotFoundError",
    "DownloadError",
    "WriteError",
    "MissingDependencyError",
    "unknown_choice",
]


class JaxcnnError(Exception):
    """Bad configuration or a bad file: the message names the argument, flag or file and what is wrong."""


class ConfigError(JaxcnnError, ValueError):
    """A value out of range, an unknown choice, or arguments that do not fit together."""


class ConfigTypeError(JaxcnnError, TypeError):
    """An argument of the wrong type."""


class FileFormatError(JaxcnnError, ValueError):
    """A file that is damaged, or that does not fit what it is loaded into."""


class DataNotFoundError(JaxcnnError, FileNotFoundError):
    """A dataset or weights file that is not where it was looked for (the message lists the places)."""


class DownloadError(JaxcnnError, OSError):
    """A download failed: HTTP error, connection problem, fewer bytes than announced, wrong checksum."""


class WriteError(JaxcnnError, OSError):
    """A file could not be written (disk full, permissions, ...); the previous version is intact."""


class MissingDependencyError(JaxcnnError, ImportError):
    """An optional package that a dataset, a weights format or a feature needs is not installed (the
    message says how to install it)."""


def unknown_choice(what: str, value: Any, choices: Iterable[Any]) -> ConfigError:
    """``Unknown <what>: <value>. It needs to be one of [...]`` (optax's wording), to raise."""
    return ConfigError(f"Unknown {what}: {value!r}. It needs to be one of {list(choices)}")
