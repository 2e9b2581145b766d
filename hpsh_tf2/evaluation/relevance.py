"""What a correct retrieval result is: the one definition every metric, figure and sampler uses.

Labels come in two forms, and single-label is the special case of the multi-label rule:

* single-label: int ``[N]``, one class index per item;
* multi-label: multi-hot ``[N, C]`` (uint8 / bool / int 0-1), ``y[i, c] = 1`` when item ``i``
  carries label ``c``. A rank-2 array with one column is the single-label ``[N, 1]`` form.

For a query ``q`` and a database item ``x`` (Zhao et al., "Deep Semantic Ranking Based Hashing
for Multi-Label Image Retrieval", CVPR 2015, section 3)::

    shared(q, x)   = |labels(q) & labels(x)|        (multi-hot: y_q . y_x; single: [y_q == y_x])
    relevant(q, x) = shared(q, x) >= 1
    gain(q, x)     = 2^shared(q, x) - 1             (the graded gain of NDCG)

So with one label per item ``shared`` is 0 or 1 and ``relevant`` is label equality. Everything is
vectorised: one matrix product over the multi-hot rows (no loop over pairs), in NumPy here and
in TensorFlow for the training batches (:func:`tf_relevant`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

_BLOCK_ENTRIES = 1 << 22

__all__ = [
    "check_labels",
    "gain",
    "is_multi_hot",
    "item_relevant",
    "label_text",
    "num_relevant",
    "ranked_shared",
    "relevant",
    "self_shared",
    "shared",
    "tf_relevant",
]


def is_multi_hot(labels: Any) -> bool:
    """Whether ``labels`` is the multi-hot ``[N, C]`` form (rank 2 with more than one column)."""
    shape = np.shape(labels)
    return len(shape) == 2 and shape[1] > 1


def check_labels(labels: Any, name: str = "labels") -> np.ndarray:
    """Validates labels and returns int ``[N]`` (single-label) or uint8 ``[N, C]`` (multi-hot).

    ``[N, 1]`` is read as single-label ``[N]``.

    Raises:
        ValueError: On another rank, a non-integer single-label array, negative class indices
            or multi-hot values other than 0 and 1.
    """
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array.reshape(-1)
    if array.ndim == 1:
        if array.size and not (
            np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_)
        ):
            raise ValueError(
                f"Received: {name} with dtype {array.dtype}; expected integer class indices [N]"
            )
        if array.size and array.min() < 0:
            raise ValueError(f"Received: {name} with minimum {array.min()}; expected >= 0")
        return array.astype(np.int64)
    if array.ndim != 2:
        raise ValueError(
            f"Received: {name} with shape {array.shape}; expected [N] class indices or "
            "[N, C] multi-hot"
        )
    if array.size and not np.isin(array, (0, 1)).all():
        raise ValueError(f"Received: {name} [N, C] with values other than 0/1; expected multi-hot")
    return array.astype(np.uint8)


def _pair(query_labels: Any, db_labels: Any) -> tuple[np.ndarray, np.ndarray]:
    query = check_labels(query_labels, "query_labels")
    database = check_labels(db_labels, "db_labels")
    if query.ndim != database.ndim or (query.ndim == 2 and query.shape[1] != database.shape[1]):
        raise ValueError(
            f"Received: query_labels with shape {query.shape} and db_labels with shape "
            f"{database.shape}; expected both [N] or both [N, C] with the same C"
        )
    return query, database


def shared(query_labels: Any, db_labels: Any) -> np.ndarray:
    """Number of labels each query shares with each database item, int32 ``[Q, N]``.

    Multi-hot: the matrix product ``Y_q Y_db^T``; single-label: ``[y_q == y_db]``.

    Args:
        query_labels: ``[Q]`` or ``[Q, C]``.
        db_labels: ``[N]`` or ``[N, C]`` (the same form as the queries).
    """
    query, database = _pair(query_labels, db_labels)
    if query.ndim == 1:
        return (query[:, None] == database[None, :]).astype(np.int32)
    return query.astype(np.int32) @ database.astype(np.int32).T


def relevant(query_labels: Any, db_labels: Any) -> np.ndarray:
    """``shared >= 1``: bool ``[Q, N]`` (single-label: equal labels)."""
    return shared(query_labels, db_labels) >= 1


def gain(shared_counts: Any) -> np.ndarray:
    """The graded NDCG gain ``2^shared - 1`` (float64), from :func:`shared` counts."""
    return np.exp2(np.asarray(shared_counts, np.float64)) - 1.0


def ranked_shared(query_labels: Any, retrieved_labels: Any) -> np.ndarray:
    """``shared`` of each query with each of its ranked results, int32 ``[Q, k]``.

    Args:
        query_labels: ``[Q]`` or ``[Q, C]``.
        retrieved_labels: ``[Q, k]`` (single-label) or ``[Q, k, C]`` (multi-hot): the labels
            of the ranked results, e.g. ``db_labels[indices]``.
    """
    query = check_labels(query_labels, "query_labels")
    ranked = np.asarray(retrieved_labels)
    if query.ndim == 1:
        if ranked.ndim != 2:
            raise ValueError(
                f"Received: retrieved_labels with shape {ranked.shape}; expected rank 2 [Q, k']"
            )
        return (ranked == query[:, None]).astype(np.int32)
    if ranked.ndim != 3 or ranked.shape[2] != query.shape[1]:
        raise ValueError(
            f"Received: retrieved_labels with shape {ranked.shape} for multi-hot queries "
            f"{query.shape}; expected [Q, k', {query.shape[1]}]"
        )
    return np.einsum("qc,qjc->qj", query.astype(np.int32), ranked.astype(np.int32))


def num_relevant(query_labels: Any, db_labels: Any, *, exclude_self: bool = False) -> np.ndarray:
    """``R_q``: database items relevant to each query, int64 ``[Q]``.

    With ``exclude_self`` query ``i`` is database item ``i`` and is not counted (it is relevant
    to itself whenever it carries a label).
    """
    query, database = _pair(query_labels, db_labels)
    if query.ndim == 1:
        classes, sizes = np.unique(database, return_counts=True)
        position = np.minimum(np.searchsorted(classes, query), max(classes.size - 1, 0))
        found = classes.size > 0 and (classes[position] == query)
        counts = np.where(found, sizes[position] if classes.size else 0, 0).astype(np.int64)
    else:
        rows = max(1, _BLOCK_ENTRIES // max(database.shape[0], 1))
        counts = np.concatenate(
            [
                relevant(query[i : i + rows], database).sum(axis=1)
                for i in range(0, len(query), rows)
            ]
            or [np.zeros(0)]
        ).astype(np.int64)
    if exclude_self:
        counts -= self_shared(query_labels) >= 1
    return counts


def self_shared(labels: Any) -> np.ndarray:
    """``shared(i, i)`` of every item with itself, int32 ``[N]`` (1 for single-label)."""
    array = check_labels(labels)
    if array.ndim == 1:
        return np.ones(array.shape[0], np.int32)
    return array.sum(axis=1, dtype=np.int32)


def label_text(labels: Any, class_names: Sequence[str]) -> str:
    """The names of one item's labels joined by ``;`` (``"Forest;River"``).

    Args:
        labels: One class index, or one multi-hot row ``[C]``.
        class_names: Names, index = class.
    """
    array = np.asarray(labels)
    indices = [int(array)] if array.ndim == 0 else np.flatnonzero(array).tolist()
    return ";".join(str(class_names[i]) if 0 <= i < len(class_names) else str(i) for i in indices)


def item_relevant(query_label: Any, label: Any) -> bool:
    """Relevance of one result to one query, for labels in any of their three forms.

    Class indices (``==``), multi-hot rows ``[C]`` (at least one shared label) or label text
    (``"Forest;River"``, as served and indexed: at least one shared name).
    """
    if isinstance(query_label, str) or isinstance(label, str):
        return bool(set(str(query_label).split(";")) & set(str(label).split(";")) - {""})
    query, item = np.asarray(query_label), np.asarray(label)
    if query.ndim == 1 and item.ndim == 1:
        return bool(shared(query[None], item[None])[0, 0] >= 1)
    return bool(query == item)


def tf_relevant(labels: tf.Tensor) -> tf.Tensor:
    """Pairwise relevance inside one batch, bool ``[n, n]`` (the TF twin of :func:`relevant`).

    Args:
        labels: Integer ``[n]`` (or ``[n, 1]``) class indices, or multi-hot ``[n, C]``.
    """
    y = tf.convert_to_tensor(labels)
    if y.shape.rank == 2 and y.shape[1] != 1:
        counts = tf.cast(y, tf.float32)
        return tf.matmul(counts, counts, transpose_b=True) >= 0.5
    y = tf.reshape(y, [-1])
    return tf.equal(y[:, None], y[None, :])
