"""Tests of hpsh_tf2.index.build on real images: codes, incremental rebuilds, bad files,
exactness on the AID sample, another model refused, and a build killed with SIGKILL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("pymilvus", reason="the index extra is not installed (pip install .[index])")

from hpsh_tf2.errors import ModelMismatchError
from hpsh_tf2.evaluation.search import search
from hpsh_tf2.index.build import build_index, index_info, plan_build, search_images
from hpsh_tf2.index.encoder import SavedModelEncoder
from hpsh_tf2.index.store import IndexStore
from hpsh_tf2.index.walk import walk_images
from hpsh_tf2.serving import request_image_bytes
from tests.conftest import REPO_ROOT
from tests.index.conftest import export_tiny
from tests.index.test_store import assert_same_as_reference


def _signature_codes(version_dir, files) -> np.ndarray:
    """Packed codes straight from the export's serving_default, one image per call."""
    loaded = tf.saved_model.load(str(version_dir))
    serve = loaded.signatures["serving_default"]
    return np.concatenate(
        [
            serve(image_bytes=tf.constant([request_image_bytes(f)]))["packed_codes"].numpy()
            for f in files
        ]
    )


def _build(model, root, uri, **kwargs):
    return build_index(model, root, uri=str(uri), progress=False, batch_size=8, **kwargs)


def test_build_indexes_serving_codes_and_rebuilds_incrementally(
    tmp_path, tiny_export, small_archive, aid_root
):
    uri = tmp_path / "index.db"
    first = _build(tiny_export, small_archive, uri, workdir=tmp_path)
    assert (first.files, first.added, first.updated, first.removed, first.rows) == (
        20,
        20,
        0,
        0,
        20,
    )
    walk = walk_images(small_archive)
    paths = [f.path for f in walk.files]
    with IndexStore(str(uri)) as store:
        stored = store.codes(paths)
    expected = _signature_codes(tiny_export, [walk.absolute(p) for p in paths])
    np.testing.assert_array_equal(stored, expected)

    again = _build(tiny_export, small_archive, uri, workdir=tmp_path)
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, 20)

    # add five images of a fifth class, delete two, change one
    extra_class = sorted(p.name for p in aid_root.iterdir() if p.is_dir())[10]
    new_files = sorted((aid_root / extra_class).iterdir())[:5]
    (small_archive / extra_class).mkdir()
    for path in new_files:
        shutil.copy2(path, small_archive / extra_class / path.name)
    removed = paths[:2]
    for rel in removed:
        (small_archive / rel).unlink()
    changed = small_archive / paths[5]
    shutil.copyfile(new_files[0], changed)  # other pixels, new size and mtime
    third = _build(tiny_export, small_archive, uri, workdir=tmp_path)
    assert (third.added, third.updated, third.removed, third.unchanged) == (5, 1, 2, 17)
    assert third.rows == 23
    with IndexStore(str(uri)) as store:
        assert not set(removed) & set(store.fingerprints())
        np.testing.assert_array_equal(
            store.codes([paths[5]]), _signature_codes(tiny_export, [changed])
        )

    hits = search_images([new_files[3]], uri=str(uri), top=5)[0]
    assert hits[0].path == f"{extra_class}/{new_files[3].name}"
    assert hits[0].distance == 0
    assert hits[0].class_name == extra_class
    info = index_info(str(uri), workdir=tmp_path)
    assert info["rows"] == 23
    assert info["classes"][extra_class] == 5
    assert info["last_build"]["added"] == 5


def test_bad_files_are_skipped_and_reported(tmp_path, tiny_export, small_archive):
    (small_archive / "Airport" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (small_archive / "empty.png").write_bytes(b"")
    (small_archive / "readme.txt").write_text("not an image")
    report = _build(tiny_export, small_archive, tmp_path / "index.db", workdir=tmp_path)
    assert sorted(s.path for s in report.skipped) == ["Airport/broken.jpg", "empty.png"]
    assert all(s.reason for s in report.skipped)
    assert (report.files, report.added, report.rows, report.ignored) == (22, 20, 20, 1)
    assert "2 skipped" in report.summary()
    # a file that was good and turns bad loses its row
    target = small_archive / "Airport" / sorted(os.listdir(small_archive / "Airport"))[0]
    target.write_bytes(b"garbage")
    again = _build(tiny_export, small_archive, tmp_path / "index.db", workdir=tmp_path)
    assert again.rows == 19
    assert len(again.skipped) == 3


def test_encoder_isolates_bad_images_inside_a_batch(tiny_export, small_archive, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xffjunk")
    good = sorted((small_archive / "Airport").iterdir())[:3]
    encoder = SavedModelEncoder(tiny_export)
    result = encoder.encode_files([good[0], bad, good[1], tmp_path / "missing.jpg", good[2]])
    assert result.ok == (0, 2, 4)
    assert [position for position, _ in result.bad] == [1, 3]
    np.testing.assert_array_equal(result.packed, _signature_codes(tiny_export, good))


def test_index_distances_equal_tf_search_on_the_aid_sample(tmp_path, tiny_export, aid_root):
    uri = str(tmp_path / "index.db")
    report = build_index(tiny_export, aid_root, uri=uri, progress=False, workdir=tmp_path)
    assert report.rows == report.files == 300
    paths = [f.path for f in walk_images(aid_root).files]
    with IndexStore(uri) as store:
        packed = store.codes(paths)
        queries = packed[::7]
        hits = store.search(queries, top=20)
    ref = search(queries, packed, k=20, backend="tf", packed=True)
    bits = np.unpackbits(packed, axis=1)
    true = (bits[::7, None, :] != bits[None, :, :]).sum(axis=2)
    assert_same_as_reference(hits, ref.indices, ref.distances, true, paths)


def test_another_model_is_refused(tmp_path, tiny_export, small_archive):
    uri = str(tmp_path / "index.db")
    _build(tiny_export, small_archive, uri, workdir=tmp_path)
    other = export_tiny(tiny_export.parent.parent, seed=6)  # version 2 of the same name
    with pytest.raises(ModelMismatchError, match=r"was built with model tiny v1.*received model"):
        _build(other, small_archive, uri, workdir=tmp_path)
    query = next((small_archive / "Airport").iterdir())
    with pytest.raises(ModelMismatchError, match="tiny v2"):
        search_images([query], uri=uri, model_dir=other)
    # the model folder (highest version) is the new model too; the version folder is accepted
    assert search_images([query], uri=uri, model_dir=tiny_export, top=1)[0][0].distance == 0


def test_plan_build_compares_fingerprints(small_archive):
    walk = walk_images(small_archive)
    indexed = {f.path: f.fingerprint for f in walk.files[:10]}
    indexed[walk.files[0].path] = (0, 0)
    indexed["gone.jpg"] = (1, 1)
    plan = plan_build(walk, indexed)
    assert plan.delete == ("gone.jpg",)
    assert [f.path for f in plan.encode] == [walk.files[0].path] + [f.path for f in walk.files[10:]]
    assert plan.replace == {walk.files[0].path}
    assert plan.unchanged == 9


_KILLED_BUILD = textwrap.dedent(
    """
    import os, signal, sys
    from hpsh_tf2.index.build import build_index

    def die(written):
        if written >= 8:
            os.kill(os.getpid(), signal.SIGKILL)

    build_index(sys.argv[1], sys.argv[2], uri=sys.argv[3], batch_size=4, progress=False,
                workdir=sys.argv[4], on_batch=die)
    """
)


def test_a_build_killed_with_sigkill_resumes_without_loss_or_duplicates(
    tmp_path, tiny_export, small_archive
):
    uri = str(tmp_path / "index.db")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_BUILD, str(tiny_export), str(small_archive), uri,
         str(tmp_path)],
        env=env, cwd=REPO_ROOT, capture_output=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    with IndexStore(uri) as store:
        landed = store.fingerprints()
    assert 0 < len(landed) < 20  # interrupted part-way
    report = _build(tiny_export, small_archive, uri, workdir=tmp_path)
    assert report.unchanged == len(landed)  # the batches that landed are not encoded again
    assert report.added == 20 - len(landed)
    assert report.rows == 20
    with IndexStore(uri) as store:
        rows = list(store.iter_rows(("size",)))
    assert sorted(r["path"] for r in rows) == [f.path for f in walk_images(small_archive).files]


def test_a_thirteen_band_tiff_is_skipped_with_the_band_settings_to_set(tiny_export, tmp_path):
    from hpsh_tf2.index.encoder import SavedModelEncoder
    from tests.geo.conftest import write_geotiff

    values = np.random.default_rng(0).integers(0, 4000, (13, 16, 16)).astype(np.uint16)
    path = write_geotiff(tmp_path / "s2.tif", values, nodata=None)
    result = SavedModelEncoder(tiny_export).encode_files([path])
    assert result.ok == () and len(result.bad) == 1
    reason = result.bad[0][1]
    assert "s2.tif has 13 bands of uint16; set data.bands (e.g. [4, 3, 2])" in reason
    assert "data.band_scale (e.g. '0-3000'), or model.input_bands" in reason
