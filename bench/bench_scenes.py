"""Scene archives: build throughput, peak memory of a large scene, filtered search latency.

1. Throughput: one GeoTIFF scene (AID images on a grid, EPSG:32633) indexed with
   ``index build --scenes`` (windowed reads + footprints in a reader thread, the export's
   ``encode_images`` signature) against the same pixels cut as PNG chips and indexed with
   ``index build --images`` (the file-archive path, which ``bench/results/index.md`` measures at
   1.01x ``extract``), and against the model alone on tiles already in memory. Same export
   (MobileNetV2, random weights, 64 bits), same batch size. Goal: scenes >= 0.9x chips.
2. Peak memory: a 20,000 x 20,000 x 4 uint16 tiled, deflate-compressed GeoTIFF (3.2 GB of
   pixels) written once to /tmp, every tile read and footprinted by the build's reader
   (``_read_batches`` through ``_prefetch``, no model) in a child process; its peak RSS
   against the scene size and the bytes of the tiles in flight.
3. Search: Milvus Lite, ``--rows`` synthetic tile rows (random 64-bit codes, footprints spread
   over 10 x 10 degrees), latency of one query (k = 10) without a filter and with a
   ``--bbox`` of about 1 x 1 degree.

Writes bench/results/scenes.md.

    python bench/bench_scenes.py [--cells 8] [--rows 1000000] [--big-side 20000]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "aid_sample"
OUT = ROOT / "bench" / "results" / "scenes.md"
SIZE = 96
BITS = 64
CELL = 150


def _export(folder: Path) -> Path:
    import keras

    from hpsh_tf2.export import export_saved_model

    keras.utils.set_random_seed(1)
    backbone = keras.applications.MobileNetV2(
        weights=None, include_top=False, pooling="avg", input_shape=(SIZE, SIZE, 3)
    )
    model = keras.Sequential([backbone, keras.layers.Dense(BITS, activation="sigmoid")])
    return export_saved_model(
        image_model=model,
        backbone="mobilenet_v2",
        image_size=SIZE,
        bits=BITS,
        export_dir=folder,
        model_name="bench",
        warmup_images=[],
        config={"bench": 1},
    )


def _scene(folder: Path, cells: int) -> tuple[Path, Path]:
    """A cells x cells mosaic of AID images (EPSG:32633) and the same cells as PNG chips."""
    import rasterio
    from affine import Affine
    from PIL import Image

    files = sorted(DATA.glob("*/*.jpg"))
    side = cells * CELL
    rgb = np.zeros((side, side, 3), np.uint8)
    chips = folder / "chips" / "all"
    chips.mkdir(parents=True)
    for index in range(cells * cells):
        with Image.open(files[index % len(files)]) as img:
            cell = np.asarray(img.convert("RGB").resize((CELL, CELL)), np.uint8)
        row, col = divmod(index, cells)
        rgb[row * CELL : (row + 1) * CELL, col * CELL : (col + 1) * CELL] = cell
        Image.fromarray(cell).save(chips / f"cell_{index:05d}.png")
    path = folder / "scenes" / "mosaic.tif"
    path.parent.mkdir()
    profile = {
        "driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8",
        "crs": "EPSG:32633", "transform": Affine(0.5, 0, 500000, 0, -0.5, 5000000),
        "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(rgb, -1, 0))
    return path.parent, chips.parent


def throughput(tmp: Path, cells: int, batch: int, repeats: int) -> list[str]:
    from hpsh_tf2.index.build import build_index
    from hpsh_tf2.index.scenes import TileEncoder, TilingOptions, build_scene_index

    export = _export(tmp / "export")
    scenes, chips = _scene(tmp, cells)
    n = cells * cells
    options = TilingOptions(tile_size=CELL, tile_stride=CELL, max_nodata_fraction=1.0)
    best = {"scenes": 1e9, "chips": 1e9, "model": 1e9}
    for attempt in range(repeats):
        uri = str(tmp / f"s{attempt}.db")
        report = build_scene_index(export, scenes, uri=uri, options=options, batch_size=batch)
        assert report.tiles == n, report
        best["scenes"] = min(best["scenes"], report.tiles / report.tiles_per_second)
        uri = str(tmp / f"c{attempt}.db")
        chip_report = build_index(export, chips, uri=uri, batch_size=batch, progress=False)
        assert chip_report.added == n, chip_report
        best["chips"] = min(best["chips"], n / chip_report.encoded_per_second)
    encoder = TileEncoder(export)
    tiles = np.stack(
        [np.zeros((CELL, CELL, 3), np.uint8) + (i % 255) for i in range(min(n, batch))]
    )
    encoder.encode_pixels(tiles)
    start = time.perf_counter()
    for _ in range(0, n, batch):
        encoder.encode_pixels(tiles)
    best["model"] = time.perf_counter() - start
    rows = [
        f"## Build: {n} tiles of {CELL} px (a {cells * CELL} px scene), MobileNetV2 at {SIZE} px "
        f"(random weights), {BITS} bits, batch {batch}, best of {repeats} (encode phase)",
        "",
        "| path | seconds | tiles/s | ratio vs chips |",
        "|---|---:|---:|---:|",
    ]
    names = {
        "chips": "`index build --images` (the same cells as PNG chips)",
        "scenes": "`index build --scenes` (windowed reads + footprints + upserts)",
        "model": "model only (`encode_images` on tiles in memory, no upserts)",
    }
    for key in ("chips", "scenes", "model"):
        rows.append(
            f"| {names[key]} | {best[key]:.2f} | {n / best[key]:.1f} | "
            f"{best['chips'] / best[key]:.2f}x |"
        )
    ratio = best["chips"] / best["scenes"]
    rows += ["", f"Goal: scenes >= 0.90x chips: {'met' if ratio >= 0.9 else 'NOT met'} "
             f"({ratio:.2f}x)", ""]  # fmt: skip
    return rows


def _write_big(path: Path, side: int) -> None:
    import rasterio
    from affine import Affine

    profile = {
        "driver": "GTiff", "width": side, "height": side, "count": 4, "dtype": "uint16",
        "crs": "EPSG:32633", "transform": Affine(10, 0, 300000, 0, -10, 5200000),
        "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
        "BIGTIFF": "YES",
    }  # fmt: skip
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, side, 512):
            height = min(512, side - row)
            ramp = (np.arange(side, dtype=np.uint16) % 2000)[None, None, :]
            block = ramp + rng.integers(0, 64, (4, height, side), dtype=np.uint16)
            dst.write(block, window=((row, row + height), (0, side)))


_CHILD = """
import resource, sys, time
sys.path.insert(0, {root!r})
from hpsh_tf2.geo.raster import open_scene
from hpsh_tf2.index.scenes import TilingOptions, _prefetch, _read_batches
scene = open_scene({path!r})
options = TilingOptions(tile_size=256, tile_stride=256, max_nodata_fraction=0.5,
                        bands=(1, 2, 3), band_scale="0-4000")
counts = {{"skipped_nodata": 0}}
start = time.perf_counter()
tiles = sum(len(b[1]) for b in _prefetch(_read_batches([scene], options, {batch}, counts)))
print(tiles, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def memory(tmp: Path, side: int, batch: int) -> list[str]:
    path = Path("/tmp") / f"bench_scene_{side}.tif"
    if not path.exists():
        start = time.perf_counter()
        _write_big(path, side)
        print(f"wrote {path} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    code = _CHILD.format(root=str(ROOT), path=str(path), batch=batch)
    runs = {}
    for cache in ("default", "64"):
        env = dict(os.environ)
        if cache != "default":
            env["GDAL_CACHEMAX"] = cache  # MB: GDAL's block cache (default 5% of RAM)
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        )
        runs[cache] = out.stdout.split()
    tiles, seconds, rss_kb = runs["default"]
    baseline = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
         "import resource; import hpsh_tf2.index.scenes; "
         "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()[0]  # fmt: skip
    scene_bytes = side * side * 4 * 2
    in_flight = 3 * batch * 256 * 256 * 3  # depth 2 + the one being consumed, uint8 RGB
    return [
        f"## Peak memory: {side:,} x {side:,} x 4 uint16 scene (tiled, deflate; "
        f"{path.stat().st_size / 1e9:.2f} GB on disk), 256 px tiles, batch {batch}, reader only",
        "",
        "| quantity | value |",
        "|---|---:|",
        f"| scene pixels in memory if read whole | {scene_bytes / 2**20:,.0f} MiB |",
        f"| tiles in flight (3 batches of {batch} uint8 RGB tiles) | {in_flight / 2**20:.1f} MiB |",
        f"| peak RSS of the reader process (GDAL block cache at its default, 5% of RAM) | "
        f"{int(rss_kb) / 1024:,.0f} MiB |",
        f"| peak RSS of the reader process with GDAL_CACHEMAX=64 (MB) | "
        f"{int(runs['64'][2]) / 1024:,.0f} MiB |",
        f"| peak RSS after importing the package (baseline) | {int(baseline) / 1024:,.0f} MiB |",
        f"| tiles read and footprinted | {int(tiles):,} in {float(seconds):.0f} s "
        f"({int(tiles) / float(seconds):.0f} tiles/s) |",
        "",
    ]


def search(tmp: Path, rows: int, queries: int) -> list[str]:
    from hpsh_tf2.index.encoder import ModelRecord
    from hpsh_tf2.index.scenes import SceneStore, scene_filter, scene_key

    record = ModelRecord("bench", "-", "bench", 1, None, BITS, "mobilenet_v2", SIZE)
    rng = np.random.default_rng(0)
    uri = str(tmp / "search.db")
    start = time.perf_counter()
    with SceneStore(uri, "bench_scenes") as store:
        store.open_for(record)
        for first in range(0, rows, 10_000):
            n = min(10_000, rows - first)
            codes = rng.integers(0, 256, (n, BITS // 8), dtype=np.uint8)
            lon = rng.uniform(10, 20, n)
            lat = rng.uniform(40, 50, n)
            batch = []
            for i in range(n):
                x0, y0 = lon[i], lat[i]
                x1, y1 = x0 + 0.003, y0 + 0.002
                ring = f"{x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}"
                batch.append({
                    "id": first + i, "code": codes[i].tobytes(), "scene": f"s{(first + i) // 6000}",
                    "scene_key": scene_key(f"s{(first + i) // 6000}"), "path": "-",
                    "col": 0, "row": 0, "width": 256, "height": 256,
                    "footprint": f"POLYGON (({ring}))",
                    "minlon_u": int(x0 * 1e6), "minlat_u": int(y0 * 1e6),
                    "maxlon_u": int(x1 * 1e6) + 1, "maxlat_u": int(y1 * 1e6) + 1,
                    "crs": "EPSG:32633", "datetime": "", "time_s": 0, "size": 0, "mtime_ns": 0,
                    "grid": "-", "tiles": 6000,
                })  # fmt: skip
            store.upsert_rows(batch)
        insert_s = time.perf_counter() - start
        total = store.count()
        filt = scene_filter(bbox=(14.5, 44.5, 15.5, 45.5))
        matched = store.count(filt)
        timings = {}
        for name, expression in (("no filter", ""), ("bbox 1 x 1 degree", filt)):
            query = rng.integers(0, 256, (1, BITS // 8), dtype=np.uint8)
            store.search_tiles(query, limit=10, filter=expression, nprobe=16)
            start = time.perf_counter()
            for _ in range(queries):
                query = rng.integers(0, 256, (1, BITS // 8), dtype=np.uint8)
                store.search_tiles(query, limit=10, filter=expression, nprobe=16)
            timings[name] = (time.perf_counter() - start) / queries
    lines = [
        f"## Search: {total:,} tile rows in Milvus Lite (BIN_FLAT), one query, k = 10, "
        f"mean of {queries}",
        "",
        f"Insert: {insert_s:.0f} s ({total / insert_s:,.0f} rows/s, 10,000 rows per upsert).",
        "",
        "| filter | rows matching | latency (ms) |",
        "|---|---:|---:|",
    ]
    for name, seconds in timings.items():
        count = total if name == "no filter" else matched
        lines.append(f"| {name} | {count:,} | {seconds * 1000:.1f} |")
    return [*lines, ""]


_SECTIONS = {"build": "## Build", "memory": "## Peak memory", "search": "## Search"}


def _kept_sections(skipped: list[str]) -> list[str]:
    """Sections of the previous results file for the parts skipped in this run."""
    if not OUT.is_file():
        return []
    text = OUT.read_text().split("\n")
    kept: list[str] = []
    for part in skipped:
        head = _SECTIONS.get(part)
        starts = [i for i, line in enumerate(text) if head and line.startswith(head)]
        if not starts:
            continue
        end = next((i for i in range(starts[0] + 1, len(text)) if text[i].startswith("## ")),
                   len(text))  # fmt: skip
        kept += [*text[starts[0] : end], ""]
        kept.insert(0, f"(Section kept from an earlier run: {head[3:]}.)")
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=8, help="scene of cells x cells tiles")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--big-side", type=int, default=20_000)
    parser.add_argument("--skip", action="append", default=[], help="build|memory|search")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    lines = [
        "# Scene archive benchmark (bench/bench_scenes.py)",
        "",
        f"{os.cpu_count()} CPU cores, shared machine (load average {load:.2f} at start); "
        "timings are noisy.",
        "",
        f"Command: `python bench/bench_scenes.py {' '.join(sys.argv[1:])}`".rstrip() + "",
        "",
    ]
    tmp = Path(tempfile.mkdtemp(prefix="bench_scenes_"))
    try:
        if "build" not in args.skip:
            lines += throughput(tmp, args.cells, args.batch_size, args.repeats)
        if "memory" not in args.skip:
            lines += memory(tmp, args.big_side, args.batch_size)
        if "search" not in args.skip:
            lines += search(tmp, args.rows, args.queries)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    OUT.parent.mkdir(exist_ok=True)
    kept = _kept_sections(args.skip)
    OUT.write_text("\n".join(lines + kept))
    print("\n".join(lines))
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} KiB")


if __name__ == "__main__":
    main()
