"""Dataset readers chosen by ``data.format``: each turns a dataset on disk into a ScanResult.

Registered in :data:`hpsh_tf2.registry.DATA_FORMATS`; every reader takes one
:class:`ReadRequest` and returns a :class:`~hpsh_tf2.data.scan.ScanResult` (image paths relative
to its ``root``, integer or multi-hot labels, skipped files), so everything after the scan (the
split, feature extraction, training, export) sees plain image files, whatever the format.

- ``folders``: one folder per class (:func:`~hpsh_tf2.data.scan.scan_dataset`).
- ``manifest``: a ``.csv``/``.jsonl`` list of images and labels (:mod:`hpsh_tf2.data.manifest`).
- ``mlrsnet``: MLRSNet (Qi et al., 2020): ``Images/<category>/<name>.jpg`` and one
  ``Labels/<category>.csv`` per category, a header ``image,<label 1>,...,<label 60>`` and one
  row of 0/1 per image.
- ``ucmd_multilabel``: UC Merced multi-labels (Chaudhuri et al., 2018): the usual
  ``UCMerced_LandUse/Images/<class>/<name>.tif`` (``data.root``) and one table
  ``LandUse_Multilabeled.txt`` (tab-separated: ``IMAGE\\LABEL`` and 17 label names, then
  ``<name> 0 1 ...`` per image), given by ``data.manifest`` or found next to the images.
- ``bigearthnet``: BigEarthNet-S2 v1.0 (Sumbul et al., 2019): one folder per patch with one
  GeoTIFF per band (``<patch>_B01.tif`` ... ``_B12.tif``, ``_B8A.tif``; 10/20/60 m, i.e. 120/60/20
  px, uint16 reflectance) and ``<patch>_labels_metadata.json`` (its ``labels``). The image of a
  patch is composed once from the bands in ``bands`` (default B04/B03/B02, true colour),
  resampled to 10 m and scaled to uint8, and written as a PNG chip into ``cache_dir`` (atomically;
  re-used while newer than its band files), so the rest of the pipeline keeps one image path.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from hpsh_tf2.atomic import atomic_path
from hpsh_tf2.data.images import BandReading
from hpsh_tf2.data.labels import from_names
from hpsh_tf2.data.manifest import ListedImage, check_unique, scan_listed, scan_manifest
from hpsh_tf2.data.scan import (
    ScanResult,
    SkippedFile,
    resolve_root,
    scan_dataset,
    scan_workers,
)
from hpsh_tf2.errors import BadImageError, DatasetError

__all__ = [
    "BAND_RESOLUTION_M",
    "DEFAULT_BANDS",
    "DEFAULT_BAND_SCALE",
    "ReadRequest",
    "compose_bands",
    "read_bigearthnet",
    "read_folders",
    "read_manifest_format",
    "read_mlrsnet",
    "read_ucmd_multilabel",
    "scale_reflectance",
]

logger = logging.getLogger(__name__)

BandScale = tuple[float, float] | Callable[[np.ndarray], np.ndarray]

DEFAULT_BANDS: tuple[str, ...] = ("B04", "B03", "B02")
"""True colour (red, green, blue) Sentinel-2 bands."""

DEFAULT_BAND_SCALE: tuple[float, float] = (0.0, 3000.0)
"""Reflectance (x 10,000) mapped linearly to 0..255: 0.30 and brighter is white (true colour)."""

BAND_RESOLUTION_M: dict[str, int] = {
    "B01": 60,
    "B02": 10,
    "B03": 10,
    "B04": 10,
    "B05": 20,
    "B06": 20,
    "B07": 20,
    "B08": 10,
    "B8A": 20,
    "B09": 60,
    "B11": 20,
    "B12": 20,
}
"""Ground sampling distance of each Sentinel-2 band of BigEarthNet (B10 is not included)."""

_TARGET_RESOLUTION_M = 10
UCMD_TABLE = "LandUse_Multilabeled.txt"


@dataclass(frozen=True)
class ReadRequest:
    """What a reader needs (built from ``config.data`` by the caller).

    Attributes:
        root: ``data.root``, the dataset folder (a manifest's paths are relative to it; None: the
            manifest's folder).
        manifest: ``data.manifest`` (format ``manifest``; the label table of ``ucmd_multilabel``).
        on_bad_image: ``"skip"`` or ``"error"`` for missing / undecodable images.
        verify: Decode every image fully now.
        cache_dir: Where ``bigearthnet`` writes its composed chips (``RunLayout.chips``).
        bands: The Sentinel-2 bands composed into an image (``bigearthnet``), 3 of them.
        band_scale: ``(low, high)`` reflectance mapped to 0..255, or a function from the stacked
            float bands ``[H, W, B]`` to uint8 (``bigearthnet``).
        band_scale_key: Names the scaling in the chip folder (so chips made with another scaling
            are never re-used); needed when ``band_scale`` is a function, default the numbers.
        num_workers: Threads for verification and composing (None: ``min(8, cpu_count)``).
        reading: How GeoTIFF images are verified (``data.bands``, ``data.band_scale``,
            ``model.input_bands``; :class:`~hpsh_tf2.data.images.BandReading`).
    """

    root: str | None
    manifest: str | None = None
    on_bad_image: str = "skip"
    verify: bool = True
    cache_dir: str | None = None
    bands: tuple[str, ...] = DEFAULT_BANDS
    band_scale: BandScale = DEFAULT_BAND_SCALE
    band_scale_key: str | None = None
    num_workers: int | None = None
    reading: BandReading = field(default_factory=BandReading)


def _need_root(request: ReadRequest, fmt: str) -> Path:
    if request.root is None:
        raise DatasetError(f"data.format {fmt!r} needs data.root (the dataset folder)")
    return resolve_root(request.root)


# --------------------------------------------------------------------------- folders, manifest


def read_folders(request: ReadRequest) -> ScanResult:
    """``folders``: one folder per class (today's scan)."""
    return scan_dataset(
        _need_root(request, "folders"),
        on_bad_image=request.on_bad_image,  # type: ignore[arg-type]
        verify=request.verify,
        num_workers=request.num_workers,
        reading=request.reading,
    )


def read_manifest_format(request: ReadRequest) -> ScanResult:
    """``manifest``: the images and labels listed by ``data.manifest``."""
    if request.manifest is None:
        raise DatasetError("data.format 'manifest' needs data.manifest (a .csv or .jsonl file)")
    return scan_manifest(
        request.root,
        request.manifest,
        on_bad_image=request.on_bad_image,
        verify=request.verify,
        num_workers=request.num_workers,
        reading=request.reading,
    )


# --------------------------------------------------------------------------- 0/1 label tables


def _table_error(file: Path, line: int, what: str) -> DatasetError:
    return DatasetError(f"Label table {str(file)!r} line {line}: {what}")


def _parse_hot_row(
    cells: Sequence[str], width: int, file: Path, line: int
) -> tuple[str, np.ndarray]:
    if len(cells) != width + 1:
        raise _table_error(
            file, line, f"{len(cells)} field(s); expected {width + 1} (an image name, {width} 0/1)"
        )
    values = [c.strip() for c in cells[1:]]
    if any(v not in ("0", "1") for v in values):
        bad = next(v for v in values if v not in ("0", "1"))
        raise _table_error(file, line, f"value {bad!r}; expected 0 or 1")
    row = np.asarray([v == "1" for v in values], np.uint8)
    if not row.any():
        raise _table_error(file, line, "no label set; expected at least one 1")
    name = cells[0].strip()
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise _table_error(file, line, f"image name {cells[0]!r}; expected a file name")
    return name, row


def _listed(path: str, row: np.ndarray, names: Sequence[str], source: str) -> ListedImage:
    return ListedImage(path, tuple(names[c] for c in np.flatnonzero(row)), source)


def _find_child(folder: Path, name: str) -> Path | None:
    """The entry of ``folder`` called ``name``, ignoring case."""
    if (folder / name).exists():
        return folder / name
    matches = [p for p in sorted(folder.iterdir()) if p.name.lower() == name.lower()]
    return matches[0] if matches else None


def _mlrsnet_rows(
    file: Path, images: Path, root: Path, names: list[str] | None
) -> tuple[list[str], list[ListedImage]]:
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"Label table {str(file)!r} cannot be read: {err}") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or len(rows[0]) < 2:
        raise _table_error(file, 1, "no header; expected 'image,<label>,<label>,...'")
    header = [h.strip() for h in rows[0][1:]]
    if names is not None and header != names:
        raise _table_error(
            file, 1, "label columns differ from the first table's; expected the same columns"
        )
    folder = _find_child(images, file.stem)
    if folder is None or not folder.is_dir():
        raise DatasetError(
            f"Label table {str(file)!r} has no image folder {str(images / file.stem)!r}; "
            "expected Images/<category>/ for each Labels/<category>.csv"
        )
    prefix = folder.relative_to(root).as_posix()
    items = []
    for line, cells in enumerate(rows[1:], start=2):
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        name, hot = _parse_hot_row(cells, len(header), file, line)
        items.append(_listed(f"{prefix}/{name}", hot, header, f"{file}:{line}"))
    return header, items


def read_mlrsnet(request: ReadRequest) -> ScanResult:
    """``mlrsnet``: ``Images/<category>/`` and ``Labels/<category>.csv`` under ``data.root``.

    The label map is the tables' label columns, in their order.

    Raises:
        DatasetError: No ``Images``/``Labels`` folder, no tables, a bad row (file and line
            named), tables with different columns, a category without its image folder.
    """
    root = _need_root(request, "mlrsnet")
    images, labels = _find_child(root, "Images"), _find_child(root, "Labels")
    if images is None or labels is None or not images.is_dir() or not labels.is_dir():
        raise DatasetError(
            f"MLRSNet root {str(root)!r} needs the folders 'Images' and 'Labels'; found "
            f"{sorted(p.name for p in root.iterdir())}"
        )
    tables = sorted(p for p in labels.iterdir() if p.suffix.lower() == ".csv")
    if not tables:
        raise DatasetError(f"MLRSNet labels folder {str(labels)!r} has no .csv tables")
    names: list[str] | None = None
    items: list[ListedImage] = []
    for table in tables:
        names, rows = _mlrsnet_rows(table, images, root, names)
        items.extend(rows)
    check_unique(items)
    return _scan_table(request, root, items, names or [], "the MLRSNet label tables")


def _scan_table(
    request: ReadRequest, root: Path, items: list[ListedImage], names: Sequence[str], what: str
) -> ScanResult:
    return scan_listed(
        root,
        items,
        class_names=names,
        single_label_when_possible=False,
        on_bad_image=request.on_bad_image,
        verify=request.verify,
        num_workers=request.num_workers,
        described_as=what,
        reading=request.reading,
    )


def _ucmd_table(request: ReadRequest, root: Path) -> Path:
    if request.manifest is not None:
        table = Path(request.manifest).expanduser()
        if not table.is_file():
            raise DatasetError(f"UCMD label table {str(table)!r} does not exist")
        return table
    places = [
        folder / sub / UCMD_TABLE
        for folder in (root, root.parent, root.parent.parent)
        for sub in (".", "multilabels")
    ]
    for place in places:
        if place.is_file():
            return place
    raise DatasetError(
        f"No {UCMD_TABLE} found for data.root {str(root)!r} (looked in "
        f"{', '.join(str(p.parent) for p in places)}); set data.manifest to the label table"
    )


def _split_cells(line: str, delimiter: str | None) -> list[str]:
    return line.split(delimiter) if delimiter else line.split()


def read_ucmd_multilabel(request: ReadRequest) -> ScanResult:
    """``ucmd_multilabel``: UCMD images (``data.root`` = ``UCMerced_LandUse/Images``) labelled
    by the 17-label table ``LandUse_Multilabeled.txt``.

    An image name ``agricultural07`` is the file ``agricultural/agricultural07.tif``. The label
    map is the table's columns, in their order.

    Raises:
        DatasetError: No table, or a bad row (file and line named).
    """
    root = _need_root(request, "ucmd_multilabel")
    table = _ucmd_table(request, root)
    try:
        lines = table.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"Label table {str(table)!r} cannot be read: {err}") from None
    if not lines:
        raise _table_error(table, 1, "empty; expected a header 'IMAGE\\LABEL <label> ...'")
    delimiter = "\t" if "\t" in lines[0] else ("," if "," in lines[0] else None)
    names = [h.strip() for h in _split_cells(lines[0], delimiter)[1:]]
    if not names:
        raise _table_error(table, 1, "no label columns; expected 'IMAGE\\LABEL <label> ...'")
    items = []
    for line, text in enumerate(lines[1:], start=2):
        if not text.strip():
            continue
        name, hot = _parse_hot_row(_split_cells(text, delimiter), len(names), table, line)
        stem = name if "." not in name else name.rsplit(".", 1)[0]
        category = re.sub(r"\d+$", "", stem)
        file = name if "." in name else f"{name}.tif"
        items.append(_listed(f"{category}/{file}", hot, names, f"{table}:{line}"))
    check_unique(items)
    return _scan_table(request, root, items, names, f"the UCMD label table {str(table)!r}")


# --------------------------------------------------------------------------- BigEarthNet


def scale_reflectance(stack: np.ndarray, band_scale: BandScale = DEFAULT_BAND_SCALE) -> np.ndarray:
    """Reflectance bands to uint8: ``round(255 * clip((x - low) / (high - low), 0, 1))``.

    Args:
        stack: float ``[H, W, B]`` reflectance (Sentinel-2 L2A digital numbers, x 10,000).
        band_scale: ``(low, high)``, or a function from ``stack`` to uint8 ``[H, W, B]``.
    """
    if callable(band_scale):
        return np.asarray(band_scale(stack), np.uint8)
    low, high = (float(v) for v in band_scale)
    if not high > low:
        raise DatasetError(f"Received: band_scale=({low}, {high}); expected low < high")
    unit = np.clip((stack - low) / (high - low), 0.0, 1.0)
    return np.rint(unit * 255.0).astype(np.uint8)


def compose_bands(
    patch_dir: str | os.PathLike[str],
    bands: Sequence[str] = DEFAULT_BANDS,
    band_scale: BandScale = DEFAULT_BAND_SCALE,
) -> np.ndarray:
    """One BigEarthNet patch as uint8 ``[H, W, len(bands)]`` at 10 m.

    Each band file ``<patch>_<band>.tif`` is read with GDAL (rasterio) and resampled bilinearly
    to the 10 m grid (its size times its resolution / 10: 60 px at 20 m become 120 px), then the
    stack is scaled by :func:`scale_reflectance`.

    Raises:
        DatasetError: An unknown band name.
        OSError: A band file is missing or unreadable (``rasterio`` errors included).
    """
    try:
        import rasterio
        from rasterio.enums import Resampling
    except ImportError:  # the optional [geo] extra
        raise DatasetError(
            "data.format 'bigearthnet' reads GeoTIFF bands with rasterio; install it with "
            "pip install 'hpsh-tf2[geo]'"
        ) from None

    folder = Path(patch_dir)
    planes = []
    for band in bands:
        if band not in BAND_RESOLUTION_M:
            raise DatasetError(
                f"Received: band {band!r}; expected one of {', '.join(BAND_RESOLUTION_M)}"
            )
        path = folder / f"{folder.name}_{band}.tif"
        try:
            with rasterio.open(path) as src:
                factor = BAND_RESOLUTION_M[band] / _TARGET_RESOLUTION_M
                shape = (round(src.height * factor), round(src.width * factor))
                planes.append(
                    src.read(1, out_shape=shape, resampling=Resampling.bilinear).astype(np.float64)
                )
        except rasterio.errors.RasterioIOError as err:
            raise OSError(f"cannot read {path.name}: {err}") from None
    if len({p.shape for p in planes}) != 1:
        raise OSError(f"bands {list(bands)} have different 10 m sizes {[p.shape for p in planes]}")
    return scale_reflectance(np.stack(planes, axis=-1), band_scale)


def _scale_tag(request: ReadRequest) -> str:
    if request.band_scale_key is not None:
        tag = request.band_scale_key
    elif callable(request.band_scale):
        raise DatasetError(
            "a band_scale function needs a band_scale_key naming it (the chip folder name)"
        )
    else:
        tag = "-".join(f"{float(v):g}" for v in request.band_scale)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", tag)


def _patch_labels(folder: Path) -> tuple[str, ...]:
    """The ``labels`` of ``<patch>_labels_metadata.json``; OSError with the reason otherwise."""
    meta = folder / f"{folder.name}_labels_metadata.json"
    try:
        raw = json.loads(meta.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OSError(f"{meta.name} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise OSError(f"{meta.name} is not readable JSON ({err})") from None
    labels = raw.get("labels") if isinstance(raw, dict) else None
    if not isinstance(labels, list) or not labels or not all(isinstance(v, str) for v in labels):
        raise OSError(f"{meta.name}: 'labels' must be a non-empty list of label names")
    return tuple(dict.fromkeys(v.strip() for v in labels))


def _chip_is_fresh(chip: Path, folder: Path, bands: Sequence[str]) -> bool:
    try:
        made = chip.stat().st_mtime_ns
        return all(
            (folder / f"{folder.name}_{band}.tif").stat().st_mtime_ns <= made for band in bands
        )
    except OSError:
        return False


def _write_chip(chip: Path, image: np.ndarray) -> None:
    with atomic_path(chip) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def _prepare_patch(
    folder: Path, chips: Path, bands: Sequence[str], band_scale: BandScale
) -> tuple[tuple[str, ...], str | None]:
    """``(labels, None)`` with the chip written (or fresh), or ``(labels, reason)``."""
    labels: tuple[str, ...] = ()
    try:
        labels = _patch_labels(folder)
        chip = chips / f"{folder.name}.png"
        if not _chip_is_fresh(chip, folder, bands):
            _write_chip(chip, compose_bands(folder, bands, band_scale))
    except OSError as err:
        return labels, str(err)
    return labels, None


def _patch_folders(root: Path) -> tuple[list[Path], int]:
    folders, ignored = [], 0
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            ignored += 1
        else:
            folders.append(entry)
    return folders, ignored


def read_bigearthnet(request: ReadRequest) -> ScanResult:
    """``bigearthnet``: BigEarthNet-S2 patch folders under ``data.root``, composed into chips.

    Returns:
        A scan whose ``root`` is the chip folder ``cache_dir/<bands>_<scale>/`` and whose paths
        are ``<patch>.png``; labels are multi-hot over the sorted set of label names.

    Raises:
        DatasetError: No ``cache_dir``, no patch folders, fewer or more than 3 bands, a label
            left without any valid patch.
        BadImageError: With ``on_bad_image="error"``, the first patch that cannot be composed
            (missing band file, unreadable GeoTIFF, bad label metadata).
    """
    root = _need_root(request, "bigearthnet")
    if request.cache_dir is None:
        raise DatasetError("data.format 'bigearthnet' needs a folder for its composed chips")
    if len(request.bands) != 3:
        raise DatasetError(
            f"Received: data.bands={list(request.bands)}; expected 3 bands to compose an "
            "RGB image for the backbone"
        )
    workers = scan_workers(request.on_bad_image, request.num_workers)
    folders, ignored = _patch_folders(root)
    if not folders:
        raise DatasetError(f"BigEarthNet root {str(root)!r} has no patch folders")
    chips = Path(request.cache_dir) / f"{'-'.join(request.bands)}_{_scale_tag(request)}"
    chips.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(
            pool.map(lambda f: _prepare_patch(f, chips, request.bands, request.band_scale), folders)
        )
    return _bigearthnet_scan(request, root, chips, folders, results, ignored)


def _bigearthnet_scan(
    request: ReadRequest,
    root: Path,
    chips: Path,
    folders: list[Path],
    results: list[tuple[tuple[str, ...], str | None]],
    ignored: int,
) -> ScanResult:
    skipped = [
        SkippedFile(folder.name, reason, labels)
        for folder, (labels, reason) in zip(folders, results)
        if reason is not None
    ]
    if skipped and request.on_bad_image == "error":
        raise BadImageError(str(root / skipped[0].path), skipped[0].reason)
    for item in skipped:
        logger.warning("skipped BigEarthNet patch %s: %s", item.path, item.reason)
    kept = [(f, labels) for f, (labels, reason) in zip(folders, results) if reason is None]
    names = tuple(sorted({n for labels, _ in results for n in labels}))
    hot = from_names([labels for _, labels in kept], names)
    for name, count in zip(names, hot.sum(axis=0)):
        if count == 0:
            raise DatasetError(
                f"BigEarthNet label {name!r} has no valid patch under {str(root)!r}; expected "
                "at least one"
            )
    return ScanResult(
        root=str(chips.resolve()),
        class_names=names,
        paths=tuple(f"{f.name}.png" for f, _ in kept),
        labels=hot,
        skipped=tuple(skipped),
        ignored=ignored,
    )


# What each reader does with ``data.manifest`` (checked when the config loads): ``required``
# (the list of images itself), ``optional`` (a label table found next to the images otherwise);
# a reader without the attribute ignores it, so a config setting both is refused.
read_manifest_format.manifest_use = "required"  # type: ignore[attr-defined]
read_ucmd_multilabel.manifest_use = "optional"  # type: ignore[attr-defined]
