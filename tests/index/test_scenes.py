"""index build --scenes and scene search, on rasterio-written scenes with Milvus Lite (real).

Query choice: the tiny random-weight export cannot tell an airport from a forest, so "an
airport image not in the scene finds the airport cells" would test nothing. Instead the query is
a PNG cut from one cell of the scene (a file, decoded by the SavedModel's ``serving_default``)
and must find its own cell first at distance 0 (one resize path), with the footprint checked
against the UTM grid the fixture built (pyproj, independently).
"""

from __future__ import annotations

import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from pyproj import Transformer

from hpsh_tf2.geo.raster import BandError, SceneError, SceneReader, open_scene
from hpsh_tf2.index.prune import PruneRefusedError
from hpsh_tf2.index.scenes import (
    TilingOptions,
    build_scene_index,
    parse_time,
    scene_filter,
    scene_key,
    search_scenes,
)
from hpsh_tf2.serving import load_exported
from tests.geo.conftest import CELL, EPSG, ORIGIN, PIXEL_M, write_geotiff, write_mosaic
from tests.index.conftest import export_tiny

OPTIONS = TilingOptions(tile_size=CELL, tile_stride=CELL, max_nodata_fraction=0.5)


def _cell_lonlat(col: int, row: int) -> tuple[float, float, float, float]:
    """min lon, min lat, max lon, max lat of a cell from the UTM grid (pyproj)."""
    to_wgs = Transformer.from_crs(f"EPSG:{EPSG}", "EPSG:4326", always_xy=True)
    xs = [ORIGIN[0] + PIXEL_M * CELL * c for c in (col, col + 1)]
    ys = [ORIGIN[1] - PIXEL_M * CELL * r for r in (row, row + 1)]
    lons, lats = to_wgs.transform([xs[0], xs[0], xs[1], xs[1]], [ys[0], ys[1], ys[0], ys[1]])
    return min(lons), min(lats), max(lons), max(lats)


def built_export(uri: str) -> str:
    """The export recorded in a scene index."""
    from hpsh_tf2.index.scenes import SceneStore, scene_collection

    with SceneStore(uri, scene_collection("hpsh")) as store:
        return store.record().export_path


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_export, aid_root):
    root = tmp_path_factory.mktemp("scenes")
    mosaic = write_mosaic(root / "scenes")
    uri = str(root / "index.db")
    report = build_scene_index(tiny_export, root / "scenes", uri=uri, options=OPTIONS)
    return root, mosaic, uri, report


def test_build_indexes_data_cells_and_skips_nodata(built):
    _, _, _, report = built
    assert report.rows == 9 and report.tiles == 9 and report.added == 1
    assert report.skipped_nodata == 16  # the ring of nodata cells around the 3 x 3 data cells


def test_query_cut_from_scene_finds_its_own_tile(built, tmp_path):
    _, mosaic, uri, _ = built
    col, row = 2, 3
    pixels = mosaic.rgb[row * CELL : (row + 1) * CELL, col * CELL : (col + 1) * CELL]
    query = tmp_path / "cell.png"
    Image.fromarray(pixels).save(query)
    results = search_scenes(uri=uri, images=[query], top=5)
    best = results[0]
    assert best.distance == 0 and best.window == (col * CELL, row * CELL, CELL, CELL)
    assert best.scene == "mosaic.tif" and best.crs == f"EPSG:{EPSG}"
    assert best.datetime.startswith("2024-05-01T10:30:00")
    from shapely import wkt

    assert wkt.loads(best.footprint).bounds == pytest.approx(_cell_lonlat(col, row), abs=1e-9)
    # NMS: the 3 x 3 grid has no overlapping tiles, so ranks are 1..5 and windows distinct.
    assert [r.rank for r in results] == [1, 2, 3, 4, 5]
    assert len({r.window for r in results}) == 5
    # Serving: the code TF Serving returns (the export's serving_default on the PNG bytes)
    # searched as a code gives the same places.
    import tensorflow as tf

    serve = tf.saved_model.load(str(built_export(uri))).signatures["serving_default"]
    packed = serve(image_bytes=tf.constant([query.read_bytes()]))["packed_codes"].numpy()
    assert search_scenes(uri=uri, packed=packed, top=5) == results


def test_filters_are_integer_expressions(built):
    _, _, uri, _ = built
    hostile = 'x" or true or "'
    expression = scene_filter(bbox=(15.0, 45.0, 15.1, 45.2), scene=hostile, after=0)
    assert hostile not in expression and str(scene_key(hostile)) in expression
    lon0, lat0, lon1, lat1 = _cell_lonlat(1, 1)
    query = {"at": ("mosaic.tif", (lon0 + lon1) / 2, (lat0 + lat1) / 2)}
    inside = search_scenes(uri=uri, top=20, bbox=(lon0, lat0, lon1, lat1), nms_iou=None, **query)
    assert {r.window for r in inside} <= {
        (c * CELL, r * CELL, CELL, CELL) for c in (1, 2) for r in (1, 2)
    }
    assert inside[0].window == (CELL, CELL, CELL, CELL) and inside[0].distance == 0
    far = search_scenes(uri=uri, top=5, bbox=(-10, -10, -9, -9), **query)
    assert far == []
    assert search_scenes(uri=uri, top=5, scene=hostile, images=[], **query) == search_scenes(
        uri=uri, top=5, **query
    )
    when = parse_time("2024-05-01", flag="--after")
    assert len(search_scenes(uri=uri, top=9, after=when, nms_iou=None, **query)) == 9
    assert search_scenes(uri=uri, top=9, before=when, **query) == []


@pytest.mark.slow  # ~12 s; the 13-band read itself is covered in tests/geo/test_geo.py
def test_thirteen_band_scene_gives_the_rgb_codes(built, tiny_export, tmp_path):
    _, mosaic, _, _ = built
    write_mosaic(tmp_path / "s2", name="s2.tif", bands13=True)
    uri = str(tmp_path / "s2.db")
    options = TilingOptions(CELL, CELL, 0.5, bands=(4, 3, 2), band_scale="0-2550")
    report = build_scene_index(tiny_export, tmp_path / "s2", uri=uri, options=options)
    assert report.rows == 9
    query = tmp_path / "q.png"
    Image.fromarray(mosaic.rgb[CELL : 2 * CELL, 3 * CELL : 4 * CELL]).save(query)
    best = search_scenes(uri=uri, images=[query], top=1)[0]
    assert best.window == (3 * CELL, CELL, CELL, CELL) and best.distance == 0


def test_incremental_build_and_bad_scenes(built, tiny_export, tmp_path):
    root, _, _, _ = built
    scenes = tmp_path / "scenes"
    shutil.copytree(root / "scenes", scenes)
    uri = str(tmp_path / "inc.db")
    first = build_scene_index(tiny_export, scenes, uri=uri, options=OPTIONS)
    assert (first.added, first.rows) == (1, 9)
    again = build_scene_index(tiny_export, scenes, uri=uri, options=OPTIONS)
    assert (again.unchanged, again.tiles, again.rows) == (1, 0, 9)
    # A tiny scene (smaller than one tile) and a corrupt one: one tile, and one named skip.
    write_mosaic(tmp_path / "tmp")  # pixels for the tiny scene
    import rasterio

    with rasterio.open(tmp_path / "tmp" / "mosaic.tif") as src:
        profile = src.profile | {"width": 60, "height": 40}
        window = src.read(window=((160, 200), (160, 220)))
    with rasterio.open(scenes / "tiny.tif", "w", **profile) as dst:
        dst.write(window)
    (scenes / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 50)
    mixed = build_scene_index(tiny_export, scenes, uri=uri, options=OPTIONS)
    assert (mixed.added, mixed.unchanged, mixed.rows) == (1, 1, 10)
    assert [s[0] for s in mixed.skipped] == ["broken.tif"]
    assert "broken.tif" in mixed.skipped[0][1] and "\n" not in mixed.skipped[0][1]
    # A changed scene is redone; a removed one loses its rows (9 of 10: --prune, see
    # tests/index/test_scene_guards.py for the guard).
    os.utime(scenes / "tiny.tif", ns=(1, 1))
    (scenes / "mosaic.tif").unlink()
    (scenes / "broken.tif").unlink()
    changed = build_scene_index(tiny_export, scenes, uri=uri, options=OPTIONS, prune=True)
    assert (changed.updated, changed.removed, changed.rows) == (1, 1, 1)
    (scenes / "tiny.tif").unlink()
    with pytest.raises(PruneRefusedError, match="holds no scenes"):
        build_scene_index(tiny_export, scenes, uri=uri, options=OPTIONS)


def test_scene_without_crs_is_a_clear_error(tiny_export, tmp_path):
    from affine import Affine

    from tests.geo.conftest import synthetic, write_geotiff

    path = write_geotiff(
        tmp_path / "plain.tif", synthetic(64, 64), crs=None, transform=Affine.identity()
    )
    with pytest.raises(SceneError, match=r"plain\.tif.*no CRS"):
        build_scene_index(tiny_export, path, uri=str(tmp_path / "x.db"), options=OPTIONS)


def test_cli_build_search_geojson_and_stac(built, tiny_export, tmp_path, capsys):
    import pystac

    from hpsh_tf2.cli import main

    _, mosaic, _, _ = built
    item = pystac.Item(
        "mosaic-item", None, None, pystac.utils.str_to_datetime("2023-01-02T00:00:00Z"), {}
    )
    item.add_asset("visual", pystac.Asset(href=str(mosaic.path)))
    stac = tmp_path / "items.json"
    stac.write_text(json.dumps(pystac.ItemCollection([item]).to_dict()))
    uri = str(tmp_path / "cli.db")
    sets = ["--set", f"index.tile_size={CELL}", "--set", f"index.tile_stride={CELL}"]
    assert (
        main(
            [
                "index",
                "build",
                "--scenes",
                str(stac),
                "--model",
                str(tiny_export),
                "--uri",
                uri,
                *sets,
            ]
        )
        == 0
    )
    assert "9 tiles" in capsys.readouterr().out
    out = tmp_path / "out" / "places.geojson"
    lon0, lat0, lon1, lat1 = _cell_lonlat(3, 2)
    point = f"{(lon0 + lon1) / 2},{(lat0 + lat1) / 2}"
    code = main(["index", "search", "--scene", "mosaic-item", "--lonlat", point,
                 "--top", "3", "--geojson", str(out), "--out", str(tmp_path / "grid.png"),
                 "--uri", uri, *sets])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and f"wrote {tmp_path / 'grid.png'}" in printed
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size[0] > 0
    features = json.loads(out.read_text())["features"]
    assert features[0]["properties"]["window"] == [3 * CELL, 2 * CELL, CELL, CELL]
    assert features[0]["properties"]["datetime"].startswith("2023-01-02")
    overview = tmp_path / "out" / "places.mosaic-item.png"
    with Image.open(overview) as img:
        assert img.size == mosaic.rgb.shape[1::-1]
    assert main(["index", "search", "--scene", "nope", "--lonlat", "0,0", "--uri", uri]) == 2
    assert "no indexed tile" in capsys.readouterr().err


# --------------------------------------------------------------------------- multi-band models


S2_BANDS = (4, 3, 2, 8)


def _s2_scene(folder, seed: int = 4):
    """A 13-band uint16 scene, 3 x 2 cells of CELL px, distinct values per cell."""
    rng = np.random.default_rng(seed)
    stack = rng.integers(1, 3000, (13, 2 * CELL, 3 * CELL)).astype(np.uint16)
    for index in range(6):
        col, row = index % 3, index // 3
        stack[:, row * CELL : (row + 1) * CELL, col * CELL : (col + 1) * CELL] //= index + 1
    folder.mkdir(parents=True, exist_ok=True)
    return write_geotiff(folder / "s2.tif", stack, nodata=None), stack


@pytest.fixture(scope="module")
def four_band_built(tmp_path_factory):
    """A 4-band tiny export (recording data.bands [4, 3, 2, 8], band_scale 0-3000) and the
    scene index of a 13-band uint16 scene built with it (no band settings given to the build:
    the export's are used)."""
    root = tmp_path_factory.mktemp("s2")
    export = export_tiny(root / "export", input_bands=4, bands=list(S2_BANDS), band_scale="0-3000")
    scene, stack = _s2_scene(root / "scenes")
    uri = str(root / "index.db")
    report = build_scene_index(export, root / "scenes", uri=uri, options=OPTIONS)
    return SimpleNamespace(
        root=root, export=export, scene=scene, stack=stack, uri=uri, report=report
    )


def _stored_code(uri: str, col: int, row: int) -> np.ndarray:
    from hpsh_tf2.index.scenes import SceneStore, scene_collection

    with SceneStore(uri, scene_collection("hpsh")) as store:
        for found in store.query_rows(("code", "col", "row")):
            if (found["col"], found["row"]) == (col, row):
                code = found["code"]
                return np.frombuffer(bytes(code[0] if isinstance(code, list) else code), np.uint8)
    raise AssertionError(f"no row at {col}, {row}")


def test_four_band_model_indexes_a_thirteen_band_scene(four_band_built):
    built = four_band_built
    assert built.report.rows == 6 and built.report.tiles == 6
    reader = SceneReader(open_scene(built.scene), bands=S2_BANDS, band_scale="0-3000", want=4)
    with reader:
        tile = reader.read_window(CELL, CELL, CELL, CELL)[0]
    loaded = load_exported(built.export)
    expected = loaded.signatures["encode_pixels"](pixels=tf.constant(tile[None]))
    stored = _stored_code(built.uri, CELL, CELL)
    np.testing.assert_array_equal(stored, expected["packed_codes"].numpy()[0])


def test_geotiff_chip_of_a_tile_finds_that_tile_at_distance_zero(four_band_built, tmp_path):
    """One reader: a GeoTIFF holding a tile's raw 13 bands, read with the export's band
    settings, gets the code of the same tile read from the scene."""
    built = four_band_built
    col, row = 2, 1
    chip = write_geotiff(
        tmp_path / "chip.tif",
        built.stack[:, row * CELL : (row + 1) * CELL, col * CELL : (col + 1) * CELL],
        crs=None,
        nodata=None,
    )
    results = search_scenes(uri=built.uri, images=[chip], top=3)
    assert results[0].distance == 0
    assert results[0].window == (col * CELL, row * CELL, CELL, CELL)


def test_band_settings_differing_from_the_export_are_refused(four_band_built, tmp_path):
    built = four_band_built
    options = TilingOptions(tile_size=CELL, tile_stride=CELL, bands=(4, 3, 2, 7))
    with pytest.raises(BandError, match=r"data\.bands=\[4, 3, 2, 7\].*\[4, 3, 2, 8\]"):
        build_scene_index(
            built.export, built.root / "scenes", uri=str(tmp_path / "x.db"), options=options
        )


def test_three_band_tiles_get_todays_codes_through_encode_pixels(tiny_export):
    """``encode_pixels`` (now used for tiles) gives bit for bit the codes of ``encode_images``
    on the same values (what tiles were encoded with before)."""
    from hpsh_tf2.index.scenes import TileEncoder

    tiles = np.random.default_rng(2).integers(0, 256, (5, CELL, CELL, 3), dtype=np.uint8)
    encoder = TileEncoder(tiny_export)
    old = encoder._loaded.signatures["encode_images"](images=tf.constant(tiles, tf.float32))
    np.testing.assert_array_equal(encoder.encode_pixels(tiles), old["packed_codes"].numpy())


@pytest.mark.slow  # ~15 s: the `make demo-scenes` path
def test_demo_scene_writes_geojson_and_overview(tiny_export, tmp_path):
    from hpsh_tf2.index.scene_demo import run_demo

    shutil.copytree(tiny_export.parent, tmp_path / "export" / "tiny")
    written = run_demo(tmp_path)
    assert [p.name for p in written] == ["places.geojson", "places.demo_scene.tif.png"]
    features = json.loads(written[0].read_text())["features"]
    assert features[0]["properties"]["distance"] == 0
    assert all(p.is_file() for p in written)


def test_cli_build_needs_exactly_one_source(tmp_path, capsys):
    from hpsh_tf2.cli import main

    uri = str(tmp_path / "none.db")
    assert main(["index", "build", "--uri", uri]) == 2
    assert "--scenes PATH" in capsys.readouterr().err
    both = ["--images", str(tmp_path), "--scenes", str(tmp_path)]
    assert main(["index", "build", "--uri", uri, *both]) == 2
    assert main(["index", "search", "--uri", uri]) == 2
    assert "expected --image FILE" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
