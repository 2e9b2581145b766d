"""Exact Hamming k-nearest-neighbour search with interchangeable backends (``eval.backend``).

A backend is a function registered in :data:`hpsh_tf2.registry.SEARCH_BACKENDS`:
``(query, db, k, exclude_self, chunk_size) -> (indices, distances)`` on packed ``uint8`` codes
(see :func:`tf_topk`). All backends return the same result: neighbours sorted by Hamming
distance, ties broken by database index (lower first), which is the seed code's stable-sort
order.

* ``"tf"``: :func:`hpsh_tf2.ops.hamming.hamming_topk` (XLA group-minimum pass + ``top_k``).
* ``"numpy"``: blocked XOR + ``np.bitwise_count`` (a 256-entry lookup table on NumPy < 2),
  ranked by the unique key ``distance * N + index`` with ``np.argpartition``.
* ``"faiss"``: ``faiss.IndexBinaryFlat`` (optional extra: ``pip install faiss-cpu``). FAISS
  keeps the lowest ids among equal distances (checked against brute force in the tests); the
  rows are re-sorted by ``(distance, index)`` so the order is the same as the other backends.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpsh_tf2.errors import ConfigError
from hpsh_tf2.ops.codes import np_pack_codes, np_pack_words
from hpsh_tf2.ops.hamming import DEFAULT_GROUP_SIZE, hamming_topk
from hpsh_tf2.registry import SEARCH_BACKENDS

__all__ = [
    "SearchResult",
    "block_distances",
    "faiss_topk",
    "np_popcount",
    "numpy_topk",
    "search",
    "tf_topk",
]

_NUMPY_BLOCK_ENTRIES = 1 << 22
_POPCOUNT_TABLE = np.array([bin(i).count("1") for i in range(256)], np.uint8)


@dataclass(frozen=True)
class SearchResult:
    """Ranked neighbours of each query.

    Attributes:
        indices: ``int64`` ``[Q, k]`` database indices, nearest first.
        distances: ``int32`` ``[Q, k]`` Hamming distances (non-decreasing along each row).
    """

    indices: np.ndarray
    distances: np.ndarray


def np_popcount(words: np.ndarray) -> np.ndarray:
    """Bit count of each element of an unsigned integer array, as ``uint8``.

    Uses ``np.bitwise_count`` when NumPy has it (>= 2.0), else a 256-entry lookup table over
    the bytes of each element.
    """
    words = np.asarray(words)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words)
    as_bytes = words.view(np.uint8).reshape((*words.shape, words.dtype.itemsize))
    return _POPCOUNT_TABLE[as_bytes].sum(axis=-1, dtype=np.uint8)


def _as_packed(codes: Any, name: str, packed: bool) -> np.ndarray:
    """Returns packed ``uint8`` codes, packing 0/1 codes if needed."""
    array = np.asarray(codes)
    if array.ndim != 2:
        raise ValueError(f"Received: {name} with shape {array.shape}; expected rank 2")
    if packed:
        if array.dtype != np.uint8:
            raise TypeError(f"Received: {name} with dtype {array.dtype}; expected uint8 (packed)")
        return np.ascontiguousarray(array)
    if array.size and array.dtype != np.bool_ and (array.min() < 0 or array.max() > 1):
        raise ValueError(
            f"Received: {name} with values in [{array.min()}, {array.max()}]; expected 0/1 "
            "codes (pass packed=True for packed bytes)"
        )
    return np_pack_codes(array)


def block_distances(query_words: np.ndarray, db_words: np.ndarray) -> np.ndarray:
    """Hamming distances ``[q, N]`` of a block of packed query words against all database words.

    ``popcount(q XOR x)`` summed over the words, in ``uint8`` below 255 bits, else ``uint16``.
    Memory is ``O(q * N * words)``: callers pass blocks of queries.
    """
    xored = query_words[:, None, :] ^ db_words[None, :, :]
    dtype = np.uint8 if db_words.shape[1] * db_words.dtype.itemsize * 8 < 255 else np.uint16
    return np_popcount(xored).sum(axis=-1, dtype=dtype)


def _check_k(k: object, num_queries: int, num_items: int, exclude_self: bool) -> int:
    """Validates ``k`` and the ``exclude_self`` protocol against the array sizes."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"Received: k={k!r}; expected a positive int")
    available = num_items - int(exclude_self)
    if k > available:
        extra = " (database minus the query, exclude_self=True)" if exclude_self else ""
        raise ValueError(
            f"Received: k={k} with {num_items} database items{extra}; expected k <= {available}"
        )
    if exclude_self and num_queries > num_items:
        raise ValueError(
            f"Received: {num_queries} queries and {num_items} database items with "
            "exclude_self=True; expected query i to be database item i, so Q <= N"
        )
    return int(k)


def search(
    query_codes: Any,
    db_codes: Any,
    *,
    k: int,
    exclude_self: bool = False,
    backend: str = "tf",
    chunk_size: int | None = None,
    packed: bool = False,
) -> SearchResult:
    """Exact Hamming k-NN of each query in the database.

    Args:
        query_codes: ``[Q, bits]`` 0/1 codes (bool or integer), or ``[Q, bits / 8]`` packed
            ``uint8`` bytes when ``packed=True``.
        db_codes: ``[N, bits]`` 0/1 codes (or packed, as above).
        k: Neighbours per query (``<= N``, or ``<= N - 1`` with ``exclude_self``).
        exclude_self: Query ``i`` is database item ``i`` and is never returned (``Q <= N``).
        backend: A name registered in :data:`hpsh_tf2.registry.SEARCH_BACKENDS`
            (``"tf"``, ``"numpy"``, ``"faiss"`` built in).
        chunk_size: Database codes per step for ``"tf"`` and ``"numpy"`` (memory bound;
            default 131072 for ``"tf"``, all of them for ``"numpy"``); ignored by ``"faiss"``.
        packed: Inputs are already packed with :func:`hpsh_tf2.ops.codes.pack_codes`.

    Returns:
        :class:`SearchResult` with ``[Q, k]`` arrays sorted by ``(distance, index)``.
    """
    if backend not in SEARCH_BACKENDS:
        raise ConfigError(f"Received: backend={backend!r}; expected {SEARCH_BACKENDS.expected()}")
    query = _as_packed(query_codes, "query_codes", packed)
    db = _as_packed(db_codes, "db_codes", packed)
    if query.shape[1] != db.shape[1]:
        raise ValueError(
            f"Received: query_codes with shape {query.shape} and db_codes with shape "
            f"{db.shape} (packed); expected the same code length"
        )
    k = _check_k(k, query.shape[0], db.shape[0], exclude_self)
    if chunk_size is not None and (isinstance(chunk_size, bool) or int(chunk_size) < 1):
        raise ValueError(f"Received: chunk_size={chunk_size!r}; expected a positive int or None")
    runner = SEARCH_BACKENDS.get(backend)
    indices, distances = runner(query, db, k, exclude_self, chunk_size)
    return SearchResult(
        indices=np.asarray(indices, np.int64), distances=np.asarray(distances, np.int32)
    )


def tf_topk(
    query: np.ndarray, db: np.ndarray, k: int, exclude_self: bool, chunk_size: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """The TensorFlow backend: :func:`hpsh_tf2.ops.hamming.hamming_topk`.

    Every search backend has this signature.

    Args:
        query: Packed ``uint8`` ``[Q, bytes]`` query codes.
        db: Packed ``uint8`` ``[N, bytes]`` database codes (same width).
        k: Neighbours per query, already checked against ``N`` and ``exclude_self``.
        exclude_self: Query ``i`` is database item ``i`` and is never returned.
        chunk_size: Database codes per step, or ``None`` (the backend's default).

    Returns:
        ``(indices, distances)``, ``[Q, k]`` each, sorted by ``(distance, index)``.
    """
    if chunk_size is not None:
        chunk_size = -(-int(chunk_size) // DEFAULT_GROUP_SIZE) * DEFAULT_GROUP_SIZE
    indices, distances = hamming_topk(
        query, db, k=k, exclude_self=exclude_self, chunk_size=chunk_size
    )
    return indices.numpy(), distances.numpy()


def _topk_keys(keys: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` smallest unique keys of each row, sorted."""
    if keys.shape[1] > k:
        keys = np.take_along_axis(keys, np.argpartition(keys, k - 1, axis=1)[:, :k], axis=1)
    return np.sort(keys, axis=1)


def _block_keys(
    query: np.ndarray, db: np.ndarray, start: int, query_ids: np.ndarray | None, base: int
) -> np.ndarray:
    """Keys ``distance * base + index`` of one query block against one database block."""
    dist = np_popcount(query[:, None, :] ^ db[None, :, :]).sum(axis=-1, dtype=np.int64)
    ids = np.arange(start, start + db.shape[0], dtype=np.int64)
    if query_ids is not None:
        dist[query_ids[:, None] == ids[None, :]] = query.shape[1] * query.dtype.itemsize * 8 + 1
    return dist * base + ids


def numpy_topk(
    query: np.ndarray, db: np.ndarray, k: int, exclude_self: bool, chunk_size: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """The NumPy backend: blocks of queries x database chunks, merged by unique keys."""
    query_words, db_words = np_pack_words(query), np_pack_words(db)
    num_items = db_words.shape[0]
    chunk = min(int(chunk_size or num_items), num_items)
    rows = max(1, _NUMPY_BLOCK_ENTRIES // max(chunk, 1))
    base = max(num_items, 1)
    out = np.empty((query_words.shape[0], k), np.int64)
    for begin in range(0, query_words.shape[0], rows):
        block = query_words[begin : begin + rows]
        ids = np.arange(begin, begin + block.shape[0]) if exclude_self else None
        best = np.empty((block.shape[0], 0), np.int64)
        for start in range(0, num_items, chunk):
            keys = _block_keys(block, db_words[start : start + chunk], start, ids, base)
            best = _topk_keys(np.concatenate([best, keys], axis=1), k)
        out[begin : begin + block.shape[0]] = best
    return out % base, out // base


def _load_faiss() -> Any:
    """Imports FAISS or raises an ImportError that says how to install it."""
    try:
        return importlib.import_module("faiss")
    except ImportError as error:
        raise ImportError(
            "backend='faiss' needs FAISS: pip install faiss-cpu (or hpsh-tf2[faiss])"
        ) from error


def _drop_self(indices: np.ndarray, distances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """From ``k + 1`` neighbours of query ``i``, drops item ``i`` (or the last one)."""
    is_self = indices == np.arange(indices.shape[0])[:, None]
    position = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
    take = np.arange(k)[None, :] + (np.arange(k)[None, :] >= position[:, None])
    return (
        np.take_along_axis(indices, take, axis=1),
        np.take_along_axis(distances, take, axis=1),
    )


def faiss_topk(
    query: np.ndarray, db: np.ndarray, k: int, exclude_self: bool, chunk_size: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """The FAISS backend (``IndexBinaryFlat``), re-sorted by ``(distance, index)``."""
    del chunk_size
    faiss = _load_faiss()
    index = faiss.IndexBinaryFlat(db.shape[1] * 8)
    index.add(db)
    wanted = k + int(exclude_self)
    distances, indices = index.search(query, wanted)
    order = _row_order(indices, distances)
    indices = np.take_along_axis(indices, order, axis=1).astype(np.int64)
    distances = np.take_along_axis(distances, order, axis=1)
    if exclude_self:
        indices, distances = _drop_self(indices, distances, k)
    return indices, distances


def _row_order(indices: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Per-row permutation sorting by ``(distance, index)``."""
    keys = distances.astype(np.int64) * (int(indices.max(initial=0)) + 1) + indices
    return np.argsort(keys, axis=1, kind="stable")
