"""Tests for hpsh_tf2.atomic: writes are all-or-nothing and leave no temporary files."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from hpsh_tf2.atomic import (
    atomic_path,
    save_npy_atomic,
    save_npz_atomic,
    write_json_atomic,
    write_text_atomic,
)


def test_writers_round_trip_and_leave_no_temp_files(tmp_path):
    write_text_atomic(tmp_path / "a" / "t.txt", "héllo")
    write_json_atomic(tmp_path / "a" / "j.json", {"k": [1, 2]})
    save_npy_atomic(tmp_path / "a" / "x.npy", np.arange(6).reshape(2, 3))
    save_npz_atomic(tmp_path / "a" / "z.npz", a=np.ones(3, np.uint8), b=np.array(["p", "q"]))
    assert (tmp_path / "a" / "t.txt").read_text(encoding="utf-8") == "héllo"
    assert json.loads((tmp_path / "a" / "j.json").read_text()) == {"k": [1, 2]}
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "x.npy"), np.arange(6).reshape(2, 3))
    with np.load(tmp_path / "a" / "z.npz") as z:
        np.testing.assert_array_equal(z["a"], np.ones(3, np.uint8))
        assert z["b"].tolist() == ["p", "q"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "j.json",
        "t.txt",
        "x.npy",
        "z.npz",
    ]


def test_failure_keeps_the_previous_file_and_removes_the_temp(tmp_path):
    target = tmp_path / "report.json"
    write_json_atomic(target, {"version": 1})
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("boom")
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_failure_without_previous_file_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="bad"), atomic_path(tmp_path / "new.bin") as tmp:
        tmp.write_bytes(b"partial")
        raise ValueError("bad")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_honour_the_umask(tmp_path, umask):
    from hpsh_tf2.atomic import current_umask
    from hpsh_tf2.config import Config, save_config

    old = os.umask(umask)
    try:
        assert current_umask() == umask
        written = [
            write_text_atomic(tmp_path / "t.txt", "x"),
            write_json_atomic(tmp_path / "j.json", {}),
            save_npy_atomic(tmp_path / "x.npy", np.zeros(2)),
            save_npz_atomic(tmp_path / "z.npz", a=np.zeros(2)),
            save_config(Config(), tmp_path / "config.yaml"),
        ]
    finally:
        os.umask(old)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name
