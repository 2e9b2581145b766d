"""The Apache Beam encoder (local FnApiRunner): codes bit for bit equal to the in-process build."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the index extra is not installed (pip install .[index])")
pytest.importorskip("apache_beam", reason="the beam extra is not installed (pip install .[beam])")

from hpsh_tf2.index.build import build_index
from hpsh_tf2.index.store import IndexStore
from hpsh_tf2.index.walk import walk_images


def test_beam_build_equals_local_build_bit_for_bit(
    tmp_path, tiny_export, small_archive, aid_root, caplog
):
    caplog.set_level(logging.INFO, logger="apache_beam")
    (small_archive / "Airport" / "broken.jpg").write_bytes(b"\xff\xd8\xffjunk")
    kwargs = {"batch_size": 8, "progress": False, "workdir": tmp_path}
    local = build_index(tiny_export, small_archive, uri=str(tmp_path / "local.db"), **kwargs)
    beam = build_index(
        tiny_export,
        small_archive,
        uri=str(tmp_path / "beam.db"),
        runner="beam",
        **kwargs,
    )
    assert any(r.name.startswith("apache_beam") for r in caplog.records)  # Beam's log is seen
    assert "Prism" not in caplog.text  # the default runner never downloads Prism
    assert (beam.added, beam.rows, beam.runner) == (20, 20, "beam")
    assert (
        [s.path for s in beam.skipped] == [s.path for s in local.skipped] == ["Airport/broken.jpg"]
    )
    paths = [f.path for f in walk_images(small_archive).files if f.path != "Airport/broken.jpg"]
    with IndexStore(str(tmp_path / "local.db")) as a, IndexStore(str(tmp_path / "beam.db")) as b:
        np.testing.assert_array_equal(a.codes(paths), b.codes(paths))
        assert a.fingerprints() == b.fingerprints()
    assert not list((tmp_path / "index_staging").iterdir())  # shards removed after loading

    # incremental with Beam too: add five, delete two
    extra = sorted(p.name for p in aid_root.iterdir() if p.is_dir())[12]
    (small_archive / extra).mkdir()
    for path in sorted((aid_root / extra).iterdir())[:5]:
        shutil.copy2(path, small_archive / extra / path.name)
    for rel in paths[:2]:
        (small_archive / rel).unlink()
    again = build_index(
        tiny_export, small_archive, uri=str(tmp_path / "beam.db"), runner="beam", **kwargs
    )
    assert (again.added, again.removed, again.unchanged, again.rows) == (5, 2, 18, 23)
