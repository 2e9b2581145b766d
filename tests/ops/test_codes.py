"""Tests of hpsh_tf2.ops.codes: binarisation, bit packing, word packing."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from hpsh_tf2.ops import codes as C

BITS = [8, 16, 24, 32, 40, 64, 96, 128, 200, 256]


def _random_codes(rows: int, bits: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, (rows, bits), dtype=np.uint8)


def test_binarize_threshold_hand_values():
    scores = np.array([[0.2, 0.5, 0.5000001, 0.9], [0.0, 1.0, 0.4999999, 0.75]], np.float32)
    # s > 0.5 -> 1; exactly 0.5 -> 0 (the AID trainer's int8 cast of (sign(s-0.5)+1)/2).
    expected = np.array([[0, 0, 1, 1], [0, 1, 0, 1]], np.uint8)
    got = C.binarize(scores)
    assert got.dtype == tf.uint8
    np.testing.assert_array_equal(got.numpy(), expected)
    np.testing.assert_array_equal(C.np_binarize(scores), expected)
    assert C.np_binarize(scores).dtype == np.uint8
    # A custom threshold, float64 input.
    np.testing.assert_array_equal(
        C.binarize(scores.astype(np.float64), threshold=0.75).numpy(),
        np.array([[0, 0, 0, 1], [0, 1, 0, 0]], np.uint8),
    )


def test_binarize_rejects_integer_scores():
    with pytest.raises(TypeError, match="int32"):
        C.binarize(tf.constant([[1, 0]]))
    with pytest.raises(TypeError, match="expected a float"):
        C.np_binarize(np.array([1, 0]))


def test_pack_codes_hand_example_msb_first():
    codes = np.array([[1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0], [0] * 15 + [1]], np.uint8)
    # Byte 0 of row 0 = 0b10000001 = 129, byte 1 = 0b00000010 = 2; row 1 = [0, 1].
    expected = np.array([[129, 2], [0, 1]], np.uint8)
    np.testing.assert_array_equal(C.pack_codes(codes).numpy(), expected)
    np.testing.assert_array_equal(C.np_pack_codes(codes), expected)


@pytest.mark.parametrize("bits", BITS)
def test_pack_matches_numpy_packbits_and_round_trips(bits):
    codes = _random_codes(37, bits, seed=bits)
    packed = C.pack_codes(codes)
    assert packed.dtype == tf.uint8 and packed.shape == (37, bits // 8)
    np.testing.assert_array_equal(packed.numpy(), np.packbits(codes, axis=1))
    np.testing.assert_array_equal(C.unpack_codes(packed, bits).numpy(), codes)
    np.testing.assert_array_equal(C.np_unpack_codes(C.np_pack_codes(codes), bits), codes)


def test_pack_accepts_bool_and_wide_ints_as_zero_one():
    codes = _random_codes(5, 16)
    expected = np.packbits(codes, axis=1)
    np.testing.assert_array_equal(C.pack_codes(codes.astype(bool)).numpy(), expected)
    np.testing.assert_array_equal(C.pack_codes(codes.astype(np.int32)).numpy(), expected)
    np.testing.assert_array_equal(C.np_pack_codes(codes.astype(np.int64)), expected)


def test_pack_unpack_in_graph_and_xla_with_unknown_batch():
    codes = _random_codes(9, 32)
    spec = tf.TensorSpec([None, 32], tf.uint8)

    @tf.function(input_signature=[spec], jit_compile=True)
    def round_trip(x):
        return C.unpack_codes(C.pack_codes(x), 32)

    np.testing.assert_array_equal(round_trip(codes).numpy(), codes)


@pytest.mark.parametrize(
    ("shape", "error", "pattern"),
    [
        ((4, 12), ValueError, r"codes\.shape\[-1\]=12"),
        ((12,), ValueError, "rank 2"),
        ((2, 0), ValueError, "positive multiple of 8"),
    ],
)
def test_pack_codes_validation(shape, error, pattern):
    with pytest.raises(error, match=pattern):
        C.pack_codes(np.zeros(shape, np.uint8))


def test_pack_codes_rejects_float_and_numpy_twin_validates():
    with pytest.raises(TypeError, match="float32"):
        C.pack_codes(np.zeros((2, 8), np.float32))
    with pytest.raises(TypeError, match="float"):
        C.np_pack_codes(np.zeros((2, 8), np.float32))
    with pytest.raises(ValueError, match=r"codes\.shape\[-1\]=10"):
        C.np_pack_codes(np.zeros((2, 10), np.uint8))


def test_unpack_validation():
    with pytest.raises(ValueError, match="bits=16"):
        C.unpack_codes(np.zeros((2, 1), np.uint8), 16)
    with pytest.raises(ValueError, match="bits=7"):
        C.unpack_codes(np.zeros((2, 1), np.uint8), 7)
    with pytest.raises(TypeError, match="bits="):
        C.unpack_codes(np.zeros((2, 1), np.uint8), 8.0)
    with pytest.raises(TypeError, match="int32"):
        C.unpack_codes(np.zeros((2, 1), np.int32), 8)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        C.np_unpack_codes(np.zeros((2, 3), np.uint8), 16)


@pytest.mark.parametrize("bits", BITS)
def test_pack_words_layout_and_popcount_gives_hamming(bits):
    codes = _random_codes(12, bits, seed=100 + bits)
    packed = C.np_pack_codes(codes)
    words = C.pack_words(packed)
    expected_dtype = tf.uint32 if bits <= 32 else tf.uint64
    expected_words = 1 if bits <= 32 else -(-bits // 64)
    assert words.dtype == expected_dtype == C.word_dtype(bits)
    assert words.shape == (12, expected_words)
    np_words = C.np_pack_words(packed)
    np.testing.assert_array_equal(words.numpy(), np_words)
    # popcount(a XOR b) summed over words equals the bitwise Hamming distance.
    xored = tf.bitwise.bitwise_xor(words[:, None, :], words[None, :, :])
    counts = tf.reduce_sum(tf.cast(tf.raw_ops.PopulationCount(x=xored), tf.int32), axis=-1)
    reference = (codes[:, None, :] != codes[None, :, :]).sum(-1)
    np.testing.assert_array_equal(counts.numpy(), reference)


def test_pack_words_validation():
    with pytest.raises(TypeError, match="int32"):
        C.pack_words(np.zeros((2, 4), np.int32))
    with pytest.raises(ValueError, match="at least 1 byte"):
        C.pack_words(np.zeros((2, 0), np.uint8))
    with pytest.raises(ValueError, match=r"\(2, 0\)"):
        C.np_pack_words(np.zeros((2, 0), np.uint8))
    with pytest.raises(ValueError, match="bits=12"):
        C.word_dtype(12)
