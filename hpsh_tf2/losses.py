"""HPSH loss and triplet semi-hard / hard losses.

Pure functions (``hpsh_loss``, ``triplet_semihard_loss``, ``triplet_hard_loss``) and thin
``keras.losses.Loss`` wrappers (``HPSHLoss``, ``TripletSemiHardLoss``, ``TripletHardLoss``)
registered for Keras serialisation under the package name ``hpsh_tf2``. All losses compute in
float32 (float16/bfloat16 inputs are cast up, float64 stays float64) and return a scalar.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from hpsh_tf2.ops.checks import check_choice, check_finite
from hpsh_tf2.ops.distances import (
    angular_distances,
    l2_normalize_embeddings,
    pairwise_distances,
)
from hpsh_tf2.ops.sampling import EMPTY_ROW_POLICIES, SAMPLER_MODES, sample_triplets

__all__ = [
    "DISTANCE_METRICS",
    "HPSH_VARIANTS",
    "HPSHLoss",
    "TripletHardLoss",
    "TripletSemiHardLoss",
    "classification_loss",
    "hpsh_loss",
    "log_cosh",
    "margin_loss",
    "triplet_hard_loss",
    "triplet_semihard_loss",
]

HPSH_VARIANTS = ("fixed", "seed")
DISTANCE_METRICS = ("L2", "squared-L2", "angular")
_PAIR_EPS = 1e-8  # d = sqrt(||a - b||^2 + 1e-8), as in the original margin loss


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _to_compute_float(x: tf.Tensor, name: str) -> tf.Tensor:
    """Rank-2 float tensor in float32 (float64 kept)."""
    x = tf.convert_to_tensor(x)
    if x.shape.rank is not None and x.shape.rank != 2:
        raise ValueError(f"Received: {name} with shape {x.shape}; expected a rank-2 tensor.")
    return x if x.dtype == tf.float64 else tf.cast(x, tf.float32)


def _flat_labels(labels: tf.Tensor) -> tf.Tensor:
    y = tf.convert_to_tensor(labels)
    if y.shape.rank == 2 and y.shape[1] == 1:
        y = tf.reshape(y, [-1])
    if y.shape.rank is not None and y.shape.rank != 1:
        raise ValueError(f"Received: labels with shape {y.shape}; expected [n] or [n, 1].")
    return tf.cast(y, tf.int64)


def log_cosh(x: tf.Tensor) -> tf.Tensor:
    """Overflow-free ``log(cosh(x)) = |x| + softplus(-2 |x|) - log(2)``.

    Args:
        x: Any float tensor.

    Returns:
        ``log(cosh(x))`` element-wise.
    """
    ax = tf.abs(x)
    return ax + tf.nn.softplus(-2.0 * ax) - tf.constant(math.log(2.0), x.dtype)


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
    """Margin loss of gathered triplet rows (spec section 5).

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


def _seed_quantization(rows: tuple[tf.Tensor, ...], weight: float) -> tf.Tensor:
    total = tf.add_n([tf.reduce_sum(tf.square(log_cosh(tf.abs(_binarize(x) - x)))) for x in rows])
    return weight * total


def classification_loss(labels: tf.Tensor, logits: tf.Tensor, *, weight: float = 1.0) -> tf.Tensor:
    """Auxiliary classification term: ``weight * mean_i CE(softmax(logits_i), labels_i)``.

    Not part of the paper's loss; the trainer's ``loss.classification_weight`` option. The
    logits come from a linear softmax classifier on the sigmoid scores (the codes before
    thresholding), so the term pulls the codes of one class together and those of different
    classes apart through a class-discriminative projection.

    Args:
        labels: Integer class ids ``[n]`` or ``[n, 1]`` in ``[0, C)``.
        logits: ``[n, C]`` classifier logits; any float dtype (computed in float32).
        weight: Weight of the term (``>= 0``).

    Returns:
        Scalar loss.
    """
    weight = check_finite("weight", weight)
    z = _to_compute_float(logits, "logits")
    y = _flat_labels(labels)
    per_row = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=z)
    return tf.constant(weight, z.dtype) * tf.reduce_mean(per_row)


# --------------------------------------------------------------------------------------------
# HPSH loss
# --------------------------------------------------------------------------------------------
def hpsh_loss(
    labels: tf.Tensor,
    scores: tf.Tensor,
    *,
    samples_per_class: int,
    alpha: float = 0.3,
    beta: float = 0.6,
    quantization_weight: float = 0.01,
    push_weight: float = 0.001,
    balance_weight: float = 1.0,
    variant: str = "fixed",
    sampler_mode: str = "hpsh",
    cutoff: float = 0.5,
    nonzero_loss_cutoff: float = 0.9,
    seed: tf.Tensor | None = None,
    empty_rows: str = "index0",
    logits: tf.Tensor | None = None,
    classification_weight: float = 0.0,
    return_components: bool = False,
) -> tf.Tensor | tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """HPSH training loss of one P x K batch.

    With ``s`` the sigmoid scores ``[n, K]``, ``e = s / sqrt(max(||s||^2, 1e-10))`` and the
    triplets ``(a, p, n)`` of ``sample_triplets(e, labels, mode=sampler_mode, ...)``:

    * margin ``= mean_t([d_ap - beta + alpha]_+ + [beta - d_an + alpha]_+)``,
      ``d = sqrt(||.||^2 + 1e-8)`` on ``e``;
    * push ``= -(push_weight / K) * mean_i sum_k (s_ik - 0.5)^2``;
    * balance ``= balance_weight * mean_i (mean_k s_ik - 0.5)^2``;
    * quantisation, ``variant="fixed"``: ``quantization_weight * mean_{i,k} log cosh|s_ik - b_ik|``
      with ``b = (sign(s - 0.5) + 1) / 2``; ``variant="seed"`` (the original):
      ``quantization_weight * sum`` over the ``3 * T * K`` entries ``x`` of the gathered
      ``e`` rows ``(a, p, n)`` of ``(log cosh|h(x) - x|)^2``, ``h(x) = (sign(x - 0.5) + 1) / 2``.

    Total = margin + push + balance + quantisation, plus (not in the paper; only when
    ``logits`` is given) ``classification = classification_weight * mean_i CE(logits_i, y_i)``
    (:func:`classification_loss`).

    Args:
        labels: Integer labels ``[n]`` or ``[n, 1]`` in consecutive blocks of
            ``samples_per_class``.
        scores: Sigmoid outputs ``[n, K]``; any float dtype (computed in float32).
        samples_per_class: Rows per class block (``>= 2``).
        alpha: Margin half-width (original 0.3).
        beta: Positive/negative boundary (original 0.6).
        quantization_weight: Weight of the quantisation term (original 1/100).
        push_weight: Weight of the push term (original 0.001).
        balance_weight: Weight of the balance term (original 1).
        variant: ``"fixed"`` or ``"seed"`` quantisation term (see above).
        sampler_mode: ``sample_triplets`` mode (``"hpsh"``, ``"seed"``, ``"random"``,
            ``"semihard"``, ``"hard"``).
        cutoff: Sampler distance clip (0.5).
        nonzero_loss_cutoff: Sampler distance bound; 0.9 = alpha + beta for ``"hpsh"``; pass
            1.4 with ``sampler_mode="seed"`` to reproduce the original.
        seed: ``None`` (stateful draws) or an integer ``[2]`` tensor (stateless draws).
        empty_rows: ``sampler_mode="seed"`` only: what a row whose weights are all 0 does.
            ``"index0"`` draws row 0 (the original's GPU kernel), ``"error"`` fails with
            ``InvalidArgumentError`` (its CPU kernel; XLA drops the check).
        logits: Optional ``[n, C]`` logits of a classifier on ``scores``; with them the
            classification term is added (and reported as ``"classification"``).
        classification_weight: Weight of the classification term (``>= 0``).
        return_components: Also return ``{"margin", "push", "balance", "quantization"}``
            (and ``"classification"`` when ``logits`` is given).

    Returns:
        Scalar float32 loss, or ``(loss, components)`` if ``return_components``.

    Raises:
        ValueError: On invalid options or shapes (see ``sample_triplets``).
        TypeError: On arguments of the wrong type.
    """
    check_choice("variant", variant, HPSH_VARIANTS)
    check_choice("sampler_mode", sampler_mode, SAMPLER_MODES)
    alpha, beta = check_finite("alpha", alpha), check_finite("beta", beta)
    quantization_weight = check_finite("quantization_weight", quantization_weight)
    push_weight = check_finite("push_weight", push_weight)
    balance_weight = check_finite("balance_weight", balance_weight)
    classification_weight = check_finite("classification_weight", classification_weight)
    if classification_weight < 0:
        raise ValueError(
            f"Received: classification_weight={classification_weight}; expected a value >= 0."
        )
    s = _to_compute_float(scores, "scores")
    e = l2_normalize_embeddings(s)
    a_idx, p_idx, n_idx = sample_triplets(
        e,
        labels,
        samples_per_class=samples_per_class,
        mode=sampler_mode,
        cutoff=cutoff,
        nonzero_loss_cutoff=nonzero_loss_cutoff,
        seed=seed,
        empty_rows=empty_rows,
    )
    rows = (tf.gather(e, a_idx), tf.gather(e, p_idx), tf.gather(e, n_idx))
    if variant == "fixed":
        quant = _fixed_quantization(s, quantization_weight)
    else:
        quant = _seed_quantization(rows, quantization_weight)
    parts = {
        "margin": margin_loss(*rows, alpha=alpha, beta=beta),
        "push": _push_term(s, push_weight),
        "balance": _balance_term(s, balance_weight),
        "quantization": quant,
    }
    if logits is not None:
        parts["classification"] = classification_loss(labels, logits, weight=classification_weight)
    total = tf.add_n(list(parts.values()))
    return (total, parts) if return_components else total


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
    y = _flat_labels(labels)
    same = tf.equal(y[:, None], y[None, :])
    n = tf.shape(y)[0]
    not_self = tf.logical_not(tf.cast(tf.eye(n), tf.bool))
    return tf.logical_and(same, not_self), tf.logical_not(same)


def _triplet_inputs(
    labels: tf.Tensor, embeddings: tf.Tensor, margin: float, distance_metric: str
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, float]:
    check_choice("distance_metric", distance_metric, DISTANCE_METRICS)
    margin = check_finite("margin", margin)
    x = _to_compute_float(embeddings, "embeddings")
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
    if not isinstance(soft, bool | np.bool_):
        raise TypeError(f"Received: soft={soft!r}; expected a bool.")
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
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"Received: seed={seed!r}; expected None or an int.")
    if not -(2**31) <= int(seed) < 2**31:
        raise ValueError(f"Received: seed={seed}; expected None or an int32 value.")
    return int(seed)


@keras.saving.register_keras_serializable(package="hpsh_tf2")
class HPSHLoss(keras.losses.Loss):
    """Keras wrapper of ``hpsh_loss``: ``y_true`` integer labels ``[n]``/``[n, 1]``,
    ``y_pred`` sigmoid scores ``[n, K]``.

    The loss is already a scalar, which Keras's reductions leave unchanged; per-sample weights
    are not meaningful for a batch-level loss and should not be passed. ``seed``: ``None``
    uses stateful random draws; an int makes every call draw with the stateless seed
    ``[seed, 0]`` (reproducible, the same random stream each call; the trainer instead calls
    ``hpsh_loss`` with a per-step seed tensor).

    With ``num_classes=C`` (the auxiliary classification term), ``y_pred`` is
    ``[n, K + C]``: the K sigmoid scores followed by the C logits of a classifier on them
    (``keras.ops.concatenate([scores, logits], axis=-1)``), weighted by
    ``classification_weight``.

    Args:
        samples_per_class: Rows per class block.
        alpha, beta, quantization_weight, push_weight, balance_weight, variant, sampler_mode,
            cutoff, nonzero_loss_cutoff, empty_rows, classification_weight: As in
            ``hpsh_loss``.
        num_classes: ``None`` (``y_pred`` is the scores) or C >= 2 (scores then C logits).
        seed: ``None`` or an int.
        name: Loss name.
        reduction: Keras reduction (no effect on the scalar).
        dtype: Keras loss dtype (inputs are cast to it; computation is at least float32).
    """

    def __init__(
        self,
        samples_per_class: int,
        alpha: float = 0.3,
        beta: float = 0.6,
        quantization_weight: float = 0.01,
        push_weight: float = 0.001,
        balance_weight: float = 1.0,
        variant: str = "fixed",
        sampler_mode: str = "hpsh",
        cutoff: float = 0.5,
        nonzero_loss_cutoff: float = 0.9,
        seed: int | None = None,
        empty_rows: str = "index0",
        classification_weight: float = 0.0,
        num_classes: int | None = None,
        name: str = "hpsh_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if isinstance(samples_per_class, bool) or not isinstance(samples_per_class, int):
            raise TypeError(
                f"Received: samples_per_class={samples_per_class!r}; expected an int >= 2."
            )
        if samples_per_class < 2:
            raise ValueError(
                f"Received: samples_per_class={samples_per_class}; expected an int >= 2."
            )
        check_choice("variant", variant, HPSH_VARIANTS)
        check_choice("sampler_mode", sampler_mode, SAMPLER_MODES)
        check_choice("empty_rows", empty_rows, EMPTY_ROW_POLICIES)
        self.samples_per_class = samples_per_class
        self.alpha = alpha
        self.beta = beta
        self.quantization_weight = quantization_weight
        self.push_weight = push_weight
        self.balance_weight = balance_weight
        self.variant = variant
        self.sampler_mode = sampler_mode
        self.cutoff = cutoff
        self.nonzero_loss_cutoff = nonzero_loss_cutoff
        self.empty_rows = empty_rows
        self.classification_weight = check_finite("classification_weight", classification_weight)
        if self.classification_weight < 0:
            raise ValueError(
                f"Received: classification_weight={classification_weight}; expected >= 0."
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

    def _options(self) -> dict[str, Any]:
        return {
            "samples_per_class": self.samples_per_class,
            "alpha": self.alpha,
            "beta": self.beta,
            "quantization_weight": self.quantization_weight,
            "push_weight": self.push_weight,
            "balance_weight": self.balance_weight,
            "variant": self.variant,
            "sampler_mode": self.sampler_mode,
            "cutoff": self.cutoff,
            "nonzero_loss_cutoff": self.nonzero_loss_cutoff,
            "empty_rows": self.empty_rows,
            "classification_weight": self.classification_weight,
        }

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Returns the scalar HPSH loss of the batch."""
        scores, logits = y_pred, None
        if self.num_classes is not None:
            scores, logits = y_pred[:, : -self.num_classes], y_pred[:, -self.num_classes :]
        return hpsh_loss(
            _flat_labels(y_true),
            scores,
            seed=_seed_tensor(self.seed),
            logits=logits,
            **self._options(),
        )

    def get_config(self) -> dict[str, Any]:
        """Init arguments plus the base ``Loss`` config."""
        return {
            **super().get_config(),
            **self._options(),
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
        if not isinstance(soft, bool | np.bool_):
            raise TypeError(f"Received: soft={soft!r}; expected a bool.")
        self.soft = bool(soft)
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
