"""One behavioural suite for every index backend (``index.backend``: milvus, memory).

Each test opens the backend through :func:`hpsh_tf2.index.backend.open_index`, as the index
verbs do, and checks what the protocol promises: upsert/remove by path, counts, fingerprints,
the model record, exact Hamming search (against the TF search and a NumPy popcount reference,
up to ties at the last kept distance), structured filters bound as values, and persistence
between opens. Milvus Lite runs for real.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the index extra is not installed (pip install .[index])")

from hpsh_tf2.errors import ModelMismatchError
from hpsh_tf2.evaluation.search import search
from hpsh_tf2.index.backend import (
    ArchiveIndexError,
    IndexBackend,
    Range,
    check_filters,
    open_index,
    parse_where,
    resolve_index_uri,
)
from hpsh_tf2.index.memory import MemoryIndex
from hpsh_tf2.ops.codes import np_pack_codes
from tests.index.conftest import random_codes
from tests.index.test_store import _np_distances, _record, assert_same_as_reference

BACKENDS = ("milvus", "memory")


@pytest.fixture(params=BACKENDS)
def index_at(request, tmp_path):
    """``open(collection="c") -> IndexBackend`` of one backend, on a file in ``tmp_path``."""
    uri = resolve_index_uri(request.param, None, tmp_path)

    def open_(collection: str = "c") -> IndexBackend:
        return open_index(request.param, uri, collection)

    open_.backend = request.param
    return open_


def _fill(index: IndexBackend, rows: int = 300, bits: int = 32, seed: int = 1):
    codes = random_codes(rows, bits, seed=seed)
    classes = np.array(["Airport", "Beach", "Port"])[np.arange(rows) % 3]
    paths = [f"{c}/{i:04d}.jpg" for i, c in enumerate(classes)]
    index.open_for(_record(bits))
    index.upsert(paths, np_pack_codes(codes), classes.tolist(), range(rows), [5] * rows)
    return codes, classes, paths


def test_backends_follow_the_protocol(index_at):
    with index_at() as index:
        assert isinstance(index, IndexBackend)
        assert not index.exists()
        with pytest.raises(ArchiveIndexError, match="no index at"):
            index.record()


def test_upsert_replaces_and_remove_removes(index_at):
    codes = random_codes(3, 16, seed=0)
    with index_at() as index:
        assert index.open_for(_record(16)) is True
        assert index.upsert(["a", "b", "c"], np_pack_codes(codes), ["", "X", "X"], [1, 2, 3],
                            [0, 0, 0]) == 3  # fmt: skip
        index.upsert(["b"], np_pack_codes(codes[:1]), ["Y"], [9], [7])
        assert index.count() == 3
        assert index.fingerprints() == {"a": (1, 0), "b": (9, 7), "c": (3, 0)}
        assert index.class_counts() == {"": 1, "X": 1, "Y": 1}
        index.remove(["a", "zzz"])
        assert sorted(index.fingerprints()) == ["b", "c"] and index.count() == 2
        hit = index.search(np_pack_codes(codes[:1]), top=1)[0][0]
        assert (hit.path, hit.distance, hit.class_name, hit.size, hit.mtime_ns) == (
            "b", 0, "Y", 9, 7
        )  # fmt: skip


def test_rows_and_record_persist_between_opens(index_at):
    with index_at() as index:
        _, _, paths = _fill(index, rows=30)
    with index_at() as index:
        assert index.record() == _record(32)
        assert index.open_for(_record(32)) is False
        assert sorted(index.fingerprints()) == sorted(paths)
        with pytest.raises(ModelMismatchError, match="was built with model m v1"):
            index.open_for(_record(32, model_id="b" * 16))
    with index_at("other") as other:  # another collection at the same URI is separate
        assert not other.exists()


@pytest.mark.parametrize("bits", [16, 64])
def test_search_is_exact(index_at, bits):
    with index_at() as index:
        db, _, paths = _fill(index, rows=1000, bits=bits, seed=bits)
        queries = np.concatenate([random_codes(12, bits, seed=bits + 1), db[:3]])
        hits = index.search(np_pack_codes(queries), top=15)
    ref = search(queries, db, k=15, backend="tf")
    assert_same_as_reference(hits, ref.indices, ref.distances, _np_distances(queries, db), paths)
    assert all([h.rank for h in row] == list(range(1, 16)) for row in hits)
    for row in hits:  # ties come out by path
        keys = [(h.distance, h.path) for h in row]
        assert keys == sorted(keys)


@pytest.mark.parametrize(
    "filters, keep",
    [
        ({"class": "Beach"}, lambda c, s: c == "Beach"),
        ({"class": ["Airport", "Port"]}, lambda c, s: c != "Beach"),
        ({"size": Range(100, 199)}, lambda c, s: (s >= 100) & (s <= 199)),
        ({"class": "Port", "size": Range(high=150)}, lambda c, s: (c == "Port") & (s <= 150)),
    ],
)
def test_structured_filters_restrict_and_stay_exact(index_at, filters, keep):
    with index_at() as index:
        db, classes, paths = _fill(index)
        query = random_codes(4, 32, seed=9)
        hits = index.search(np_pack_codes(query), top=10, filters=filters)
    rows = np.flatnonzero(keep(classes, np.arange(len(db))))
    ref = search(query, db[rows], k=10, backend="numpy")
    kept = [paths[i] for i in rows]
    assert all(h.path in kept for row in hits for h in row)
    assert_same_as_reference(hits, ref.indices, ref.distances, _np_distances(query, db[rows]), kept)


def test_filter_values_are_values_not_expressions(index_at):
    """A value that would widen a spliced expression matches nothing; quotes and backslashes
    in a value match exactly the rows that have them."""
    tricky = ['a"b', "a'b", "a\\b", 'x" or class != "y', "tab\tx"]
    with index_at() as index:
        _fill(index, rows=30)
        index.upsert([f"t{i}" for i in range(5)], np.zeros((5, 4), np.uint8), tricky, [1] * 5,
                     [1] * 5)  # fmt: skip
        query = np.zeros((1, 4), np.uint8)
        assert index.search(query, top=5, filters={"class": 'Beach" or class != "x'}) == [[]]
        assert index.search(query, top=5, filters={"path": "x' or 1==1 or '"}) == [[]]
        assert len(index.search(query, top=50, filters={"class": "Beach"})[0]) == 10
        for i, value in enumerate(tricky):
            hits = index.search(query, top=50, filters={"class": value})[0]
            assert [(h.path, h.class_name) for h in hits] == [(f"t{i}", value)]
        hits = index.search(query, top=50, filters={"class": tricky[:2]})[0]
        assert sorted(h.path for h in hits) == ["t0", "t1"]


def test_fewer_rows_than_top_and_bad_input(index_at):
    with index_at() as index:
        _fill(index, rows=6)
        assert len(index.search(np.zeros((2, 4), np.uint8), top=50)[1]) == 6
        with pytest.raises(ArchiveIndexError, match=r"expected \[Q, 4\]"):
            index.search(np.zeros((1, 2), np.uint8))
        with pytest.raises(ArchiveIndexError, match="filter on 'colour'"):
            index.search(np.zeros((1, 4), np.uint8), filters={"colour": "red"})
        with pytest.raises(ArchiveIndexError, match="expected a int value"):
            index.search(np.zeros((1, 4), np.uint8), filters={"size": "10"})


def test_check_filters_and_parse_where():
    assert parse_where(["class=Beach,Port", "size=10..", "mtime_ns=..99", "path=a=b"]) == {
        "class": ("Beach", "Port"),
        "size": Range(10, None),
        "mtime_ns": Range(None, 99),
        "path": "a=b",
    }
    assert parse_where(["size=3,1"]) == {"size": (1, 3)}
    for bad, pattern in [
        (["colour=red"], "FIELD=VALUE"),
        (["class"], "FIELD=VALUE"),
        (["size=big"], "expected integers for size"),
    ]:
        with pytest.raises(ArchiveIndexError, match=pattern):
            parse_where(bad)
    with pytest.raises(ArchiveIndexError, match="ranges are for numbers"):
        check_filters({"class": Range(1, 2)})
    with pytest.raises(ArchiveIndexError, match="empty list"):
        check_filters({"class": []})


# ------------------------------------------------------------------ memory backend only


def test_memory_writes_are_atomic(tmp_path, monkeypatch):
    uri = MemoryIndex.resolve_uri(None, tmp_path)
    with MemoryIndex(uri) as index:
        _fill(index, rows=9)

    def broken_savez(path, **arrays):
        with open(path, "wb") as handle:
            handle.write(b"PK\x03\x04 half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", broken_savez)
    with MemoryIndex(uri) as index, pytest.raises(OSError, match="No space"):
        index.upsert(["new.jpg"], np.zeros((1, 4), np.uint8), [""], [1], [1])
    monkeypatch.undo()
    with MemoryIndex(uri) as index:
        assert index.count() == 9 and "new.jpg" not in index.fingerprints()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.npz"]


def test_memory_refuses_milvus_options_and_other_files(tmp_path):
    with pytest.raises(ArchiveIndexError, match=r"index\.backend=memory; expected a file name"):
        MemoryIndex.resolve_uri(str(tmp_path / "index.db"), tmp_path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ArchiveIndexError, match="cannot read the memory index"):
        MemoryIndex(str(tmp_path / "junk.npz"))
    with MemoryIndex(MemoryIndex.resolve_uri(None, tmp_path)) as index:
        with pytest.raises(ArchiveIndexError, match="expected BIN_FLAT"):
            index.open_for(_record(16), index_type="BIN_IVF_FLAT")
        index.open_for(_record(16))
        with pytest.raises(ArchiveIndexError, match="search option"):
            index.search(np.zeros((1, 2), np.uint8), filter='class == "x"')
