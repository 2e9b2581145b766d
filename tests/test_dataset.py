"""Tests of hpsh_tf2.dataset.read_data: the data.format readers and the verified-scan cache."""

from __future__ import annotations

import os

import numpy as np

from hpsh_tf2.data.formats import ReadRequest
from hpsh_tf2.dataset import data_format, read_data
from tests.data.conftest import make_class_tree, noisy_rgb, write_image


def _manifest(root, rows):
    (root / "m.csv").write_text("path,labels\n" + "\n".join(rows) + "\n")
    return str(root / "m.csv")


def test_data_format_defaults() -> None:
    assert data_format(None, None) == "folders"
    assert data_format(None, "m.csv") == "manifest"
    assert data_format("mlrsnet", None) == "mlrsnet"


def test_folders_go_through_the_cached_scan(tmp_path) -> None:
    root = make_class_tree(tmp_path / "d", {"a": 2, "b": 2}, size=4)
    cache = tmp_path / "scan_cache.json"
    first, hit = read_data("folders", ReadRequest(root=str(root)), cache)
    again, hit_again = read_data("folders", ReadRequest(root=str(root)), cache)
    assert (hit, hit_again) == (False, True) and again == first


def test_manifest_scan_is_cached_until_a_file_or_label_changes(tmp_path) -> None:
    for i in range(4):
        write_image(tmp_path / f"i{i}.png", noisy_rgb(6, 6, i))
    (tmp_path / "bad.png").write_bytes(b"broken")
    rows = ["i0.png,A;B", "i1.png,B", "i2.png,A", "i3.png,C", "bad.png,C"]
    request = ReadRequest(root=str(tmp_path), manifest=_manifest(tmp_path, rows))
    cache = tmp_path / "scan_cache.json"
    first, hit = read_data("manifest", request, cache)
    assert not hit and [s.path for s in first.skipped] == ["bad.png"]
    again, hit = read_data("manifest", request, cache)
    assert hit and again == first and again.multi_label
    np.testing.assert_array_equal(again.labels, first.labels)
    assert again.skipped[0].labels == ("C",)
    # Touching a listed image invalidates the cache.
    stat = (tmp_path / "i1.png").stat()
    os.utime(tmp_path / "i1.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    _, hit = read_data("manifest", request, cache)
    assert not hit
    # So does a changed label.
    rows[1] = "i1.png,A"
    request = ReadRequest(root=str(tmp_path), manifest=_manifest(tmp_path, rows))
    changed, hit = read_data("manifest", request, cache)
    assert not hit and changed.labels[1].tolist() == [1, 0, 0]
