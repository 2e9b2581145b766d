"""CLI options of scene archives: ``index build --scenes`` and the scene options of
``index search`` (wired into :mod:`hpsh_tf2.index.commands`)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = [
    "add_build_options",
    "add_info_options",
    "add_search_options",
    "is_scene_search",
    "run_build",
    "run_info",
    "run_search",
]

_SCENE_SEARCH_FLAGS = ("scene", "lonlat", "bbox", "after", "before", "geojson", "scenes_index")


def add_build_options(build: argparse.ArgumentParser) -> None:
    """Adds ``--scenes`` to ``index build``."""
    build.add_argument(
        "--scenes",
        metavar="PATH",
        help="index georeferenced scenes instead of --images: a folder of GeoTIFFs, one "
        "GeoTIFF, or a STAC catalog / ItemCollection JSON (tiles of index.tile_size px)",
    )


def add_search_options(search: argparse.ArgumentParser) -> None:
    """Adds the scene search options to ``index search``."""
    group = search.add_argument_group("scenes (an index built with --scenes)")
    group.add_argument(
        "--scenes-index", action="store_true", help="search the scene tiles (implied by the rest)"
    )
    group.add_argument("--scene", help="with --lonlat: the query's scene; else keep this scene")
    group.add_argument("--lonlat", metavar="LON,LAT", help="the indexed tile here is the query")
    group.add_argument(
        "--bbox", metavar="MINLON,MINLAT,MAXLON,MAXLAT", help="keep footprints meeting this box"
    )
    group.add_argument("--after", help="keep scenes acquired at or after (ISO 8601)")
    group.add_argument("--before", help="keep scenes acquired at or before (ISO 8601)")
    group.add_argument(
        "--nms",
        type=float,
        default=0.3,
        metavar="IOU",
        help="drop results overlapping a better one by more than IOU (default 0.3; 1 = off)",
    )
    group.add_argument(
        "--geojson", metavar="FILE", help="write the results as GeoJSON (+ overview PNGs beside)"
    )


def add_info_options(info: argparse.ArgumentParser) -> None:
    """Adds ``--scenes-index`` to ``index info``."""
    info.add_argument(
        "--scenes-index",
        action="store_true",
        help="describe the scene tiles (an index built with --scenes) instead of the images",
    )


def is_scene_search(args: argparse.Namespace) -> bool:
    """Whether ``index search`` arguments ask for a scene search."""
    return any(getattr(args, flag, None) for flag in _SCENE_SEARCH_FLAGS)


def _floats(text: str, count: int, flag: str) -> list[float]:
    from hpsh_tf2.index.store import ArchiveIndexError

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise ArchiveIndexError(
            f"Received: {flag} {text!r}; expected {count} comma-separated numbers"
        )
    return values


def run_build(args: argparse.Namespace, config: Any, uri: str, collection: str, model: str) -> int:
    """``index build --scenes`` (``--prune`` and ``index.max_remove_fraction`` as for files)."""
    from hpsh_tf2.index.scenes import TilingOptions, build_scene_index

    options = TilingOptions(
        tile_size=config.index.tile_size,
        tile_stride=config.index.tile_stride,
        max_nodata_fraction=config.index.max_nodata_fraction,
        bands=config.data.bands,
        band_scale=config.data.band_scale,
    )
    report = build_scene_index(
        model,
        args.scenes,
        uri=uri,
        collection=collection,
        options=options,
        stac_asset=config.index.stac_asset,
        batch_size=config.index.batch_size,
        index_type=config.index.index_type,
        nlist=config.index.nlist,
        workdir=config.workdir,
        max_remove_fraction=config.index.max_remove_fraction,
        prune=args.prune,
    )
    print(report.summary())
    return 0


def run_info(args: argparse.Namespace, config: Any, uri: str, collection: str) -> int:
    """``index info --scenes-index``: rows, scenes, model and last build of the scene tiles."""
    import json

    from hpsh_tf2.index.scenes import scene_info

    info = scene_info(uri, collection, workdir=config.workdir)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    model = info["model"]
    print(f"index {uri} (collection {info['collection']!r}): {info['rows']} tiles of "
          f"{info['scenes']} scenes")  # fmt: skip
    print(
        f"  model: {model['model_name']} v{model['version']}, {model['bits']} bits, "
        f"{model['backbone']} at {model['image_size']} px, id {model['model_id']}, "
        f"from {model['export_path']}"
    )
    last = info.get("last_build")
    if last:
        print(
            f"  last build: {last['scenes']} scenes in {last['source']}, {last['added']} "
            f"added, {last['updated']} updated, {last['removed']} removed, "
            f"{last['skipped']} unreadable, {last['tiles']} tiles encoded "
            f"({last['seconds']:.1f} s)"
        )
    return 0


def run_search(args: argparse.Namespace, config: Any, uri: str, collection: str) -> int:
    """``index search`` over scene tiles: prints the places, writes GeoJSON and overviews."""
    from hpsh_tf2.index.scenes import (
        SceneStore,
        display_reading,
        parse_time,
        scene_collection,
        scene_paths,
        search_scenes,
        write_outputs,
    )
    from hpsh_tf2.index.store import ArchiveIndexError
    from hpsh_tf2.serving import export_reading

    at = None
    if args.lonlat:
        if not args.scene:
            raise ArchiveIndexError("Received: --lonlat without --scene; expected both")
        lon, lat = _floats(args.lonlat, 2, "--lonlat")
        at = (args.scene, lon, lat)
    images = list(args.image or [])
    if at is not None and images:
        raise ArchiveIndexError("expected one query: --image FILE or --scene S --lonlat LON,LAT")
    results = search_scenes(
        uri=uri,
        collection=collection,
        images=images,
        at=at,
        model_dir=args.model,
        top=args.top,
        bbox=_floats(args.bbox, 4, "--bbox") if args.bbox else None,
        scene=args.scene if at is None else None,
        after=parse_time(args.after, flag="--after") if args.after else None,
        before=parse_time(args.before, flag="--before") if args.before else None,
        nms_iou=None if args.nms >= 1 else args.nms,
        nprobe=config.index.nprobe,
        bands=config.data.bands,
        band_scale=config.data.band_scale,
    )
    model_dir = args.model
    if model_dir is None:
        with SceneStore(uri, scene_collection(collection), read_only=True) as store:
            model_dir = store.record().export_path
    reading = export_reading(model_dir, bands=config.data.bands, band_scale=config.data.band_scale)
    query = images[0] if images else f"{args.scene} at {args.lonlat}"
    print(f"query: {query} (index {uri})")
    for r in results:
        col, row, width, height = r.window
        print(f"  {r.rank:3d}  d={r.distance:3d}  {r.scene}  window {col},{row},{width},{height}")
    paths = scene_paths(uri, collection, [r.scene for r in results])
    shown = display_reading(reading)  # pictures show the first three bands
    scale = {"bands": shown.bands, "band_scale": shown.band_scale}
    if args.out:
        from hpsh_tf2.index.scenes import query_picture, read_tile, tile_at, write_tile_grid

        if at is not None:
            file, window = tile_at(uri, collection, *at)
            pixels = read_tile(file, window, **scale)
        else:
            pixels = query_picture(images[0], reading)
        grid = write_tile_grid(
            args.out, pixels, results, paths, query_scene=args.scene or "?", **scale
        )
        print(f"wrote {grid}")
    if args.geojson:
        for path in write_outputs(args.geojson, results, paths, **scale):
            print(f"wrote {path}")
    return 0
