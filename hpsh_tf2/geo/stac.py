"""Scenes from a path: a folder of GeoTIFFs, one GeoTIFF, or a local STAC catalog /
ItemCollection.

A STAC source is a JSON file: a ``Catalog`` / ``Collection`` (its items are walked with
pystac, links resolved relative to the file) or a ``FeatureCollection`` of items (an
ItemCollection). Each item gives one scene: the asset named by ``index.stac_asset``, the item id
as scene id and the item's ``datetime`` (or ``start_datetime``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from hpsh_tf2.geo.raster import SceneError, is_geotiff

__all__ = ["SceneSource", "list_scenes"]


@dataclass(frozen=True)
class SceneSource:
    """Where one scene comes from.

    Attributes:
        path: The raster file (absolute).
        scene_id: Its id in the index.
        datetime: ISO 8601 time from the catalog, or ``""`` (the file's tag is used then).
    """

    path: str
    scene_id: str
    datetime: str = ""


def _is_stac(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".json"


def _from_folder(root: Path) -> list[SceneSource]:
    sources = []
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not is_geotiff(name):
                continue
            path = Path(current) / name
            sources.append(SceneSource(str(path.resolve()), path.relative_to(root).as_posix()))
    return sources


def _local_href(href: str, item_path: str) -> str:
    parsed = urlparse(href)
    if parsed.scheme not in ("", "file"):
        raise SceneError(
            f"STAC asset {href!r} in {item_path} is remote; expected a local file (download the "
            "assets first)"
        )
    return parsed.path if parsed.scheme == "file" else href


def _item_source(item, asset: str, origin: str) -> SceneSource:
    if asset not in item.assets:
        raise SceneError(
            f"STAC item {item.id!r} in {origin} has no asset {asset!r} (index.stac_asset); "
            f"it has {sorted(item.assets)}"
        )
    href = _local_href(item.assets[asset].get_absolute_href() or item.assets[asset].href, origin)
    moment = item.datetime or item.common_metadata.start_datetime
    return SceneSource(
        str(Path(href).resolve()), str(item.id), moment.isoformat() if moment else ""
    )


def _from_stac(path: Path, asset: str) -> list[SceneSource]:
    import pystac

    try:
        kind = json.loads(path.read_text(encoding="utf-8")).get("type")
        if kind == "FeatureCollection":
            items = list(pystac.ItemCollection.from_file(str(path)))
        elif kind == "Feature":
            items = [pystac.Item.from_file(str(path))]
        else:
            items = list(pystac.read_file(str(path)).get_items(recursive=True))
    except (OSError, ValueError, KeyError, pystac.STACError) as err:
        raise SceneError(
            f"cannot read STAC {str(path)!r}: {err}; expected a Catalog, Collection, Item or "
            "ItemCollection JSON file"
        ) from None
    sources = [_item_source(item, asset, str(path)) for item in items]
    ids = [s.scene_id for s in sources]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate is not None:
        raise SceneError(f"STAC {str(path)!r} holds item id {duplicate!r} twice")
    return sorted(sources, key=lambda s: s.scene_id)


def list_scenes(path: str | os.PathLike[str], *, asset: str = "visual") -> list[SceneSource]:
    """The scenes of ``path`` (see the module docstring), sorted by id.

    Raises:
        SceneError: A missing path, a file that is neither a GeoTIFF nor STAC JSON, an item
            without the asset.
    """
    root = Path(path).expanduser()
    if root.is_dir():
        return _from_folder(root)
    if _is_stac(root):
        return _from_stac(root, asset)
    if root.is_file() and is_geotiff(root):
        return [SceneSource(str(root.resolve()), root.name)]
    raise SceneError(
        f"Received: --scenes {str(path)!r}; expected a folder of GeoTIFFs, a GeoTIFF file or a "
        "STAC catalog / ItemCollection JSON file"
        + ("" if root.exists() else " (no such file or folder)")
    )
