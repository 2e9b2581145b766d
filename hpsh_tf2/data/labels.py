"""Label representations: integer labels ``[N]`` and multi-hot labels ``[N, C]``, in one place.

A single-label dataset carries one integer per image (int32 ``[N]``, an index into
``class_names``); a multi-label dataset carries a multi-hot matrix (uint8 ``[N, C]``,
``labels[i, c] == 1`` when image ``i`` carries class ``c``). Single-label is the special case:
``to_multi_hot(labels, C)`` turns integers into one-hot rows, and :func:`compact` turns a
multi-hot matrix whose rows each hold exactly one label back into integers, so a manifest
whose rows have one label each behaves exactly like a folder-per-class dataset.

Label names are written joined by ``;`` (``"Forest;River"``, :data:`SEPARATOR`), as in a CSV
manifest and in retrieval output.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "SEPARATOR",
    "compact",
    "from_names",
    "is_multi_label",
    "join_names",
    "label_counts",
    "label_indices",
    "row_keys",
    "to_multi_hot",
    "to_names",
    "validate_labels",
]

SEPARATOR = ";"
"""Joins the label names of one image (``"Forest;River"``)."""


def is_multi_label(labels: np.ndarray | Sequence) -> bool:
    """Whether ``labels`` is a multi-hot matrix ``[N, C]`` (True) or integers ``[N]`` (False)."""
    return np.ndim(labels) == 2


def validate_labels(labels: np.ndarray | Sequence, num_classes: int, count: int) -> np.ndarray:
    """Checks and normalises labels: int32 ``[count]`` or uint8 ``[count, num_classes]``.

    Args:
        labels: Integer labels ``[N]`` or a 0/1 (or bool) matrix ``[N, C]``.
        num_classes: ``C``, the length of the label map.
        count: ``N``, the number of images the labels belong to.

    Returns:
        A new, read-only array: int32 ``[N]`` or uint8 ``[N, C]``.

    Raises:
        ValueError: Wrong shape, non-integer values, integers outside ``[0, C)`` or entries other
            than 0/1; the message gives what was received and what was expected.
    """
    array = np.asarray(labels)
    if array.ndim == 2:
        if array.shape != (count, num_classes):
            raise ValueError(
                f"Received: multi-hot labels of shape {array.shape}; expected ({count}, "
                f"{num_classes}) (one row per path, one column per class)"
            )
        if array.size and not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
            raise ValueError(f"Received: multi-hot labels of dtype {array.dtype}; expected 0/1")
        if array.size and (array.min() < 0 or array.max() > 1):
            raise ValueError("Received: multi-hot labels with entries other than 0 and 1")
        result = array.astype(np.uint8)
    else:
        if array.shape != (count,):
            raise ValueError(
                f"Received: labels of shape {array.shape} for {count} paths; expected one label "
                "per path ([N] integers or [N, C] multi-hot)"
            )
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"Received: labels of dtype {array.dtype}; expected integers")
        if array.size and (array.min() < 0 or array.max() >= num_classes):
            raise ValueError(
                f"Received: labels in [{array.min()}, {array.max()}]; expected values in "
                f"[0, {num_classes - 1}]"
            )
        result = array.astype(np.int32)
    result.setflags(write=False)
    return result


def to_multi_hot(labels: np.ndarray | Sequence, num_classes: int) -> np.ndarray:
    """Integer labels ``[N]`` as one-hot rows, or a multi-hot matrix as is; uint8 ``[N, C]``."""
    array = np.asarray(labels)
    if array.ndim == 2:
        return array.astype(np.uint8)
    out = np.zeros((array.shape[0], num_classes), np.uint8)
    out[np.arange(array.shape[0]), array.astype(np.int64)] = 1
    return out


def compact(labels: np.ndarray) -> np.ndarray:
    """Integers ``[N]`` when every row of a multi-hot matrix has exactly one label, else as is.

    Integer labels are returned unchanged.
    """
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[0] and np.all(array.sum(axis=1) == 1):
        return np.argmax(array, axis=1).astype(np.int32)
    return array


def label_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Images carrying each class, int64 ``[C]`` (a multi-label image counts for each label)."""
    array = np.asarray(labels)
    if array.ndim == 2:
        return array.sum(axis=0, dtype=np.int64)
    return np.bincount(array.astype(np.int64), minlength=num_classes)


def from_names(names_per_item: Iterable[Iterable[str]], class_names: Sequence[str]) -> np.ndarray:
    """Multi-hot uint8 ``[N, C]`` from each item's label names.

    Raises:
        KeyError: A name is not in ``class_names`` (the key is the unknown name).
    """
    index = {name: i for i, name in enumerate(class_names)}
    rows = [[index[name] for name in names] for names in names_per_item]
    out = np.zeros((len(rows), len(class_names)), np.uint8)
    lengths = np.fromiter((len(r) for r in rows), np.int64, count=len(rows))
    flat = np.fromiter((c for r in rows for c in r), np.int64, count=int(lengths.sum()))
    out[np.repeat(np.arange(len(rows)), lengths), flat] = 1
    return out


def label_indices(labels: np.ndarray) -> list[tuple[int, ...]]:
    """Each item's class indices, ascending: ``(c,)`` for an integer label."""
    array = np.asarray(labels)
    if array.ndim == 2:
        if not array.shape[0]:
            return []
        rows, cols = np.nonzero(array)
        splits = np.searchsorted(rows, np.arange(1, array.shape[0]))
        return [tuple(int(c) for c in part) for part in np.split(cols, splits)]
    return [(int(v),) for v in array]


def row_keys(labels: np.ndarray) -> list[int | tuple[int, ...]]:
    """One hashable, JSON-friendly value per item: the integer, or the tuple of indices."""
    array = np.asarray(labels)
    return label_indices(array) if array.ndim == 2 else [int(v) for v in array]


def to_names(labels: np.ndarray, class_names: Sequence[str]) -> list[tuple[str, ...]]:
    """Each item's label names, in class order."""
    return [tuple(class_names[c] for c in row) for row in label_indices(labels)]


def join_names(labels: np.ndarray, class_names: Sequence[str]) -> list[str]:
    """Each item's label names joined by ``;`` (``"Forest;River"``), for display."""
    return [SEPARATOR.join(names) for names in to_names(labels, class_names)]
