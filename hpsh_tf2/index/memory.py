"""The in-memory archive index (``index.backend: memory``): arrays, exact search, one ``.npz``.

The rows live in NumPy arrays sorted by path; a search is the project's exact Hamming k-NN
(:func:`hpsh_tf2.evaluation.search.search`, TensorFlow backend by default), so ties come out by
path, as from Milvus. Every write (:meth:`MemoryIndex.upsert`, :meth:`MemoryIndex.remove`)
rewrites the ``.npz`` file under a temporary name and renames it (:mod:`hpsh_tf2.atomic`):
a batch lands whole or not at all, and the next CLI call (or a build after ``kill -9``) reads
exactly the batches that landed. One file may hold several collections (arrays prefixed with
the collection's name).

Meant for small archives (every write is ``O(rows)``) and for tests: no server, no extra
dependency. One writer at a time.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hpsh_tf2.atomic import atomic_path
from hpsh_tf2.evaluation.search import search
from hpsh_tf2.index.backend import ArchiveIndexError, Filters, IndexHit, filter_mask
from hpsh_tf2.index.encoder import ModelRecord, check_same_model
from hpsh_tf2.layout import RunLayout

__all__ = ["MemoryIndex"]

_COLUMNS = ("paths", "codes", "classes", "sizes", "mtimes_ns")


def _empty_columns(width: int) -> dict[str, np.ndarray]:
    return {
        "paths": np.array([], dtype=str),
        "codes": np.zeros((0, width), np.uint8),
        "classes": np.array([], dtype=str),
        "sizes": np.zeros(0, np.int64),
        "mtimes_ns": np.zeros(0, np.int64),
    }


class MemoryIndex:
    """One collection of an ``.npz`` index file, held in memory.

    Args:
        uri: The ``.npz`` file (see :meth:`resolve_uri`); created by the first write.
        collection: Collection name.
        search_backend: ``eval.backend``-style name of the exact search
            (:data:`hpsh_tf2.registry.SEARCH_BACKENDS`).
        read_only: Open for ``search``/``info`` only (the protocol's flag; an ``.npz`` file is
            read whole and never locked, so nothing differs).
    """

    def __init__(
        self,
        uri: str,
        collection: str = "hpsh",
        *,
        search_backend: str = "tf",
        read_only: bool = False,
    ) -> None:
        del read_only
        self.uri = str(uri)
        self.collection = collection
        self.search_backend = search_backend
        self._record: ModelRecord | None = None
        self._columns: dict[str, np.ndarray] | None = None
        self._load()

    @staticmethod
    def resolve_uri(uri: str | None, workdir: str | os.PathLike[str]) -> str:
        """``uri`` as an absolute ``.npz`` path (``<workdir>/index.npz`` when None); its folder
        is created.

        Raises:
            ArchiveIndexError: A server URI or a name not ending in ``.npz``.
        """
        if uri is None:
            uri = str(RunLayout(workdir).index_npz)
        if "://" in uri or not uri.endswith(".npz"):
            raise ArchiveIndexError(
                f"Received: index.uri={uri!r} with index.backend=memory; expected a file name "
                "ending in .npz"
            )
        path = Path(os.path.abspath(uri))
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(path)

    # ----------------------------------------------------------------- file

    def _key(self, name: str) -> str:
        return f"{self.collection}.{name}"

    def _read_file(self) -> dict[str, np.ndarray]:
        """Every array of the file (``{}`` if it does not exist)."""
        if not os.path.exists(self.uri):
            return {}
        try:
            with np.load(self.uri, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise ArchiveIndexError(
                f"cannot read the memory index {self.uri}: {err}; expected an .npz file "
                "written by index.backend=memory"
            ) from None

    def _load(self) -> None:
        arrays = self._read_file()
        if self._key("record") not in arrays:
            self._record, self._columns = None, None
            return
        self._record = ModelRecord.from_json(str(arrays[self._key("record")]))
        self._columns = {name: arrays[self._key(name)] for name in _COLUMNS}

    def _save(self) -> None:
        """Rewrites the file with this collection's arrays (other collections kept)."""
        if self._record is None or self._columns is None:
            raise ArchiveIndexError(f"no collection at {self.where} to write")
        prefix = f"{self.collection}."
        arrays = {k: v for k, v in self._read_file().items() if not k.startswith(prefix)}
        arrays[self._key("record")] = np.array(self._record.to_json())
        arrays.update({self._key(name): value for name, value in self._columns.items()})
        with atomic_path(self.uri, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)

    # ----------------------------------------------------------------- lifecycle

    @property
    def where(self) -> str:
        """``<uri> (collection 'name')``, for messages."""
        return f"{self.uri} (collection {self.collection!r})"

    def close(self) -> None:
        """Nothing to release (every write is already on disk)."""
        self._columns = None
        self._record = None

    def __enter__(self) -> MemoryIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def exists(self) -> bool:
        """Whether the collection exists in the file."""
        return self._record is not None

    def open_for(self, record: ModelRecord, *, index_type: str = "BIN_FLAT", **_: Any) -> bool:
        """Opens the collection for ``record``'s model, creating it (on disk) if missing.

        Raises:
            ModelMismatchError: The collection holds another model's codes.
            ArchiveIndexError: ``index_type`` other than ``BIN_FLAT`` (the search is exact).
        """
        if index_type != "BIN_FLAT":
            raise ArchiveIndexError(
                f"Received: index.index_type={index_type!r} with index.backend=memory; expected "
                "BIN_FLAT (the memory index searches exactly)"
            )
        if self.exists():
            check_same_model(self.record(), record, where=self.where)
            return False
        self._record = record
        self._columns = _empty_columns(record.bits // 8)
        self._save()
        return True

    def record(self) -> ModelRecord:
        """The record of the model the codes were computed with.

        Raises:
            ArchiveIndexError: No such collection.
        """
        if self._record is None:
            raise self._missing()
        return self._record

    def _rows(self) -> dict[str, np.ndarray]:
        if self._columns is None:
            raise self._missing()
        return self._columns

    def _missing(self) -> ArchiveIndexError:
        return ArchiveIndexError(
            f"no index at {self.where}; build one first: python cli.py index build "
            "--config FILE --images DIR --set index.backend=memory"
        )

    # ----------------------------------------------------------------- writing

    def upsert(
        self,
        paths: Sequence[str],
        packed: np.ndarray,
        classes: Sequence[str],
        sizes: Sequence[int],
        mtimes_ns: Sequence[int],
    ) -> int:
        """Adds or replaces rows keyed by path (the last of repeated paths wins); saves."""
        rows = self._rows()
        width = self.record().bits // 8
        packed = np.ascontiguousarray(packed, np.uint8)
        if packed.shape != (len(paths), width):
            raise ArchiveIndexError(
                f"Received: codes of shape {packed.shape} for {len(paths)} paths; expected "
                f"({len(paths)}, {width}) packed {width * 8}-bit codes"
            )
        if not len(paths):
            return 0
        new = {
            "paths": np.asarray(list(paths), dtype=str),
            "codes": packed,
            "classes": np.asarray(list(classes), dtype=str),
            "sizes": np.asarray(sizes, np.int64),
            "mtimes_ns": np.asarray(mtimes_ns, np.int64),
        }
        merged = {name: np.concatenate([rows[name], new[name]]) for name in _COLUMNS}
        # np.unique sorts by path; on the reversed rows it keeps each path's last occurrence.
        reversed_paths = merged["paths"][::-1]
        _, first = np.unique(reversed_paths, return_index=True)
        keep = len(reversed_paths) - 1 - first
        self._columns = {name: merged[name][keep] for name in _COLUMNS}
        self._save()
        return len(paths)

    def remove(self, paths: Sequence[str]) -> int:
        """Removes rows by path (absent paths are no error); saves."""
        rows = self._rows()
        paths = list(paths)
        if not paths:
            return 0
        keep = ~np.isin(rows["paths"], np.asarray(paths, dtype=str))
        if not keep.all():
            self._columns = {name: rows[name][keep] for name in _COLUMNS}
            self._save()
        return len(paths)

    # ----------------------------------------------------------------- reading

    def count(self) -> int:
        """Rows in the collection."""
        return len(self._rows()["paths"])

    def fingerprints(self) -> dict[str, tuple[int, int]]:
        """``{path: (size, mtime_ns)}`` of every row."""
        rows = self._rows()
        return {
            str(p): (int(s), int(m))
            for p, s, m in zip(rows["paths"], rows["sizes"], rows["mtimes_ns"], strict=True)
        }

    def class_counts(self) -> dict[str, int]:
        """Rows per stored ``class`` text (``""``: no class)."""
        names, counts = np.unique(self._rows()["classes"], return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts, strict=True)}

    def row_classes(self) -> dict[str, str]:
        """``{path: class}`` of every row."""
        rows = self._rows()
        return {str(p): str(c) for p, c in zip(rows["paths"], rows["classes"], strict=True)}

    def search(
        self,
        packed: np.ndarray,
        *,
        top: int = 10,
        filters: Filters | None = None,
        **options: Any,
    ) -> list[list[IndexHit]]:
        """The ``top`` nearest rows (exact Hamming) of each query that pass ``filters``.

        Ties are ordered by path (the rows are kept sorted by path and the search breaks ties
        by row). Fewer than ``top`` rows give that many hits.

        Raises:
            ArchiveIndexError: Codes of another length, ``top`` < 1, bad filters, or a
                backend-specific option (Milvus' ``filter`` expression, ``nprobe``).
        """
        if options:
            raise ArchiveIndexError(
                f"Received: search option(s) {', '.join(sorted(options))} with "
                "index.backend=memory; expected none (a Milvus filter expression has a "
                "structured equivalent: --where FIELD=VALUE)"
            )
        rows = self._rows()
        width = self.record().bits // 8
        packed = np.ascontiguousarray(packed, np.uint8)
        if packed.ndim != 2 or packed.shape[1] != width:
            raise ArchiveIndexError(
                f"Received: query codes of shape {packed.shape}; expected [Q, {width}] "
                f"packed {width * 8}-bit codes (the index's model)"
            )
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise ArchiveIndexError(f"Received: top={top!r}; expected a positive integer")
        columns = {
            "path": rows["paths"],
            "class": rows["classes"],
            "size": rows["sizes"],
            "mtime_ns": rows["mtimes_ns"],
        }
        mask = filter_mask(filters, columns)
        ids = np.arange(len(rows["paths"])) if mask is None else np.flatnonzero(mask)
        if packed.shape[0] == 0:
            return []
        k = min(top, len(ids))
        if k == 0:
            return [[] for _ in range(packed.shape[0])]
        result = search(packed, rows["codes"][ids], k=k, packed=True, backend=self.search_backend)
        found = ids[result.indices]
        return [
            [
                IndexHit(
                    rank=rank + 1,
                    distance=int(distance),
                    path=str(rows["paths"][row]),
                    class_name=str(rows["classes"][row]),
                    size=int(rows["sizes"][row]),
                    mtime_ns=int(rows["mtimes_ns"][row]),
                )
                for rank, (row, distance) in enumerate(zip(hits, dists, strict=True))
            ]
            for hits, dists in zip(found, result.distances, strict=True)
        ]
