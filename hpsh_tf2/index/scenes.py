"""Scene archives in the index: ``index build --scenes`` and searches that return places.

Rows live in their own collection, ``<index.collection>_scenes`` (their schema differs from the
file archive's), one row per tile:

* ``id`` int64 primary key: BLAKE2b-64 of ``scene id + window`` (a retried batch replaces
  its own rows);
* ``code``: the tile's packed code, computed by the export's ``encode_pixels`` signature,
  which resizes with :func:`hpsh_tf2.data.images.resize_image` like ``serving_default`` does
  after decoding a file (one resize path: a PNG of a tile encodes to the tile's code). Tiles
  are read with the band settings the export records (``input_bands``, ``bands``,
  ``band_scale``: :func:`hpsh_tf2.serving.export_reading`; the config's ``data.bands`` /
  ``data.band_scale`` fill in when it records none), so a multi-band model indexes its bands;
* ``scene``, ``scene_key`` (int64 hash of the scene id, the only form filters use), ``path``
  (the raster file), ``col``, ``row``, ``width``, ``height`` (the pixel window);
* ``footprint``: WKT polygon in WGS84 (counter-clockwise), plus its bounding box in integer
  micro-degrees ``minlon_u``, ``minlat_u``, ``maxlon_u``, ``maxlat_u`` (rounded outward);
* ``crs`` (``EPSG:NNNN`` or WKT), ``datetime`` (ISO text) and ``time_s`` (epoch seconds,
  :data:`NO_TIME` when unknown);
* ``size``, ``mtime_ns`` (the scene file's fingerprint), ``grid`` (the tiling parameters) and
  ``tiles`` (tiles the scene had when indexed).

Incremental builds: a scene is up to date when its rows carry its fingerprint and grid and
there are ``tiles`` of them (a build killed half-way through a scene leaves fewer, so the
scene is redone); a changed scene is re-encoded and its rows that are no longer part of its
grid deleted; a removed scene's rows are deleted. The guards of file archives apply: one build
per index at a time (:func:`hpsh_tf2.index.lock.index_writer_lock`), and the prune guard
(:func:`hpsh_tf2.index.prune.check_removal`, counting rows, i.e. tiles): removing the rows of
vanished scenes is refused when the scenes path holds no scene or when more than
``index.max_remove_fraction`` of the rows would go, unless ``prune``. Readers (search,
:func:`scene_info`) open the collection read-only: a snapshot while a build writes, or when the
index lies in a read-only folder.

Filters (``--bbox``, ``--scene``, ``--after``, ``--before``) are built by
:func:`scene_filter` from integers only (micro-degrees, epoch seconds, the scene's hash):
no user text ever becomes expression text. Milvus Lite rejects ``filter_params`` templates,
so binding strings is not available on every deployment; integers need no escaping.
"""

from __future__ import annotations

import hashlib
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hpsh_tf2.atomic import write_json_atomic
from hpsh_tf2.data.images import BandReading
from hpsh_tf2.evaluation.plots import save_retrieval_grid
from hpsh_tf2.geo.geojson import SceneResult, overview_name, write_geojson, write_overview
from hpsh_tf2.geo.raster import Scene, SceneError, SceneReader, open_scene
from hpsh_tf2.geo.stac import SceneSource, list_scenes
from hpsh_tf2.geo.tiles import Tile, footprint, footprint_wkt, nms, tile_grid
from hpsh_tf2.index.encoder import SavedModelEncoder, check_same_model, model_record
from hpsh_tf2.index.lock import index_writer_lock
from hpsh_tf2.index.prune import check_removal
from hpsh_tf2.index.store import ArchiveIndexError, IndexStore, is_local_uri
from hpsh_tf2.serving import export_reading, read_query_pixels

__all__ = [
    "NO_TIME",
    "SceneBuildReport",
    "SceneStore",
    "TileEncoder",
    "build_scene_index",
    "display_reading",
    "parse_time",
    "query_picture",
    "scene_collection",
    "scene_filter",
    "scene_info",
    "scene_key",
    "search_scenes",
]

NO_TIME = -(2**62)
"""``time_s`` of a row whose scene has no acquisition time."""
MICRO = 1_000_000
_MAX_TEXT = 8192
_CANDIDATES = 8  # rows fetched per result kept, before NMS


def scene_collection(collection: str) -> str:
    """The collection holding scene tiles for ``index.collection``."""
    return f"{collection}_scenes"


def _hash64(text: str) -> int:
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def scene_key(scene_id: str) -> int:
    """The int64 key of a scene id (what ``--scene`` filters on)."""
    return _hash64("scene\0" + scene_id)


def _row_id(scene_id: str, tile: Tile) -> int:
    return _hash64(f"tile\0{scene_id}\0{tile.key}")


def parse_time(text: str, *, flag: str) -> int:
    """ISO 8601 date or date-time (UTC when no zone) -> epoch seconds.

    Raises:
        ArchiveIndexError: Not an ISO date.
    """
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise ArchiveIndexError(
            f"Received: {flag} {text!r}; expected an ISO 8601 date such as 2024-05-01 or "
            "2024-05-01T10:30:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return math.floor(moment.timestamp())


def _micro(value: float, *, up: bool) -> int:
    scaled = value * MICRO
    return int(math.ceil(scaled) if up else math.floor(scaled))


def scene_filter(
    *,
    bbox: Sequence[float] | None = None,
    scene: str | None = None,
    after: int | None = None,
    before: int | None = None,
) -> str:
    """A Milvus expression over the integer fields only (see the module docstring).

    Args:
        bbox: ``(minlon, minlat, maxlon, maxlat)``: keep footprints whose box intersects it.
        scene: Keep one scene (by its hash; the scene id never enters the expression).
        after: Keep scenes acquired at or after these epoch seconds.
        before: Keep scenes acquired at or before these epoch seconds.

    Raises:
        ArchiveIndexError: A malformed box.
    """
    clauses: list[str] = []
    if bbox is not None:
        values = [float(v) for v in bbox]
        if len(values) != 4 or not all(math.isfinite(v) for v in values):
            raise ArchiveIndexError(
                f"Received: --bbox {bbox!r}; expected minlon,minlat,maxlon,maxlat"
            )
        minlon, minlat, maxlon, maxlat = values
        if not (-180 <= minlon <= maxlon <= 180 and -90 <= minlat <= maxlat <= 90):
            raise ArchiveIndexError(
                f"Received: --bbox {','.join(map(str, values))}; expected minlon <= maxlon in "
                "[-180, 180] and minlat <= maxlat in [-90, 90]"
            )
        clauses += [
            f"maxlon_u >= {_micro(minlon, up=False):d}",
            f"minlon_u <= {_micro(maxlon, up=True):d}",
            f"maxlat_u >= {_micro(minlat, up=False):d}",
            f"minlat_u <= {_micro(maxlat, up=True):d}",
        ]
    if scene is not None:
        clauses.append(f"scene_key == {scene_key(scene):d}")
    if after is not None or before is not None:
        clauses.append(f"time_s != {NO_TIME:d}")
    if after is not None:
        clauses.append(f"time_s >= {int(after):d}")
    if before is not None:
        clauses.append(f"time_s <= {int(before):d}")
    return " and ".join(clauses)


class SceneStore(IndexStore):
    """The scene-tile collection (schema in the module docstring) on an index URI."""

    build_source = "--scenes PATH"

    def create(
        self, record: Any, *, index_type: str = "BIN_FLAT", nlist: int = 1024
    ) -> None:  # the schema differs from the file archive's
        import pymilvus

        allowed = ("BIN_FLAT",) if is_local_uri(self.uri) else ("BIN_FLAT", "BIN_IVF_FLAT")
        if index_type not in allowed:
            raise ArchiveIndexError(
                f"Received: index.index_type={index_type!r} for {self.where}; expected one of "
                f"{', '.join(allowed)}"
            )
        schema = pymilvus.MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=False, description=record.to_json()
        )
        types = pymilvus.DataType
        schema.add_field("id", types.INT64, is_primary=True)
        schema.add_field("code", types.BINARY_VECTOR, dim=record.bits)
        for name in ("scene", "path", "footprint", "crs", "grid"):
            schema.add_field(name, types.VARCHAR, max_length=_MAX_TEXT)
        schema.add_field("datetime", types.VARCHAR, max_length=64)
        for name in (
            "scene_key", "col", "row", "width", "height", "minlon_u", "minlat_u", "maxlon_u",
            "maxlat_u", "time_s", "size", "mtime_ns", "tiles",
        ):  # fmt: skip
            schema.add_field(name, types.INT64)
        params = self._client.prepare_index_params()
        extra = {"nlist": int(nlist)} if index_type == "BIN_IVF_FLAT" else {}
        params.add_index(field_name="code", index_type=index_type, metric_type="HAMMING",
                         params=extra)  # fmt: skip
        self._client.create_collection(
            self.collection, schema=schema, index_params=params, consistency_level="Strong"
        )
        self._record = record

    def upsert_rows(self, rows: list[dict[str, Any]]) -> int:
        """Writes tile rows (dicts with every field); returns the number written."""
        if rows:
            with self._writing():
                self._client.upsert(self.collection, data=rows)
        return len(rows)

    def scene_state(self) -> dict[str, dict[str, Any]]:
        """Per indexed scene: its fingerprint, grid, declared tile count and row ids."""
        state: dict[str, dict[str, Any]] = {}
        for row in self.query_rows(("scene", "size", "mtime_ns", "grid", "tiles")):
            entry = state.setdefault(row["scene"], {"ids": [], "fingerprints": set()})
            entry["ids"].append(int(row["id"]))
            entry["fingerprints"].add(
                (int(row["size"]), int(row["mtime_ns"]), row["grid"], int(row["tiles"]))
            )
        return state

    def search_tiles(self, packed: np.ndarray, *, limit: int, filter: str, nprobe: int) -> list:
        """Raw Milvus hits (with every metadata field) of each query code."""
        fields = ["scene", "path", "col", "row", "width", "height", "footprint", "crs",
                  "datetime"]  # fmt: skip
        return self._client.search(
            self.collection,
            data=[row.tobytes() for row in np.ascontiguousarray(packed, np.uint8)],
            anns_field="code",
            limit=limit,
            filter=filter,
            output_fields=fields,
            search_params={"metric_type": "HAMMING", "params": {"nprobe": int(nprobe)}},
        )


class TileEncoder(SavedModelEncoder):
    """Encodes 8-bit tiles with the export's ``encode_pixels`` signature (resize in-graph;
    :meth:`SavedModelEncoder.encode_pixels`)."""

    def warm_up(self) -> None:
        """Encodes one tile (the first call builds and optimises the graph)."""
        self.encode_pixels(np.zeros((1, 8, 8, self.reading.input_bands), np.uint8))


@dataclass(frozen=True)
class SceneBuildReport:
    """Counts of one ``index build --scenes``.

    Attributes:
        source: The scenes path.
        uri: Index URI.
        collection: The scene collection.
        scenes: Scenes found.
        added: New scenes indexed.
        updated: Changed scenes re-indexed.
        removed: Scenes whose rows were deleted (gone from the source).
        unchanged: Scenes up to date.
        tiles: Tiles encoded in this build.
        skipped_nodata: Tiles skipped for too much nodata in this build.
        skipped: ``(scene, reason)`` of scenes that could not be read.
        rows: Rows in the collection after the build.
        seconds: Wall time.
        tiles_per_second: Tiles encoded per second of the encode phase.
    """

    source: str
    uri: str
    collection: str
    scenes: int
    added: int
    updated: int
    removed: int
    unchanged: int
    tiles: int
    skipped_nodata: int
    skipped: tuple[tuple[str, str], ...]
    rows: int
    seconds: float
    tiles_per_second: float

    def summary(self) -> str:
        """A few lines for the CLI."""
        lines = [
            f"index {self.uri} (collection {self.collection!r}): {self.rows} tiles",
            f"  {self.scenes} scenes in {self.source}: {self.added} added, {self.updated} "
            f"updated, {self.removed} removed, {self.unchanged} unchanged, "
            f"{len(self.skipped)} unreadable",
            f"  {self.tiles} tiles encoded, {self.skipped_nodata} skipped (nodata), "
            f"{self.seconds:.1f} s ({self.tiles_per_second:.1f} tiles/s encoded)",
        ]
        lines.extend(f"  unreadable {scene}: {reason}" for scene, reason in self.skipped)
        return "\n".join(lines)


@dataclass(frozen=True)
class TilingOptions:
    """How scenes are cut and scaled (from ``data.*`` and ``index.*``)."""

    tile_size: int = 256
    tile_stride: int = 256
    max_nodata_fraction: float = 0.5
    bands: tuple[int, ...] | None = None
    band_scale: str | tuple[str, ...] | None = None
    input_bands: int = 3

    @property
    def grid(self) -> str:
        """The parameters a row records (a change re-tiles every scene)."""
        values = (self.tile_size, self.tile_stride, self.max_nodata_fraction, self.bands,
                  self.band_scale)  # fmt: skip
        return repr(values if self.input_bands == 3 else (*values, self.input_bands))

    def with_reading(self, reading: BandReading) -> TilingOptions:
        """These options reading the bands of ``reading`` (the export's)."""
        return replace(
            self,
            bands=reading.bands,
            band_scale=reading.band_scale,
            input_bands=reading.input_bands,
        )


def display_reading(reading: BandReading) -> BandReading:
    """3 bands of ``reading`` for pictures (grids, overviews): its first three bands."""
    scale = reading.band_scale
    if scale is not None and not isinstance(scale, str) and len(scale) > 3:
        scale = tuple(scale[:3])
    bands = None if reading.bands is None else tuple(reading.bands[:3])
    return BandReading(bands=bands, band_scale=scale, input_bands=3)


def _tile_rows(
    scene: Scene,
    tiles: Sequence[Tile],
    packed: np.ndarray | None,
    rings: list,
    total: int,
    grid: str,
) -> list[dict[str, Any]]:
    moment = parse_time(scene.datetime, flag="datetime") if scene.datetime else NO_TIME
    rows = []
    for tile, code, ring in zip(tiles, packed if packed is not None else [], rings):
        rows.append(
            {
                "id": _row_id(scene.scene_id, tile),
                "code": code.tobytes(),
                "scene": scene.scene_id,
                "scene_key": scene_key(scene.scene_id),
                "path": scene.path,
                "col": tile.col,
                "row": tile.row,
                "width": tile.width,
                "height": tile.height,
                "footprint": footprint_wkt(ring),
                "minlon_u": _micro(float(ring[:, 0].min()), up=False),
                "minlat_u": _micro(float(ring[:, 1].min()), up=False),
                "maxlon_u": _micro(float(ring[:, 0].max()), up=True),
                "maxlat_u": _micro(float(ring[:, 1].max()), up=True),
                "crs": scene.crs_name[:_MAX_TEXT],
                "datetime": scene.datetime,
                "time_s": moment,
                "size": scene.size,
                "mtime_ns": scene.mtime_ns,
                "grid": grid,
                "tiles": total,
            }
        )
    return rows


Batch = tuple[Scene, list[Tile], np.ndarray, list, int]


def _read_batches(
    scenes: Sequence[Scene], options: TilingOptions, batch_size: int, counts: dict[str, int]
) -> Iterator[Batch]:
    """Tiles of ``scenes`` in batches: ``(scene, tiles, pixels, footprints, scene tile count)``."""
    for scene in scenes:
        with SceneReader(
            scene, bands=options.bands, band_scale=options.band_scale, want=options.input_bands
        ) as reader:
            grid = tile_grid(
                reader, options.tile_size, options.tile_stride, options.max_nodata_fraction
            )
            counts["skipped_nodata"] += grid.skipped_nodata
            tiles = list(grid.tiles)
            for start in range(0, len(tiles), batch_size):
                chunk = tiles[start : start + batch_size]
                pixels = np.stack([reader.read_window(t.col, t.row, t.width, t.height)[0]
                                   for t in chunk])  # fmt: skip
                rings = [footprint(scene, t) for t in chunk]
                yield scene, chunk, pixels, rings, len(tiles)
            if not tiles:
                yield scene, [], np.zeros((0, 1, 1, options.input_bands), np.uint8), [], 0


def _encode_and_write(
    batches: Iterator[Batch],
    encoder: TileEncoder | None,
    store: SceneStore,
    grid: str,
    on_batch: Callable[[int], None] | None,
) -> tuple[int, dict[str, set[int]]]:
    """Encodes each batch and writes its rows, the write of one batch overlapping the encoding
    of the next (one writer thread; at most one batch of rows waits, and rows land in order).

    Returns:
        ``(tiles encoded, {scene id: row ids written})``.
    """
    written: dict[str, set[int]] = {}
    tiles = upserted = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scene-writer") as writer:
        pending = None
        for scene, chunk, pixels, rings, total in batches:
            packed = encoder.encode_pixels(pixels) if chunk else None
            rows = _tile_rows(scene, chunk, packed, rings, total, grid)
            if pending is not None:
                upserted = _landed(pending, upserted, on_batch)
            pending = writer.submit(store.upsert_rows, rows) if rows else None
            written.setdefault(scene.scene_id, set()).update(r["id"] for r in rows)
            tiles += len(chunk)
        if pending is not None:
            _landed(pending, upserted, on_batch)
    return tiles, written


def _landed(pending: Future, upserted: int, on_batch: Callable[[int], None] | None) -> int:
    """Waits for a batch's write (its error raises here) and reports the running row count."""
    upserted += pending.result()
    if on_batch is not None:
        on_batch(upserted)
    return upserted


def _prefetch(batches: Iterator[Batch], depth: int = 2) -> Iterator[Batch]:
    """Runs ``batches`` in a reader thread, ``depth`` batches ahead (tiles in flight: at most
    ``depth + 1`` batches), so reading and tiling overlap the model."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(done)
        except BaseException as err:  # handed to the consumer
            slots.put(err)

    thread = threading.Thread(target=produce, name="scene-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)


def _open_sources(sources: Sequence[SceneSource]) -> tuple[list[Scene], list[tuple[str, str]]]:
    scenes, bad = [], []
    for source in sources:
        try:
            scenes.append(open_scene(source.path, source.scene_id, datetime_iso=source.datetime))
        except SceneError as err:
            bad.append((source.scene_id, str(err)))
    return scenes, bad


def _status_path(uri: str, workdir: Path) -> Path:
    if is_local_uri(uri):
        return Path(uri).with_name(Path(uri).name + ".scenes.json")
    return workdir / "index_scenes.json"


def build_scene_index(
    model_dir: str | os.PathLike[str],
    scenes_path: str | os.PathLike[str],
    *,
    uri: str,
    collection: str = "hpsh",
    options: TilingOptions = TilingOptions(),
    stac_asset: str = "visual",
    batch_size: int = 64,
    index_type: str = "BIN_FLAT",
    nlist: int = 1024,
    workdir: str | os.PathLike[str] = ".",
    max_remove_fraction: float = 0.5,
    prune: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> SceneBuildReport:
    """Brings the scene collection of ``collection`` up to date with the scenes of a path.

    The build holds the index's writer lock (:func:`hpsh_tf2.index.lock.index_writer_lock`)
    from start to end, like ``index build --images``.

    Args:
        model_dir: The export (its ``encode_pixels`` signature encodes the tiles).
        scenes_path: Folder of GeoTIFFs, one GeoTIFF, or a STAC catalog / ItemCollection.
        uri: Index URI.
        collection: ``index.collection`` (rows go to :func:`scene_collection` of it).
        options: Tiling and band options (bands and scale: see the module docstring).
        stac_asset: The STAC asset read.
        batch_size: Tiles per model call and per upsert.
        index_type: Index type when the collection is created.
        nlist: ``BIN_IVF_FLAT`` clusters.
        workdir: Where a server index's status file goes.
        max_remove_fraction: Most rows (tiles) the build removes, as a fraction of the rows,
            for scenes gone from ``scenes_path`` without ``prune``.
        prune: Remove the rows of vanished scenes whatever their number (also when
            ``scenes_path`` holds no scene).
        on_batch: Called with the running count of upserted rows after each batch (tests use
            it to pause a build).

    Raises:
        SceneError: No readable scene at all (the first reason), or a footprint that
            crosses the antimeridian.
        IndexBusyError: Another process is building this index.
        PruneRefusedError: The rows of vanished scenes are too many, or the path holds no
            scene, and ``prune`` is False (see :func:`hpsh_tf2.index.prune.check_removal`).
        ModelMismatchError: The index holds another model's codes.
        BandError: The band settings differ from the export's, or do not fit a scene.
    """
    start = time.perf_counter()
    reading = export_reading(model_dir, bands=options.bands, band_scale=options.band_scale)
    options = options.with_reading(reading)
    with index_writer_lock(uri):
        sources = list_scenes(scenes_path, asset=stac_asset)
        scenes, bad = _open_sources(sources)
        if sources and not scenes:
            raise SceneError(bad[0][1])
        record = model_record(model_dir)
        name = scene_collection(collection)
        counts = {"skipped_nodata": 0}
        with SceneStore(uri, name) as store:
            store.open_for(record, index_type=index_type, nlist=nlist)
            state = store.scene_state()
            present = {s.scene_id for s in scenes} | {scene for scene, _ in bad}
            removed = sorted(scene for scene in state if scene not in present)
            check_removal(
                sum(len(state[scene]["ids"]) for scene in removed),
                sum(len(entry["ids"]) for entry in state.values()),
                names=removed,
                kind="scenes",
                source="--scenes",
                empty=None if sources else f"{scenes_path} holds no scenes",
                max_fraction=max_remove_fraction,
                prune=prune,
                command="index build --scenes",
            )
            store.delete_ids([i for scene in removed for i in state[scene]["ids"]])
            todo, unchanged = [], 0
            for scene in scenes:
                entry = state.get(scene.scene_id)
                if entry and len(entry["fingerprints"]) == 1:
                    size, mtime, grid, total = next(iter(entry["fingerprints"]))
                    if (
                        (size, mtime) == scene.fingerprint
                        and grid == options.grid
                        and total == len(entry["ids"])
                    ):
                        unchanged += 1
                        continue
                todo.append(scene)
            encoder = TileEncoder(model_dir, reading) if todo else None
            if encoder is not None:
                encoder.warm_up()
            encode_start = time.perf_counter()
            batches = _prefetch(_read_batches(todo, options, batch_size, counts))
            tiles, written = _encode_and_write(batches, encoder, store, options.grid, on_batch)
            encode_seconds = time.perf_counter() - encode_start
            stale = [
                i
                for scene in todo
                for i in state.get(scene.scene_id, {"ids": []})["ids"]
                if i not in written.get(scene.scene_id, set())
            ]
            store.delete_ids(stale)
            rows_after = store.count()
        updated = sum(1 for s in todo if s.scene_id in state)
        report = SceneBuildReport(
            source=str(scenes_path),
            uri=uri,
            collection=name,
            scenes=len(sources),
            added=len(todo) - updated,
            updated=updated,
            removed=len(removed),
            unchanged=unchanged,
            tiles=tiles,
            skipped_nodata=counts["skipped_nodata"],
            skipped=tuple(bad),
            rows=rows_after,
            seconds=time.perf_counter() - start,
            tiles_per_second=tiles / encode_seconds if encode_seconds > 0 and tiles else 0.0,
        )
        payload = asdict(report)
        payload["model"] = asdict(record)
        write_json_atomic(_status_path(uri, Path(workdir)), payload)
    return report


def scene_info(
    uri: str, collection: str = "hpsh", *, workdir: str | os.PathLike[str] = "."
) -> dict[str, Any]:
    """What the scene collection holds: rows (tiles), scenes, the model, the last build.

    Opens the collection read-only (a snapshot while a build writes, or in a read-only folder).

    Args:
        uri: Index URI.
        collection: ``index.collection``.
        workdir: Where a server index's status file is.

    Returns:
        ``uri``, ``collection``, ``rows``, ``scenes``, ``model`` and, when a build left its
        status, ``last_build``.

    Raises:
        ArchiveIndexError: No index or no scene collection there.
    """
    import json

    name = scene_collection(collection)
    with SceneStore(uri, name, read_only=True) as store:
        record = store.record()
        scenes = {row["scene"] for row in store.query_rows(("scene",))}
        info: dict[str, Any] = {
            "uri": uri,
            "collection": name,
            "rows": store.count(),
            "scenes": len(scenes),
            "model": asdict(record),
        }
    status = _status_path(uri, Path(workdir))
    if status.is_file():
        last = json.loads(status.read_text(encoding="utf-8"))
        keys = ("source", "scenes", "added", "updated", "removed", "unchanged", "tiles",
                "skipped_nodata", "seconds")  # fmt: skip
        info["last_build"] = {k: last[k] for k in keys if k in last}
        info["last_build"]["skipped"] = len(last.get("skipped", []))
    return info


def _code_value(value: Any) -> bytes:
    return bytes(value[0] if isinstance(value, list) else value)


def _code_at(store: SceneStore, scene: str, lon: float, lat: float) -> tuple[np.ndarray, dict]:
    """The stored code of the tile of ``scene`` that contains (lon, lat), nearest its centre."""
    from shapely import wkt
    from shapely.geometry import Point

    box = scene_filter(bbox=(lon, lat, lon, lat), scene=scene)
    best: tuple[float, dict] | None = None
    point = Point(lon, lat)
    fields = ("scene", "path", "footprint", "code", "col", "row", "width", "height")
    for row in store.query_rows(fields, filter=box):
        if row["scene"] != scene:
            continue
        shape = wkt.loads(row["footprint"])
        if not shape.covers(point):
            continue
        gap = shape.centroid.distance(point)
        if best is None or gap < best[0]:
            best = (gap, row)
    if best is None:
        raise ArchiveIndexError(
            f"Received: --scene {scene!r} --lonlat {lon},{lat}; no indexed tile of that scene "
            f"covers the point in {store.where}"
        )
    return np.frombuffer(_code_value(best[1]["code"]), np.uint8)[None, :], best[1]


def search_scenes(
    *,
    uri: str,
    collection: str = "hpsh",
    images: Sequence[str | os.PathLike[str]] = (),
    at: tuple[str, float, float] | None = None,
    packed: np.ndarray | None = None,
    model_dir: str | os.PathLike[str] | None = None,
    top: int = 10,
    bbox: Sequence[float] | None = None,
    scene: str | None = None,
    after: int | None = None,
    before: int | None = None,
    nms_iou: float | None = 0.3,
    nprobe: int = 16,
    bands: Sequence[int] | None = None,
    band_scale: str | Sequence[str] | None = None,
) -> list[SceneResult]:
    """The ``top`` places most like the query: a query image, or the tile at a point.

    Args:
        uri: Index URI.
        collection: ``index.collection``.
        images: One query image file (``--image``).
        at: ``(scene, lon, lat)``: the indexed tile there is the query (``--scene --lonlat``).
        packed: ``uint8 [1, bits / 8]``: a code computed elsewhere, e.g. the ``packed_codes``
            TF Serving returned for the query tile (no model is loaded here).
        model_dir: Export for ``images`` (default: the index's; another model is refused).
        top: Results kept.
        bbox: ``(minlon, minlat, maxlon, maxlat)``: keep tiles whose footprint meets it (see
            :func:`scene_filter`).
        scene: Keep this scene's tiles; with ``at``, it names the query's scene instead and
            does not filter.
        after: Keep scenes dated at or after this time (epoch seconds).
        before: Keep scenes dated at or before this time (epoch seconds).
        nms_iou: Drop a result whose footprint overlaps a better one by more than this IoU
            (None: keep all).
        nprobe: ``BIN_IVF_FLAT`` clusters searched.
        bands: ``data.bands`` for a GeoTIFF query image (the export's recorded value wins;
            see :func:`hpsh_tf2.serving.export_reading`), so that a tile saved as GeoTIFF
            gets the code of the same tile in its scene.
        band_scale: ``data.band_scale`` likewise.

    Returns:
        The results, best first, ranks 1..n.
    """
    if (len(images) == 1) + (at is not None) + (packed is not None) != 1 or len(images) > 1:
        raise ArchiveIndexError("expected exactly one query: --image FILE or --scene S --lonlat")
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 1000:
        raise ArchiveIndexError(f"Received: top={top!r}; expected an integer in [1, 1000]")
    name = scene_collection(collection)
    expression = scene_filter(
        bbox=bbox, scene=None if at is not None else scene, after=after, before=before
    )
    with SceneStore(uri, name, read_only=True) as store:
        stored = store.record()
        if at is not None:
            packed, _ = _code_at(store, *at)
        elif packed is not None:
            packed = np.ascontiguousarray(packed, np.uint8).reshape(1, -1)
            if packed.shape[1] != stored.bits // 8:
                raise ArchiveIndexError(
                    f"Received: a code of {packed.shape[1]} bytes; expected {stored.bits // 8} "
                    f"(the index's {stored.bits}-bit model)"
                )
    if packed is None:
        if model_dir is None:
            model_dir = stored.export_path
        else:
            check_same_model(stored, model_record(model_dir), where=f"{uri} ({name})")
        reading = export_reading(model_dir, bands=bands, band_scale=band_scale)
        encoded = SavedModelEncoder(model_dir, reading).encode_files(list(images))
        if encoded.bad:
            raise ArchiveIndexError(
                f"Received: query image {str(images[0])!r} that cannot be decoded "
                f"({encoded.bad[0][1]}); expected a JPEG, PNG, GIF, BMP or TIFF image"
            )
        packed = encoded.packed
    limit = min(16384, top * (_CANDIDATES if nms_iou is not None else 1))
    with SceneStore(uri, name, read_only=True) as store:
        hits = store.search_tiles(packed, limit=limit, filter=expression, nprobe=nprobe)[0]
    hits = sorted(hits, key=lambda h: (round(float(h["distance"])), int(h["id"])))
    entities = [h["entity"] for h in hits]
    if bbox is not None:  # the integer box is rounded outward: refine on the polygon
        from shapely import wkt
        from shapely.geometry import box

        area = box(*[float(v) for v in bbox])
        keep = [i for i, e in enumerate(entities) if wkt.loads(e["footprint"]).intersects(area)]
        hits, entities = [hits[i] for i in keep], [entities[i] for i in keep]
    order = nms([e["footprint"] for e in entities], nms_iou) if nms_iou is not None else None
    chosen = (order if order is not None else list(range(len(hits))))[:top]
    return [
        SceneResult(
            rank=rank + 1,
            distance=round(float(hits[i]["distance"])),
            scene=str(entities[i]["scene"]),
            window=tuple(int(entities[i][k]) for k in ("col", "row", "width", "height")),
            footprint=str(entities[i]["footprint"]),
            crs=str(entities[i]["crs"]),
            datetime=str(entities[i]["datetime"]),
        )
        for rank, i in enumerate(chosen)
    ]


def query_picture(path: str | os.PathLike[str], reading: BandReading) -> np.ndarray:
    """The RGB pixels of a query file for a grid (its first three bands, see
    :func:`display_reading`)."""
    return read_query_pixels(path, display_reading(reading))


def scene_paths(uri: str, collection: str, scene_ids: Sequence[str]) -> dict[str, str]:
    """The raster file of each scene id (as indexed)."""
    wanted = set(scene_ids)
    found: dict[str, str] = {}
    with SceneStore(uri, scene_collection(collection), read_only=True) as store:
        for scene in wanted:
            for row in store.query_rows(("scene", "path"), filter=scene_filter(scene=scene)):
                if row["scene"] == scene:
                    found[scene] = row["path"]
                    break
    return found


def write_outputs(
    geojson: str | os.PathLike[str],
    results: Sequence[SceneResult],
    paths: dict[str, str],
    *,
    bands: Sequence[int] | None = None,
    band_scale: str | Sequence[str] | None = None,
) -> list[Path]:
    """Writes the GeoJSON and one overview PNG per scene beside it; returns the paths."""
    written = [write_geojson(geojson, results)]
    for scene_id in sorted({r.scene for r in results}):
        scene = open_scene(paths[scene_id], scene_id)
        mine = [r for r in results if r.scene == scene_id]
        written.append(
            write_overview(
                overview_name(geojson, scene_id), scene, mine, bands=bands, band_scale=band_scale
            )
        )
    return written


def tile_at(
    uri: str, collection: str, scene: str, lon: float, lat: float
) -> tuple[str, tuple[int, int, int, int]]:
    """The raster file and pixel window of the indexed tile of ``scene`` at (lon, lat)."""
    with SceneStore(uri, scene_collection(collection), read_only=True) as store:
        _, row = _code_at(store, scene, lon, lat)
    return row["path"], tuple(int(row[k]) for k in ("col", "row", "width", "height"))


def read_tile(
    path: str,
    window: Sequence[int],
    *,
    bands: Sequence[int] | None = None,
    band_scale: str | Sequence[str] | None = None,
) -> np.ndarray:
    """The 8-bit RGB pixels of one window of a scene file (as the build read them; for a
    multi-band model, its first three bands: :func:`display_reading`)."""
    shown = display_reading(BandReading(bands=None if bands is None else tuple(bands),
                                        band_scale=band_scale))  # fmt: skip
    with SceneReader(open_scene(path), bands=shown.bands, band_scale=shown.band_scale) as reader:
        return reader.read_window(*window)[0]


def write_tile_grid(
    path: str | os.PathLike[str],
    query: np.ndarray,
    results: Sequence[SceneResult],
    paths: dict[str, str],
    *,
    bands: Sequence[int] | None = None,
    band_scale: str | Sequence[str] | None = None,
    query_scene: str = "?",
) -> Path:
    """The query and its result tiles as the retrieval grid (titled rank, scene, distance)."""
    tiles = [
        read_tile(paths[r.scene], r.window, bands=bands, band_scale=band_scale) for r in results
    ]
    return save_retrieval_grid(
        path,
        query_image=query,
        retrieved_images=tiles,
        query_label=query_scene,
        retrieved_labels=[r.scene for r in results],
        distances=[r.distance for r in results],
    )
