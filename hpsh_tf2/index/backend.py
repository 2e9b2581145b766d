"""The archive index as an interface: what ``index build|search|info`` and ``query --index`` use.

An index backend stores one row per archive image: ``path`` (the key, relative to the archive
root), the packed binary ``code`` of the model recorded with the index
(:class:`hpsh_tf2.index.encoder.ModelRecord`), and the metadata ``class``, ``size`` and
``mtime_ns``. It is chosen by ``index.backend`` from :data:`hpsh_tf2.registry.INDEX_BACKENDS`:

* ``milvus`` (default): :class:`hpsh_tf2.index.store.IndexStore`, Milvus Lite in a ``.db``
  file or a Milvus server;
* ``memory``: :class:`hpsh_tf2.index.memory.MemoryIndex`, the project's exact Hamming search
  over arrays kept in memory and saved to an ``.npz`` file (small archives, tests).

A registered backend is a class (or factory) ``Backend(uri, collection, *, read_only)``
(``read_only``: opened by ``search``/``info``, which must work while a build writes) returning
an :class:`IndexBackend`, with a ``resolve_uri(uri, workdir)`` static method that turns
``index.uri`` (``None``: the backend's default file under the workdir) into the URI it opens.

Filters are structured, never text: a mapping from a metadata field to an exact value
(``{"class": "Airport"}``), a collection of accepted values (``{"class": ["Beach", "Port"]}``)
or an inclusive :class:`Range` (``{"size": Range(0, 50_000)}``). :func:`check_filters`
validates them for every backend.

A row's ``class`` is text: a folder class (``"Airport"``) or, for an archive indexed with a
list of labels, the label names joined by ``;`` (``"Forest;River"``). A ``class`` value
matches a row whose text equals it, or, for a value without ``;``, a row that carries it as
one of its labels (:func:`class_matches`): ``class=Forest`` finds ``"Forest"``,
``"Forest;River"`` and ``"Beach;Forest"``, not ``"Forestry"``. For text without ``;`` (every
folder class) that is plain equality, as before. Milvus' own boolean expressions
(``--filter``, written by the user) remain a Milvus-only option of
:meth:`hpsh_tf2.index.store.IndexStore.search`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from hpsh_tf2.errors import HPSHError
from hpsh_tf2.index.encoder import ModelRecord
from hpsh_tf2.registry import INDEX_BACKENDS

__all__ = [
    "FILTER_FIELDS",
    "ArchiveIndexError",
    "Filters",
    "IndexBackend",
    "IndexHit",
    "Range",
    "check_filters",
    "class_mask",
    "class_matches",
    "filter_mask",
    "is_file_uri",
    "open_index",
    "parse_where",
    "resolve_index_uri",
]


class ArchiveIndexError(HPSHError, ValueError):
    """The index is missing, incompatible or cannot do what was asked."""


@dataclass(frozen=True)
class IndexHit:
    """One search result.

    Attributes:
        rank: 1-based position.
        distance: Hamming distance to the query code.
        path: Relative path of the item (the primary key).
        class_name: The item's class (``""`` if none).
        size: File size when indexed.
        mtime_ns: Modification time when indexed.
    """

    rank: int
    distance: int
    path: str
    class_name: str
    size: int = 0
    mtime_ns: int = 0


FILTER_FIELDS: Mapping[str, type] = {"class": str, "path": str, "size": int, "mtime_ns": int}
"""The metadata fields a filter may name, with the type of their values."""


@dataclass(frozen=True)
class Range:
    """An inclusive range of a numeric field; ``None`` leaves that side open."""

    low: int | None = None
    high: int | None = None


Filters = Mapping[str, Any]
"""``field -> value``, ``field -> [values]`` or ``field -> Range`` (see the module doc)."""


@runtime_checkable
class IndexBackend(Protocol):
    """One opened index collection (a context manager; :meth:`close` releases it)."""

    @property
    def where(self) -> str:
        """Where the index is, for messages (``<uri> (collection 'name')``)."""
        ...

    def exists(self) -> bool:
        """Whether the collection exists."""
        ...

    def open_for(self, record: ModelRecord, **create_options: Any) -> bool:
        """Opens the collection for ``record``'s model, creating it if missing.

        ``create_options`` are the backend's own creation settings (Milvus: ``index_type``,
        ``nlist``); a backend ignores those it does not have.

        Returns:
            True when the collection was created now.

        Raises:
            ModelMismatchError: The collection holds another model's codes.
        """
        ...

    def record(self) -> ModelRecord:
        """The record of the model the codes were computed with (``ArchiveIndexError`` if
        there is no collection)."""
        ...

    def upsert(
        self,
        paths: Sequence[str],
        packed: np.ndarray,
        classes: Sequence[str],
        sizes: Sequence[int],
        mtimes_ns: Sequence[int],
    ) -> int:
        """Adds or replaces rows keyed by path, durably (one batch lands whole or not at all);
        returns the number written."""
        ...

    def remove(self, paths: Sequence[str]) -> int:
        """Removes rows by path (absent paths are no error); returns ``len(paths)``."""
        ...

    def count(self) -> int:
        """Rows in the collection."""
        ...

    def fingerprints(self) -> dict[str, tuple[int, int]]:
        """``{path: (size, mtime_ns)}`` of every row (what an incremental build compares)."""
        ...

    def class_counts(self) -> dict[str, int]:
        """Rows per stored ``class`` text (``""``: no class)."""
        ...

    def row_classes(self) -> dict[str, str]:
        """``{path: class}`` of every row (an incremental build re-indexes a file whose labels
        changed)."""
        ...

    def search(
        self,
        packed: np.ndarray,
        *,
        top: int = 10,
        filters: Filters | None = None,
        **options: Any,
    ) -> list[list[IndexHit]]:
        """The ``top`` nearest rows (Hamming) of each packed query code that pass ``filters``,
        nearest first, ties by path.

        ``options`` are the backend's own search settings (Milvus: ``filter``, a user-written
        expression, and ``nprobe``); a backend refuses options it does not have
        (``ArchiveIndexError``).
        """
        ...

    def close(self) -> None:
        """Releases the collection (idempotent)."""
        ...

    def __enter__(self) -> IndexBackend: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


def is_file_uri(uri: str) -> bool:
    """Whether ``uri`` names a local file (not ``http(s)://``, ``tcp://``, ``unix:``)."""
    return "://" not in uri and not uri.startswith("unix:")


def resolve_index_uri(backend: str, uri: str | None, workdir: str | os.PathLike[str]) -> str:
    """``index.uri`` as the backend registered as ``backend`` opens it (its default file under
    ``workdir`` when ``uri`` is None)."""
    return INDEX_BACKENDS.get(backend).resolve_uri(uri, workdir)


def open_index(backend: str, uri: str, collection: str, *, read_only: bool = False) -> IndexBackend:
    """Opens ``collection`` at ``uri`` with the backend registered as ``backend``.

    ``read_only`` opens it for reading while a build may be writing it (Milvus Lite: a
    consistent snapshot of the file).

    Raises:
        RegistryError: ``backend`` is not registered (the message lists those that are).
        ArchiveIndexError: The backend cannot open ``uri``.
    """
    return INDEX_BACKENDS.build(backend, uri, collection, read_only=read_only)


# --------------------------------------------------------------------------- filters


def _check_value(name: str, value: Any) -> None:
    expected = FILTER_FIELDS[name]
    ok = isinstance(value, expected) and not isinstance(value, bool)
    if not ok:
        raise ArchiveIndexError(
            f"Received: filter {name}={value!r}; expected a {expected.__name__} value"
        )


def check_filters(filters: Filters | None) -> dict[str, Any]:
    """Validates structured filters; returns them as a plain dict (``{}`` for None).

    Raises:
        ArchiveIndexError: An unknown field, a value of the wrong type, a range on a text
            field or an empty list of values.
    """
    if not filters:
        return {}
    checked: dict[str, Any] = {}
    for name, condition in filters.items():
        if name not in FILTER_FIELDS:
            raise ArchiveIndexError(
                f"Received: filter on {name!r}; expected one of {', '.join(FILTER_FIELDS)}"
            )
        if isinstance(condition, Range):
            if FILTER_FIELDS[name] is not int:
                raise ArchiveIndexError(f"Received: a range on {name!r}; ranges are for numbers")
            for bound in (condition.low, condition.high):
                if bound is not None:
                    _check_value(name, bound)
        elif isinstance(condition, (list, tuple, set, frozenset)):
            if not condition:
                raise ArchiveIndexError(f"Received: an empty list of values for {name!r}")
            for value in condition:
                _check_value(name, value)
            condition = tuple(sorted(condition))
        else:
            _check_value(name, condition)
        checked[name] = condition
    return checked


LABEL_SEPARATOR = ";"
"""Joins the labels of one row's ``class`` text (:data:`hpsh_tf2.data.labels.SEPARATOR`)."""


def class_matches(text: str, value: str) -> bool:
    """Whether a row's ``class`` text matches a filter value: equal text, or (a value without
    ``;``) one of the row's ``;``-separated labels."""
    if text == value:
        return True
    return LABEL_SEPARATOR not in value and value in text.split(LABEL_SEPARATOR)


def class_mask(column: np.ndarray, values: Sequence[str]) -> np.ndarray:
    """Rows of a ``class`` column matching any of ``values`` (:func:`class_matches`)."""
    text = np.asarray(column).astype(str)
    mask = np.zeros(text.shape, bool)
    if not text.size:
        return mask
    wrapped = np.char.add(np.char.add(LABEL_SEPARATOR, text), LABEL_SEPARATOR)
    for value in values:
        mask |= text == value
        if value and LABEL_SEPARATOR not in value:
            needle = f"{LABEL_SEPARATOR}{value}{LABEL_SEPARATOR}"
            mask |= np.char.find(wrapped, needle) >= 0
    return mask


def filter_mask(filters: Filters | None, columns: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """Rows passing ``filters``, given each field's column (``None``: no filter, all rows).

    Args:
        filters: Structured filters (validated here).
        columns: ``field -> [N]`` array for every field of :data:`FILTER_FIELDS`.
    """
    checked = check_filters(filters)
    if not checked:
        return None
    size = len(next(iter(columns.values())))
    mask = np.ones(size, bool)
    for name, condition in checked.items():
        column = columns[name]
        if name == "class":
            mask &= class_mask(column, condition if isinstance(condition, tuple) else (condition,))
        elif isinstance(condition, Range):
            if condition.low is not None:
                mask &= column >= condition.low
            if condition.high is not None:
                mask &= column <= condition.high
        elif isinstance(condition, tuple):
            mask &= np.isin(column, np.asarray(condition, dtype=column.dtype))
        else:
            mask &= column == condition
    return mask


def parse_where(items: Sequence[str]) -> dict[str, Any]:
    """``--where`` options as filters: ``class=Airport``, ``class=Beach,Port`` (any of),
    ``size=1000..50000`` or ``size=..50000`` (inclusive range). Values are data, never query
    text: each backend matches them as values. ``class=Forest`` also matches multi-label rows
    carrying ``Forest`` (:func:`class_matches`).

    Raises:
        ArchiveIndexError: Not ``FIELD=VALUE``, an unknown field, or a bad number.
    """
    filters: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or name not in FILTER_FIELDS:
            raise ArchiveIndexError(
                f"Received: --where {item!r}; expected FIELD=VALUE with FIELD one of "
                f"{', '.join(FILTER_FIELDS)} (e.g. class=Airport, size=0..50000)"
            )
        if FILTER_FIELDS[name] is str:
            values = text.split(",") if "," in text else [text]
            filters[name] = values if len(values) > 1 else values[0]
            continue
        try:
            if ".." in text:
                low, _, high = text.partition("..")
                filters[name] = Range(int(low) if low else None, int(high) if high else None)
            else:
                values = [int(v) for v in text.split(",")]
                filters[name] = values if len(values) > 1 else values[0]
        except ValueError:
            raise ArchiveIndexError(
                f"Received: --where {item!r}; expected integers for {name} "
                "(VALUE, V1,V2 or LOW..HIGH)"
            ) from None
    return check_filters(filters)
