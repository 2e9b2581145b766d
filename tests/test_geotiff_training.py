"""Training on GeoTIFF images with ``data.bands``, ``data.band_scale`` and ``model.input_bands``.

A tiny 13-band uint16 dataset (two class folders of 64 x 64 GeoTIFFs written with rasterio)
goes through ``prepare``, feature extraction and a one-step training; a tile cut from a scene
and the same raw values saved as a GeoTIFF file give identical model inputs (one read and
resize path); configs that do not fit the files stop with one line naming the file and key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpsh_tf2 import cli, workflow
from hpsh_tf2.data.images import BandReading, load_image_bands, read_image, resize_image
from hpsh_tf2.data.pipeline import image_dataset
from hpsh_tf2.features import cache_key
from hpsh_tf2.geo.raster import BandError, SceneReader, open_scene, read_geotiff_rgb
from hpsh_tf2.models.backbone import build_backbone, preprocess_images, preprocessor
from tests.geo.conftest import write_geotiff

SIDE = 64
BANDS = 13
CLASSES = ("Field", "Water")
PER_CLASS = 4
FAST = (
    "model.backbone=mobilenet_v2",
    "model.image_size=75",
    "model.bits=8",
    "model.input_norm=none",
    "train.epochs=1",
    "train.steps_per_epoch=1",
    "train.samples_per_class=2",
    "train.extract_batch_size=4",
    "data.split.train=0.5",
    "data.split.val=0.25",
    "data.split.test=0.25",
    "eval.k=2",
)


def _stack(label: int, index: int) -> np.ndarray:
    """``[13, H, W]`` uint16 reflectance-like values, class-dependent in bands 2, 3, 4 and 8."""
    rng = np.random.default_rng(100 * label + index)
    stack = rng.integers(1, 4000, (BANDS, SIDE, SIDE)).astype(np.uint16)
    stack[1:4] = stack[1:4] // 2 + (1500 if label else 0)
    stack[7] = stack[7] // 4 + 600 * label
    return stack


@pytest.fixture(scope="module")
def s2_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<Class>/<n>.tif``: 2 classes x 4 13-band uint16 GeoTIFFs, 64 x 64 px."""
    root = tmp_path_factory.mktemp("s2_tree")
    for label, name in enumerate(CLASSES):
        (root / name).mkdir()
        for index in range(PER_CLASS):
            write_geotiff(root / name / f"{index}.tif", _stack(label, index), nodata=None)
    return root


def _config(tmp_path: Path, root: Path, *overrides: str):
    return workflow.demo_config(tmp_path, [*FAST, f"data.root={root}", *overrides])


def _scaled(stack: np.ndarray, bands: list[int], hi: float = 3000.0) -> np.ndarray:
    chosen = stack[[b - 1 for b in bands]].astype(np.float64)
    return np.moveaxis(np.rint(np.clip(chosen / hi, 0, 1) * 255).astype(np.uint8), 0, -1)


# --------------------------------------------------------------------------- the reader


def test_pipeline_reads_the_selected_bands_scaled(s2_tree):
    reading = BandReading(bands=(4, 3, 2), band_scale="0-3000")
    paths = [str(s2_tree / "Water" / f"{i}.tif") for i in range(PER_CLASS)]
    batch = next(iter(image_dataset(paths, image_size=SIDE, batch_size=PER_CLASS, reading=reading)))
    expected = np.stack([_scaled(_stack(1, i), [4, 3, 2]) for i in range(PER_CLASS)])
    np.testing.assert_array_equal(batch.numpy(), expected.astype(np.float32))
    # Eagerly, outside tf.data, the same pixels.
    np.testing.assert_array_equal(read_image(paths[0], reading=reading).numpy(), expected[0])
    np.testing.assert_array_equal(load_image_bands(paths[0], reading), expected[0])


def test_inactive_reading_keeps_todays_decoding(tmp_path):
    png = tmp_path / "x.png"
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(png)
    assert not BandReading().active
    for reading in (None, BandReading(), BandReading(bands=(1, 2, 3))):
        np.testing.assert_array_equal(read_image(str(png), reading=reading).numpy(), pixels)


def test_null_bands_mean_bands_one_to_input_bands(s2_tree):
    path = s2_tree / "Field" / "0.tif"
    got = load_image_bands(path, BandReading(band_scale="0-3000", input_bands=BANDS))
    np.testing.assert_array_equal(got, _scaled(_stack(0, 0), list(range(1, BANDS + 1))))
    rgb = load_image_bands(path, BandReading(band_scale="0-3000"))
    np.testing.assert_array_equal(rgb, _scaled(_stack(0, 0), [1, 2, 3]))


@pytest.mark.parametrize("input_bands", [3, 4])
def test_scene_tile_and_the_same_pixels_in_a_file_give_identical_model_inputs(
    tmp_path, input_bands
):
    """One read and resize path: the inputs ``encode_images`` builds from a scene tile (resize
    of the batch, then the backbone's preprocessing) equal the training pipeline's inputs for
    a GeoTIFF holding that tile's raw values."""
    bands = [4, 3, 2, 8][:input_bands]
    rng = np.random.default_rng(7)
    scene_values = rng.integers(0, 5000, (BANDS, 150, 200)).astype(np.uint16)
    scene_path = write_geotiff(tmp_path / "scene.tif", scene_values, nodata=None)
    col, row, width, height = 37, 20, 90, 70
    with SceneReader(
        open_scene(scene_path), bands=bands, band_scale="0-3000", want=input_bands
    ) as reader:
        tile, valid = reader.read_window(col, row, width, height)
    assert valid.all()
    chip = write_geotiff(
        tmp_path / "chip.tif",
        scene_values[:, row : row + height, col : col + width],
        crs=None,
        nodata=None,
    )
    reading = BandReading(bands=tuple(bands), band_scale="0-3000", input_bands=input_bands)
    preprocess = preprocessor("mobilenet_v2")
    dataset = image_dataset(
        [str(chip)], image_size=75, batch_size=1, preprocess=preprocess, reading=reading
    )
    from_file = next(iter(dataset)).numpy()
    from_tile = preprocess_images(resize_image(tile[None], 75), "mobilenet_v2").numpy()
    assert from_file.shape == (1, 75, 75, input_bands)
    np.testing.assert_array_equal(from_file, from_tile)


# --------------------------------------------------------------------------- the workflow


def test_prepare_extract_and_train_on_thirteen_band_geotiffs(tmp_path, s2_tree):
    config = _config(tmp_path, s2_tree, "data.bands=[4, 3, 2]", "data.band_scale=0-3000")
    prepared = workflow.prepare(config, echo=lambda _: None)
    assert len(prepared.scan.paths) == len(CLASSES) * PER_CLASS and not prepared.scan.skipped
    features = workflow.extract(config, prepared=prepared, progress=False)
    paths = prepared.all_paths()
    rows = np.concatenate([features[name] for name in ("train", "val", "test")])
    # The backbone sees the selected, scaled bands.
    model = build_backbone("mobilenet_v2", weights="none", image_size=75, seed=123)
    pixels = np.stack([read_geotiff_rgb(s2_tree / p, bands=[4, 3, 2], band_scale="0-3000")
                       for p in paths[:2]])  # fmt: skip
    inputs = preprocess_images(resize_image(pixels, 75), "mobilenet_v2")
    np.testing.assert_allclose(rows[:2], model(inputs, training=False).numpy(), atol=1e-4)
    result = workflow.train(config, prepared=prepared, verbose=0)
    assert np.isfinite(result.history["loss"]).all()


def test_band_reading_is_part_of_the_feature_cache_key(s2_tree):
    common = dict(backbone="mobilenet_v2", weights="none", image_size=75, paths=["Field/0.tif"])
    keys = {
        cache_key(**common, reading=r)
        for r in (None, BandReading(bands=(4, 3, 2)), BandReading(bands=(2, 3, 4)))
    }
    assert len(keys) == 3
    assert cache_key(**common) == cache_key(**common, reading=BandReading())


def test_four_band_model_end_to_end(tmp_path, s2_tree):
    """``model.input_bands: 4`` with ``data.bands: [4, 3, 2, 8]``: features and one end-to-end
    training step (4-band images through tf.data, validation included)."""
    overrides = ("data.bands=[4, 3, 2, 8]", "data.band_scale=0-3000", "model.input_bands=4")
    config = _config(tmp_path / "features", s2_tree, *overrides)
    features = workflow.extract(config, progress=False)
    assert features["train"].shape[1] == 1280  # mobilenet_v2 pooled features
    config = _config(
        tmp_path / "e2e", s2_tree, *overrides, "train.mode=end_to_end", "train.trainable_layers=2"
    )
    result = workflow.train(config, verbose=0)
    assert np.isfinite(result.history["loss"]).all()


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (("data.bands=[4, 3, 14]",), ("data.bands", "1..13", "14")),
        (("data.bands=[4, 3]",), ("data.bands", "model.input_bands")),
        (("data.bands=[4, 3, 2, 8]",), ("data.bands", "model.input_bands")),
        (("data.band_scale=[0-3000, 0-3000]",), ("data.band_scale", "2 ranges")),
    ],
)
def test_a_config_that_does_not_fit_the_files_is_one_line_naming_file_and_key(
    tmp_path, s2_tree, capsys, overrides, names
):
    args = []
    for item in (*workflow.DEMO_OVERRIDES, *FAST, f"data.root={s2_tree}",
                 f"output.workdir={tmp_path}", *overrides):  # fmt: skip
        args += ["--set", item]
    assert cli.main(["prepare", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(s2_tree) in err and all(name in err for name in names), err


def test_not_verified_mismatch_stops_before_tf_data(s2_tree):
    with pytest.raises(BandError, match=r"0\.tif.*data\.bands"):
        image_dataset(
            [str(s2_tree / "Field" / "0.tif")],
            image_size=75,
            batch_size=1,
            reading=BandReading(bands=(4, 3, 20)),
        )


def test_a_jpeg_with_more_than_three_input_bands_is_refused_by_name(tmp_path):
    jpeg = tmp_path / "a.jpg"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(jpeg)
    with pytest.raises(BandError, match=r"a\.jpg.*model\.input_bands=4"):
        load_image_bands(jpeg, BandReading(bands=(1, 2, 3, 1), input_bands=4))
