"""hpsh_tf2.geo: band scaling, windowed reads, tiles, footprints, NMS, STAC, GeoJSON, overviews.

Every footprint is checked against an independent pyproj transformation of corner coordinates
computed here from the affine formula x = a*col + b*row + c, y = d*col + e*row + f.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from affine import Affine
from PIL import Image
from pyproj import Transformer

from hpsh_tf2.geo.geojson import SceneResult, feature_collection, write_geojson, write_overview
from hpsh_tf2.geo.raster import (
    SceneError,
    SceneReader,
    open_scene,
    parse_band_scale,
    read_geotiff_rgb,
    scale_to_uint8,
)
from hpsh_tf2.geo.stac import list_scenes
from hpsh_tf2.geo.tiles import (
    FootprintError,
    Tile,
    footprint,
    footprint_iou,
    footprint_wkt,
    nms,
    tile_grid,
    tile_windows,
)
from tests.geo.conftest import EPSG, ORIGIN, PIXEL_M, synthetic, write_geotiff


def _corners_wgs84(transform: Affine, crs: str, tile: Tile) -> np.ndarray:
    cols = [tile.col, tile.col, tile.col + tile.width, tile.col + tile.width]
    rows = [tile.row, tile.row + tile.height, tile.row + tile.height, tile.row]
    a, b, c, d, e, f = tuple(transform)[:6]
    xs = [a * col + b * row + c for col, row in zip(cols, rows)]
    ys = [d * col + e * row + f for col, row in zip(cols, rows)]
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    return np.stack([lon, lat], axis=1)


def _shoelace(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


# ----------------------------------------------------------------------------- bands


def test_fixed_scale_matches_formula():
    values = np.array([[[0, 1500, 3000], [4000, -5, 750]]], np.int32)
    ranges = np.array([[0, 3000], [0, 3000], [500, 1000]], np.float64)
    expected = np.rint(np.clip((values - ranges[:, 0]) / (ranges[:, 1] - ranges[:, 0]), 0, 1) * 255)
    np.testing.assert_array_equal(scale_to_uint8(values, ranges), expected.astype(np.uint8))


def test_dtype_scale_of_uint16_rounds_like_images_module():
    values = np.arange(0, 65536, 97, dtype=np.uint16).reshape(1, -1, 1)
    expected = np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    np.testing.assert_array_equal(scale_to_uint8(values, None), expected)


@pytest.mark.parametrize("spec", ["3000-0", "abc", "p50-10", ["0-1", "5"]])
def test_bad_band_scale_is_refused(spec):
    with pytest.raises(SceneError, match="band_scale"):
        parse_band_scale(spec)


def test_thirteen_band_uint16_selects_and_scales_bands(tmp_path):
    rgb = synthetic(120, 90, 3)
    stack = np.full((13, 120, 90), 9999, np.uint16)
    for band, channel in ((4, 0), (3, 1), (2, 2)):
        stack[band - 1] = rgb[channel].astype(np.uint16) * 10
    path = write_geotiff(tmp_path / "s2.tif", stack, nodata=None)
    scene = open_scene(path)
    with SceneReader(scene, bands=[4, 3, 2], band_scale="0-2550") as reader:
        pixels, valid = reader.read_window(10, 20, 50, 60)
    np.testing.assert_array_equal(pixels, np.moveaxis(rgb, 0, -1)[20:80, 10:60])
    assert valid.all()
    # Training images that are GeoTIFFs go through the same code.
    whole = read_geotiff_rgb(path, bands=[4, 3, 2], band_scale="0-2550")
    np.testing.assert_array_equal(whole, np.moveaxis(rgb, 0, -1))
    with pytest.raises(SceneError, match="out of range"):
        SceneReader(scene, bands=[14, 3, 2])


def test_percentile_scale_uses_the_scene_statistics(tmp_path):
    data = np.random.default_rng(1).integers(100, 5000, (3, 64, 80)).astype(np.uint16)
    path = write_geotiff(tmp_path / "p.tif", data, nodata=None)
    with SceneReader(open_scene(path), band_scale="percentile") as reader:
        ranges = reader.ranges
        pixels, _ = reader.read_window(0, 0, 80, 64)
    for band in range(3):
        lo, hi = np.percentile(data[band].astype(np.float64), [2, 98])
        assert ranges[band] == pytest.approx([lo, hi])
        expected = np.rint(np.clip((data[band] - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
        np.testing.assert_array_equal(pixels[..., band], expected)


# ----------------------------------------------------------------------------- tiles


def test_tile_windows_cover_the_scene_and_align_to_edges():
    tiles = tile_windows(400, 300, 128, 100)
    assert {t.col for t in tiles} == {0, 100, 200, 272}
    assert {t.row for t in tiles} == {0, 100, 172}
    assert all(t.width == t.height == 128 for t in tiles)
    assert tile_windows(50, 40, 128, 128) == [Tile(0, 0, 50, 40)]


def test_nodata_tiles_are_skipped_and_counted(tmp_path):
    data = synthetic(200, 300, 3)
    data[:, :, :100] = 0  # left third: nodata
    data[:, 100:, 200:] = 0  # bottom right quarter-ish: nodata
    path = write_geotiff(tmp_path / "n.tif", data, nodata=0)
    with SceneReader(open_scene(path)) as reader:
        grid = tile_grid(reader, 100, 100, 0.5)
        pixels, valid = reader.read_window(0, 0, 100, 100)
    assert grid.tiles == (Tile(100, 0, 100, 100), Tile(200, 0, 100, 100), Tile(100, 100, 100, 100))
    assert grid.skipped_nodata == 3
    assert not valid.any() and not pixels.any()


def test_utm_footprint_matches_pyproj(tmp_path):
    path = write_geotiff(tmp_path / "u.tif", synthetic(300, 300))
    scene = open_scene(path)
    tile = Tile(150, 150, 150, 150)
    ring = footprint(scene, tile)
    transform = Affine(PIXEL_M, 0, ORIGIN[0], 0, -PIXEL_M, ORIGIN[1])
    corners = _corners_wgs84(transform, f"EPSG:{EPSG}", tile)
    for corner in corners:
        assert np.min(np.hypot(*(ring - corner).T)) < 1e-9
    assert 14.9 < ring[:, 0].mean() < 15.1 and 45.0 < ring[:, 1].mean() < 45.2
    assert _shoelace(ring) > 0  # counter-clockwise
    assert scene.crs_name == f"EPSG:{EPSG}"


def test_rotated_transform_footprint_matches_pyproj(tmp_path):
    transform = Affine(PIXEL_M, 0, ORIGIN[0], 0, -PIXEL_M, ORIGIN[1]) @ Affine.rotation(30)
    path = write_geotiff(tmp_path / "r.tif", synthetic(200, 200), transform=transform)
    tile = Tile(50, 100, 100, 80)
    ring = footprint(open_scene(path), tile)
    for corner in _corners_wgs84(transform, f"EPSG:{EPSG}", tile):
        assert np.min(np.hypot(*(ring - corner).T)) < 1e-9


def test_geographic_crs_footprint_is_the_transform(tmp_path):
    transform = Affine(0.001, 0, 10.0, 0, -0.001, 50.0)
    path = write_geotiff(
        tmp_path / "g.tif", synthetic(100, 100), crs="EPSG:4326", transform=transform
    )
    ring = footprint(open_scene(path), Tile(0, 0, 100, 100))
    assert ring[:, 0].min() == pytest.approx(10.0) and ring[:, 0].max() == pytest.approx(10.1)
    assert ring[:, 1].min() == pytest.approx(49.9) and ring[:, 1].max() == pytest.approx(50.0)


def test_antimeridian_footprint_is_refused(tmp_path):
    # UTM zone 60 (central meridian 177 E): easting 830 km at the equator lies at about 180 E.
    transform = Affine(100.0, 0, 830000.0, 0, -100.0, 10000.0)
    path = write_geotiff(
        tmp_path / "a.tif", synthetic(100, 100), crs="EPSG:32660", transform=transform
    )
    with pytest.raises(FootprintError, match="antimeridian"):
        footprint(open_scene(path), Tile(0, 0, 100, 100))
    # A geographic scene written with longitudes past 180 crosses it too.
    past = Affine(0.001, 0, 179.95, 0, -0.001, 10.0)
    path = write_geotiff(tmp_path / "p.tif", synthetic(20, 100), crs="EPSG:4326", transform=past)
    with pytest.raises(FootprintError, match="antimeridian"):
        footprint(open_scene(path), Tile(0, 0, 100, 20))
    assert footprint(open_scene(path), Tile(0, 0, 40, 20))[:, 0].max() < 180


def test_scene_without_crs_and_corrupt_scene_are_named(tmp_path):
    path = write_geotiff(
        tmp_path / "nocrs.tif", synthetic(50, 50), crs=None, transform=Affine.identity()
    )
    with pytest.raises(SceneError, match=r"nocrs\.tif.*no CRS"):
        open_scene(path)
    good = write_geotiff(tmp_path / "bad.tif", synthetic(200, 200))
    good.write_bytes(good.read_bytes()[:300])
    with pytest.raises(SceneError) as info:
        open_scene(good)
    assert "bad.tif" in str(info.value) and "\n" not in str(info.value)


def test_nms_drops_overlapping_footprints_and_iou_matches_utm(tmp_path):
    scene = open_scene(write_geotiff(tmp_path / "u.tif", synthetic(400, 400)))
    tiles = [Tile(0, 0, 200, 200), Tile(50, 0, 200, 200), Tile(200, 200, 200, 200)]
    wkts = [footprint_wkt(footprint(scene, t)) for t in tiles]
    # In the UTM plane the first two overlap by 150 x 200 of 250 x 200: IoU 0.6.
    assert footprint_iou(wkts[0], wkts[1]) == pytest.approx(0.6, abs=1e-4)
    assert nms(wkts, 0.5) == [0, 2]
    assert nms(wkts, 0.7) == [0, 1, 2]


# ----------------------------------------------------------------------------- STAC


def test_stac_item_collection_lists_the_assets(tmp_path):
    import pystac

    paths = [write_geotiff(tmp_path / f"s{i}.tif", synthetic(60, 60, seed=i)) for i in range(2)]
    items = []
    for i, path in enumerate(paths):
        item = pystac.Item(
            f"item-{i}", None, None, pystac.utils.str_to_datetime(f"2024-0{i + 1}-01T00:00:00Z"), {}
        )
        item.add_asset("visual", pystac.Asset(href=str(path)))
        items.append(item)
    catalog = pystac.Catalog("cat", "fixtures")
    catalog.add_items(items)
    catalog.normalize_and_save(str(tmp_path / "stac"), pystac.CatalogType.SELF_CONTAINED)
    found = list_scenes(tmp_path / "stac" / "catalog.json", asset="visual")
    assert [s.scene_id for s in found] == ["item-0", "item-1"]
    assert [s.path for s in found] == [str(p.resolve()) for p in paths]
    assert found[1].datetime.startswith("2024-02-01T00:00:00")
    with pytest.raises(SceneError, match="no asset 'B04'"):
        list_scenes(tmp_path / "stac" / "catalog.json", asset="B04")


# ----------------------------------------------------------------------------- GeoJSON


def test_geojson_is_rfc7946(tmp_path):
    scene = open_scene(write_geotiff(tmp_path / "u.tif", synthetic(300, 300)))
    tile = Tile(0, 150, 150, 150)
    ring = footprint(scene, tile)
    # A clockwise WKT is oriented counter-clockwise on output.
    clockwise = "POLYGON ((" + ", ".join(f"{x} {y}" for x, y in ring[::-1]) + "))"
    result = SceneResult(1, 3, "u.tif", (0, 150, 150, 150), clockwise, "EPSG:32633", "")
    path = write_geojson(tmp_path / "out" / "r.geojson", [result])
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(feature_collection([result])))
    feature = data["features"][0]
    coords = np.asarray(feature["geometry"]["coordinates"][0])
    assert _shoelace(coords) > 0 and (coords[0] == coords[-1]).all()
    assert 14.9 < coords[:, 0].mean() < 15.1  # longitude first
    assert feature["properties"] == {
        "rank": 1, "distance": 3, "scene": "u.tif", "window": [0, 150, 150, 150],
        "crs": "EPSG:32633", "datetime": "",
    }  # fmt: skip
    png = write_overview(tmp_path / "out" / "r.u.png", scene, [result], side=100)
    with Image.open(png) as img:
        assert img.size == (100, 100)
        pixels = np.asarray(img)
    assert (pixels[75, 0] == [255, 32, 32]).all()  # the window's left edge at x = 0, y = 50..99
