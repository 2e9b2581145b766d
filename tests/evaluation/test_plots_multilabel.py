"""Figures with multi-hot labels: frames by shared labels, titles with every label."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hpsh_tf2.evaluation import plots as P
from hpsh_tf2.evaluation import relevance

NAMES = ["Forest", "River", "Beach"]


def _rgb(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def _count(rgb, color, tolerance=25):
    return int((np.abs(rgb - np.array(color)).max(axis=-1) <= tolerance).sum())


def _grid(tmp_path, retrieved):
    path = tmp_path / "grid.png"
    P.save_retrieval_grid(
        path,
        query_image=np.full((32, 32, 3), 128, np.uint8),
        retrieved_images=[np.full((32, 32, 3), 90, np.uint8)] * len(retrieved),
        query_label=np.array([1, 1, 0]),
        retrieved_labels=[np.array(r) for r in retrieved],
        class_names=NAMES,
        columns=3,
        dpi=40,
    )
    return _rgb(path)


def test_a_result_sharing_one_label_is_framed_green(tmp_path):
    rgb = _grid(tmp_path, [[0, 1, 1], [1, 0, 0]])
    assert _count(rgb, P._GREEN) > 100
    assert _count(rgb, P._RED, tolerance=60) == 0


def test_a_result_sharing_no_label_is_framed_red(tmp_path):
    rgb = _grid(tmp_path, [[0, 0, 1], [1, 0, 1]])
    assert _count(rgb, P._RED) > 100
    assert _count(rgb, P._GREEN) > 100


@pytest.mark.parametrize(
    ("query", "item", "expected"),
    [
        (np.array([1, 0, 1]), np.array([0, 0, 1]), True),
        (np.array([1, 0, 0]), np.array([0, 1, 1]), False),
        ("Forest;River", "River", True),
        ("Forest", "Beach;River", False),
        ("?", "Forest", False),
        (2, 2, True),
        (2, 1, False),
    ],
)
def test_item_relevance_in_each_label_form(query, item, expected):
    assert relevance.item_relevant(query, item) is expected


def test_titles_name_every_label():
    assert P._class_name(np.array([1, 0, 1]), NAMES) == "Forest;Beach"
    assert P._class_name(1, NAMES) == "River"


def test_code_projection_of_multi_hot_labels(tmp_path):
    rng = np.random.default_rng(0)
    labels = (rng.random((40, 3)) < 0.5).astype(np.uint8)
    labels[:, 0] |= labels.sum(axis=1) == 0
    used = P.save_code_projection(
        tmp_path / "emb.png", codes=rng.integers(0, 2, (40, 16)), labels=labels, class_names=NAMES
    )
    assert used in ("pca", "tsne") and (tmp_path / "emb.png").is_file()
