"""A prepared dataset: the scan (or a bring-your-own features file), its split, subset inputs.

:class:`Prepared` is what every step after ``prepare`` works on; :class:`SubsetInputs` is one
subset as a model sees it (feature rows or image paths, with labels). :func:`cached_scan`
re-uses a verified scan while the files under the dataset root are unchanged, so standalone
verbs do not decode every image again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from hpsh_tf2.atomic import write_json_atomic
from hpsh_tf2.data.formats import ReadRequest
from hpsh_tf2.data.images import BandReading
from hpsh_tf2.data.labels import row_keys
from hpsh_tf2.data.scan import ScanResult, SkippedFile, scan_dataset
from hpsh_tf2.data.split import SUBSET_NAMES, Split
from hpsh_tf2.errors import DatasetError
from hpsh_tf2.features import FeatureSet
from hpsh_tf2.registry import DATA_FORMATS

__all__ = [
    "Prepared",
    "SubsetInputs",
    "cached_scan",
    "data_format",
    "read_data",
    "scan_from_features",
    "subset_inputs",
    "tree_fingerprint",
]

logger = logging.getLogger(__name__)
_SCAN_CACHE_FORMAT = "hpsh-scan/1"


@dataclass(frozen=True)
class SubsetInputs:
    """One subset as a model sees it: feature rows or image paths, with labels.

    Attributes:
        labels: int32 [N].
        features: float32 [N, D] in features mode, else ``None``.
        paths: Absolute image paths in end-to-end mode, else ``None``.
    """

    labels: np.ndarray
    features: np.ndarray | None = None
    paths: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.labels)


def subset_inputs(
    labels: Sequence[int],
    *,
    features: np.ndarray | None = None,
    paths: Sequence[str] | None = None,
) -> SubsetInputs:
    """Builds :class:`SubsetInputs` with dtype normalisation (int32 labels, float32 rows)."""
    return SubsetInputs(
        labels=np.asarray(labels, np.int32),
        features=None if features is None else np.asarray(features, np.float32),
        paths=None if paths is None else tuple(paths),
    )


@dataclass(frozen=True)
class Prepared:
    """A scanned (or loaded) dataset and its split.

    Attributes:
        scan: The images (or the rows of a bring-your-own features file).
        split: The train/val/test split.
        split_created: Whether this call made the split (False: re-used ``split.json``).
        features: The bring-your-own features, if ``data.features`` is set.
    """

    scan: ScanResult
    split: Split
    split_created: bool
    features: FeatureSet | None = None

    @property
    def root(self) -> Path:
        """The image root (for bring-your-own features: the folder of the .npz)."""
        return Path(self.scan.root)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The label map."""
        return tuple(self.split.class_names)

    def subset_paths(self, name: str) -> tuple[str, ...]:
        """Relative paths of one subset."""
        return tuple(self.split.subsets[name].paths)

    def subset_labels(self, name: str) -> np.ndarray:
        """Labels of one subset (int32)."""
        return np.asarray(self.split.subsets[name].labels, np.int32)

    def all_paths(self) -> tuple[str, ...]:
        """Every split path, train then val then test: the row order of cached features."""
        return tuple(p for name in SUBSET_NAMES for p in self.subset_paths(name))

    def inputs(self, name: str, features: dict[str, np.ndarray] | None = None) -> SubsetInputs:
        """One subset as model inputs: its feature rows if ``features`` is given, else images.

        Args:
            name: ``"train"``, ``"val"`` or ``"test"``.
            features: Feature rows per subset name (features mode), or ``None`` (image paths).
        """
        labels = self.subset_labels(name)
        if features is not None:
            return subset_inputs(labels, features=features[name])
        return subset_inputs(labels, paths=[str(self.root / p) for p in self.subset_paths(name)])

    def feature_rows(self) -> dict[str, np.ndarray]:
        """The bring-your-own feature rows of each subset, in split order.

        Raises:
            DatasetError: If this dataset has no features file.
        """
        if self.features is None:
            raise DatasetError("this dataset has images, not a features file (data.features)")
        index = {path: row for row, path in enumerate(self.features.paths)}
        rows = self.features.features
        return {name: rows[[index[p] for p in self.subset_paths(name)]] for name in SUBSET_NAMES}


def scan_from_features(features: FeatureSet, source: str | os.PathLike[str]) -> ScanResult:
    """A :class:`ScanResult` over the rows of a features file (root = the file's folder)."""
    return ScanResult(
        root=str(Path(source).resolve().parent),
        class_names=features.class_names,
        paths=features.paths,
        labels=features.labels,
    )


def tree_fingerprint(root: str | os.PathLike[str]) -> str:
    """A cheap fingerprint of a folder-per-class tree: every entry's name, size and mtime_ns.

    Reads directory entries and ``stat`` results only (no file contents). An entry that cannot
    be stat'ed (a dangling or looping link) contributes its error, so it still counts.
    """
    digest = hashlib.sha256()
    top = Path(root)
    for entry in _sorted_scandir(top):
        digest.update(_entry_line(entry, entry.name))
        if _is_dir(entry):
            for child in _sorted_scandir(Path(entry.path)):
                digest.update(_entry_line(child, f"{entry.name}/{child.name}"))
    return digest.hexdigest()[:32]


def _sorted_scandir(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError:
        return []


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _entry_line(entry: os.DirEntry[str], name: str) -> bytes:
    try:
        stat = entry.stat()
        line = f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n"
    except OSError as err:
        line = f"{name}\terror {err.errno}\n"
    return line.encode("utf-8", "surrogateescape")


def _scan_key(
    root: Path, on_bad_image: str, verify: bool, reading: BandReading | None = None
) -> str:
    payload = {
        "format": _SCAN_CACHE_FORMAT,
        "root": str(root),
        "on_bad_image": on_bad_image,
        "verify": verify,
        "tree": tree_fingerprint(root),
    }
    if reading is not None and reading.active:  # absent otherwise: existing keys stay valid
        payload["reading"] = reading.key()
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _scan_to_json(scan: ScanResult, key: str) -> dict:
    return {
        "format": _SCAN_CACHE_FORMAT,
        "key": key,
        "root": scan.root,
        "class_names": list(scan.class_names),
        "paths": list(scan.paths),
        "multi_label": scan.multi_label,
        "labels": [list(v) if isinstance(v, tuple) else v for v in row_keys(scan.labels)],
        "skipped": [
            {"path": s.path, "reason": s.reason, "labels": list(s.labels)} for s in scan.skipped
        ],
        "ignored": scan.ignored,
    }


def _labels_from_json(raw: dict) -> np.ndarray:
    if not raw.get("multi_label", False):
        return np.asarray(raw["labels"], np.int32)
    hot = np.zeros((len(raw["labels"]), len(raw["class_names"])), np.uint8)
    for row, indices in enumerate(raw["labels"]):
        hot[row, indices] = 1
    return hot


def _scan_from_json(raw: dict) -> ScanResult:
    return ScanResult(
        root=raw["root"],
        class_names=tuple(raw["class_names"]),
        paths=tuple(raw["paths"]),
        labels=_labels_from_json(raw),
        skipped=tuple(
            SkippedFile(s["path"], s["reason"], tuple(s.get("labels", ()))) for s in raw["skipped"]
        ),
        ignored=int(raw["ignored"]),
    )


def _read_scan_cache(path: Path, key: str) -> ScanResult | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or raw.get("key") != key:
        return None
    try:
        return _scan_from_json(raw)
    except (KeyError, TypeError, ValueError):
        logger.warning("ignoring a malformed scan cache %s", path)
        return None


def cached_scan(
    root: str | os.PathLike[str],
    cache_path: str | os.PathLike[str],
    *,
    on_bad_image: Literal["skip", "error"] = "skip",
    verify: bool = True,
    reading: BandReading | None = None,
) -> tuple[ScanResult, bool]:
    """:func:`~hpsh_tf2.data.scan.scan_dataset`, re-used while the tree is unchanged.

    The cache key covers the dataset root, the scan options and every entry's name, size and
    mtime_ns (:func:`tree_fingerprint`): adding, removing, replacing or touching a file rescans.

    Args:
        root: Folder holding one sub-folder per class.
        cache_path: Where the scan is cached (``RunLayout.scan_cache``).
        on_bad_image: As in ``scan_dataset``.
        verify: As in ``scan_dataset``.
        reading: As in ``scan_dataset`` (part of the key when active).

    Returns:
        ``(scan, hit)``: the scan and whether it came from the cache.
    """
    root_path = Path(os.path.abspath(Path(root).expanduser()))
    cache_path = Path(cache_path)
    key = _scan_key(root_path, on_bad_image, verify, reading) if root_path.is_dir() else None
    if key is not None:
        cached = _read_scan_cache(cache_path, key)
        if cached is not None:
            return cached, True
    scan = scan_dataset(root_path, on_bad_image=on_bad_image, verify=verify, reading=reading)
    if key is not None:
        write_json_atomic(cache_path, _scan_to_json(scan, key))
    return scan, False


def data_format(format_name: str | None, manifest: str | None) -> str:
    """The ``data.format`` in effect: as set, else manifest with a manifest, else folders."""
    if format_name is not None:
        return format_name
    return "manifest" if manifest is not None else "folders"


def read_data(
    format_name: str, request: ReadRequest, cache_path: str | os.PathLike[str]
) -> tuple[ScanResult, bool]:
    """Reads a dataset with the ``data.format`` reader (:data:`~hpsh_tf2.registry.DATA_FORMATS`).

    ``folders`` goes through :func:`cached_scan` (the verified scan is re-used while the tree is
    unchanged); the other formats are read each time.

    Returns:
        ``(scan, hit)``: the scan and whether it came from the scan cache.
    """
    if format_name == "folders" and request.root is not None:
        return cached_scan(
            request.root,
            cache_path,
            on_bad_image=request.on_bad_image,  # type: ignore[arg-type]
            verify=request.verify,
            reading=request.reading,
        )
    reader = DATA_FORMATS.get(format_name)
    if not request.verify or format_name not in _VERIFIED_LISTS:
        return reader(request), False
    # A listing without decoding (labels, presence) keys the cache of the verified scan.
    listing = reader(dataclasses.replace(request, verify=False))
    key = _listing_key(format_name, request, listing)
    cached = _read_scan_cache(Path(cache_path), key)
    if cached is not None:
        return cached, True
    scan = reader(request)
    write_json_atomic(cache_path, _scan_to_json(scan, key))
    return scan, False


_VERIFIED_LISTS = ("manifest", "mlrsnet", "ucmd_multilabel")
"""Formats whose images are decoded by ``verify``: their verified scan is cached."""


def _listing_key(format_name: str, request: ReadRequest, listing: ScanResult) -> str:
    """Hash of the format, options, listed paths with labels, and every listed file's stat."""
    digest = hashlib.sha256()
    payload = {
        "format": _SCAN_CACHE_FORMAT,
        "data_format": format_name,
        "root": listing.root,
        "manifest": request.manifest,
        "on_bad_image": request.on_bad_image,
        "class_names": list(listing.class_names),
        "labels": [list(v) if isinstance(v, tuple) else v for v in row_keys(listing.labels)],
        "missing": sorted(s.path for s in listing.skipped),
    }
    if request.reading.active:
        payload["reading"] = request.reading.key()
    digest.update(json.dumps(payload, sort_keys=True).encode())
    root = Path(listing.root)
    for rel in listing.paths:
        try:
            stat = (root / rel).stat()
            line = f"{rel}\t{stat.st_size}\t{stat.st_mtime_ns}\n"
        except OSError as err:
            line = f"{rel}\terror {err.errno}\n"
        digest.update(line.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:32]
