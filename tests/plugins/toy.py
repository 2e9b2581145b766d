"""A plugin written as a user would: one module, one registration line per component.

Loaded with ``hpsh --plugin tests.plugins.toy VERB ...`` or through the ``hpsh_tf2.plugins``
entry-point group. Its names start with ``toy_`` so tests can remove them again
(:data:`NAMES`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from hpsh_tf2.losses.common import HashLoss, total, unit_range
from hpsh_tf2.ops.sampling import NegativeRule, TripletBatch
from hpsh_tf2.registry import LOSSES, SAMPLERS, SEARCH_BACKENDS


def first_other_class(batch: TripletBatch) -> tf.Tensor:
    """Negative of each triplet: the lowest row index with another label."""
    different = tf.not_equal(batch.labels[:, None], batch.labels[None, :])
    first = tf.argmax(tf.cast(different, tf.int32), axis=1, output_type=tf.int32)
    return tf.gather(first, batch.anchors)


def brute_force(query, db, k, exclude_self, chunk_size):
    """All Hamming distances with ``np.unpackbits``, ranked by ``(distance, index)``."""
    del chunk_size
    bits_q, bits_db = np.unpackbits(query, axis=1), np.unpackbits(db, axis=1)
    dist = (bits_q[:, None, :] != bits_db[None, :, :]).sum(axis=-1)
    if exclude_self:
        rows = np.arange(len(query))
        dist[rows, rows] = bits_db.shape[1] + 1
    ids = np.broadcast_to(np.arange(len(db)), dist.shape)
    order = np.lexsort((ids, dist), axis=1)[:, :k]
    return order, np.take_along_axis(dist, order, axis=1)


class ToyPairLoss(HashLoss):
    """``mean_{i != j} (S_ij - u_i . u_j / K)^2`` with ``u = 2 s - 1``: codes of similar items
    agree, codes of dissimilar items are orthogonal (a KSH-like inner-product fit)."""

    uses_similarity = True
    term_names = ("pairs",)

    def terms(self, scores, *, labels, similarity=None, triplets=None, step=None, logits=None):
        u = unit_range(scores)
        inner = tf.matmul(u, u, transpose_b=True) / tf.cast(tf.shape(u)[1], u.dtype)
        n = tf.shape(u)[0]
        off = 1.0 - tf.eye(n, dtype=u.dtype)
        squared = off * tf.square(tf.cast(similarity, u.dtype) - inner)
        pairs = tf.reduce_sum(squared) / tf.reduce_sum(off)
        return total({"pairs": pairs})


SAMPLERS.register("toy_first", NegativeRule(first_other_class))
SEARCH_BACKENDS.register("toy_brute", brute_force)
LOSSES.register("toy_pairs", ToyPairLoss)

NAMES = {SAMPLERS: ("toy_first",), SEARCH_BACKENDS: ("toy_brute",), LOSSES: ("toy_pairs",)}
"""What this module registers (tests unregister it afterwards)."""
