"""GreedyHash (Su, Zhang, Yang and Tian, NeurIPS 2018), ``loss.name: greedyhash``.

Su, S., Zhang, C., Han, K., Tian, Y. "Greedy Hash: Towards Fast Optimization for Accurate Hash
Coding in CNN". NeurIPS 2018. The hash layer is ``b = sign(h)`` in the forward pass and passes
the gradient through unchanged in the backward pass, ``dL/dh = dL/db`` (eq. 8, the greedy
step of eqs. 6-7); the supervised objective is the cross-entropy of a linear classifier on
``b`` plus the penalty ``alpha || |h| - 1 ||_3^3`` that keeps ``h`` near ``b`` (eq. 10).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import keras
import tensorflow as tf

from hpsh_tf2.config import LossConfig
from hpsh_tf2.errors import ConfigError
from hpsh_tf2.losses.common import HashLoss, Triplets, non_negative, total, unit_range

__all__ = ["GreedyHashLoss", "GreedyHashOptions", "cubic_penalty", "straight_through_sign"]


@dataclass(frozen=True)
class GreedyHashOptions:
    """GreedyHash's hyper-parameters (``loss.options``).

    Attributes:
        alpha: Weight of the cubic penalty (eq. 10).
    """

    alpha: float = field(default=0.1, metadata=non_negative())


@tf.custom_gradient
def straight_through_sign(h: tf.Tensor):
    """``b = sign(h)`` (+1 where ``h > 0``, else -1, the evaluated code) with the identity
    gradient ``dL/dh = dL/db`` (eq. 8)."""
    b = tf.where(h > 0, tf.ones_like(h), -tf.ones_like(h))

    def grad(upstream: tf.Tensor) -> tf.Tensor:
        return upstream

    return b, grad


def cubic_penalty(h: tf.Tensor) -> tf.Tensor:
    """``mean_{i,k} | |h_ik| - 1 |^3`` (eq. 10's penalty, averaged)."""
    return tf.reduce_mean(tf.abs(tf.abs(h) - 1.0) ** 3)


def _cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 2 and labels.shape[-1] is not None and labels.shape[-1] > 1:
        y = tf.cast(labels, logits.dtype)  # multi-hot: one sigmoid per label
        per_item = tf.reduce_mean(
            tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits), axis=1
        )
    else:
        y = tf.reshape(tf.cast(labels, tf.int32), [-1])
        per_item = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    return tf.reduce_mean(per_item)


class GreedyHashLoss(HashLoss):
    """GreedyHash (Su et al. 2018): classifier cross-entropy on straight-through ``sign(h)`` +
    ``alpha * mean | |h| - 1 |^3``.

    ``h = 2 s - 1`` (the paper's ``h`` is a linear output; its sign is the code as ``h``'s is
    here). The classifier ``Dense(num_classes)`` on the codes is the loss's own layer: trained
    and checkpointed with the head, not part of the hash model. Integer labels use softmax
    cross-entropy, multi-hot labels one sigmoid cross-entropy per label.
    """

    Options = GreedyHashOptions
    preset = MappingProxyType({"alpha": 0.1})
    term_names = ("classification", "penalty")

    def __init__(self, config: LossConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        if self.num_classes is None or self.num_classes < 2:
            raise ConfigError(
                f"loss.name='greedyhash' needs the number of classes (>= 2); got {self.num_classes}"
            )
        self.code_classifier = keras.layers.Dense(
            self.num_classes, name="greedyhash_classifier", dtype="float32"
        )
        self.code_classifier.build((None, self.bits))

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
        """GreedyHash terms of one batch (reads ``labels``)."""
        h = unit_range(scores)
        code_logits = self.code_classifier(straight_through_sign(h))
        return total(
            {
                "classification": _cross_entropy(labels, code_logits),
                "penalty": self.options.alpha * cubic_penalty(h),
            }
        )
