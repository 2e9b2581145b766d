"""Encode image files into packed codes through an export's own ``serving_default`` signature.

The index is filled with exactly the codes TF Serving would return: the bytes of each file go
through the SavedModel's decode, resize, backbone preprocessing and hash head. TIFF, which the
SavedModel cannot decode, is converted on the client like
:func:`hpsh_tf2.serving.request_image_bytes` does (a GeoTIFF with the band settings the
export records, :func:`hpsh_tf2.serving.export_reading`). A batch that fails (one undecodable
file) is split and retried so that only the bad files are left out, each with its reason.

A multi-band export (``input_bands`` other than 3) has no byte signature: each file is read
with the export's band settings (:func:`hpsh_tf2.serving.read_query_pixels`) and its uint8
pixels go to ``encode_pixels``, the signature scene tiles use too.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from hpsh_tf2.data.images import BandReading, decode_error
from hpsh_tf2.errors import ModelMismatchError
from hpsh_tf2.export import MANIFEST_NAME
from hpsh_tf2.geo.raster import BandError, is_geotiff
from hpsh_tf2.serving import (
    export_reading,
    load_exported,
    read_query_pixels,
    request_image_bytes,
    resolve_version_dir,
)

__all__ = [
    "EncodeResult",
    "ModelRecord",
    "SavedModelEncoder",
    "check_same_model",
    "model_record",
]


@dataclass(frozen=True)
class ModelRecord:
    """What identifies the model an index was built with.

    Attributes:
        model_id: SHA-256 (16 hex digits) of the export's ``hpsh_export.json`` manifest, which
            holds the model name, version, config hash, bits and creation time. Copying an
            export elsewhere keeps it; re-exporting (even the same weights) changes it.
        export_path: The version folder, as given when the index was built (informative).
        model_name: The export's model name.
        version: The export's version number.
        config_hash: SHA-256 of the run config that produced the export (or None).
        bits: Code length.
        backbone: Backbone name.
        image_size: Model input side in pixels.
    """

    model_id: str
    export_path: str
    model_name: str
    version: int
    config_hash: str | None
    bits: int
    backbone: str
    image_size: int

    def to_json(self) -> str:
        """The record as compact JSON (stored in the collection's description)."""
        return json.dumps(self.__dict__, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ModelRecord:
        """Parses :meth:`to_json` output."""
        return cls(**json.loads(text))

    def describe(self) -> str:
        """One line naming the model."""
        return (
            f"{self.model_name} v{self.version} ({self.bits} bits, {self.backbone} at "
            f"{self.image_size} px, config {str(self.config_hash)[:12]}, id {self.model_id}) "
            f"from {self.export_path}"
        )


def model_record(model_dir: str | os.PathLike[str]) -> ModelRecord:
    """The :class:`ModelRecord` of an export (model folder -> its highest version).

    Raises:
        FileNotFoundError: No SavedModel, or no ``hpsh_export.json`` manifest.
    """
    version_dir = resolve_version_dir(model_dir)
    manifest_path = version_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"Received: model={str(model_dir)!r} without {MANIFEST_NAME}; expected an export "
            "written by `python cli.py export` (the index records the model it was built with)"
        )
    raw = manifest_path.read_bytes()
    manifest = json.loads(raw)
    return ModelRecord(
        model_id=hashlib.sha256(raw).hexdigest()[:16],
        export_path=str(Path(os.path.abspath(version_dir))),
        model_name=str(manifest["model_name"]),
        version=int(manifest["version"]),
        config_hash=manifest.get("config_hash"),
        bits=int(manifest["bits"]),
        backbone=str(manifest["backbone"]),
        image_size=int(manifest["image_size"]),
    )


@dataclass(frozen=True)
class EncodeResult:
    """Codes of a list of files.

    Attributes:
        packed: ``uint8`` ``[n_ok, bits / 8]`` packed codes of the files that encoded.
        ok: Positions (in the input list) of the files that encoded, in order.
        bad: ``(position, reason)`` of the files that could not be read or decoded.
    """

    packed: np.ndarray
    ok: tuple[int, ...]
    bad: tuple[tuple[int, str], ...]


def _error_reason(err: Exception) -> str:
    message = getattr(err, "message", None) or str(err)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    reason = lines[-1] if lines else type(err).__name__
    return reason.split(" [Op:")[0][:300]


def _decode_reason(
    path: str | os.PathLike[str], tf_reason: str, reading: BandReading | None = None
) -> str:
    """``cannot decode <file>: <cause>``, the cause from Pillow's full decode when it fails
    (TF's decoders say only ``Assert/AssertGuard``), else TF's own last line."""
    try:
        error = decode_error(os.fspath(path), reading)
    except BandError as err:
        return str(err)
    cause = error.reason if error is not None else f"the SavedModel cannot decode it ({tf_reason})"
    return f"cannot decode {os.fspath(path)}: {cause}"


class SavedModelEncoder:
    """Loads an export once and encodes image files with its ``serving_default`` signature
    (or, for a multi-band export, ``encode_pixels``).

    Args:
        model_dir: Model folder (highest version used) or version folder of an hpsh export.
        reading: How GeoTIFF files are read (default: the export's recorded band settings,
            :func:`hpsh_tf2.serving.export_reading`).
    """

    def __init__(
        self, model_dir: str | os.PathLike[str], reading: BandReading | None = None
    ) -> None:
        self.record = model_record(model_dir)
        self.reading = reading if reading is not None else export_reading(model_dir)
        self._tf = tf
        loaded = load_exported(model_dir)
        signatures = loaded.signatures
        if "serving_default" not in signatures and "encode_pixels" not in signatures:
            raise ValueError(
                f"Received: model={str(model_dir)!r} without a 'serving_default' or "
                "'encode_pixels' signature; expected an hpsh export"
            )
        self._loaded = loaded  # keeps the variables alive
        self._serve = signatures.get("serving_default")

    @property
    def bits(self) -> int:
        """Code length of the model."""
        return self.record.bits

    def warm_up(self) -> None:
        """Calls the signature once on a small generated PNG.

        The first call of a loaded SavedModel builds and optimises its graph (about 1.4 s for
        InceptionV3 on 2 cores); doing it early lets that overlap other start-up work.
        """
        if self._serve is None:
            self.encode_pixels(np.zeros((1, 8, 8, self.reading.input_bands), np.uint8))
            return
        pixels = self._tf.zeros([8, 8, 3], self._tf.uint8)
        self.encode_bytes([self._tf.io.encode_png(pixels).numpy()])

    def encode_pixels(self, tiles: np.ndarray) -> np.ndarray:
        """Packed codes ``uint8 [b, bits / 8]`` of ``uint8 [b, h, w, N]`` tiles (one call).

        Through ``encode_pixels``, or ``encode_images`` of the same values as float for an
        export written before ``encode_pixels`` existed (the same resize and model: equal).
        """
        if len(tiles) == 0:
            return np.zeros((0, self.bits // 8), np.uint8)
        signatures = self._loaded.signatures
        if "encode_pixels" in signatures:
            out = signatures["encode_pixels"](pixels=self._tf.constant(tiles, self._tf.uint8))
        else:
            out = signatures["encode_images"](images=self._tf.constant(tiles, self._tf.float32))
        return np.asarray(out["packed_codes"].numpy(), np.uint8)

    def encode_bytes(self, images: Sequence[bytes]) -> np.ndarray:
        """Packed codes ``uint8 [len(images), bits / 8]`` of encoded images (one call).

        Raises:
            tf.errors.OpError: An image cannot be decoded.
        """
        if not images:
            return np.zeros((0, self.bits // 8), np.uint8)
        out = self._serve(image_bytes=self._tf.constant(list(images), self._tf.string))
        return np.asarray(out["packed_codes"].numpy(), np.uint8)

    def encode_files(self, paths: Sequence[str | os.PathLike[str]]) -> EncodeResult:
        """Reads and encodes image files; unreadable or undecodable ones are reported, not raised.

        Args:
            paths: Image files (JPEG, PNG, GIF, BMP as they are; TIFF converted to PNG here;
                for a multi-band export, GeoTIFFs read with its band settings).

        Returns:
            The :class:`EncodeResult`.

        Raises:
            BandError: A GeoTIFF does not fit the band settings (a config error, not a bad
                file: the message names the file and the key).
        """
        if self._serve is None:
            return self._encode_pixel_files(paths)
        data: list[bytes] = []
        positions: list[int] = []
        bad: list[tuple[int, str]] = []
        for position, path in enumerate(paths):
            try:
                contents = request_image_bytes(path, self.reading)
            except BandError:
                raise
            except (OSError, ValueError) as err:
                bad.append((position, _error_reason(err)))
                continue
            if not contents:
                bad.append((position, f"cannot decode {os.fspath(path)}: empty file"))
                continue
            data.append(contents)
            positions.append(position)
        packed, ok_local, bad_local = self._encode_isolating(data)
        bad.extend(
            (positions[i], _decode_reason(paths[positions[i]], reason, self.reading))
            for i, reason in bad_local
        )
        return EncodeResult(
            packed=packed,
            ok=tuple(positions[i] for i in ok_local),
            bad=tuple(sorted(bad)),
        )

    def _encode_pixel_files(self, paths: Sequence[str | os.PathLike[str]]) -> EncodeResult:
        """:meth:`encode_files` for an export without byte signature: pixels, then
        ``encode_pixels`` (one call per image size)."""
        pixels: dict[int, np.ndarray] = {}
        bad: list[tuple[int, str]] = []
        for position, path in enumerate(paths):
            try:
                pixels[position] = read_query_pixels(path, self.reading)
            except BandError as err:
                if is_geotiff(path):
                    raise
                bad.append((position, str(err)))
            except (OSError, ValueError) as err:
                bad.append((position, _error_reason(err)))
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for position, array in pixels.items():
            by_shape.setdefault(array.shape, []).append(position)
        codes: dict[int, np.ndarray] = {}
        for group in by_shape.values():
            packed = self.encode_pixels(np.stack([pixels[p] for p in group]))
            codes.update(zip(group, packed))
        ok = tuple(sorted(codes))
        packed = np.stack([codes[p] for p in ok]) if ok else np.zeros((0, self.bits // 8))
        return EncodeResult(packed=np.asarray(packed, np.uint8), ok=ok, bad=tuple(sorted(bad)))

    def _encode_isolating(
        self, data: list[bytes]
    ) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
        """Encodes ``data``; when the batch fails, halves it until the bad items are found."""
        try:
            return self.encode_bytes(data), list(range(len(data))), []
        except self._tf.errors.OpError as err:
            if len(data) == 1:
                return np.zeros((0, self.bits // 8), np.uint8), [], [(0, _error_reason(err))]
        middle = len(data) // 2
        parts = []
        for offset, chunk in ((0, data[:middle]), (middle, data[middle:])):
            packed, ok, bad = self._encode_isolating(chunk)
            parts.append((packed, [offset + i for i in ok], [(offset + i, r) for i, r in bad]))
        return (
            np.concatenate([p[0] for p in parts]),
            parts[0][1] + parts[1][1],
            parts[0][2] + parts[1][2],
        )


def check_same_model(stored: ModelRecord, given: ModelRecord, *, where: str) -> None:
    """Raises :class:`ModelMismatchError` unless both records name the same export.

    Args:
        stored: The record kept in the index.
        given: The record of the model offered now.
        where: The index (URI and collection), for the message.
    """
    if stored.model_id == given.model_id and stored.bits == given.bits:
        return
    raise ModelMismatchError(
        f"index {where} was built with model {stored.describe()}; received model "
        f"{given.describe()}. Codes of different models are not comparable: use the same "
        "export (--model), or build a new index (another index.collection or index.uri)"
    )
