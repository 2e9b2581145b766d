"""Search results as an RFC 7946 GeoJSON FeatureCollection and per-scene overview PNGs.

GeoJSON (RFC 7946): coordinates are ``[longitude, latitude]`` in WGS84, polygon exterior rings
are counter-clockwise (section 3.1.6) and closed; each feature's properties hold ``rank``,
``distance``, ``scene``, ``window`` (``[col, row, width, height]``), ``crs`` and ``datetime``.
QGIS opens the file as a layer. Files are written atomically.

Overview: a decimated read of the scene (its quicklook, at most ``side`` px), with each result's
pixel window drawn as a rectangle and numbered by rank. The window is drawn in the scene's own
pixel grid, so it is exact for any CRS or rotation.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpsh_tf2.atomic import atomic_path, write_text_atomic
from hpsh_tf2.geo.raster import Scene, SceneReader

__all__ = ["SceneResult", "feature_collection", "overview_name", "write_geojson", "write_overview"]


@dataclass(frozen=True)
class SceneResult:
    """One search result that is a scene tile.

    Attributes:
        rank: 1-based rank after NMS.
        distance: Hamming distance to the query.
        scene: Scene id.
        window: ``(col, row, width, height)``.
        footprint: WKT polygon in WGS84.
        crs: The scene's CRS name.
        datetime: The scene's acquisition time or ``""``.
    """

    rank: int
    distance: int
    scene: str
    window: tuple[int, int, int, int]
    footprint: str
    crs: str = ""
    datetime: str = ""


def _polygon(wkt_text: str) -> dict:
    from shapely import wkt
    from shapely.geometry import mapping
    from shapely.geometry.polygon import orient

    shape = orient(wkt.loads(wkt_text), sign=1.0)
    geometry = mapping(shape)
    rings = [[list(p) for p in ring] for ring in geometry["coordinates"]]
    return {"type": "Polygon", "coordinates": rings}


def feature_collection(results: Sequence[SceneResult]) -> dict:
    """The results as a GeoJSON FeatureCollection (a dict)."""
    features = [
        {
            "type": "Feature",
            "geometry": _polygon(r.footprint),
            "properties": {
                "rank": r.rank,
                "distance": r.distance,
                "scene": r.scene,
                "window": list(r.window),
                "crs": r.crs,
                "datetime": r.datetime,
            },
        }
        for r in results
    ]
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | os.PathLike[str], results: Sequence[SceneResult]) -> Path:
    """Writes :func:`feature_collection` to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(feature_collection(results), indent=1) + "\n")


def overview_name(geojson_path: str | os.PathLike[str], scene_id: str) -> Path:
    """``<geojson stem>.<scene id, made file-safe>.png`` beside the GeoJSON file."""
    base = Path(geojson_path)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", scene_id).strip("._") or "scene"
    return base.with_name(f"{base.stem}.{safe}.png")


def write_overview(
    path: str | os.PathLike[str],
    scene: Scene,
    results: Sequence[SceneResult],
    *,
    bands: Sequence[int] | None = None,
    band_scale: str | Sequence[str] | None = None,
    side: int = 1024,
) -> Path:
    """Draws ``results`` (of this scene) on a decimated quicklook and saves it as a PNG."""
    from PIL import Image, ImageDraw

    with SceneReader(scene, bands=bands, band_scale=band_scale, overview_side=side) as reader:
        pixels, factor = reader.overview()
    rgb = pixels[..., :3] if pixels.shape[-1] >= 3 else np.repeat(pixels[..., :1], 3, axis=-1)
    image = Image.fromarray(np.ascontiguousarray(rgb, np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for result in results:
        col, row, width, height = result.window
        box = [col / factor, row / factor, (col + width) / factor - 1, (row + height) / factor - 1]
        draw.rectangle(box, outline=(255, 32, 32), width=2)
        draw.text((box[0] + 3, box[1] + 2), str(result.rank), fill=(255, 255, 0))
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
