"""DTSH: deep supervised hashing with triplet labels (Wang, Shi and Kitani, ACCV 2016),
``loss.name: dtsh``.

Wang, X., Shi, Y., Kitani, K. M. "Deep Supervised Hashing with Triplet Labels". ACCV 2016. With
``Theta_ij = 1/2 u_i^T u_j`` the likelihood of a triplet (query ``a``, positive ``p``,
negative ``n``) is ``sigma(Theta_ap - Theta_an - alpha)`` (eq. 3); the loss is its negative
log-likelihood ``-(Theta_ap - Theta_an - alpha - log(1 + e^(Theta_ap - Theta_an - alpha)))``
plus the quantisation ``lambda ||b_i - u_i||^2`` (eq. 5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

import tensorflow as tf

from hpsh_tf2.losses.common import HashLoss, Triplets, code_signs, non_negative, total, unit_range

__all__ = ["DTSHLoss", "DTSHOptions", "dtsh_terms"]


@dataclass(frozen=True)
class DTSHOptions:
    """DTSH's hyper-parameters (``loss.options``).

    Attributes:
        margin_per_bit: The margin ``alpha = margin_per_bit * K`` (paper: ``K/2``, so 0.5).
        quantization_weight: ``lambda``.
    """

    margin_per_bit: float = field(default=0.5, metadata=non_negative())
    quantization_weight: float = field(default=0.01, metadata=non_negative())


def dtsh_terms(
    u: tf.Tensor,
    triplets: tuple[tf.Tensor, tf.Tensor, tf.Tensor],
    *,
    margin: float,
    quantization_weight: float,
) -> dict[str, tf.Tensor]:
    """DTSH terms of relaxed codes ``u`` in ``(-1, 1)`` and triplet row indices ``(a, p, n)``.

    * likelihood ``= mean_t softplus(-(Theta_ap - Theta_an - margin))`` (eq. 3's negative
      log-likelihood: ``log(1 + e^x) - x = softplus(-x)``);
    * quantization ``= lambda * mean_i ||b_i - u_i||^2``, ``b = sign(u)`` as evaluated.

    Returns:
        ``{"likelihood", "quantization"}``.
    """
    anchors, positives, negatives = (tf.gather(u, idx) for idx in triplets)
    theta_ap = 0.5 * tf.reduce_sum(anchors * positives, axis=1)
    theta_an = 0.5 * tf.reduce_sum(anchors * negatives, axis=1)
    likelihood = tf.reduce_mean(tf.nn.softplus(-(theta_ap - theta_an - margin)))
    quantization = quantization_weight * tf.reduce_mean(
        tf.reduce_sum(tf.square(code_signs(u) - u), axis=1)
    )
    return {"likelihood": likelihood, "quantization": quantization}


class DTSHLoss(HashLoss):
    """DTSH (Wang et al. 2016): triplet likelihood on ``1/2 u_i . u_j`` + quantisation, on the
    sampler's triplets (``sampler.mode``; drawn on the L2-normalised scores as for HPSH).

    ``u = 2 s - 1`` (the head's sigmoid scores mapped to ``(-1, 1)``). See :func:`dtsh_terms`.
    """

    Options = DTSHOptions
    preset = MappingProxyType({"margin_per_bit": 0.5, "quantization_weight": 0.01})
    uses_triplets = True
    term_names = ("likelihood", "quantization")

    def sampling_embeddings(self, scores: tf.Tensor) -> tf.Tensor:
        """The L2-normalised ``u`` (distances between codes)."""
        return tf.math.l2_normalize(unit_range(scores), axis=1, epsilon=1e-12)

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
        """DTSH terms of one batch (needs ``triplets``)."""
        if triplets is None:
            raise ValueError("the DTSH loss needs the sampler's triplets")
        margin = self.options.margin_per_bit * self.bits
        return total(
            dtsh_terms(
                unit_range(scores),
                tuple(triplets),
                margin=margin,
                quantization_weight=self.options.quantization_weight,
            )
        )
