"""DSH: deep supervised hashing (Liu, Wang, Shan and Chen, CVPR 2016), ``loss.name: dsh``.

Liu, H., Wang, R., Shan, S., Chen, X. "Deep Supervised Hashing for Fast Image Retrieval".
CVPR 2016. For a pair with ``y = 0`` when similar and ``y = 1`` when not, the contrastive loss
``1/2 (1 - y) ||b_1 - b_2||^2 + 1/2 y max(m - ||b_1 - b_2||^2, 0)`` (eq. 1) is relaxed from
binary ``b`` to real outputs with the regulariser
``alpha (|| |b_1| - 1 ||_1 + || |b_2| - 1 ||_1)`` that pulls every output to +-1 (eq. 3); the
paper sets the margin ``m = 2K``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

import tensorflow as tf

from hpsh_tf2.losses.common import HashLoss, Triplets, non_negative, positive, total, unit_range

__all__ = ["DSHLoss", "DSHOptions", "dsh_terms"]


@dataclass(frozen=True)
class DSHOptions:
    """DSH's hyper-parameters (``loss.options``).

    Attributes:
        margin_per_bit: The margin is ``m = margin_per_bit * K`` (paper: 2).
        alpha: Weight of the ``|| |u| - 1 ||_1`` regulariser (paper: 0.01).
    """

    margin_per_bit: float = field(default=2.0, metadata=positive())
    alpha: float = field(default=0.01, metadata=non_negative())


def dsh_terms(
    u: tf.Tensor, similarity: tf.Tensor, *, margin: float, alpha: float
) -> dict[str, tf.Tensor]:
    """DSH terms of a batch of relaxed codes ``u`` in ``(-1, 1)``.

    With ``D_ij = ||u_i - u_j||^2`` over the ``n (n - 1) / 2`` pairs ``i < j``:

    * contrastive ``= mean_{i<j} [1/2 s_ij D_ij + 1/2 (1 - s_ij) max(m - D_ij, 0)]`` (eq. 1,
      ``s = 1 - y``);
    * regularizer ``= alpha * mean_{i<j} (|| |u_i| - 1 ||_1 + || |u_j| - 1 ||_1)``
      ``= 2 alpha / n * sum_i || |u_i| - 1 ||_1`` (eq. 3).

    Args:
        u: ``[n, K]`` relaxed codes.
        similarity: ``[n, n]`` label similarity (1 = similar).
        margin: ``m``.
        alpha: Regulariser weight.

    Returns:
        ``{"contrastive", "regularizer"}``.
    """
    sq = tf.reduce_sum(tf.square(u), axis=1)
    dist = tf.maximum(sq[:, None] + sq[None, :] - 2.0 * tf.matmul(u, u, transpose_b=True), 0.0)
    n = tf.shape(u)[0]
    upper = tf.linalg.band_part(tf.ones([n, n], u.dtype), 0, -1) - tf.eye(n, dtype=u.dtype)
    per_pair = 0.5 * similarity * dist + 0.5 * (1.0 - similarity) * tf.nn.relu(margin - dist)
    contrastive = tf.math.divide_no_nan(tf.reduce_sum(per_pair * upper), tf.reduce_sum(upper))
    per_row = tf.reduce_sum(tf.abs(tf.abs(u) - 1.0), axis=1)
    regularizer = 2.0 * alpha * tf.reduce_mean(per_row)
    return {"contrastive": contrastive, "regularizer": regularizer}


class DSHLoss(HashLoss):
    """DSH (Liu et al. 2016): contrastive loss on relaxed codes + ``|| |u| - 1 ||_1``.

    ``u = 2 s - 1`` (the head's sigmoid scores mapped to ``(-1, 1)``; the paper's outputs are
    linear and pushed to +-1 by the regulariser). See :func:`dsh_terms`.
    """

    Options = DSHOptions
    preset = MappingProxyType({"margin_per_bit": 2.0, "alpha": 0.01})
    uses_similarity = True
    term_names = ("contrastive", "regularizer")

    def terms(
        self,
        scores: tf.Tensor,
        *,
        labels: tf.Tensor,
        similarity: tf.Tensor | None = None,
        triplets: Triplets | None = None,
        step: tf.Tensor | None = None,
        logits: tf.Tensor | None = None,
    ) -> dict[str, tf.Tensor]:
        """DSH terms of one batch (needs ``similarity``)."""
        margin = self.options.margin_per_bit * self.bits
        return total(
            dsh_terms(unit_range(scores), similarity, margin=margin, alpha=self.options.alpha)
        )
