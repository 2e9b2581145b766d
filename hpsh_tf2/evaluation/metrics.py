"""Retrieval metrics over ranked neighbour labels (pure NumPy, vectorised, keyword-only).

Notation shared by the docstrings: a query ``q`` with label ``y(q)`` retrieves ranked items
``r_1, r_2, ...``; ``rel_j = [y(r_j) == y(q)]``; the precision at rank ``j`` is
``P_j = (1/j) * sum_{m<=j} rel_m``; ``R_q`` (``num_relevant``) is the number of database items
sharing the query's label (the query itself not counted under the "database minus query"
protocol). Every function returns the mean over queries as a Python ``float`` in ``[0, 1]``
(curves: NumPy arrays). A query that has nothing relevant scores 0 in every metric.

The rank-based metrics here score the ranking they are given, so with tied Hamming distances
they depend on how ties were broken (by database index in this package: "index order"). The
tie-aware expected values over every order of the tied items are in
:mod:`hpsh_tf2.evaluation.ties`; the radius metrics do not depend on tie order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpsh_tf2.evaluation import relevance

__all__ = [
    "EMPTY_POLICIES",
    "NORMALIZERS",
    "acg_at_k",
    "average_precision_at_k",
    "check_binary_codes",
    "distance_histograms",
    "graded_histograms",
    "ideal_dcg_at_k",
    "map_at_k",
    "map_at_r",
    "ndcg_at_k",
    "precision_at_k",
    "precision_recall_by_radius",
    "precision_recall_from_histograms",
    "precision_within_radius",
    "recall_at_k",
    "seed_map_at_k",
    "wap_at_k",
    "weighted_average_precision_at_k",
]

NORMALIZERS = ("retrieved", "min_k_r")
EMPTY_POLICIES = ("zero", "exclude")


def check_binary_codes(codes: Any, name: str) -> np.ndarray:
    """Validates 0/1 codes ``[N, bits]`` (bits a positive multiple of 8) and returns ``uint8``.

    Raises:
        ValueError: On another shape or values other than 0 and 1.
    """
    array = np.asarray(codes)
    if array.ndim != 2 or array.shape[1] == 0 or array.shape[1] % 8:
        raise ValueError(
            f"Received: {name} with shape {array.shape}; expected [N, bits] with bits a "
            "positive multiple of 8"
        )
    if array.size and (array.min() < 0 or array.max() > 1):
        raise ValueError(
            f"Received: {name} with values in [{array.min()}, {array.max()}]; expected 0/1"
        )
    return array.astype(np.uint8)


def _labels_1d(labels: Any, name: str) -> np.ndarray:
    """Returns ``labels`` as ``[Q]`` class indices or ``[Q, C]`` multi-hot, or raises."""
    return relevance.check_labels(labels, name)


def _ranked(retrieved_labels: Any, num_queries: int | None, min_columns: int) -> np.ndarray:
    """Returns ``retrieved_labels`` as a ``[Q, k']`` array with at least ``min_columns``."""
    array = np.asarray(retrieved_labels)
    if array.ndim not in (2, 3):
        raise ValueError(
            f"Received: retrieved_labels with shape {array.shape}; expected rank 2 [Q, k'] "
            "(or [Q, k', C] multi-hot)"
        )
    if num_queries is not None and array.shape[0] != num_queries:
        raise ValueError(
            f"Received: retrieved_labels with shape {array.shape} for {num_queries} queries; "
            "expected one row per query"
        )
    if array.shape[1] < min_columns:
        raise ValueError(
            f"Received: retrieved_labels with shape {array.shape}; expected at least "
            f"{min_columns} ranked results per query"
        )
    return array


def _positive_int(value: Any, name: str) -> int:
    """Returns ``value`` as a positive int or raises."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Received: {name}={value!r}; expected a positive int")
    return int(value)


def _counts(num_relevant: Any, num_queries: int) -> np.ndarray:
    """Returns ``num_relevant`` as an int64 ``[Q]`` array of non-negative counts or raises."""
    if num_relevant is None:
        raise ValueError("Received: num_relevant=None; expected an int array [Q]")
    array = np.asarray(num_relevant)
    if array.shape != (num_queries,) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"Received: num_relevant with shape {array.shape} and dtype {array.dtype}; "
            f"expected an int array of shape ({num_queries},)"
        )
    if array.size and array.min() < 0:
        raise ValueError(f"Received: num_relevant with minimum {array.min()}; expected >= 0")
    return array.astype(np.int64)


def _relevance(query_labels: Any, retrieved_labels: Any, columns: int) -> np.ndarray:
    """``rel[q, j] = relevant(q, r_{j+1})`` for the first ``columns`` ranks, as float64."""
    return (_shared(query_labels, retrieved_labels, columns) >= 1).astype(np.float64)


def _shared(query_labels: Any, retrieved_labels: Any, columns: int) -> np.ndarray:
    """``shared(q, r_{j+1})`` (:mod:`~hpsh_tf2.evaluation.relevance`) for the first ranks."""
    queries = _labels_1d(query_labels, "query_labels")
    ranked = _ranked(retrieved_labels, queries.shape[0], columns)
    return relevance.ranked_shared(queries, ranked[:, :columns]).astype(np.float64)


def _precision_terms(rel: np.ndarray) -> np.ndarray:
    """``rel_j * P_j`` for every rank ``j`` of a ``[Q, k]`` relevance matrix."""
    ranks = np.arange(1, rel.shape[1] + 1, dtype=np.float64)
    return rel * np.cumsum(rel, axis=1) / ranks


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` with 0 where the denominator is 0."""
    denominator = np.asarray(denominator, np.float64)
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, 0.0)


def _check_k_and_normalizer(k: int, normalizer: str) -> int:
    """``k`` as a positive int; ``normalizer`` one of :data:`NORMALIZERS`.

    Raises:
        ValueError: Either is out of range.
    """
    k = _positive_int(k, "k")
    if normalizer not in NORMALIZERS:
        raise ValueError(f"Received: normalizer={normalizer!r}; expected one of {NORMALIZERS}")
    return k


def average_precision_at_k(
    *,
    query_labels: Any,
    retrieved_labels: Any,
    k: int,
    normalizer: str = "retrieved",
    num_relevant: Any = None,
) -> np.ndarray:
    """Per-query AP@k (see :func:`map_at_k`), as a float64 ``[Q]`` array."""
    k = _check_k_and_normalizer(k, normalizer)
    rel = _relevance(query_labels, retrieved_labels, k)
    total = _precision_terms(rel).sum(axis=1)
    if normalizer == "retrieved":
        return _safe_divide(total, rel.sum(axis=1))
    counts = _counts(num_relevant, rel.shape[0])
    return _safe_divide(total, np.minimum(counts, k))


def map_at_k(
    *,
    query_labels: Any,
    retrieved_labels: Any,
    k: int,
    normalizer: str = "retrieved",
    num_relevant: Any = None,
) -> float:
    """Mean average precision over the top ``k`` results.

    ``AP@k(q) = (1/Z_q) * sum_{j=1..k} rel_j * P_j`` and ``mAP@k = mean_q AP@k(q)``, where

    * ``normalizer="retrieved"``: ``Z_q = sum_{j<=k} rel_j`` (relevant items retrieved; the
      MHCLN/HPSH convention), AP = 0 when nothing relevant is retrieved;
    * ``normalizer="min_k_r"``: ``Z_q = min(k, R_q)`` (needs ``num_relevant``), AP = 0 when
      ``R_q = 0``. Never larger than the "retrieved" value.

    Args:
        query_labels: ``[Q]`` labels of the queries.
        retrieved_labels: ``[Q, k']`` labels of the ranked results, ``k' >= k``.
        k: Cut-off rank.
        normalizer: ``"retrieved"`` or ``"min_k_r"``.
        num_relevant: ``[Q]`` ints ``R_q``; required for ``"min_k_r"``.

    Returns:
        mAP@k in ``[0, 1]``.
    """
    values = average_precision_at_k(
        query_labels=query_labels,
        retrieved_labels=retrieved_labels,
        k=k,
        normalizer=normalizer,
        num_relevant=num_relevant,
    )
    return float(values.mean()) if values.size else 0.0


def map_at_r(*, query_labels: Any, retrieved_labels: Any, num_relevant: Any) -> float:
    """MAP@R (Musgrave et al., "A Metric Learning Reality Check", 2020).

    ``AP@R(q) = (1/R_q) * sum_{j=1..R_q} rel_j * P_j`` (the cut-off is the query's own number
    of relevant items, so a perfect ranking scores 1), averaged over queries; 0 when
    ``R_q = 0``.

    Args:
        query_labels: ``[Q]`` labels of the queries.
        retrieved_labels: ``[Q, k']`` labels of the ranked results with ``k' >= max_q R_q``.
        num_relevant: ``[Q]`` ints ``R_q``.

    Returns:
        MAP@R in ``[0, 1]``.
    """
    queries = _labels_1d(query_labels, "query_labels")
    counts = _counts(num_relevant, queries.shape[0])
    columns = int(counts.max(initial=0))
    if columns == 0:
        return 0.0
    rel = _relevance(queries, retrieved_labels, columns)
    within = np.arange(columns)[None, :] < counts[:, None]
    values = _safe_divide((_precision_terms(rel) * within).sum(axis=1), counts)
    return float(values.mean())


def precision_at_k(*, query_labels: Any, retrieved_labels: Any, k: int) -> float:
    """Precision@k: ``mean_q (1/k) * sum_{j=1..k} rel_j``.

    Args:
        query_labels: ``[Q]`` labels of the queries.
        retrieved_labels: ``[Q, k']`` labels of the ranked results, ``k' >= k``.
        k: Cut-off rank.

    Returns:
        Precision@k in ``[0, 1]``.
    """
    k = _positive_int(k, "k")
    rel = _relevance(query_labels, retrieved_labels, k)
    return float(rel.mean()) if rel.size else 0.0


def recall_at_k(*, query_labels: Any, retrieved_labels: Any, k: int, num_relevant: Any) -> float:
    """Recall@k: ``mean_q (sum_{j=1..k} rel_j) / R_q`` (0 when ``R_q = 0``).

    Args:
        query_labels: ``[Q]`` labels of the queries.
        retrieved_labels: ``[Q, k']`` labels of the ranked results, ``k' >= k``.
        k: Cut-off rank.
        num_relevant: ``[Q]`` ints ``R_q``.

    Returns:
        Recall@k in ``[0, 1]``.
    """
    k = _positive_int(k, "k")
    rel = _relevance(query_labels, retrieved_labels, k)
    counts = _counts(num_relevant, rel.shape[0])
    values = _safe_divide(rel.sum(axis=1), counts)
    return float(values.mean()) if values.size else 0.0


def distance_histograms(
    *,
    query_labels: Any,
    db_labels: Any,
    distances: Any,
    max_distance: int,
    exclude_self: bool = False,
    query_offset: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-query counts of database items (and of relevant ones) at each Hamming distance.

    Args:
        query_labels: ``[Q]`` labels of the queries.
        db_labels: ``[N]`` labels of the database.
        distances: ``[Q, N]`` integer Hamming distances in ``[0, max_distance]``.
        max_distance: Largest possible distance (the code length in bits).
        exclude_self: Query ``query_offset + i`` is database item ``query_offset + i`` and is
            not counted.
        query_offset: Database index of the first query (to process queries in blocks).

    Returns:
        ``(hits, items)``: int64 ``[Q, max_distance + 1]``; ``hits[q, d]`` counts relevant
        items at distance exactly ``d`` and ``items[q, d]`` all items at distance ``d``.
    """
    queries = _labels_1d(query_labels, "query_labels")
    database = _labels_1d(db_labels, "db_labels")
    dist = np.asarray(distances)
    if dist.shape != (queries.shape[0], database.shape[0]):
        raise ValueError(
            f"Received: distances with shape {dist.shape}; expected "
            f"({queries.shape[0]}, {database.shape[0]}) = (len(query_labels), len(db_labels))"
        )
    width = _positive_int(max_distance, "max_distance") + 1
    if dist.size and (dist.min() < 0 or dist.max() >= width):
        raise ValueError(
            f"Received: distances in [{dist.min()}, {dist.max()}] with max_distance="
            f"{width - 1}; expected values in [0, max_distance]"
        )
    size = queries.shape[0] * width
    # One bincount: bins [0, size) hold non-relevant items, [size, 2 size) relevant ones and
    # bin 2 size collects the excluded query-self pairs.
    cells = np.arange(queries.shape[0], dtype=np.intp)[:, None] * width + dist.astype(np.intp)
    cells += relevance.relevant(queries, database) * size
    if exclude_self:
        rows = np.arange(queries.shape[0])
        inside = query_offset + rows < database.shape[0]
        cells[rows[inside], query_offset + rows[inside]] = 2 * size
    counts = np.bincount(cells.ravel(), minlength=2 * size + 1).astype(np.int64)
    shape = (queries.shape[0], width)
    hits = counts[size : 2 * size].reshape(shape)
    return hits, counts[:size].reshape(shape) + hits


def precision_recall_from_histograms(
    *,
    hits: Any,
    items: Any,
    num_relevant: Any = None,
    empty: str = "zero",
) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of "everything within Hamming radius r", for r = 0..B.

    With ``n_q(r) = sum_{d<=r} items[q, d]`` and ``tp_q(r) = sum_{d<=r} hits[q, d]``:
    ``precision(r) = mean_q tp_q(r) / n_q(r)`` and ``recall(r) = mean_q tp_q(r) / R_q``
    (macro-averaged over queries; recall 0 when ``R_q = 0``).

    Args:
        hits: ``[Q, B + 1]`` relevant counts per distance (:func:`distance_histograms`).
        items: ``[Q, B + 1]`` item counts per distance.
        num_relevant: ``[Q]`` ints ``R_q``; default ``hits.sum(axis=1)``.
        empty: A query with nothing within radius ``r`` contributes precision 0
            (``"zero"``, the hashing-literature convention) or is left out of that radius's
            mean (``"exclude"``; the precision is 0 when every query is left out).

    Returns:
        ``(precision, recall)``: float64 arrays of length ``B + 1``, indexed by radius.
    """
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"Received: empty={empty!r}; expected one of {EMPTY_POLICIES}")
    hits = np.asarray(hits, np.int64)
    items = np.asarray(items, np.int64)
    if hits.ndim != 2 or hits.shape != items.shape:
        raise ValueError(
            f"Received: hits with shape {hits.shape} and items with shape {items.shape}; "
            "expected equal [Q, B + 1] shapes"
        )
    counts = hits.sum(axis=1) if num_relevant is None else _counts(num_relevant, hits.shape[0])
    if hits.shape[0] == 0:
        return np.zeros(hits.shape[1]), np.zeros(hits.shape[1])
    true_pos = np.cumsum(hits, axis=1)
    returned = np.cumsum(items, axis=1)
    per_query = _safe_divide(true_pos, returned)
    recall = _safe_divide(true_pos, counts[:, None]).mean(axis=0)
    if empty == "zero":
        return per_query.mean(axis=0), recall
    return _safe_divide(per_query.sum(axis=0), (returned > 0).sum(axis=0)), recall


def precision_recall_by_radius(
    *,
    query_labels: Any,
    db_labels: Any,
    distances: Any,
    max_radius: int,
    exclude_self: bool = False,
    empty: str = "zero",
) -> tuple[np.ndarray, np.ndarray]:
    """Precision/recall curves over Hamming radius ``r = 0..max_radius`` from a distance matrix.

    See :func:`precision_recall_from_histograms` for the formulas (macro average over
    queries; ``empty`` decides how a query with nothing within ``r`` counts).

    Args:
        query_labels: ``[Q]`` labels of the queries.
        db_labels: ``[N]`` labels of the database.
        distances: ``[Q, N]`` Hamming distances (``hamming_distances`` output).
        max_radius: Largest radius, normally the code length ``bits``.
        exclude_self: Query ``i`` is database item ``i`` and is not counted.
        empty: ``"zero"`` (default) or ``"exclude"``.

    Returns:
        ``(precision, recall)`` arrays of length ``max_radius + 1``.
    """
    hits, items = distance_histograms(
        query_labels=query_labels,
        db_labels=db_labels,
        distances=distances,
        max_distance=max_radius,
        exclude_self=exclude_self,
    )
    return precision_recall_from_histograms(hits=hits, items=items, empty=empty)


def precision_within_radius(
    *,
    query_labels: Any,
    db_labels: Any,
    distances: Any,
    radius: int = 2,
    exclude_self: bool = False,
    empty: str = "zero",
) -> float:
    """Precision of the items within Hamming radius ``radius`` (the usual "radius 2" metric).

    ``mean_q tp_q(radius) / n_q(radius)``; a query with nothing within the radius counts as 0
    (``empty="zero"``) or is left out (``empty="exclude"``).

    Args:
        query_labels: ``[Q]`` labels of the queries.
        db_labels: ``[N]`` labels of the database.
        distances: ``[Q, N]`` Hamming distances.
        radius: Hamming radius (>= 0).
        exclude_self: Query ``i`` is database item ``i`` and is not counted.
        empty: ``"zero"`` (default) or ``"exclude"``.

    Returns:
        Precision in ``[0, 1]``.
    """
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise ValueError(f"Received: radius={radius!r}; expected an int >= 0")
    dist = np.asarray(distances)
    clipped = np.minimum(dist, radius + 1)
    precision, _ = precision_recall_by_radius(
        query_labels=query_labels,
        db_labels=db_labels,
        distances=clipped,
        max_radius=int(radius) + 1,
        exclude_self=exclude_self,
        empty=empty,
    )
    return float(precision[radius])


def seed_map_at_k(*, retrieved_labels: Any, k: int = 20) -> float:
    """The ORIGINAL HPSH "mAP@20" (``eval2.py``). NOT comparable with standard mAP.

    The reference label is the label of the FIRST RETRIEVED item, not of the query:
    ``l* = y(r_1)``, ``rel_j = [y(r_{j+1}) == l*]`` for ``j = 1..k`` (ranks 2..k+1 are scored,
    ``r_1`` never is), ``AP = sum_j rel_j * P_j / sum_j rel_j`` (0 with no hit), averaged over
    queries. It measures how consistent a result list is with its own top-1 result, so it can
    be higher or lower than the query-label mAP (docs/method.md section 9.4). Reported only to
    compare with numbers printed by the seed code.

    Args:
        retrieved_labels: ``[Q, k']`` labels of the ranked results with ``k' >= k + 1``.
        k: Number of scored ranks (the seed uses 20, with 21 retrieved).

    Returns:
        The seed metric in ``[0, 1]`` (the seed prints 100 times this).
    """
    k = _positive_int(k, "k")
    ranked = _ranked(retrieved_labels, None, k + 1)
    rel = (relevance.ranked_shared(ranked[:, 0], ranked[:, 1 : k + 1]) >= 1).astype(np.float64)
    values = _safe_divide(_precision_terms(rel).sum(axis=1), rel.sum(axis=1))
    return float(values.mean()) if values.size else 0.0


# --------------------------------------------------------------------------- graded relevance
# Multi-label retrieval grades a result by the number of labels it shares with the query,
# ``s_j = shared(q, r_j)`` (:mod:`hpsh_tf2.evaluation.relevance`); ``rel_j = [s_j >= 1]``.


def _discounts(count: int) -> np.ndarray:
    """``1 / log2(j + 1)`` for ranks ``j = 1..count``."""
    return 1.0 / np.log2(np.arange(2, count + 2, dtype=np.float64))


def ideal_dcg_at_k(*, level_counts: Any, k: int) -> np.ndarray:
    """Per-query ideal DCG@k: the database's gains sorted in decreasing order, cut at ``k``.

    ``IDCG@k(q) = sum_{j<=k} (2^{s*_j} - 1) / log2(j + 1)`` where ``s*_1 >= s*_2 >= ...`` are
    the ``shared`` values of every database item of the query, sorted.

    Args:
        level_counts: int ``[Q, S + 1]``: ``level_counts[q, s]`` database items sharing exactly
            ``s`` labels with query ``q`` (:func:`graded_histograms`).
        k: Cut-off rank.

    Returns:
        float64 ``[Q]``.
    """
    k = _positive_int(k, "k")
    levels = np.asarray(level_counts, np.int64)
    if levels.ndim != 2:
        raise ValueError(f"Received: level_counts with shape {levels.shape}; expected [Q, S + 1]")
    cumulative = np.concatenate([np.zeros(1), np.cumsum(_discounts(k))])
    descending = levels[:, ::-1]  # level S first
    end = np.minimum(np.cumsum(descending, axis=1), k)
    start = np.concatenate([np.zeros((levels.shape[0], 1), np.int64), end[:, :-1]], axis=1)
    gains = relevance.gain(np.arange(levels.shape[1])[::-1])
    return ((cumulative[end] - cumulative[start]) * gains[None, :]).sum(axis=1)


def ndcg_at_k(*, query_labels: Any, retrieved_labels: Any, k: int, level_counts: Any) -> float:
    """NDCG@k with the exponential gain of the multi-label hashing papers (DSRH, Zhao et al. 2015).

    ``DCG@k(q) = sum_{j=1..k} (2^{s_j} - 1) / log2(j + 1)``,
    ``NDCG@k = mean_q DCG@k(q) / IDCG@k(q)`` (:func:`ideal_dcg_at_k`; 0 when ``IDCG = 0``).
    With one label per item the gain is ``rel_j``.

    Args:
        query_labels: ``[Q]`` or ``[Q, C]``.
        retrieved_labels: ``[Q, k']`` or ``[Q, k', C]`` labels of the ranked results.
        k: Cut-off rank.
        level_counts: ``[Q, S + 1]`` (:func:`graded_histograms`), for the ideal ranking.

    Returns:
        NDCG@k in ``[0, 1]``.
    """
    k = _positive_int(k, "k")
    gains = relevance.gain(_shared(query_labels, retrieved_labels, k))
    dcg = (gains * _discounts(k)[None, :]).sum(axis=1)
    values = _safe_divide(dcg, ideal_dcg_at_k(level_counts=level_counts, k=k))
    return float(values.mean()) if values.size else 0.0


def acg_at_k(*, query_labels: Any, retrieved_labels: Any, k: int) -> float:
    """Average cumulative gain, ``ACG@k = mean_q (1/k) sum_{j=1..k} s_j`` (DSRH, eq. 10).

    The mean number of labels a top-``k`` result shares with the query (precision@k with one
    label per item).

    Args:
        query_labels: ``[Q]`` or ``[Q, C]``.
        retrieved_labels: ``[Q, k']`` or ``[Q, k', C]``.
        k: Cut-off rank.

    Returns:
        ACG@k (>= 0; at most the largest number of labels of a query).
    """
    k = _positive_int(k, "k")
    values = _shared(query_labels, retrieved_labels, k).mean(axis=1)
    return float(values.mean()) if values.size else 0.0


def weighted_average_precision_at_k(
    *,
    query_labels: Any,
    retrieved_labels: Any,
    k: int,
    normalizer: str = "retrieved",
    num_relevant: Any = None,
) -> np.ndarray:
    """Per-query weighted AP@k (see :func:`wap_at_k`), float64 ``[Q]``."""
    k = _check_k_and_normalizer(k, normalizer)
    counts = _shared(query_labels, retrieved_labels, k)
    rel = (counts >= 1).astype(np.float64)
    ranks = np.arange(1, k + 1, dtype=np.float64)
    total = (rel * np.cumsum(counts, axis=1) / ranks).sum(axis=1)
    if normalizer == "retrieved":
        return _safe_divide(total, rel.sum(axis=1))
    return _safe_divide(total, np.minimum(_counts(num_relevant, rel.shape[0]), k))


def wap_at_k(
    *,
    query_labels: Any,
    retrieved_labels: Any,
    k: int,
    normalizer: str = "retrieved",
    num_relevant: Any = None,
) -> float:
    """Weighted mAP@k (DSRH, Zhao et al. 2015, eq. 11; IDHN, Zhang et al. 2019).

    AP with the precision at each relevant rank replaced by the ACG there:
    ``WAP@k(q) = (1/Z_q) sum_{j=1..k} rel_j * ACG@j(q)``, ``ACG@j(q) = (1/j) sum_{i<=j} s_i``,
    ``Z_q`` as in :func:`map_at_k` (``"retrieved"``: relevant items in the top ``k``;
    ``"min_k_r"``: ``min(k, R_q)``). With one label per item it is AP@k.

    Args:
        query_labels: ``[Q]`` or ``[Q, C]``.
        retrieved_labels: ``[Q, k']`` or ``[Q, k', C]``.
        k: Cut-off rank.
        normalizer: ``"retrieved"`` or ``"min_k_r"``.
        num_relevant: ``[Q]`` ints ``R_q``; required for ``"min_k_r"``.

    Returns:
        Mean WAP@k (>= 0).
    """
    values = weighted_average_precision_at_k(
        query_labels=query_labels,
        retrieved_labels=retrieved_labels,
        k=k,
        normalizer=normalizer,
        num_relevant=num_relevant,
    )
    return float(values.mean()) if values.size else 0.0


def graded_histograms(
    *,
    query_labels: Any,
    db_labels: Any,
    distances: Any,
    max_distance: int,
    exclude_self: bool = False,
    query_offset: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query and Hamming distance, the summed ``shared`` and gains of the database items.

    The graded counterpart of :func:`distance_histograms` (same arguments).

    Returns:
        ``(shared_hist, gain_hist, level_counts)``: float64 ``[Q, B + 1]`` sums of
        ``s = shared(q, x)`` and of ``2^s - 1`` over the items ``x`` at each distance, and int64
        ``[Q, S + 1]`` items sharing exactly ``s`` labels (``S`` = the number of classes,
        1 for single-label).
    """
    queries = _labels_1d(query_labels, "query_labels")
    counts = relevance.shared(queries, db_labels)
    dist = np.asarray(distances).astype(np.intp)
    if dist.shape != counts.shape:
        raise ValueError(
            f"Received: distances with shape {dist.shape}; expected {counts.shape} = "
            "(len(query_labels), len(db_labels))"
        )
    width = _positive_int(max_distance, "max_distance") + 1
    levels = 1 if queries.ndim == 1 else queries.shape[1]
    keep = np.ones(counts.shape, bool)
    if exclude_self:
        rows = np.arange(queries.shape[0])
        inside = query_offset + rows < counts.shape[1]
        keep[rows[inside], query_offset + rows[inside]] = False
    query_rows = np.arange(queries.shape[0], dtype=np.intp)[:, None]
    cells = (query_rows * width + dist)[keep]
    size = queries.shape[0] * width
    shape = (queries.shape[0], width)
    kept = counts[keep].astype(np.float64)
    shared_hist = np.bincount(cells, weights=kept, minlength=size).reshape(shape)
    gain_hist = np.bincount(cells, weights=relevance.gain(kept), minlength=size).reshape(shape)
    level_cells = (query_rows * (levels + 1) + counts)[keep]
    level_counts = np.bincount(level_cells, minlength=queries.shape[0] * (levels + 1))
    return shared_hist, gain_hist, level_counts.reshape(queries.shape[0], levels + 1)
