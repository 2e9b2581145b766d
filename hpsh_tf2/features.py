"""Backbone feature extraction with a resumable cache, and bring-your-own feature files.

Extraction runs one backbone model over every image of the split through ``tf.data``, in
batches, and writes ``<workdir>/features/``:

- ``cache.json``: the cache key (backbone, weights, image size, image list) and progress;
- ``part-NNNNN.npy``: chunks written as extraction goes, so an interrupted run resumes;
- ``features.npy``: the finished [N, D] float32 array, rows in ``paths`` order.

A changed backbone, weights file, image size or split invalidates the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from hpsh_tf2.atomic import save_npy_atomic, write_json_atomic
from hpsh_tf2.data.pipeline import image_dataset
from hpsh_tf2.models.backbone import build_backbone, preprocessor

__all__ = [
    "FeatureSet",
    "cache_key",
    "extract_features",
    "load_feature_file",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureSet:
    """Pre-computed features with their labels and image paths.

    Attributes:
        features: float32 [N, D].
        labels: int32 [N], indices into ``class_names``.
        paths: N relative image paths (unique).
        class_names: Class names, index = label.
    """

    features: np.ndarray
    labels: np.ndarray
    paths: tuple[str, ...]
    class_names: tuple[str, ...]


def _weights_fingerprint(weights: str) -> str:
    """Identifies the weights: their name, or a local file's size and modification time."""
    path = Path(weights).expanduser()
    if weights.lower() in ("imagenet", "none") or not path.is_file():
        return weights.lower()
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}"


def cache_key(
    *, backbone: str, weights: str, image_size: int, paths: Sequence[str], seed: int = 123
) -> str:
    """A hash of everything the features depend on (the seed only for random weights)."""
    digest = hashlib.sha256()
    payload = {
        "backbone": backbone,
        "weights": _weights_fingerprint(weights),
        "image_size": int(image_size),
    }
    if weights.lower() == "none":
        payload["seed"] = int(seed)
    digest.update(json.dumps(payload, sort_keys=True).encode())
    for path in paths:
        digest.update(path.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:20]


def extract_features(
    *,
    paths: Sequence[str],
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    backbone: str,
    weights: str,
    image_size: int,
    seed: int = 123,
    batch_size: int = 32,
    model_factory: Callable[[], object] | None = None,
    chunk_batches: int = 8,
    progress: bool = True,
) -> np.ndarray:
    """Computes (or loads from cache) backbone features of ``paths``.

    Args:
        paths: Image paths relative to ``root``, in the output row order.
        root: The dataset root.
        out_dir: The cache folder (``<workdir>/features``).
        backbone: Backbone name (see :mod:`hpsh_tf2.models.backbone`).
        weights: ``"imagenet"``, ``"none"`` or a local ``.h5`` path.
        image_size: Input side.
        seed: Initialisation seed of a ``weights="none"`` backbone (part of the cache key).
        batch_size: Images per forward pass.
        model_factory: Builds the feature model (defaults to :func:`build_backbone`); only
            called when something is left to compute.
        chunk_batches: Batches per written chunk (the resume granularity).
        progress: Show a progress bar.

    Returns:
        float32 [len(paths), D].
    """
    out_dir = Path(out_dir)
    key = cache_key(
        backbone=backbone, weights=weights, image_size=image_size, paths=paths, seed=seed
    )
    done = _prepare_cache(out_dir, key, len(paths))
    final = out_dir / "features.npy"
    if done is None:
        features = np.load(final)
        logger.info("features: cache hit (%s, %d rows)", out_dir, len(features))
        return features
    parts = sorted(out_dir.glob("part-*.npy"))
    start = sum(int(np.load(p, mmap_mode="r").shape[0]) for p in parts)
    if start:
        logger.info("features: resuming at image %d of %d", start, len(paths))
    if start < len(paths):
        model = (
            model_factory()
            if model_factory
            else build_backbone(backbone, weights=weights, image_size=image_size, seed=seed)
        )
        abs_paths = [str(Path(root) / p) for p in paths[start:]]
        ds = image_dataset(
            abs_paths,
            image_size=image_size,
            batch_size=batch_size,
            preprocess=preprocessor(backbone),
        )
        total_batches = -(-len(abs_paths) // batch_size)
        bar = keras.utils.Progbar(total_batches, verbose=1 if progress else 0)
        pending: list[np.ndarray] = []
        for step, images in enumerate(ds, start=1):
            pending.append(np.asarray(model.predict_on_batch(images), np.float32))
            if len(pending) == chunk_batches or step == total_batches:
                save_npy_atomic(out_dir / f"part-{len(parts):05d}.npy", np.concatenate(pending))
                parts.append(out_dir / f"part-{len(parts):05d}.npy")
                pending = []
            bar.update(step)
    features = np.concatenate([np.load(p) for p in sorted(out_dir.glob("part-*.npy"))])
    if len(features) != len(paths):
        raise RuntimeError(
            f"feature cache {out_dir} holds {len(features)} rows for {len(paths)} images; "
            "delete the folder and run extract again"
        )
    save_npy_atomic(final, features)
    # Mark the cache complete before removing the parts: an interruption in between must not
    # leave an incomplete cache whose remaining parts no longer start at row 0.
    write_json_atomic(out_dir / "cache.json", {"key": key, "rows": len(paths), "complete": True})
    for part in out_dir.glob("part-*.npy"):
        part.unlink()
    return features


def _prepare_cache(out_dir: Path, key: str, rows: int) -> int | None:
    """Validates the cache folder; returns None on a complete hit, else rows to resume from."""
    meta_path = out_dir / "cache.json"
    if meta_path.is_file():
        meta = _read_cache_meta(meta_path)
        if meta.get("key") == key:
            if meta.get("complete") and (out_dir / "features.npy").is_file():
                return None
            return 0
        logger.info("features: cache key changed; recomputing (%s)", out_dir)
    # Remove only the files this module writes: out_dir may hold unrelated files.
    out_dir.mkdir(parents=True, exist_ok=True)
    for pattern in _CACHE_FILE_PATTERNS:
        for stale in out_dir.glob(pattern):
            stale.unlink()
    write_json_atomic(meta_path, {"key": key, "rows": rows, "complete": False})
    return 0


_CACHE_FILE_PATTERNS = (
    "part-*.npy",
    "features.npy",
    "cache.json",
    ".part-*.npy.*",
    ".features.npy.*",
    ".cache.json.*",
)


def _read_cache_meta(meta_path: Path) -> dict:
    """The cache metadata, or ``{}`` when the file is unreadable (then the cache is rebuilt)."""
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def load_feature_file(path: str | os.PathLike) -> FeatureSet:
    """Loads and validates a bring-your-own features file.

    The ``.npz`` holds ``features`` [N, D] (float), ``labels`` [N] (integer), ``paths`` [N]
    (strings, unique) and optionally ``class_names`` [C] (strings; default: ``class_<i>``).

    Raises:
        ValueError: Naming the file and the offending array when anything is missing or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data.features: file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"data.features: {path} is not a readable .npz file ({err})") from None
    with data:
        missing = [name for name in ("features", "labels", "paths") if name not in data.files]
        if missing:
            raise ValueError(
                f"data.features: {path} lacks array(s) {missing}; expected 'features' [N, D] "
                f"float, 'labels' [N] int, 'paths' [N] str. Found: {sorted(data.files)}"
            )
        features, labels, paths = data["features"], data["labels"], data["paths"]
        class_names = data["class_names"] if "class_names" in data.files else None
    return _validate_feature_arrays(path, features, labels, paths, class_names)


def _validate_feature_arrays(path, features, labels, paths, class_names) -> FeatureSet:
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.floating):
        raise ValueError(
            f"data.features: {path}: 'features' must be a float array [N, D]. Received: "
            f"shape={features.shape}, dtype={features.dtype}"
        )
    if features.shape[0] == 0:
        raise ValueError(f"data.features: {path}: 'features' has no rows; expected N >= 1")
    if not np.all(np.isfinite(features)):
        raise ValueError(f"data.features: {path}: 'features' contains NaN or infinite values")
    n = len(features)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"data.features: {path}: 'labels' must be an int array [{n}]. Received: "
            f"shape={labels.shape}, dtype={labels.dtype}"
        )
    if paths.shape != (n,) or paths.dtype.kind not in "US":
        raise ValueError(
            f"data.features: {path}: 'paths' must be a string array [{n}]. Received: "
            f"shape={paths.shape}, dtype={paths.dtype}"
        )
    paths_t = tuple(str(p) for p in paths)
    if len(set(paths_t)) != n:
        raise ValueError(f"data.features: {path}: 'paths' has duplicate entries")
    if labels.min() < 0:
        raise ValueError(
            f"data.features: {path}: 'labels' must be >= 0. Received min {labels.min()}"
        )
    if class_names is None:
        names = tuple(f"class_{i}" for i in range(int(labels.max()) + 1))
    else:
        names = tuple(str(c) for c in class_names)
        if labels.max() >= len(names):
            raise ValueError(
                f"data.features: {path}: label {int(labels.max())} has no entry in "
                f"'class_names' ({len(names)} names)"
            )
    return FeatureSet(features.astype(np.float32), labels.astype(np.int32), paths_t, names)
