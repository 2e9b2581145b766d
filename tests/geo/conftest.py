"""GeoTIFF fixtures written with rasterio: real pixels, real georeferencing.

The mosaic scene lays AID sample images (150 x 150 px each) on a grid of cells with a known
UTM transform (EPSG:32633, 0.5 m pixels, upper-left corner at easting 500000, northing
5000000, about 45.1 N 15 E), with a ring of nodata cells around the data. The 13-band uint16
version holds the same RGB pixels times 10 in bands 4, 3, 2 (Sentinel-2 true-colour order), so
``data.bands=[4, 3, 2]`` with ``data.band_scale='0-2550'`` gives back the RGB bytes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import AID_SAMPLE

CELL = 150
PIXEL_M = 0.5
ORIGIN = (500000.0, 5000000.0)
EPSG = 32633
# Row-major cells inside the nodata ring: (class folder, image index in the sorted folder).
CELLS = (
    ("Airport", 0), ("Forest", 0), ("Beach", 0),
    ("Desert", 0), ("Airport", 1), ("Farmland", 0),
    ("Parking", 0), ("River", 0), ("StorageTanks", 0),
)  # fmt: skip
INNER = 3  # cells per side inside the ring


@dataclass(frozen=True)
class Mosaic:
    """A written mosaic scene and where its cells are."""

    path: Path
    cells: dict[tuple[int, int], str]  # (cell col, cell row) of the full grid -> image path
    rgb: np.ndarray  # uint8 [H, W, 3] as written (zeros in the nodata ring)

    def window(self, cell: tuple[int, int]) -> tuple[int, int, int, int]:
        return (cell[0] * CELL, cell[1] * CELL, CELL, CELL)


def _image(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB").resize((CELL, CELL)), np.uint8)


def mosaic_pixels(root: Path) -> tuple[np.ndarray, dict[tuple[int, int], str]]:
    """RGB pixels of the (INNER + 2)^2-cell grid (ring of zeros) and the cell -> image map."""
    side = (INNER + 2) * CELL
    rgb = np.zeros((side, side, 3), np.uint8)
    cells = {}
    for index, (folder, number) in enumerate(CELLS):
        path = sorted((root / folder).iterdir())[number]
        col, row = 1 + index % INNER, 1 + index // INNER
        pixels = _image(path)
        pixels = np.maximum(pixels, 1)  # 0 is the nodata value
        rgb[row * CELL : (row + 1) * CELL, col * CELL : (col + 1) * CELL] = pixels
        cells[(col, row)] = str(path)
    return rgb, cells


def write_geotiff(
    path: Path,
    bands_first: np.ndarray,
    *,
    crs: str | None = f"EPSG:{EPSG}",
    transform=None,
    nodata: float | None = 0,
    tags: dict | None = None,
    tiled: bool = False,
) -> Path:
    """Writes ``[bands, H, W]`` as a GeoTIFF."""
    import rasterio
    from affine import Affine

    count, height, width = bands_first.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": str(bands_first.dtype),
        "transform": transform or Affine(PIXEL_M, 0, ORIGIN[0], 0, -PIXEL_M, ORIGIN[1]),
    }
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    if tiled:
        profile.update(tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(bands_first)
        if tags:
            dst.update_tags(**tags)
    return path


def write_mosaic(folder: Path, *, name: str = "mosaic.tif", bands13: bool = False) -> Mosaic:
    """The mosaic scene (3-band uint8, or 13-band uint16 with RGB x 10 in bands 4, 3, 2)."""
    rgb, cells = mosaic_pixels(AID_SAMPLE)
    folder.mkdir(parents=True, exist_ok=True)
    if bands13:
        stack = np.full((13, *rgb.shape[:2]), 700, np.uint16)
        for band, channel in ((4, 0), (3, 1), (2, 2)):
            stack[band - 1] = rgb[..., channel].astype(np.uint16) * 10
        stack[:, rgb.max(axis=-1) == 0] = 0
        data = stack
    else:
        data = np.moveaxis(rgb, -1, 0)
    path = write_geotiff(folder / name, data, tags={"TIFFTAG_DATETIME": "2024:05:01 10:30:00"})
    return Mosaic(path, cells, rgb)


@pytest.fixture(scope="session")
def aid_sample() -> Path:
    if not AID_SAMPLE.is_dir():
        pytest.skip(f"shared AID sample not found at {AID_SAMPLE}")
    return AID_SAMPLE


@pytest.fixture
def mosaic(tmp_path, aid_sample) -> Mosaic:
    return write_mosaic(tmp_path / "scenes")


def synthetic(height: int = 300, width: int = 400, count: int = 3, seed: int = 0) -> np.ndarray:
    """Random uint8 ``[count, H, W]`` pixels (no shared data needed)."""
    return np.random.default_rng(seed).integers(1, 256, (count, height, width), dtype=np.uint8)
