"""Where benchmark results go, and the machine/library facts every JSON file records.

Each benchmark writes ``<name>.json`` into ``--out DIR``; without it, into ``benchmarks/results/``
under the current directory (``benchmarks/results/quick/`` for ``--quick`` runs, so a quick check never
overwrites a calm measurement): run from the repository root, that is the folder whose results
``benchmarks/README.md`` quotes. ``--json PATH`` names the file itself.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
from pathlib import Path

from .._files import atomic_write_bytes

RESULTS_DIR = Path("benchmarks") / "results"  # relative to the current directory


def default_dir(quick: bool) -> Path:
    return RESULTS_DIR / "quick" if quick else RESULTS_DIR


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--out", metavar="DIR", default=None, help="directory for the JSON (default benchmarks/results[/quick])"
    )
    group.add_argument("--json", metavar="PATH", default=None, help="write the JSON to this file instead")


def json_path(args: argparse.Namespace, name: str) -> Path:
    """``--json``, else ``--out``/``name``.json, else the default directory's ``name``.json."""
    if args.json:
        return Path(args.json)
    return Path(args.out or default_dir(getattr(args, "quick", False))) / f"{name}.json"


def library_versions() -> dict:
    """Installed versions of jax, flax and torch (None when not installed), read without importing them."""
    versions = {}
    for name in ("jax", "flax", "torch"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine() -> dict:
    """The machine, the date, and the ``XLA_FLAGS`` this process was started with (XLA:CPU's route)."""
    return {
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def write_json(path: Path, payload: dict) -> Path:
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(payload, indent=1) + "\n").encode())
    print(f"wrote {path}", flush=True)
    return path
