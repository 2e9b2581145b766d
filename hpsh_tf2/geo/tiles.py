"""Tile grids over a scene, WGS84 footprints of pixel windows, and NMS by footprint overlap.

Grid: windows of ``tile_size`` px every ``tile_stride`` px along each axis (overlap when the
stride is smaller). The last window of a row or column is aligned to the scene's edge, so
every pixel is covered and every window is whole; a scene smaller than one tile along an axis
gets one window as wide as the scene there (it is resized to the model input like any tile).

Footprint: the window's outline, densified (``densify`` points per edge, so the curved image of
a straight pixel edge under a projection change is followed), mapped pixel -> scene CRS by the
affine transform (rotated or sheared transforms included) and scene CRS -> EPSG:4326 with
:func:`rasterio.warp.transform` (PROJ). A footprint that crosses the antimeridian is refused
with :class:`FootprintError` (a ring jumping more than 180 degrees of longitude between two
neighbouring points) rather than split: its rows would need multi-polygons and every filter
a second box, for scenes that are rare in practice.

NMS: IoU of two footprints is a ratio of areas, and a ratio of areas is unchanged by any
affine map. Over a few kilometres the map from lon/lat to a local equal-area plane is affine
to first order, so IoU computed on lon/lat polygons with shapely equals the equal-area IoU to
far better than any threshold's precision; ``tests/geo`` checks this against IoU in the UTM
plane. (Footprints far apart have IoU 0 in any projection.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hpsh_tf2.geo.raster import Scene, SceneError, SceneReader

__all__ = [
    "FootprintError",
    "Tile",
    "TileGrid",
    "footprint",
    "footprint_iou",
    "footprint_wkt",
    "nms",
    "tile_grid",
    "tile_windows",
]


class FootprintError(SceneError):
    """A footprint cannot be represented (it crosses the antimeridian)."""


@dataclass(frozen=True)
class Tile:
    """One window of a scene.

    Attributes:
        col: First column.
        row: First row.
        width: Columns.
        height: Rows.
    """

    col: int
    row: int
    width: int
    height: int

    @property
    def key(self) -> str:
        """``col,row,width,height`` (part of a row's primary key)."""
        return f"{self.col},{self.row},{self.width},{self.height}"


@dataclass(frozen=True)
class TileGrid:
    """The tiles of one scene kept for indexing and those skipped for nodata.

    Attributes:
        tiles: Windows with at most ``max_nodata_fraction`` nodata.
        skipped_nodata: Windows over the limit (not indexed).
    """

    tiles: tuple[Tile, ...]
    skipped_nodata: int


def _starts(length: int, size: int, stride: int) -> list[int]:
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def tile_windows(width: int, height: int, size: int, stride: int) -> list[Tile]:
    """All windows of the grid, row-major (see the module docstring).

    Raises:
        SceneError: ``size`` or ``stride`` not positive.
    """
    if size < 1 or stride < 1:
        raise SceneError(
            f"Received: index.tile_size={size}, index.tile_stride={stride}; expected positive"
        )
    tile_w, tile_h = min(size, width), min(size, height)
    return [
        Tile(col, row, tile_w, tile_h)
        for row in _starts(height, size, stride)
        for col in _starts(width, size, stride)
    ]


def tile_grid(reader: SceneReader, size: int, stride: int, max_nodata_fraction: float) -> TileGrid:
    """The windows of ``reader``'s scene with their nodata share checked (masks read only).

    The mask is read one strip of tile rows at a time, so memory stays at one strip.
    """
    windows = tile_windows(reader.scene.width, reader.scene.height, size, stride)
    kept: list[Tile] = []
    skipped = 0
    by_row: dict[int, list[Tile]] = {}
    for tile in windows:
        by_row.setdefault(tile.row, []).append(tile)
    for row, tiles in by_row.items():
        height = tiles[0].height
        strip = reader.valid_window(0, row, reader.scene.width, height)
        for tile in tiles:
            nodata = 1.0 - float(strip[:, tile.col : tile.col + tile.width].mean())
            if nodata > max_nodata_fraction:
                skipped += 1
            else:
                kept.append(tile)
    return TileGrid(tuple(kept), skipped)


def _ring_pixels(tile: Tile, densify: int) -> tuple[np.ndarray, np.ndarray]:
    """Counter-clockwise (in lon/lat for north-up images) outline points of the window."""
    t = np.linspace(0.0, 1.0, densify + 1)[:-1]
    c0, r0 = float(tile.col), float(tile.row)
    c1, r1 = c0 + tile.width, r0 + tile.height
    cols = np.concatenate([c0 + 0 * t, c0 + (c1 - c0) * t, c1 + 0 * t, c1 - (c1 - c0) * t])
    rows = np.concatenate([r0 + (r1 - r0) * t, r1 + 0 * t, r1 - (r1 - r0) * t, r0 + 0 * t])
    return cols, rows


def footprint(scene: Scene, tile: Tile, *, densify: int = 8) -> np.ndarray:
    """The window's outline in WGS84: ``float64 [n + 1, 2]`` (lon, lat), closed ring.

    Raises:
        FootprintError: The ring crosses the antimeridian.
    """
    from rasterio.crs import CRS
    from rasterio.warp import transform

    cols, rows = _ring_pixels(tile, densify)
    a, b, c, d, e, f = scene.transform  # x = a col + b row + c, y = d col + e row + f
    xs, ys = a * cols + b * rows + c, d * cols + e * rows + f
    lons, lats = transform(CRS.from_wkt(scene.crs), CRS.from_epsg(4326), list(xs), list(ys))
    lons, lats = np.asarray(lons), np.asarray(lats)
    if not (np.all(np.isfinite(lons)) and np.all(np.isfinite(lats))):
        raise FootprintError(
            f"scene {scene.scene_id!r} window {tile.key}: footprint outside the CRS's valid area"
        )
    closed = np.stack([np.append(lons, lons[0]), np.append(lats, lats[0])], axis=1)
    if np.any(np.abs(np.diff(closed[:, 0])) > 180.0) or np.any(np.abs(closed[:, 0]) > 180.0):
        raise FootprintError(
            f"scene {scene.scene_id!r} window {tile.key}: footprint crosses the antimeridian "
            "(180 degrees longitude); such tiles are not supported: split the scene at 180"
        )
    return closed


def footprint_wkt(ring: np.ndarray) -> str:
    """WKT ``POLYGON`` of a closed lon/lat ring, counter-clockwise (RFC 7946 orientation)."""
    from shapely.geometry import Polygon
    from shapely.geometry.polygon import orient

    return orient(Polygon(ring), sign=1.0).wkt


def footprint_iou(a: str, b: str) -> float:
    """Intersection over union of two WKT footprints (see the module docstring)."""
    from shapely import wkt

    pa, pb = wkt.loads(a), wkt.loads(b)
    union = pa.union(pb).area
    return float(pa.intersection(pb).area / union) if union > 0 else 0.0


def nms(footprints: Sequence[str], iou: float) -> list[int]:
    """Greedy NMS: positions kept, in order; a footprint overlapping a kept one (IoU > ``iou``)
    is dropped. ``footprints`` are WKT, best first."""
    from shapely import STRtree, wkt

    shapes = [wkt.loads(text) for text in footprints]
    tree = STRtree(shapes) if shapes else None
    kept: list[int] = []
    dropped = np.zeros(len(shapes), bool)
    for i, shape in enumerate(shapes):
        if dropped[i]:
            continue
        kept.append(i)
        for j in tree.query(shape):
            if j > i and not dropped[j]:
                union = shape.union(shapes[j]).area
                if union > 0 and shape.intersection(shapes[j]).area / union > iou:
                    dropped[j] = True
    return kept
