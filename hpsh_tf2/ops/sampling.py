"""Triplet sampling for P x K batches: HPSH hard-probability negatives and alternatives.

A batch holds ``n = P * K`` rows in consecutive blocks of ``K = samples_per_class`` rows that
share a label. Every row ``i`` is an anchor ``K - 1`` times, once with each of its block mates
as the positive, giving ``T = n * (K - 1)`` triplets ordered by anchor (docs/method.md section 2.2).
Each anchor draws ``K - 1`` negatives and triplet ``t`` pairs anchor ``t`` with negative ``t``.

Everything is vectorised (one categorical draw for the whole batch; no Python loop over
rows) and runs eagerly, under ``tf.function`` and with ``jit_compile=True``. Sampling is not
differentiable: indices are returned and the embeddings are read through ``stop_gradient``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from hpsh_tf2.evaluation.relevance import tf_relevant
from hpsh_tf2.ops.checks import (
    ORIGINAL_ALIASES,
    check_choice,
    check_positive,
    check_samples_per_class,
    float_matrix,
    label_vector,
)
from hpsh_tf2.ops.distances import original_pseudo_distances, pairwise_distances
from hpsh_tf2.registry import SAMPLERS

__all__ = [
    "EMPTY_ROW_POLICIES",
    "HARD",
    "HPSH",
    "ORIGINAL",
    "ORIGINAL_NONZERO_LOSS_CUTOFF",
    "RANDOM",
    "SEMIHARD",
    "NegativeRule",
    "TripletBatch",
    "hpsh_negative_probabilities",
    "negative_rule",
    "original_negative_probabilities",
    "sample_triplets",
]

EMPTY_ROW_POLICIES = ("index0", "error")
# The original code's distance bound (on its pseudo-distance); the default of mode "original".
ORIGINAL_NONZERO_LOSS_CUTOFF = 1.4

# Floor of 1 - D^2/4 before its log: keeps the weights finite when D reaches 2.
_LOG_ARG_FLOOR = 1e-12


# --------------------------------------------------------------------------------------------
# argument handling
# --------------------------------------------------------------------------------------------


def _prepare_embeddings(embeddings: tf.Tensor) -> tf.Tensor:
    """Float tensor [n, d] (float32, or float64 if given), detached from the gradient tape."""
    return tf.stop_gradient(float_matrix(embeddings, "embeddings"))


def _prepare_seed(seed: tf.Tensor | None) -> tf.Tensor | None:
    if seed is None:
        return None
    s = tf.convert_to_tensor(seed)
    if not s.dtype.is_integer:
        raise TypeError(
            f"Received: seed of dtype {s.dtype.name}; expected None or an integer tensor "
            "of shape [2]."
        )
    if s.shape.rank is not None and s.shape.as_list() != [2]:
        raise ValueError(
            f"Received: seed with shape {s.shape}; expected None or an integer tensor of shape [2]."
        )
    return tf.cast(s, tf.int32)  # XLA's stateless kernels take int32 seeds


def _is_multi_hot(labels: tf.Tensor) -> bool:
    """Multi-hot ``[n, C]`` labels (rank 2, more than one column) rather than class indices."""
    return labels.shape.rank == 2 and labels.shape[1] != 1


def _multi_hot(labels: tf.Tensor, n: int | None) -> tf.Tensor:
    """Multi-hot labels ``[n, C]`` as int32 (one row per embedding)."""
    if not (labels.dtype.is_integer or labels.dtype.is_floating or labels.dtype == tf.bool):
        raise TypeError(f"Received: labels of dtype {labels.dtype.name}; expected 0/1 multi-hot.")
    if n is not None and labels.shape[0] is not None and labels.shape[0] != n:
        raise ValueError(
            f"Received: labels with {labels.shape[0]} rows for {n} embeddings; "
            "expected one label row per embedding row."
        )
    return tf.cast(labels, tf.int32)


def _eager_multi_hot_checks(y: np.ndarray, k: int) -> None:
    n = y.shape[0]
    if n % k != 0 or n == 0:
        raise ValueError(
            f"Received: a batch of {n} rows with samples_per_class={k}; expected a positive "
            "multiple of samples_per_class (P blocks of K rows)."
        )
    common = y.reshape(-1, k, y.shape[1]).min(axis=1)  # labels every row of a block carries
    if not common.any(axis=1).all():
        bad = int(np.argmin(common.any(axis=1)))
        raise ValueError(
            f"Received: multi-hot labels in block {bad} with no label shared by all "
            f"samples_per_class={k} rows; expected each block to carry a common label."
        )


def _eager_batch_checks(labels: tf.Tensor, k: int, need_negatives: bool) -> None:
    y = labels.numpy()
    if y.ndim == 2:
        _eager_multi_hot_checks(y, k)
        return
    n = y.shape[0]
    if n % k != 0 or n == 0:
        raise ValueError(
            f"Received: a batch of {n} rows with samples_per_class={k}; expected a positive "
            "multiple of samples_per_class (P blocks of K rows)."
        )
    blocks = y.reshape(-1, k)
    if np.any(blocks != blocks[:, :1]):
        bad = int(np.argmax(np.any(blocks != blocks[:, :1], axis=1)))
        raise ValueError(
            f"Received: labels {blocks[bad].tolist()} in block {bad}; expected the same label "
            f"in each consecutive block of samples_per_class={k} rows."
        )
    if need_negatives and np.unique(y).size < 2:
        raise ValueError(
            f"Received: labels with a single class ({y[0]}); expected at least two classes "
            "so that every anchor has a negative."
        )


def _graph_batch_checks(labels: tf.Tensor, k: int, need_negatives: bool) -> list[tf.Operation]:
    n = tf.shape(labels)[0]
    ops = [
        tf.debugging.assert_equal(
            n % k, 0, message=f"batch size must be a multiple of samples_per_class={k}"
        )
    ]
    if labels.shape.rank == 2:
        common = tf.reduce_min(tf.reshape(labels, [-1, k, tf.shape(labels)[1]]), axis=1)
        ops.append(
            tf.debugging.assert_equal(
                tf.reduce_all(tf.reduce_any(common > 0, axis=1)),
                True,
                message=f"each block of samples_per_class={k} rows must share a label",
            )
        )
        return ops  # an anchor without a negative is handled by the sampler (self-negative)
    blocks = tf.reshape(labels, [-1, k])
    ops.append(
        tf.debugging.assert_equal(
            blocks,
            tf.broadcast_to(blocks[:, :1], tf.shape(blocks)),
            message=f"labels must be constant within blocks of samples_per_class={k} rows",
        )
    )
    if need_negatives:
        ops.append(
            tf.debugging.assert_greater(
                tf.reduce_max(labels) - tf.reduce_min(labels),
                tf.constant(0, labels.dtype),
                message="labels must contain at least two classes",
            )
        )
    return ops


def _prepare_batch(
    embeddings: tf.Tensor, labels: tf.Tensor, k: int, need_negatives: bool
) -> tuple[tf.Tensor, tf.Tensor, list[tf.Operation]]:
    e = _prepare_embeddings(embeddings)
    n_static = e.shape[0]
    if n_static is not None and (n_static % k != 0 or n_static == 0):
        raise ValueError(
            f"Received: a batch of {n_static} rows with samples_per_class={k}; expected a "
            "positive multiple of samples_per_class (P blocks of K rows)."
        )
    raw = tf.convert_to_tensor(labels)
    y = _multi_hot(raw, n_static) if _is_multi_hot(raw) else label_vector(raw, n_static)
    if tf.executing_eagerly():
        _eager_batch_checks(y, k, need_negatives)
        return e, y, []
    return e, y, _graph_batch_checks(y, k, need_negatives)


# --------------------------------------------------------------------------------------------
# anchors and positives
# --------------------------------------------------------------------------------------------
def _anchor_positive_indices(n: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Anchor i repeated K-1 times with its block mates in increasing order (j != i)."""
    rows = tf.range(n, dtype=tf.int32)[:, None]
    offsets = tf.range(k - 1, dtype=tf.int32)[None, :]
    block_start = (rows // k) * k
    positives = block_start + offsets + tf.cast(offsets >= rows % k, tf.int32)
    anchors = tf.broadcast_to(rows, tf.shape(positives))
    return tf.reshape(anchors, [-1]), tf.reshape(positives, [-1])


# --------------------------------------------------------------------------------------------
# negative logits per mode
# --------------------------------------------------------------------------------------------
def _neg_inf_like(x: tf.Tensor) -> tf.Tensor:
    return tf.fill(tf.shape(x), tf.constant(-np.inf, x.dtype))


def _different_labels(labels: tf.Tensor) -> tf.Tensor:
    """Eligible negatives: rows sharing no label with the anchor (not relevant to it)."""
    return tf.logical_not(tf_relevant(labels))


def _sphere_log_weights(dist: tf.Tensor, exponent: tf.Tensor, dim: tf.Tensor) -> tf.Tensor:
    """(2 - d) log D - exponent * log(1 - D^2 / 4), the argument floored for D -> 2."""
    inner = tf.maximum(1.0 - 0.25 * tf.square(dist), tf.constant(_LOG_ARG_FLOOR, dist.dtype))
    return (2.0 - dim) * tf.math.log(dist) - exponent * tf.math.log(inner)


def _embedding_dim(e: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.shape(e)[1], e.dtype)


def _uniform_negative_logits(labels: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    different = _different_labels(labels)
    zeros = tf.zeros(tf.shape(different), dtype)
    return tf.where(different, zeros, _neg_inf_like(zeros))


def _hpsh_logits(
    e: tf.Tensor, labels: tf.Tensor, cutoff: float, nonzero_loss_cutoff: float
) -> tf.Tensor:
    """Log-probabilities of the fixed HPSH sampler (row max subtracted, masked = -inf)."""
    dim = _embedding_dim(e)
    dist = tf.maximum(pairwise_distances(e), tf.constant(cutoff, e.dtype))
    log_w = _sphere_log_weights(dist, (dim - 3.0) / 2.0, dim)
    eligible = tf.logical_and(
        _different_labels(labels), dist < tf.constant(nonzero_loss_cutoff, e.dtype)
    )
    masked = tf.where(eligible, log_w, _neg_inf_like(log_w))
    has_eligible = tf.reduce_any(eligible, axis=1, keepdims=True)
    row_max = tf.reduce_max(masked, axis=1, keepdims=True)
    row_max = tf.where(has_eligible, row_max, tf.zeros_like(row_max))
    shifted = tf.where(eligible, log_w - row_max, _neg_inf_like(log_w))
    fallback = _uniform_negative_logits(labels, e.dtype)
    return tf.where(has_eligible, shifted, fallback)


def _original_weights(
    e: tf.Tensor, k: int, cutoff: float, nonzero_loss_cutoff: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """Row-normalised weights of the original sampler and a [n, 1] empty-row flag."""
    dim = _embedding_dim(e)
    exponent = tf.math.floordiv(dim - 3.0, 2.0)  # Python 2 integer division (K - 3) / 2
    dist = tf.maximum(original_pseudo_distances(e), tf.constant(cutoff, e.dtype))
    log_w = _sphere_log_weights(dist, exponent, dim)
    w = tf.exp(log_w - tf.reduce_max(log_w))  # global maximum, as in the original
    n = tf.shape(e)[0]
    block = tf.range(n) // k
    keep = tf.logical_and(
        tf.not_equal(block[:, None], block[None, :]),
        dist < tf.constant(nonzero_loss_cutoff, e.dtype),
    )
    w = w * tf.cast(keep, e.dtype)
    row_sum = tf.reduce_sum(w, axis=1, keepdims=True)
    empty = row_sum <= 0.0
    w = w / tf.where(empty, tf.ones_like(row_sum), row_sum)
    return w, empty


def _original_logits(
    e: tf.Tensor, k: int, cutoff: float, nonzero_loss_cutoff: float, empty_rows: str
) -> tf.Tensor:
    """The original's row-normalised weights used as logits; empty rows draw index 0."""
    w, empty = _original_weights(e, k, cutoff, nonzero_loss_cutoff)
    if empty_rows == "error":
        check = tf.debugging.assert_equal(
            tf.reduce_any(empty),
            False,
            message=(
                "original sampler: a row has no eligible negative (its weights sum to 0), where "
                "the original fails on CPU; empty_rows=index0 draws row 0 instead, as the "
                "original does on GPU"
            ),
        )
        with tf.control_dependencies([check]):
            w = tf.identity(w)
    index0 = tf.concat(
        [tf.zeros_like(w[:, :1]), _neg_inf_like(w[:, 1:])], axis=1
    )  # GPU kernel on a NaN row: every draw is column 0
    return tf.where(empty, index0, w)


# --------------------------------------------------------------------------------------------
# deterministic negatives
# --------------------------------------------------------------------------------------------
def _hard_negatives(dist: tf.Tensor, different: tf.Tensor, k: int) -> tf.Tensor:
    inf = tf.fill(tf.shape(dist), tf.constant(np.inf, dist.dtype))
    closest = tf.argmin(tf.where(different, dist, inf), axis=1, output_type=tf.int32)
    return tf.reshape(tf.tile(closest[:, None], [1, k - 1]), [-1])


def _semihard_negatives(
    dist: tf.Tensor, different: tf.Tensor, anchors: tf.Tensor, positives: tf.Tensor
) -> tf.Tensor:
    rows = tf.gather(dist, anchors)  # [T, n]
    negative = tf.gather(different, anchors)
    d_ap = tf.gather_nd(dist, tf.stack([anchors, positives], axis=1))[:, None]
    farther = tf.logical_and(negative, rows > d_ap)
    inf = tf.fill(tf.shape(rows), tf.constant(np.inf, dist.dtype))
    outside = tf.argmin(tf.where(farther, rows, inf), axis=1, output_type=tf.int32)
    inside = tf.argmax(tf.where(negative, rows, -inf), axis=1, output_type=tf.int32)
    return tf.where(tf.reduce_any(farther, axis=1), outside, inside)


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def _draw(logits: tf.Tensor, num: int, seed: tf.Tensor | None) -> tf.Tensor:
    if seed is None:
        draws = tf.random.categorical(logits, num, dtype=tf.int32)
    else:
        draws = tf.random.stateless_categorical(logits, num, seed=seed, dtype=tf.int32)
    return tf.reshape(draws, [-1])


@dataclass(frozen=True)
class TripletBatch:
    """What a negative rule sees of one P x K batch (built by :func:`sample_triplets`).

    Attributes:
        embeddings: Float ``[n, d]`` embeddings, detached from the gradient tape.
        labels: Integer labels ``[n]``, constant within blocks of ``samples_per_class`` rows,
            or multi-hot ``[n, C]`` whose blocks share a label (relevance:
            :func:`hpsh_tf2.evaluation.relevance`'s "at least one shared label").
        anchors: int32 ``[T]`` anchor rows, ``T = n * (K - 1)``.
        positives: int32 ``[T]`` positive rows.
        samples_per_class: ``K``.
        cutoff: Lower clip of the distance before weighting.
        nonzero_loss_cutoff: Distances at or beyond are never drawn.
        empty_rows: ``"index0"`` or ``"error"`` (the original sampler's empty rows).
        seed: ``None`` (stateful draws) or an int32 ``[2]`` seed (stateless draws).
    """

    embeddings: tf.Tensor
    labels: tf.Tensor
    anchors: tf.Tensor
    positives: tf.Tensor
    samples_per_class: int
    cutoff: float
    nonzero_loss_cutoff: float
    empty_rows: str
    seed: tf.Tensor | None

    def draw(self, logits: tf.Tensor) -> tf.Tensor:
        """``K - 1`` categorical draws per row of ``[n, n]`` logits, flattened to ``[T]``.

        With multi-hot labels a row may have no eligible negative at all (its anchor shares a
        label with every row): it draws uniformly, and :func:`sample_triplets` then replaces
        its negatives with the anchor itself (a zero-loss triplet).
        """
        if self.labels.shape.rank == 2:
            logits = tf.where(_has_negative(self.labels), logits, tf.zeros_like(logits))
        return _draw(logits, self.samples_per_class - 1, self.seed)


@dataclass(frozen=True)
class NegativeRule:
    """How one ``sampler.mode`` picks the negative of each triplet (a ``SAMPLERS`` entry).

    Attributes:
        select: ``TripletBatch -> int32 [T]`` negative rows, triplet ``t`` pairs
            ``anchors[t]`` with the returned row ``t``.
        needs_two_classes: The batch must hold at least two labels (every mode that draws
            different-label negatives; the original sampler masks by block instead).
        default_nonzero_loss_cutoff: The distance bound when ``sampler.nonzero_loss_cutoff`` is
            null; ``None`` means ``loss.alpha + loss.beta``.
        multi_label: The rule accepts multi-hot ``[n, C]`` labels (negatives = rows sharing no
            label with the anchor); the original sampler, which masks by block, does not.
    """

    select: Callable[[TripletBatch], tf.Tensor]
    needs_two_classes: bool = True
    default_nonzero_loss_cutoff: float | None = None
    multi_label: bool = True

    def __call__(self, batch: TripletBatch) -> tf.Tensor:
        return self.select(batch)


def _hpsh_select(batch: TripletBatch) -> tf.Tensor:
    return batch.draw(
        _hpsh_logits(batch.embeddings, batch.labels, batch.cutoff, batch.nonzero_loss_cutoff)
    )


def _original_select(batch: TripletBatch) -> tf.Tensor:
    logits = _original_logits(
        batch.embeddings,
        batch.samples_per_class,
        batch.cutoff,
        batch.nonzero_loss_cutoff,
        batch.empty_rows,
    )
    return batch.draw(logits)


def _random_select(batch: TripletBatch) -> tf.Tensor:
    return batch.draw(_uniform_negative_logits(batch.labels, batch.embeddings.dtype))


def _semihard_select(batch: TripletBatch) -> tf.Tensor:
    dist = pairwise_distances(batch.embeddings)
    different = _different_labels(batch.labels)
    return _semihard_negatives(dist, different, batch.anchors, batch.positives)


def _hard_select(batch: TripletBatch) -> tf.Tensor:
    dist = pairwise_distances(batch.embeddings)
    different = _different_labels(batch.labels)
    return _hard_negatives(dist, different, batch.samples_per_class)


HPSH = NegativeRule(_hpsh_select)
"""Distance-weighted draws on true distances (the fixed HPSH sampler)."""
ORIGINAL = NegativeRule(
    _original_select,
    needs_two_classes=False,
    default_nonzero_loss_cutoff=ORIGINAL_NONZERO_LOSS_CUTOFF,
    multi_label=False,
)
"""The original code's sampler, as implemented (spec 4.2-4.5)."""
RANDOM = NegativeRule(_random_select)
"""Uniform draws over different-label rows (MHCLN-style)."""
SEMIHARD = NegativeRule(_semihard_select)
"""FaceNet semi-hard negatives (deterministic)."""
HARD = NegativeRule(_hard_select)
"""The closest different-label row (deterministic)."""


def negative_rule(mode: str) -> NegativeRule:
    """The registered rule of ``sampler.mode`` (a deprecated alias is mapped with a warning).

    A plain function registered in ``SAMPLERS`` is wrapped as ``NegativeRule(function)``.

    Raises:
        ValueError: ``mode`` is not registered; the message lists the registered modes.
    """
    mode = check_choice("mode", mode, SAMPLERS.names(), aliases=ORIGINAL_ALIASES)
    rule = SAMPLERS.get(mode)
    return rule if isinstance(rule, NegativeRule) else NegativeRule(rule)


def sample_triplets(
    embeddings: tf.Tensor,
    labels: tf.Tensor,
    *,
    samples_per_class: int,
    mode: str = "hpsh",
    cutoff: float = 0.5,
    nonzero_loss_cutoff: float = 0.9,
    seed: tf.Tensor | None = None,
    empty_rows: str = "index0",
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Builds the ``T = n * (K - 1)`` triplets of a P x K batch.

    Anchor/positive order (docs/method.md section 2.2): for each row ``i`` in order, its
    ``K - 1`` block mates in increasing order. Negatives per ``mode``:

    * ``"hpsh"`` (default, the fixed method): distance-weighted sampling (Wu et al. 2017) on the
      true Euclidean distances ``D`` of the given (already normalised) embeddings, clipped
      below at ``cutoff``: ``log w_ij = (2 - d) log D - ((d - 3) / 2) log(1 - D^2 / 4)`` with
      real exponent and ``d`` the embedding dimension (the log argument is floored at 1e-12).
      Eligible: different label and ``D < nonzero_loss_cutoff``. The row maximum over eligible
      entries is subtracted before sampling (numerically safe: no overflow however peaked the
      weights). ``K - 1`` i.i.d. draws per anchor from ``w_i / sum(w_i)``. A row with no
      eligible entry draws uniformly from its different-label rows.
    * ``"original"`` (deprecated alias ``"seed"``): the original code as implemented (spec
      4.2-4.5): squared-coordinate pseudo-distance, clip at ``cutoff``, integer exponent
      ``(K - 3) // 2``, global maximum subtraction, block mask and ``D < nonzero_loss_cutoff``
      mask (pass 1.4, the original's value), row normalisation, then the normalised
      probabilities used as *logits* (``p = softmax(w)``: nearly uniform, same-class rows and
      the anchor included). A row whose weights are all 0 is NaN in the original;
      ``empty_rows="index0"`` reproduces the GPU kernel (every draw is row 0), ``"error"`` the
      CPU kernel (``InvalidArgumentError``).
    * ``"random"``: uniform over different-label rows (MHCLN-style).
    * ``"semihard"``: FaceNet semi-hard, deterministic: for triplet ``(a, p)`` the
      different-label row ``j`` with the smallest ``D_aj`` strictly greater than ``D_ap``; if
      there is none, the different-label row with the largest ``D_aj`` (the one closest to
      ``D_ap`` from below).
    * ``"hard"``: deterministic, the different-label row closest to the anchor (the same for
      all ``K - 1`` triplets of an anchor).

    ``cutoff`` and ``nonzero_loss_cutoff`` are used by ``"hpsh"`` and ``"original"`` only.

    Multi-label batches (multi-hot ``[n, C]`` labels, every block of ``K`` rows carrying a
    common label, e.g. from a label-balanced batch sampler): a positive is a block mate (it
    shares at least that label) and a negative must share no label with the anchor
    (:func:`hpsh_tf2.evaluation.relevance.tf_relevant` replaces label inequality in every
    mode's mask, and the weighting over the eligible negatives is unchanged). An anchor that
    shares a label with every row of the batch has no negative; its triplets take the anchor
    itself as the negative, whose margin term ``[beta - d_aa + alpha]_+`` is a constant with
    zero gradient. ``"original"`` masks by block only and refuses multi-hot labels.

    Args:
        embeddings: ``[n, d]`` embeddings (HPSH: the L2-normalised sigmoid outputs). Read
            through ``stop_gradient``; float16/bfloat16 are computed in float32.
        labels: Integer labels ``[n]`` or ``[n, 1]``, constant within consecutive blocks of
            ``samples_per_class`` rows; or multi-hot ``[n, C]`` whose blocks share a label.
        samples_per_class: ``K >= 2``; ``n`` must be a multiple of it.
        mode: A name registered in :data:`hpsh_tf2.registry.SAMPLERS` (``sampler.mode``).
        cutoff: Lower clip of the distance before weighting (> 0).
        nonzero_loss_cutoff: Rows at distance ``>= nonzero_loss_cutoff`` get weight 0 (> 0).
        seed: ``None`` for the stateful ``tf.random`` generator, or an integer tensor of shape
            ``[2]`` for stateless draws (same seed and inputs give the same triplets). The
            seed is cast to int32 (what XLA's stateless kernels accept).
        empty_rows: ``"index0"`` or ``"error"``; original mode only (see above).

    Returns:
        ``(anchor_idx, positive_idx, negative_idx)``, each int32 of shape ``[n * (K - 1)]``.

    Raises:
        ValueError: On invalid arguments; eagerly also when ``n`` is not a multiple of ``K``,
            labels change inside a block, or (all modes but ``"original"``) the batch holds a
            single class. Under ``tf.function`` the data checks are assertions
            (``InvalidArgumentError``; XLA drops them).
        TypeError: On arguments of the wrong type.
    """
    k = check_samples_per_class(samples_per_class)
    rule = negative_rule(mode)
    check_choice("empty_rows", empty_rows, EMPTY_ROW_POLICIES)
    cutoff = check_positive("cutoff", cutoff)
    nonzero_loss_cutoff = check_positive("nonzero_loss_cutoff", nonzero_loss_cutoff)
    seed = _prepare_seed(seed)
    e, y, checks = _prepare_batch(embeddings, labels, k, need_negatives=rule.needs_two_classes)
    if y.shape.rank == 2 and not rule.multi_label:
        raise ValueError(
            f"Received: mode={mode!r} with multi-hot labels; that sampler masks by class block "
            "only and expects single-label [n] labels (use mode='hpsh')."
        )
    with tf.control_dependencies(checks):
        anchors, positives = _anchor_positive_indices(tf.shape(e)[0], k)
        batch = TripletBatch(
            embeddings=e,
            labels=y,
            anchors=anchors,
            positives=positives,
            samples_per_class=k,
            cutoff=cutoff,
            nonzero_loss_cutoff=nonzero_loss_cutoff,
            empty_rows=empty_rows,
            seed=seed,
        )
        negatives = rule(batch)
        if y.shape.rank == 2:  # an anchor sharing a label with every row keeps itself
            negatives = tf.where(tf.gather(_has_negative(y)[:, 0], anchors), negatives, anchors)
    return anchors, positives, negatives


def _has_negative(labels: tf.Tensor) -> tf.Tensor:
    """``[n, 1]``: whether a row has any row sharing no label with it in the batch."""
    return tf.reduce_any(_different_labels(labels), axis=1, keepdims=True)


def hpsh_negative_probabilities(
    embeddings: tf.Tensor,
    labels: tf.Tensor,
    *,
    samples_per_class: int,
    cutoff: float = 0.5,
    nonzero_loss_cutoff: float = 0.9,
) -> tf.Tensor:
    """The ``[n, n]`` matrix that ``mode="hpsh"`` samples negatives from (rows sum to 1).

    Args:
        embeddings: ``[n, d]`` embeddings.
        labels: Integer labels ``[n]`` or ``[n, 1]``.
        samples_per_class: ``K >= 2``.
        cutoff: Lower clip of the distance.
        nonzero_loss_cutoff: Upper distance bound for eligible negatives.

    Returns:
        Float ``[n, n]`` probabilities ``P[i, j]`` of drawing row ``j`` for anchor ``i``
        (multi-hot labels: an anchor without any negative row draws itself, ``P[i, i] = 1``).
    """
    k = check_samples_per_class(samples_per_class)
    cutoff = check_positive("cutoff", cutoff)
    nonzero_loss_cutoff = check_positive("nonzero_loss_cutoff", nonzero_loss_cutoff)
    e, y, checks = _prepare_batch(embeddings, labels, k, need_negatives=True)
    with tf.control_dependencies(checks):
        probs = tf.nn.softmax(_hpsh_logits(e, y, cutoff, nonzero_loss_cutoff), axis=1)
        if y.shape.rank == 2:  # no negative: the sampler takes the anchor itself
            own = tf.eye(tf.shape(e)[0], dtype=probs.dtype)
            probs = tf.where(_has_negative(y), probs, own)
        return probs


def original_negative_probabilities(
    embeddings: tf.Tensor,
    labels: tf.Tensor,
    *,
    samples_per_class: int,
    cutoff: float = 0.5,
    nonzero_loss_cutoff: float = 1.4,
    empty_rows: str = "index0",
) -> tf.Tensor:
    """The ``[n, n]`` matrix that ``mode="original"`` actually samples from: ``softmax(w)``.

    Args:
        embeddings: ``[n, K]`` L2-normalised embeddings.
        labels: Integer labels ``[n]`` or ``[n, 1]`` (only validated; the mask uses blocks).
        samples_per_class: ``k >= 2``.
        cutoff: Lower clip of the pseudo-distance (original: 0.5).
        nonzero_loss_cutoff: Pseudo-distance bound (original: 1.4).
        empty_rows: ``"index0"`` (empty rows are one-hot on column 0) or ``"error"``.

    Returns:
        Float ``[n, n]`` probabilities; row ``i`` is ``softmax`` of the original's normalised
        weights ``w_i``.
    """
    k = check_samples_per_class(samples_per_class)
    check_choice("empty_rows", empty_rows, EMPTY_ROW_POLICIES)
    cutoff = check_positive("cutoff", cutoff)
    nonzero_loss_cutoff = check_positive("nonzero_loss_cutoff", nonzero_loss_cutoff)
    e, _, checks = _prepare_batch(embeddings, labels, k, need_negatives=False)
    with tf.control_dependencies(checks):
        logits = _original_logits(e, k, cutoff, nonzero_loss_cutoff, empty_rows)
        return tf.nn.softmax(logits, axis=1)
