"""DPSH: deep pairwise-supervised hashing (Li, Wang and Kang, IJCAI 2016), ``loss.name: dpsh``.

Li, W.-J., Wang, S., Kang, W.-C. "Feature Learning based Deep Supervised Hashing with Pairwise
Labels". IJCAI 2016. With ``Theta_ij = 1/2 u_i^T u_j`` the pairwise likelihood
``p(s_ij | U) = sigma(Theta_ij)^s_ij (1 - sigma(Theta_ij))^(1 - s_ij)`` (eq. 1) gives the
negative log-likelihood ``-sum_ij (s_ij Theta_ij - log(1 + e^Theta_ij))`` (eq. 2), relaxed
from the codes ``b`` to the network outputs ``u`` with the quantisation penalty
``eta sum_i ||b_i - u_i||^2`` (eq. 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

import tensorflow as tf

from hpsh_tf2.losses.common import (
    HashLoss,
    Triplets,
    code_signs,
    non_negative,
    off_diagonal,
    total,
    unit_range,
)

__all__ = ["DPSHLoss", "DPSHOptions", "dpsh_terms"]


@dataclass(frozen=True)
class DPSHOptions:
    """DPSH's hyper-parameters (``loss.options``).

    Attributes:
        eta: Weight of the quantisation penalty (the paper's eta).
    """

    eta: float = field(default=0.1, metadata=non_negative())


def dpsh_terms(u: tf.Tensor, similarity: tf.Tensor, *, eta: float) -> dict[str, tf.Tensor]:
    """DPSH terms of a batch of relaxed codes ``u`` in ``(-1, 1)``.

    * likelihood ``= mean over pairs i != j of [log(1 + e^Theta_ij) - s_ij Theta_ij]``,
      ``Theta_ij = 1/2 u_i . u_j`` (eq. 2 on the relaxed codes; written with softplus);
    * quantization ``= eta * mean_i ||b_i - u_i||^2``, ``b = sign(u)`` as evaluated (eq. 4).

    The paper sums both over the training set; here both are means over the batch (pairs, rows),
    so ``eta`` weighs one row's penalty against one pair's likelihood.

    Args:
        u: ``[n, K]`` relaxed codes.
        similarity: ``[n, n]`` label similarity (1 = similar).
        eta: Quantisation weight.

    Returns:
        ``{"likelihood", "quantization"}``.
    """
    theta = 0.5 * tf.matmul(u, u, transpose_b=True)
    mask = off_diagonal(tf.shape(u)[0], u.dtype)
    per_pair = tf.nn.softplus(theta) - similarity * theta
    likelihood = tf.math.divide_no_nan(tf.reduce_sum(per_pair * mask), tf.reduce_sum(mask))
    quantization = eta * tf.reduce_mean(tf.reduce_sum(tf.square(code_signs(u) - u), axis=1))
    return {"likelihood": likelihood, "quantization": quantization}


class DPSHLoss(HashLoss):
    """DPSH (Li et al. 2016): pairwise likelihood of ``1/2 u_i . u_j`` + quantisation.

    ``u = 2 s - 1`` (the head's sigmoid scores mapped to ``(-1, 1)``; the paper's ``u`` is a
    linear output, whose sign is the code as ``u``'s sign is here). See :func:`dpsh_terms`.
    """

    Options = DPSHOptions
    preset = MappingProxyType({"eta": 0.01})
    uses_similarity = True
    term_names = ("likelihood", "quantization")

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
        """DPSH terms of one batch (needs ``similarity``)."""
        return total(dpsh_terms(unit_range(scores), similarity, eta=self.options.eta))
