"""A toy index backend registered from outside the package: rows in a process-wide dict.

Enough for ``index build`` / ``index search`` / ``index info`` in one process (the CLI called
in-process by the tests): :func:`hpsh_tf2.index.backend.open_index` gets a fresh object per
call, the rows outlive it in :data:`STORES`. Search is brute force with ``np.unpackbits``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from hpsh_tf2.errors import ModelMismatchError
from hpsh_tf2.index.backend import ArchiveIndexError, IndexHit, filter_mask
from hpsh_tf2.registry import INDEX_BACKENDS

STORES: dict[tuple[str, str], dict[str, Any]] = {}
"""``(uri, collection) -> {"record": ModelRecord, "rows": {path: (code, class, size, mtime)}}``"""


class ToyIndex:
    """The :class:`hpsh_tf2.index.backend.IndexBackend` protocol over a dict."""

    def __init__(self, uri: str, collection: str = "hpsh", *, read_only: bool = False) -> None:
        self.uri, self.collection, self.read_only = uri, collection, read_only
        self.key = (uri, collection)

    @staticmethod
    def resolve_uri(uri: str | None, workdir: str | os.PathLike[str]) -> str:
        return uri or str(Path(workdir) / "toy.index")

    @property
    def where(self) -> str:
        return f"toy {self.uri} ({self.collection})"

    def __enter__(self) -> ToyIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        pass

    def exists(self) -> bool:
        return self.key in STORES

    def open_for(self, record, **create_options) -> bool:
        if self.exists():
            if self.record() != record:
                raise ModelMismatchError(f"{self.where} holds another model's codes")
            return False
        STORES[self.key] = {"record": record, "rows": {}}
        return True

    def record(self):
        if not self.exists():
            raise ArchiveIndexError(f"no index at {self.where}")
        return STORES[self.key]["record"]

    def _rows(self) -> dict[str, tuple]:
        self.record()
        return STORES[self.key]["rows"]

    def upsert(self, paths, packed, classes, sizes, mtimes_ns) -> int:
        rows = self._rows()
        for path, code, klass, size, mtime in zip(paths, packed, classes, sizes, mtimes_ns):
            rows[path] = (np.array(code, np.uint8), klass, int(size), int(mtime))
        return len(paths)

    def remove(self, paths) -> int:
        for path in paths:
            self._rows().pop(path, None)
        return len(paths)

    def count(self) -> int:
        return len(self._rows())

    def fingerprints(self) -> dict[str, tuple[int, int]]:
        return {p: (r[2], r[3]) for p, r in self._rows().items()}

    def row_classes(self) -> dict[str, str]:
        return {p: r[1] for p, r in self._rows().items()}

    def class_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self._rows().values():
            counts[row[1]] = counts.get(row[1], 0) + 1
        return counts

    def search(self, packed, *, top=10, filters=None, **options):
        if options:
            raise ArchiveIndexError(f"toy index: no options {sorted(options)}")
        rows = self._rows()
        paths = np.array(sorted(rows), dtype=str)
        columns = {
            "path": paths,
            "class": np.array([rows[p][1] for p in paths], dtype=str),
            "size": np.array([rows[p][2] for p in paths], np.int64),
            "mtime_ns": np.array([rows[p][3] for p in paths], np.int64),
        }
        mask = filter_mask(filters, columns)
        keep = np.arange(len(paths)) if mask is None else np.flatnonzero(mask)
        db = np.unpackbits(np.stack([rows[p][0] for p in paths[keep]]), axis=1)
        out = []
        for query in np.unpackbits(np.asarray(packed, np.uint8), axis=1):
            dist = (db != query).sum(axis=1)
            order = np.lexsort((paths[keep], dist))[:top]
            out.append(
                [
                    IndexHit(rank + 1, int(dist[i]), str(paths[keep][i]), columns["class"][keep][i])
                    for rank, i in enumerate(order)
                ]
            )
        return out


INDEX_BACKENDS.register("toy_dict", ToyIndex)

NAMES = {INDEX_BACKENDS: ("toy_dict",)}
"""What this module registers (tests unregister it afterwards)."""
