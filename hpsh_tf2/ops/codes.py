"""Binary hash codes: binarisation, bit packing and word packing.

Layouts used across the package:

* **0/1 codes**: ``uint8`` arrays of shape ``[N, bits]`` holding only 0 and 1.
* **packed codes**: ``uint8`` arrays of shape ``[N, bits / 8]``; bit ``j`` of a code lands in
  byte ``j // 8`` at bit position ``7 - j % 8`` (most significant bit first). This is the
  layout of ``np.packbits(..., bitorder="big")`` and of FAISS binary codes.
* **words**: packed codes regrouped into machine words for XOR/popcount. Codes of at most
  32 bits become one ``uint32`` word; longer codes become ``ceil(bits / 64)`` ``uint64`` words.
  Missing bytes are zero on both sides of a comparison, so they never add to a Hamming
  distance. The byte order inside a word is the host's; it does not matter because both
  operands of the XOR are built the same way.

Every TensorFlow op here has a NumPy twin prefixed with ``np_``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from hpsh_tf2.ops.checks import check_bits, check_int

__all__ = [
    "binarize",
    "np_binarize",
    "np_pack_codes",
    "np_pack_words",
    "np_unpack_codes",
    "pack_codes",
    "pack_words",
    "unpack_codes",
    "word_dtype",
]

_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)
_CODE_DTYPES = (tf.bool, tf.uint8, tf.int8, tf.int16, tf.int32, tf.int64, tf.uint16)


def _static_last_dim(tensor: tf.Tensor, name: str) -> int:
    """Returns the static size of the last axis of a rank-2 tensor, or raises."""
    if tensor.shape.rank != 2:
        raise ValueError(f"Received: {name} with shape {tensor.shape}; expected rank 2 [N, D]")
    last = tensor.shape[-1]
    if last is None:
        raise ValueError(
            f"Received: {name} with shape {tensor.shape}; expected a statically known last axis"
        )
    return int(last)


def word_dtype(bits: int) -> tf.DType:
    """The word type used by :func:`pack_words` for codes of ``bits`` bits.

    Args:
        bits: Code length, a positive multiple of 8.

    Returns:
        ``tf.uint32`` for ``bits <= 32``, else ``tf.uint64``.
    """
    return tf.uint32 if check_bits(check_int("bits", bits)) <= 32 else tf.uint64


def binarize(scores: tf.Tensor, threshold: float = 0.5) -> tf.Tensor:
    """Binarises sigmoid scores into 0/1 hash codes.

    ``b = 1 if s > threshold else 0``. A score exactly equal to the threshold maps to 0, as in
    the HPSH AID trainer (``(sign(s - 0.5) + 1) / 2`` cast to int8 turns 0.5 into 0).

    Args:
        scores: Float tensor of any shape (usually ``[N, bits]``).
        threshold: Decision threshold.

    Returns:
        ``uint8`` tensor of the same shape holding 0 and 1.
    """
    scores = tf.convert_to_tensor(scores)
    if not scores.dtype.is_floating:
        raise TypeError(f"Received: scores with dtype {scores.dtype.name}; expected a float dtype")
    return tf.cast(scores > tf.cast(threshold, scores.dtype), tf.uint8)


def np_binarize(scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """NumPy twin of :func:`binarize`."""
    scores = np.asarray(scores)
    if not np.issubdtype(scores.dtype, np.floating):
        raise TypeError(f"Received: scores with dtype {scores.dtype}; expected a float dtype")
    return (scores > threshold).astype(np.uint8)


def pack_codes(codes: tf.Tensor) -> tf.Tensor:
    """Packs 0/1 codes into bytes, most significant bit first (``np.packbits`` layout).

    Args:
        codes: ``[N, bits]`` tensor of 0/1 values (bool or integer dtype; any non-zero value
            counts as 1). ``bits`` must be static and a positive multiple of 8.

    Returns:
        ``uint8`` tensor of shape ``[N, bits / 8]``.
    """
    codes = tf.convert_to_tensor(codes)
    if codes.dtype not in _CODE_DTYPES:
        raise TypeError(
            f"Received: codes with dtype {codes.dtype.name}; expected bool or an integer dtype "
            "holding 0/1"
        )
    bits = check_bits(_static_last_dim(codes, "codes"), "codes.shape[-1]")
    ones = tf.cast(tf.not_equal(codes, tf.zeros([], codes.dtype)), tf.int32)
    grouped = tf.reshape(ones, [-1, bits // 8, 8])
    weights = tf.constant(_BIT_WEIGHTS, tf.int32)
    return tf.cast(tf.reduce_sum(grouped * weights, axis=-1), tf.uint8)


def unpack_codes(packed: tf.Tensor, bits: int) -> tf.Tensor:
    """Inverse of :func:`pack_codes`.

    Args:
        packed: ``uint8`` tensor ``[N, bits / 8]``.
        bits: Code length; must equal ``8 * packed.shape[-1]``.

    Returns:
        ``uint8`` tensor ``[N, bits]`` of 0/1 values.
    """
    bits = check_bits(check_int("bits", bits))
    packed = tf.convert_to_tensor(packed)
    if packed.dtype != tf.uint8:
        raise TypeError(f"Received: packed with dtype {packed.dtype.name}; expected uint8")
    width = _static_last_dim(packed, "packed")
    if width * 8 != bits:
        raise ValueError(
            f"Received: packed with shape {packed.shape} and bits={bits}; expected "
            f"packed.shape[-1] == bits / 8 == {bits // 8}"
        )
    shifts = tf.constant([7, 6, 5, 4, 3, 2, 1, 0], tf.uint8)
    expanded = tf.bitwise.right_shift(packed[:, :, None], shifts)
    unpacked = tf.bitwise.bitwise_and(expanded, tf.constant(1, tf.uint8))
    return tf.reshape(unpacked, [-1, bits])


def np_pack_codes(codes: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`pack_codes` (``np.packbits`` along the last axis)."""
    codes = np.asarray(codes)
    if codes.dtype != np.bool_ and not np.issubdtype(codes.dtype, np.integer):
        raise TypeError(
            f"Received: codes with dtype {codes.dtype}; expected bool or an integer dtype "
            "holding 0/1"
        )
    if codes.ndim != 2:
        raise ValueError(f"Received: codes with shape {codes.shape}; expected rank 2 [N, bits]")
    check_bits(codes.shape[1], "codes.shape[-1]")
    return np.packbits(codes != 0, axis=-1, bitorder="big")


def np_unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    """NumPy twin of :func:`unpack_codes`."""
    bits = check_bits(check_int("bits", bits))
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise TypeError(f"Received: packed with dtype {packed.dtype}; expected uint8")
    if packed.ndim != 2 or packed.shape[1] * 8 != bits:
        raise ValueError(
            f"Received: packed with shape {packed.shape} and bits={bits}; expected [N, {bits // 8}]"
        )
    return np.unpackbits(packed, axis=-1, count=bits, bitorder="big")


def _word_layout(width: int) -> tuple[int, int]:
    """Returns ``(bytes_per_word, num_words)`` for ``width`` packed bytes."""
    if width <= 4:
        return 4, 1
    return 8, -(-width // 8)


def pack_words(packed: tf.Tensor) -> tf.Tensor:
    """Regroups packed bytes into ``uint32``/``uint64`` words for fast XOR/popcount.

    Codes of at most 32 bits become one ``uint32`` word; longer codes are zero-padded to a
    multiple of 64 bits and become ``uint64`` words. Measured on CPU (XLA): a 32-bit code as
    one ``uint32`` is about 1.5x faster than padded to ``uint64``, and one ``uint64`` popcount
    beats two ``uint32`` ones (several popcounts per fused loop vectorise poorly).

    Args:
        packed: ``uint8`` tensor ``[N, bits / 8]`` from :func:`pack_codes`.

    Returns:
        Tensor ``[N, W]`` of dtype :func:`word_dtype` (``W = 1`` for ``bits <= 64``).
    """
    packed = tf.convert_to_tensor(packed)
    if packed.dtype != tf.uint8:
        raise TypeError(f"Received: packed with dtype {packed.dtype.name}; expected uint8")
    width = _static_last_dim(packed, "packed")
    if width == 0:
        raise ValueError(f"Received: packed with shape {packed.shape}; expected at least 1 byte")
    word_bytes, num_words = _word_layout(width)
    pad = word_bytes * num_words - width
    if pad:
        packed = tf.pad(packed, [[0, 0], [0, pad]])
    grouped = tf.reshape(packed, [-1, num_words, word_bytes])
    return tf.bitcast(grouped, tf.uint32 if word_bytes == 4 else tf.uint64)


def np_pack_words(packed: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`pack_words` (same words, same host byte order)."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise TypeError(f"Received: packed with dtype {packed.dtype}; expected uint8")
    if packed.ndim != 2 or packed.shape[1] == 0:
        raise ValueError(f"Received: packed with shape {packed.shape}; expected [N, bytes>0]")
    word_bytes, num_words = _word_layout(packed.shape[1])
    padded = np.zeros((packed.shape[0], word_bytes * num_words), np.uint8)
    padded[:, : packed.shape[1]] = packed
    return padded.view(np.uint32 if word_bytes == 4 else np.uint64)
