"""An export whose database carries multi-hot labels: the label text out, nothing else."""

from __future__ import annotations

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from hpsh_tf2.export import RetrievalDatabase, export_saved_model

BITS = 16
NAMES = ("Forest", "River", "Beach")


def _database(rows=12, seed=0):
    rng = np.random.default_rng(seed)
    packed = rng.integers(0, 256, (rows, BITS // 8), dtype=np.uint8)
    labels = (rng.random((rows, 3)) < 0.5).astype(np.uint8)
    labels[np.arange(rows), rng.integers(0, 3, rows)] = 1
    return RetrievalDatabase(packed, labels, [f"m/{i:03d}.jpg" for i in range(rows)], NAMES)


def test_label_text_and_indices_of_a_multi_label_database():
    database = _database()
    expected = [";".join(n for n, on in zip(NAMES, row) if on) for row in database.labels]
    assert list(database.label_names) == expected
    np.testing.assert_array_equal(database.label_indices, -1)
    single = RetrievalDatabase(database.packed_codes, np.arange(12) % 3, database.paths, NAMES)
    assert single.label_names == tuple(NAMES[i % 3] for i in range(12))
    np.testing.assert_array_equal(single.label_indices, np.arange(12) % 3)


def test_bad_multi_hot_database_labels_are_refused():
    database = _database()
    with pytest.raises(ValueError, match="expected integers of shape"):
        RetrievalDatabase(database.packed_codes, database.labels[:, :2], database.paths, NAMES)


def test_retrieve_returns_the_joined_label_names(tmp_path):
    database = _database()
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(BITS, activation="sigmoid")(pooled))
    path = export_saved_model(
        image_model=model,
        backbone="mobilenet_v2",
        image_size=32,
        bits=BITS,
        export_dir=tmp_path,
        model_name="multi",
        database=database,
        max_k=5,
    )
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(buffer, "PNG")
    loaded = tf.saved_model.load(str(path))
    out = loaded.signatures["retrieve"](
        image_bytes=tf.constant([buffer.getvalue()]), k=tf.constant(5)
    )
    indices = out["indices"].numpy()[0]
    names = [s.decode() for s in out["class_names"].numpy()[0]]
    assert names == [database.label_names[i] for i in indices]
    assert any(";" in name for name in database.label_names)
    np.testing.assert_array_equal(out["labels"].numpy(), -1)
