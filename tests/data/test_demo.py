"""Tests of hpsh_tf2.data.demo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hpsh_tf2.data.demo import DEMO_CLASSES, MARKER_NAME, make_demo_dataset
from hpsh_tf2.data.images import load_image_rgb
from hpsh_tf2.data.scan import scan_dataset
from hpsh_tf2.errors import DatasetError


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_dataset(
        tmp_path_factory.mktemp("demo") / "ds", num_classes=4, images_per_class=6, image_size=32
    )


def test_layout_counts_and_formats(demo: Path) -> None:
    classes = sorted(p.name for p in demo.iterdir() if p.is_dir())
    assert classes == sorted(DEMO_CLASSES[:4])
    for name in classes:
        files = sorted(p.name for p in (demo / name).iterdir())
        assert len(files) == 6
        assert {Path(f).suffix for f in files} == {".tif", ".jpg", ".png"}
        for file in files:
            image = load_image_rgb(demo / name / file)
            assert image.shape == (32, 32, 3)
    assert not [p for p in demo.parent.iterdir() if p.name.startswith(".")]  # no temp folders


def test_marker_records_parameters(demo: Path) -> None:
    marker = json.loads((demo / MARKER_NAME).read_text())
    assert marker["num_classes"] == 4
    assert marker["images_per_class"] == 6
    assert marker["image_size"] == 32
    assert marker["seed"] == 0
    assert marker["classes"] == list(DEMO_CLASSES[:4])


def test_scan_accepts_demo(demo: Path) -> None:
    scan = scan_dataset(demo)
    assert set(scan.class_names) == set(DEMO_CLASSES[:4])
    assert set(scan.counts_per_class().values()) == {6}
    assert scan.skipped == ()
    assert scan.ignored == 1  # the hidden marker file


def test_deterministic_for_seed(tmp_path: Path, demo: Path) -> None:
    again = make_demo_dataset(tmp_path / "again", num_classes=4, images_per_class=6, image_size=32)
    assert _files(again) == _files(demo)
    other = make_demo_dataset(
        tmp_path / "other", num_classes=4, images_per_class=6, image_size=32, seed=1
    )
    other_files = _files(other)
    assert other_files.keys() == _files(demo).keys()
    assert all(other_files[k] != v for k, v in _files(demo).items() if not k.endswith(MARKER_NAME))


def test_image_content_independent_of_class_count(tmp_path: Path, demo: Path) -> None:
    small = make_demo_dataset(tmp_path / "s", num_classes=2, images_per_class=4, image_size=32)
    name = DEMO_CLASSES[1]
    for i, suffix in enumerate([".tif", ".jpg", ".png", ".tif"]):
        file = f"{name}/{name}_{i:03d}{suffix}"
        assert (small / file).read_bytes() == (demo / file).read_bytes()


def test_idempotent(tmp_path: Path) -> None:
    dest = tmp_path / "ds"
    first = make_demo_dataset(dest, num_classes=2, images_per_class=4, image_size=16)
    stamps = {p: p.stat().st_mtime_ns for p in dest.rglob("*")}
    second = make_demo_dataset(dest, num_classes=2, images_per_class=4, image_size=16)
    assert second == first
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*")} == stamps


def test_other_parameters_do_not_overwrite(tmp_path: Path) -> None:
    dest = make_demo_dataset(tmp_path / "ds", num_classes=2, images_per_class=4, image_size=16)
    before = _files(dest)
    with pytest.raises(DatasetError, match="not a demo dataset made with these parameters"):
        make_demo_dataset(dest, num_classes=3, images_per_class=4, image_size=16)
    assert _files(dest) == before


def test_incomplete_demo_is_not_reused(tmp_path: Path) -> None:
    dest = make_demo_dataset(tmp_path / "ds", num_classes=2, images_per_class=4, image_size=16)
    next(dest.rglob("*.png")).unlink()
    with pytest.raises(DatasetError, match="delete it"):
        make_demo_dataset(dest, num_classes=2, images_per_class=4, image_size=16)


def test_foreign_folder_rejected_and_empty_folder_used(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="foreign"):
        make_demo_dataset(foreign)
    assert (foreign / "mine.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    make_demo_dataset(empty, num_classes=2, images_per_class=4, image_size=16)
    assert (empty / MARKER_NAME).is_file()


def test_classes_distinct_and_images_jittered(tmp_path: Path) -> None:
    dest = make_demo_dataset(tmp_path / "ds", num_classes=8, images_per_class=12, image_size=32)
    scan = scan_dataset(dest, verify=False)
    images = np.stack([load_image_rgb(p) for p in scan.absolute_paths()]).astype(np.float64)
    # No two images are identical (per-image jitter and noise).
    flat = images.reshape(len(images), -1)
    assert len({row.tobytes() for row in flat}) == len(flat)
    # Learnable: nearest class mean of 8x8-pooled pixels, fitted on even, tested on odd images.
    pooled = images.reshape(len(images), 4, 8, 4, 8, 3).mean(axis=(2, 4)).reshape(len(images), -1)
    labels = scan.labels
    even = np.arange(len(images)) % 2 == 0
    means = np.stack([pooled[even & (labels == c)].mean(axis=0) for c in range(8)])
    dist = ((pooled[~even, None, :] - means[None]) ** 2).sum(-1)
    accuracy = (dist.argmin(axis=1) == labels[~even]).mean()
    assert accuracy >= 0.9


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 1}, "num_classes=1"),
        ({"num_classes": 9}, r"num_classes=9; expected an integer in \[2, 8\]"),
        ({"images_per_class": 3}, "images_per_class=3"),
        ({"image_size": 8}, "image_size=8"),
        ({"seed": -1}, "seed=-1"),
        ({"num_classes": 2.0}, "num_classes=2.0"),
        ({"num_classes": True}, "num_classes=True"),
    ],
)
def test_argument_validation(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_demo_dataset(tmp_path / "ds", **kwargs)
    assert not (tmp_path / "ds").exists()
