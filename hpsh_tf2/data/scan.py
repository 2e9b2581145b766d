"""Scan a folder-per-class image dataset into paths and integer labels.

Layout: ``root/<class name>/<image file>``. Classes are sorted by name (Python string order, so
upper case sorts before lower case) and labelled 0, 1, ...; files are sorted by name inside each
class. Hidden entries (leading ``.``), non-image files and sub-folders of class folders are
ignored and counted; image files lying directly in ``root`` are an error.

Symbolic links are followed, except loops: a link that cannot be resolved (``ln -s x.jpg x.jpg``,
``errno ELOOP``) is left out like an undecodable image (listed in ``ScanResult.skipped`` with its
reason, or an error with ``on_bad_image="error"``), and so is a class folder that links back to
the dataset root or one of its parents (``ln -s . root/loop``), which would otherwise be scanned
as a class holding the other classes.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from hpsh_tf2.data.images import (
    IMAGE_EXTENSIONS,
    BandReading,
    decode_error,
    has_image_extension,
)
from hpsh_tf2.data.labels import is_multi_label, label_counts, validate_labels
from hpsh_tf2.errors import BadImageError, DatasetError

__all__ = [
    "ScanResult",
    "SkippedFile",
    "check_images",
    "resolve_root",
    "scan_dataset",
    "scan_workers",
]

logger = logging.getLogger(__name__)

_ON_BAD_IMAGE = ("skip", "error")
_DEFAULT_MAX_WORKERS = 8


@dataclass(frozen=True)
class SkippedFile:
    """An image file left out of a scan.

    Attributes:
        path: Path relative to the dataset root (POSIX separators).
        reason: Why it was left out (the decoder's message).
        labels: The label names it carried, when they are not its folder name (a manifest or
            a label table); empty for a folder-per-class scan.
    """

    path: str
    reason: str
    labels: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class ScanResult:
    """The images found under a dataset root.

    Attributes:
        root: The dataset root, as an absolute path.
        class_names: Class folder names, sorted; a label indexes this tuple.
        paths: Image paths relative to ``root`` with POSIX separators, e.g.
            ``"Airport/airport_1.jpg"``; grouped by class, sorted by name inside a class.
        labels: int32 ``[N]`` (one class per path) or uint8 multi-hot ``[N, C]`` (several
            labels per path; see :mod:`hpsh_tf2.data.labels`), read-only.
        skipped: Image files left out because they could not be decoded.
        ignored: Count of hidden entries, non-image files and sub-folders that were ignored.
    """

    root: str
    class_names: tuple[str, ...]
    paths: tuple[str, ...]
    labels: np.ndarray
    skipped: tuple[SkippedFile, ...] = ()
    ignored: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "labels", validate_labels(self.labels, len(self.class_names), len(self.paths))
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScanResult):
            return NotImplemented
        return (
            (self.root, self.class_names, self.paths, self.skipped, self.ignored)
            == (other.root, other.class_names, other.paths, other.skipped, other.ignored)
        ) and np.array_equal(self.labels, other.labels)

    def __hash__(self) -> int:
        return hash((self.root, self.class_names, self.paths, self.labels.tobytes()))

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def multi_label(self) -> bool:
        """Whether the labels are multi-hot ``[N, C]``."""
        return is_multi_label(self.labels)

    def counts_per_class(self) -> dict[str, int]:
        """Number of (valid) images per class, in class order (multi-label: per label)."""
        counts = label_counts(self.labels, len(self.class_names))
        return {name: int(count) for name, count in zip(self.class_names, counts)}

    def skipped_per_class(self) -> dict[str, int]:
        """Number of skipped (undecodable) images per class, in class order."""
        counts = dict.fromkeys(self.class_names, 0)
        for item in self.skipped:
            if item.labels:
                for name in item.labels:
                    counts[name] = counts.get(name, 0) + 1
                continue
            name = item.path.split("/", 1)[0]
            if "/" in item.path and name in counts:  # root-level link loops belong to no class
                counts[name] += 1
        return counts

    def absolute_paths(self) -> tuple[str, ...]:
        """The image paths joined to ``root`` (native separators)."""
        return tuple(os.path.join(self.root, *path.split("/")) for path in self.paths)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _sorted_entries(folder: Path) -> list[os.DirEntry[str]]:
    with os.scandir(folder) as entries:
        return sorted(entries, key=lambda entry: entry.name)


_LOOP_REASON = "symbolic link loop (the link resolves to itself)"


def _kind(entry: os.DirEntry[str]) -> str:
    """``"dir"``, ``"file"``, ``"loop"`` (a symlink that cannot be resolved) or ``"other"``."""
    try:
        if entry.is_dir():
            return "dir"
        if entry.is_file():
            return "file"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "loop"
        raise
    return "other"


def _links_to_ancestor(entry: os.DirEntry[str], root: Path) -> bool:
    """Whether a folder entry is a symlink resolving to ``root`` or one of its parents."""
    if not entry.is_symlink():
        return False
    target = Path(os.path.realpath(entry.path))
    real_root = Path(os.path.realpath(root))
    return target == real_root or target in real_root.parents


def _list_classes(root: Path) -> tuple[list[str], int, list[SkippedFile]]:
    """Class folder names (sorted), ignored entries directly in ``root`` and link loops."""
    classes: list[str] = []
    loops: list[SkippedFile] = []
    ignored = 0
    for entry in _sorted_entries(root):
        kind = "hidden" if _is_hidden(entry.name) else _kind(entry)
        if kind == "dir" and _links_to_ancestor(entry, root):
            loops.append(
                SkippedFile(
                    entry.name,
                    "symbolic link loop (a folder linking to the "
                    "dataset root or one of its parents)",
                )
            )
        elif kind == "loop":
            loops.append(SkippedFile(entry.name, _LOOP_REASON))
        elif kind == "dir":
            classes.append(entry.name)
        elif kind != "hidden" and has_image_extension(entry.name):
            raise DatasetError(
                f"Image file {entry.path!r} lies directly in the dataset root; expected "
                "images inside one folder per class (root/<class>/<image>)"
            )
        else:
            ignored += 1
    return classes, ignored, loops


def _list_images(class_dir: Path) -> tuple[list[str], int, list[str]]:
    """Image file names of one class folder (sorted), ignored entries and looping links."""
    names: list[str] = []
    loops: list[str] = []
    ignored = 0
    for entry in _sorted_entries(class_dir):
        if _is_hidden(entry.name) or not has_image_extension(entry.name):
            ignored += 1
            continue
        kind = _kind(entry)
        if kind == "file":
            names.append(entry.name)
        elif kind == "loop":
            loops.append(entry.name)
        else:
            ignored += 1
    return names, ignored, loops


def _check_image(path: str, reading: BandReading | None = None) -> str | None:
    """None if the image decodes completely, else the reason it does not."""
    error = decode_error(path, reading)
    return None if error is None else error.reason


def check_images(
    root: Path, rel_paths: list[str], num_workers: int, reading: BandReading | None = None
) -> list[str | None]:
    """Decode every image fully (in a thread pool); per path None or the reason it fails.

    Args:
        root: The dataset root.
        rel_paths: Image paths relative to ``root`` (``/``-separated).
        num_workers: Decoding threads.
        reading: How GeoTIFFs are read (:func:`hpsh_tf2.data.images.load_image_bands`).

    Raises:
        BandError: The band reading does not fit a file (a config error: never a skip).
    """
    full = [os.path.join(root, *rel.split("/")) for rel in rel_paths]
    if num_workers == 1 or len(full) <= 1:
        return [_check_image(path, reading) for path in full]
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        return list(pool.map(lambda path: _check_image(path, reading), full))


def scan_workers(on_bad_image: str, num_workers: int | None) -> int:
    """Checks ``on_bad_image`` and returns the number of verification threads."""
    if on_bad_image not in _ON_BAD_IMAGE:
        raise DatasetError(f"Received: on_bad_image={on_bad_image!r}; expected 'skip' or 'error'")
    if num_workers is None:
        return min(_DEFAULT_MAX_WORKERS, os.cpu_count() or 1)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(
            f"Received: num_workers={num_workers!r}; expected a positive integer or None"
        )
    return num_workers


def resolve_root(root: str | os.PathLike[str]) -> Path:
    """The dataset root as an absolute path; DatasetError if it is missing or not a folder."""
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetError(f"Dataset root {str(path)!r} does not exist")
    if not path.is_dir():
        raise DatasetError(f"Dataset root {str(path)!r} is not a folder")
    return Path(os.path.abspath(path))


def _bad_images(
    rel_paths: Iterable[str], reasons: Iterable[str | None], on_bad_image: str, root: Path
) -> list[SkippedFile]:
    skipped = [SkippedFile(p, r) for p, r in zip(rel_paths, reasons) if r is not None]
    if skipped and on_bad_image == "error":
        first = skipped[0]
        raise BadImageError(str(root.joinpath(*first.path.split("/"))), first.reason)
    return skipped


def _list_all_images(
    root: Path, class_names: list[str]
) -> tuple[list[list[str]], int, list[SkippedFile]]:
    per_class: list[list[str]] = []
    loops: list[SkippedFile] = []
    ignored = 0
    for name in class_names:
        files, class_ignored, class_loops = _list_images(root / name)
        ignored += class_ignored
        per_class.append([f"{name}/{file}" for file in files])
        loops.extend(SkippedFile(f"{name}/{file}", _LOOP_REASON) for file in class_loops)
    return per_class, ignored, loops


def _keep_good(
    root: Path, class_names: list[str], per_class: list[list[str]], bad: set[str]
) -> tuple[list[str], list[int]]:
    paths: list[str] = []
    labels: list[int] = []
    for label, (name, files) in enumerate(zip(class_names, per_class)):
        good = [path for path in files if path not in bad]
        if not good:
            detail = f" ({len(files)} undecodable image(s) skipped)" if files else ""
            raise DatasetError(
                f"Class folder {str(root / name)!r} has no valid images{detail}; expected "
                f"at least one file ending in one of {', '.join(IMAGE_EXTENSIONS)}"
            )
        paths.extend(good)
        labels.extend([label] * len(good))
    return paths, labels


def scan_dataset(
    root: str | os.PathLike[str],
    *,
    on_bad_image: Literal["skip", "error"] = "skip",
    verify: bool = True,
    num_workers: int | None = None,
    reading: BandReading | None = None,
) -> ScanResult:
    """Find the images of a folder-per-class dataset and label them by folder.

    Args:
        root: Folder holding one sub-folder per class.
        on_bad_image: What to do with files that have an image extension but do not decode
            (only checked when ``verify``): ``"skip"`` leaves them out and lists them in
            ``ScanResult.skipped``; ``"error"`` raises :class:`BadImageError` for the first.
        verify: Fully decode every image with Pillow now (in a thread pool), so broken files are
            found before training rather than in the middle of it.
        num_workers: Threads for verification; None means ``min(8, os.cpu_count())``.
        reading: How GeoTIFFs are verified (``data.bands``, ``data.band_scale``,
            ``model.input_bands``); None: Pillow, as before.

    Returns:
        The :class:`ScanResult`.

    Raises:
        DatasetError: If ``root`` is missing or not a folder, has no class folders, has image
            files directly inside it, or a class folder has no (valid) images; or if
            ``on_bad_image`` is not ``"skip"``/``"error"``.
        BadImageError: For an undecodable image when ``on_bad_image="error"``.
        BandError: With ``verify``, when the band reading does not fit a file.
        ValueError: If ``num_workers`` is not a positive integer or None.
    """
    workers = scan_workers(on_bad_image, num_workers)
    root_path = resolve_root(root)
    class_names, ignored, root_loops = _list_classes(root_path)
    if not class_names:
        raise DatasetError(
            f"Dataset root {str(root_path)!r} has no class folders; expected "
            "root/<class>/<image> with one folder per class"
        )
    per_class, class_ignored, loops = _list_all_images(root_path, class_names)
    loops = root_loops + loops
    if loops and on_bad_image == "error":
        first = loops[0]
        raise BadImageError(str(root_path.joinpath(*first.path.split("/"))), first.reason)
    for loop in root_loops:
        logger.warning("scan: skipped %s: %s", root_path / loop.path, loop.reason)
    candidates = [path for paths in per_class for path in paths]
    reasons = (
        check_images(root_path, candidates, workers, reading)
        if verify
        else [None] * len(candidates)
    )
    skipped = loops + _bad_images(candidates, reasons, on_bad_image, root_path)
    paths, labels = _keep_good(root_path, class_names, per_class, {s.path for s in skipped})
    return ScanResult(
        root=str(root_path),
        class_names=tuple(class_names),
        paths=tuple(paths),
        labels=np.asarray(labels, dtype=np.int32),
        skipped=tuple(skipped),
        ignored=ignored + class_ignored,
    )
