"""Image lists with labels: manifests (``data.manifest``) and the checks every listed image gets.

A manifest names each image and its labels, paths relative to ``data.root``:

- ``.csv``: a header ``path,labels``, then one row per image; several labels are separated by
  ``;`` (``"tiles/a.png","Forest;River"``). Standard CSV quoting applies.
- ``.jsonl``: one JSON object per line, ``{"path": "tiles/a.png", "labels": ["Forest"]}``.

Every row needs a path (relative, POSIX ``/``, inside the root, an image file name) and at least
one label. The label map is the sorted set of label names (Python string order, as for class
folders). When every image has exactly one label the dataset is single-label (integer labels);
otherwise labels are multi-hot (:mod:`hpsh_tf2.data.labels`). A bad row is one error naming the
file, the line and what was expected.

:func:`scan_listed` is shared by the manifest and the label-table readers
(:mod:`hpsh_tf2.data.formats`): a listed image that is missing or (with ``verify``) does not
decode is skipped and listed in ``ScanResult.skipped`` with its reason, or raises
:class:`~hpsh_tf2.errors.BadImageError` with ``on_bad_image="error"``, as the folder scan does.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hpsh_tf2.data.images import IMAGE_EXTENSIONS, BandReading, has_image_extension
from hpsh_tf2.data.labels import SEPARATOR, compact, from_names, label_counts
from hpsh_tf2.data.scan import (
    ScanResult,
    SkippedFile,
    check_images,
    resolve_root,
    scan_workers,
)
from hpsh_tf2.errors import BadImageError, DatasetError

__all__ = [
    "ListedImage",
    "check_relative_path",
    "check_unique",
    "read_manifest",
    "scan_listed",
    "scan_manifest",
]

logger = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".csv", ".jsonl")
_CSV_HEADER = ["path", "labels"]


@dataclass(frozen=True)
class ListedImage:
    """One image named by a manifest or label table.

    Attributes:
        path: Relative POSIX path under the dataset root.
        labels: Its label names (at least one).
        source: Where it was listed, ``"<file>:<line>"``, for messages.
    """

    path: str
    labels: tuple[str, ...]
    source: str


def _bad_row(file: Path, line: int, what: str) -> DatasetError:
    return DatasetError(f"Manifest {str(file)!r} line {line}: {what}")


def check_relative_path(value: object, file: Path, line: int) -> str:
    """A listed image path: a non-empty relative POSIX path inside the root, an image name.

    Raises:
        DatasetError: Naming the file, the line and what was expected.
    """
    if not isinstance(value, str) or not value.strip():
        raise _bad_row(file, line, f"path {value!r}; expected a non-empty relative path")
    parts = PurePosixPath(value).parts
    if value.startswith("/") or "\\" in value or ".." in parts or ":" in parts[0]:
        raise _bad_row(
            file, line, f"path {value!r}; expected a relative path with '/' inside data.root"
        )
    if not has_image_extension(value):
        raise _bad_row(
            file, line, f"path {value!r}; expected an image file ({', '.join(IMAGE_EXTENSIONS)})"
        )
    return str(PurePosixPath(value))


def _check_labels(values: Sequence[object], file: Path, line: int) -> tuple[str, ...]:
    names = []
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise _bad_row(file, line, f"label {value!r}; expected a non-empty label name")
        names.append(value.strip())
    if not names:
        raise _bad_row(file, line, "no labels; expected at least one label name")
    return tuple(dict.fromkeys(names))


def _read_csv(file: Path, text: str) -> list[ListedImage]:
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if header is None or [h.strip().lower() for h in header] != _CSV_HEADER:
        raise _bad_row(file, 1, f"header {header!r}; expected 'path,labels'")
    items = []
    for line, row in enumerate(rows, start=2):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != 2:
            raise _bad_row(
                file,
                line,
                f"{len(row)} field(s); expected 2 (path,labels; labels separated by "
                f"'{SEPARATOR}', quote a path holding a comma)",
            )
        path = check_relative_path(row[0], file, line)
        labels = _check_labels(row[1].split(SEPARATOR), file, line)
        items.append(ListedImage(path, labels, f"{file}:{line}"))
    return items


def _read_jsonl(file: Path, text: str) -> list[ListedImage]:
    items = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as err:
            raise _bad_row(file, line, f"not valid JSON ({err.msg})") from None
        if not isinstance(record, dict) or set(record) != {"path", "labels"}:
            keys = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise _bad_row(
                file, line, f"{keys}; expected an object with exactly 'path' and 'labels'"
            )
        if not isinstance(record["labels"], list):
            raise _bad_row(
                file, line, f"labels {record['labels']!r}; expected a list of label names"
            )
        path = check_relative_path(record["path"], file, line)
        items.append(
            ListedImage(path, _check_labels(record["labels"], file, line), f"{file}:{line}")
        )
    return items


def read_manifest(path: str | os.PathLike[str]) -> list[ListedImage]:
    """Reads and checks a ``.csv`` or ``.jsonl`` manifest (format in the module docstring).

    Raises:
        DatasetError: The file is missing or unreadable, has another suffix, a bad row (the
            message names the file, the line and what was expected), no rows, or lists a
            path twice.
    """
    file = Path(path).expanduser()
    suffix = file.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise DatasetError(
            f"Manifest {str(file)!r}: unknown suffix {file.suffix!r}; expected .csv or .jsonl"
        )
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"Manifest {str(file)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"Manifest {str(file)!r} cannot be read: {err}") from None
    items = _read_csv(file, text) if suffix == ".csv" else _read_jsonl(file, text)
    if not items:
        raise DatasetError(f"Manifest {str(file)!r} lists no images; expected at least one row")
    check_unique(items)
    return items


def check_unique(items: Sequence[ListedImage]) -> None:
    """Raises DatasetError naming both places when a path is listed twice."""
    first: dict[str, str] = {}
    for item in items:
        if item.path in first:
            raise DatasetError(
                f"{item.source}: path {item.path!r} is listed twice (first at "
                f"{first[item.path]}); expected each image once"
            )
        first[item.path] = item.source


def _missing_reason(root: Path, item: ListedImage) -> str | None:
    full = root.joinpath(*item.path.split("/"))
    if full.is_file():
        return None
    what = "is not a file" if full.exists() else "file not found"
    return f"{what} (listed at {item.source})"


def _drop_bad(
    root: Path,
    items: list[ListedImage],
    on_bad_image: str,
    verify: bool,
    workers: int,
    reading: BandReading | None = None,
) -> tuple[list[ListedImage], list[SkippedFile]]:
    reasons = [_missing_reason(root, item) for item in items]
    if verify:
        present = [i for i, reason in enumerate(reasons) if reason is None]
        decoded = check_images(root, [items[i].path for i in present], workers, reading)
        for i, reason in zip(present, decoded):
            reasons[i] = None if reason is None else f"{reason} (listed at {items[i].source})"
    skipped = [
        SkippedFile(item.path, reason, item.labels)
        for item, reason in zip(items, reasons)
        if reason is not None
    ]
    if skipped and on_bad_image == "error":
        first = skipped[0]
        raise BadImageError(str(root.joinpath(*first.path.split("/"))), first.reason)
    for item in skipped:
        logger.warning("skipped %s: %s", item.path, item.reason)
    kept = [item for item, reason in zip(items, reasons) if reason is None]
    return kept, skipped


def scan_listed(
    root: str | os.PathLike[str],
    items: Sequence[ListedImage],
    *,
    class_names: Sequence[str] | None = None,
    single_label_when_possible: bool = True,
    on_bad_image: str = "skip",
    verify: bool = True,
    num_workers: int | None = None,
    described_as: str = "the manifest",
    reading: BandReading | None = None,
) -> ScanResult:
    """A :class:`ScanResult` of listed images: checked for presence (and decoding), labelled.

    Args:
        root: The folder the paths are relative to.
        items: The listed images (unique paths).
        class_names: The label map; default the sorted set of the items' label names.
        single_label_when_possible: Integer labels when every kept image has one label.
        on_bad_image: ``"skip"`` (list missing/undecodable images in ``skipped``) or
            ``"error"`` (raise :class:`BadImageError` for the first).
        verify: Also decode every present image fully.
        num_workers: Verification threads (None: ``min(8, cpu_count)``).
        described_as: How messages name the list.
        reading: How GeoTIFFs are verified (see :func:`~hpsh_tf2.data.scan.check_images`).

    Returns:
        The scan; paths sorted.

    Raises:
        DatasetError: The root is missing, a label is not in ``class_names``, or a label is
            left without any valid image.
        BadImageError: With ``on_bad_image="error"``, for the first missing or bad image.
    """
    workers = scan_workers(on_bad_image, num_workers)
    root_path = resolve_root(root)
    names = tuple(class_names) if class_names is not None else _sorted_names(items)
    unknown = sorted({n for item in items for n in item.labels} - set(names))
    if unknown:
        raise DatasetError(f"{described_as} uses labels {unknown} outside the label map {names}")
    ordered = sorted(items, key=lambda item: item.path)
    kept, skipped = _drop_bad(root_path, ordered, on_bad_image, verify, workers, reading)
    hot = from_names([item.labels for item in kept], names)
    empty = [n for n, count in zip(names, label_counts(hot, len(names))) if count == 0]
    listed = {n for item in items for n in item.labels}
    lost = [n for n in empty if n in listed]
    if lost:
        raise DatasetError(
            f"Label {lost[0]!r} of {described_as} has no valid image under {str(root_path)!r} "
            f"({sum(lost[0] in s.labels for s in skipped)} listed image(s) skipped); expected "
            "at least one"
        )
    labels = compact(hot) if single_label_when_possible else hot
    return ScanResult(
        root=str(root_path),
        class_names=names,
        paths=tuple(item.path for item in kept),
        labels=labels,
        skipped=tuple(skipped),
    )


def _sorted_names(items: Sequence[ListedImage]) -> tuple[str, ...]:
    return tuple(sorted({name for item in items for name in item.labels}))


def scan_manifest(
    root: str | os.PathLike[str] | None,
    manifest: str | os.PathLike[str],
    *,
    on_bad_image: str = "skip",
    verify: bool = True,
    num_workers: int | None = None,
    reading: BandReading | None = None,
) -> ScanResult:
    """Reads a manifest and scans the images it lists (root: default the manifest's folder).

    Raises:
        DatasetError: See :func:`read_manifest` and :func:`scan_listed`.
        BadImageError: See :func:`scan_listed`.
    """
    items = read_manifest(manifest)
    base = Path(manifest).expanduser().resolve().parent if root is None else root
    return scan_listed(
        base,
        items,
        on_bad_image=on_bad_image,
        verify=verify,
        num_workers=num_workers,
        described_as=f"manifest {str(manifest)!r}",
        reading=reading,
    )
