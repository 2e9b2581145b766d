"""SavedModel export for TF Serving: image bytes in, hash codes (and neighbours) out.

An export is a versioned SavedModel folder ``<export_dir>/<model_name>/<version>/`` (versions
1, 2, ... as TF Serving expects; an existing version is never overwritten). It is written to a
hidden temporary folder beside its final place and renamed when complete, so TF Serving (which
polls the model folder) never sees half an export.

Signatures (all take a batch; an empty batch gives empty outputs):

* ``serving_default``: ``image_bytes`` tf.string ``[b]`` (encoded JPEG, PNG, GIF, BMP or WebP) ->
  ``codes`` uint8 ``[b, bits]`` (0/1), ``packed_codes`` uint8 ``[b, bits/8]`` (MSB first, like
  ``np.packbits``), ``scores`` float32 ``[b, bits]`` (the sigmoid outputs).
* ``encode_images``: ``images`` float32 ``[b, H, W, N]`` in 0..255 (``N = input_bands``, RGB
  for 3) -> the same outputs.
* ``encode_pixels``: ``pixels`` uint8 ``[b, H, W, N]``, 8-bit tiles as the scene reader gives
  them (:meth:`hpsh_tf2.geo.raster.SceneReader.read_window`) -> the same outputs. Resized in the
  graph by :func:`hpsh_tf2.data.images.resize_image`, the one resize path of training, scene
  tiles and ``serving_default`` (identity at the model's input size), so
  ``encode_pixels(p) == encode_images(float(p))`` bit for bit.
* ``retrieve`` (when a database is embedded): ``image_bytes`` ``[b]`` and ``k`` int32 scalar
  (``1 <= k <= max_k``, fixed at export) -> ``indices``, ``labels``, ``distances`` (int32) and
  ``class_names``, ``paths`` (tf.string), all ``[b, k]``: the k nearest database items by Hamming
  distance, ties broken by database index (lower first). ``class_names`` is the item's label
  names joined by ``;`` (``"Forest;River"`` for a multi-label item, whose ``labels`` is -1).
* ``retrieve_pixels`` (when a database is embedded): ``pixels`` uint8 ``[b, H, W, N]`` and ``k``
  -> the outputs of ``retrieve``.

Multi-band models (``input_bands`` N other than 3, ``model.input_bands``): encoded image bytes
hold RGB only, so ``serving_default`` and ``retrieve`` are **not exported**; clients read the
query with the band settings the manifest records (``input_bands``, ``bands``, ``band_scale``:
``data.bands``, ``data.band_scale`` of the training config; :func:`hpsh_tf2.serving.export_reading`)
and send uint8 pixels to ``encode_pixels`` / ``retrieve_pixels``. Their warmup file holds one
synthetic grey tile sent to ``encode_pixels`` (and ``retrieve_pixels``).

Decoding, resizing and the backbone's normalisation run inside the graph and are the functions
of the training pipeline (:mod:`hpsh_tf2.data.images`, :mod:`hpsh_tf2.models.backbone`), so a
served image gets the code that evaluation gave it. TIFF is decoded by Pillow in training, which
a SavedModel cannot embed: TIFF bytes are rejected with an ``InvalidArgumentError`` (convert them
to PNG first; :func:`hpsh_tf2.serving.query_images` does this on the client side). WebP goes
through ``tf.io.decode_image`` both in training and here.

Before anything is decoded, each image's header is read with string ops
(:func:`hpsh_tf2.data.image_headers.check_image_bytes`: PNG IHDR, JPEG SOFn, GIF screen, BMP
DIB header, WebP VP8/VP8L/VP8X) and an image declaring more than ``max_pixels`` pixels is
refused, as is a JPEG without an end-of-image marker after its last scan (a truncated upload);
every such ``InvalidArgumentError`` names the batch positions.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from hpsh_tf2 import __version__
from hpsh_tf2.atomic import write_text_atomic
from hpsh_tf2.config import fingerprint
from hpsh_tf2.data import images as image_lib
from hpsh_tf2.data.image_headers import check_image_bytes
from hpsh_tf2.errors import ModelMismatchError
from hpsh_tf2.evaluation import relevance
from hpsh_tf2.models.backbone import get_backbone_spec, preprocess_images
from hpsh_tf2.ops.checks import check_bits
from hpsh_tf2.ops.codes import binarize, np_pack_codes, pack_codes
from hpsh_tf2.ops.hamming import hamming_topk

__all__ = [
    "MANIFEST_NAME",
    "MODELS_CONFIG_NAME",
    "WARMUP_FILE",
    "RetrievalDatabase",
    "export_saved_model",
    "next_version",
    "read_manifest",
    "remove_stale_exports",
    "summarize_export",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "hpsh_export.json"
"""The export manifest, inside each version folder."""
MODELS_CONFIG_NAME = "models.config"
"""The example TF Serving model config file, in the model folder."""
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
"""TF Serving's warmup file, relative to a version folder."""

_MANIFEST_FORMAT = "hpsh-export/1"
_TMP_PREFIX = ".tmp-export-"
_DEFAULT_WARMUP_K = 10


# --------------------------------------------------------------------------- database


@dataclass(frozen=True)
class RetrievalDatabase:
    """The searchable items embedded in an export's ``retrieve`` signature.

    Attributes:
        packed_codes: uint8 ``[N, bits/8]``, codes packed MSB first (``np.packbits`` order).
        labels: int32 ``[N]``, class index of each item; or multi-hot uint8 ``[N, C]``.
        paths: ``N`` image paths, relative to the dataset root (returned to clients as is).
        class_names: Name of each class index; must cover every label.

    The SavedModel holds nothing label-specific beyond each item's label *text*
    (:attr:`label_names`, ``"Forest;River"``), what ``retrieve`` returns as ``class_names``;
    its ``labels`` output is the class index of a single-label item and -1 for a multi-label
    one.
    """

    packed_codes: np.ndarray
    labels: np.ndarray
    paths: tuple[str, ...]
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        packed = np.asarray(self.packed_codes)
        labels = np.asarray(self.labels)
        if (
            packed.dtype != np.uint8
            or packed.ndim != 2
            or packed.shape[0] == 0
            or not packed.shape[1]
        ):
            raise ValueError(
                f"Received: packed_codes of dtype {packed.dtype} and shape {packed.shape}; "
                "expected a non-empty uint8 array [N, bits/8]"
            )
        paths = tuple(str(p) for p in self.paths)
        names = tuple(str(n) for n in self.class_names)
        if relevance.is_multi_hot(labels) and labels.shape == (packed.shape[0], len(names)):
            labels = relevance.check_labels(labels, "labels")
        elif labels.shape != (packed.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"Received: labels of dtype {labels.dtype} and shape {labels.shape}; "
                f"expected integers of shape ({packed.shape[0]},) or multi-hot "
                f"({packed.shape[0]}, {len(names)})"
            )
        if len(paths) != packed.shape[0]:
            raise ValueError(f"Received: {len(paths)} paths; expected {packed.shape[0]}")
        if labels.ndim == 1 and (labels.min() < 0 or labels.max() >= len(names)):
            raise ValueError(
                f"Received: labels in [{labels.min()}, {labels.max()}] with "
                f"{len(names)} class_names; expected labels in [0, {len(names) - 1}]"
            )
        object.__setattr__(self, "packed_codes", np.ascontiguousarray(packed))
        object.__setattr__(
            self, "labels", labels.astype(np.uint8 if labels.ndim == 2 else np.int32)
        )
        object.__setattr__(self, "paths", paths)
        object.__setattr__(self, "class_names", names)

    @classmethod
    def from_codes(
        cls,
        codes: np.ndarray,
        labels: np.ndarray,
        paths: Sequence[str],
        class_names: Sequence[str],
    ) -> RetrievalDatabase:
        """Builds a database from unpacked 0/1 codes ``[N, bits]`` (e.g. ``db_codes``)."""
        return cls(np_pack_codes(np.asarray(codes)), labels, tuple(paths), tuple(class_names))

    @property
    def size(self) -> int:
        """Number of items N."""
        return int(self.packed_codes.shape[0])

    @property
    def bits(self) -> int:
        """Code length (8 x bytes per code)."""
        return int(self.packed_codes.shape[1]) * 8

    @property
    def label_indices(self) -> np.ndarray:
        """int32 ``[N]``: the class index of each item, -1 for a multi-label item."""
        if self.labels.ndim == 2:
            return np.full(self.size, -1, np.int32)
        return self.labels

    @property
    def label_names(self) -> tuple[str, ...]:
        """Each item's label names joined by ``;`` (``relevance.label_text``)."""
        return tuple(relevance.label_text(row, self.class_names) for row in self.labels)


# --------------------------------------------------------------------------- graph


class _HashingModule(tf.Module):
    """The exported object: the Keras model, its input pipeline and the database."""

    def __init__(
        self,
        image_model: keras.Model,
        *,
        backbone: str,
        image_size: int,
        bits: int,
        database: RetrievalDatabase | None,
        max_k: int,
        max_pixels: int = 40_000_000,
        input_bands: int = 3,
    ) -> None:
        super().__init__(name="hpsh")
        self._bands = int(input_bands)
        self._max_k = max_k
        self._max_pixels = int(max_pixels)
        self.image_model = image_model
        self._backbone = backbone
        self._image_size = image_size
        self._bits = bits
        if database is not None:
            self.db_packed = tf.Variable(database.packed_codes, trainable=False, name="db_packed")
            self.db_labels = tf.Variable(database.label_indices, trainable=False, name="db_labels")
            self.db_label_names = tf.Variable(
                list(database.label_names), trainable=False, name="db_label_names"
            )
            self.db_paths = tf.Variable(list(database.paths), trainable=False, name="db_paths")
            self.class_names = tf.Variable(
                list(database.class_names), trainable=False, name="class_names"
            )
            # Defined only with a database: tf.saved_model.save traces every tf.function
            # attribute, and retrieve needs the database variables.
            if self._bands == 3:
                self.retrieve = tf.function(
                    self._retrieve,
                    input_signature=[
                        tf.TensorSpec([None], tf.string, name="image_bytes"),
                        tf.TensorSpec([], tf.int32, name="k"),
                    ],
                )
            self.retrieve_pixels = tf.function(
                self._retrieve_pixels,
                input_signature=[
                    tf.TensorSpec([None, None, None, self._bands], tf.uint8, name="pixels"),
                    tf.TensorSpec([], tf.int32, name="k"),
                ],
            )
        if self._bands == 3:  # tf.saved_model.save traces every tf.function attribute
            self.serve = tf.function(
                self._serve,
                input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
            )
        bands_spec = [None, None, None, self._bands]
        self.encode_images = tf.function(
            self._encode_images,
            input_signature=[tf.TensorSpec(bands_spec, tf.float32, name="images")],
        )
        self.encode_pixels = tf.function(
            self._encode_pixels,
            input_signature=[tf.TensorSpec(bands_spec, tf.uint8, name="pixels")],
        )

    def _decode_one(self, contents: tf.Tensor) -> tf.Tensor:
        # The training pipeline's decoder minus its Pillow (tf.py_function) TIFF branch, which a
        # SavedModel cannot hold; TIFF is rejected earlier by check_image_bytes.
        image = image_lib.decode_image(contents, allow_tiff=False)
        return image_lib.resize_image(image, self._image_size)

    def _decode_batch(self, image_bytes: tf.Tensor) -> tf.Tensor:
        with tf.control_dependencies(check_image_bytes(image_bytes, self._max_pixels)):
            image_bytes = tf.identity(image_bytes)
        spec = tf.TensorSpec([self._image_size, self._image_size, 3], tf.float32)
        return tf.map_fn(self._decode_one, image_bytes, fn_output_signature=spec)

    def _encode(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """Float 0..255 ``[b, size, size, N]`` -> codes, packed codes and scores."""
        inputs = preprocess_images(images, self._backbone)

        def forward() -> tf.Tensor:
            return tf.cast(self.image_model(inputs, training=False), tf.float32)

        # Some CPU kernels mis-handle a zero-sized batch, so the model only runs on b > 0.
        scores = tf.cond(
            tf.shape(images)[0] > 0, forward, lambda: tf.zeros([0, self._bits], tf.float32)
        )
        scores = tf.ensure_shape(scores, [None, self._bits])
        codes = binarize(scores)
        return {"codes": codes, "packed_codes": pack_codes(codes), "scores": scores}

    def _serve(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        """Encoded images -> codes (the ``serving_default`` signature)."""
        return self._encode(self._decode_batch(image_bytes))

    def _encode_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """Float images in 0..255 -> codes (resized to the model's input size)."""
        return self._encode(image_lib.resize_image(images, self._image_size))

    def _encode_pixels(self, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        """uint8 tiles -> codes: the same resize, then the same encoding as ``encode_images``."""
        return self._encode(image_lib.resize_image(pixels, self._image_size))

    def _retrieve(self, image_bytes: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
        """Encoded images -> their k nearest database items (Hamming, ties by index)."""
        return self._nearest(lambda: self.serve(image_bytes)["packed_codes"], k)

    def _retrieve_pixels(self, pixels: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
        """uint8 tiles -> their k nearest database items (as ``retrieve``)."""
        return self._nearest(lambda: self._encode_pixels(pixels)["packed_codes"], k)

    def _nearest(self, encode: Any, k: tf.Tensor) -> dict[str, tf.Tensor]:
        """The k nearest database items of the codes ``encode()`` gives, after checking k."""
        checks = [
            tf.debugging.Assert(
                (k >= 1) & (k <= self._max_k),
                ["k: received", k, f"; expected 1 <= k <= max_k = {self._max_k}"],
            )
        ]
        with tf.control_dependencies(checks):
            packed = tf.identity(encode())
        # hamming_topk needs a static k: search max_k and keep the first k, which is the
        # top-k since results are sorted by (distance, index). No XLA: TF Serving may lack it.
        indices, distances = hamming_topk(packed, self.db_packed, k=self._max_k, jit_compile=False)
        indices = tf.cast(indices[:, :k], tf.int32)
        labels = tf.gather(self.db_labels, indices)
        return {
            "indices": indices,
            "labels": labels,
            "class_names": tf.gather(self.db_label_names, indices),
            "paths": tf.gather(self.db_paths, indices),
            "distances": tf.cast(distances[:, :k], tf.int32),
        }

    def signatures(self) -> dict[str, Any]:
        """The concrete functions to save, by signature name."""
        signatures = {
            "encode_images": self.encode_images.get_concrete_function(),
            "encode_pixels": self.encode_pixels.get_concrete_function(),
        }
        if self._bands == 3:  # encoded image bytes hold RGB only
            signatures["serving_default"] = self.serve.get_concrete_function()
        if hasattr(self, "db_packed"):
            signatures["retrieve_pixels"] = self.retrieve_pixels.get_concrete_function()
            if self._bands == 3:
                signatures["retrieve"] = self.retrieve.get_concrete_function()
        return signatures


# --------------------------------------------------------------------------- files


def next_version(base: str | os.PathLike[str]) -> int:
    """The next free TF Serving version number under a model folder.

    Args:
        base: ``<export_dir>/<model_name>`` (need not exist).

    Returns:
        1 + the largest integer-named sub-folder, or 1 when there is none.
    """
    base = Path(base)
    if not base.is_dir():
        return 1
    versions = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def _config_hash(config: Mapping[str, Any] | Any | None) -> str | None:
    if config is None:
        return None
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, Mapping):
        raise TypeError(
            f"Received: config of type {type(config).__name__}; expected a mapping or a dataclass"
        )
    return fingerprint(config)


def _models_config_text(model_name: str) -> str:
    return (
        "# TF Serving model config (--model_config_file); base_path is the model folder as\n"
        "# mounted inside the container (docker run -v <export_dir>:/models ...).\n"
        "model_config_list {\n"
        "  config {\n"
        f'    name: "{model_name}"\n'
        f'    base_path: "/models/{model_name}"\n'
        '    model_platform: "tensorflow"\n'
        "    model_version_policy { latest { num_versions: 1 } }\n"
        "  }\n"
        "}\n"
    )


def _read_warmup_image(item: bytes | str | os.PathLike[str]) -> bytes:
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, (str, os.PathLike)):
        return Path(item).read_bytes()
    raise TypeError(
        f"Received: warmup image of type {type(item).__name__}; expected bytes or a file path"
    )


def _synthetic_jpeg(image_size: int) -> bytes:
    grey = tf.fill([image_size, image_size, 3], tf.constant(128, tf.uint8))
    return bytes(tf.io.encode_jpeg(grey).numpy())


def _warmup_records(
    images: Sequence[bytes],
    *,
    model_name: str,
    with_retrieve: bool,
    k: int,
    pixels: np.ndarray | None = None,
) -> list[bytes] | None:
    """Serialized PredictionLog protos, or None when tensorflow-serving-api is missing.

    With ``pixels`` (a multi-band export) the requests go to ``encode_pixels`` (and
    ``retrieve_pixels``) instead of the byte signatures.
    """
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError:
        return None
    if pixels is None:
        names, key = ("serving_default", "retrieve"), "image_bytes"
        value = tf.make_tensor_proto(list(images), tf.string)
    else:
        names, key = ("encode_pixels", "retrieve_pixels"), "pixels"
        value = tf.make_tensor_proto(pixels, tf.uint8)
    requests = []
    for signature in names if with_retrieve else names[:1]:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature
        request.inputs[key].CopyFrom(value)
        if signature in ("retrieve", "retrieve_pixels"):
            request.inputs["k"].CopyFrom(tf.make_tensor_proto(k, tf.int32))
        requests.append(request)
    return [
        prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        ).SerializeToString()
        for request in requests
    ]


def _write_warmup(version_dir: Path, records: list[bytes]) -> None:
    path = version_dir / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def _validate_args(
    image_model: Any,
    backbone: str,
    image_size: Any,
    bits: Any,
    model_name: Any,
    input_bands: Any = 3,
) -> None:
    if not isinstance(image_model, keras.Model):
        raise TypeError(
            f"Received: image_model of type {type(image_model).__name__}; expected a keras.Model"
        )
    get_backbone_spec(backbone)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"Received: image_size={image_size!r}; expected a positive integer")
    check_bits(bits)
    if isinstance(input_bands, bool) or not isinstance(input_bands, int) or input_bands < 1:
        raise ValueError(f"Received: input_bands={input_bands!r}; expected a positive integer")
    in_bands = image_model.input_shape[-1]
    if in_bands != input_bands:
        raise ModelMismatchError(
            f"Received: input_bands={input_bands} for an image_model taking {in_bands} bands; "
            "expected equal (model.input_bands)"
        )
    out_bits = image_model.output_shape[-1]
    if out_bits != bits:
        raise ModelMismatchError(
            f"Received: bits={bits} for an image_model with {out_bits} outputs; expected equal"
        )
    if (
        not isinstance(model_name, str)
        or not model_name
        or model_name.startswith(".")
        or Path(model_name).name != model_name
    ):
        raise ValueError(
            f"Received: model_name={model_name!r}; expected a plain folder name "
            "(no path separators, not starting with '.')"
        )


def _resolve_class_names(
    class_names: Sequence[str], database: RetrievalDatabase | None, bits: int
) -> tuple[str, ...]:
    names = tuple(str(n) for n in class_names)
    if database is None:
        return names
    if database.bits != bits:
        raise ModelMismatchError(
            f"Received: a database of {database.bits}-bit codes for a {bits}-bit model; "
            "expected equal code lengths"
        )
    if names and names != database.class_names:
        raise ModelMismatchError(
            f"Received: class_names={list(names)} differing from the database's "
            f"{list(database.class_names)}; expected the same names (or none)"
        )
    return database.class_names


# --------------------------------------------------------------------------- export


@dataclass(frozen=True)
class _ExportPlan:
    model_name: str
    version: int
    backbone: str
    image_size: int
    bits: int
    class_names: tuple[str, ...]
    database_size: int
    max_k: int
    config_hash: str | None
    warmup: tuple[bytes, ...]
    provenance: dict | None = None
    input_bands: int = 3
    bands: list[int] | None = None
    band_scale: str | list[str] | None = None


def _build_version(module: _HashingModule, plan: _ExportPlan, target: Path) -> dict[str, Any]:
    """Writes the SavedModel, warmup file and manifest into ``target``; returns the manifest."""
    signatures = module.signatures()
    tf.saved_model.save(module, str(target), signatures=signatures)
    grey = None
    if plan.input_bands != 3:
        grey = np.full((1, plan.image_size, plan.image_size, plan.input_bands), 128, np.uint8)
    records = _warmup_records(
        plan.warmup,
        model_name=plan.model_name,
        with_retrieve="retrieve_pixels" in signatures,
        k=min(_DEFAULT_WARMUP_K, plan.max_k),
        pixels=grey,
    )
    if not plan.warmup:
        records = None
        warmup_note = "disabled (no warmup images requested)"
    elif records is None:
        warmup_note = (
            "skipped: tensorflow-serving-api is not installed (pip install hpsh-tf2[serving])"
        )
        logger.warning("No TF Serving warmup file written (%s)", warmup_note)
    else:
        _write_warmup(target, records)
        warmup_note = f"{len(records)} PredictionLog records in {WARMUP_FILE.as_posix()}"
    manifest = {
        "format": _MANIFEST_FORMAT,
        "model_name": plan.model_name,
        "version": plan.version,
        "bits": plan.bits,
        "backbone": plan.backbone,
        "image_size": plan.image_size,
        "input_bands": plan.input_bands,
        "bands": plan.bands,
        "band_scale": plan.band_scale,
        "class_names": list(plan.class_names),
        "database_size": plan.database_size,
        "max_k": plan.max_k,
        "config_hash": plan.config_hash,
        "provenance": plan.provenance,
        "signatures": sorted(signatures),
        "warmup_requests": 0 if records is None else len(records),
        "warmup": warmup_note,
        "tensorflow": tf.__version__,
        "hpsh_tf2": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (target / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _publish(tmp_dir: Path, final_dir: Path) -> None:
    if final_dir.exists():
        raise FileExistsError(
            f"export version folder {final_dir} appeared during the export (a concurrent "
            "export?); nothing was overwritten"
        )
    os.rename(tmp_dir, final_dir)


def export_saved_model(
    *,
    image_model: keras.Model,
    backbone: str,
    image_size: int,
    bits: int,
    export_dir: str | os.PathLike[str],
    model_name: str,
    database: RetrievalDatabase | None = None,
    warmup_images: Sequence[bytes | str | os.PathLike[str]] | None = None,
    class_names: Sequence[str] = (),
    config: Mapping[str, Any] | Any | None = None,
    max_k: int = 100,
    max_pixels: int = 40_000_000,
    provenance: Mapping[str, Any] | None = None,
    input_bands: int = 3,
    bands: Sequence[int] | None = None,
    band_scale: str | Sequence[str] | None = None,
) -> Path:
    """Exports the image hashing model as a new TF Serving version.

    Args:
        image_model: Preprocessed images ``[b, S, S, N]`` -> sigmoid scores ``[b, bits]``
            (:func:`hpsh_tf2.models.head.build_image_hash_model`), ``N = input_bands``.
        backbone: Backbone name; selects the in-graph preprocessing.
        image_size: Model input side S; inputs are resized to it in the graph (bilinear).
        bits: Code length, a positive multiple of 8, equal to the model's output width.
        export_dir: Base folder; the export goes to ``<export_dir>/<model_name>/<version>``.
        model_name: Model name for TF Serving (a plain folder name).
        database: Items to search; adds the ``retrieve`` signature.
        warmup_images: Encoded images (bytes or file paths; JPEG/PNG/GIF/BMP) written as TF
            Serving warmup requests. ``None``: one synthetic grey JPEG; an empty sequence:
            no warmup file. With ``input_bands`` other than 3, any non-empty value means one
            synthetic grey tile sent to ``encode_pixels``.
        class_names: Class names for the manifest (taken from ``database`` when given).
        config: The run configuration (mapping or dataclass); its SHA-256 goes to the manifest.
        max_k: Largest ``k`` the ``retrieve`` signature accepts (capped at the database size);
            every call searches this many neighbours and keeps the first ``k``.
        max_pixels: The served graph refuses an image whose header declares more pixels
            (width x height), before decoding it (config ``export.max_pixels``).
        provenance: What the exported model was made from (fingerprints), stored as is in
            the manifest so that a later run can tell whether the export is up to date.
        input_bands: Bands the model takes (``model.input_bands``). Other than 3, the byte
            signatures are not exported (see the module docstring).
        bands: ``data.bands`` the model was trained with, recorded in the manifest so that
            readers of the export read queries and scene tiles the same way.
        band_scale: ``data.band_scale``, recorded likewise.

    Returns:
        The new version folder.

    Raises:
        ValueError, TypeError: Invalid arguments (the message names the argument).
        tf.errors.InvalidArgumentError: A warmup image cannot be decoded.
        FileExistsError: The version folder appeared concurrently (nothing is overwritten).
    """
    _validate_args(image_model, backbone, image_size, bits, model_name, input_bands)
    for name, value in (("max_k", max_k), ("max_pixels", max_pixels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Received: {name}={value!r}; expected a positive integer")
    max_k = min(max_k, database.size) if database is not None else 0
    names = _resolve_class_names(class_names, database, bits)
    if warmup_images is None:
        warmup = (_synthetic_jpeg(image_size),)
    elif input_bands != 3:
        warmup = (b"",) if len(warmup_images) else ()
    else:
        warmup = tuple(_read_warmup_image(item) for item in warmup_images)
    base = Path(export_dir) / model_name
    plan = _ExportPlan(
        model_name=model_name,
        version=next_version(base),
        backbone=backbone,
        image_size=image_size,
        bits=bits,
        class_names=names,
        database_size=0 if database is None else database.size,
        max_k=max_k,
        config_hash=_config_hash(config),
        warmup=warmup,
        provenance=None if provenance is None else json.loads(json.dumps(dict(provenance))),
        input_bands=input_bands,
        bands=None if bands is None else [int(b) for b in bands],
        band_scale=band_scale
        if band_scale is None or isinstance(band_scale, str)
        else [str(r) for r in band_scale],
    )
    module = _HashingModule(
        image_model,
        backbone=backbone,
        image_size=image_size,
        bits=bits,
        database=database,
        max_k=max_k,
        max_pixels=max_pixels,
        input_bands=input_bands,
    )
    if warmup and input_bands == 3:
        module.serve(tf.constant(list(warmup)))  # fails early on undecodable warmup images
    base.mkdir(parents=True, exist_ok=True)
    remove_stale_exports(base)
    tmp_dir = base / f"{_TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
    try:
        manifest = _build_version(module, plan, tmp_dir)
        _publish(tmp_dir, base / str(plan.version))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    write_text_atomic(base / MODELS_CONFIG_NAME, _models_config_text(model_name))
    logger.debug("%s", summarize_export(manifest, base / str(plan.version)))
    return base / str(plan.version)


_LEGACY_TMP_AGE_S = 24 * 3600


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_exports(base: str | os.PathLike[str]) -> list[Path]:
    """Removes the temporary folders that killed exports left in a model folder.

    An export writes ``.tmp-export-<pid>-<hex>`` and renames it when complete; ``kill -9`` leaves
    it behind (a full SavedModel, often 100 MB). A folder is stale when its process is gone; one
    named without a PID (older versions) when it is older than a day. Folders of a running
    export are kept.

    Args:
        base: The model folder ``<export_dir>/<model_name>``.

    Returns:
        The removed folders.
    """
    base = Path(base)
    removed = []
    if not base.is_dir():
        return removed
    for folder in base.glob(f"{_TMP_PREFIX}*"):
        if not folder.is_dir() or folder.is_symlink():
            continue
        pid_text = folder.name[len(_TMP_PREFIX) :].split("-", 1)[0]
        if "-" in folder.name[len(_TMP_PREFIX) :] and pid_text.isdigit():
            stale = int(pid_text) != os.getpid() and not _pid_alive(int(pid_text))
        else:
            try:
                stale = (datetime.now().timestamp() - folder.stat().st_mtime) > _LEGACY_TMP_AGE_S
            except OSError:
                continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            logger.info("export: removed %s, left by an interrupted export", folder)
    return removed


def read_manifest(version_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads ``hpsh_export.json`` of a version folder."""
    path = Path(version_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST_NAME} in {version_dir}; is it an hpsh export?")
    return json.loads(path.read_text(encoding="utf-8"))


def summarize_export(manifest: Mapping[str, Any], version_dir: str | os.PathLike[str]) -> str:
    """A short human-readable summary of an export (for the CLI)."""
    lines = [
        f"exported {manifest['model_name']} version {manifest['version']} to {version_dir}",
        f"  model: {manifest['backbone']} at {manifest['image_size']} px, {manifest['bits']} bits"
        + (
            f", {manifest['input_bands']} bands (data.bands {manifest.get('bands')}, "
            f"data.band_scale {manifest.get('band_scale')!r})"
            if manifest.get("input_bands", 3) != 3
            else ""
        ),
        f"  signatures: {', '.join(manifest['signatures'])}",
        f"  database: {manifest['database_size']} items, {len(manifest['class_names'])} classes",
        f"  warmup: {manifest['warmup']}",
    ]
    return "\n".join(lines)
