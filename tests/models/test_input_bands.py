"""model.input_bands: an N-band backbone keeps the RGB filters, extra bands get their mean."""

from __future__ import annotations

import numpy as np
import pytest

from hpsh_tf2.geo.raster import read_geotiff_rgb
from hpsh_tf2.models.backbone import build_backbone, extend_band_kernel, preprocess_images
from tests.geo.conftest import write_geotiff

SIZE = 32


@pytest.fixture(scope="module")
def models():
    rgb = build_backbone("mobilenet_v2", weights="none", image_size=SIZE, seed=3)
    many = build_backbone("mobilenet_v2", weights="none", image_size=SIZE, seed=3, input_bands=13)
    return rgb, many


def test_first_kernel_keeps_rgb_and_extra_bands_take_the_mean(models):
    rgb, many = models
    (first_rgb, first_many) = (next(w for w in m.get_weights() if w.ndim == 4) for m in (rgb, many))
    assert first_many.shape == (*first_rgb.shape[:2], 13, *first_rgb.shape[3:])
    np.testing.assert_array_equal(first_many[:, :, :3], first_rgb)
    mean = (first_rgb[:, :, 0] + first_rgb[:, :, 1] + first_rgb[:, :, 2]) / 3.0
    for band in range(3, 13):
        np.testing.assert_allclose(first_many[:, :, band], mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(extend_band_kernel(first_rgb, 2), first_rgb[:, :, :2])


def test_thirteen_band_geotiff_runs_and_neutral_extra_bands_change_nothing(models, tmp_path):
    rgb_model, many_model = models
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 3001, (13, SIZE, SIZE)).astype(np.uint16)
    stack[3:] = 1500  # bands 4..13 at mid-range: 127.5 after scaling... rounded to 128
    path = write_geotiff(tmp_path / "s2.tif", stack, nodata=None)
    pixels = read_geotiff_rgb(path, bands=list(range(1, 14)), band_scale="0-3000", want=13)
    assert pixels.shape == (SIZE, SIZE, 13) and pixels.dtype == np.uint8
    expected = np.rint(np.clip(stack.astype(np.float64) / 3000, 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(pixels, np.moveaxis(expected, 0, -1))
    inputs = preprocess_images(pixels[None].astype(np.float32), "mobilenet_v2").numpy()
    inputs[..., 3:] = 0.0  # neutral extra bands: x / 127.5 - 1 = 0 contributes nothing
    out_many = many_model(inputs, training=False).numpy()
    out_rgb = rgb_model(inputs[..., :3], training=False).numpy()
    np.testing.assert_allclose(out_many, out_rgb, rtol=1e-4, atol=1e-5)
    assert out_many.shape == (1, 1280)


def test_torch_preprocessing_extends_statistics_per_band():
    images = np.full((1, 2, 2, 5), 255.0, np.float32)
    out = preprocess_images(images, "densenet121").numpy()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = [(1 - mean[i]) / std[i] for i in range(3)] + [(1 - np.mean(mean)) / np.mean(std)] * 2
    np.testing.assert_allclose(out[0, 0, 0], expected, rtol=1e-6)
