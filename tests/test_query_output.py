"""What ``query`` and progress output look like (issue 23, item 12).

``query --out`` titled the query "?" and framed every neighbour red (the query's class is
unknown); ``--top`` above the export's ``max_k`` was cut silently; Keras' live progress bar
filled logs that are not a terminal with escape codes.
"""

from __future__ import annotations

import io
import logging
import os

import keras
import numpy as np
from PIL import Image

from hpsh_tf2 import serving
from hpsh_tf2.console import keras_verbosity
from hpsh_tf2.evaluation import plots
from hpsh_tf2.export import RetrievalDatabase, export_saved_model
from hpsh_tf2.features import extract_features
from hpsh_tf2.serving import Neighbour, query_images, save_query_grid

SIZE, BITS = 32, 16


def _count(path, color, tolerance=25) -> int:
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB")).astype(int)
    return int((np.abs(rgb - np.array(color)).max(axis=-1) <= tolerance).sum())


def _images(scene_tree):
    return [p for p in sorted(scene_tree.rglob("*")) if p.is_file()]


def test_an_unknown_query_class_frames_no_neighbour_red(tmp_path, scene_tree, monkeypatch):
    images = _images(scene_tree)
    neighbours = [
        Neighbour(r + 1, r, 0, "Beach", p.relative_to(scene_tree).as_posix(), r)
        for r, p in enumerate(images[:4])
    ]
    titles = []
    draw = serving.save_retrieval_grid

    def recording(*args, **kwargs):  # the real drawing, with its query title noted
        titles.append(kwargs["query_title"])
        return draw(*args, **kwargs)

    monkeypatch.setattr(serving, "save_retrieval_grid", recording)
    out = save_query_grid(tmp_path / "q.png", images[5], neighbours, image_root=scene_tree)
    assert _count(out, plots._RED, tolerance=60) == 0
    assert _count(out, plots._GREEN) == 0
    assert _count(out, plots._GREY, tolerance=10) > 100  # neutral frames
    assert titles == [f"query: {images[5].name}"]
    # with a known class the frames say right (green) and wrong (red), and the title says it
    neighbours[1] = Neighbour(2, 1, 1, "Forest", neighbours[1].path, 1)
    out = save_query_grid(
        tmp_path / "k.png", images[5], neighbours, image_root=scene_tree, query_class="Beach"
    )
    assert _count(out, plots._RED) > 100 and _count(out, plots._GREEN) > 100
    assert titles[-1] == f"query: {images[5].name} (Beach)"


def test_top_above_max_k_says_so_in_one_line(tmp_path, scene_tree, caplog):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(BITS, activation="sigmoid")(pooled))
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2, (6, BITS)).astype(np.uint8)
    database = RetrievalDatabase.from_codes(
        codes, np.arange(6) % 2, [f"c/{i}.png" for i in range(6)], ["a", "b"]
    )
    export_saved_model(
        image_model=model,
        backbone="mobilenet_v2",
        image_size=SIZE,
        bits=BITS,
        export_dir=tmp_path,
        model_name="m",
        database=database,
        max_k=4,
    )
    image = _images(scene_tree)[0]
    with caplog.at_level(logging.WARNING, logger="hpsh_tf2.serving"):
        (found,) = query_images(tmp_path / "m", [image], top=5)
    assert len(found) == 4
    notes = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(notes) == 1 and "top=5" in notes[0] and "max_k=4" in notes[0], notes
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hpsh_tf2.serving"):
        assert len(query_images(tmp_path / "m", [image], top=4)[0]) == 4
    assert not caplog.records


def test_keras_verbosity_follows_the_terminal():
    assert keras_verbosity(io.StringIO()) == 2
    leader, follower = os.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as terminal:
            assert keras_verbosity(terminal) == 1
    finally:
        os.close(leader)
        os.close(follower)


def test_extract_progress_is_plain_lines_off_a_terminal(tmp_path, scene_tree, capsys):
    paths = [p.relative_to(scene_tree).as_posix() for p in _images(scene_tree)[:6]]
    extract_features(
        paths=paths,
        root=scene_tree,
        out_dir=tmp_path / "features",
        backbone="mobilenet_v2",
        weights="none",
        image_size=SIZE,
        batch_size=2,
        progress=True,
    )
    out = capsys.readouterr().out
    assert "3/3" in out  # the finished loop, once
    assert "\r" not in out and "\b" not in out and "\x1b" not in out
    assert out.count("\n") <= 2
