"""Windowed reads of GeoTIFF / COG scenes with band selection and scaling to 8 bits.

A scene is never read whole: tiles come from :meth:`SceneReader.read_window` (one GDAL windowed
read per tile) and per-scene statistics from a decimated read (:meth:`SceneReader.overview`,
which GDAL serves from the file's overviews when it has them).

Band scaling (``data.band_scale``) maps each selected band to the model's 0..255 input:

* ``None``: by data type. uint8 as stored; other integers clipped to ``[0, 65535]`` and scaled
  by ``round(v * 255 / 65535)`` (the rule of :mod:`hpsh_tf2.data.images` for 16-bit files);
  float needs an explicit scale.
* ``"LO-HI"`` (one range for every band) or a list of ranges (one per selected band):
  ``u = round(clip((v - LO) / (HI - LO), 0, 1) * 255)``, a linear stretch.
* ``"percentile"`` (2nd to 98th) or ``"pA-B"``: the same stretch with LO, HI the A-th and B-th
  percentiles of each band's valid pixels, computed once per scene from the decimated read.

Nodata (the file's nodata value, its internal mask or alpha band: GDAL's dataset mask) is
reported as a boolean mask beside the pixels, and the pixels under it are set to 0.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hpsh_tf2.errors import HPSHError

__all__ = [
    "BandError",
    "BandScale",
    "Scene",
    "SceneError",
    "SceneReader",
    "band_summary",
    "is_geotiff",
    "open_scene",
    "parse_band_scale",
    "read_geotiff_rgb",
    "resolve_bands",
    "scale_to_uint8",
]

_RANGE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*-\s*(-?\d+(?:\.\d+)?)\s*$")
_PERCENTILE = re.compile(r"^\s*p(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)\s*$")
GEOTIFF_EXTENSIONS = (".tif", ".tiff")


class SceneError(HPSHError, ValueError):
    """A scene cannot be used as given (no CRS, corrupt file, bad bands or scale)."""


class BandError(SceneError):
    """The config does not fit a file that is fine in itself.

    ``data.bands`` names a band the file lacks, selects a number of bands other than
    ``model.input_bands``, ``data.band_scale`` has the wrong number of ranges, float values come
    without a scale, or rasterio is not installed. Unlike a corrupt file, this is never skipped
    as an undecodable image: the message names the file and the key to change.
    """


@dataclass(frozen=True)
class BandScale:
    """How selected bands map to 0..255.

    Attributes:
        kind: ``"dtype"``, ``"fixed"`` or ``"percentile"``.
        ranges: ``[(lo, hi), ...]`` per band for ``"fixed"`` (one entry means every band).
        percentiles: ``(low, high)`` for ``"percentile"``.
    """

    kind: str
    ranges: tuple[tuple[float, float], ...] = ()
    percentiles: tuple[float, float] = (2.0, 98.0)


def _parse_range(text: str, key: str) -> tuple[float, float]:
    match = _RANGE.match(str(text))
    if not match or float(match.group(1)) >= float(match.group(2)):
        raise BandError(
            f"Received: {key}={text!r}; expected 'LO-HI' with LO < HI (e.g. '0-3000'), "
            "'percentile', 'pA-B' or a list of 'LO-HI' ranges, one per band"
        )
    return float(match.group(1)), float(match.group(2))


def parse_band_scale(spec: str | Sequence[str] | None, key: str = "data.band_scale") -> BandScale:
    """Parses ``data.band_scale`` (see the module docstring).

    Raises:
        BandError: A malformed range or percentile pair.
    """
    if spec is None:
        return BandScale("dtype")
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "percentile":
            return BandScale("percentile")
        match = _PERCENTILE.match(text)
        if match:
            low, high = float(match.group(1)), float(match.group(2))
            if not 0 <= low < high <= 100:
                raise BandError(f"Received: {key}={spec!r}; expected pA-B with 0 <= A < B <= 100")
            return BandScale("percentile", percentiles=(low, high))
        return BandScale("fixed", ranges=(_parse_range(spec, key),))
    ranges = tuple(_parse_range(item, key) for item in spec)
    if not ranges:
        raise BandError(f"Received: {key}=[]; expected at least one 'LO-HI' range")
    return BandScale("fixed", ranges=ranges)


def resolve_bands(
    bands: Sequence[int] | None, count: int, *, want: int = 3, name: str = ""
) -> list[int]:
    """The 1-based band indices to read.

    Args:
        bands: ``data.bands`` (None: bands 1..want, or band 1 repeated for a one-band file).
        count: Bands in the file.
        want: Bands the model takes (``model.input_bands``).
        name: The file, for messages.

    Raises:
        BandError: An index outside ``1..count``, or a count other than ``want``.
    """
    if bands is None:
        if count >= want:
            return list(range(1, want + 1))
        if count == 1:
            return [1] * want
        raise BandError(
            f"{name}: {count} bands; the model takes {want}: set data.bands to {want} band "
            f"indices in 1..{count}"
        )
    bad = [b for b in bands if not 1 <= int(b) <= count]
    if bad:
        raise BandError(
            f"{name}: Received: data.bands={list(bands)}; expected band indices in 1..{count} "
            f"(the file has {count} bands; {bad[0]} is out of range)"
        )
    if len(bands) != want:
        raise BandError(
            f"{name}: Received: data.bands={list(bands)} ({len(bands)} bands); expected {want} "
            "(model.input_bands)"
        )
    return [int(b) for b in bands]


def scale_to_uint8(
    values: np.ndarray, ranges: np.ndarray | None, *, valid: np.ndarray | None = None
) -> np.ndarray:
    """Maps ``[H, W, C]`` band values to uint8.

    ``u = round(clip((v - lo) / (hi - lo), 0, 1) * 255)`` with ``ranges[c] = (lo, hi)``; with
    ``ranges=None``, uint8 is kept and integers use ``round(clip(v, 0, 65535) * 255 / 65535)``.
    Pixels where ``valid`` is False become 0.
    """
    if ranges is None:
        if values.dtype == np.uint8:
            out = values.copy()
        elif np.issubdtype(values.dtype, np.integer):
            wide = np.clip(values.astype(np.int64), 0, 65535)
            out = ((2 * wide * 255 + 65535) // (2 * 65535)).astype(np.uint8)
        else:
            raise BandError(
                f"Received: {values.dtype} band values without data.band_scale; expected a "
                "range ('0-1', '0-3000') or 'percentile' for floating-point data"
            )
    else:
        lo = ranges[:, 0].astype(np.float32)
        scale = (255.0 / (ranges[:, 1] - ranges[:, 0])).astype(np.float32)
        unit = np.clip((values.astype(np.float32) - lo) * scale, 0.0, 255.0)
        if np.issubdtype(values.dtype, np.floating):
            unit = np.nan_to_num(unit, nan=0.0)
        out = np.rint(unit).astype(np.uint8)
    if valid is not None:
        out[~valid] = 0
    return out


@dataclass(frozen=True)
class Scene:
    """A georeferenced raster file and what the index records about it.

    Attributes:
        path: The file (absolute).
        scene_id: Its id in the index (path relative to the scenes folder, or the STAC item id).
        width: Pixels per row.
        height: Rows.
        count: Bands.
        dtype: Data type of band 1.
        crs: The CRS as WKT.
        crs_name: ``EPSG:NNNN`` when the CRS has an EPSG code, else its WKT.
        transform: The affine pixel -> CRS transform ``(a, b, c, d, e, f)``.
        datetime: ISO 8601 UTC time of acquisition (STAC item or TIFF tag), or ``""``.
        size: File size (bytes), part of the fingerprint.
        mtime_ns: File modification time, part of the fingerprint.
    """

    path: str
    scene_id: str
    width: int
    height: int
    count: int
    dtype: str
    crs: str
    crs_name: str
    transform: tuple[float, float, float, float, float, float]
    datetime: str = ""
    size: int = 0
    mtime_ns: int = 0

    @property
    def fingerprint(self) -> tuple[int, int]:
        """``(size, mtime_ns)``: a changed file gets its rows rebuilt."""
        return (self.size, self.mtime_ns)


def is_geotiff(path: str | os.PathLike[str]) -> bool:
    """Whether the name ends in .tif/.tiff (any case)."""
    return os.fspath(path).lower().endswith(GEOTIFF_EXTENSIONS)


def _rasterio() -> Any:
    try:
        import rasterio
    except ImportError as err:  # pragma: no cover - depends on the install
        raise BandError(
            "GeoTIFF scenes and images need rasterio (GDAL): pip install 'hpsh-tf2[geo]'"
        ) from err
    return rasterio


def band_summary(path: str | os.PathLike[str]) -> tuple[int, str] | None:
    """``(bands, dtype of band 1)`` of a raster file, or None when rasterio is missing or
    cannot read it (for messages about files another reader failed on)."""
    try:
        import rasterio
    except ImportError:  # pragma: no cover - depends on the install
        return None
    try:
        with rasterio.open(os.fspath(path)) as src:
            return int(src.count), str(src.dtypes[0])
    except (rasterio.errors.RasterioError, OSError, ValueError):
        return None


def _tiff_datetime(tags: dict[str, str]) -> str:
    """``TIFFTAG_DATETIME`` (``YYYY:MM:DD HH:MM:SS``) as ISO 8601 UTC, or ``""``."""
    text = tags.get("TIFFTAG_DATETIME", "")
    try:
        moment = datetime.strptime(text.strip(), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return ""
    return moment.replace(tzinfo=timezone.utc).isoformat()


def _open(path: str) -> Any:
    rasterio = _rasterio()
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SceneError(
            f"cannot read scene {path!r}: {reason}; expected a GeoTIFF / COG"
        ) from None


def open_scene(
    path: str | os.PathLike[str],
    scene_id: str | None = None,
    *,
    datetime_iso: str = "",
    georeferenced: bool = True,
) -> Scene:
    """Reads a scene's header (no pixels).

    Args:
        path: GeoTIFF / COG file.
        scene_id: Id to store (default: the file name).
        datetime_iso: Acquisition time from a catalog; default the file's TIFF date tag.
        georeferenced: Require a CRS and a geotransform (scenes do; a training image read
            with :func:`read_geotiff_rgb` does not, its ``crs`` is then ``""``).

    Raises:
        SceneError: Unreadable file, or no CRS / no georeferencing when required.
    """
    path = os.path.abspath(os.fspath(path))
    with _open(path) as src:
        if georeferenced and src.crs is None:
            raise SceneError(
                f"scene {path!r} has no CRS; expected a georeferenced GeoTIFF (set one with "
                "gdal_edit.py -a_srs EPSG:XXXX)"
            )
        if georeferenced and src.transform.is_identity:
            raise SceneError(
                f"scene {path!r} has no geotransform; expected a georeferenced GeoTIFF"
            )
        epsg = src.crs.to_epsg() if src.crs is not None else None
        wkt = src.crs.to_wkt() if src.crs is not None else ""
        stat = os.stat(path)
        return Scene(
            path=path,
            scene_id=scene_id or Path(path).name,
            width=int(src.width),
            height=int(src.height),
            count=int(src.count),
            dtype=str(src.dtypes[0]),
            crs=wkt,
            crs_name=f"EPSG:{epsg}" if epsg else wkt,
            transform=tuple(float(v) for v in tuple(src.transform)[:6]),
            datetime=datetime_iso or _tiff_datetime(src.tags()),
            size=int(stat.st_size),
            mtime_ns=int(stat.st_mtime_ns),
        )


class SceneReader:
    """Reads windows of one scene as 8-bit pixels of the selected bands.

    Args:
        scene: The :class:`Scene`.
        bands: ``data.bands`` (see :func:`resolve_bands`).
        band_scale: ``data.band_scale`` (see :func:`parse_band_scale`).
        want: Bands the model takes.
        overview_side: Longest side of the decimated read used for percentiles.

    Use as a context manager; each reader holds one GDAL handle (not thread-safe: one reader
    per thread).
    """

    def __init__(
        self,
        scene: Scene,
        *,
        bands: Sequence[int] | None = None,
        band_scale: str | Sequence[str] | None = None,
        want: int = 3,
        overview_side: int = 1024,
    ) -> None:
        self.scene = scene
        self.bands = resolve_bands(bands, scene.count, want=want, name=scene.path)
        self.scale = parse_band_scale(band_scale)
        self._src = _open(scene.path)
        try:
            self._mask_mode = self._mask_kind()
            self.overview_side = overview_side
            self.ranges = self._ranges()
        except BaseException:
            self._src.close()
            raise

    def close(self) -> None:
        """Closes the file."""
        self._src.close()

    def __enter__(self) -> SceneReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _mask_kind(self) -> str:
        """``"none"`` (every pixel valid), ``"nodata"`` (a nodata value: a pixel is nodata when
        every selected band holds it) or ``"gdal"`` (an internal mask or alpha band)."""
        from rasterio.enums import MaskFlags

        flags = [set(self._src.mask_flag_enums[b - 1]) for b in self.bands]
        if all(f == {MaskFlags.all_valid} for f in flags):
            return "none"
        if all(f == {MaskFlags.nodata} for f in flags) and self._src.nodata is not None:
            return "nodata"
        return "gdal"

    def _valid(self, data: np.ndarray | None, window: Any, shape: tuple[int, int]) -> np.ndarray:
        if self._mask_mode == "none":
            return np.ones(shape, bool)
        if self._mask_mode == "nodata" and data is not None:
            nodata = self._src.nodata
            if np.isnan(nodata):
                return ~np.all(np.isnan(data), axis=-1)
            return np.any(data != np.asarray(nodata).astype(data.dtype), axis=-1)
        return self._src.dataset_mask(window=window) > 0

    def _ranges(self) -> np.ndarray | None:
        if self.scale.kind == "dtype":
            if np.issubdtype(np.dtype(self.scene.dtype), np.floating):
                raise BandError(
                    f"{self.scene.path}: {self.scene.dtype} values; set "
                    "data.band_scale to a range ('0-1', '0-3000') or 'percentile'"
                )
            return None
        if self.scale.kind == "fixed":
            ranges = self.scale.ranges
            if len(ranges) == 1:
                ranges = ranges * len(self.bands)
            if len(ranges) != len(self.bands):
                raise BandError(
                    f"{self.scene.path}: Received: data.band_scale with "
                    f"{len(self.scale.ranges)} ranges for {len(self.bands)} bands "
                    f"(data.bands={self.bands}); expected one range or one per band"
                )
            return np.asarray(ranges, np.float64)
        values, valid, _ = self._decimated()
        low, high = self.scale.percentiles
        ranges = []
        for channel in range(values.shape[-1]):
            pixels = values[..., channel][valid]
            if pixels.size == 0:
                ranges.append((0.0, 1.0))
                continue
            lo, hi = np.percentile(pixels.astype(np.float64), [low, high])
            ranges.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
        return np.asarray(ranges, np.float64)

    def _decimated(self) -> tuple[np.ndarray, np.ndarray, float]:
        """The selected bands at most ``overview_side`` px on a side, their mask, the factor."""
        factor = max(1.0, max(self.scene.width, self.scene.height) / self.overview_side)
        height = max(1, round(self.scene.height / factor))
        width = max(1, round(self.scene.width / factor))
        data = self._src.read(self.bands, out_shape=(len(self.bands), height, width))
        mask = self._src.dataset_mask(out_shape=(height, width)) > 0
        return np.moveaxis(data, 0, -1), mask, factor

    def read_window(self, col: int, row: int, width: int, height: int) -> tuple[np.ndarray, ...]:
        """Pixels and validity of one window (a single windowed read per band set).

        Returns:
            ``(uint8 [height, width, bands], bool [height, width])``: scaled pixels (0 under
            nodata) and True where the pixel holds data.
        """
        window = self._window(col, row, width, height)
        data = np.moveaxis(self._src.read(self.bands, window=window), 0, -1)
        valid = self._valid(data, window, (height, width))
        return scale_to_uint8(data, self.ranges, valid=valid), valid

    def valid_window(self, col: int, row: int, width: int, height: int) -> np.ndarray:
        """The validity mask of one window (no read at all when every pixel is valid)."""
        window = self._window(col, row, width, height)
        if self._mask_mode == "none":
            return np.ones((height, width), bool)
        if self._mask_mode == "nodata":
            data = np.moveaxis(self._src.read(self.bands, window=window), 0, -1)
            return self._valid(data, window, (height, width))
        return self._src.dataset_mask(window=window) > 0

    def overview(self) -> tuple[np.ndarray, float]:
        """A decimated uint8 quicklook ``[h, w, bands]`` and its decimation factor."""
        values, valid, factor = self._decimated()
        return scale_to_uint8(values, self.ranges, valid=valid), factor

    @staticmethod
    def _window(col: int, row: int, width: int, height: int) -> Any:
        from rasterio.windows import Window

        return Window(col, row, width, height)


def read_geotiff_rgb(
    path: str | os.PathLike[str],
    *,
    bands: Sequence[int] | None = None,
    band_scale: str | Sequence[str] | None = None,
    want: int = 3,
) -> np.ndarray:
    """A whole (small) GeoTIFF training image as uint8 ``[H, W, want]``, read as a scene tile.

    The file is opened as a :class:`Scene` (no CRS needed) and read by :class:`SceneReader` in
    one window covering it, so band selection, nodata and scaling are the scene code itself: a
    GeoTIFF holding the raw values of a scene tile gives that tile's pixels exactly (with a
    fixed ``band_scale``; percentiles are computed over the file, as over a scene). Despite the
    name, ``want`` bands come back (``model.input_bands``); RGB is the default.

    Args:
        path: The image file.
        bands: ``data.bands`` (see :func:`resolve_bands`; None: bands 1..want).
        band_scale: ``data.band_scale`` (see :func:`parse_band_scale`).
        want: Bands the model takes (``model.input_bands``).

    Returns:
        uint8 ``[H, W, want]``, 0 under nodata.

    Raises:
        BandError: The bands or scale do not fit the file (the message names it and the key).
        SceneError: The file cannot be read.
    """
    scene = open_scene(path, georeferenced=False)
    side = max(scene.width, scene.height)  # percentiles over every pixel, not a decimation
    with SceneReader(
        scene, bands=bands, band_scale=band_scale, want=want, overview_side=side
    ) as reader:
        return reader.read_window(0, 0, scene.width, scene.height)[0]
