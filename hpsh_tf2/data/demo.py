"""A small procedural image dataset for demos and smoke tests (no download needed).

Each class is a texture family with its own colour pair: stripes at class-specific angles and
frequencies, a checkerboard, Gaussian blobs, concentric rings, a linear gradient, a smooth noise
field, a grid of dots. Every image draws its own phase, angle and frequency jitter, colour
jitter and pixel noise from ``np.random.default_rng([seed, class_index, image_index])``, so the
classes are learnable but not trivially identical, and a given image does not depend on how many
classes or images were requested. Files are written as a mix of TIFF, JPEG and PNG
(``i % 3``: ``.tif``, ``.jpg``, ``.png``), one folder per class.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image

from hpsh_tf2.errors import DatasetError

__all__ = ["DEMO_CLASSES", "MARKER_NAME", "make_demo_dataset"]

MARKER_NAME = ".hpsh_demo.json"
_FORMAT_VERSION = 1
_SUFFIXES = (".tif", ".jpg", ".png")
_JPEG_QUALITY = 90
_COLOUR_JITTER = 12.0
_PIXEL_NOISE = 6.0

Pattern = Callable[[np.random.Generator, np.ndarray, np.ndarray], np.ndarray]


def _wave(value: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.sin(value)


def _direction(rng: np.random.Generator, degrees: float, jitter: float = 6.0) -> np.ndarray:
    theta = np.deg2rad(degrees + rng.normal(0.0, jitter))
    return np.array([np.cos(theta), np.sin(theta)])


def _stripes(degrees: float, cycles: float) -> Pattern:
    def pattern(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        ux, uy = _direction(rng, degrees)
        freq = cycles * rng.uniform(0.85, 1.15)
        return _wave(2 * np.pi * freq * (xx * ux + yy * uy) + rng.uniform(0, 2 * np.pi))

    return pattern


def _checkerboard(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    ux, uy = _direction(rng, 0.0, jitter=8.0)
    freq = 2.5 * rng.uniform(0.85, 1.15)
    u = 2 * np.pi * freq * (xx * ux + yy * uy) + rng.uniform(0, 2 * np.pi)
    v = 2 * np.pi * freq * (yy * ux - xx * uy) + rng.uniform(0, 2 * np.pi)
    return 0.5 + 0.5 * np.tanh(4.0 * np.sin(u) * np.sin(v))


def _blobs(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    count = int(rng.integers(3, 7))
    centres = rng.uniform(0.1, 0.9, size=(count, 2, 1, 1))
    sigma = rng.uniform(0.07, 0.14, size=(count, 1, 1))
    dist2 = (yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2
    return np.clip(np.exp(-dist2 / (2 * sigma**2)).sum(axis=0), 0.0, 1.0)


def _rings(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    cy, cx = rng.uniform(0.3, 0.7, size=2)
    radius = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    return _wave(2 * np.pi * 5.0 * rng.uniform(0.85, 1.15) * radius + rng.uniform(0, 2 * np.pi))


def _gradient(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    ux, uy = _direction(rng, rng.uniform(0, 360), jitter=0.0)
    ramp = xx * ux + yy * uy
    return (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-9)


def _noise_field(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    count = 6
    theta = rng.uniform(0, 2 * np.pi, size=(count, 1, 1))
    freq = rng.uniform(1.0, 3.0, size=(count, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(count, 1, 1))
    field = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase).sum(0)
    return (field - field.min()) / max(float(np.ptp(field)), 1e-9)


def _dots_grid(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    freq = 5.0 * rng.uniform(0.85, 1.15)
    dy = np.mod(yy * freq + rng.uniform(0, 1), 1.0) - 0.5
    dx = np.mod(xx * freq + rng.uniform(0, 1), 1.0) - 0.5
    return np.exp(-(dx**2 + dy**2) / (2 * 0.15**2))


# name -> (pattern, colour for p = 0, colour for p = 1)
_CLASSES: Mapping[str, tuple[Pattern, tuple[int, int, int], tuple[int, int, int]]] = (
    MappingProxyType(
        {
            "stripes_diagonal": (_stripes(45.0, 4.0), (200, 60, 40), (250, 220, 120)),
            "checkerboard": (_checkerboard, (30, 30, 30), (230, 230, 230)),
            "blobs": (_blobs, (20, 80, 30), (120, 200, 60)),
            "rings": (_rings, (30, 50, 160), (150, 200, 250)),
            "gradient": (_gradient, (120, 40, 140), (250, 160, 60)),
            "noise_field": (_noise_field, (90, 70, 50), (200, 180, 140)),
            "stripes_horizontal": (_stripes(90.0, 7.0), (10, 110, 120), (200, 240, 230)),
            "dots_grid": (_dots_grid, (240, 240, 200), (200, 30, 90)),
        }
    )
)
DEMO_CLASSES: tuple[str, ...] = tuple(_CLASSES)
"""Class names in label order; ``num_classes=n`` uses the first ``n``."""


def _render(class_index: int, image_index: int, size: int, seed: int) -> np.ndarray:
    pattern, low, high = _CLASSES[DEMO_CLASSES[class_index]]
    rng = np.random.default_rng([seed, class_index, image_index])
    coords = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    p = pattern(rng, yy, xx)[..., np.newaxis]
    low_c = np.asarray(low, float) + rng.normal(0, _COLOUR_JITTER, 3)
    high_c = np.asarray(high, float) + rng.normal(0, _COLOUR_JITTER, 3)
    image = low_c * (1.0 - p) + high_c * p + rng.normal(0, _PIXEL_NOISE, (size, size, 3))
    return np.rint(np.clip(image, 0, 255)).astype(np.uint8)


def _file_name(class_name: str, image_index: int) -> str:
    return f"{class_name}_{image_index:03d}{_SUFFIXES[image_index % len(_SUFFIXES)]}"


def _save(image: np.ndarray, path: Path) -> None:
    extra = {"quality": _JPEG_QUALITY} if path.suffix == ".jpg" else {}
    Image.fromarray(image).save(path, **extra)


def _validate_int(name: str, value: object, low: int, high: int | None = None) -> int:
    valid = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not valid or value < low or (high is not None and value > high):
        expected = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
        raise ValueError(f"Received: {name}={value!r}; expected {expected}")
    return int(value)


def _marker(num_classes: int, images_per_class: int, image_size: int, seed: int) -> dict:
    return {
        "format": _FORMAT_VERSION,
        "num_classes": num_classes,
        "images_per_class": images_per_class,
        "image_size": image_size,
        "seed": seed,
        "classes": list(DEMO_CLASSES[:num_classes]),
    }


def _is_complete(dest: Path, marker: dict) -> bool:
    try:
        found = json.loads((dest / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if found != marker:
        return False
    return all(
        (dest / name / _file_name(name, i)).is_file()
        for name in marker["classes"]
        for i in range(marker["images_per_class"])
    )


def _build(staging: Path, marker: dict) -> None:
    size, seed = marker["image_size"], marker["seed"]
    for c, name in enumerate(marker["classes"]):
        (staging / name).mkdir()
        for i in range(marker["images_per_class"]):
            _save(_render(c, i, size, seed), staging / name / _file_name(name, i))
    (staging / MARKER_NAME).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")


def make_demo_dataset(
    dest: str | os.PathLike[str],
    *,
    num_classes: int = 6,
    images_per_class: int = 24,
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    """Write (or reuse) a procedural folder-per-class demo dataset.

    The dataset is built in a hidden temporary folder next to ``dest`` and renamed into place,
    so ``dest`` is either absent or complete. A marker file ``.hpsh_demo.json`` (hidden, so
    ignored by :func:`~hpsh_tf2.data.scan.scan_dataset`) records the parameters; calling again
    with the same parameters returns the existing dataset without rewriting it.

    Args:
        dest: Dataset root to create (must not exist, be empty, or hold this same demo).
        num_classes: Number of classes, 2..8 (the first ``num_classes`` of
            :data:`DEMO_CLASSES`).
        images_per_class: Images per class, >= 4.
        image_size: Height and width in pixels, >= 16.
        seed: Non-negative integer; the same seed gives byte-identical files.

    Returns:
        ``dest`` as a Path.

    Raises:
        ValueError: For out-of-range arguments.
        DatasetError: If ``dest`` exists and holds something else (a file, a non-empty folder,
            or a demo made with other parameters).
    """
    num_classes = _validate_int("num_classes", num_classes, 2, len(DEMO_CLASSES))
    images_per_class = _validate_int("images_per_class", images_per_class, 4)
    image_size = _validate_int("image_size", image_size, 16)
    seed = _validate_int("seed", seed, 0)
    marker = _marker(num_classes, images_per_class, image_size, seed)
    target = Path(dest).expanduser()
    if _is_complete(target, marker):
        return target
    if target.exists():
        if not target.is_dir() or any(target.iterdir()):
            raise DatasetError(
                f"Demo destination {str(target)!r} exists and is not a demo dataset made with "
                f"these parameters ({marker}); delete it or choose another folder"
            )
        target.rmdir()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _build(staging, marker)
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
