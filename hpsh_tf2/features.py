"""Backbone feature extraction with a resumable cache, and bring-your-own feature files.

Extraction runs one backbone model over every image of the split through ``tf.data``, in
batches, and writes ``<workdir>/features/``:

- ``cache.json``: the cache key (backbone, weights, image size, image list and each image's
  size and modification time, or its content hash, and the band reading of GeoTIFFs when one
  is set: ``data.bands``, ``data.band_scale``, ``model.input_bands``) and progress;
- ``part-NNNNN.npy``: chunks written as extraction goes, so an interrupted run resumes;
- ``features.npy``: the finished [N, D] float32 array, rows in ``paths`` order.

A changed backbone, weights file, image size or split invalidates the cache, and so does an image
edited in place: the key covers every file's size and ``mtime_ns`` (cheap: one ``stat`` each), or
with ``content_hash=True`` (config ``data.content_hash``) a SHA-256 of its bytes.
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
import tensorflow as tf

from hpsh_tf2.atomic import save_npy_atomic, write_json_atomic
from hpsh_tf2.console import keras_verbosity
from hpsh_tf2.data.images import BandReading, first_undecodable
from hpsh_tf2.data.pipeline import image_dataset
from hpsh_tf2.errors import BadImageError, DatasetError
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
        labels: int32 [N], indices into ``class_names``; or uint8 multi-hot [N, C] (several
            labels per item, ``labels[i, c] = 1`` when item ``i`` carries ``class_names[c]``).
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


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_stamp(root: Path, rel: str, content_hash: bool) -> str:
    """``size:mtime_ns`` of one image (plus its SHA-256 with ``content_hash``)."""
    path = root / rel
    try:
        stat = path.stat()
        stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
        return f"{stamp}:{_file_digest(path)}" if content_hash else stamp
    except OSError as err:
        raise DatasetError(
            f"cannot read image {str(path)!r} for the feature cache key: "
            f"{err.strerror or err}; run prepare again if the dataset changed"
        ) from None


def cache_key(
    *,
    backbone: str,
    weights: str,
    image_size: int,
    paths: Sequence[str],
    seed: int = 123,
    root: str | os.PathLike | None = None,
    content_hash: bool = False,
    reading: BandReading | None = None,
) -> str:
    """A hash of everything the features depend on (the seed only for random weights).

    Args:
        backbone: The feature model's backbone name.
        weights: Its weights (a name, or a local file whose path, size and mtime count).
        image_size: Its input side in pixels.
        seed: Its random-weights seed (part of the key only for ``weights="none"``).
        paths: Image paths relative to ``root``, in row order.
        root: The dataset root; when given, each file's size and ``mtime_ns`` are part of the key,
            so an image replaced in place under the same name misses the cache.
        content_hash: Also hash each file's bytes (reads every image; for file systems whose
            modification times cannot be trusted).
        reading: The band reading of GeoTIFFs; part of the key only when active, so keys made
            without one are unchanged.

    Raises:
        DatasetError: An image cannot be read (the message names it).
    """
    digest = hashlib.sha256()
    payload = {
        "backbone": backbone,
        "weights": _weights_fingerprint(weights),
        "image_size": int(image_size),
    }
    if weights.lower() == "none":
        payload["seed"] = int(seed)
    if root is not None:
        payload["files"] = "content" if content_hash else "stat"
    if reading is not None and reading.active:
        payload["reading"] = reading.key()
    digest.update(json.dumps(payload, sort_keys=True).encode())
    base = None if root is None else Path(root)
    for path in paths:
        digest.update(path.encode())
        digest.update(b"\0")
        if base is not None:
            digest.update(_file_stamp(base, path, content_hash).encode())
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
    content_hash: bool = False,
    reading: BandReading | None = None,
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
        content_hash: Key the cache on each image's SHA-256 too, not only its size and
            ``mtime_ns`` (see :func:`cache_key`).
        reading: How GeoTIFF images are read (``data.bands``, ``data.band_scale``,
            ``model.input_bands``: the backbone is built for ``reading.input_bands``); None: as
            before (see :func:`hpsh_tf2.data.images.read_image`).

    Returns:
        float32 [len(paths), D].

    Raises:
        BadImageError: An image does not decode (possible when the scan did not verify images);
            the message names the file.
        BandError: The band reading does not fit an image (the message names it and the key).
    """
    out_dir = Path(out_dir)
    key = cache_key(
        backbone=backbone,
        weights=weights,
        image_size=image_size,
        paths=paths,
        seed=seed,
        root=root,
        content_hash=content_hash,
        reading=reading,
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
            else build_backbone(
                backbone,
                weights=weights,
                image_size=image_size,
                seed=seed,
                input_bands=reading.input_bands if reading is not None else 3,
            )
        )
        abs_paths = [str(Path(root) / p) for p in paths[start:]]
        ds = image_dataset(
            abs_paths,
            image_size=image_size,
            batch_size=batch_size,
            preprocess=preprocessor(backbone),
            reading=reading,
        )
        total_batches = -(-len(abs_paths) // batch_size)
        bar = keras.utils.Progbar(total_batches, verbose=keras_verbosity() if progress else 0)
        pending: list[np.ndarray] = []
        batches = iter(ds)
        for step in range(1, total_batches + 1):
            try:
                images = next(batches)
            except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as err:
                raise _bad_image_in(
                    abs_paths, (step - 1) * batch_size, batch_size, err, reading
                ) from err
            pending.append(np.asarray(model.predict_on_batch(images), np.float32))
            if len(pending) == chunk_batches or step == total_batches:
                save_npy_atomic(out_dir / f"part-{len(parts):05d}.npy", np.concatenate(pending))
                parts.append(out_dir / f"part-{len(parts):05d}.npy")
                pending = []
            bar.update(step)
    features = np.concatenate([np.load(p) for p in sorted(out_dir.glob("part-*.npy"))])
    if len(features) != len(paths):
        raise DatasetError(
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


def _bad_image_in(
    paths: Sequence[str],
    start: int,
    batch_size: int,
    err: Exception,
    reading: BandReading | None = None,
) -> Exception:
    """The :class:`BadImageError` of the first undecodable file from the failing batch on.

    TF's decoder error names neither the file nor its position, so the batch it came from (and,
    should prefetching have moved on, the files after it) is decoded again on the host (Pillow,
    or the scene reader for GeoTIFFs with an active ``reading``, which raises the
    :class:`~hpsh_tf2.geo.raster.BandError` of a file the config does not fit).
    """
    bad = first_undecodable(paths[start:], reading=reading)
    if bad is not None:
        return BadImageError(
            bad.path,
            f"{bad.reason} (found during feature extraction: data.verify_images is false; "
            "set it to true to skip undecodable images during the scan)",
        )
    first = paths[start] if start < len(paths) else "?"
    return BadImageError(first, f"TensorFlow could not decode a batch starting here: {err}")


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

    The ``.npz`` holds ``features`` [N, D] (float), ``labels`` [N] (integer) or multi-hot
    [N, C] (uint8 / bool / integer 0-1; several labels per item), ``paths`` [N] (strings,
    unique) and optionally ``class_names`` [C] (strings; default: ``class_<i>``).

    Raises:
        DatasetError: Naming the file and the offending array when anything is missing or
            malformed (object arrays, which would need pickle, included).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"data.features: file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DatasetError(f"data.features: {path} is not a readable .npz file ({err})") from None
    with data:
        missing = [name for name in ("features", "labels", "paths") if name not in data.files]
        if missing:
            raise DatasetError(
                f"data.features: {path} lacks array(s) {missing}; expected 'features' [N, D] "
                f"float, 'labels' [N] int, 'paths' [N] str. Found: {sorted(data.files)}"
            )
        features, labels, paths = (_npz_array(data, path, name) for name in _NPZ_ARRAYS)
        class_names = _npz_array(data, path, "class_names") if "class_names" in data.files else None
    return _validate_feature_arrays(path, features, labels, paths, class_names)


_NPZ_ARRAYS = ("features", "labels", "paths")


def _npz_array(data, path: Path, name: str) -> np.ndarray:
    """One array of an open ``.npz``; object arrays (pickles) are refused, naming file and array."""
    try:
        return data[name]
    except ValueError as err:
        if "allow_pickle" in str(err) or "Object arrays" in str(err):
            raise DatasetError(
                f"data.features: {path}: array '{name}' holds Python objects (dtype=object), "
                "which would need pickle to load; expected plain numeric / string arrays "
                "(save strings with np.array(list_of_str), not dtype=object)"
            ) from None
        raise DatasetError(f"data.features: {path}: cannot read array '{name}': {err}") from None
    except (OSError, EOFError) as err:
        raise DatasetError(f"data.features: {path}: cannot read array '{name}': {err}") from None


def _validate_feature_arrays(path, features, labels, paths, class_names) -> FeatureSet:
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.floating):
        raise DatasetError(
            f"data.features: {path}: 'features' must be a float array [N, D]. Received: "
            f"shape={features.shape}, dtype={features.dtype}"
        )
    if features.shape[0] == 0:
        raise DatasetError(f"data.features: {path}: 'features' has no rows; expected N >= 1")
    if not np.all(np.isfinite(features)):
        raise DatasetError(f"data.features: {path}: 'features' contains NaN or infinite values")
    n = len(features)
    if paths.shape != (n,) or paths.dtype.kind not in "US":
        raise DatasetError(
            f"data.features: {path}: 'paths' must be a string array [{n}]. Received: "
            f"shape={paths.shape}, dtype={paths.dtype}"
        )
    paths_t = tuple(str(p) for p in paths)
    if len(set(paths_t)) != n:
        raise DatasetError(f"data.features: {path}: 'paths' has duplicate entries")
    if labels.ndim == 2 and labels.shape[0] == n and labels.shape[1] > 1:
        labels, names = _multi_hot_labels(path, labels, class_names)
        return FeatureSet(features.astype(np.float32), labels, paths_t, names)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(
            f"data.features: {path}: 'labels' must be an int array [{n}] or a multi-hot "
            f"array [{n}, C]. Received: shape={labels.shape}, dtype={labels.dtype}"
        )
    if labels.min() < 0:
        raise DatasetError(
            f"data.features: {path}: 'labels' must be >= 0. Received min {labels.min()}"
        )
    if class_names is None:
        names = tuple(f"class_{i}" for i in range(int(labels.max()) + 1))
    else:
        names = tuple(str(c) for c in class_names)
        if labels.max() >= len(names):
            raise DatasetError(
                f"data.features: {path}: label {int(labels.max())} has no entry in "
                f"'class_names' ({len(names)} names)"
            )
    return FeatureSet(features.astype(np.float32), labels.astype(np.int32), paths_t, names)


def _multi_hot_labels(path, labels: np.ndarray, class_names) -> tuple[np.ndarray, tuple[str, ...]]:
    """Validates multi-hot ``labels`` [N, C] and the class names; returns uint8 labels, names."""
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise DatasetError(
            f"data.features: {path}: multi-hot 'labels' must be uint8/bool/int 0-1. Received: "
            f"dtype={labels.dtype}"
        )
    if not np.isin(labels, (0, 1)).all():
        raise DatasetError(
            f"data.features: {path}: multi-hot 'labels' [N, C] must hold only 0 and 1. "
            f"Received values in [{labels.min()}, {labels.max()}]"
        )
    empty = np.flatnonzero(labels.sum(axis=1) == 0)
    if empty.size:
        raise DatasetError(
            f"data.features: {path}: multi-hot 'labels' row {int(empty[0])} carries no label "
            f"({empty.size} such row(s)); expected at least one label per item"
        )
    columns = labels.shape[1]
    if class_names is None:
        names = tuple(f"class_{i}" for i in range(columns))
    else:
        names = tuple(str(c) for c in class_names)
        if len(names) != columns:
            raise DatasetError(
                f"data.features: {path}: multi-hot 'labels' has {columns} columns but "
                f"'class_names' has {len(names)} names; expected one name per column"
            )
    return labels.astype(np.uint8), names
