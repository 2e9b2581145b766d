"""Tests of hpsh_tf2.export: signatures in a fresh process, versions, files, errors."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from hpsh_tf2 import export as export_lib
from hpsh_tf2.data.images import read_image, resize_image
from hpsh_tf2.data.pipeline import load_and_preprocess
from hpsh_tf2.export import RetrievalDatabase, export_saved_model, next_version, read_manifest
from hpsh_tf2.models.backbone import build_backbone, preprocess_images, preprocessor
from hpsh_tf2.models.head import build_hash_model, build_image_hash_model
from hpsh_tf2.ops.codes import binarize, pack_codes
from hpsh_tf2.ops.hamming import hamming_topk

BACKBONE = "inception_v3"
IMAGE_SIZE = 75
BITS = 16
DB_SIZE = 40
CLASS_NAMES = ("alpha", "beta", "gamma")


def _sample_files(root: Path, count: int) -> list[Path]:
    """One image from each of the first ``count`` classes (different scenes)."""
    classes = sorted(p for p in root.iterdir() if p.is_dir())[:count]
    return [sorted(c.iterdir())[0] for c in classes]


def _random_database(seed: int = 0) -> RetrievalDatabase:
    rng = np.random.default_rng(seed)
    packed = rng.integers(0, 256, (DB_SIZE, BITS // 8), dtype=np.uint8)
    labels = rng.integers(0, len(CLASS_NAMES), DB_SIZE)
    paths = [f"{CLASS_NAMES[label]}/img_{i:03d}.jpg" for i, label in enumerate(labels)]
    return RetrievalDatabase(packed, labels, paths, CLASS_NAMES)


def _tiny_model(bits: int = BITS, size: int = 32) -> keras.Model:
    inputs = keras.Input((size, size, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(bits, activation="sigmoid")(pooled))


def _tiny_export(tmp: Path, **kwargs) -> Path:
    args = {
        "image_model": _tiny_model(),
        "backbone": "mobilenet_v2",
        "image_size": 32,
        "bits": BITS,
        "export_dir": tmp,
        "model_name": "tiny",
    }
    args.update(kwargs)
    return export_saved_model(**args)


def _png_bytes(size: int = 40) -> bytes:
    rng = np.random.default_rng(3)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, scene_tree):
    """One InceptionV3 (75 px, random weights) export with a 40-item database."""
    backbone = build_backbone(BACKBONE, weights="none", image_size=IMAGE_SIZE)
    head = build_hash_model(backbone.output_shape[-1], bits=BITS, seed=7)
    model = build_image_hash_model(backbone, head)
    files = _sample_files(scene_tree, 4)
    database = _random_database()
    export_dir = tmp_path_factory.mktemp("export")
    config = {"model": {"bits": BITS}, "name": "test"}
    version_dir = export_saved_model(
        image_model=model,
        backbone=BACKBONE,
        image_size=IMAGE_SIZE,
        bits=BITS,
        export_dir=export_dir,
        model_name="hpsh",
        database=database,
        warmup_images=files[:2],
        config=config,
    )
    return SimpleNamespace(
        model=model,
        files=files,
        database=database,
        export_dir=export_dir,
        version_dir=version_dir,
        config=config,
        loaded=tf.saved_model.load(str(version_dir)),
    )


def _model_outputs(model: keras.Model, images: tf.Tensor) -> dict[str, np.ndarray]:
    scores = model(images, training=False)
    codes = binarize(scores)
    return {"scores": scores.numpy(), "codes": codes.numpy(), "packed": pack_codes(codes).numpy()}


def _reference(exported) -> dict[str, np.ndarray]:
    """Codes of the sample files through the training pipeline and the Keras model."""
    images = tf.stack(
        [
            load_and_preprocess(
                tf.constant(str(p)), image_size=IMAGE_SIZE, preprocess=preprocessor(BACKBONE)
            )
            for p in exported.files
        ]
    )
    return _model_outputs(exported.model, images)


def _np_hamming(query_packed: np.ndarray, db_packed: np.ndarray) -> np.ndarray:
    """Independent reference: unpack bits and count differences."""
    query_bits = np.unpackbits(query_packed, axis=1).astype(bool)
    db_bits = np.unpackbits(db_packed, axis=1).astype(bool)
    return (query_bits[:, None, :] != db_bits[None, :, :]).sum(axis=2)


_FRESH_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf

    version_dir, out_path, pixels_path, k, *files = sys.argv[1:]
    loaded = tf.saved_model.load(version_dir)
    data = [open(f, "rb").read() for f in files]
    results = {}
    out = loaded.signatures["serving_default"](image_bytes=tf.constant(data))
    results.update({"serve_" + key: value.numpy() for key, value in out.items()})
    pixels = np.load(pixels_path)
    out = loaded.signatures["encode_images"](images=tf.constant(pixels, tf.float32))
    results.update({"encode_" + key: value.numpy() for key, value in out.items()})
    out = loaded.signatures["retrieve"](image_bytes=tf.constant(data), k=tf.constant(int(k)))
    results.update({"retrieve_" + key: value.numpy() for key, value in out.items()})
    empty = loaded.signatures["serving_default"](image_bytes=tf.constant([], tf.string))
    results["empty_codes_shape"] = np.array(empty["codes"].shape)
    results["hpsh_imported"] = np.array(any(m.startswith("hpsh_tf2") for m in sys.modules))
    np.savez(out_path, **results)
    """
)


def test_fresh_process_runs_every_signature(exported, tmp_path):
    k = 7
    script = tmp_path / "fresh.py"
    script.write_text(_FRESH_SCRIPT)
    out_path = tmp_path / "out.npz"
    files = [str(p) for p in exported.files]
    # encode_images gets decoded pixels cropped to 120 x 140 (non-square, not the model size),
    # decoded here by the package so that the fresh process needs no JPEG decoder of its own.
    pixels = np.stack([read_image(p).numpy()[:120, :140] for p in files])
    np.save(tmp_path / "pixels.npy", pixels)
    command = [sys.executable, str(script), str(exported.version_dir), str(out_path)]
    command += [str(tmp_path / "pixels.npy"), str(k)]
    result = subprocess.run(
        [*command, *files], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = dict(np.load(out_path, allow_pickle=True))
    assert not got["hpsh_imported"]
    ref = _reference(exported)

    resized = resize_image(tf.constant(pixels), IMAGE_SIZE)
    encode_ref = _model_outputs(exported.model, preprocess_images(resized, BACKBONE))
    for prefix, expected in (("serve_", ref), ("encode_", encode_ref)):
        assert got[prefix + "codes"].dtype == np.uint8
        np.testing.assert_array_equal(got[prefix + "codes"], expected["codes"])
        np.testing.assert_array_equal(got[prefix + "packed_codes"], expected["packed"])
        np.testing.assert_allclose(got[prefix + "scores"], expected["scores"], atol=1e-5)

    indices, distances = hamming_topk(ref["packed"], exported.database.packed_codes, k=k)
    np.testing.assert_array_equal(got["retrieve_indices"], indices.numpy())
    np.testing.assert_array_equal(got["retrieve_distances"], distances.numpy())
    full = _np_hamming(ref["packed"], exported.database.packed_codes)
    np.testing.assert_array_equal(
        got["retrieve_distances"], np.take_along_axis(full, got["retrieve_indices"], 1)
    )
    labels = exported.database.labels[got["retrieve_indices"]]
    np.testing.assert_array_equal(got["retrieve_labels"], labels)
    names = np.array(CLASS_NAMES)[labels]
    assert [[s.decode() for s in row] for row in got["retrieve_class_names"]] == names.tolist()
    paths = np.array(exported.database.paths)[got["retrieve_indices"]]
    assert [[s.decode() for s in row] for row in got["retrieve_paths"]] == paths.tolist()
    assert got["empty_codes_shape"].tolist() == [0, BITS]


def test_retrieve_returns_prefix_of_full_ranking(exported):
    data = tf.constant([p.read_bytes() for p in exported.files])
    distances = _np_hamming(_reference(exported)["packed"], exported.database.packed_codes)
    ids = np.broadcast_to(np.arange(DB_SIZE), distances.shape)
    order = np.lexsort((ids, distances), axis=1)  # by distance, then database index
    full = exported.loaded.signatures["retrieve"](image_bytes=data, k=tf.constant(DB_SIZE))
    np.testing.assert_array_equal(full["indices"].numpy(), order)
    top3 = exported.loaded.signatures["retrieve"](image_bytes=data, k=tf.constant(3))
    np.testing.assert_array_equal(top3["indices"].numpy(), order[:, :3])


def test_empty_batch_gives_empty_outputs(exported):
    signatures = exported.loaded.signatures
    out = signatures["serving_default"](image_bytes=tf.constant([], tf.string))
    assert out["codes"].shape == (0, BITS)
    assert out["packed_codes"].shape == (0, BITS // 8)
    assert out["scores"].shape == (0, BITS)
    out = signatures["encode_images"](images=tf.zeros([0, 50, 60, 3]))
    assert out["codes"].shape == (0, BITS)
    out = signatures["retrieve"](image_bytes=tf.constant([], tf.string), k=tf.constant(4))
    assert out["indices"].shape == (0, 4)
    assert out["paths"].shape == (0, 4)


def test_png_input_matches_pipeline(exported):
    data = _png_bytes()
    got = exported.loaded.signatures["serving_default"](image_bytes=tf.constant([data]))
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32)
    resized = tf.image.resize(pixels[None], [IMAGE_SIZE, IMAGE_SIZE], method="bilinear")
    scores = exported.model(preprocess_images(resized, BACKBONE), training=False).numpy()
    np.testing.assert_allclose(got["scores"].numpy(), scores, atol=1e-5)
    np.testing.assert_array_equal(got["codes"].numpy(), (scores > 0.5).astype(np.uint8))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty string"),
        (b"this is not an image", "not a JPEG, PNG, GIF, BMP or WebP"),
        (b"II*\x00" + b"\x00" * 64, "TIFF is not supported"),
        ("truncated", "truncated or corrupt JPEG"),
    ],
)
def test_bad_bytes_raise_invalid_argument(exported, payload, message):
    good = exported.files[0].read_bytes()
    if payload == "truncated":
        payload = good[: len(good) // 2]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        exported.loaded.signatures["serving_default"](image_bytes=tf.constant([good, payload]))


def test_bad_positions_are_reported(exported):
    good = exported.files[0].read_bytes()
    batch = tf.constant([good, b"junk", good, b"more junk"])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[\[1\]\s*\[3\]\]"):
        exported.loaded.signatures["serving_default"](image_bytes=batch)


def test_truncated_jpeg_positions_are_reported(exported):
    good = exported.files[0].read_bytes()
    cut = good[: len(good) // 2]
    batch = tf.constant([good, cut, good, good[:200]])
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"truncated or corrupt JPEG[^\[]*\[\[1\]\s*\[3\]\]"
    ):
        exported.loaded.signatures["serving_default"](image_bytes=batch)


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk declaring ``width x height`` 16-bit RGB (no pixel data)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
    )


def test_huge_declared_size_is_refused_before_decoding(exported):
    import time

    good = exported.files[0].read_bytes()
    huge = _png_header(12000, 12000) + b"\x00" * 1000
    start = time.monotonic()
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"max_pixels=40000000.*batch positions[^\[]*\[\[1\]\].*\[\[12000 12000\]\]",
    ):
        exported.loaded.signatures["serving_default"](image_bytes=tf.constant([good, huge]))
    assert time.monotonic() - start < 5.0  # a 12000 x 12000 16-bit decode takes ~18 s


def _encoded(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "kwargs"),
    [
        ("PNG", {}),
        ("JPEG", {}),
        ("JPEG", {"progressive": True}),
        ("GIF", {}),
        ("BMP", {}),
        ("WEBP", {}),
        ("WEBP", {"lossless": True}),
    ],
)
def test_max_pixels_reads_every_format_header(tmp_path, fmt, kwargs):
    rng = np.random.default_rng(0)
    limit = 30 * 40
    version = _tiny_export(tmp_path, max_pixels=limit, warmup_images=[])
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    fits = _encoded(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), fmt, **kwargs)
    over = _encoded(rng.integers(0, 256, (31, 40, 3), dtype=np.uint8), fmt, **kwargs)
    assert serve(image_bytes=tf.constant([fits]))["codes"].shape == (1, BITS)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[\[40 31\]\]"):
        serve(image_bytes=tf.constant([fits, over]))


def test_webp_is_served_like_the_training_pipeline_decodes_it(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (24, 36, 3), dtype=np.uint8)
    data = _encoded(pixels, "WEBP", lossless=True)
    model = _tiny_model()
    version = _tiny_export(tmp_path, image_model=model, warmup_images=[data])
    got = tf.saved_model.load(str(version)).signatures["serving_default"](
        image_bytes=tf.constant([data])
    )
    path = tmp_path / "x.webp"
    path.write_bytes(data)
    pipeline = load_and_preprocess(
        tf.constant(str(path)), image_size=32, preprocess=preprocessor("mobilenet_v2")
    )
    scores = model(pipeline[None], training=False).numpy()
    np.testing.assert_allclose(got["scores"].numpy(), scores, atol=1e-5)


def test_wrong_dtype_is_rejected(exported):
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError), match="string"):
        exported.loaded.signatures["serving_default"](image_bytes=tf.constant([1.0, 2.0]))


@pytest.mark.parametrize("k", [0, DB_SIZE + 1])
def test_retrieve_rejects_k_out_of_range(exported, k):
    data = tf.constant([exported.files[0].read_bytes()])
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"max_k = {DB_SIZE}"):
        exported.loaded.signatures["retrieve"](image_bytes=data, k=tf.constant(k))


def test_manifest_and_models_config(exported):
    manifest = read_manifest(exported.version_dir)
    assert manifest["version"] == 1
    assert manifest["model_name"] == "hpsh"
    assert manifest["bits"] == BITS
    assert manifest["backbone"] == BACKBONE
    assert manifest["image_size"] == IMAGE_SIZE
    assert manifest["class_names"] == list(CLASS_NAMES)
    assert manifest["database_size"] == DB_SIZE
    assert manifest["max_k"] == DB_SIZE
    assert manifest["signatures"] == [
        "encode_images",
        "encode_pixels",
        "retrieve",
        "retrieve_pixels",
        "serving_default",
    ]
    assert (manifest["input_bands"], manifest["bands"], manifest["band_scale"]) == (3, None, None)
    canonical = json.dumps(exported.config, sort_keys=True, separators=(",", ":"))
    assert manifest["config_hash"] == hashlib.sha256(canonical.encode()).hexdigest()

    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    text = (exported.export_dir / "hpsh" / "models.config").read_text()
    parsed = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    (config,) = parsed.model_config_list.config
    assert config.name == "hpsh"
    assert config.base_path == "/models/hpsh"
    assert config.model_platform == "tensorflow"


def test_warmup_file_holds_prediction_logs(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    path = exported.version_dir / "assets.extra" / "tf_serving_warmup_requests"
    records = [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(str(path))
    ]
    assert [r.predict_log.request.model_spec.signature_name for r in records] == [
        "serving_default",
        "retrieve",
    ]
    expected = [p.read_bytes() for p in exported.files[:2]]
    for record in records:
        request = record.predict_log.request
        assert request.model_spec.name == "hpsh"
        assert tf.make_ndarray(request.inputs["image_bytes"]).tolist() == expected
    assert tf.make_ndarray(records[1].predict_log.request.inputs["k"]) == 10
    assert read_manifest(exported.version_dir)["warmup_requests"] == 2


def test_saved_model_cli_lists_signatures(exported):
    cli = Path(sys.executable).with_name("saved_model_cli")
    result = subprocess.run(
        [str(cli), "show", "--all", "--dir", str(exported.version_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("serving_default", "encode_images", "retrieve"):
        assert f"signature_def['{name}']" in result.stdout
    for name in ("image_bytes", "images", "k", "codes", "packed_codes", "scores", "distances"):
        assert f"['{name}']" in result.stdout


def test_graph_has_no_python_or_xla_only_ops(exported):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((exported.version_dir / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops.update(node.op for node in function.node_def)
        assert "_XlaMustCompile" not in function.attr
    assert not ops & {"EagerPyFunc", "PyFunc", "PyFuncStateless"}
    assert "DecodeImage" in ops and "DecodePng" in ops


# --------------------------------------------------------------------------- raw pixels, N bands


def test_encode_pixels_is_encode_images_of_the_same_pixels_bit_for_bit(exported):
    """One resize path: uint8 tiles of any size through ``encode_pixels`` give exactly the
    outputs of ``encode_images`` on the same values as float (3 bands, today's signature)."""
    rng = np.random.default_rng(11)
    tiles = rng.integers(0, 256, (3, 90, 70, 3), dtype=np.uint8)
    signatures = exported.loaded.signatures
    got = signatures["encode_pixels"](pixels=tf.constant(tiles))
    want = signatures["encode_images"](images=tf.constant(tiles, tf.float32))
    for key in ("codes", "packed_codes", "scores"):
        np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())
    # A PNG of the tile through serving_default: the same code as the pixels.
    buffer = io.BytesIO()
    Image.fromarray(tiles[0]).save(buffer, "PNG")
    served = signatures["serving_default"](image_bytes=tf.constant([buffer.getvalue()]))
    np.testing.assert_array_equal(served["packed_codes"].numpy(), got["packed_codes"][:1])
    k = tf.constant(5)
    by_pixels = signatures["retrieve_pixels"](pixels=tf.constant(tiles[:1]), k=k)
    by_bytes = signatures["retrieve"](image_bytes=tf.constant([buffer.getvalue()]), k=k)
    for key in ("indices", "distances"):
        np.testing.assert_array_equal(by_pixels[key].numpy(), by_bytes[key].numpy())


@pytest.fixture(scope="module")
def four_band(tmp_path_factory):
    """A 4-band MobileNetV2 (75 px, random weights, first convolution widened) export."""
    from hpsh_tf2.serving import load_exported

    backbone = build_backbone("mobilenet_v2", weights="none", image_size=75, input_bands=4)
    head = build_hash_model(backbone.output_shape[-1], bits=BITS, seed=3)
    model = build_image_hash_model(backbone, head)
    version_dir = export_saved_model(
        image_model=model,
        backbone="mobilenet_v2",
        image_size=75,
        bits=BITS,
        export_dir=tmp_path_factory.mktemp("export4"),
        model_name="s2",
        database=_random_database(),
        input_bands=4,
        bands=[4, 3, 2, 8],
        band_scale="0-3000",
    )
    return SimpleNamespace(model=model, version_dir=version_dir, loaded=load_exported(version_dir))


def test_four_band_export_encodes_pixels_like_the_in_process_model(four_band):
    manifest = read_manifest(four_band.version_dir)
    assert manifest["input_bands"] == 4
    assert manifest["bands"] == [4, 3, 2, 8] and manifest["band_scale"] == "0-3000"
    # Encoded image bytes hold RGB only: no byte signature for a 4-band model.
    assert manifest["signatures"] == ["encode_images", "encode_pixels", "retrieve_pixels"]
    tiles = np.random.default_rng(5).integers(0, 256, (2, 64, 80, 4), dtype=np.uint8)
    out = four_band.loaded.signatures["encode_pixels"](pixels=tf.constant(tiles))
    inputs = preprocess_images(resize_image(tiles, 75), "mobilenet_v2")
    want = _model_outputs(four_band.model, inputs)
    np.testing.assert_allclose(out["scores"].numpy(), want["scores"], atol=1e-5)
    np.testing.assert_array_equal(out["codes"].numpy(), want["codes"])
    np.testing.assert_array_equal(out["packed_codes"].numpy(), want["packed"])
    floats = four_band.loaded.signatures["encode_images"](images=tf.constant(tiles, tf.float32))
    np.testing.assert_array_equal(floats["packed_codes"].numpy(), want["packed"])
    empty = four_band.loaded.signatures["encode_pixels"](pixels=tf.zeros([0, 75, 75, 4], tf.uint8))
    assert empty["codes"].shape == (0, BITS)
    near = four_band.loaded.signatures["retrieve_pixels"](pixels=tf.constant(tiles), k=3)
    distances = _np_hamming(want["packed"], _random_database().packed_codes)
    expected = np.argsort(distances, axis=1, kind="stable")
    np.testing.assert_array_equal(near["indices"].numpy(), expected[:, :3])


def test_four_band_warmup_requests_encode_pixels(four_band):
    from tensorflow_serving.apis import prediction_log_pb2

    path = four_band.version_dir / "assets.extra" / "tf_serving_warmup_requests"
    records = [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(str(path))
    ]
    requests = [r.predict_log.request for r in records]
    assert [r.model_spec.signature_name for r in requests] == ["encode_pixels", "retrieve_pixels"]
    pixels = tf.make_ndarray(requests[0].inputs["pixels"])
    assert pixels.shape == (1, 75, 75, 4) and pixels.dtype == np.uint8


def test_input_bands_must_match_the_model(tmp_path):
    from hpsh_tf2.errors import ModelMismatchError

    with pytest.raises(ModelMismatchError, match=r"input_bands=4.*3 bands"):
        _tiny_export(tmp_path, input_bands=4)


# --------------------------------------------------------------------------- files, versions


def test_next_version(tmp_path):
    assert next_version(tmp_path / "missing") == 1
    assert next_version(tmp_path) == 1
    for name in ("1", "3", "notes", ".tmp-export-x", "10x"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    assert next_version(tmp_path) == 4


def test_versions_increase_and_are_never_overwritten(tmp_path):
    first = _tiny_export(tmp_path)
    manifest = (first / "hpsh_export.json").read_bytes()
    second = _tiny_export(tmp_path, class_names=("a", "b"))
    assert (first.name, second.name) == ("1", "2")
    assert (first / "hpsh_export.json").read_bytes() == manifest
    assert read_manifest(second)["class_names"] == ["a", "b"]
    assert read_manifest(second)["signatures"] == [
        "encode_images",
        "encode_pixels",
        "serving_default",
    ]
    assert read_manifest(second)["config_hash"] is None
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["1", "2", "models.config"]


def test_failure_mid_export_leaves_no_version(tmp_path, monkeypatch):
    _tiny_export(tmp_path)

    def fail(*args, **kwargs):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(export_lib, "_write_warmup", fail)
    with pytest.raises(RuntimeError, match="simulated"):
        _tiny_export(tmp_path)
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["1", "models.config"]


def test_stale_temporary_exports_are_removed_at_the_next_export(tmp_path):
    import os
    import time

    base = tmp_path / "tiny"
    base.mkdir()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(gone.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folders = {
            "dead": base / f".tmp-export-{dead_pid}-aaaa",  # a killed export
            "live": base / f".tmp-export-{live.pid}-bbbb",  # an export still running
            "old": base / ".tmp-export-cccc",  # legacy name, two days old
            "new": base / ".tmp-export-dddd",  # legacy name, just written
        }
        for folder in folders.values():
            folder.mkdir()
            (folder / "saved_model.pb").write_bytes(b"x" * 1000)
        two_days = time.time() - 2 * 86400
        os.utime(folders["old"], (two_days, two_days))
        version = _tiny_export(tmp_path)
    finally:
        live.kill()
        live.wait()
    assert not folders["dead"].exists() and not folders["old"].exists()
    assert folders["live"].is_dir() and folders["new"].is_dir()
    assert version.name == "1"


def test_concurrent_version_is_not_overwritten(tmp_path, monkeypatch):
    original = export_lib._build_version

    def build_then_race(module, plan, target):
        manifest = original(module, plan, target)
        (target.parent / str(plan.version)).mkdir()  # another exporter took the number
        return manifest

    monkeypatch.setattr(export_lib, "_build_version", build_then_race)
    with pytest.raises(FileExistsError, match="nothing was overwritten"):
        _tiny_export(tmp_path)
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["1"]
    assert not any((tmp_path / "tiny" / "1").iterdir())


def test_missing_serving_api_skips_warmup(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tensorflow_serving.apis", None)
    with caplog.at_level(logging.WARNING, logger="hpsh_tf2.export"):
        version_dir = _tiny_export(tmp_path)
    assert not (version_dir / "assets.extra").exists()
    manifest = read_manifest(version_dir)
    assert manifest["warmup_requests"] == 0
    assert "tensorflow-serving-api" in manifest["warmup"]
    assert "tensorflow-serving-api" in caplog.text


def test_empty_warmup_list_disables_the_warmup_file(tmp_path):
    version_dir = _tiny_export(tmp_path, warmup_images=[])
    assert not (version_dir / "assets.extra").exists()
    manifest = read_manifest(version_dir)
    assert manifest["warmup_requests"] == 0
    assert manifest["warmup"].startswith("disabled")


def test_default_warmup_is_a_decodable_jpeg(tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    version_dir = _tiny_export(tmp_path)
    path = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    (record,) = [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(str(path))
    ]
    (data,) = tf.make_ndarray(record.predict_log.request.inputs["image_bytes"]).tolist()
    assert tf.io.decode_jpeg(data).shape == (32, 32, 3)


def test_config_hash_accepts_dataclass_and_detects_changes():
    from hpsh_tf2.config import Config, config_to_dict

    config = Config()
    assert export_lib._config_hash(config) == export_lib._config_hash(config_to_dict(config))
    changed = config.replace(["model.bits=64"])
    assert export_lib._config_hash(changed) != export_lib._config_hash(config)
    with pytest.raises(TypeError, match="config"):
        export_lib._config_hash(["not", "a", "mapping"])


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"bits": 32}, ValueError, "bits=32 for an image_model with 16 outputs"),
        ({"bits": 12}, ValueError, "bits=12"),
        ({"model_name": "a/b"}, ValueError, "model_name='a/b'"),
        ({"model_name": ".hidden"}, ValueError, "model_name"),
        ({"image_size": 0}, ValueError, "image_size=0"),
        ({"backbone": "vgg"}, ValueError, "vgg"),
        ({"image_model": "model"}, TypeError, "image_model"),
        ({"max_k": 0}, ValueError, "max_k=0"),
        ({"warmup_images": [3]}, TypeError, "warmup image"),
        ({"warmup_images": [b"junk"]}, tf.errors.InvalidArgumentError, "not a JPEG"),
        ({"class_names": ("x",), "database": _random_database()}, ValueError, "class_names"),
    ],
)
def test_invalid_arguments(tmp_path, overrides, error, message):
    with pytest.raises(error, match=message):
        _tiny_export(tmp_path, **overrides)
    assert not (tmp_path / "tiny").exists() or not any((tmp_path / "tiny").iterdir())


def test_database_bits_must_match(tmp_path):
    database = RetrievalDatabase(
        np.zeros((3, 4), np.uint8), np.zeros(3, np.int32), ("a", "b", "c"), ("k",)
    )
    with pytest.raises(ValueError, match="32-bit codes for a 16-bit model"):
        _tiny_export(tmp_path, database=database)


def test_retrieval_database_validation_and_from_codes():
    codes = np.array([[1, 0, 0, 0, 0, 0, 0, 1], [0, 1, 1, 1, 1, 1, 1, 1]], np.uint8)
    database = RetrievalDatabase.from_codes(codes, [1, 0], ["x.jpg", "y.jpg"], ["a", "b"])
    np.testing.assert_array_equal(database.packed_codes, [[0b10000001], [0b01111111]])
    assert database.labels.dtype == np.int32
    assert (database.size, database.bits) == (2, 8)
    with pytest.raises(ValueError, match="packed_codes"):
        RetrievalDatabase(np.zeros((2, 1), np.int32), [0, 0], ("a", "b"), ("c",))
    with pytest.raises(ValueError, match="labels"):
        RetrievalDatabase(np.zeros((2, 1), np.uint8), [0], ("a", "b"), ("c",))
    with pytest.raises(ValueError, match="paths"):
        RetrievalDatabase(np.zeros((2, 1), np.uint8), [0, 0], ("a",), ("c",))
    with pytest.raises(ValueError, match=r"labels in \[0, 2\] with 2 class_names"):
        RetrievalDatabase(np.zeros((2, 1), np.uint8), [0, 2], ("a", "b"), ("c", "d"))
