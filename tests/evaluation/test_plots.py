"""Tests of hpsh_tf2.evaluation.plots: valid PNGs of the expected size and frame colours."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from PIL import Image

from hpsh_tf2.evaluation import plots as P


def _pixels(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size, np.asarray(image.convert("RGB")).astype(int)


def _count(rgb, color, tolerance=25):
    return int((np.abs(rgb - np.array(color)).max(axis=-1) <= tolerance).sum())


def _gray(value, size=32):
    return np.full((size, size, 3), value, np.uint8)


def test_retrieval_grid_size_and_frames(tmp_path):
    path = tmp_path / "grids" / "query_0.png"
    written = P.save_retrieval_grid(
        path,
        query_image=np.full((40, 30), 128, np.uint8),  # gray-scale query
        retrieved_images=[_gray(90 + i) for i in range(9)],
        query_label=1,
        retrieved_labels=[1, 1, 2, 1, 0, 1, 1, 1, 1],
        class_names=["beach", "forest", "port"],
        distances=list(range(9)),
        columns=5,
        cell_inches=2.0,
        dpi=50,
    )
    assert written == path
    size, rgb = _pixels(path)
    assert size == (5 * 2 * 50, 2 * 2 * 50)  # 10 cells -> 2 rows of 5
    assert _count(rgb, P._RED) > 100  # two wrong results framed red
    assert _count(rgb, P._GREEN) > 100
    assert _count(rgb, P._BLUE) > 50  # the query frame
    assert not list(tmp_path.glob("grids/*.tmp"))


def test_retrieval_grid_without_mistakes_has_no_red(tmp_path):
    path = tmp_path / "all_right.png"
    P.save_retrieval_grid(
        path,
        query_image=_gray(128),
        retrieved_images=[_gray(100), _gray(110), _gray(120)],
        query_label=0,
        retrieved_labels=[0, 0, 0],
        columns=2,
        dpi=40,
    )
    size, rgb = _pixels(path)
    assert size == (2 * 2 * 40, 2 * 2 * 40)
    assert _count(rgb, P._RED, tolerance=60) == 0
    assert _count(rgb, P._GREEN) > 100


def test_retrieval_grid_validation(tmp_path):
    with pytest.raises(ValueError, match="2 retrieved_images and 1 retrieved_labels"):
        P.save_retrieval_grid(
            tmp_path / "x.png",
            query_image=_gray(1),
            retrieved_images=[_gray(1), _gray(2)],
            query_label=0,
            retrieved_labels=[0],
        )
    with pytest.raises(TypeError, match="float64"):
        P.save_retrieval_grid(
            tmp_path / "x.png",
            query_image=np.zeros((4, 4, 3)),
            retrieved_images=[],
            query_label=0,
            retrieved_labels=[],
        )
    assert not (tmp_path / "x.png").exists()


def test_pr_curve_png(tmp_path):
    path = tmp_path / "pr.png"
    P.save_pr_curve(
        path,
        precision=np.linspace(1.0, 0.4, 33),
        recall=np.linspace(0.0, 1.0, 33),
        label="32 bits",
        figsize=(4.0, 3.0),
        dpi=80,
    )
    size, rgb = _pixels(path)
    assert size == (320, 240)
    assert rgb.std() > 0  # something was drawn
    with pytest.raises(ValueError, match="same length"):
        P.save_pr_curve(path, precision=[1.0, 0.5], recall=[0.0])


def test_pca_embedding_separates_clusters():
    rng = np.random.default_rng(0)
    centers = np.array([[0] * 16, [1] * 16], np.uint8)
    labels = np.repeat([0, 1], 20)
    codes = centers[labels] ^ (rng.random((40, 16)) < 0.05).astype(np.uint8)
    points, used = P.project_codes(codes, method="pca")
    assert used == "pca" and points.shape == (40, 2)
    # The first principal axis separates the two clusters (reference: sign of the centroid gap).
    first = points[:, 0]
    assert (first[labels == 0].max() < first[labels == 1].min()) or (
        first[labels == 1].max() < first[labels == 0].min()
    )


def test_code_embedding_png_and_methods(tmp_path):
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 2, (60, 16), dtype=np.uint8)
    labels = np.repeat(np.arange(3), 20)
    used = P.save_code_projection(
        tmp_path / "emb.png",
        codes=codes,
        labels=labels,
        class_names=["a", "b", "c"],
        method="pca",
        figsize=(4.0, 4.0),
        dpi=50,
    )
    assert used == "pca"
    size, _ = _pixels(tmp_path / "emb.png")
    assert size == (200, 200)
    try:
        importlib.import_module("sklearn.manifold")
        has_sklearn = True
    except ImportError:
        has_sklearn = False
    auto = P.save_code_projection(tmp_path / "auto.png", codes=codes, labels=labels, dpi=30)
    assert auto == ("tsne" if has_sklearn else "pca")
    if not has_sklearn:
        with pytest.raises(ImportError, match="pip install scikit-learn"):
            P.project_codes(codes, method="tsne")
    with pytest.raises(ValueError, match="method='umap'"):
        P.project_codes(codes, method="umap")
    with pytest.raises(ValueError, match=r"expected \(60,\)"):
        P.save_code_projection(tmp_path / "bad.png", codes=codes, labels=labels[:5])
