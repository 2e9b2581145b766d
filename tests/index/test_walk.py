"""Tests of hpsh_tf2.index.walk: any layout, classes from the first folder, fingerprints."""

from __future__ import annotations

import os

import pytest

from hpsh_tf2.errors import DatasetError
from hpsh_tf2.index.walk import walk_images


def test_walk_lists_images_with_class_and_fingerprint(tmp_path):
    files = {
        "top.png": b"a",
        "Airport/a1.jpg": b"bb",
        "Airport/sub/deep.TIF": b"ccc",
        "Beach/b1.jpeg": b"dddd",
        "Beach/notes.txt": b"x",
        "Beach/.hidden.jpg": b"x",
        ".cache/c.jpg": b"x",
    }
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    os.utime(tmp_path / "Beach/b1.jpeg", ns=(1_000_000_123, 2_000_000_456))

    result = walk_images(tmp_path)

    assert [f.path for f in result.files] == [
        "Airport/a1.jpg",
        "Airport/sub/deep.TIF",
        "Beach/b1.jpeg",
        "top.png",
    ]
    assert [f.class_name for f in result.files] == ["Airport", "Airport", "Beach", ""]
    assert [f.size for f in result.files] == [2, 3, 4, 1]
    beach = result.files[2]
    assert beach.mtime_ns == 2_000_000_456
    assert beach.fingerprint == (4, os.stat(tmp_path / "Beach/b1.jpeg").st_mtime_ns)
    # notes.txt, .hidden.jpg and the .cache folder
    assert result.ignored == 3
    assert result.absolute("Airport/sub/deep.TIF") == str(tmp_path / "Airport" / "sub" / "deep.TIF")


def test_walk_rejects_a_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        walk_images(tmp_path / "nope")
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match="is not a folder"):
        walk_images(tmp_path / "file.jpg")
