"""Tests of hpsh_tf2.index.store against Milvus Lite: exact Hamming search, filters, model record.

Exactness is checked against our TF search (:func:`hpsh_tf2.evaluation.search.search`) and a
NumPy popcount reference: distances equal, ids equal up to ties at the k-th distance.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the index extra is not installed (pip install .[index])")

from hpsh_tf2.errors import ModelMismatchError
from hpsh_tf2.evaluation.search import search
from hpsh_tf2.index.encoder import ModelRecord
from hpsh_tf2.index.store import ArchiveIndexError, IndexStore, resolve_uri
from hpsh_tf2.ops.codes import np_pack_codes
from tests.index.conftest import random_codes


def _record(bits: int, model_id: str = "a" * 16) -> ModelRecord:
    return ModelRecord(
        model_id=model_id,
        export_path="/nowhere/1",
        model_name="m",
        version=1,
        config_hash="c" * 64,
        bits=bits,
        backbone="mobilenet_v2",
        image_size=32,
    )


def _np_distances(query: np.ndarray, db: np.ndarray) -> np.ndarray:
    """Hamming distances [Q, N] of 0/1 codes."""
    return (query[:, None, :] != db[None, :, :]).sum(axis=2)


def assert_same_as_reference(hits, ref_indices, ref_distances, true_distances, paths):
    """Index hits equal the reference ranking up to ties at the last distance."""
    position = {p: i for i, p in enumerate(paths)}
    for row, row_hits in enumerate(hits):
        got_ids = np.array([position[h.path] for h in row_hits])
        got_d = np.array([h.distance for h in row_hits])
        np.testing.assert_array_equal(got_d, ref_distances[row])
        np.testing.assert_array_equal(got_d, true_distances[row, got_ids])
        last = ref_distances[row, -1]
        np.testing.assert_array_equal(
            np.sort(got_ids[got_d < last]), np.sort(ref_indices[row][ref_distances[row] < last])
        )
        assert len(set(got_ids.tolist())) == len(got_ids)


@pytest.mark.parametrize("bits", [16, 64])
def test_search_matches_tf_hamming_search_on_random_codes(tmp_path, bits):
    db = random_codes(3000, bits, seed=bits)
    queries = np.concatenate([random_codes(15, bits, seed=bits + 1), db[:5]])
    paths = [f"img/{i:05d}.jpg" for i in range(len(db))]
    with IndexStore(str(tmp_path / "index.db"), "codes") as store:
        store.create(_record(bits))
        for start in range(0, len(db), 1000):
            stop = start + 1000
            store.upsert(
                paths[start:stop],
                np_pack_codes(db[start:stop]),
                ["img"] * (stop - start),
                range(start, stop),
                [0] * (stop - start),
            )
        assert store.count() == len(db)
        hits = store.search(np_pack_codes(queries), top=20)
    ref = search(queries, db, k=20, backend="tf")
    assert_same_as_reference(hits, ref.indices, ref.distances, _np_distances(queries, db), paths)
    for row in range(15, 20):  # database items find themselves at distance 0
        assert hits[row][0].distance == 0
        assert paths.index(hits[row][0].path) == row - 15 or ref.distances[row, 1] == 0


def test_filter_restricts_to_a_class_and_stays_exact(tmp_path):
    db = random_codes(400, 32, seed=3)
    classes = np.array(["Airport", "Beach"])[np.arange(400) % 2]
    paths = [f"{c}/{i}.jpg" for i, c in enumerate(classes)]
    query = random_codes(4, 32, seed=4)
    with IndexStore(str(tmp_path / "index.db")) as store:
        store.create(_record(32))
        store.upsert(paths, np_pack_codes(db), classes.tolist(), [1] * 400, [2] * 400)
        hits = store.search(np_pack_codes(query), top=10, filter='class == "Beach"')
        assert store.count('class == "Airport"') == 200
    beach = np.flatnonzero(classes == "Beach")
    ref = search(query, db[beach], k=10, backend="numpy")
    assert all(h.class_name == "Beach" for row in hits for h in row)
    beach_paths = [paths[i] for i in beach]
    assert_same_as_reference(
        hits, ref.indices, ref.distances, _np_distances(query, db[beach]), beach_paths
    )


def test_upsert_replaces_and_delete_removes(tmp_path):
    codes = random_codes(3, 16, seed=0)
    with IndexStore(str(tmp_path / "index.db")) as store:
        store.create(_record(16))
        store.upsert(["a", "b", "c"], np_pack_codes(codes), ["", "", ""], [1, 2, 3], [0, 0, 0])
        store.upsert(["b"], np_pack_codes(codes[:1]), ["X"], [9], [7])
        assert store.count() == 3
        assert store.fingerprints() == {"a": (1, 0), "b": (9, 7), "c": (3, 0)}
        np.testing.assert_array_equal(store.codes(["b", "c"]), np_pack_codes(codes[[0, 2]]))
        store.delete(["a", "zzz"])
        assert sorted(store.fingerprints()) == ["b", "c"]
        with pytest.raises(ArchiveIndexError, match="not in"):
            store.codes(["a"])


def test_model_record_is_kept_and_another_model_refused(tmp_path):
    uri = str(tmp_path / "index.db")
    with IndexStore(uri, "m") as store:
        assert store.open_for(_record(16)) is True
    with IndexStore(uri, "m") as store:
        assert store.record() == _record(16)
        assert store.open_for(_record(16)) is False
        with pytest.raises(ModelMismatchError, match="was built with model m v1"):
            store.open_for(_record(16, model_id="b" * 16))


def test_wrong_code_width_top_and_index_type_are_refused(tmp_path):
    with IndexStore(str(tmp_path / "index.db")) as store:
        with pytest.raises(ArchiveIndexError, match="no index at"):
            store.record()
        with pytest.raises(ArchiveIndexError, match="Milvus Lite supports BIN_FLAT only"):
            store.create(_record(16), index_type="BIN_IVF_FLAT")
        store.create(_record(16))
        with pytest.raises(ArchiveIndexError, match=r"expected \[Q, 2\]"):
            store.search(np.zeros((1, 4), np.uint8))
        with pytest.raises(ArchiveIndexError, match="top=0"):
            store.search(np.zeros((1, 2), np.uint8), top=0)
        with pytest.raises(ArchiveIndexError, match="filter='klass == 1', which Milvus rejects"):
            store.search(np.zeros((1, 2), np.uint8), filter="klass == 1")


def test_closing_the_last_store_stops_the_milvus_lite_server(tmp_path):
    from milvus_lite.server_manager import server_manager_instance

    uri = str(tmp_path / "index.db")
    first = IndexStore(uri)
    second = IndexStore(uri)
    first.create(_record(16))
    first.close()
    assert second.exists()  # still served for the other store
    second.close()
    second.close()  # idempotent
    assert os.path.realpath(uri) not in server_manager_instance._servers
    with IndexStore(uri) as again:  # restarts on the kept file
        assert again.record() == _record(16)


def test_resolve_uri_defaults_to_workdir_file(tmp_path):
    assert resolve_uri(None, tmp_path / "run") == str(tmp_path / "run" / "index.db")
    assert (tmp_path / "run").is_dir()
    assert resolve_uri("http://milvus:19530", tmp_path) == "http://milvus:19530"
    with pytest.raises(ArchiveIndexError, match=r"ending in \.db"):
        resolve_uri(str(tmp_path / "index"), tmp_path)
