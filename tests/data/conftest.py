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
