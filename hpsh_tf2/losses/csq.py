"""CSQ: central similarity quantisation (Yuan et al., CVPR 2020), ``loss.name: csq``.

Yuan, L., Wang, T., Zhang, X., Tay, F. E. H., Jie, Z., Liu, W., Feng, J. "Central Similarity
Quantization for Efficient Image and Video Retrieval". CVPR 2020. Every class gets a hash
centre ``c`` in ``{-1, 1}^K``: rows of a Hadamard matrix ``H_K`` and of ``-H_K`` (Sylvester's
construction, ``K`` a power of two and at most ``2K`` classes), else random Bernoulli(0.5)
centres (Sec. 3.2, Algorithm 1); a multi-label item's centre is the sign of the mean of its
labels' centres, zeros broken at random (Sec. 3.2). The loss is the binary cross-entropy
between the codes and their centres on ``(h + 1) / 2`` (eq. 5, the central similarity) plus
``lambda sum_i sum_k log cosh(|h_ik| - 1)`` (eq. 6, the quantisation; total eq. 7).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import tensorflow as tf

from hpsh_tf2.config import LossConfig
from hpsh_tf2.errors import ConfigError
from hpsh_tf2.losses.common import HashLoss, Triplets, log_cosh, non_negative, total, unit_range
from hpsh_tf2.ops.checks import float_matrix

__all__ = ["CSQLoss", "CSQOptions", "csq_terms", "hadamard", "hash_centres", "label_centres"]

_SCORE_EPS = 1e-7


@dataclass(frozen=True)
class CSQOptions:
    """CSQ's hyper-parameters (``loss.options``).

    Attributes:
        quantization_weight: ``lambda`` of eq. 7.
        seed: Seed of the random centres (when Hadamard rows do not fit) and of the tie-break
            vector of multi-label centres.
    """

    quantization_weight: float = field(default=1e-4, metadata=non_negative())
    seed: int = field(
        default=0,
        metadata={"check": lambda v: 0 <= v < 2**31, "expected": "an integer in [0, 2**31)"},
    )


def hadamard(order: int) -> np.ndarray:
    """Sylvester's Hadamard matrix ``H_order`` (``order`` a power of two): ``H_1 = [1]``,
    ``H_2m = [[H_m, H_m], [H_m, -H_m]]``; rows are mutually orthogonal, entries +-1."""
    if order < 1 or order & (order - 1):
        raise ValueError(f"Received: order={order}; expected a power of two")
    h = np.ones((1, 1), np.int8)
    while h.shape[0] < order:
        h = np.block([[h, h], [h, -h]])
    return h


def hash_centres(num_classes: int, bits: int, *, seed: int = 0) -> np.ndarray:
    """One centre in ``{-1, 1}^bits`` per class (``[C, K]`` float32).

    The first ``C`` rows of ``[H_K; -H_K]`` when ``K`` is a power of two and ``C <= 2K``
    (pairwise Hamming distance ``K/2`` or ``K``); otherwise i.i.d. Bernoulli(0.5) signs drawn
    with ``seed``.
    """
    if bits & (bits - 1) == 0 and num_classes <= 2 * bits:
        h = hadamard(bits)
        return np.concatenate([h, -h])[:num_classes].astype(np.float32)
    rng = np.random.default_rng(seed)
    return np.where(rng.random((num_classes, bits)) < 0.5, -1.0, 1.0).astype(np.float32)


def label_centres(labels: tf.Tensor, centres: tf.Tensor, tie_break: tf.Tensor) -> tf.Tensor:
    """The centre of each item: its class's centre, or for multi-hot labels ``[n, C]`` the sign
    of the mean of its labels' centres with zero entries set from ``tie_break`` ``[K]``."""
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 2 and labels.shape[-1] is not None and labels.shape[-1] > 1:
        summed = tf.matmul(tf.cast(labels, centres.dtype), centres)
        signs = tf.sign(summed)
        return tf.where(tf.equal(signs, 0.0), tie_break[None, :] + tf.zeros_like(signs), signs)
    return tf.gather(centres, tf.reshape(tf.cast(labels, tf.int32), [-1]))


def csq_terms(
    scores: tf.Tensor, centres: tf.Tensor, *, quantization_weight: float
) -> dict[str, tf.Tensor]:
    """CSQ terms of a batch: the head's sigmoid scores against each item's centre ``[n, K]``.

    * central ``= mean_{i,k} BCE(s_ik, (c_ik + 1) / 2)`` (eq. 5, ``(h + 1) / 2 = s``);
    * quantization ``= lambda * mean_{i,k} log cosh(|h_ik| - 1)``, ``h = 2 s - 1`` (eq. 6).

    The paper averages the central term over bits and sums over items; both are means here.

    Returns:
        ``{"central", "quantization"}``.
    """
    s = tf.clip_by_value(float_matrix(scores, "scores"), _SCORE_EPS, 1.0 - _SCORE_EPS)
    target = 0.5 * (centres + 1.0)
    bce = -(target * tf.math.log(s) + (1.0 - target) * tf.math.log1p(-s))
    h = unit_range(scores)
    quantization = quantization_weight * tf.reduce_mean(log_cosh(tf.abs(h) - 1.0))
    return {"central": tf.reduce_mean(bce), "quantization": quantization}


class CSQLoss(HashLoss):
    """CSQ (Yuan et al. 2020): binary cross-entropy to class hash centres + log-cosh quantisation.

    ``h = 2 s - 1`` (the paper's tanh output; ``(h + 1) / 2`` is the head's sigmoid score
    ``s``). Needs the number of classes. See :func:`csq_terms` and :func:`hash_centres`.
    """

    Options = CSQOptions
    preset = MappingProxyType({"quantization_weight": 0.0001})
    term_names = ("central", "quantization")

    def __init__(self, config: LossConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        if self.num_classes is None or self.num_classes < 2:
            raise ConfigError(
                f"loss.name='csq' needs the number of classes (>= 2); got {self.num_classes}"
            )
        centres = hash_centres(self.num_classes, self.bits, seed=self.options.seed)
        rng = np.random.default_rng(self.options.seed + 1)
        tie_break = np.where(rng.random(self.bits) < 0.5, -1.0, 1.0).astype(np.float32)
        self.centres = tf.constant(centres)
        self.tie_break = tf.constant(tie_break)

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
        """CSQ terms of one batch (reads ``labels``)."""
        centres = label_centres(labels, self.centres, self.tie_break)
        return total(
            csq_terms(scores, centres, quantization_weight=self.options.quantization_weight)
        )
