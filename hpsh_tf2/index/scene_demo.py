"""``make demo-scenes``: a small georeferenced scene from the demo data, indexed and searched.

Lays demo images on a grid as one GeoTIFF (EPSG:32633, 0.5 m pixels, a nodata border), builds
the scene index with the demo's export, searches with the tile at one cell's centre and writes
the GeoJSON and the overview PNG, printing their paths::

    python -m hpsh_tf2.index.scene_demo --workdir runs/demo
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from hpsh_tf2.data.demo import make_demo_dataset
from hpsh_tf2.data.images import has_image_extension
from hpsh_tf2.geo.raster import SceneError
from hpsh_tf2.index.scenes import TilingOptions, build_scene_index, search_scenes, write_outputs
from hpsh_tf2.layout import RunLayout

__all__ = ["make_demo_scene", "run_demo"]

CELL = 64
GRID = 4
ORIGIN = (500000.0, 5000000.0)
PIXEL_M = 0.5


def make_demo_scene(images: Path, dest: Path) -> Path:
    """Writes ``dest`` (a GeoTIFF): GRID x GRID demo images in a one-cell nodata border."""
    import rasterio
    from affine import Affine

    classes = sorted(p for p in images.iterdir() if p.is_dir())
    paths = [sorted(f for f in c.iterdir() if has_image_extension(f.name)) for c in classes]
    side = (GRID + 2) * CELL
    rgb = np.zeros((side, side, 3), np.uint8)
    for index in range(GRID * GRID):
        files = paths[index % len(paths)]
        with Image.open(files[index // len(paths) % len(files)]) as img:
            cell = np.asarray(img.convert("RGB").resize((CELL, CELL)), np.uint8)
        row, col = 1 + index // GRID, 1 + index % GRID
        rgb[row * CELL : (row + 1) * CELL, col * CELL : (col + 1) * CELL] = np.maximum(cell, 1)
    dest.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8",
        "crs": "EPSG:32633", "nodata": 0,
        "transform": Affine(PIXEL_M, 0, ORIGIN[0], 0, -PIXEL_M, ORIGIN[1]),
    }  # fmt: skip
    with rasterio.open(dest, "w", **profile) as dst:
        dst.write(np.moveaxis(rgb, -1, 0))
    return dest


def _export(workdir: Path) -> Path:
    root = RunLayout(workdir).export_root
    models = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not models:
        raise SceneError(f"no export under {root}; run `make demo` (python cli.py demo) first")
    return models[0]


def run_demo(workdir: Path) -> list[Path]:
    """Builds, indexes and searches the demo scene; returns the files written."""
    data = make_demo_dataset(workdir / "data")
    scenes = workdir / "scenes"
    make_demo_scene(Path(data), scenes / "demo_scene.tif")
    uri = str(workdir / "scenes_index.db")
    options = TilingOptions(tile_size=CELL, tile_stride=CELL // 2, max_nodata_fraction=0.25)
    report = build_scene_index(_export(workdir), scenes, uri=uri, options=options)
    print(report.summary())
    from pyproj import Transformer

    x = ORIGIN[0] + PIXEL_M * CELL * 2.5
    y = ORIGIN[1] - PIXEL_M * CELL * 1.5
    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(x, y)
    results = search_scenes(uri=uri, at=("demo_scene.tif", lon, lat), top=5)
    for r in results:
        print(f"  {r.rank}  d={r.distance}  {r.scene}  window {r.window}")
    paths = {"demo_scene.tif": str(scenes / "demo_scene.tif")}
    written = write_outputs(workdir / "scenes_out" / "places.geojson", results, paths)
    for path in written:
        print(f"wrote {path}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/demo", help="the demo's workdir")
    args = parser.parse_args(argv)
    try:
        run_demo(Path(args.workdir))
    except SceneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
