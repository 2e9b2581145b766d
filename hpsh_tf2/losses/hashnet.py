"""HashNet: deep learning to hash by continuation (Cao et al., ICCV 2017), ``loss.name: hashnet``.

Cao, Z., Long, M., Wang, J., Yu, P. S. "HashNet: Deep Learning to Hash by Continuation".
ICCV 2017. The weighted maximum likelihood over pairs (eq. 4, with the adaptive sigmoid
``sigma(alpha <h_i, h_j>)`` of eq. 3) is
``sum_ij w_ij (log(1 + exp(alpha <h_i, h_j>)) - alpha s_ij <h_i, h_j>)`` with the class-balance
weights ``w_ij = |S| / |S_1|`` (similar) and ``|S| / |S_0|`` (dissimilar) (eq. 5), on the
continuation codes ``h = tanh(beta z)`` whose ``beta`` grows during training so that ``h``
tends to ``sign(z)`` (eq. 6 and Algorithm 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

import tensorflow as tf

from hpsh_tf2.losses.common import HashLoss, Triplets, balanced_pair_weights, positive, total
from hpsh_tf2.ops.checks import float_matrix

__all__ = ["HashNetLoss", "HashNetOptions", "continuation_beta", "hashnet_terms"]

_SCORE_EPS = 1e-7


@dataclass(frozen=True)
class HashNetOptions:
    """HashNet's hyper-parameters (``loss.options``).

    Attributes:
        alpha: Adaptive-sigmoid scale of the inner product (eq. 3).
        beta_gamma, beta_power: The continuation ``beta(t) = (1 + beta_gamma t)^beta_power``
            at training step ``t`` (``beta(0) = 1``, growing without bound).
    """

    alpha: float = field(default=0.1, metadata=positive())
    beta_gamma: float = field(default=0.005, metadata=positive())
    beta_power: float = field(default=0.5, metadata=positive())


def continuation_beta(step: tf.Tensor, *, gamma: float, power: float) -> tf.Tensor:
    """``beta(t) = (1 + gamma t)^power``: HashNet's continuation scale at step ``t``."""
    t = tf.cast(step, tf.float32)
    return tf.pow(1.0 + gamma * t, power)


def head_logits(scores: tf.Tensor) -> tf.Tensor:
    """``z = a / 2 = atanh(2 s - 1)``: half the head's pre-sigmoid output, from its scores.

    ``tanh(z) = 2 s - 1``, so the continuation ``tanh(beta z)`` starts at ``u = 2 s - 1``
    for ``beta = 1``. Scores are clipped to ``[1e-7, 1 - 1e-7]``.
    """
    s = tf.clip_by_value(float_matrix(scores, "scores"), _SCORE_EPS, 1.0 - _SCORE_EPS)
    return 0.5 * (tf.math.log(s) - tf.math.log1p(-s))


def hashnet_terms(h: tf.Tensor, similarity: tf.Tensor, *, alpha: float) -> dict[str, tf.Tensor]:
    """HashNet's weighted pairwise cross-entropy of continuation codes ``h`` (eqs. 4-5).

    ``likelihood = 1 / |S| sum_{i != j} w_ij (softplus(alpha <h_i, h_j>) -
    alpha s_ij <h_i, h_j>)``, ``S`` the ``n (n - 1)`` ordered pairs of the batch and
    ``w`` from :func:`hpsh_tf2.losses.common.balanced_pair_weights`.

    Args:
        h: ``[n, K]`` codes in ``(-1, 1)``.
        similarity: ``[n, n]`` label similarity.
        alpha: Inner-product scale.

    Returns:
        ``{"likelihood"}``.
    """
    inner = alpha * tf.matmul(h, h, transpose_b=True)
    weights = balanced_pair_weights(similarity)
    per_pair = tf.nn.softplus(inner) - similarity * inner
    n = tf.cast(tf.shape(h)[0], h.dtype)
    pairs = tf.maximum(n * (n - 1.0), 1.0)
    return {"likelihood": tf.reduce_sum(weights * per_pair) / pairs}


class HashNetLoss(HashLoss):
    """HashNet (Cao et al. 2017): weighted pairwise cross-entropy on ``tanh(beta z)``.

    ``z = atanh(2 s - 1)`` is half the head's pre-sigmoid output, so ``h = tanh(beta z)`` has
    the sign of ``s - 0.5`` for every ``beta`` (the evaluated code) and equals ``2 s - 1`` at
    ``beta = 1``; ``beta`` grows with the training step (:func:`continuation_beta`). The
    paper raises ``beta`` stage-wise; this is the same continuation on a smooth schedule.
    See :func:`hashnet_terms`.
    """

    Options = HashNetOptions
    preset = MappingProxyType({"alpha": 0.3, "beta_gamma": 0.005, "beta_power": 0.5})
    uses_similarity = True
    term_names = ("likelihood",)

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
        """HashNet's loss of one batch at training step ``step`` (needs ``similarity``)."""
        step = tf.zeros([], tf.int64) if step is None else step
        beta = continuation_beta(step, gamma=self.options.beta_gamma, power=self.options.beta_power)
        h = tf.tanh(beta * head_logits(scores))
        return total(hashnet_terms(h, similarity, alpha=self.options.alpha))
