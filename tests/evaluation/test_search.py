"""Tests of hpsh_tf2.evaluation.search: the three backends agree with brute force."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from hpsh_tf2.evaluation import search as S
from hpsh_tf2.ops.codes import np_pack_codes


def _brute_force(query, db, k, exclude_self):
    dist = (query[:, None, :] != db[None, :, :]).sum(-1)
    if exclude_self:
        dist[np.arange(query.shape[0]), np.arange(query.shape[0])] = 10**6
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(dist, order, axis=1)


def _tied_codes(rows, bits, distinct, seed):
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 2, (distinct, bits), dtype=np.uint8)
    return pool[rng.integers(0, distinct, rows)]


def _faiss_available() -> bool:
    try:
        importlib.import_module("faiss")
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize(("bits", "distinct"), [(16, 5), (64, 60), (96, 20)])
@pytest.mark.parametrize("backend", ["tf", "numpy"])
def test_backends_match_brute_force(backend, bits, distinct, exclude_self):
    db = _tied_codes(350, bits, distinct, seed=bits)
    query = db[:40]
    result = S.search(query, db, k=15, exclude_self=exclude_self, backend=backend, chunk_size=100)
    ref_idx, ref_dist = _brute_force(query, db, 15, exclude_self)
    assert result.indices.dtype == np.int64 and result.distances.dtype == np.int32
    np.testing.assert_array_equal(result.indices, ref_idx)
    np.testing.assert_array_equal(result.distances, ref_dist)


@pytest.mark.parametrize("exclude_self", [False, True])
def test_faiss_backend_matches_or_explains_install(exclude_self):
    db = _tied_codes(300, 32, 8, seed=11)
    query = db[:25]
    if not _faiss_available():
        with pytest.raises(ImportError, match="pip install faiss-cpu"):
            S.search(query, db, k=10, exclude_self=exclude_self, backend="faiss")
        return
    result = S.search(query, db, k=10, exclude_self=exclude_self, backend="faiss")
    ref_idx, ref_dist = _brute_force(query, db, 10, exclude_self)
    np.testing.assert_array_equal(result.indices, ref_idx)
    np.testing.assert_array_equal(result.distances, ref_dist)


def test_faiss_missing_gives_install_hint(monkeypatch):
    real_import = importlib.import_module

    def fake_import(name, *args):
        if name == "faiss":
            raise ImportError("No module named 'faiss'")
        return real_import(name, *args)

    monkeypatch.setattr(S.importlib, "import_module", fake_import)
    codes = _tied_codes(10, 8, 3, seed=0)
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        S.search(codes, codes, k=2, backend="faiss")


def test_drop_self_hand_example():
    # Row 0: itself at position 1 -> removed. Row 1: absent from the k+1 -> last one dropped.
    indices = np.array([[5, 0, 7], [3, 4, 9]])
    distances = np.array([[0, 0, 2], [1, 1, 3]])
    got_idx, got_dist = S._drop_self(indices, distances, 2)
    np.testing.assert_array_equal(got_idx, [[5, 7], [3, 4]])
    np.testing.assert_array_equal(got_dist, [[0, 2], [1, 1]])


def test_packed_input_equals_unpacked():
    db = _tied_codes(120, 24, 10, seed=5)
    unpacked = S.search(db[:9], db, k=6, backend="numpy")
    packed = S.search(np_pack_codes(db[:9]), np_pack_codes(db), k=6, backend="numpy", packed=True)
    np.testing.assert_array_equal(unpacked.indices, packed.indices)
    np.testing.assert_array_equal(unpacked.distances, packed.distances)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint32, np.uint64])
def test_np_popcount_bitwise_count_and_lookup_table(dtype, monkeypatch):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    words = rng.integers(0, info.max, 200, dtype=dtype, endpoint=True)
    expected = np.array([bin(int(w)).count("1") for w in words])
    np.testing.assert_array_equal(S.np_popcount(words), expected)
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    np.testing.assert_array_equal(S.np_popcount(words), expected)


def test_search_validation():
    codes = _tied_codes(10, 16, 3, seed=0)
    with pytest.raises(ValueError, match="backend='annoy'"):
        S.search(codes, codes, k=2, backend="annoy")
    with pytest.raises(ValueError, match="k=10 with 10 database items"):
        S.search(codes, codes, k=10, exclude_self=True, backend="numpy")
    with pytest.raises(ValueError, match="k=0"):
        S.search(codes, codes, k=0)
    with pytest.raises(ValueError, match="expected 0/1"):
        S.search(codes * 2, codes, k=2)
    with pytest.raises(ValueError, match="same code length"):
        S.search(codes[:, :8], codes, k=2)
    with pytest.raises(ValueError, match="Q <= N"):
        S.search(codes, codes[:5], k=2, exclude_self=True, backend="numpy")
    with pytest.raises(TypeError, match="expected uint8"):
        S.search(codes.astype(np.int32), codes, k=2, packed=True)
    with pytest.raises(ValueError, match="rank 2"):
        S.search(codes[0], codes, k=2)
