"""HPSH loss and triplet semi-hard / hard losses (``loss.name: hpsh``).

Pure functions (``hpsh_triplet_loss`` on sampled triplets, ``hpsh_loss`` = sampler + loss for
one batch, ``triplet_semihard_loss``, ``triplet_hard_loss``) and thin ``keras.losses.Loss``
wrappers (``HPSHLoss``, ``TripletSemiHardLoss``, ``TripletHardLoss``) registered for Keras
serialisation under the package name ``hpsh_tf2``. The HPSH loss is split like a miner and a
loss: a sampler (:mod:`hpsh_tf2.samplers`, built from the ``sampler`` config section) picks
the triplets, and the loss takes them with its own :class:`LossWeights` (the ``loss``
section). All losses compute in float32 (float16/bfloat16 inputs are cast up, float64 stays
float64) and return a scalar.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from hpsh_tf2.config import LossConfig
from hpsh_tf2.losses.common import HashLoss, Triplets, log_cosh, total
from hpsh_tf2.ops.checks import (
    ORIGINAL_ALIASES,
    check_bool,
    check_choice,
    check_finite,
    check_int,
    float_matrix,
    label_vector,
)
from hpsh_tf2.ops.distances import (
    angular_distances,
    l2_normalize_embeddings,
    pairwise_distances,
)
from hpsh_tf2.samplers import TripletSampler

__all__ = [
    "DISTANCE_METRICS",
    "HPSH_VARIANTS",
    "HPSHHashLoss",
    "HPSHLoss",
    "LossWeights",
    "TripletHardLoss",
    "TripletSemiHardLoss",
    "classification_loss",
    "hpsh_loss",
    "hpsh_triplet_loss",
    "log_cosh",
    "make_loss_weights",
    "margin_loss",
    "triplet_hard_loss",
    "triplet_semihard_loss",
]

HPSH_VARIANTS = ("fixed", "original")
DISTANCE_METRICS = ("L2", "squared-L2", "angular")
_PAIR_EPS = 1e-8  # d = sqrt(||a - b||^2 + 1e-8), as in the original margin loss

# What produces triplets (hpsh_tf2.losses.common.Triplets) from (embeddings, labels, seed): a
# TripletSampler or any callable with that signature.
Sampler = Callable[[tf.Tensor, tf.Tensor, "tf.Tensor | None"], Triplets]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _binarize(x: tf.Tensor) -> tf.Tensor:
    """``(sign(x - 0.5) + 1) / 2``: 1 above 0.5, 0 below, 0.5 at exactly 0.5."""
    return (tf.sign(x - 0.5) + 1.0) / 2.0


def _pair_distance(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    return tf.sqrt(tf.reduce_sum(tf.square(a - b), axis=1) + _PAIR_EPS)


def margin_loss(
    anchors: tf.Tensor,
    positives: tf.Tensor,
    negatives: tf.Tensor,
    *,
    alpha: float = 0.3,
    beta: float = 0.6,
) -> tf.Tensor:
    """Margin loss of gathered triplet rows (docs/method.md section 6.1).

    ``mean_t([d_ap - beta + alpha]_+ + [beta - d_an + alpha]_+)`` with
    ``d = sqrt(||.||^2 + 1e-8)``.

    Args:
        anchors: ``[T, K]`` anchor embeddings.
        positives: ``[T, K]`` positive embeddings.
        negatives: ``[T, K]`` negative embeddings.
        alpha: Margin half-width.
        beta: Boundary between positive and negative distances.

    Returns:
        Scalar loss.
    """
    d_ap = _pair_distance(anchors, positives)
    d_an = _pair_distance(anchors, negatives)
    return tf.reduce_mean(tf.nn.relu(d_ap - beta + alpha) + tf.nn.relu(beta - d_an + alpha))


def _push_term(s: tf.Tensor, weight: float) -> tf.Tensor:
    bits = tf.cast(tf.shape(s)[1], s.dtype)
    per_row = tf.reduce_sum(tf.square(s - 0.5), axis=1)
    return -(weight / bits) * tf.reduce_mean(per_row)


def _balance_term(s: tf.Tensor, weight: float) -> tf.Tensor:
    return weight * tf.reduce_mean(tf.square(tf.reduce_mean(s, axis=1) - 0.5))


def _fixed_quantization(s: tf.Tensor, weight: float) -> tf.Tensor:
    return weight * tf.reduce_mean(log_cosh(tf.abs(s - _binarize(s))))


def _original_quantization(rows: tuple[tf.Tensor, ...], weight: float) -> tf.Tensor:
    total = tf.add_n([tf.reduce_sum(tf.square(log_cosh(tf.abs(_binarize(x) - x)))) for x in rows])
    return weight * total


# --------------------------------------------------------------------------------------------
# HPSH loss
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossWeights:
    """Margins, term weights and quantisation variant of the HPSH loss (the ``loss`` section).

    Attributes:
        alpha: Margin half-width (original 0.3).
        beta: Positive/negative boundary (original 0.6).
        quantization_weight: Weight of the quantisation term (original 1/100).
        push_weight: Weight of the push term (original 0.001).
        balance_weight: Weight of the balance term (original 1).
        variant: ``"fixed"`` or ``"original"`` quantisation term (``"seed"`` is a deprecated
            alias of ``"original"``); see :func:`hpsh_triplet_loss`.
        classification_weight: Weight of the auxiliary classification term (not in the paper;
            ``>= 0``, 0 = off); see :func:`classification_loss`.

    Raises:
        ValueError: On a non-finite number or an unknown variant.
        TypeError: On a value of the wrong type.
    """

    alpha: float = 0.3
    beta: float = 0.6
    quantization_weight: float = 0.01
    push_weight: float = 0.001
    balance_weight: float = 1.0
    variant: str = "fixed"
    classification_weight: float = 0.0

    def __post_init__(self) -> None:
        for fld in dataclasses.fields(self):
            if fld.name != "variant":
                object.__setattr__(self, fld.name, check_finite(fld.name, getattr(self, fld.name)))
        if self.classification_weight < 0:
            raise ValueError(
                f"Received: classification_weight={self.classification_weight}; expected >= 0."
            )
        variant = check_choice("variant", self.variant, HPSH_VARIANTS, aliases=ORIGINAL_ALIASES)
        object.__setattr__(self, "variant", variant)

    def get_config(self) -> dict[str, Any]:
        """The fields as a JSON-friendly dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LossWeights:
        """Inverse of :meth:`get_config`."""
        return cls(**config)


def make_loss_weights(config: LossConfig) -> LossWeights:
    """The HPSH loss weights of a config's ``loss`` section (its HPSH keys)."""
    names = {f.name for f in dataclasses.fields(LossWeights)}
    return LossWeights.from_config(
        {k: v for k, v in dataclasses.asdict(config).items() if k in names}
    )


def _hpsh_terms(
    s: tf.Tensor,
    e: tf.Tensor,
    triplets: tuple[tf.Tensor, tf.Tensor, tf.Tensor],
    weights: LossWeights,
) -> dict[str, tf.Tensor]:
    anchors, positives, negatives = triplets
    rows = (tf.gather(e, anchors), tf.gather(e, positives), tf.gather(e, negatives))
    if weights.variant == "fixed":
        quant = _fixed_quantization(s, weights.quantization_weight)
    else:
        quant = _original_quantization(rows, weights.quantization_weight)
    return {
        "margin": margin_loss(*rows, alpha=weights.alpha, beta=weights.beta),
        "push": _push_term(s, weights.push_weight),
        "balance": _balance_term(s, weights.balance_weight),
        "quantization": quant,
    }


def _total(
    parts: dict[str, tf.Tensor], return_components: bool
) -> tf.Tensor | tuple[tf.Tensor, dict[str, tf.Tensor]]:
    total = tf.add_n(list(parts.values()))
    return (total, parts) if return_components else total


def hpsh_triplet_loss(
    scores: tf.Tensor,
    triplets: tuple[tf.Tensor, tf.Tensor, tf.Tensor],
    *,
    weights: LossWeights | None = None,
    return_components: bool = False,
) -> tf.Tensor | tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """HPSH loss of one batch given its triplets (the loss half; the sampler picks them).

    With ``s`` the sigmoid scores ``[n, K]``, ``e = s / sqrt(max(||s||^2, 1e-10))`` and the
    triplet row indices ``(a, p, n)``:

    * margin ``= mean_t([d_ap - beta + alpha]_+ + [beta - d_an + alpha]_+)``,
      ``d = sqrt(||.||^2 + 1e-8)`` on ``e``;
    * push ``= -(push_weight / K) * mean_i sum_k (s_ik - 0.5)^2``;
    * balance ``= balance_weight * mean_i (mean_k s_ik - 0.5)^2``;
    * quantisation, ``variant="fixed"``: ``quantization_weight * mean_{i,k} log cosh|s_ik - b_ik|``
      with ``b = (sign(s - 0.5) + 1) / 2``; ``variant="original"``:
      ``quantization_weight * sum`` over the ``3 * T * K`` entries ``x`` of the gathered
      ``e`` rows ``(a, p, n)`` of ``(log cosh|h(x) - x|)^2``, ``h(x) = (sign(x - 0.5) + 1) / 2``.

    Total = margin + push + balance + quantisation.

    Args:
        scores: Sigmoid outputs ``[n, K]``; any float dtype (computed in float32).
        triplets: ``(anchors, positives, negatives)`` integer row indices ``[T]`` each.
        weights: Margins, weights and variant (default ``LossWeights()``).
        return_components: Also return ``{"margin", "push", "balance", "quantization"}``.

    Returns:
        Scalar float32 loss, or ``(loss, components)`` if ``return_components``.
    """
    weights = LossWeights() if weights is None else weights
    s = float_matrix(scores, "scores")
    e = l2_normalize_embeddings(s)
    return _total(_hpsh_terms(s, e, tuple(triplets), weights), return_components)


def hpsh_loss(
    labels: tf.Tensor,
    scores: tf.Tensor,
    *,
    sampler: Sampler,
    weights: LossWeights | None = None,
    seed: tf.Tensor | None = None,
    logits: tf.Tensor | None = None,
    return_components: bool = False,
) -> tf.Tensor | tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """HPSH training loss of one P x K batch: ``sampler`` then :func:`hpsh_triplet_loss`.

    The triplets are ``sampler(e, labels, seed)`` on the L2-normalised scores ``e``. With
    ``logits`` (not in the paper) the auxiliary term
    ``classification = weights.classification_weight * mean_i CE(logits_i, labels_i)``
    (:func:`classification_loss`) is added.

    Args:
        labels: Integer labels ``[n]`` or ``[n, 1]`` in consecutive class blocks.
        scores: Sigmoid outputs ``[n, K]``; any float dtype (computed in float32).
        sampler: A :class:`hpsh_tf2.samplers.TripletSampler` or any callable
            ``(embeddings, labels, seed) -> (anchors, positives, negatives)``.
        weights: Margins, weights and variant (default ``LossWeights()``).
        seed: ``None`` (stateful draws) or an integer ``[2]`` tensor (stateless draws).
        logits: Optional ``[n, C]`` logits of a classifier on ``scores``.
        return_components: Also return ``{"margin", "push", "balance", "quantization"}`` (and
            ``"classification"`` when ``logits`` is given).

    Returns:
        Scalar float32 loss, or ``(loss, components)`` if ``return_components``.

    Raises:
        ValueError: On invalid shapes or batches (see ``sample_triplets``).
    """
    weights = LossWeights() if weights is None else weights
    s = float_matrix(scores, "scores")
    e = l2_normalize_embeddings(s)
    triplets = sampler(e, labels, seed)
    parts = _hpsh_terms(s, e, triplets, weights)
    if logits is not None:
        parts["classification"] = classification_loss(
            labels, logits, weight=weights.classification_weight
        )
    return _total(parts, return_components)


def classification_loss(labels: tf.Tensor, logits: tf.Tensor, *, weight: float = 1.0) -> tf.Tensor:
    """Auxiliary classification term: ``weight * mean_i CE(softmax(logits_i), labels_i)``.

    Multi-hot labels ``[n, C]``: one sigmoid per label,
    ``weight * mean_{i,c} BCE(sigmoid(logits_ic), y_ic)`` (multi-label classification).

    Not part of the paper's loss; the trainer's ``loss.classification_weight`` option. The
    logits come from a linear softmax classifier on the sigmoid scores (the codes before
    thresholding), so the term pulls the codes of one class together and those of different
    classes apart through a class-discriminative projection.

    Args:
        labels: Integer class ids ``[n]`` or ``[n, 1]`` in ``[0, C)``.
        logits: ``[n, C]`` classifier logits; any float dtype (computed in float32).
        weight: Weight of the term.

    Returns:
        Scalar loss.
    """
    weight = check_finite("weight", weight)
    z = float_matrix(logits, "logits")
    raw = tf.convert_to_tensor(labels)
    if raw.shape.rank == 2 and raw.shape[1] != 1:  # multi-hot: one sigmoid per label
        targets = tf.cast(raw, z.dtype)
        per_label = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=z)
        return tf.constant(weight, z.dtype) * tf.reduce_mean(per_label)
    y = label_vector(raw)
    per_row = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=z)
    return tf.constant(weight, z.dtype) * tf.reduce_mean(per_row)


# --------------------------------------------------------------------------------------------
# triplet losses (semantics of tensorflow-addons' TripletSemiHardLoss / TripletHardLoss)
# --------------------------------------------------------------------------------------------
def _metric_distances(embeddings: tf.Tensor, distance_metric: str) -> tf.Tensor:
    if distance_metric == "L2":
        return pairwise_distances(embeddings)
    if distance_metric == "squared-L2":
        return pairwise_distances(embeddings, squared=True)
    return angular_distances(embeddings)


def _label_masks(labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(positive pairs a != p with the same label, negative pairs) as bool [n, n]."""
    y = label_vector(labels)
    same = tf.equal(y[:, None], y[None, :])
    n = tf.shape(y)[0]
    not_self = tf.logical_not(tf.cast(tf.eye(n), tf.bool))
    return tf.logical_and(same, not_self), tf.logical_not(same)


def _triplet_inputs(
    labels: tf.Tensor, embeddings: tf.Tensor, margin: float, distance_metric: str
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, float]:
    check_choice("distance_metric", distance_metric, DISTANCE_METRICS)
    margin = check_finite("margin", margin)
    x = float_matrix(embeddings, "embeddings")
    dist = _metric_distances(x, distance_metric)
    positive, negative = _label_masks(labels)
    return dist, positive, negative, margin


def triplet_semihard_loss(
    labels: tf.Tensor,
    embeddings: tf.Tensor,
    *,
    margin: float = 1.0,
    distance_metric: str = "L2",
) -> tf.Tensor:
    """Triplet loss with FaceNet semi-hard negative mining (tfa ``TripletSemiHardLoss``).

    For every ordered positive pair ``(a, p)`` (same label, ``a != p``) the negative distance
    is the smallest ``D_an`` strictly greater than ``D_ap``; if there is none, the largest
    ``D_an`` of the anchor (0 if the anchor has no negative). Loss =
    ``mean over positive pairs of [D_ap - D_an + margin]_+`` (0 if the batch has no positive
    pair). The embeddings are used as given (not normalised).

    Args:
        labels: Integer labels ``[n]`` or ``[n, 1]``.
        embeddings: ``[n, d]`` embeddings.
        margin: Margin added to ``D_ap - D_an``.
        distance_metric: ``"L2"``, ``"squared-L2"`` or ``"angular"`` (``1 - cos``).

    Returns:
        Scalar loss (float32, or float64 for float64 inputs).
    """
    dist, positive, negative, margin = _triplet_inputs(labels, embeddings, margin, distance_metric)
    inf = tf.constant(np.inf, dist.dtype)
    neg_count = tf.reduce_sum(tf.cast(negative, tf.int32), axis=1)
    neg_sorted = tf.sort(tf.where(negative, dist, inf), axis=1)  # negatives first, ascending
    first_above = tf.searchsorted(neg_sorted, dist, side="right", out_type=tf.int32)
    has_above = first_above < neg_count[:, None]
    above = tf.gather(neg_sorted, tf.minimum(first_above, tf.shape(dist)[1] - 1), batch_dims=1)
    largest = tf.gather(neg_sorted, tf.maximum(neg_count - 1, 0)[:, None], batch_dims=1)
    largest = tf.where(neg_count[:, None] > 0, largest, tf.zeros_like(largest))
    d_an = tf.where(has_above, above, largest)
    per_pair = tf.nn.relu(dist - d_an + margin)
    pos = tf.cast(positive, dist.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(per_pair * pos), tf.reduce_sum(pos))


def triplet_hard_loss(
    labels: tf.Tensor,
    embeddings: tf.Tensor,
    *,
    margin: float = 1.0,
    soft: bool = False,
    distance_metric: str = "L2",
) -> tf.Tensor:
    """Batch-hard triplet loss (tfa ``TripletHardLoss``).

    Per anchor: hardest positive ``D_ap = max`` over same-label rows (the anchor itself
    included, so 0 without a positive) and hardest negative ``D_an = min`` over
    different-label rows (the row's largest distance without a negative). Loss =
    ``mean_a [D_ap - D_an + margin]_+``, or ``mean_a softplus(D_ap - D_an)`` if ``soft``
    (margin unused). The embeddings are used as given (not normalised).

    Args:
        labels: Integer labels ``[n]`` or ``[n, 1]``.
        embeddings: ``[n, d]`` embeddings.
        margin: Margin (ignored when ``soft``).
        soft: Use the soft-margin ``softplus`` form.
        distance_metric: ``"L2"``, ``"squared-L2"`` or ``"angular"`` (``1 - cos``).

    Returns:
        Scalar loss (float32, or float64 for float64 inputs).
    """
    check_bool("soft", soft)
    dist, positive, negative, margin = _triplet_inputs(labels, embeddings, margin, distance_metric)
    zeros = tf.zeros_like(dist)
    hardest_pos = tf.reduce_max(tf.where(positive, dist, zeros), axis=1)
    inf = tf.fill(tf.shape(dist), tf.constant(np.inf, dist.dtype))
    hardest_neg = tf.reduce_min(tf.where(negative, dist, inf), axis=1)
    has_neg = tf.reduce_any(negative, axis=1)
    hardest_neg = tf.where(has_neg, hardest_neg, tf.reduce_max(dist, axis=1))
    gap = hardest_pos - hardest_neg
    per_anchor = tf.nn.softplus(gap) if soft else tf.nn.relu(gap + margin)
    return tf.reduce_mean(per_anchor)


# --------------------------------------------------------------------------------------------
# Keras wrappers
# --------------------------------------------------------------------------------------------
def _seed_tensor(seed: int | None) -> tf.Tensor | None:
    return None if seed is None else tf.constant([seed, 0], tf.int32)


def _check_optional_seed(seed: int | None) -> int | None:
    if seed is None:
        return None
    seed = check_int("seed", seed)
    if not -(2**31) <= seed < 2**31:
        raise ValueError(f"Received: seed={seed}; expected None or an int32 value.")
    return seed


def _as_sampler(sampler: TripletSampler | Mapping[str, Any]) -> TripletSampler:
    if isinstance(sampler, TripletSampler):
        return sampler
    if isinstance(sampler, Mapping):
        return TripletSampler.from_config(sampler)
    raise TypeError(
        f"Received: sampler={sampler!r}; expected a TripletSampler or its get_config() dict."
    )


@keras.saving.register_keras_serializable(package="hpsh_tf2")
class HPSHLoss(keras.losses.Loss):
    """Keras wrapper of ``hpsh_loss``: ``y_true`` integer labels ``[n]``/``[n, 1]``,
    ``y_pred`` sigmoid scores ``[n, K]``.

    The loss is already a scalar, which Keras's reductions leave unchanged; per-sample weights
    are not meaningful for a batch-level loss and should not be passed. ``seed``: ``None``
    uses stateful random draws; an int makes every call draw with the stateless seed
    ``[seed, 0]`` (reproducible, the same random stream each call; the trainer instead calls
    ``hpsh_loss`` with a per-step seed tensor).

    ``get_config()`` holds the loss weights, ``"sampler": sampler.get_config()``,
    ``num_classes`` and ``seed``.

    With ``num_classes=C`` (the auxiliary classification term), ``y_pred`` is
    ``[n, K + C]``: the K sigmoid scores followed by the C logits of a classifier on them
    (``keras.ops.concatenate([scores, logits], axis=-1)``), weighted by
    ``classification_weight``.

    Args:
        sampler: A :class:`hpsh_tf2.samplers.TripletSampler` or its ``get_config()`` dict.
        alpha: As in :class:`LossWeights`.
        beta: As in :class:`LossWeights`.
        quantization_weight: As in :class:`LossWeights`.
        push_weight: As in :class:`LossWeights`.
        balance_weight: As in :class:`LossWeights`.
        variant: As in :class:`LossWeights`.
        classification_weight: As in :class:`LossWeights`.
        num_classes: ``None`` (``y_pred`` is the scores) or C >= 2 (scores then C logits).
        seed: ``None`` or an int.
        name: Loss name.
        reduction: Keras reduction (no effect on the scalar).
        dtype: Keras loss dtype (inputs are cast to it; computation is at least float32).
    """

    def __init__(
        self,
        sampler: TripletSampler | Mapping[str, Any],
        alpha: float = 0.3,
        beta: float = 0.6,
        quantization_weight: float = 0.01,
        push_weight: float = 0.001,
        balance_weight: float = 1.0,
        variant: str = "fixed",
        classification_weight: float = 0.0,
        num_classes: int | None = None,
        seed: int | None = None,
        name: str = "hpsh_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.sampler = _as_sampler(sampler)
        self.weights = LossWeights(
            alpha=alpha,
            beta=beta,
            quantization_weight=quantization_weight,
            push_weight=push_weight,
            balance_weight=balance_weight,
            variant=variant,
            classification_weight=classification_weight,
        )
        if num_classes is not None and (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, int | np.integer)
            or num_classes < 2
        ):
            raise ValueError(
                f"Received: num_classes={num_classes!r}; expected None or an int >= 2."
            )
        self.num_classes = None if num_classes is None else int(num_classes)
        self.seed = _check_optional_seed(seed)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Returns the scalar HPSH loss of the batch."""
        scores, logits = y_pred, None
        if self.num_classes is not None:
            scores, logits = y_pred[:, : -self.num_classes], y_pred[:, -self.num_classes :]
        return hpsh_loss(
            label_vector(y_true),
            scores,
            sampler=self.sampler,
            weights=self.weights,
            seed=_seed_tensor(self.seed),
            logits=logits,
        )

    def get_config(self) -> dict[str, Any]:
        """Loss weights, sampler config and seed, plus the base ``Loss`` config."""
        return {
            **super().get_config(),
            **self.weights.get_config(),
            "sampler": self.sampler.get_config(),
            "num_classes": self.num_classes,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="hpsh_tf2")
class TripletSemiHardLoss(keras.losses.Loss):
    """Keras wrapper of ``triplet_semihard_loss`` (``y_true`` labels, ``y_pred`` embeddings).

    Args:
        margin: Margin.
        distance_metric: ``"L2"``, ``"squared-L2"`` or ``"angular"``.
        name: Loss name.
        reduction: Keras reduction (no effect on the scalar).
        dtype: Keras loss dtype.
    """

    def __init__(
        self,
        margin: float = 1.0,
        distance_metric: str = "L2",
        name: str = "triplet_semihard_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = check_finite("margin", margin)
        self.distance_metric = check_choice("distance_metric", distance_metric, DISTANCE_METRICS)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Returns the scalar semi-hard triplet loss."""
        return triplet_semihard_loss(
            y_true, y_pred, margin=self.margin, distance_metric=self.distance_metric
        )

    def get_config(self) -> dict[str, Any]:
        """Init arguments plus the base ``Loss`` config."""
        return {
            **super().get_config(),
            "margin": self.margin,
            "distance_metric": self.distance_metric,
        }


@keras.saving.register_keras_serializable(package="hpsh_tf2")
class TripletHardLoss(keras.losses.Loss):
    """Keras wrapper of ``triplet_hard_loss`` (``y_true`` labels, ``y_pred`` embeddings).

    Args:
        margin: Margin (ignored when ``soft``).
        soft: Soft-margin ``softplus`` form.
        distance_metric: ``"L2"``, ``"squared-L2"`` or ``"angular"``.
        name: Loss name.
        reduction: Keras reduction (no effect on the scalar).
        dtype: Keras loss dtype.
    """

    def __init__(
        self,
        margin: float = 1.0,
        soft: bool = False,
        distance_metric: str = "L2",
        name: str = "triplet_hard_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = check_finite("margin", margin)
        self.soft = check_bool("soft", soft)
        self.distance_metric = check_choice("distance_metric", distance_metric, DISTANCE_METRICS)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Returns the scalar batch-hard triplet loss."""
        return triplet_hard_loss(
            y_true,
            y_pred,
            margin=self.margin,
            soft=self.soft,
            distance_metric=self.distance_metric,
        )

    def get_config(self) -> dict[str, Any]:
        """Init arguments plus the base ``Loss`` config."""
        return {
            **super().get_config(),
            "margin": self.margin,
            "soft": self.soft,
            "distance_metric": self.distance_metric,
        }


# --------------------------------------------------------------------------------------------
# the trainer's interface
# --------------------------------------------------------------------------------------------
class HPSHHashLoss(HashLoss):
    """HPSH (docs/method.md section 6): margin + push + balance + quantisation on the
    sampler's triplets (:func:`hpsh_triplet_loss`), plus the optional auxiliary classification
    term on the trainer's classifier logits (:func:`classification_loss`).

    Its hyper-parameters are the ``loss`` section's own keys (``alpha``, ``beta``,
    ``quantization_weight``, ``push_weight``, ``balance_weight``, ``variant``,
    ``classification_weight``); it has no ``loss.options``. The sampler (``sampler.mode``)
    draws the triplets on the L2-normalised scores (:meth:`sampling_embeddings`).
    """

    uses_triplets = True
    takes_logits = True
    term_names = ("margin", "quantization", "push", "balance")

    def __init__(
        self, config: LossConfig, *, bits: int, num_classes: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(config, bits=bits, num_classes=num_classes, **kwargs)
        self.loss_weights = make_loss_weights(config)

    def sampling_embeddings(self, scores: tf.Tensor) -> tf.Tensor:
        """``e = s / sqrt(max(||s||^2, 1e-10))``: the sampler measures distances on these."""
        return l2_normalize_embeddings(float_matrix(scores, "scores"))

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
        """HPSH terms of one batch (the same numbers as :func:`hpsh_loss` with these
        triplets)."""
        if triplets is None:
            raise ValueError("the HPSH loss needs the sampler's triplets")
        s = float_matrix(scores, "scores")
        e = l2_normalize_embeddings(s)
        parts = _hpsh_terms(s, e, tuple(triplets), self.loss_weights)
        if logits is not None:
            parts["classification"] = classification_loss(
                labels, logits, weight=self.loss_weights.classification_weight
            )
        return total(parts)

    def describe(self) -> dict[str, Any]:
        """The method name and the HPSH weights."""
        return {"name": self.method, **self.loss_weights.get_config()}
