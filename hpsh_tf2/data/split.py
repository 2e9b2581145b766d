"""Stratified, seeded train/val/test splits, saved to and checked against ``split.json``.

Per class with ``n`` images (fractions ``train + val + test = 1``)::

    n_trainval = ceil((train + val) * n - 1e-9)
    n_val      = floor(val * n + 0.5 + 1e-9)          # round half up, carved from trainval
    n_train    = n_trainval - n_val
    n_test     = n - n_trainval

so 60/40 of a class of 100 (UCMD) is 60/40 and of AID's classes (220..420 images, multiples of
10) exactly 60/40 as in the paper. Each class is sorted by path, permuted with
``np.random.default_rng(seed)`` (one generator, classes in label order), and cut in that order:
train, val, test. The result depends only on the set of (path, label) pairs and the seed, not on
the input order. Subsets are stored sorted by (label, path).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpsh_tf2.atomic import write_text_atomic
from hpsh_tf2.data.labels import is_multi_label, label_counts, row_keys, validate_labels
from hpsh_tf2.data.scan import ScanResult
from hpsh_tf2.data.stratify import iterative_stratification
from hpsh_tf2.errors import DatasetError

__all__ = [
    "SPLIT_METHODS",
    "SUBSET_NAMES",
    "Split",
    "Subset",
    "check_split_matches",
    "load_split",
    "make_split",
    "prepare_split",
    "random_split_indices",
    "save_split",
    "split_counts",
    "split_table",
]

SUBSET_NAMES: tuple[str, ...] = ("train", "val", "test")
SPLIT_METHODS: tuple[str, ...] = ("stratified", "random")
_SUM_TOLERANCE = 1e-6
_EDGE = 1e-9
_EXAMPLES = 3


@dataclass(frozen=True, eq=False)
class Subset:
    """One part of a split.

    Attributes:
        paths: Image paths relative to the dataset root (POSIX), sorted by (label, path)
            (multi-label: by path).
        labels: int32 labels ``[N]``, or uint8 multi-hot ``[N, C]`` (read-only array).
    """

    paths: tuple[str, ...]
    labels: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", tuple(self.paths))
        if is_multi_label(self.labels):
            labels = np.array(self.labels, dtype=np.uint8)
        else:
            labels = np.array(self.labels, dtype=np.int32).reshape(-1)
        if labels.shape[0] != len(self.paths):
            raise ValueError(
                f"Received: {labels.shape[0]} labels for {len(self.paths)} paths; "
                "expected one label per path"
            )
        labels.setflags(write=False)
        object.__setattr__(self, "labels", labels)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Subset):
            return NotImplemented
        return self.paths == other.paths and np.array_equal(self.labels, other.labels)

    def __hash__(self) -> int:
        return hash((self.paths, self.labels.tobytes()))

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class Split:
    """A stratified train/val/test split of one dataset.

    Attributes:
        class_names: Class names; labels index this tuple.
        subsets: ``{"train": Subset, "val": Subset, "test": Subset}`` (val may be empty).
        fractions: The requested ``{"train", "val", "test"}`` fractions.
        seed: The seed the split was drawn with.
        method: ``"stratified"`` (per class) or ``"random"`` (:func:`random_split_indices`).
    """

    class_names: tuple[str, ...]
    subsets: dict[str, Subset]
    fractions: dict[str, float]
    seed: int
    method: str = "stratified"

    def __post_init__(self) -> None:
        if set(self.subsets) != set(SUBSET_NAMES):
            raise ValueError(
                f"Received: subsets {sorted(self.subsets)}; expected exactly {list(SUBSET_NAMES)}"
            )
        if set(self.fractions) != set(SUBSET_NAMES):
            raise ValueError(
                f"Received: fractions {sorted(self.fractions)}; expected {list(SUBSET_NAMES)}"
            )
        object.__setattr__(self, "class_names", tuple(self.class_names))

    def counts(self) -> dict[str, dict[str, int]]:
        """Per class name, the number of images in each subset."""
        return split_counts(self)

    @property
    def multi_label(self) -> bool:
        """Whether the subsets carry multi-hot labels ``[N, C]``."""
        return is_multi_label(self.subsets["train"].labels)


# --------------------------------------------------------------------------- making


def _validate_fractions(train: float, val: float, test: float) -> dict[str, float]:
    fractions = {"train": train, "val": val, "test": test}
    for name, value in fractions.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"Received: {name}={value!r}; expected a number in [0, 1]")
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"Received: {name}={value!r}; expected a number in [0, 1]")
    total = train + val + test
    if abs(total - 1.0) > _SUM_TOLERANCE:
        raise ValueError(
            f"Received: train={train}, val={val}, test={test} (sum {total:.6g}); "
            "expected fractions that sum to 1"
        )
    if train <= 0 or test <= 0:
        raise ValueError(f"Received: train={train}, test={test}; expected train > 0 and test > 0")
    return {name: float(value) for name, value in fractions.items()}


def _validate_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"Received: seed={seed!r}; expected a non-negative integer")
    return int(seed)


def _validate_inputs(
    paths: Sequence[str], labels: Sequence[int] | np.ndarray, class_names: Sequence[str]
) -> tuple[list[str], np.ndarray]:
    path_list = [str(p) for p in paths]
    label_array = np.asarray(labels)
    if label_array.ndim == 2:
        label_array = validate_labels(label_array, len(class_names), len(path_list))
        if len(set(path_list)) != len(path_list):
            raise ValueError("Received: duplicate paths; expected each image path once")
        return path_list, label_array
    if label_array.ndim != 1 or label_array.shape[0] != len(path_list):
        raise ValueError(
            f"Received: labels of shape {label_array.shape} for {len(path_list)} paths; "
            "expected one label per path"
        )
    if label_array.size and not np.issubdtype(label_array.dtype, np.integer):
        raise ValueError(f"Received: labels of dtype {label_array.dtype}; expected integers")
    if label_array.size and (label_array.min() < 0 or label_array.max() >= len(class_names)):
        raise ValueError(
            f"Received: labels in [{label_array.min()}, {label_array.max()}]; expected values "
            f"in [0, {len(class_names) - 1}] for {len(class_names)} class names"
        )
    if len(set(path_list)) != len(path_list):
        raise ValueError("Received: duplicate paths; expected each image path once")
    return path_list, label_array.astype(np.int32)


def _class_counts(n: int, fractions: Mapping[str, float]) -> tuple[int, int, int]:
    """(n_train, n_val, n_test) for a class of ``n`` images."""
    n_trainval = min(n, math.ceil((fractions["train"] + fractions["val"]) * n - _EDGE))
    n_val = min(n_trainval, math.floor(fractions["val"] * n + 0.5 + _EDGE))
    return n_trainval - n_val, n_val, n - n_trainval


def _subset(paths: list[str], labels: list[int]) -> Subset:
    order = sorted(range(len(paths)), key=lambda i: (labels[i], paths[i]))
    return Subset(
        paths=tuple(paths[i] for i in order),
        labels=np.asarray([labels[i] for i in order], dtype=np.int32),
    )


def make_split(
    paths: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    *,
    train: float = 0.6,
    val: float = 0.0,
    test: float = 0.4,
    seed: int,
    method: str = "stratified",
) -> Split:
    """Split images per class into train, val and test (stratified, seeded).

    Multi-hot labels ``[N, C]`` are split by iterative stratification
    (:func:`~hpsh_tf2.data.stratify.iterative_stratification`, fractions ``train/val/test``
    directly), so that every label keeps its share in each subset; subsets are sorted by path.

    ``method="random"`` ignores the labels instead: :func:`random_split_indices` (the
    multi-label development protocol's seeded random split).

    Args:
        paths: Image paths (relative to the dataset root), unique.
        labels: Integer label per path, indexing ``class_names``, or multi-hot ``[N, C]``.
        class_names: All class names; each needs at least one train and one test image.
        train: Fraction of each class for training, > 0.
        val: Fraction for validation (carved out of the train+val part), may be 0.
        test: Fraction for testing, > 0. The three must sum to 1 (within 1e-6).
        seed: Non-negative integer for ``np.random.default_rng``.

    Returns:
        The :class:`Split` (counts per class as in the module docstring).

    Raises:
        ValueError: For invalid fractions, seed or inputs.
        DatasetError: If a class would get no train or no test image.
    """
    if method not in SPLIT_METHODS:
        raise ValueError(f"Received: method={method!r}; expected one of {SPLIT_METHODS}")
    if method == "random":
        return _random_split(paths, labels, class_names, train, val, test, seed)
    fractions = _validate_fractions(train, val, test)
    seed = _validate_seed(seed)
    path_list, label_array = _validate_inputs(paths, labels, class_names)
    if label_array.ndim == 2:
        return _multi_label_split(path_list, label_array, tuple(class_names), fractions, seed)
    rng = np.random.default_rng(seed)
    parts: dict[str, tuple[list[str], list[int]]] = {name: ([], []) for name in SUBSET_NAMES}
    for label, name in enumerate(class_names):
        members = sorted(path_list[i] for i in np.flatnonzero(label_array == label))
        n_train, n_val, n_test = _class_counts(len(members), fractions)
        if n_train < 1 or n_test < 1:
            raise DatasetError(
                f"Class {name!r} has {len(members)} image(s): a {train}/{val}/{test} split "
                f"gives {n_train} train and {n_test} test; expected at least 1 of each"
            )
        shuffled = [members[i] for i in rng.permutation(len(members))]
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val)}
        bounds["test"] = (n_train + n_val, len(members))
        for subset, (start, stop) in bounds.items():
            parts[subset][0].extend(shuffled[start:stop])
            parts[subset][1].extend([label] * (stop - start))
    return Split(
        class_names=tuple(class_names),
        subsets={name: _subset(*parts[name]) for name in SUBSET_NAMES},
        fractions=fractions,
        seed=seed,
    )


def _multi_label_split(
    paths: list[str],
    labels: np.ndarray,
    class_names: tuple[str, ...],
    fractions: dict[str, float],
    seed: int,
) -> Split:
    """Iterative stratification (:mod:`hpsh_tf2.data.stratify`) of items sorted by path."""
    order = sorted(range(len(paths)), key=paths.__getitem__)
    sorted_labels = labels[order]
    assignment = iterative_stratification(
        sorted_labels, [fractions[name] for name in SUBSET_NAMES], seed=seed
    )
    subsets = {
        name: Subset(
            paths=tuple(paths[order[i]] for i in np.flatnonzero(assignment == j)),
            labels=sorted_labels[assignment == j],
        )
        for j, name in enumerate(SUBSET_NAMES)
    }
    for name in ("train", "test"):
        if not len(subsets[name]):
            raise DatasetError(
                f"A {fractions['train']}/{fractions['val']}/{fractions['test']} split of "
                f"{len(paths)} image(s) leaves no {name} image; expected at least one"
            )
    return Split(class_names=class_names, subsets=subsets, fractions=fractions, seed=seed)


# --------------------------------------------------------------------------- saving/loading


def _split_to_json(split: Split) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "class_names": list(split.class_names),
        "fractions": {name: split.fractions[name] for name in SUBSET_NAMES},
        "seed": split.seed,
    }
    if split.method != "stratified":
        raw["method"] = split.method  # absent for the stratified split: that format is unchanged
    if split.multi_label:
        raw["multi_label"] = True  # absent for single-label: that format is unchanged
    raw["subsets"] = {
        name: {
            "paths": list(split.subsets[name].paths),
            "labels": [
                list(v) if isinstance(v, tuple) else v for v in row_keys(split.subsets[name].labels)
            ],
        }
        for name in SUBSET_NAMES
    }
    return raw


def save_split(split: Split, path: str | os.PathLike[str]) -> Path:
    """Write a split to JSON atomically (temp file in the same folder, then ``os.replace``).

    Args:
        split: The split.
        path: Target file (its folder is created if needed).

    Returns:
        The path written.
    """
    return write_text_atomic(path, json.dumps(_split_to_json(split), indent=1) + "\n")


def _malformed(path: Path, what: str) -> DatasetError:
    return DatasetError(f"Split file {str(path)!r} is malformed: {what}")


def _require(mapping: Any, key: str, kind: type | tuple[type, ...], path: Path, where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise _malformed(path, f"missing key {where}{key!r}")
    value = mapping[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise _malformed(path, f"{where}{key!r} has type {type(value).__name__}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_subset(raw: Any, name: str, num_classes: int, multi: bool, path: Path) -> Subset:
    where = f"subsets.{name}."
    paths = _require(raw, "paths", list, path, where)
    labels = _require(raw, "labels", list, path, where)
    if not all(isinstance(p, str) for p in paths):
        raise _malformed(path, f"{where}paths must be strings")
    if len(paths) != len(labels):
        raise _malformed(path, f"{where}paths has {len(paths)} entries, labels {len(labels)}")
    if multi:
        if not all(isinstance(v, list) and v and all(map(_is_int, v)) for v in labels):
            raise _malformed(path, f"{where}labels must be non-empty lists of integers")
        flat = [c for v in labels for c in v]
    else:
        if not all(_is_int(v) for v in labels):
            raise _malformed(path, f"{where}labels must be integers")
        flat = labels
    if any(not 0 <= v < num_classes for v in flat):
        raise _malformed(path, f"{where}labels must lie in [0, {num_classes - 1}]")
    if multi:
        hot = np.zeros((len(labels), num_classes), np.uint8)
        lengths = [len(v) for v in labels]
        hot[np.repeat(np.arange(len(labels)), lengths), np.asarray(flat, np.int64)] = 1
        return Subset(paths=tuple(paths), labels=hot)
    return Subset(paths=tuple(paths), labels=np.asarray(labels, dtype=np.int32))


def _parse_split(raw: Any, path: Path) -> Split:
    class_names = _require(raw, "class_names", list, path, "")
    if not class_names or not all(isinstance(c, str) for c in class_names):
        raise _malformed(path, "class_names must be a non-empty list of strings")
    raw_fractions = _require(raw, "fractions", dict, path, "")
    fractions = {
        name: float(_require(raw_fractions, name, (int, float), path, "fractions."))
        for name in SUBSET_NAMES
    }
    seed = _require(raw, "seed", int, path, "")
    raw_subsets = _require(raw, "subsets", dict, path, "")
    multi = raw.get("multi_label", False)
    if not isinstance(multi, bool):
        raise _malformed(path, f"'multi_label' has type {type(multi).__name__}")
    subsets = {
        name: _parse_subset(
            _require(raw_subsets, name, dict, path, "subsets."),
            name,
            len(class_names),
            multi,
            path,
        )
        for name in SUBSET_NAMES
    }
    all_paths = [p for s in subsets.values() for p in s.paths]
    if len(set(all_paths)) != len(all_paths):
        raise _malformed(path, "a path appears more than once (subsets must not overlap)")
    method = raw.get("method", "stratified")
    if method not in SPLIT_METHODS:
        raise _malformed(path, f"method must be one of {list(SPLIT_METHODS)}, not {method!r}")
    return Split(tuple(class_names), subsets, fractions, seed, method)


def load_split(path: str | os.PathLike[str]) -> Split:
    """Read a split written by :func:`save_split`.

    Raises:
        DatasetError: If the file is missing, not JSON, or does not have the expected structure
            (the message names the file and the problem).
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise DatasetError(f"Split file {str(source)!r} does not exist") from err
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"Split file {str(source)!r} cannot be read: {err}") from err
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise _malformed(source, f"not valid JSON ({err})") from err
    return _parse_split(raw, source)


# --------------------------------------------------------------------------- checking


def _examples(items: Sequence[str]) -> str:
    shown = ", ".join(repr(p) for p in list(items)[:_EXAMPLES])
    return shown + (", ..." if len(items) > _EXAMPLES else "")


def _mismatches(split: Split, scan: ScanResult) -> list[str]:
    if tuple(split.class_names) != tuple(scan.class_names):
        return [
            f"class names differ (split: {list(split.class_names)}, "
            f"dataset: {list(scan.class_names)})"
        ]
    if split.multi_label != scan.multi_label:
        kinds = {True: "multi-label", False: "single-label"}
        return [f"the split is {kinds[split.multi_label]}, the dataset {kinds[scan.multi_label]}"]
    on_disk = dict(zip(scan.paths, row_keys(scan.labels)))
    skipped = {item.path for item in scan.skipped}
    known = {p: v for s in split.subsets.values() for p, v in zip(s.paths, row_keys(s.labels))}
    problems = []
    unreadable = sorted(p for p in known if p not in on_disk and p in skipped)
    missing = sorted(p for p in known if p not in on_disk and p not in skipped)
    relabelled = sorted(p for p, v in known.items() if p in on_disk and on_disk[p] != v)
    added = sorted(p for p in on_disk if p not in known)
    if missing:
        problems.append(
            f"{len(missing)} split image(s) are no longer on disk: {_examples(missing)}"
        )
    if unreadable:
        problems.append(
            f"{len(unreadable)} split image(s) no longer decode: {_examples(unreadable)}"
        )
    if relabelled:
        problems.append(f"{len(relabelled)} image(s) changed class: {_examples(relabelled)}")
    if added:
        problems.append(f"{len(added)} image(s) are not in the split: {_examples(added)}")
    return problems


def check_split_matches(split: Split, scan: ScanResult) -> None:
    """Check that a saved split still describes the dataset on disk; never re-splits.

    Raises:
        DatasetError: If the class names differ, a split image is gone (or no longer decodes),
            an image changed class, or the dataset has images the split does not know. The
            message gives counts and a few example paths.
    """
    problems = _mismatches(split, scan)
    if problems:
        raise DatasetError(
            f"The saved split does not match the dataset at {scan.root!r}: "
            + "; ".join(problems)
            + ". Delete split.json to make a new split (results will not be comparable with "
            "the old one) or use another workdir."
        )


def prepare_split(
    scan: ScanResult,
    split_path: str | os.PathLike[str],
    *,
    train: float = 0.6,
    val: float = 0.0,
    test: float = 0.4,
    seed: int,
    method: str = "stratified",
) -> tuple[Split, bool]:
    """Load and check an existing ``split.json``, or make and save a new one.

    Args:
        scan: The dataset as scanned now.
        split_path: Where the split lives (e.g. ``<workdir>/split.json``).
        train: See :func:`make_split`.
        val: See :func:`make_split`.
        test: See :func:`make_split`.
        seed: See :func:`make_split`.
        method: See :func:`make_split` (``data.split.method``).

    Returns:
        ``(split, created)``; ``created`` is True when a new split was written.

    Raises:
        DatasetError: If the existing split was made with other fractions or another seed, or
            does not match the dataset (see :func:`check_split_matches`).
    """
    requested = _validate_fractions(train, val, test)
    seed = _validate_seed(seed)
    target = Path(split_path)
    if not target.exists():
        split = make_split(
            scan.paths,
            scan.labels,
            scan.class_names,
            train=train,
            val=val,
            test=test,
            seed=seed,
            method=method,
        )
        save_split(split, target)
        return split, True
    split = load_split(target)
    same_fractions = all(abs(split.fractions[k] - requested[k]) <= _EDGE for k in SUBSET_NAMES)
    if not same_fractions or split.seed != seed:
        raise DatasetError(
            f"Split file {str(target)!r} was made with fractions {split.fractions} and "
            f"seed={split.seed}; requested {requested} and seed={seed}. Delete it to re-split "
            "or use another workdir."
        )
    if split.method != method:
        raise DatasetError(
            f"Split file {str(target)!r} was made with data.split.method={split.method!r}; "
            f"requested {method!r}. Delete it to re-split or use another workdir."
        )
    check_split_matches(split, scan)
    return split, False


# --------------------------------------------------------------------------- reporting


def split_counts(split: Split) -> dict[str, dict[str, int]]:
    """``{class_name: {"train": n, "val": n, "test": n}}`` in class order."""
    counts = {name: dict.fromkeys(SUBSET_NAMES, 0) for name in split.class_names}
    for subset in SUBSET_NAMES:
        per_label = label_counts(split.subsets[subset].labels, len(split.class_names))
        for name, count in zip(split.class_names, per_label):
            counts[name][subset] = int(count)
    return counts


def split_table(split: Split, scan: ScanResult | None = None) -> str:
    """A plain-text table of images per class and subset, with a total row.

    For multi-label data the rows are labels (an image counts once for each of its labels) and
    the last row, ``images``, counts images, so it is not the column sum.

    Args:
        split: The split.
        scan: If given, a ``skipped`` column counts the undecodable (or missing) images per
            class or label; in the ``images`` row, all skipped images.

    Returns:
        The table (no trailing newline).
    """
    multi = split.multi_label
    headers = ["label" if multi else "class", *SUBSET_NAMES]
    headers += ["skipped"] if scan is not None else []
    skipped = scan.skipped_per_class() if scan is not None else {}
    rows = []
    for name, counts in split_counts(split).items():
        extra = [skipped.get(name, 0)] if scan is not None else []
        rows.append([name, *(counts[s] for s in SUBSET_NAMES), *extra])
    if multi:
        extra = [len(scan.skipped)] if scan is not None else []
        totals = ["images", *(len(split.subsets[s]) for s in SUBSET_NAMES), *extra]
    else:
        totals = ["total", *(sum(row[i] for row in rows) for i in range(1, len(headers)))]
    cells = [headers, *([str(c) for c in row] for row in [*rows, totals])]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def fmt(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(row[1:], widths[1:]))])

    rule = "-" * len(fmt(cells[0]))
    return "\n".join([fmt(cells[0]), rule, *map(fmt, cells[1:-1]), rule, fmt(cells[-1])])


# --------------------------------------------------------------------------- random split


def random_split_indices(
    paths: Sequence[str], *, train: float, val: float, test: float, seed: int
) -> dict[str, np.ndarray]:
    """A seeded random train/val/test split that ignores labels (any label form).

    The multi-label development protocol (a "60/40 random split"): with ``N`` items,
    ``n_trainval = ceil((train + val) * N - 1e-9)``, ``n_val = floor(val * N + 0.5 + 1e-9)``
    carved from it, the rest is test (the per-class rounding of :func:`make_split`, applied to
    the whole set). The items are sorted by path, permuted with
    ``np.random.default_rng(seed)`` and cut in that order: train, val, test, so the result
    depends only on the set of paths and the seed, not on their order.

    Args:
        paths: Item paths, unique.
        train: Training fraction (> 0); the three fractions sum to 1.
        val: Validation fraction (may be 0).
        test: Test fraction (> 0).
        seed: Split seed (>= 0).

    Returns:
        ``{"train", "val", "test"}``: int64 row indices into ``paths``, each sorted by path.

    Raises:
        DatasetError: If train or test would be empty.
        ValueError: On bad fractions, a bad seed or duplicate paths.
    """
    fractions = _validate_fractions(train, val, test)
    seed = _validate_seed(seed)
    path_list = [str(p) for p in paths]
    if len(set(path_list)) != len(path_list):
        raise ValueError("Received: duplicate paths; expected each item path once")
    count = len(path_list)
    n_trainval = math.ceil((fractions["train"] + fractions["val"]) * count - _EDGE)
    n_val = math.floor(fractions["val"] * count + 0.5 + _EDGE)
    n_train = n_trainval - n_val
    if n_train < 1 or count - n_trainval < 1:
        raise DatasetError(
            f"A {train}/{val}/{test} random split of {count} item(s) leaves "
            f"{n_train} train and {count - n_trainval} test item(s); expected at least one each"
        )
    names = np.asarray(path_list, dtype=object)
    by_path = np.argsort(names, kind="stable")
    permuted = by_path[np.random.default_rng(seed).permutation(count)]
    parts = np.split(permuted.astype(np.int64), [n_train, n_trainval])
    return {
        name: part[np.argsort(names[part], kind="stable")]
        for name, part in zip(SUBSET_NAMES, parts)
    }


def _random_split(paths, labels, class_names, train, val, test, seed) -> Split:
    """:func:`make_split` with ``method="random"``: :func:`random_split_indices` subsets."""
    path_list = [str(p) for p in paths]
    label_array = np.asarray(labels)
    if label_array.shape[:1] != (len(path_list),):
        raise ValueError(
            f"Received: labels of shape {label_array.shape} for {len(path_list)} paths; "
            "expected one label (row) per path"
        )
    parts = random_split_indices(path_list, train=train, val=val, test=test, seed=seed)
    subsets = {
        name: Subset(paths=tuple(path_list[i] for i in rows), labels=label_array[rows])
        for name, rows in parts.items()
    }
    return Split(
        class_names=tuple(class_names),
        subsets=subsets,
        fractions=_validate_fractions(train, val, test),
        seed=_validate_seed(seed),
        method="random",
    )
