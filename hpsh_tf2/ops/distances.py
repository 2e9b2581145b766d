"""Pairwise distances used by the HPSH sampler and the triplet losses.

All functions take a rank-2 tensor ``[n, d]`` (one embedding per row) and return an ``[n, n]``
matrix. They are plain TensorFlow ops: they run eagerly, under ``tf.function`` and with
``jit_compile=True``.
"""

from __future__ import annotations

import tensorflow as tf

from hpsh_tf2.ops.checks import float_matrix

__all__ = [
    "angular_distances",
    "l2_normalize_embeddings",
    "original_pseudo_distances",
    "pairwise_distances",
]


def _squared_norms(x: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.square(x), axis=1)


def _gram_squared_distances(x: tf.Tensor) -> tf.Tensor:
    """||x_i||^2 + ||x_j||^2 - 2 <x_i, x_j>, clamped at 0, with an exact 0 diagonal."""
    norms = _squared_norms(x)
    gram = tf.matmul(x, x, transpose_b=True)
    squared = norms[:, None] + norms[None, :] - 2.0 * gram
    squared = tf.maximum(squared, tf.zeros_like(squared))
    n = tf.shape(x)[0]
    off_diagonal = 1.0 - tf.eye(n, dtype=x.dtype)
    return squared * off_diagonal


def pairwise_distances(x: tf.Tensor, *, squared: bool = False, eps: float = 1e-12) -> tf.Tensor:
    """Euclidean distances between all rows of ``x``.

    Computed through the Gram matrix: ``D2_ij = ||x_i||^2 + ||x_j||^2 - 2 <x_i, x_j>``,
    clamped at 0 (round-off), with an exact 0 on the diagonal.

    Args:
        x: Embeddings ``[n, d]``.
        squared: Return ``D2`` instead of ``sqrt(D2)``.
        eps: For ``squared=False``: entries with ``D2 <= eps`` are returned as exactly 0 and
            get a zero gradient (the square root is never evaluated at 0, so gradients stay
            finite). Must be >= 0.

    Returns:
        ``[n, n]`` distances in the dtype of ``x``.

    Raises:
        ValueError: If ``x`` is not rank 2 or ``eps`` is negative.
    """
    if not eps >= 0.0:
        raise ValueError(f"Received: eps={eps!r}; expected a non-negative float.")
    x = float_matrix(x, "x", upcast=False)
    squared_dist = _gram_squared_distances(x)
    if squared:
        return squared_dist
    tiny = squared_dist <= tf.cast(eps, x.dtype)
    safe = tf.where(tiny, tf.ones_like(squared_dist), squared_dist)
    return tf.where(tiny, tf.zeros_like(squared_dist), tf.sqrt(safe))


def l2_normalize_embeddings(s: tf.Tensor, eps_sq: float = 1e-10) -> tf.Tensor:
    """Row-wise L2 normalisation as in the HPSH code: ``e = s / sqrt(max(||s||^2, eps_sq))``.

    Args:
        s: Scores ``[n, K]`` (the sigmoid outputs of the hash head).
        eps_sq: Lower bound on the squared norm (the original uses 1e-10). Must be > 0.

    Returns:
        ``[n, K]`` tensor with unit-norm rows (rows with a tiny norm are divided by
        ``sqrt(eps_sq)`` instead).

    Raises:
        ValueError: If ``s`` is not rank 2 or ``eps_sq`` is not positive.
    """
    if not eps_sq > 0.0:
        raise ValueError(f"Received: eps_sq={eps_sq!r}; expected a positive float.")
    s = float_matrix(s, "s", upcast=False)
    norms = _squared_norms(s)[:, None]
    return s * tf.math.rsqrt(tf.maximum(norms, tf.cast(eps_sq, s.dtype)))


def angular_distances(x: tf.Tensor) -> tf.Tensor:
    """Angular (cosine) distances ``1 - cos(x_i, x_j)`` between all rows of ``x``.

    Rows are L2-normalised first (``tf.math.l2_normalize``: squared-norm floor 1e-12). The
    result is clipped to ``[0, 2]`` and its diagonal is exactly 0.

    Args:
        x: Embeddings ``[n, d]``.

    Returns:
        ``[n, n]`` distances in the dtype of ``x``.

    Raises:
        ValueError: If ``x`` is not rank 2.
    """
    x = float_matrix(x, "x", upcast=False)
    unit = tf.math.l2_normalize(x, axis=1)
    dist = 1.0 - tf.matmul(unit, unit, transpose_b=True)
    dist = tf.clip_by_value(dist, 0.0, 2.0)
    n = tf.shape(x)[0]
    return dist * (1.0 - tf.eye(n, dtype=x.dtype))


def original_pseudo_distances(e: tf.Tensor) -> tf.Tensor:
    """The "distance" the original HPSH code's sampler computes (docs/method.md section 4.2).

    With ``q = e * e`` (element-wise square):
    ``D_ij = sqrt(sum_k q_ik + sum_k q_jk - 2 <q_i, q_j> + [i = j])``.
    For unit rows this is ``sqrt(2 - 2 S_ij + [i = j])`` with ``S_ij = sum_k e_ik^2 e_jk^2``:
    not the Euclidean distance, and ``sqrt(3 - 2 sum_k e_ik^4)`` on the diagonal. The
    argument of the square root is clamped at 0 (it is never negative for unit rows, so this
    only changes inputs on which the original would produce NaN).

    Args:
        e: L2-normalised embeddings ``[n, K]``.

    Returns:
        ``[n, n]`` pseudo-distances in the dtype of ``e``.

    Raises:
        ValueError: If ``e`` is not rank 2.
    """
    e = float_matrix(e, "e", upcast=False)
    q = tf.square(e)
    sums = tf.reduce_sum(q, axis=1)
    gram = tf.matmul(q, q, transpose_b=True)
    n = tf.shape(e)[0]
    inside = sums[:, None] + sums[None, :] - 2.0 * gram + tf.eye(n, dtype=e.dtype)
    return tf.sqrt(tf.maximum(inside, tf.zeros_like(inside)))
