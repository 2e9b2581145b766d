"""Tests of hpsh_tf2.ops.hamming against brute force (a != b).sum + stable argsort."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from hpsh_tf2.ops.codes import np_pack_codes
from hpsh_tf2.ops.hamming import hamming_distances, hamming_topk


def _brute_force(query, db, k, exclude_self):
    """Reference ranking: bitwise distances, stable sort (ties keep database order)."""
    dist = (query[:, None, :] != db[None, :, :]).sum(-1)
    order = []
    for row in range(query.shape[0]):
        ranked = [
            j for j in np.argsort(dist[row], kind="stable") if not (exclude_self and j == row)
        ]
        order.append(ranked[:k])
    order = np.array(order, dtype=np.int64).reshape(query.shape[0], k)
    return order, np.take_along_axis(dist, order, axis=1)


def _tied_codes(rows, bits, distinct, seed):
    """Codes drawn from a small pool, so exact duplicates (distance ties) are everywhere."""
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 2, (distinct, bits), dtype=np.uint8)
    return pool[rng.integers(0, distinct, rows)]


@pytest.mark.parametrize("bits", [8, 32, 64, 128, 200])
def test_hamming_distances_match_bitwise_count(bits):
    rng = np.random.default_rng(bits)
    query = rng.integers(0, 2, (6, bits), dtype=np.uint8)
    db = rng.integers(0, 2, (11, bits), dtype=np.uint8)
    got = hamming_distances(np_pack_codes(query), np_pack_codes(db))
    assert got.dtype == tf.int32 and got.shape == (6, 11)
    np.testing.assert_array_equal(got.numpy(), (query[:, None] != db[None]).sum(-1))


def test_hamming_distances_hand_values():
    query = np.array([[1, 1, 1, 1, 0, 0, 0, 0]], np.uint8)
    db = np.array([[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1], [1, 0, 1, 1, 0, 0, 0, 1]])
    # Identical -> 0; complement -> 8; two flipped bits -> 2.
    got = hamming_distances(np_pack_codes(query), np_pack_codes(db.astype(np.uint8)))
    np.testing.assert_array_equal(got.numpy(), [[0, 8, 2]])


CASES = [
    # (queries, database, bits, k, exclude_self, chunk_size, group_size, distinct codes)
    (20, 300, 16, 7, False, 64, 8, 6),
    (25, 300, 16, 7, True, 64, 8, 6),
    (17, 530, 64, 21, True, 128, 32, 40),
    (9, 1000, 96, 12, False, 256, 16, 30),
    (12, 257, 256, 5, True, 32, 4, 3),
    (6, 20, 24, 19, True, 32, 32, 4),  # fewer codes than one group: tail only
    (5, 64, 8, 60, False, 64, 16, 5),  # k close to N
]


@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("case", CASES)
def test_topk_matches_brute_force_with_ties(case, jit):
    num_q, num_db, bits, k, exclude_self, chunk, group, distinct = case
    db = _tied_codes(num_db, bits, distinct, seed=num_db + bits)
    query = db[:num_q]
    indices, distances = hamming_topk(
        np_pack_codes(query),
        np_pack_codes(db),
        k=k,
        exclude_self=exclude_self,
        chunk_size=chunk,
        group_size=group,
        query_chunk_size=7,
        jit_compile=jit,
    )
    ref_idx, ref_dist = _brute_force(query, db, k, exclude_self)
    assert indices.dtype == tf.int32 and distances.dtype == tf.int32
    np.testing.assert_array_equal(indices.numpy(), ref_idx)
    np.testing.assert_array_equal(distances.numpy(), ref_dist)


def test_topk_default_chunks_random_codes():
    rng = np.random.default_rng(7)
    db = rng.integers(0, 2, (3000, 32), dtype=np.uint8)
    query = rng.integers(0, 2, (40, 32), dtype=np.uint8)
    indices, distances = hamming_topk(np_pack_codes(query), np_pack_codes(db), k=20)
    ref_idx, ref_dist = _brute_force(query, db, 20, False)
    np.testing.assert_array_equal(indices.numpy(), ref_idx)
    np.testing.assert_array_equal(distances.numpy(), ref_dist)


def test_ties_broken_by_lower_index_hand_example():
    code = np.array([[1, 0, 1, 0, 1, 0, 1, 0]], np.uint8)
    db = np.repeat(code, 5, axis=0)  # five identical codes: all distances 0
    packed = np_pack_codes(db)
    indices, distances = hamming_topk(packed[:1], packed, k=3)
    np.testing.assert_array_equal(indices.numpy(), [[0, 1, 2]])
    np.testing.assert_array_equal(distances.numpy(), [[0, 0, 0]])
    # Database minus the query: query 2 gets 0, 1, 3 (itself skipped, order by index).
    indices, _ = hamming_topk(packed[:3], packed, k=3, exclude_self=True, group_size=2)
    np.testing.assert_array_equal(indices.numpy(), [[1, 2, 3], [0, 2, 3], [0, 1, 3]])


def test_topk_in_tf_function_with_dynamic_shapes():
    db = _tied_codes(400, 64, 25, seed=3)
    spec = tf.TensorSpec([None, 8], tf.uint8)

    @tf.function(input_signature=[spec, spec])
    def retrieve(query, database):
        return hamming_topk(query, database, k=9, exclude_self=True, chunk_size=96)

    indices, distances = retrieve(np_pack_codes(db[:30]), np_pack_codes(db))
    ref_idx, ref_dist = _brute_force(db[:30], db, 9, True)
    np.testing.assert_array_equal(indices.numpy(), ref_idx)
    np.testing.assert_array_equal(distances.numpy(), ref_dist)
    with pytest.raises(tf.errors.InvalidArgumentError, match="k exceeds the database size"):
        retrieve(np_pack_codes(db[:3]), np_pack_codes(db[:8]))
    empty_idx, _ = retrieve(np_pack_codes(db[:0]), np_pack_codes(db))
    assert empty_idx.shape == (0, 9)


def test_topk_validation():
    packed = np_pack_codes(_tied_codes(10, 16, 3, seed=0))
    with pytest.raises(ValueError, match="k=10 with 10 database items"):
        hamming_topk(packed, packed, k=10, exclude_self=True)
    with pytest.raises(ValueError, match="k=11"):
        hamming_topk(packed, packed, k=11)
    with pytest.raises(ValueError, match="Q <= N"):
        hamming_topk(packed, packed[:5], k=2, exclude_self=True)
    with pytest.raises(ValueError, match="same number of bytes"):
        hamming_topk(packed, packed[:, :1], k=2)
    with pytest.raises(TypeError, match="int32"):
        hamming_topk(packed.astype(np.int32), packed, k=2)
    with pytest.raises(ValueError, match="k=0"):
        hamming_topk(packed, packed, k=0)
    with pytest.raises(ValueError, match="chunk_size=48; expected a multiple of group_size=32"):
        hamming_topk(packed, packed, k=2, chunk_size=48)


def test_topk_inside_outer_xla_function():
    db = _tied_codes(200, 32, 12, seed=8)
    packed = np_pack_codes(db)

    @tf.function(jit_compile=True)
    def compiled(query, database):
        return hamming_topk(query, database, k=6, exclude_self=True)

    indices, distances = compiled(packed[:15], packed)
    ref_idx, ref_dist = _brute_force(db[:15], db, 6, True)
    np.testing.assert_array_equal(indices.numpy(), ref_idx)
    np.testing.assert_array_equal(distances.numpy(), ref_dist)


@pytest.mark.parametrize("jit", [True, False])
def test_topk_in_saved_model_signature(tmp_path, jit):
    db = _tied_codes(150, 32, 20, seed=9)
    packed = np_pack_codes(db)

    class Retriever(tf.Module):
        def __init__(self):
            super().__init__()
            self.database = tf.Variable(packed, trainable=False)

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.uint8)])
        def retrieve(self, query):
            indices, distances = hamming_topk(query, self.database, k=5, jit_compile=jit)
            return {"indices": indices, "distances": distances}

    tf.saved_model.save(Retriever(), str(tmp_path / "retriever"))
    loaded = tf.saved_model.load(str(tmp_path / "retriever"))
    out = loaded.retrieve(tf.constant(packed[:8]))
    ref_idx, ref_dist = _brute_force(db[:8], db, 5, False)
    np.testing.assert_array_equal(out["indices"].numpy(), ref_idx)
    np.testing.assert_array_equal(out["distances"].numpy(), ref_dist)


def test_repeated_calls_with_varying_shapes_and_widths():
    # Several eager calls make tf.function relax traced shapes; the code width must survive.
    for bits, num_db in [(32, 100), (32, 150), (96, 120), (32, 90), (96, 80), (8, 70)]:
        db = _tied_codes(num_db, bits, 9, seed=bits + num_db)
        for jit in (True, False):
            indices, distances = hamming_topk(
                np_pack_codes(db[:11]), np_pack_codes(db), k=4, exclude_self=True, jit_compile=jit
            )
            ref_idx, ref_dist = _brute_force(db[:11], db, 4, True)
            np.testing.assert_array_equal(indices.numpy(), ref_idx)
            np.testing.assert_array_equal(distances.numpy(), ref_dist)


# One case per kernel class: uint32 words (<= 32 bits), one uint64 word (<= 64 bits), several
# uint64 words with uint8 accumulators (< 256 bits) and with uint16 accumulators (>= 256 bits);
# group_size <= 64 runs the unrolled group minimum, larger group sizes the reduce.
LENGTH_CASES = [
    # (bits, group_size, exclude_self)
    (16, 32, False),
    (24, 8, True),
    (32, 16, False),
    (48, 32, True),
    (64, 16, False),
    (128, 32, True),
    (256, 32, False),
    (264, 4, True),
    (128, 128, False),
    (24, 96, True),
]


@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize(("bits", "group_size", "exclude_self"), LENGTH_CASES)
def test_topk_every_kernel_class_eager_and_in_tf_function(bits, group_size, jit, exclude_self):
    num_db = 3 * group_size + 11  # full groups plus a tail
    db = _tied_codes(num_db, bits, 7, seed=bits + group_size)
    packed = np_pack_codes(db)
    options = dict(
        k=9,
        exclude_self=exclude_self,
        chunk_size=2 * group_size,
        group_size=group_size,
        jit_compile=jit,
    )
    ref_idx, ref_dist = _brute_force(db[:13], db, 9, exclude_self)
    indices, distances = hamming_topk(packed[:13], packed, **options)
    np.testing.assert_array_equal(indices.numpy(), ref_idx)
    np.testing.assert_array_equal(distances.numpy(), ref_dist)

    spec = tf.TensorSpec([None, bits // 8], tf.uint8)

    @tf.function(input_signature=[spec, spec])
    def graph(query, database):
        return hamming_topk(query, database, **options)

    indices, distances = graph(packed[:13], packed)
    np.testing.assert_array_equal(indices.numpy(), ref_idx)
    np.testing.assert_array_equal(distances.numpy(), ref_dist)
    empty_idx, empty_dist = graph(packed[:0], packed)
    assert empty_idx.shape == (0, 9) and empty_dist.shape == (0, 9)
    # k close to N (every item but the query with exclude_self).
    k_max = num_db - int(exclude_self)
    indices, distances = hamming_topk(packed[:5], packed, **{**options, "k": k_max})
    ref_idx, ref_dist = _brute_force(db[:5], db, k_max, exclude_self)
    np.testing.assert_array_equal(indices.numpy(), ref_idx)
    np.testing.assert_array_equal(distances.numpy(), ref_dist)


@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("bits", [248, 256, 320, 1984, 2048])
def test_topk_largest_distances_do_not_wrap(bits, jit):
    # The complement of a code is at distance `bits` (>= 256 would wrap a uint8 accumulator to
    # a small value and be ranked first): from 256 bits the kernel sums in uint16.
    rng = np.random.default_rng(bits)
    db = rng.integers(0, 2, (70, bits), dtype=np.uint8)
    db[[5, 40, 66]] = 1 - db[0]
    packed = np_pack_codes(db)
    indices, distances = hamming_topk(packed[:1], packed, k=70, group_size=8, jit_compile=jit)
    ref_idx, ref_dist = _brute_force(db[:1], db, 70, False)
    np.testing.assert_array_equal(indices.numpy(), ref_idx)
    np.testing.assert_array_equal(distances.numpy(), ref_dist)
    np.testing.assert_array_equal(indices.numpy()[0, -3:], [5, 40, 66])
    assert distances.numpy()[0, -1] == bits


FOLD_CASES = [
    # (bits, k, exclude_self, chunk_size, group_size, expected fold)
    (16, 1, False, 256, 4, 8),  # k' = 1: the widest fold
    (64, 5, True, 512, 8, 8),
    (128, 30, False, 1024, 32, 4),  # 31 * 4 * 32 codes per query fit the budget, 8x would not
    (256, 3, True, 96, 4, 8),  # 24 groups per chunk: folds of 3 groups
    (24, 200, False, 256, 8, 2),
]


@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize(("bits", "k", "exclude_self", "chunk", "group", "fold"), FOLD_CASES)
def test_topk_folds_keep_exact_tie_order(bits, k, exclude_self, chunk, group, fold, jit):
    # Folds take strided groups of a chunk; ties between folds must still go to the lower
    # index. 1,000 codes drawn from 5 distinct ones: every distance is tied hundreds of times;
    # the last chunk is partial and the database ends with a tail shorter than a group.
    from hpsh_tf2.ops.hamming import _fold

    assert _fold(k + int(exclude_self), group, chunk // group) == fold
    db = _tied_codes(1003, bits, 5, seed=bits + k)
    packed = np_pack_codes(db)
    options = dict(k=k, exclude_self=exclude_self, chunk_size=chunk, group_size=group)
    indices, distances = hamming_topk(packed[:21], packed, **options, jit_compile=jit)
    ref_idx, ref_dist = _brute_force(db[:21], db, k, exclude_self)
    np.testing.assert_array_equal(indices.numpy(), ref_idx)
    np.testing.assert_array_equal(distances.numpy(), ref_dist)


def test_repeated_calls_with_varying_group_sizes_and_folds():
    # Eager calls with different group sizes, folds and widths make the XLA functions relax
    # their traced shapes; static sizes must come from the arguments, not from those shapes.
    db = _tied_codes(600, 128, 11, seed=5)
    for bits, group, k in [(128, 32, 3), (128, 16, 3), (64, 8, 40), (256, 16, 1), (128, 4, 7)]:
        codes = db[:, :bits] if bits <= 128 else np.concatenate([db, db], axis=1)
        packed = np_pack_codes(codes)
        indices, distances = hamming_topk(packed[:9], packed, k=k, group_size=group)
        ref_idx, ref_dist = _brute_force(codes[:9], codes, k, False)
        np.testing.assert_array_equal(indices.numpy(), ref_idx)
        np.testing.assert_array_equal(distances.numpy(), ref_dist)
