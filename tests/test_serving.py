"""Tests of hpsh_tf2.serving: query, grids, REST round trip (loopback server), gRPC request."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from hpsh_tf2.data.pipeline import load_and_preprocess
from hpsh_tf2.export import RetrievalDatabase, export_saved_model
from hpsh_tf2.models.backbone import preprocessor
from hpsh_tf2.serving import (
    Neighbour,
    format_neighbours,
    load_exported,
    make_grpc_request,
    make_predict_request,
    parse_predict_response,
    predict_rest,
    query_images,
    request_image_bytes,
    resolve_version_dir,
    rest_predict_url,
    save_query_grid,
)

BACKBONE = "mobilenet_v2"
SIZE = 32
BITS = 16
MODEL_NAME = "hpsh"


def _tiny_model() -> keras.Model:
    """Mean colour -> 16 sigmoid scores: fast, and different scenes get different codes."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(BITS, activation="sigmoid")(pooled))


def _pipeline_codes(model: keras.Model, paths: list[Path]) -> np.ndarray:
    """0/1 codes through the training pipeline and the Keras model (NumPy threshold)."""
    images = tf.stack(
        [
            load_and_preprocess(
                tf.constant(str(p)), image_size=SIZE, preprocess=preprocessor(BACKBONE)
            )
            for p in paths
        ]
    )
    return (model(images, training=False).numpy() > 0.5).astype(np.uint8)


def _np_ranking(query_codes: np.ndarray, db_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Full ranking by (Hamming distance, database index), with the distances."""
    distances = (query_codes[:, None, :] != db_codes[None, :, :]).sum(axis=2)
    ids = np.broadcast_to(np.arange(db_codes.shape[0]), distances.shape)
    order = np.lexsort((ids, distances), axis=1)
    return order, np.take_along_axis(distances, order, axis=1)


@pytest.fixture(scope="module")
def served(tmp_path_factory, scene_tree):
    """Version 1 without a database, version 2 with 2 images per class of a generated tree."""
    model = _tiny_model()
    classes = sorted(p.name for p in scene_tree.iterdir() if p.is_dir())
    db_files, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((scene_tree / name).iterdir())[:2]:
            db_files.append(path)
            labels.append(label)
    db_codes = _pipeline_codes(model, db_files)
    paths = [p.relative_to(scene_tree).as_posix() for p in db_files]
    database = RetrievalDatabase.from_codes(db_codes, np.array(labels), paths, classes)
    export_dir = tmp_path_factory.mktemp("serving")
    common = {
        "image_model": model,
        "backbone": BACKBONE,
        "image_size": SIZE,
        "bits": BITS,
        "export_dir": export_dir,
        "model_name": MODEL_NAME,
    }
    first = export_saved_model(**common)
    second = export_saved_model(**common, database=database, max_k=25)
    queries = [sorted((scene_tree / c).iterdir())[5] for c in classes[:4]] + db_files[3:4]
    return SimpleNamespace(
        model=model,
        root=scene_tree,
        model_dir=export_dir / MODEL_NAME,
        first=first,
        second=second,
        db_codes=db_codes,
        db_labels=np.array(labels),
        db_paths=paths,
        classes=classes,
        queries=queries,
        loaded=tf.saved_model.load(str(second)),
    )


def _expected_neighbours(served, paths: list[Path], top: int) -> list[list[Neighbour]]:
    order, distances = _np_ranking(_pipeline_codes(served.model, paths), served.db_codes)
    return [
        [
            Neighbour(
                rank=r + 1,
                distance=int(distances[q, r]),
                label=int(served.db_labels[order[q, r]]),
                class_name=served.classes[served.db_labels[order[q, r]]],
                path=served.db_paths[order[q, r]],
                index=int(order[q, r]),
            )
            for r in range(top)
        ]
        for q in range(len(paths))
    ]


# --------------------------------------------------------------------------- loading, query


def test_resolve_version_dir_picks_highest_version(served, tmp_path):
    assert (served.first.name, served.second.name) == ("1", "2")
    assert resolve_version_dir(served.model_dir) == served.second
    assert resolve_version_dir(served.first) == served.first
    assert "retrieve" in load_exported(served.model_dir).signatures
    (tmp_path / "3").mkdir()  # an empty numbered folder is not a SavedModel
    with pytest.raises(FileNotFoundError, match="integer version sub-folders"):
        resolve_version_dir(tmp_path)


def test_query_images_matches_numpy_ranking(served):
    got = query_images(served.model_dir, served.queries, top=6, batch_size=2)
    assert got == _expected_neighbours(served, served.queries, 6)
    # A database image finds an item at distance 0 first (itself or an equal code before it).
    assert got[-1][0].distance == 0
    assert got[-1][0].index <= 3


def test_query_images_accepts_loaded_export_and_caps_top(served):
    got = query_images(served.loaded, served.queries[:1], top=3)
    assert got == _expected_neighbours(served, served.queries[:1], 3)
    capped = query_images(served.model_dir, served.queries[:1], top=1000)
    assert len(capped[0]) == 25  # the export's max_k
    assert query_images(served.model_dir, [], top=3) == []


def test_query_images_errors(served):
    with pytest.raises(ValueError, match="without a 'retrieve' signature"):
        query_images(served.first, served.queries[:1])
    with pytest.raises(ValueError, match="top=0"):
        query_images(served.loaded, served.queries[:1], top=0)
    with pytest.raises(ValueError, match="batch_size=-1"):
        query_images(served.loaded, served.queries[:1], batch_size=-1)


def test_query_image_folder_or_missing_file_is_named(served, tmp_path):
    from hpsh_tf2.errors import DatasetError, HPSHError

    with pytest.raises(DatasetError, match=rf"query image '{tmp_path}' is a folder") as info:
        query_images(served.loaded, [served.queries[0], tmp_path])
    assert isinstance(info.value, HPSHError)
    with pytest.raises(DatasetError, match=r"absent\.jpg' does not exist"):
        query_images(served.model_dir, [tmp_path / "absent.jpg"])
    with pytest.raises(DatasetError, match="is a folder"):
        request_image_bytes(tmp_path)


def test_tiff_query_is_converted_on_the_client(served, tmp_path):
    pixels = np.asarray(Image.open(served.queries[0]).convert("RGB"))
    tiff = tmp_path / "query.tif"
    Image.fromarray(pixels).save(tiff, format="TIFF")
    data = request_image_bytes(tiff)
    assert data.startswith(b"\x89PNG")
    np.testing.assert_array_equal(tf.io.decode_png(data).numpy(), pixels)
    assert request_image_bytes(served.queries[0]) == served.queries[0].read_bytes()
    from_tiff = query_images(served.loaded, [tiff], top=5)
    assert from_tiff == query_images(served.loaded, served.queries[:1], top=5)


def test_format_neighbours():
    neighbours = [
        Neighbour(1, 0, 3, "Beach", "Beach/beach_1.jpg", 7),
        Neighbour(2, 12, 10, "Desert", "Desert/desert_22.jpg", 40),
    ]
    lines = format_neighbours(neighbours, title="query: a.jpg").splitlines()
    assert lines[0] == "query: a.jpg"
    assert lines[1].split() == ["rank", "distance", "label", "class", "path"]
    assert lines[2].split() == ["1", "0", "3", "Beach", "Beach/beach_1.jpg"]
    assert lines[3].split() == ["2", "12", "10", "Desert", "Desert/desert_22.jpg"]
    assert lines[2].index("Beach") == lines[3].index("Desert")  # aligned columns


def test_save_query_grid(served, tmp_path):
    neighbours = query_images(served.loaded, served.queries[:1], top=4)[0]
    neighbours.append(Neighbour(5, 16, 0, "Airport", "missing/nowhere.jpg", 99))
    out = save_query_grid(
        tmp_path / "grids" / "grid.png",
        served.queries[0],
        neighbours,
        image_root=served.root,
        query_class=served.classes[0],
        columns=3,
    )
    with Image.open(out) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert height > width * 0.5  # 6 tiles in 3 columns: two rows
    pixels = np.zeros((20, 30, 3), np.uint8)
    assert save_query_grid(tmp_path / "g2.png", pixels, neighbours[:1]).is_file()


# --------------------------------------------------------------------------- REST


def _to_json(value: object) -> object:
    """NumPy outputs as TF Serving writes them in JSON (strings as UTF-8 text)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [_to_json(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return value


def _decode_b64(value: object) -> object:
    if isinstance(value, dict):
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_decode_b64(v) for v in value]
    return value


def _fake_tf_serving(loaded, body: dict) -> dict:
    """TF Serving's REST predict semantics, row and columnar, for a loaded SavedModel."""
    signature = loaded.signatures[body.get("signature_name", "serving_default")]
    specs = signature.structured_input_signature[1]
    if "instances" in body:
        columns = {name: [row[name] for row in body["instances"]] for name in specs}
    else:
        columns = body["inputs"]
    inputs = {
        name: tf.constant(_decode_b64(columns[name]), dtype=spec.dtype)
        for name, spec in specs.items()
    }
    outputs = {name: value.numpy() for name, value in signature(**inputs).items()}
    if "instances" in body:
        batch = len(body["instances"])
        return {
            "predictions": [
                {name: _to_json(value[i]) for name, value in outputs.items()} for i in range(batch)
            ]
        }
    return {"outputs": {name: _to_json(value) for name, value in outputs.items()}}


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        if self.path != f"/v1/models/{MODEL_NAME}:predict":
            self._reply(404, {"error": f"Servable not found for request: {self.path}"})
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        try:
            answer = _fake_tf_serving(self.server.loaded, body)
        except tf.errors.InvalidArgumentError as err:
            self._reply(400, {"error": err.message})
            return
        self._reply(200, answer)

    def _reply(self, code: int, payload: dict) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass


@pytest.fixture(scope="module")
def rest_url(served):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.loaded = served.loaded
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rest_predict_url(MODEL_NAME, host="127.0.0.1", port=server.server_address[1])
    server.shutdown()
    server.server_close()


def test_rest_round_trip_serving_default(served, rest_url):
    data = [p.read_bytes() for p in served.queries]
    got = predict_rest(rest_url, data)
    direct = served.loaded.signatures["serving_default"](image_bytes=tf.constant(data))
    assert set(got) == {"codes", "packed_codes", "scores"}
    assert got["codes"].dtype == np.uint8 and got["scores"].dtype == np.float32
    np.testing.assert_array_equal(got["codes"], direct["codes"].numpy())
    np.testing.assert_array_equal(got["packed_codes"], direct["packed_codes"].numpy())
    np.testing.assert_array_equal(got["scores"], direct["scores"].numpy())
    np.testing.assert_array_equal(got["codes"], _pipeline_codes(served.model, served.queries))


def test_rest_round_trip_retrieve(served, rest_url):
    data = [p.read_bytes() for p in served.queries]
    got = predict_rest(rest_url, data, signature_name="retrieve", extra_inputs={"k": 4})
    expected = _expected_neighbours(served, served.queries, 4)
    np.testing.assert_array_equal(got["indices"], [[n.index for n in row] for row in expected])
    np.testing.assert_array_equal(got["distances"], [[n.distance for n in row] for row in expected])
    assert got["paths"].tolist() == [[n.path for n in row] for row in expected]
    assert got["class_names"].tolist() == [[n.class_name for n in row] for row in expected]
    assert got["labels"].dtype == np.int32


def test_rest_errors_carry_the_server_message(served, rest_url):
    with pytest.raises(RuntimeError, match=r"HTTP 400.*not a JPEG, PNG, GIF, BMP or WebP"):
        predict_rest(rest_url, [b"definitely not an image"])
    with pytest.raises(RuntimeError, match="HTTP 404"):
        predict_rest(rest_url.replace(MODEL_NAME, "other"), [b"x"])


def test_make_predict_request_formats():
    images = [b"\xff\xd8\xff\x00abc", b"\x89PNG\r\n"]
    row = make_predict_request(images)
    assert row == {
        "signature_name": "serving_default",
        "instances": [
            {"image_bytes": {"b64": "/9j/AGFiYw=="}},
            {"image_bytes": {"b64": "iVBORw0K"}},
        ],
    }
    column = make_predict_request(images[:1], "retrieve", extra_inputs={"k": 3})
    assert column == {
        "signature_name": "retrieve",
        "inputs": {"image_bytes": [{"b64": "/9j/AGFiYw=="}], "k": 3},
    }
    assert json.loads(json.dumps(column)) == column
    with pytest.raises(TypeError, match=r"image_bytes_list\[1\] of type str"):
        make_predict_request([b"ok", "not bytes"])
    with pytest.raises(TypeError, match="image_bytes_list of type bytes"):
        make_predict_request(b"a single bytes object")


def test_parse_predict_response():
    rows = {"predictions": [{"codes": [1, 0], "paths": ["a"]}, {"codes": [0, 0], "paths": ["b"]}]}
    parsed = parse_predict_response(rows)
    assert parsed["codes"].dtype == np.uint8
    np.testing.assert_array_equal(parsed["codes"], [[1, 0], [0, 0]])
    assert parsed["paths"].tolist() == [["a"], ["b"]]
    columns = parse_predict_response(
        {"outputs": {"scores": [[0.25]], "raw_bytes": [{"b64": "AAE="}]}}
    )
    assert columns["scores"].dtype == np.float32
    assert columns["raw_bytes"].tolist() == [b"\x00\x01"]
    assert parse_predict_response({"predictions": [3, 4]})["output"].tolist() == [3, 4]
    assert parse_predict_response({"outputs": [[1.5]]})["output"].tolist() == [[1.5]]
    assert parse_predict_response({"outputs": {"indices": []}})["indices"].dtype == np.int32
    with pytest.raises(RuntimeError, match="TF Serving error: bad input"):
        parse_predict_response({"error": "bad input"})
    with pytest.raises(ValueError, match="expected 'predictions' or 'outputs'"):
        parse_predict_response({"result": []})


def test_rest_predict_url():
    assert rest_predict_url("hpsh") == "http://localhost:8501/v1/models/hpsh:predict"
    assert (
        rest_predict_url("m", host="10.0.0.2", port=9000, version=3)
        == "http://10.0.0.2:9000/v1/models/m/versions/3:predict"
    )


# --------------------------------------------------------------------------- gRPC


def test_make_grpc_request(served):
    data = [p.read_bytes() for p in served.queries[:2]]
    request = make_grpc_request(
        data, model_name=MODEL_NAME, signature_name="retrieve", k=5, version=2
    )
    assert request.model_spec.name == MODEL_NAME
    assert request.model_spec.signature_name == "retrieve"
    assert request.model_spec.version.value == 2
    assert tf.make_ndarray(request.inputs["image_bytes"]).tolist() == data
    assert tf.make_ndarray(request.inputs["k"]) == 5
    plain = make_grpc_request(data[:1], model_name=MODEL_NAME)
    assert plain.model_spec.signature_name == "serving_default"
    assert "k" not in plain.inputs and not plain.model_spec.HasField("version")
    # The proto's tensors feed the SavedModel exactly as TF Serving would.
    out = served.loaded.signatures["retrieve"](
        image_bytes=tf.constant(tf.make_ndarray(request.inputs["image_bytes"])),
        k=tf.constant(tf.make_ndarray(request.inputs["k"])),
    )
    assert out["indices"].shape == (2, 5)


# --------------------------------------------------------------------------- GeoTIFF queries


def _s2_tile_and_chip(tmp_path: Path, bands: tuple[int, ...]) -> tuple[np.ndarray, Path]:
    """A tile read from a 13-band uint16 scene with ``bands`` and '0-3000', and a GeoTIFF
    holding the same raw values (no CRS)."""
    from hpsh_tf2.geo.raster import SceneReader, open_scene
    from tests.geo.conftest import write_geotiff

    stack = np.random.default_rng(9).integers(0, 4000, (13, 120, 160)).astype(np.uint16)
    scene = write_geotiff(tmp_path / "scene.tif", stack, nodata=None)
    col, row, width, height = 30, 20, 64, 48
    with SceneReader(
        open_scene(scene), bands=bands, band_scale="0-3000", want=len(bands)
    ) as reader:
        tile = reader.read_window(col, row, width, height)[0]
    chip = stack[:, row : row + height, col : col + width]
    return tile, write_geotiff(tmp_path / "chip.tif", chip, crs=None, nodata=None)


@pytest.mark.parametrize("bands", [(4, 3, 2), (4, 3, 2, 8)])
def test_geotiff_query_gets_the_code_of_the_same_scene_tile(tmp_path, bands):
    """``query --image FILE.tif``: the file is read with the band settings the export records
    (one reader), so it finds the scene tile it was cut from at distance 0."""
    from hpsh_tf2.serving import export_reading, load_exported
    from tests.index.conftest import export_tiny

    tile, chip = _s2_tile_and_chip(tmp_path, bands)
    noise = np.random.default_rng(1).integers(0, 256, (4, *tile.shape), dtype=np.uint8)
    tiles = np.concatenate([noise[:2], tile[None], noise[2:]])
    plain = export_tiny(tmp_path / "plain", input_bands=len(bands))
    codes = load_exported(plain).signatures["encode_pixels"](pixels=tf.constant(tiles))
    database = RetrievalDatabase(
        codes["packed_codes"].numpy(), np.zeros(5, int), [f"t{i}" for i in range(5)], ("x",)
    )
    version = export_tiny(
        tmp_path / "db",
        input_bands=len(bands),
        bands=list(bands),
        band_scale="0-3000",
        database=database,
    )
    reading = export_reading(version)
    assert reading.bands == bands and reading.input_bands == len(bands)
    (neighbours,) = query_images(version, [chip], top=2)
    assert (neighbours[0].path, neighbours[0].distance) == ("t2", 0)


def test_make_pixels_request_is_the_rest_body_of_encode_pixels():
    from hpsh_tf2.serving import make_pixels_request

    pixels = np.arange(2 * 2 * 3 * 4, dtype=np.uint8).reshape(2, 2, 3, 4)
    body = make_pixels_request(pixels)
    assert body["signature_name"] == "encode_pixels"
    assert np.array_equal(np.asarray([i["pixels"] for i in body["instances"]]), pixels)
    body = make_pixels_request(pixels, "retrieve_pixels", extra_inputs={"k": 3})
    assert body["inputs"]["k"] == 3 and np.array_equal(body["inputs"]["pixels"], pixels)
    json.dumps(body)
    with pytest.raises(ValueError, match="uint8"):
        make_pixels_request(pixels.astype(np.float32))
