"""Tests of hpsh_tf2.data.manifest (CSV / JSONL manifests, listed-image checks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hpsh_tf2.data.manifest import read_manifest, scan_manifest
from hpsh_tf2.errors import BadImageError, DatasetError
from tests.data.conftest import noisy_rgb, write_image


def _images(root: Path, names: list[str]) -> Path:
    for i, name in enumerate(names):
        write_image(root / name, noisy_rgb(6, 6, i))
    return root


def _csv(path: Path, rows: list[str], header: str = "path,labels") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def test_csv_manifest_multi_label(tmp_path: Path) -> None:
    root = _images(tmp_path / "img", ["b.png", "a.png", "sub/c.png"])
    manifest = _csv(tmp_path / "m.csv", ["b.png,River;Forest", "a.png,Forest", "sub/c.png,Road"])
    scan = scan_manifest(root, manifest)
    assert scan.class_names == ("Forest", "River", "Road")
    assert scan.paths == ("a.png", "b.png", "sub/c.png")
    assert scan.multi_label
    np.testing.assert_array_equal(scan.labels, [[1, 0, 0], [1, 1, 0], [0, 0, 1]])
    assert scan.counts_per_class() == {"Forest": 2, "River": 1, "Road": 1}


def test_jsonl_manifest_single_label_gives_integer_labels(tmp_path: Path) -> None:
    _images(tmp_path, ["x/1.png", "y/2.png", "3.png"])
    manifest = _jsonl(
        tmp_path / "m.jsonl",
        [
            {"path": "x/1.png", "labels": ["cat"]},
            {"path": "y/2.png", "labels": ["dog"]},
            {"path": "3.png", "labels": ["cat"]},
        ],
    )
    scan = scan_manifest(None, manifest)  # root: the manifest's folder
    assert not scan.multi_label and scan.labels.dtype == np.int32
    assert scan.paths == ("3.png", "x/1.png", "y/2.png")
    assert scan.labels.tolist() == [0, 0, 1]


@pytest.mark.parametrize(
    ("rows", "line", "expected"),
    [
        (["a.png"], 2, "expected 2"),
        (["a.png,"], 2, "expected a non-empty label name"),
        (["a.png,Forest;;River"], 2, "expected a non-empty label name"),
        (["ok.png,A", "/abs.png,A"], 3, "expected a relative path"),
        (["../up.png,A"], 2, "expected a relative path"),
        (["notes.txt,A"], 2, "expected an image file"),
        (["a.png,A", "a.png,B"], 3, "listed twice"),
    ],
)
def test_csv_bad_rows_name_file_and_line(tmp_path: Path, rows, line: int, expected: str) -> None:
    manifest = _csv(tmp_path / "m.csv", rows)
    with pytest.raises(DatasetError, match=expected) as info:
        read_manifest(manifest)
    assert str(manifest) in str(info.value)
    assert f"line {line}" in str(info.value) or f"m.csv:{line}" in str(info.value)


def test_csv_bad_header(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"line 1: header .* expected 'path,labels'"):
        read_manifest(_csv(tmp_path / "m.csv", ["a.png,A"], header="file,label"))


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ("{not json", "not valid JSON"),
        ({"path": "a.png"}, "exactly 'path' and 'labels'"),
        ({"path": "a.png", "labels": "A"}, "expected a list of label names"),
        ({"path": "a.png", "labels": []}, "expected at least one label"),
        ({"path": 3, "labels": ["A"]}, "expected a non-empty relative path"),
    ],
)
def test_jsonl_bad_rows(tmp_path: Path, record, expected: str) -> None:
    path = tmp_path / "m.jsonl"
    good = json.dumps({"path": "ok.png", "labels": ["A"]})
    bad = record if isinstance(record, str) else json.dumps(record)
    path.write_text(f"{good}\n\n{bad}\n")
    with pytest.raises(DatasetError, match=f"line 3: .*{expected}"):
        read_manifest(path)


def test_manifest_file_problems(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        read_manifest(tmp_path / "none.csv")
    with pytest.raises(DatasetError, match=r"expected \.csv or \.jsonl"):
        read_manifest(tmp_path / "m.txt")
    with pytest.raises(DatasetError, match="lists no images"):
        read_manifest(_csv(tmp_path / "m.csv", []))


def test_missing_and_undecodable_files_follow_the_bad_image_policy(tmp_path: Path) -> None:
    root = _images(tmp_path / "img", ["a.png", "c.png"])
    (root / "bad.png").write_bytes(b"not an image")
    manifest = _csv(tmp_path / "m.csv", ["a.png,A;B", "gone.png,B", "bad.png,A", "c.png,B"])
    scan = scan_manifest(root, manifest)
    assert scan.paths == ("a.png", "c.png")
    reasons = {s.path: s.reason for s in scan.skipped}
    assert set(reasons) == {"gone.png", "bad.png"}
    assert reasons["gone.png"].startswith("file not found (listed at ")
    assert reasons["gone.png"].endswith("m.csv:3)")
    assert scan.skipped_per_class() == {"A": 1, "B": 1}
    with pytest.raises(BadImageError, match=r"gone\.png|bad\.png"):
        scan_manifest(root, manifest, on_bad_image="error")
    # Without verification a missing file is still found; an undecodable one is kept.
    unverified = scan_manifest(root, manifest, verify=False)
    assert unverified.paths == ("a.png", "bad.png", "c.png")
    assert [s.path for s in unverified.skipped] == ["gone.png"]


def test_label_left_without_images_is_an_error(tmp_path: Path) -> None:
    root = _images(tmp_path / "img", ["a.png"])
    manifest = _csv(tmp_path / "m.csv", ["a.png,A", "gone.png,Lonely"])
    with pytest.raises(DatasetError, match=r"Label 'Lonely' .* has no valid image"):
        scan_manifest(root, manifest)
