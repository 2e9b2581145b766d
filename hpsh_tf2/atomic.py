"""Atomic file writes: write to a temporary name in the target folder, then rename.

A reader never sees a half-written file, and a failure leaves the previous file (or nothing)
in place. Files get the mode any other tool would give them (``0o666`` less the umask), not the
``0600`` of :func:`tempfile.mkstemp`. This module imports nothing else of the package.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_path",
    "current_umask",
    "save_npy_atomic",
    "save_npz_atomic",
    "write_json_atomic",
    "write_text_atomic",
]


def current_umask() -> int:
    """The process umask (read from ``/proc`` where possible, so it is never changed)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renames it onto ``path`` if the block succeeds.

    Args:
        path: The final file.
        suffix: Suffix of the temporary name (some writers insist on one, e.g. ``.npz``).

    Yields:
        The temporary path to write.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Writes UTF-8 text atomically and returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, payload: Any, *, indent: int = 1) -> Path:
    """Writes JSON atomically and returns the path."""
    return write_text_atomic(path, json.dumps(payload, indent=indent))


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Saves one array as ``.npy`` atomically and returns the path."""
    with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)
    return Path(path)


def save_npz_atomic(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Saves compressed named arrays as ``.npz`` atomically and returns the path."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    return Path(path)
