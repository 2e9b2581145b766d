"""The prune guard of ``index build`` (issue 23 item 4): an empty or mostly missing archive
folder does not silently empty the index."""

from __future__ import annotations

import contextlib
import io
import shutil

import pytest

pytest.importorskip("pymilvus", reason="the index extra is not installed (pip install .[index])")

from hpsh_tf2.cli import main
from hpsh_tf2.config import ConfigError, load_config
from hpsh_tf2.index.store import IndexStore


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def test_build_refuses_to_remove_many_rows_without_prune(tmp_path, tiny_export, small_archive):
    uri = str(tmp_path / "index.db")
    common = ["--model", str(tiny_export), "--quiet", "--uri", uri,
              "--set", f"output.workdir={tmp_path}"]  # fmt: skip
    assert _cli("index", "build", "--images", str(small_archive), *common)[0] == 0

    empty = tmp_path / "unmounted"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    status, out, err = _cli("index", "build", "--images", str(empty), *common)
    assert status == 2 and out == ""
    assert err.count("\n") == 1
    assert "would remove 20 of 20 rows" in err and "no image files" in err and "--prune" in err

    # 3 of 4 classes gone: 15 of 20 rows (75%) > 0.5
    for folder in sorted(p for p in small_archive.iterdir())[1:]:
        shutil.rmtree(folder)
    status, out, err = _cli("index", "build", "--images", str(small_archive), *common)
    assert status == 2 and "would remove 15 of 20 rows" in err and "75%" in err
    with IndexStore(uri) as store:
        assert store.count() == 20  # nothing removed by the refused builds

    # a higher threshold lets it through, as does --prune
    status, out, err = _cli("index", "build", "--images", str(small_archive), *common,
                            "--set", "index.max_remove_fraction=0.8")  # fmt: skip
    assert status == 0, err
    assert "15 removed" in out
    status, out, err = _cli("index", "build", "--images", str(empty), "--prune", *common)
    assert status == 0, err
    assert "5 removed" in out and ": 0 images" in out


def test_max_remove_fraction_is_validated():
    assert load_config(None, ["index.max_remove_fraction=0"]).index.max_remove_fraction == 0.0
    with pytest.raises(ConfigError, match=r"index\.max_remove_fraction"):
        load_config(None, ["index.max_remove_fraction=1.5"])
