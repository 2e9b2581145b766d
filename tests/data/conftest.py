"""Fixtures for the dataset-layer tests: image writers, small class trees, op runners."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

Runner = Callable[[Callable[[tf.Tensor], tf.Tensor], object], np.ndarray]


def smooth_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth uint8 RGB test picture (gradients plus a low-frequency wave)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    phase = rng.uniform(0, 2 * np.pi, size=3)
    channels = [
        0.5 + 0.5 * np.sin(2 * np.pi * (xx + k * yy) + phase[k]) * (0.6 + 0.4 * yy)
        for k in range(3)
    ]
    return np.rint(np.stack(channels, axis=-1) * 255).astype(np.uint8)


def noisy_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Uniform random uint8 RGB pixels (lossless-format tests)."""
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def write_image(path: Path, array: np.ndarray, mode: str | None = None, **save_kwargs) -> Path:
    """Write ``array`` with Pillow (format from the suffix) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)
    img.save(path, **save_kwargs)
    return path


def make_class_tree(
    root: Path,
    counts: dict[str, int],
    *,
    suffixes: Sequence[str] = (".png",),
    size: int = 8,
) -> Path:
    """Create ``root/<class>/<class>_<i>.<suffix>`` with ``counts[class]`` tiny images each."""
    for c, (name, count) in enumerate(counts.items()):
        for i in range(count):
            suffix = suffixes[i % len(suffixes)]
            write_image(root / name / f"{name}_{i:03d}{suffix}", noisy_rgb(size, size, 100 * c + i))
    return root


def _run_eager(fn: Callable[[tf.Tensor], tf.Tensor], value: object) -> np.ndarray:
    return fn(tf.constant(value)).numpy()


def _run_tf_function(fn: Callable[[tf.Tensor], tf.Tensor], value: object) -> np.ndarray:
    return tf.function(fn)(tf.constant(value)).numpy()


def _run_dataset_map(fn: Callable[[tf.Tensor], tf.Tensor], value: object) -> np.ndarray:
    dataset = tf.data.Dataset.from_tensors(tf.constant(value)).map(fn)
    return next(iter(dataset)).numpy()


@pytest.fixture(params=["eager", "tf_function", "dataset_map"])
def runner(request: pytest.FixtureRequest) -> Runner:
    """Runs a one-argument TF function eagerly, under tf.function, or inside Dataset.map."""
    return {
        "eager": _run_eager,
        "tf_function": _run_tf_function,
        "dataset_map": _run_dataset_map,
    }[request.param]


# --------------------------------------------------------------------------- multi-label formats

BIGEARTHNET_BANDS = {
    "B01": 20,
    "B02": 120,
    "B03": 120,
    "B04": 120,
    "B05": 60,
    "B06": 60,
    "B07": 60,
    "B08": 120,
    "B8A": 60,
    "B09": 20,
    "B11": 60,
    "B12": 60,
}
"""Side in pixels of each BigEarthNet-S2 band of a 1.2 km patch (10/20/60 m)."""


def write_bigearthnet_patch(
    root: Path,
    name: str,
    labels: Sequence[str],
    *,
    seed: int = 0,
    values: dict[str, np.ndarray] | None = None,
    skip_bands: Sequence[str] = (),
) -> Path:
    """One BigEarthNet-S2 patch folder, written with rasterio as the archive has it.

    Each band is a single-band uint16 GeoTIFF ``<name>_<band>.tif`` (UTM 33N, its own pixel
    size), random reflectance unless ``values[band]`` is given; ``<name>_labels_metadata.json``
    holds ``labels``.
    """
    import json

    import rasterio
    from rasterio.transform import Affine

    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for band, side in BIGEARTHNET_BANDS.items():
        if band in skip_bands:
            continue
        data = (values or {}).get(band)
        if data is None:
            data = rng.integers(0, 4000, size=(side, side)).astype(np.uint16)
        pixel = 1200 / side
        profile = {
            "driver": "GTiff",
            "height": side,
            "width": side,
            "count": 1,
            "dtype": "uint16",
            "crs": "EPSG:32633",
            "transform": Affine(pixel, 0.0, 500000.0, 0.0, -pixel, 4650000.0),
        }
        with rasterio.open(folder / f"{name}_{band}.tif", "w", **profile) as dst:
            dst.write(np.asarray(data, np.uint16), 1)
    meta = {"labels": list(labels), "coordinates": {"ulx": 500000, "uly": 4650000}}
    (folder / f"{name}_labels_metadata.json").write_text(json.dumps(meta))
    return folder


def write_mlrsnet(
    root: Path, categories: dict[str, list[tuple[str, Sequence[int]]]], label_names: Sequence[str]
) -> Path:
    """An MLRSNet-style tree: ``Images/<category>/<image>`` and ``Labels/<category>.csv``."""
    for c, (category, rows) in enumerate(categories.items()):
        lines = [",".join(["image", *label_names])]
        for i, (image, hot) in enumerate(rows):
            write_image(root / "Images" / category / image, noisy_rgb(8, 8, 50 * c + i))
            lines.append(",".join([image, *(str(int(v)) for v in hot)]))
        (root / "Labels").mkdir(parents=True, exist_ok=True)
        (root / "Labels" / f"{category}.csv").write_text("\n".join(lines) + "\n")
    return root


def write_ucmd_multilabel(
    root: Path, rows: list[tuple[str, Sequence[int]]], label_names: Sequence[str]
) -> Path:
    """UCMD images ``UCMerced_LandUse/Images/<class>/<name>.tif`` and a tab-separated
    ``LandUse_Multilabeled.txt`` beside ``Images``; returns the Images folder."""
    images = root / "UCMerced_LandUse" / "Images"
    lines = ["\t".join(["IMAGE\\LABEL", *label_names])]
    for i, (name, hot) in enumerate(rows):
        category = name.rstrip("0123456789")
        write_image(images / category / f"{name}.tif", noisy_rgb(8, 8, i))
        lines.append("\t".join([name, *(str(int(v)) for v in hot)]))
    (root / "UCMerced_LandUse" / "LandUse_Multilabeled.txt").write_text("\n".join(lines) + "\n")
    return images
