"""Using an export: load it, query it, and talk to TF Serving (REST and gRPC requests).

* :func:`load_exported` / :func:`query_images`: in-process retrieval with the ``retrieve``
  signature of an export (what ``python cli.py query`` runs).
* :func:`make_predict_request`, :func:`parse_predict_response`, :func:`predict_rest`: TF Serving's
  REST predict API (``POST /v1/models/<name>[/versions/<v>]:predict``), images sent as
  ``{"b64": ...}``.
* :func:`make_grpc_request`: a ``PredictRequest`` proto for TF Serving's gRPC
  ``PredictionService`` (needs the optional ``tensorflow-serving-api`` package).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image

from hpsh_tf2.data.images import BandReading, is_tiff, load_image_bands, load_image_rgb
from hpsh_tf2.errors import DamagedFileError, DatasetError, ModelMismatchError
from hpsh_tf2.evaluation.plots import save_retrieval_grid
from hpsh_tf2.export import MANIFEST_NAME, read_manifest
from hpsh_tf2.geo.raster import BandError, is_geotiff
from hpsh_tf2.saved_files import READ_ERRORS, saved_model_damage, short_reason

__all__ = [
    "OUTPUT_DTYPES",
    "Neighbour",
    "export_reading",
    "format_neighbours",
    "load_exported",
    "make_grpc_request",
    "make_pixels_request",
    "make_predict_request",
    "parse_predict_response",
    "predict_rest",
    "query_images",
    "read_query_pixels",
    "request_image_bytes",
    "resolve_version_dir",
    "rest_predict_url",
    "save_query_grid",
]

logger = logging.getLogger(__name__)

OUTPUT_DTYPES: dict[str, np.dtype] = {
    "codes": np.dtype(np.uint8),
    "packed_codes": np.dtype(np.uint8),
    "scores": np.dtype(np.float32),
    "indices": np.dtype(np.int32),
    "labels": np.dtype(np.int32),
    "distances": np.dtype(np.int32),
}
"""dtypes of the export's numeric outputs, restored by :func:`parse_predict_response`."""

# --------------------------------------------------------------------------- loading


def resolve_version_dir(path: str | os.PathLike[str]) -> Path:
    """A SavedModel folder: ``path`` itself, or its highest integer-named version.

    Raises:
        FileNotFoundError: No SavedModel at ``path`` nor in a version sub-folder.
        DamagedFileError: The highest version holds files but no ``saved_model.pb`` (deleted,
            or an interrupted copy); an older version is not used silently.
    """
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = (
        [p for p in path.iterdir() if p.is_dir() and p.name.isdigit()] if path.is_dir() else []
    )
    versions = [p for p in versions if (p / "saved_model.pb").is_file() or any(p.iterdir())]
    if not versions:
        raise FileNotFoundError(
            f"Received: model={str(path)!r}; expected a SavedModel folder or a model folder "
            "with integer version sub-folders (<export_dir>/<model_name>)"
        )
    return max(versions, key=lambda p: int(p.name))


def load_exported(path: str | os.PathLike[str]) -> Any:
    """Loads an export (a model folder -> its highest version) with ``tf.saved_model.load``.

    Every reader of an export (``query``, ``index build``, ``evaluate --saved-model``) loads
    through here, so a damaged export is named the same way everywhere.

    Raises:
        FileNotFoundError: No SavedModel at ``path``.
        DamagedFileError: ``saved_model.pb`` is missing or corrupt, or ``variables/`` is
            truncated (one line naming the version folder and the file).
    """
    return _load_version(resolve_version_dir(path))


def _load_version(version_dir: Path) -> Any:
    """``tf.saved_model.load`` of one version folder, after :func:`saved_model_damage`."""
    damage = saved_model_damage(version_dir)
    if damage is None:
        try:
            return tf.saved_model.load(str(version_dir))
        except (*READ_ERRORS, OSError) as err:
            damage = f"loading failed: {short_reason(err)}"
    raise DamagedFileError(
        f"export {version_dir} is damaged: {damage}; export again (python cli.py export writes "
        f"a new version) or copy the folder again, or remove {version_dir} to use the previous "
        "version"
    )


def export_reading(
    model: str | os.PathLike[str],
    *,
    bands: Sequence[int] | None = None,
    band_scale: str | Sequence[str] | None = None,
) -> BandReading:
    """How an export's inputs are read: the ``input_bands``, ``bands`` and ``band_scale`` its
    manifest records (``model.input_bands``, ``data.bands``, ``data.band_scale`` of the
    training config). An export without them (older versions, or a model trained on JPEGs)
    reads 3-band RGB as before.

    Args:
        model: Model folder (highest version) or version folder.
        bands: ``data.bands`` of the config now in use: fills in when the export records none;
            one that differs from the recorded value is refused.
        band_scale: ``data.band_scale`` of the config now in use (likewise).

    Raises:
        BandError: ``bands`` or ``band_scale`` differs from what the export records.
    """
    version_dir = resolve_version_dir(model)
    manifest = read_manifest(version_dir) if (version_dir / MANIFEST_NAME).is_file() else {}
    values = {}
    for key, given in (("bands", bands), ("band_scale", band_scale)):
        recorded = manifest.get(key)
        if given is not None and not isinstance(given, str):
            given = [int(v) for v in given] if key == "bands" else [str(v) for v in given]
        if recorded is not None and given is not None and recorded != given:
            raise BandError(
                f"Received: data.{key}={given!r} for export {version_dir}, which was trained "
                f"with data.{key}={recorded!r}; expected the same (or unset)"
            )
        value = recorded if recorded is not None else given
        values[key] = value if value is None or isinstance(value, str) else tuple(value)
    return BandReading(
        bands=values["bands"],
        band_scale=values["band_scale"],
        input_bands=int(manifest.get("input_bands", 3)),
    )


# --------------------------------------------------------------------------- query


@dataclass(frozen=True)
class Neighbour:
    """One retrieved database item.

    Attributes:
        rank: 1-based position in the ranking.
        distance: Hamming distance to the query code.
        label: Class index of the item (-1 for a multi-label item, or an index hit).
        class_name: The item's label names joined by ``;`` (``"Forest;River"``).
        path: Image path as stored in the export (relative to the dataset root).
        index: Position of the item in the export's database.
    """

    rank: int
    distance: int
    label: int
    class_name: str
    path: str
    index: int = -1


def _check_query_file(path: Path) -> None:
    if path.is_dir():
        raise DatasetError(
            f"query image {str(path)!r} is a folder; expected an image file (pass --image once "
            "per file)"
        )


def read_query_pixels(
    path: str | os.PathLike[str], reading: BandReading | None = None
) -> np.ndarray:
    """uint8 ``[H, W, N]`` pixels of a query file for ``encode_pixels`` / ``retrieve_pixels``.

    The training pipeline's reader (:func:`hpsh_tf2.data.images.load_image_bands`): with an
    active ``reading`` a GeoTIFF is read by the scene reader with its bands and scale, so a
    tile saved as GeoTIFF gets the pixels (and the code) of the same tile read from its scene.

    Raises:
        DatasetError: ``path`` is a folder or not a readable image (named).
        BandError: The band settings do not fit the file.
    """
    path = Path(path)
    _check_query_file(path)
    return load_image_bands(path, reading)


def request_image_bytes(path: str | os.PathLike[str], reading: BandReading | None = None) -> bytes:
    """Bytes of an image file as the export's byte signatures accept them.

    JPEG, PNG, GIF, BMP and WebP files are sent as they are (the SavedModel decodes them exactly
    like the training pipeline). TIFF, which the SavedModel cannot decode, is decoded here with
    the pipeline's reader and re-encoded as lossless PNG, so it gets the same pixels: Pillow,
    or with an active 3-band ``reading`` the scene reader (:func:`read_query_pixels`).

    Raises:
        DatasetError: ``path`` is missing, a folder or unreadable (the message names it).
        ModelMismatchError: ``reading`` takes other than 3 bands (no byte signature).
    """
    path = Path(path)
    if reading is not None and reading.input_bands != 3:
        raise ModelMismatchError(
            f"query image {str(path)!r}: the export takes {reading.input_bands} bands, which "
            "encoded image bytes cannot hold; expected its encode_pixels signature "
            "(read_query_pixels)"
        )
    if path.is_dir():
        raise DatasetError(
            f"query image {str(path)!r} is a folder; expected an image file (pass --image once "
            "per file)"
        )
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DatasetError(
            f"cannot read query image {str(path)!r}: {err.strerror or err}"
        ) from None
    if not is_tiff(data):
        return data
    buffer = io.BytesIO()
    pixels = read_query_pixels(path, reading) if is_geotiff(path) else load_image_rgb(path)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _loaded_and_max_k(model: Any) -> tuple[Any, int | None]:
    """The loaded export and the largest k its retrieve accepts (None when unknown)."""
    if isinstance(model, (str, os.PathLike)):
        version_dir = resolve_version_dir(model)
        max_k = None
        if (version_dir / MANIFEST_NAME).is_file():
            max_k = int(read_manifest(version_dir).get("max_k", 0)) or None
        return _load_version(version_dir), max_k
    return model, None


def _to_neighbours(outputs: Mapping[str, np.ndarray], row: int) -> list[Neighbour]:
    return [
        Neighbour(
            rank=rank + 1,
            distance=int(outputs["distances"][row, rank]),
            label=int(outputs["labels"][row, rank]),
            class_name=_text(outputs["class_names"][row, rank]),
            path=_text(outputs["paths"][row, rank]),
            index=int(outputs["indices"][row, rank]),
        )
        for rank in range(outputs["indices"].shape[1])
    ]


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def query_images(
    model_dir: str | os.PathLike[str] | Any,
    image_paths: Sequence[str | os.PathLike[str]],
    *,
    top: int = 10,
    batch_size: int = 32,
    reading: BandReading | None = None,
) -> list[list[Neighbour]]:
    """Retrieves the ``top`` nearest database items of each image with an export's ``retrieve``.

    A multi-band export (no ``retrieve``) gets the pixels of each query read with its band
    settings (:func:`read_query_pixels`) through ``retrieve_pixels``, one call per query.

    Args:
        model_dir: Model folder (highest version used), version folder, or an already loaded
            export.
        image_paths: Query image files (JPEG, PNG, GIF, BMP, WebP; TIFF is converted, see
            :func:`request_image_bytes`).
        top: Neighbours per query; capped at the export's ``max_k`` (at most the database
            size) when ``model_dir`` is a folder with a manifest.
        batch_size: Images per ``retrieve`` call.
        reading: How GeoTIFF queries are read (default: the band settings the export's
            manifest records, :func:`export_reading`; None for a loaded export).

    Returns:
        One list of :class:`Neighbour` per query, nearest first (ties by database index).

    Raises:
        ValueError: ``top`` or ``batch_size`` not positive, or an export without ``retrieve``.
        DatasetError: A query image is missing or a folder (named).
    """
    for name, value in (("top", top), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Received: {name}={value!r}; expected a positive integer")
    for path in image_paths:  # fail before loading the model
        if not Path(path).is_file():
            what = "is a folder" if Path(path).is_dir() else "does not exist"
            raise DatasetError(
                f"query image {str(path)!r} {what}; expected an image file (JPEG, PNG, GIF, BMP, "
                "WebP or TIFF)"
            )
    if reading is None and isinstance(model_dir, (str, os.PathLike)):
        reading = export_reading(model_dir)
    loaded, max_k = _loaded_and_max_k(model_dir)
    pixels_only = "retrieve" not in loaded.signatures and "retrieve_pixels" in loaded.signatures
    if "retrieve" not in loaded.signatures and not pixels_only:
        raise ModelMismatchError(
            "Received: an export without a 'retrieve' signature; expected one exported with a "
            "database (export_saved_model(database=...))"
        )
    if max_k and top > max_k:
        logger.warning(
            "top=%d is more than this export returns (max_k=%d, set when it was exported); "
            "showing %d neighbours per query",
            top,
            max_k,
            max_k,
        )
    k = tf.constant(min(top, max_k) if max_k else top, tf.int32)
    results: list[list[Neighbour]] = []
    if pixels_only:
        for path in image_paths:
            pixels = read_query_pixels(path, reading)[None]
            raw = loaded.signatures["retrieve_pixels"](pixels=tf.constant(pixels), k=k)
            results.append(_to_neighbours({key: v.numpy() for key, v in raw.items()}, 0))
        return results
    for start in range(0, len(image_paths), batch_size):
        chunk = [request_image_bytes(p, reading) for p in image_paths[start : start + batch_size]]
        raw = loaded.signatures["retrieve"](image_bytes=tf.constant(chunk, tf.string), k=k)
        outputs = {key: value.numpy() for key, value in raw.items()}
        results.extend(_to_neighbours(outputs, row) for row in range(len(chunk)))
    return results


def format_neighbours(neighbours: Sequence[Neighbour], *, title: str | None = None) -> str:
    """A plain-text table of one query's neighbours (rank, distance, label, class, path)."""
    header = ("rank", "distance", "label", "class", "path")
    rows = [(str(n.rank), str(n.distance), str(n.label), n.class_name, n.path) for n in neighbours]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = [title] if title else []
    for row in (header, *rows):
        cells = [
            cell.rjust(w) if i < 3 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------------------- grid


_PLACEHOLDER = np.full((64, 64, 3), 200, np.uint8)


def _load_for_grid(path: Path) -> np.ndarray:
    """The image's RGB pixels, or a light grey tile when it is missing or unreadable."""
    if not path.is_file():
        return _PLACEHOLDER
    try:
        return load_image_rgb(path)
    except ValueError:
        return _PLACEHOLDER


def save_query_grid(
    path: str | os.PathLike[str],
    query_image: str | os.PathLike[str] | np.ndarray,
    neighbours: Sequence[Neighbour],
    image_root: str | os.PathLike[str] | None = None,
    *,
    query_class: str | None = None,
    columns: int = 5,
) -> Path:
    """Saves a PNG grid: the query, then its neighbours titled with rank, class and distance.

    Drawn by :func:`hpsh_tf2.evaluation.plots.save_retrieval_grid`: the query is framed blue
    and titled with its file name (and labels, when known); a neighbour is titled with its
    label text (``"Forest;River"``) and framed green when it shares at least one label with
    ``query_class`` (:func:`hpsh_tf2.evaluation.relevance.item_relevant`), red otherwise, and
    grey when the query's labels are unknown.

    Args:
        path: Output PNG file (parent folders are created).
        query_image: Query image file or ``uint8`` RGB array ``[H, W, 3]``.
        neighbours: One query's neighbours (from :func:`query_images`).
        image_root: Folder that the neighbours' relative paths are resolved against (paths are
            used as stored when None). Missing images are drawn as grey tiles.
        query_class: The query's class name or label text (``"Forest;River"``), if known.
        columns: Tiles per row.

    Returns:
        The written file.
    """

    if isinstance(query_image, np.ndarray):
        query, title = query_image, "query"
    else:
        query, title = load_image_rgb(query_image), f"query: {Path(query_image).name}"
    if query_class is not None:
        title += f" ({query_class})"
    root = Path(image_root) if image_root is not None else Path()
    return save_retrieval_grid(
        path,
        query_image=query,
        retrieved_images=[_load_for_grid(root / n.path) for n in neighbours],
        query_label=query_class,
        retrieved_labels=[n.class_name for n in neighbours],
        distances=[n.distance for n in neighbours],
        columns=columns,
        query_title=title,
    )


# --------------------------------------------------------------------------- REST


def _b64_instances(image_bytes_list: Sequence[bytes]) -> list[dict[str, str]]:
    if isinstance(image_bytes_list, (bytes, str)):
        raise TypeError(
            "Received: image_bytes_list of type "
            f"{type(image_bytes_list).__name__}; expected a sequence of bytes objects"
        )
    encoded = []
    for position, item in enumerate(image_bytes_list):
        if not isinstance(item, (bytes, bytearray)):
            raise TypeError(
                f"Received: image_bytes_list[{position}] of type {type(item).__name__}; "
                "expected bytes (an encoded image)"
            )
        encoded.append({"b64": base64.b64encode(bytes(item)).decode("ascii")})
    return encoded


def make_predict_request(
    image_bytes_list: Sequence[bytes],
    signature_name: str = "serving_default",
    *,
    extra_inputs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A TF Serving REST predict body with the images base64-encoded.

    Without ``extra_inputs`` this is the row format
    ``{"signature_name": ..., "instances": [{"image_bytes": {"b64": ...}}, ...]}``. With them
    (e.g. ``{"k": 10}`` for ``retrieve``, whose ``k`` has no batch dimension) it is the columnar
    format ``{"signature_name": ..., "inputs": {"image_bytes": [{"b64": ...}], "k": 10}}``.
    """
    encoded = _b64_instances(image_bytes_list)
    if not extra_inputs:
        return {
            "signature_name": signature_name,
            "instances": [{"image_bytes": item} for item in encoded],
        }
    inputs = {"image_bytes": encoded, **{str(k): v for k, v in extra_inputs.items()}}
    return {"signature_name": signature_name, "inputs": inputs}


def make_pixels_request(
    pixels: np.ndarray,
    signature_name: str = "encode_pixels",
    *,
    extra_inputs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A TF Serving REST predict body for ``encode_pixels`` (or ``retrieve_pixels``).

    ``pixels`` is uint8 ``[b, H, W, N]`` (N = the manifest's ``input_bands``) and is sent as
    nested lists in the row format ``{"signature_name": "encode_pixels", "instances":
    [{"pixels": [[[v, ...], ...], ...]}, ...]}``, one instance per tile; with ``extra_inputs``
    (``{"k": 10}`` for ``retrieve_pixels``) in the columnar format
    ``{"signature_name": ..., "inputs": {"pixels": [...], "k": 10}}``.

    Raises:
        ValueError: ``pixels`` is not a uint8 array ``[b, H, W, N]``.
    """
    array = np.asarray(pixels)
    if array.dtype != np.uint8 or array.ndim != 4:
        raise ValueError(
            f"Received: pixels of dtype {array.dtype} and shape {array.shape}; expected uint8 "
            "[b, H, W, N]"
        )
    if not extra_inputs:
        return {
            "signature_name": signature_name,
            "instances": [{"pixels": tile.tolist()} for tile in array],
        }
    inputs = {"pixels": array.tolist(), **{str(k): v for k, v in extra_inputs.items()}}
    return {"signature_name": signature_name, "inputs": inputs}


def _decode_json_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_decode_json_value(v) for v in value]
    return value


def _as_array(name: str, value: Any) -> np.ndarray:
    array = np.asarray(_decode_json_value(value))
    if name in OUTPUT_DTYPES and array.dtype.kind in "iufb":
        return array.astype(OUTPUT_DTYPES[name])
    if name in OUTPUT_DTYPES and array.size == 0:
        return array.astype(OUTPUT_DTYPES[name])
    return array


def parse_predict_response(body: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """TF Serving's REST response (row ``predictions`` or columnar ``outputs``) as arrays.

    Numeric outputs of an hpsh export get their dtype back (:data:`OUTPUT_DTYPES`); strings
    stay ``str``, ``{"b64": ...}`` values become ``bytes``. A single unnamed output is returned
    under the key ``"output"``.

    Raises:
        RuntimeError: The body holds TF Serving's ``{"error": ...}``.
        ValueError: The body has neither ``predictions`` nor ``outputs``.
    """
    if "error" in body:
        raise RuntimeError(f"TF Serving error: {body['error']}")
    if "outputs" in body:
        outputs = body["outputs"]
        if not isinstance(outputs, Mapping):
            return {"output": _as_array("output", outputs)}
        return {name: _as_array(name, value) for name, value in outputs.items()}
    if "predictions" not in body:
        raise ValueError(
            f"Received: a response with keys {sorted(body)}; expected 'predictions' or 'outputs'"
        )
    rows = body["predictions"]
    if rows and all(isinstance(row, Mapping) for row in rows):
        return {name: _as_array(name, [row[name] for row in rows]) for name in rows[0]}
    return {"output": _as_array("output", rows)}


def rest_predict_url(
    model_name: str, *, host: str = "localhost", port: int = 8501, version: int | None = None
) -> str:
    """``http://<host>:<port>/v1/models/<model_name>[/versions/<version>]:predict``."""
    suffix = "" if version is None else f"/versions/{int(version)}"
    return f"http://{host}:{int(port)}/v1/models/{model_name}{suffix}:predict"


def predict_rest(
    url: str,
    image_bytes_list: Sequence[bytes],
    *,
    signature_name: str = "serving_default",
    extra_inputs: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
) -> dict[str, np.ndarray]:
    """POSTs images to a TF Serving REST predict URL and returns the parsed outputs.

    Args:
        url: Predict URL (see :func:`rest_predict_url`).
        image_bytes_list: Encoded images.
        signature_name: Signature to run.
        extra_inputs: Non-batched inputs, e.g. ``{"k": 10}`` for ``retrieve``.
        timeout: Seconds to wait for the server.

    Raises:
        RuntimeError: The server answered with an HTTP error (its message included).
    """
    body = make_predict_request(image_bytes_list, signature_name, extra_inputs=extra_inputs)
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", errors="replace")
        raise RuntimeError(f"TF Serving at {url} answered HTTP {err.code}: {detail}") from err
    return parse_predict_response(payload)


# --------------------------------------------------------------------------- gRPC


def make_grpc_request(
    image_bytes_list: Sequence[bytes],
    *,
    model_name: str,
    signature_name: str = "serving_default",
    k: int | None = None,
    version: int | None = None,
) -> Any:
    """A ``tensorflow_serving.apis.predict_pb2.PredictRequest`` for the gRPC API.

    Send it with ``prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict``.

    Raises:
        ImportError: ``tensorflow-serving-api`` is not installed.
    """
    try:
        from tensorflow_serving.apis import predict_pb2
    except ImportError as err:
        raise ImportError(
            "make_grpc_request needs tensorflow-serving-api: pip install hpsh-tf2[serving]"
        ) from err
    _b64_instances(image_bytes_list)  # type checks with clear messages
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs["image_bytes"].CopyFrom(
        tf.make_tensor_proto([bytes(b) for b in image_bytes_list], dtype=tf.string)
    )
    if k is not None:
        request.inputs["k"].CopyFrom(tf.make_tensor_proto(int(k), dtype=tf.int32))
    return request
