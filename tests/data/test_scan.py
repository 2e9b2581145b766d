"""Tests of hpsh_tf2.data.scan."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from hpsh_tf2.data.scan import ScanResult, SkippedFile, scan_dataset
from hpsh_tf2.errors import BadImageError, DatasetError
from tests.data.conftest import make_class_tree, noisy_rgb, write_image


def _corrupt(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_scan_basic_layout_sorting_and_labels(tmp_path: Path) -> None:
    root = make_class_tree(tmp_path / "ds", {"b_cls": 2, "a_cls": 3, "C_cls": 1})
    result = scan_dataset(root)
    # Python string order: upper case before lower case.
    assert result.class_names == ("C_cls", "a_cls", "b_cls")
    assert result.paths == (
        "C_cls/C_cls_000.png",
        "a_cls/a_cls_000.png",
        "a_cls/a_cls_001.png",
        "a_cls/a_cls_002.png",
        "b_cls/b_cls_000.png",
        "b_cls/b_cls_001.png",
    )
    np.testing.assert_array_equal(result.labels, [0, 1, 1, 1, 2, 2])
    assert result.labels.dtype == np.int32
    assert result.skipped == ()
    assert result.ignored == 0
    assert result.root == str(root.absolute())
    assert result.counts_per_class() == {"C_cls": 1, "a_cls": 3, "b_cls": 2}
    assert result.num_classes == 3
    assert len(result) == 6


def test_scan_files_sorted_by_name_not_creation_order(tmp_path: Path) -> None:
    for name in ["z.png", "a.png", "m.png"]:
        write_image(tmp_path / "cls" / name, noisy_rgb(4, 4))
    assert scan_dataset(tmp_path).paths == ("cls/a.png", "cls/m.png", "cls/z.png")


def test_scan_extensions_any_case_and_ignored_files(tmp_path: Path) -> None:
    cls = tmp_path / "cls"
    for name in ["a.TIF", "b.Tiff", "c.JPG", "d.jpeg", "e.PnG"]:
        write_image(cls / name, noisy_rgb(6, 6))
    (cls / "notes.txt").write_text("x")
    write_image(cls / "f.gif", noisy_rgb(6, 6))  # not in IMAGE_EXTENSIONS
    write_image(cls / ".hidden.png", noisy_rgb(6, 6))
    (cls / "nested").mkdir()
    write_image(cls / "nested" / "g.png", noisy_rgb(6, 6))
    (tmp_path / "README.md").write_text("hello")
    hidden_class = tmp_path / ".cache"
    write_image(hidden_class / "h.png", noisy_rgb(6, 6))
    result = scan_dataset(tmp_path)
    assert result.class_names == ("cls",)
    assert result.paths == tuple(
        f"cls/{n}" for n in ["a.TIF", "b.Tiff", "c.JPG", "d.jpeg", "e.PnG"]
    )
    # notes.txt, f.gif, .hidden.png, nested/ in the class; README.md, .cache/ in the root.
    assert result.ignored == 6


def test_scan_absolute_paths(tmp_path: Path) -> None:
    root = make_class_tree(tmp_path, {"x": 2})
    result = scan_dataset(root)
    assert result.absolute_paths() == (
        os.path.join(str(root), "x", "x_000.png"),
        os.path.join(str(root), "x", "x_001.png"),
    )
    assert all(os.path.isfile(p) for p in result.absolute_paths())


def test_scan_skips_bad_images_and_records_them(tmp_path: Path) -> None:
    root = make_class_tree(tmp_path, {"a": 3, "b": 2}, suffixes=(".jpg", ".tif"))
    _corrupt(root / "a" / "a_001.tif")
    (root / "b" / "b_000.jpg").write_bytes(b"")
    result = scan_dataset(root, on_bad_image="skip", num_workers=2)
    assert result.paths == ("a/a_000.jpg", "a/a_002.jpg", "b/b_001.tif")
    np.testing.assert_array_equal(result.labels, [0, 0, 1])
    assert [s.path for s in result.skipped] == ["a/a_001.tif", "b/b_000.jpg"]
    assert all(isinstance(s, SkippedFile) and s.reason for s in result.skipped)
    assert result.skipped_per_class() == {"a": 1, "b": 1}


def test_scan_error_mode_names_bad_file(tmp_path: Path) -> None:
    root = make_class_tree(tmp_path, {"a": 2})
    _corrupt(root / "a" / "a_001.png")
    with pytest.raises(BadImageError) as info:
        scan_dataset(root, on_bad_image="error")
    assert info.value.path == str(root / "a" / "a_001.png")
    assert "a_001.png" in str(info.value)


def test_scan_without_verify_keeps_bad_files(tmp_path: Path) -> None:
    root = make_class_tree(tmp_path, {"a": 2})
    _corrupt(root / "a" / "a_001.png")
    result = scan_dataset(root, verify=False, on_bad_image="error")
    assert result.paths == ("a/a_000.png", "a/a_001.png")
    assert result.skipped == ()


@pytest.mark.parametrize("num_workers", [1, 3])
def test_scan_same_result_for_any_worker_count(tmp_path: Path, num_workers: int) -> None:
    root = make_class_tree(tmp_path, {"a": 4, "b": 4})
    _corrupt(root / "b" / "b_002.png")
    reference = scan_dataset(root, num_workers=1)
    assert scan_dataset(root, num_workers=num_workers) == reference
    assert [s.path for s in reference.skipped] == ["b/b_002.png"]


def test_scan_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        scan_dataset(tmp_path / "nowhere")


def test_scan_root_is_file(tmp_path: Path) -> None:
    path = tmp_path / "file.txt"
    path.write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        scan_dataset(path)


def test_scan_no_class_folders(tmp_path: Path) -> None:
    (tmp_path / "README.txt").write_text("x")
    (tmp_path / ".git").mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        scan_dataset(tmp_path)


def test_scan_loose_image_in_root(tmp_path: Path) -> None:
    make_class_tree(tmp_path, {"a": 1})
    write_image(tmp_path / "stray.jpg", noisy_rgb(4, 4))
    with pytest.raises(DatasetError, match=r"stray\.jpg"):
        scan_dataset(tmp_path)


def test_scan_class_without_images_named(tmp_path: Path) -> None:
    make_class_tree(tmp_path, {"a": 1})
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "empty_class" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match="empty_class"):
        scan_dataset(tmp_path)


def test_scan_class_with_only_bad_images_named(tmp_path: Path) -> None:
    root = make_class_tree(tmp_path, {"good": 1, "broken": 2})
    for name in ["broken_000.png", "broken_001.png"]:
        _corrupt(root / "broken" / name)
    with pytest.raises(DatasetError, match=r"broken.*2 undecodable"):
        scan_dataset(root)


@pytest.mark.parametrize("value", ["ignore", "", None])
def test_scan_rejects_on_bad_image(tmp_path: Path, value: object) -> None:
    make_class_tree(tmp_path, {"a": 1})
    with pytest.raises(DatasetError, match="on_bad_image"):
        scan_dataset(tmp_path, on_bad_image=value)


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_scan_rejects_num_workers(tmp_path: Path, value: object) -> None:
    make_class_tree(tmp_path, {"a": 1})
    with pytest.raises(ValueError, match="num_workers"):
        scan_dataset(tmp_path, num_workers=value)


def test_scan_aid_sample(aid_sample_root: Path) -> None:
    result = scan_dataset(aid_sample_root)
    assert len(result.class_names) == 30
    assert list(result.class_names) == sorted(result.class_names)
    assert result.class_names[0] == "Airport"
    assert set(result.counts_per_class().values()) == {10}
    assert result.skipped == ()
    for path, label in zip(result.paths, result.labels):
        folder, file = path.split("/")
        assert folder == result.class_names[label]
        assert file.lower().endswith(".jpg")
    assert result.paths[:2] == ("Airport/airport_351.jpg", "Airport/airport_352.jpg")


def test_scan_result_labels_read_only_and_validated() -> None:
    result = ScanResult(root="/r", class_names=("a", "b"), paths=("a/1", "b/1"), labels=[0, 1])
    with pytest.raises(ValueError, match="read-only"):
        result.labels[0] = 1
    with pytest.raises(ValueError, match="one label per path"):
        ScanResult(root="/r", class_names=("a",), paths=("a/1",), labels=[0, 0])
    with pytest.raises(ValueError, match="expected values in"):
        ScanResult(root="/r", class_names=("a",), paths=("a/1",), labels=[1])


@pytest.mark.parametrize("verify", [True, False])
def test_scan_skips_and_reports_symlink_loops(tmp_path: Path, verify: bool) -> None:
    root = make_class_tree(tmp_path / "ds", {"a": 2, "b": 2})
    os.symlink("x.png", root / "a" / "x.png")  # a file link to itself
    os.symlink("loop", root / "loop")  # a root entry linking to itself
    os.symlink(".", root / "self")  # a folder linking to the root itself
    os.symlink("..", root / "parent")  # ... and to its parent
    os.symlink(".", root / "b" / "again")  # inside a class folder: a sub-folder, ignored
    result = scan_dataset(root, verify=verify)
    assert result.class_names == ("a", "b")
    assert result.paths == ("a/a_000.png", "a/a_001.png", "b/b_000.png", "b/b_001.png")
    by_path = {s.path: s.reason for s in result.skipped}
    assert set(by_path) == {"a/x.png", "loop", "self", "parent"}
    assert all("symbolic link loop" in reason for reason in by_path.values())
    assert result.skipped_per_class() == {"a": 1, "b": 0}
    assert result.ignored == 1  # b/again


def test_scan_symlink_loop_in_error_mode_is_a_bad_image(tmp_path: Path) -> None:
    root = make_class_tree(tmp_path / "ds", {"a": 2, "b": 2})
    os.symlink("x.jpg", root / "b" / "x.jpg")
    with pytest.raises(BadImageError, match="symbolic link loop") as info:
        scan_dataset(root, on_bad_image="error")
    assert info.value.path == str(root / "b" / "x.jpg")


def test_scan_follows_a_symlinked_class_folder_elsewhere(tmp_path: Path) -> None:
    other = make_class_tree(tmp_path / "other", {"c": 2})
    root = make_class_tree(tmp_path / "ds", {"a": 2})
    os.symlink(other / "c", root / "c")
    assert scan_dataset(root).class_names == ("a", "c")
