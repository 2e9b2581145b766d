"""The archive index: a Milvus collection of binary codes with metadata, searched by Hamming.

One row per image file: ``id`` (the int64 primary key, :func:`row_id` of the path), ``path``
(relative to the archive root), ``code`` (a ``BINARY_VECTOR`` of the model's bits), ``class``
(first folder under the root, ``""`` if none; or the labels from a list of images joined by
``;``, ``"Forest;River"``, at most :data:`MAX_CLASS_BYTES` UTF-8 bytes), ``size`` and
``mtime_ns`` (the fingerprint an incremental build compares).

No file name, class name or user value is ever spliced into a Milvus expression: rows are
written, read, deleted and paged through by their integer ``id`` only (an ``in [...]`` list of
integers is the only expression this module builds). Milvus Lite 2.5 rejects ``filter_params``
templates, so binding string values is not an option there; integer keys need no escaping.
The other expressions are the user's own ``--filter`` text and the structured ``--where``
filters, whose values pass through :func:`milvus_literal` (the one escaping helper); a
``class`` value is also matched as one label of a multi-label row (``"Forest;River"``) with
``like`` patterns that hold no escape at all (:func:`milvus_filter`), and every hit is checked
again in Python (:func:`hpsh_tf2.index.backend.class_matches`). The
collection's description holds the :class:`hpsh_tf2.index.encoder.ModelRecord` of the model
the codes were computed with; opening it with another model is refused.

The URI selects the deployment: a local file path (default ``<workdir>/index.db``) runs Milvus
Lite in-process (pip package ``milvus-lite``; ``BIN_FLAT`` only), ``http://host:19530`` talks
to a Milvus standalone or distributed cluster (``BIN_FLAT`` or ``BIN_IVF_FLAT``). The same
code runs against both. Rows are written with ``upsert`` (keyed by the path's id, so a retried batch
never duplicates a row) and the collection uses ``Strong`` consistency, so a build reads back
what it wrote.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hpsh_tf2.index.backend import (
    FILTER_FIELDS,
    LABEL_SEPARATOR,
    ArchiveIndexError,
    Filters,
    IndexHit,
    Range,
    check_filters,
    filter_mask,
)
from hpsh_tf2.index.encoder import ModelRecord, check_same_model
from hpsh_tf2.index.walk import MAX_PATH_BYTES
from hpsh_tf2.layout import RunLayout

logger = logging.getLogger(__name__)

__all__ = [
    "ArchiveIndexError",
    "IndexHit",
    "IndexStore",
    "disk_full",
    "disk_full_error",
    "is_local_uri",
    "milvus_filter",
    "milvus_literal",
    "resolve_uri",
    "row_id",
]

ID_FIELD = "id"
CODE_FIELD = "code"
PATH_FIELD = "path"
CLASS_FIELD = "class"
META_FIELDS = ("path", "class", "size", "mtime_ns")
MAX_CLASS_BYTES = 512
MAX_TOPK = 16384  # Milvus' limit on k (and on query offset + limit)
_LOCAL_INDEX_TYPES = ("BIN_FLAT",)
_LOCAL_CONNECT_ATTEMPTS = 6  # pauses of 1, 2, 4, 8, 8 s
_LOCAL_OPEN: dict[str, int] = {}  # open IndexStores per Milvus Lite file, in this process
_INDEX_TYPES = ("BIN_FLAT", "BIN_IVF_FLAT")
_DISK_FULL_BYTES = 1 << 20  # a failed write with less free space than this: the disk is full


def row_id(path: str) -> int:
    """The int64 primary key of a relative path: the first 63 bits of its BLAKE2b digest.

    Stable across processes and platforms; two of 10 million paths collide with probability
    about 5e-6 (birthday bound n^2 / 2^64), and a build refuses such a pair by name.
    """
    digest = hashlib.blake2b(path.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)


def disk_full(folder: str | os.PathLike[str]) -> bool:
    """Whether the file system holding ``folder`` has (almost) no space left for this user."""
    try:
        stat = os.statvfs(folder)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < _DISK_FULL_BYTES


def disk_full_error(err: OSError, path: str | os.PathLike[str]) -> ArchiveIndexError | None:
    """``disk full writing <path>`` for an ``ENOSPC``/``EDQUOT`` error, else None."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return ArchiveIndexError(f"disk full writing {os.fspath(path)}")
    return None


def is_local_uri(uri: str) -> bool:
    """Whether ``uri`` is a Milvus Lite file (not ``http(s)://``, ``tcp://``, ``unix:``)."""
    return "://" not in uri and not uri.startswith("unix:")


def resolve_uri(uri: str | None, workdir: str | os.PathLike[str]) -> str:
    """The index URI: ``uri`` as given, or ``<workdir>/index.db`` when it is None.

    A local file URI is made absolute and its folder is created.
    """
    if uri is None:
        uri = str(RunLayout(workdir).index_db)
    if is_local_uri(uri):
        if not uri.endswith(".db"):
            raise ArchiveIndexError(
                f"Received: index.uri={uri!r}; expected a Milvus Lite file name ending in .db, "
                "or a server URI (http://host:19530)"
            )
        path = Path(os.path.abspath(uri))
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(path)
    return uri


class _DropClientTimestampNotice(logging.Filter):
    """Milvus Lite has no server timestamp for query iterators; pymilvus warns every time."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to get mvccTs" not in record.getMessage()


def _milvus() -> Any:
    try:
        import pymilvus
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ArchiveIndexError(
            "the archive index needs pymilvus and milvus-lite: pip install 'hpsh-tf2[index]'"
        ) from err
    # pymilvus logs every failed call with its traceback at ERROR; the failures that reach a
    # user are reported once, as one line, by IndexStore.
    logging.getLogger("pymilvus.decorators").setLevel(logging.CRITICAL)
    iterator_logger = logging.getLogger("pymilvus.orm.iterator")
    if not any(isinstance(f, _DropClientTimestampNotice) for f in iterator_logger.filters):
        iterator_logger.addFilter(_DropClientTimestampNotice())
    return pymilvus


def _stop_local_server(path: str, *, grace_s: float = 120.0) -> None:
    """Stops the Milvus Lite server of a file and waits until it has exited by itself.

    milvus-lite's own ``release_server`` (and its exit handler) frees the file lock, which tells
    the server to flush and exit, but SIGKILLs it after 2 s: on a busy machine that can be
    before it flushed. Here the lock is freed first and the server gets ``grace_s`` to exit.
    """
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:  # pragma: no cover - milvus-lite is what opened it
        return
    server = server_manager_instance._servers.get(str(Path(path).absolute().resolve()))
    if server is None:
        return
    lock_fd = getattr(server, "_lock_fd", None)
    process = getattr(server, "_p", None)
    if lock_fd is not None and process is not None:
        lock_fd.close()  # the server exits when its lock is released
        server._lock_fd = None
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            logger.warning("Milvus Lite server of %s did not exit in %.0f s", path, grace_s)
    server_manager_instance.release_server(path)


def _served_here(path: str) -> bool:
    """Whether this process runs a Milvus Lite server for ``path`` (a POSIX ``lockf`` lock is
    released when any descriptor of the file closes in the holding process)."""
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:  # pragma: no cover - milvus-lite is what serves local files
        return False
    return str(Path(path).absolute().resolve()) in server_manager_instance._servers


def _lite_unavailable(path: str) -> bool:
    """Whether Milvus Lite cannot serve ``path`` to this process: another process has it open
    (Milvus Lite's own ``lockf`` on ``.<name>.lock`` is held) or its folder is read-only."""
    if os.path.realpath(path) in _LOCAL_OPEN or _served_here(path):
        return False  # served by this process; probing its POSIX lock would release it
    lock = Path(path).with_name(f".{Path(path).name}.lock")
    try:
        handle = open(lock, "a")
    except OSError:
        return True
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        handle.close()  # releases the probe's lock (the empty file is Milvus Lite's own)
    return False


def _snapshot(path: str) -> str:
    """A consistent copy of a Milvus Lite file in a new temporary folder (SQLite's online
    backup: it waits out a writer's transaction and restarts if the source changes)."""
    folder = tempfile.mkdtemp(prefix="hpsh-index-")
    copy = os.path.join(folder, "snapshot.db")
    try:
        source = sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True, timeout=60)
        try:
            target = sqlite3.connect(copy)
            try:
                source.backup(target)
            finally:
                target.close()
        finally:
            source.close()
    except (sqlite3.Error, OSError) as err:
        shutil.rmtree(folder, ignore_errors=True)
        raise ArchiveIndexError(f"cannot read the index {path}: {err}") from err
    return copy


class IndexStore:
    """A Milvus collection of codes plus the record of the model that made them.

    A reader (``read_only=True``) of a Milvus Lite file that another process has open (a build
    running) or that lies in a read-only folder reads a snapshot copied to a temporary folder,
    so searches and ``index info`` never wait for a writer nor need to write beside the index.

    Args:
        uri: Milvus Lite file path or server URI (see :func:`resolve_uri`).
        collection: Collection name.
        token: Optional ``user:password`` or API token for a server.
        read_only: This store only reads (search, info).
    """

    build_source = "--images DIR"
    """What ``index build`` is given to make this collection (for the "no index" message)."""

    def __init__(
        self,
        uri: str,
        collection: str = "hpsh",
        *,
        token: str | None = None,
        read_only: bool = False,
    ) -> None:
        pymilvus = _milvus()
        self.uri = uri
        self.collection = collection
        kwargs = {"token": token} if token else {}
        self._client: Any = None
        self._snapshot: str | None = None
        if read_only and is_local_uri(uri):
            if not Path(uri).is_file():
                raise ArchiveIndexError(
                    f"no index at {self.where}; build one first: python cli.py index build "
                    f"--config FILE {self.build_source}"
                )
            if _lite_unavailable(uri):
                self._snapshot = _snapshot(uri)
                logger.info("index %s is busy or read-only; reading a snapshot", uri)
        served = self._snapshot or uri
        # A Milvus Lite server may not listen yet when pymilvus first connects (on a busy
        # machine); it keeps starting, so connecting again after a pause is enough.
        attempts = _LOCAL_CONNECT_ATTEMPTS if is_local_uri(uri) else 1
        for attempt in range(attempts):
            try:
                self._client = pymilvus.MilvusClient(uri=served, **kwargs)
                break
            except pymilvus.MilvusException as err:
                if attempt + 1 < attempts:
                    logger.info("Milvus Lite at %s not ready yet (%s); retrying", uri, err)
                    time.sleep(min(2.0**attempt, 8.0))
                    continue
                self._drop_snapshot()
                raise ArchiveIndexError(
                    f"cannot open the index at {uri!r}: {err.message}; expected a Milvus Lite "
                    "file path ending in .db or the URI of a running Milvus server "
                    "(http://host:19530)"
                ) from err
        if is_local_uri(uri):
            key = os.path.realpath(served)
            _LOCAL_OPEN[key] = _LOCAL_OPEN.get(key, 0) + 1
        self._record: ModelRecord | None = None

    # ----------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Closes the connection; the last one closed on a Milvus Lite file stops its server
        (pymilvus would keep it, and its file lock, until the process exits)."""
        if self._client is None:
            return
        self._client.close()
        self._client = None
        if is_local_uri(self.uri):
            key = os.path.realpath(self._snapshot or self.uri)
            _LOCAL_OPEN[key] -= 1
            if _LOCAL_OPEN[key] == 0:
                del _LOCAL_OPEN[key]
                _stop_local_server(key)
        self._drop_snapshot()

    def _drop_snapshot(self) -> None:
        if self._snapshot is not None:
            shutil.rmtree(os.path.dirname(self._snapshot), ignore_errors=True)
            self._snapshot = None

    def __enter__(self) -> IndexStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turns a failed write into one line: ``disk full writing <file>`` when the index's
        file system is full (Milvus Lite only says ``internal error``), else Milvus' message."""
        try:
            yield
        except _milvus().MilvusException as err:
            if is_local_uri(self.uri) and disk_full(os.path.dirname(self.uri)):
                raise ArchiveIndexError(f"disk full writing {self.uri}") from None
            raise ArchiveIndexError(f"cannot write to {self.where}: {err.message}") from None

    @property
    def where(self) -> str:
        """``<uri> collection <name>``, for messages."""
        return f"{self.uri} (collection {self.collection!r})"

    def exists(self) -> bool:
        """Whether the collection exists."""
        return bool(self._client.has_collection(self.collection))

    def create(
        self, record: ModelRecord, *, index_type: str = "BIN_FLAT", nlist: int = 1024
    ) -> None:
        """Creates the collection for ``record``'s codes.

        Raises:
            ArchiveIndexError: An index type this deployment does not support.
        """
        pymilvus = _milvus()
        allowed = _LOCAL_INDEX_TYPES if is_local_uri(self.uri) else _INDEX_TYPES
        if index_type not in allowed:
            raise ArchiveIndexError(
                f"Received: index.index_type={index_type!r} for {self.where}; expected one of "
                f"{', '.join(allowed)}"
                + (
                    " (Milvus Lite supports BIN_FLAT only; use a server URI for IVF)"
                    if is_local_uri(self.uri)
                    else ""
                )
            )
        schema = pymilvus.MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=False, description=record.to_json()
        )
        data_type = pymilvus.DataType
        schema.add_field(ID_FIELD, data_type.INT64, is_primary=True)
        schema.add_field(PATH_FIELD, data_type.VARCHAR, max_length=MAX_PATH_BYTES)
        schema.add_field(CODE_FIELD, data_type.BINARY_VECTOR, dim=record.bits)
        schema.add_field(CLASS_FIELD, data_type.VARCHAR, max_length=MAX_CLASS_BYTES)
        schema.add_field("size", data_type.INT64)
        schema.add_field("mtime_ns", data_type.INT64)
        params = self._client.prepare_index_params()
        extra = {"nlist": int(nlist)} if index_type == "BIN_IVF_FLAT" else {}
        params.add_index(
            field_name=CODE_FIELD, index_type=index_type, metric_type="HAMMING", params=extra
        )
        with self._writing():
            self._client.create_collection(
                self.collection, schema=schema, index_params=params, consistency_level="Strong"
            )
        self._record = record

    def record(self) -> ModelRecord:
        """The record of the model the collection was built with.

        Raises:
            ArchiveIndexError: No such collection, or not an hpsh index.
        """
        if self._record is None:
            if not self.exists():
                raise ArchiveIndexError(
                    f"no index at {self.where}; build one first: python cli.py index build "
                    f"--config FILE {self.build_source}"
                )
            described = self._client.describe_collection(self.collection)
            description = described.get("description")
            try:
                record = ModelRecord.from_json(description)
            except (TypeError, ValueError, KeyError) as err:
                raise ArchiveIndexError(
                    f"collection at {self.where} has no hpsh model record in its description "
                    f"(received {description!r}); expected a collection made by `index build`"
                ) from err
            primary = [f["name"] for f in described.get("fields", []) if f.get("is_primary")]
            if primary != [ID_FIELD]:
                raise ArchiveIndexError(
                    f"collection at {self.where} is keyed by {primary}, the layout of an older "
                    f"hpsh-tf2; expected rows keyed by {ID_FIELD!r}: build a new index "
                    "(another --collection, or delete the old index file)"
                )
            self._record = record
        return self._record

    def open_for(self, record: ModelRecord, **create_kwargs: Any) -> bool:
        """Opens the collection for ``record``'s model, creating it if missing.

        Returns:
            True when the collection was created now.

        Raises:
            ModelMismatchError: The collection holds another model's codes.
        """
        if not self.exists():
            self.create(record, **create_kwargs)
            return True
        check_same_model(self.record(), record, where=self.where)
        return False

    # ----------------------------------------------------------------- writing

    def upsert(
        self,
        paths: Sequence[str],
        packed: np.ndarray,
        classes: Sequence[str],
        sizes: Sequence[int],
        mtimes_ns: Sequence[int],
    ) -> int:
        """Inserts or replaces rows keyed by path; returns the number written."""
        packed = np.ascontiguousarray(packed, np.uint8)
        bits = self.record().bits
        if packed.shape != (len(paths), bits // 8):
            raise ArchiveIndexError(
                f"Received: codes of shape {packed.shape} for {len(paths)} paths; expected "
                f"({len(paths)}, {bits // 8}) packed {bits}-bit codes"
            )
        if not paths:
            return 0
        rows = [
            {
                ID_FIELD: row_id(path),
                PATH_FIELD: path,
                CODE_FIELD: packed[i].tobytes(),
                CLASS_FIELD: klass.encode("utf-8")[:MAX_CLASS_BYTES].decode("utf-8", "ignore"),
                "size": int(size),
                "mtime_ns": int(mtime),
            }
            for i, (path, klass, size, mtime) in enumerate(zip(paths, classes, sizes, mtimes_ns))
        ]
        with self._writing():
            self._client.upsert(self.collection, data=rows)
        return len(rows)

    def delete(self, paths: Sequence[str]) -> int:
        """Removes rows by path (by their integer ids); returns the number of paths asked for."""
        return self.delete_ids([row_id(p) for p in paths])

    def delete_ids(self, ids: Sequence[int]) -> int:
        """Removes rows by int64 id, 1,000 per call; returns the number of ids asked for."""
        ids = [int(i) for i in ids]
        with self._writing():
            for start in range(0, len(ids), 1000):
                self._client.delete(self.collection, ids=ids[start : start + 1000])
        return len(ids)

    # ----------------------------------------------------------------- reading

    def count(self, filter: str = "") -> int:
        """Rows in the collection (matching ``filter``, a Milvus boolean expression)."""
        rows = self._client.query(self.collection, filter=filter, output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def iter_rows(
        self, fields: Sequence[str] = ("size", "mtime_ns"), *, batch_size: int = 4096
    ) -> Iterator[dict[str, Any]]:
        """Every row's id, path and ``fields`` (any collection size).

        A query iterator pages by the int64 primary key (``id > last``), so no path is ever
        part of an expression.
        """
        wanted = list(dict.fromkeys((PATH_FIELD, *fields)))
        return self.query_rows(wanted, batch_size=batch_size)

    def query_rows(
        self, fields: Sequence[str], *, filter: str = "", batch_size: int = 4096
    ) -> Iterator[dict[str, Any]]:
        """Every row (matching ``filter``, built by this package from integers only) with
        ``fields``, paged by a query iterator (any collection size)."""
        iterator = self._client.query_iterator(
            self.collection, batch_size=batch_size, filter=filter, output_fields=list(fields)
        )
        try:
            while True:
                batch = iterator.next()
                if not batch:
                    return
                yield from batch
        finally:
            iterator.close()

    def fingerprints(self) -> dict[str, tuple[int, int]]:
        """``{path: (size, mtime_ns)}`` of every row.

        The same pass reads every row's ``class``; :meth:`row_classes` returns it without a
        second pass when called next (as a build does).
        """
        found: dict[str, tuple[int, int]] = {}
        classes: dict[str, str] = {}
        for row in self.iter_rows(("size", "mtime_ns", CLASS_FIELD)):
            found[row[PATH_FIELD]] = (int(row["size"]), int(row["mtime_ns"]))
            classes[row[PATH_FIELD]] = str(row[CLASS_FIELD])
        self._classes_read = classes
        return found

    def row_classes(self) -> dict[str, str]:
        """``{path: class}`` of every row (read by the last :meth:`fingerprints`, if any)."""
        cached = getattr(self, "_classes_read", None)
        if cached is not None:
            self._classes_read = None
            return cached
        return {row[PATH_FIELD]: str(row[CLASS_FIELD]) for row in self.iter_rows((CLASS_FIELD,))}

    def codes(self, paths: Sequence[str]) -> np.ndarray:
        """Packed codes ``uint8 [len(paths), bits / 8]`` of the given rows, in order.

        Raises:
            ArchiveIndexError: A path is not in the index.
        """
        found: dict[str, bytes] = {}
        paths = list(paths)
        ids = [row_id(p) for p in paths]
        for start in range(0, len(ids), 1000):
            rows = self._client.get(
                self.collection,
                ids=ids[start : start + 1000],
                output_fields=[PATH_FIELD, CODE_FIELD],
            )
            for row in rows:
                value = row[CODE_FIELD]
                found[row[PATH_FIELD]] = bytes(value[0] if isinstance(value, list) else value)
        missing = [p for p in paths if p not in found]
        if missing:
            raise ArchiveIndexError(f"Received: paths not in {self.where}: {missing[:5]}")
        width = self.record().bits // 8
        flat = np.frombuffer(b"".join(found[p] for p in paths), np.uint8)
        return flat.reshape(len(paths), width)

    def search(
        self,
        packed: np.ndarray,
        *,
        top: int = 10,
        filter: str = "",
        nprobe: int = 16,
        filters: Filters | None = None,
    ) -> list[list[IndexHit]]:
        """The ``top`` nearest rows of each query code (Hamming), nearest first.

        Ties are ordered by path. With ``BIN_FLAT`` the distances are exact; which of several
        items tied at the last kept distance are returned is up to Milvus.

        Args:
            packed: ``uint8 [Q, bits / 8]`` packed query codes.
            top: Neighbours per query (at most 16384, Milvus' limit).
            filter: Milvus boolean expression on the metadata, e.g. ``class == "Airport"``
                (written by the user: ``--filter``).
            nprobe: Clusters searched per query with ``BIN_IVF_FLAT``.
            filters: Structured filters (:mod:`hpsh_tf2.index.backend`), each value escaped
                by :func:`milvus_literal`; combined with ``filter`` by ``and``.

        Raises:
            ArchiveIndexError: Codes of another length, or ``top`` out of range.
        """
        packed = np.ascontiguousarray(packed, np.uint8)
        bits = self.record().bits
        if packed.ndim != 2 or packed.shape[1] != bits // 8:
            raise ArchiveIndexError(
                f"Received: query codes of shape {packed.shape}; expected [Q, {bits // 8}] "
                f"packed {bits}-bit codes (the index's model)"
            )
        if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOPK:
            raise ArchiveIndexError(
                f"Received: top={top!r}; expected an integer in [1, {MAX_TOPK}]"
            )
        if packed.shape[0] == 0:
            return []
        checked = check_filters(filters)
        structured = milvus_filter(checked)
        if structured:
            filter = f"({filter}) and ({structured})" if filter else structured
        limit = top
        while True:
            results = self._search_raw(packed, limit, filter, nprobe)
            if not checked:
                break
            # The like patterns may match a little more than asked for (a wildcard stands for
            # %, _, \, " and control characters): keep the exact matches, and search deeper
            # while a query lost hits and Milvus may hold more.
            short = False
            for position, hits in enumerate(results):
                kept = _exact_hits(hits, checked)
                short |= len(kept) < min(len(hits), top) and len(hits) == limit
                results[position] = kept
            if not short or limit >= MAX_TOPK:
                break
            limit = min(limit * 4, MAX_TOPK)
        out = []
        for hits in results:
            ordered = sorted(
                hits,
                key=lambda h: (round(float(h["distance"])), str(h["entity"].get(PATH_FIELD))),
            )
            out.append(
                [
                    IndexHit(
                        rank=rank + 1,
                        distance=round(float(hit["distance"])),
                        path=str(hit["entity"].get(PATH_FIELD, "")),
                        class_name=str(hit["entity"].get(CLASS_FIELD, "")),
                        size=int(hit["entity"].get("size", 0)),
                        mtime_ns=int(hit["entity"].get("mtime_ns", 0)),
                    )
                    for rank, hit in enumerate(ordered[:top])
                ]
            )
        return out

    def _search_raw(self, packed: np.ndarray, limit: int, filter: str, nprobe: int) -> list:
        """One Milvus search: per query, a list of hits with their metadata."""
        try:
            results = self._client.search(
                self.collection,
                data=[row.tobytes() for row in packed],
                anns_field=CODE_FIELD,
                limit=limit,
                filter=filter,
                output_fields=list(META_FIELDS),
                search_params={"metric_type": "HAMMING", "params": {"nprobe": int(nprobe)}},
            )
        except _milvus().MilvusException as err:
            if not filter:
                raise
            raise ArchiveIndexError(
                f"Received: filter={filter!r}, which Milvus rejects ({err.message}); expected "
                'a boolean expression on class, path, size, mtime_ns, e.g. class == "Airport"'
            ) from err
        return [list(hits) for hits in results]

    def drop(self) -> None:
        """Deletes the collection."""
        if self.exists():
            self._client.drop_collection(self.collection)
        self._record = None

    # ----------------------------------------------------------------- IndexBackend

    resolve_uri = staticmethod(resolve_uri)

    def remove(self, paths: Sequence[str]) -> int:
        """:meth:`delete` under the :class:`hpsh_tf2.index.backend.IndexBackend` name."""
        return self.delete(paths)

    def class_counts(self) -> dict[str, int]:
        """Rows per stored ``class`` text (``""``: no class), read with a query iterator."""
        counts: dict[str, int] = {}
        for row in self.iter_rows((CLASS_FIELD,)):
            counts[row[CLASS_FIELD]] = counts.get(row[CLASS_FIELD], 0) + 1
        return counts


def milvus_literal(value: str | int) -> str:
    """A filter value as a Milvus expression literal: an integer, or a double-quoted string
    with ``\\`` and ``"`` escaped and control characters written as escapes (``\\n``,
    ``\\x01``), so the value can never end the literal early or break the expression's line.

    The one place where a value becomes expression text (Milvus Lite rejects
    ``filter_params`` templates, so binding is not available there).
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ArchiveIndexError(f"Received: filter value {value!r}; expected a string or an int")
    if isinstance(value, int):
        return str(int(value))
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.translate(_CONTROL_ESCAPES) + '"'


_CONTROL_ESCAPES = {
    code: {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(chr(code), f"\\x{code:02x}")
    for code in (*range(0x20), 0x7F)
}
"""Control characters as Milvus string escapes (its grammar refuses them raw)."""


_LIKE_WILDCARDS = ("%", "_", "\\", '"')


def _label_pattern(value: str) -> str:
    """``value`` as a ``like`` pattern without escapes: ``%``, ``_``, backslash, ``"`` and
    control characters become ``_`` (any one character), so the pattern matches at least the
    rows carrying ``value`` (Milvus has no reliable escape in ``like``; the hits are checked
    afterwards)."""
    for char in _LIKE_WILDCARDS:
        value = value.replace(char, "_")
    return value.translate(dict.fromkeys(_CONTROL_ESCAPES, "_"))


def _class_condition(value: str) -> str:
    """A Milvus condition on ``class`` for one value: the whole text, or (a value without
    ``;``) one label of a multi-label row, a superset checked again by
    :func:`hpsh_tf2.index.backend.class_matches`."""
    exact = _string_condition(CLASS_FIELD, value)
    if not value or LABEL_SEPARATOR in value:
        return exact
    label, sep = _label_pattern(value), LABEL_SEPARATOR
    likes = [f"{label}{sep}%", f"%{sep}{label}", f"%{sep}{label}{sep}%"]
    return (
        "("
        + " or ".join([exact, *(f"{CLASS_FIELD} like {milvus_literal(p)}" for p in likes)])
        + ")"
    )


def _exact_hits(hits: list[dict[str, Any]], filters: Filters) -> list[dict[str, Any]]:
    """The hits whose metadata passes ``filters`` exactly (:func:`filter_mask`, the rule of
    every backend)."""
    if not hits:
        return hits
    columns = {
        name: np.asarray([hit["entity"].get(name, kind()) for hit in hits], dtype=object)
        for name, kind in FILTER_FIELDS.items()
    }
    mask = filter_mask(filters, columns)
    return hits if mask is None else [hit for hit, keep in zip(hits, mask) if keep]


def _string_condition(name: str, value: str) -> str:
    """``name == "value"``; a value holding control characters (which Milvus does not compare
    after escaping) as a ``like`` pattern instead, a superset that the search narrows."""
    if any(ord(char) in _CONTROL_ESCAPES for char in value):
        return f"{name} like {milvus_literal(_label_pattern(value))}"
    return f"{name} == {milvus_literal(value)}"


def milvus_filter(filters: Filters | None) -> str:
    """Structured filters as a Milvus boolean expression (``""`` for none).

    ``{"path": "a.jpg", "size": Range(0, 9)}`` gives ``'path == "a.jpg" and size >= 0 and
    size <= 9'``. A ``class`` value gives ``class == "Forest"`` or ``class like`` the
    value as a first, last or middle label (``"Forest;%"``, ...): the like patterns hold no
    escape (:func:`_label_pattern`), so they may match a little more, and
    :meth:`IndexStore.search` keeps the exact matches. Field names come from the fixed list of
    :data:`hpsh_tf2.index.backend.FILTER_FIELDS` (:func:`check_filters`); every value goes
    through :func:`milvus_literal`.
    """
    parts: list[str] = []
    for name, condition in check_filters(filters).items():
        if name == CLASS_FIELD:
            values = condition if isinstance(condition, tuple) else (condition,)
            conditions = [_class_condition(v) for v in values]
            parts.append(conditions[0] if len(conditions) == 1 else f"({' or '.join(conditions)})")
        elif isinstance(condition, Range):
            if condition.low is not None:
                parts.append(f"{name} >= {milvus_literal(condition.low)}")
            if condition.high is not None:
                parts.append(f"{name} <= {milvus_literal(condition.high)}")
        elif isinstance(condition, tuple):
            if all(isinstance(v, int) for v in condition):
                parts.append(f"{name} in [{', '.join(milvus_literal(v) for v in condition)}]")
            else:
                parts.append(f"({' or '.join(_string_condition(name, v) for v in condition)})")
        elif isinstance(condition, str):
            parts.append(_string_condition(name, condition))
        else:
            parts.append(f"{name} == {milvus_literal(condition)}")
    return " and ".join(parts)
