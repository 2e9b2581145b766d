"""DCH: deep Cauchy hashing (Cao, Long, Liu and Wang, CVPR 2018), ``loss.name: dch``.

Cao, Y., Long, M., Liu, B., Wang, J. "Deep Cauchy Hashing for Hamming Space Retrieval".
CVPR 2018. With the normalised Euclidean (Hamming) distance
``d(h_i, h_j) = K/2 (1 - cos(h_i, h_j))`` (eq. 3) and the Cauchy probability
``sigma(d) = gamma / (gamma + d)`` (eq. 4), the weighted Cauchy cross-entropy is
``sum_ij w_ij (s_ij log(d_ij / gamma) + log(1 + gamma / d_ij))`` (eq. 6, the weights of eq. 5
as HashNet's) and the Cauchy quantisation loss ``sum_i log(1 + d(|h_i|, 1) / gamma)`` (eq. 7);
the objective is their sum with weight ``lambda`` on the quantisation (eq. 8).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

import tensorflow as tf

from hpsh_tf2.losses.common import (
    HashLoss,
    Triplets,
    balanced_pair_weights,
    non_negative,
    positive,
    total,
    unit_range,
)

__all__ = ["DCHLoss", "DCHOptions", "cauchy_distance", "dch_terms"]

_DIST_EPS = 1e-6


@dataclass(frozen=True)
class DCHOptions:
    """DCH's hyper-parameters (``loss.options``).

    Attributes:
        gamma: Scale of the Cauchy distribution (eq. 4).
        quantization_weight: ``lambda`` of eq. 8.
    """

    gamma: float = field(default=20.0, metadata=positive())
    quantization_weight: float = field(default=0.1, metadata=non_negative())


def cauchy_distance(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """``K/2 (1 - cos(a_i, b_j))`` for every pair of rows: ``[n, m]`` (eq. 3)."""
    bits = tf.cast(tf.shape(a)[1], a.dtype)
    a_unit = tf.math.l2_normalize(a, axis=1, epsilon=1e-12)
    b_unit = tf.math.l2_normalize(b, axis=1, epsilon=1e-12)
    return 0.5 * bits * (1.0 - tf.matmul(a_unit, b_unit, transpose_b=True))


def dch_terms(
    h: tf.Tensor, similarity: tf.Tensor, *, gamma: float, quantization_weight: float
) -> dict[str, tf.Tensor]:
    """DCH terms of a batch of relaxed codes ``h`` in ``(-1, 1)`` (eqs. 3-8).

    * cauchy ``= 1 / |S| sum_{i != j} w_ij [s_ij log(1 + d_ij / gamma) +
      (1 - s_ij) log(1 + gamma / d_ij)]`` (eq. 6 rewritten: for ``s = 1``,
      ``log(d / gamma) + log(1 + gamma / d) = log(1 + d / gamma)``), with
      ``d_ij = max(d_ij, 0) + 1e-6`` (rounding can make ``1 - cos`` slightly negative for
      equal codes, and ``log1p(gamma / d)`` would then be NaN);
    * quantization ``= lambda * mean_i log(1 + d(|h_i|, 1) / gamma)`` (eq. 7).

    Args:
        h: ``[n, K]`` relaxed codes.
        similarity: ``[n, n]`` label similarity.
        gamma: Cauchy scale.
        quantization_weight: ``lambda``.

    Returns:
        ``{"cauchy", "quantization"}``.
    """
    d = tf.maximum(cauchy_distance(h, h), 0.0) + _DIST_EPS  # 1 - cos can round below 0
    per_pair = similarity * tf.math.log1p(d / gamma) + (1.0 - similarity) * tf.math.log1p(gamma / d)
    n = tf.cast(tf.shape(h)[0], h.dtype)
    pairs = tf.maximum(n * (n - 1.0), 1.0)
    cauchy = tf.reduce_sum(balanced_pair_weights(similarity) * per_pair) / pairs
    bits = tf.cast(tf.shape(h)[1], h.dtype)
    cos_to_ones = tf.reduce_sum(tf.abs(h), axis=1) / (
        tf.sqrt(bits) * tf.maximum(tf.norm(h, axis=1), 1e-12)
    )
    d_quant = tf.maximum(0.5 * bits * (1.0 - cos_to_ones), 0.0)
    quantization = quantization_weight * tf.reduce_mean(tf.math.log1p(d_quant / gamma))
    return {"cauchy": cauchy, "quantization": quantization}


class DCHLoss(HashLoss):
    """DCH (Cao et al. 2018): weighted Cauchy cross-entropy + Cauchy quantisation.

    ``h = 2 s - 1`` (the head's sigmoid scores mapped to ``(-1, 1)``; the paper uses a tanh
    output, which ``2 s - 1 = tanh(a / 2)`` is). See :func:`dch_terms`.
    """

    Options = DCHOptions
    preset = MappingProxyType({"gamma": 80.0, "quantization_weight": 0.1})
    uses_similarity = True
    term_names = ("cauchy", "quantization")

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
        """DCH terms of one batch (needs ``similarity``)."""
        return total(
            dch_terms(
                unit_range(scores),
                similarity,
                gamma=self.options.gamma,
                quantization_weight=self.options.quantization_weight,
            )
        )
