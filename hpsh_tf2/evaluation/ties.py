"""Tie-aware retrieval metrics: exact expected values over every order of tied distances.

Hamming distances are integers ``0..bits``, so with 16-64-bit codes many database items share
a distance and a ranked list is only defined up to the order inside each group of equal
distances. The index-order metrics of :mod:`hpsh_tf2.evaluation.metrics` break ties by
database index, so their value depends on how the database happens to be stored (by label and
file name). The functions here return instead the **expected value over all orders inside the
tie groups, each equally likely** (McSherry and Najork, "Computing Information Retrieval
Performance Measures Efficiently in the Presence of Tied Scores", ECIR 2008), in closed form.

Input. Everything a ranking by distance says about one query is in two histograms over the
distance values ``d = 0..B``: ``total_hist[q, d]`` (``n_d``) database items at distance ``d``
and ``relevant_hist[q, d]`` (``r_d``) of them sharing the query's label
(:func:`hpsh_tf2.evaluation.metrics.distance_histograms`; the query itself left out under the
paper protocol). ``R_q = sum_d r_d``.

Derivation. Let ``s_d = sum_{e<d} n_e`` (items ranked before group ``d``) and
``rho_d = sum_{e<d} r_e``. Group ``d`` fills ranks ``s_d + 1 .. s_d + n_d`` in a uniformly
random order. For the rank ``j = s_d + t`` (``1 <= t <= n_d``)::

    E[rel_j]                     = r_d / n_d
    E[rel_j * sum_{i<=j} rel_i]  = (r_d / n_d) (rho_d + 1)
                                   + (t - 1) r_d (r_d - 1) / (n_d (n_d - 1))

(items before the group are all ranked before ``j``; two distinct slots of the group are both
relevant with probability ``r_d (r_d - 1) / (n_d (n_d - 1))``). With a cut-off ``c``,
``m_d = clip(c - s_d, 0, n_d)`` items of group ``d`` are in the top ``c`` and, writing
``A_d = H(s_d + m_d) - H(s_d)`` (``H`` the harmonic numbers, so ``A_d = sum_{t<=m_d} 1/(s_d+t)``
and ``sum_{t<=m_d} (t-1)/(s_d+t) = m_d - (s_d + 1) A_d``)::

    E[hits_c] = E[sum_{j<=c} rel_j]       = sum_d m_d r_d / n_d
    E[S_c]    = E[sum_{j<=c} rel_j P_j]   = sum_d (r_d / n_d)(rho_d + 1) A_d
                                            + r_d (r_d - 1) / (n_d (n_d - 1)) (m_d - (s_d + 1) A_d)

The metrics (means over queries of these per-query expectations):

* ``P@k = E[hits_k] / k``; ``R@k = E[hits_k] / R_q``.
* ``AP@k`` with ``Z = min(k, R_q)``: ``E[S_k] / Z`` (``Z`` is fixed, so this is the exact
  expectation of the ratio). ``MAP@R``: ``E[S_{R_q}] / R_q``.
* ``AP@k`` with ``Z = hits_k`` (relevant retrieved, the MHCLN/HPSH normaliser): ``Z`` is
  itself random, and ``E[S / Z]`` is computed exactly, not as ``E[S] / E[Z]``. Only the group
  ``g`` holding rank ``k`` is cut (``m = m_g`` of its ``n = n_g`` items in the top ``k``). The
  number ``X`` of its relevant items that land in the top ``k`` is hypergeometric,
  ``P(X = x) = C(r, x) C(n - r, m - x) / C(n, m)``; given ``X = x`` the ``m`` slots hold a
  uniformly random arrangement of ``x`` relevant items, so
  ``E[S_g | x] = (x / m)(rho_g + 1) A_g + x (x - 1) / (m (m - 1)) (m - (s_g + 1) A_g)``, the
  groups before ``g`` contribute ``E[S_<g]`` independently of ``X``, and ``Z = rho_g + x``::

      E[AP@k] = sum_x P(X = x) (E[S_<g] + E[S_g | x]) / (rho_g + x)     (0 when rho_g + x = 0)

  a sum over at most ``k + 1`` values of ``x``, vectorised over queries.

A query with nothing relevant scores 0, as in the index-order metrics. Without ties (every
group of size 1, or every group all relevant or all irrelevant) each expectation equals the
index-order value. All functions are vectorised over queries (loops only over distance values
or over ``x``) and take keyword-only arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpsh_tf2.evaluation.metrics import check_binary_codes, distance_histograms, ideal_dcg_at_k
from hpsh_tf2.evaluation.search import block_distances
from hpsh_tf2.ops.codes import np_pack_codes, np_pack_words

__all__ = [
    "NORMALIZERS",
    "TIES",
    "code_histograms",
    "expected_average_precision_at_k",
    "expected_average_precision_at_r",
    "expected_graded_metrics",
    "expected_map_at_k",
    "expected_map_at_r",
    "expected_metrics",
    "expected_precision_at_k",
    "expected_recall_at_k",
    "tied_cut_fraction",
]

NORMALIZERS = ("retrieved", "min_k_r")
TIES = ("expected", "index")
_BLOCK_ENTRIES = 1 << 22


def code_histograms(
    *,
    query_codes: Any,
    query_labels: Any,
    db_codes: Any,
    db_labels: Any,
    exclude_self: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``(relevant_hist, total_hist)`` inputs of this module, straight from binary codes.

    Blocks of queries are XOR-ed and popcounted against the whole database (about 4M
    distances per block, so memory stays bounded) and counted per distance with
    :func:`hpsh_tf2.evaluation.metrics.distance_histograms`; no ranking is built.

    Args:
        query_codes: ``[Q, bits]`` 0/1 codes.
        query_labels: ``[Q]`` labels.
        db_codes: ``[N, bits]`` 0/1 codes, same ``bits``.
        db_labels: ``[N]`` labels.
        exclude_self: Query ``i`` is database item ``i`` and is not counted (paper protocol).

    Returns:
        int64 ``(relevant_hist, total_hist)``, both ``[Q, bits + 1]``.
    """
    query = check_binary_codes(query_codes, "query_codes")
    database = check_binary_codes(db_codes, "db_codes")
    if query.shape[1] != database.shape[1]:
        raise ValueError(
            f"Received: query_codes with shape {query.shape} and db_codes with shape "
            f"{database.shape}; expected the same number of bits"
        )
    query_labels, db_labels = np.asarray(query_labels), np.asarray(db_labels)
    if query_labels.shape[:1] != (query.shape[0],) or db_labels.shape[:1] != (database.shape[0],):
        raise ValueError(
            f"Received: query_labels with shape {query_labels.shape} and db_labels with shape "
            f"{db_labels.shape}; expected ({query.shape[0]},) and ({database.shape[0]},) "
            "(or [N, C] multi-hot)"
        )
    bits = query.shape[1]
    query_words = np_pack_words(np_pack_codes(query))
    db_words = np_pack_words(np_pack_codes(database))
    rows = max(1, _BLOCK_ENTRIES // max(database.shape[0], 1))
    relevant = np.zeros((query.shape[0], bits + 1), np.int64)
    total = np.zeros((query.shape[0], bits + 1), np.int64)
    for begin in range(0, query.shape[0], rows):
        end = min(begin + rows, query.shape[0])
        distances = block_distances(query_words[begin:end], db_words)
        relevant[begin:end], total[begin:end] = distance_histograms(
            query_labels=query_labels[begin:end],
            db_labels=db_labels,
            distances=distances,
            max_distance=bits,
            exclude_self=exclude_self,
            query_offset=begin,
        )
    return relevant, total


def _histograms(relevant_hist: Any, total_hist: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validates the two ``[Q, B + 1]`` count histograms and returns them as int64."""
    relevant = np.asarray(relevant_hist)
    total = np.asarray(total_hist)
    if relevant.ndim != 2 or relevant.shape != total.shape:
        raise ValueError(
            f"Received: relevant_hist with shape {relevant.shape} and total_hist with shape "
            f"{total.shape}; expected equal [Q, B + 1] shapes"
        )
    for name, array in (("relevant_hist", relevant), ("total_hist", total)):
        if not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
            raise ValueError(f"Received: {name} with dtype {array.dtype}; expected integer counts")
    relevant = relevant.astype(np.int64)
    total = total.astype(np.int64)
    if relevant.size and (relevant.min() < 0 or (relevant > total).any()):
        raise ValueError(
            "Received: relevant_hist with a negative count or a count above total_hist; "
            "expected 0 <= relevant_hist <= total_hist"
        )
    return relevant, total


def _check_k(k: Any, total: np.ndarray) -> int:
    """Returns ``k`` as an int in ``[1, min_q N_q]`` or raises."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"Received: k={k!r}; expected a positive int")
    fewest = int(total.sum(axis=1).min(initial=int(k)))
    if k > fewest:
        raise ValueError(
            f"Received: k={k} with a query that ranks only {fewest} database items; expected "
            "k <= the number of ranked items of every query"
        )
    return int(k)


def _ratio(numerator: Any, denominator: Any) -> np.ndarray:
    """``numerator / denominator`` as float64, 0 where the denominator is 0."""
    numerator = np.asarray(numerator, np.float64)
    denominator = np.asarray(denominator, np.float64)
    safe = np.where(denominator != 0, denominator, 1.0)
    return np.where(denominator != 0, numerator / safe, 0.0)


def _harmonic(largest: int) -> np.ndarray:
    """Harmonic numbers ``H(0..largest)`` in extended precision (``H(0) = 0``)."""
    inverse = 1.0 / np.arange(1, largest + 1, dtype=np.longdouble)
    return np.concatenate([np.zeros(1, np.longdouble), np.cumsum(inverse)])


def _log_factorial(largest: int) -> np.ndarray:
    """``log(i!)`` for ``i = 0..largest`` in extended precision."""
    logs = np.log(np.arange(1, largest + 1, dtype=np.longdouble))
    return np.concatenate([np.zeros(1, np.longdouble), np.cumsum(logs)])


class _Groups:
    """Per-group quantities of a cut-off ``c`` (one per query), shapes ``[Q, B + 1]``.

    Attributes mirror the module docstring: ``before`` (``s_d``), ``rel_before``
    (``rho_d``), ``taken`` (``m_d``), ``spread`` (``A_d``), ``hits`` (``m_d r_d / n_d``) and
    ``terms`` (the group's share of ``E[S_c]``).
    """

    def __init__(self, relevant: np.ndarray, total: np.ndarray, cutoff: np.ndarray) -> None:
        self.before = np.cumsum(total, axis=1) - total
        self.rel_before = np.cumsum(relevant, axis=1) - relevant
        self.taken = np.clip(cutoff[:, None] - self.before, 0, total)
        harmonic = _harmonic(int(total.sum(axis=1).max(initial=0)))
        self.spread = (harmonic[self.before + self.taken] - harmonic[self.before]).astype(
            np.float64
        )
        single = _ratio(relevant, total)
        pair = _ratio(relevant * (relevant - 1), total * (total - 1))
        self.hits = self.taken * single
        self.terms = single * (self.rel_before + 1) * self.spread + pair * (
            self.taken - (self.before + 1) * self.spread
        )


def _cutoff(total: np.ndarray, k: int) -> np.ndarray:
    """The same cut-off ``k`` for every query, as an int64 ``[Q]`` array."""
    return np.full(total.shape[0], k, np.int64)


def _mean(values: np.ndarray) -> float:
    """Mean over queries as a Python float (0 for no query)."""
    return float(values.mean()) if values.size else 0.0


def _ap_retrieved(relevant: np.ndarray, total: np.ndarray, groups: _Groups, k: int) -> np.ndarray:
    """Per-query ``E[S_k / hits_k]`` by the hypergeometric sum of the module docstring."""
    rows = np.arange(total.shape[0])
    cut = np.argmax(groups.before + total >= k, axis=1)
    n, r = total[rows, cut], relevant[rows, cut]
    m, s = groups.taken[rows, cut], groups.before[rows, cut]
    rho, spread = groups.rel_before[rows, cut], groups.spread[rows, cut]
    earlier = (groups.terms * (np.arange(total.shape[1])[None, :] < cut[:, None])).sum(axis=1)
    log_fact = _log_factorial(int(n.max(initial=0)))

    def log_choose(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
        return log_fact[top] - log_fact[bottom] - log_fact[top - bottom]

    log_all = log_choose(n, m)
    weights, values = [], []
    for x in range(int(np.minimum(m, r).max(initial=0)) + 1):
        possible = (x <= np.minimum(m, r)) & (m - x <= n - r)
        xr = np.where(possible, x, 0)
        log_p = log_choose(np.where(possible, r, 0), xr) + log_choose(
            np.where(possible, n - r, 0), np.where(possible, m - x, 0)
        )
        weights.append(np.where(possible, np.exp(log_p - log_all).astype(np.float64), 0.0))
        given = x / m * (rho + 1) * spread + _ratio(x * (x - 1), m * (m - 1)) * (
            m - (s + 1) * spread
        )
        values.append(_ratio(earlier + given, rho + x))
    weights = np.stack(weights, axis=1)
    weights /= weights.sum(axis=1, keepdims=True)
    return (weights * np.stack(values, axis=1)).sum(axis=1)


def expected_average_precision_at_k(
    *, relevant_hist: Any, total_hist: Any, k: int, normalizer: str = "retrieved"
) -> np.ndarray:
    """Per-query expected AP@k over all orders of tied items (formulas: module docstring).

    ``AP@k = (1/Z) sum_{j<=k} rel_j P_j`` with ``Z = hits_k`` (``normalizer="retrieved"``,
    the exact ``E[S_k / hits_k]``) or ``Z = min(k, R_q)`` (``"min_k_r"``: ``E[S_k] / Z``).

    Args:
        relevant_hist: ``[Q, B + 1]`` relevant items per Hamming distance.
        total_hist: ``[Q, B + 1]`` database items per Hamming distance.
        k: Cut-off rank, at most the number of ranked items of every query.
        normalizer: ``"retrieved"`` or ``"min_k_r"``.

    Returns:
        float64 ``[Q]`` array of expected AP@k values in ``[0, 1]``.
    """
    if normalizer not in NORMALIZERS:
        raise ValueError(f"Received: normalizer={normalizer!r}; expected one of {NORMALIZERS}")
    relevant, total = _histograms(relevant_hist, total_hist)
    k = _check_k(k, total)
    groups = _Groups(relevant, total, _cutoff(total, k))
    if normalizer == "min_k_r":
        return _ratio(groups.terms.sum(axis=1), np.minimum(relevant.sum(axis=1), k))
    return _ap_retrieved(relevant, total, groups, k)


def expected_map_at_k(
    *, relevant_hist: Any, total_hist: Any, k: int, normalizer: str = "retrieved"
) -> float:
    """Tie-aware mAP@k: ``mean_q E[AP@k(q)]`` (see :func:`expected_average_precision_at_k`).

    Args:
        relevant_hist: ``[Q, B + 1]`` relevant items per Hamming distance.
        total_hist: ``[Q, B + 1]`` database items per Hamming distance.
        k: Cut-off rank.
        normalizer: ``"retrieved"`` (``Z`` = relevant retrieved) or ``"min_k_r"``.

    Returns:
        Expected mAP@k in ``[0, 1]``.
    """
    return _mean(
        expected_average_precision_at_k(
            relevant_hist=relevant_hist, total_hist=total_hist, k=k, normalizer=normalizer
        )
    )


def expected_average_precision_at_r(*, relevant_hist: Any, total_hist: Any) -> np.ndarray:
    """Per-query expected AP@R: ``E[S_{R_q}] / R_q`` (0 when ``R_q = 0``).

    Args:
        relevant_hist: ``[Q, B + 1]`` relevant items per Hamming distance.
        total_hist: ``[Q, B + 1]`` database items per Hamming distance.

    Returns:
        float64 ``[Q]`` array in ``[0, 1]``.
    """
    relevant, total = _histograms(relevant_hist, total_hist)
    counts = relevant.sum(axis=1)
    groups = _Groups(relevant, total, counts)
    return _ratio(groups.terms.sum(axis=1), counts)


def expected_map_at_r(*, relevant_hist: Any, total_hist: Any) -> float:
    """Tie-aware MAP@R (Musgrave et al. 2020): ``mean_q E[S_{R_q}] / R_q``.

    Args:
        relevant_hist: ``[Q, B + 1]`` relevant items per Hamming distance.
        total_hist: ``[Q, B + 1]`` database items per Hamming distance.

    Returns:
        Expected MAP@R in ``[0, 1]``.
    """
    return _mean(
        expected_average_precision_at_r(relevant_hist=relevant_hist, total_hist=total_hist)
    )


def expected_precision_at_k(*, relevant_hist: Any, total_hist: Any, k: int) -> float:
    """Tie-aware precision@k: ``mean_q E[hits_k] / k``, ``E[hits_k] = sum_d m_d r_d / n_d``.

    Args:
        relevant_hist: ``[Q, B + 1]`` relevant items per Hamming distance.
        total_hist: ``[Q, B + 1]`` database items per Hamming distance.
        k: Cut-off rank.

    Returns:
        Expected precision@k in ``[0, 1]``.
    """
    relevant, total = _histograms(relevant_hist, total_hist)
    k = _check_k(k, total)
    return _mean(_Groups(relevant, total, _cutoff(total, k)).hits.sum(axis=1) / k)


def expected_recall_at_k(*, relevant_hist: Any, total_hist: Any, k: int) -> float:
    """Tie-aware recall@k: ``mean_q E[hits_k] / R_q`` (0 when ``R_q = 0``).

    Args:
        relevant_hist: ``[Q, B + 1]`` relevant items per Hamming distance.
        total_hist: ``[Q, B + 1]`` database items per Hamming distance.
        k: Cut-off rank.

    Returns:
        Expected recall@k in ``[0, 1]``.
    """
    relevant, total = _histograms(relevant_hist, total_hist)
    k = _check_k(k, total)
    hits = _Groups(relevant, total, _cutoff(total, k)).hits.sum(axis=1)
    return _mean(_ratio(hits, relevant.sum(axis=1)))


def tied_cut_fraction(*, total_hist: Any, k: int) -> float:
    """Fraction of queries whose rank-``k`` cut falls inside a group of equal distances.

    That is, the group holding rank ``k`` also has items ranked after ``k``
    (``s_g < k < s_g + n_g``), so the index-order top ``k`` depends on the tie order.

    Args:
        total_hist: ``[Q, B + 1]`` database items per Hamming distance.
        k: Cut-off rank.

    Returns:
        A fraction in ``[0, 1]``.
    """
    _, total = _histograms(np.zeros_like(np.asarray(total_hist)), total_hist)
    k = _check_k(k, total)
    inclusive = np.cumsum(total, axis=1)
    rows = np.arange(total.shape[0])
    cut = np.argmax(inclusive >= k, axis=1)
    return _mean((inclusive[rows, cut] > k).astype(np.float64))


def expected_metrics(*, relevant_hist: Any, total_hist: Any, k: int) -> dict[str, float]:
    """Every tie-aware metric at once (shares the per-group work).

    Args:
        relevant_hist: ``[Q, B + 1]`` relevant items per Hamming distance.
        total_hist: ``[Q, B + 1]`` database items per Hamming distance.
        k: Cut-off rank.

    Returns:
        ``{"map@k", "map@k_min_k_r", "precision@k", "recall@k", "map@r", "tied_cut@k"}``
        with the literal ``k`` replaced by its value (e.g. ``"map@20"``).
    """
    relevant, total = _histograms(relevant_hist, total_hist)
    k = _check_k(k, total)
    counts = relevant.sum(axis=1)
    at_k = _Groups(relevant, total, _cutoff(total, k))
    at_r = _Groups(relevant, total, counts)
    hits = at_k.hits.sum(axis=1)
    return {
        f"map@{k}": _mean(_ap_retrieved(relevant, total, at_k, k)),
        f"map@{k}_min_k_r": _mean(_ratio(at_k.terms.sum(axis=1), np.minimum(counts, k))),
        f"precision@{k}": _mean(hits / k),
        f"recall@{k}": _mean(_ratio(hits, counts)),
        "map@r": _mean(_ratio(at_r.terms.sum(axis=1), counts)),
        f"tied_cut@{k}": tied_cut_fraction(total_hist=total, k=k),
    }


# --------------------------------------------------------------------------- graded relevance
# Multi-label retrieval (:mod:`hpsh_tf2.evaluation.relevance`): each item of group d shares
# s labels with the query; the group's sums g_d = sum s and G_d = sum (2^s - 1) come from
# :func:`hpsh_tf2.evaluation.metrics.graded_histograms`.
#
# Exactness. A rank j = s_d + t of group d holds each of the group's n_d items with probability
# 1/n_d, so E[s_j] = g_d / n_d and E[2^{s_j} - 1] = G_d / n_d: ACG@k and DCG@k are linear in
# the per-rank gains and their expectations are exact. IDCG@k does not depend on the order, so
# E[NDCG@k] = E[DCG@k] / IDCG@k exactly. WAP needs the pair terms: an irrelevant item shares no
# label (s = 0 iff rel = 0), so
#     E[rel_j s_j]                = g_d / n_d
#     E[rel_j s_i], i != j in d   = (r_d g_d - g_d) / (n_d (n_d - 1))
#     E[rel_j sum_{i<=j} s_i]     = (r_d / n_d) g_<d + g_d / n_d
#                                   + (t - 1) g_d (r_d - 1) / (n_d (n_d - 1))
# with g_<d the shared sum of the groups before d (with s = rel these are the mAP formulas).
# Summed with 1/j over the top-c slots of the group (A_d as for mAP):
#     E[W_c] = sum_d ((r_d / n_d) g_<d + g_d / n_d) A_d
#              + g_d (r_d - 1) / (n_d (n_d - 1)) (m_d - (s_d + 1) A_d).
# WAP@k with Z = min(k, R_q) is E[W_k] / Z. With Z = hits_k the ratio is taken exactly, as for
# mAP: conditioned on X = x relevant items of the cut group g in the top k (hypergeometric),
# the x items are a uniformly random subset of its r relevant items (mean share g/r each), so
#     E[W_g | x] = (x/m)(g_<g + g/r) A_g + x (x - 1) / (m (m - 1)) (g/r) (m - (s_g + 1) A_g)
# and E[WAP@k] = sum_x P(X = x) (E[W_<g] + E[W_g | x]) / (rho_g + x).


def _graded(hist: Any, total: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(hist, np.float64)
    if array.shape != total.shape:
        raise ValueError(
            f"Received: {name} with shape {array.shape}; expected {total.shape} (as total_hist)"
        )
    return array


def _cumulative_discounts(largest: int) -> np.ndarray:
    """``D(j) = sum_{i<=j} 1 / log2(i + 1)`` for ``j = 0..largest`` (``D(0) = 0``)."""
    inverse = 1.0 / np.log2(np.arange(2, largest + 2, dtype=np.longdouble))
    return np.concatenate([np.zeros(1, np.longdouble), np.cumsum(inverse)])


def _hypergeometric(n: np.ndarray, r: np.ndarray, m: np.ndarray, x: int) -> np.ndarray:
    """``P(X = x)`` of ``x`` relevant among ``m`` of ``n`` items (``r`` relevant), ``[Q]``."""
    log_fact = _log_factorial(int(n.max(initial=0)))

    def log_choose(top, bottom):
        return log_fact[top] - log_fact[bottom] - log_fact[top - bottom]

    possible = (x <= np.minimum(m, r)) & (m - x <= n - r)
    log_p = log_choose(np.where(possible, r, 0), np.where(possible, x, 0)) + log_choose(
        np.where(possible, n - r, 0), np.where(possible, m - x, 0)
    )
    return np.where(possible, np.exp(log_p - log_choose(n, m)).astype(np.float64), 0.0)


def _wap_terms(relevant, total, shared, groups: _Groups) -> np.ndarray:
    """Each group's share of ``E[W_c]`` (formula above), ``[Q, B + 1]``."""
    shared_before = np.cumsum(shared, axis=1) - shared
    single = _ratio(relevant, total)
    pair = _ratio(shared * (relevant - 1), total * (total - 1))
    return (single * shared_before + _ratio(shared, total)) * groups.spread + pair * (
        groups.taken - (groups.before + 1) * groups.spread
    )


def _wap_retrieved(relevant, total, shared, groups: _Groups, k: int) -> np.ndarray:
    """Per-query ``E[W_k / hits_k]`` by the hypergeometric sum above."""
    rows = np.arange(total.shape[0])
    cut = np.argmax(groups.before + total >= k, axis=1)
    n, r, g = total[rows, cut], relevant[rows, cut], shared[rows, cut]
    m, s = groups.taken[rows, cut], groups.before[rows, cut]
    rho, spread = groups.rel_before[rows, cut], groups.spread[rows, cut]
    shared_before = (np.cumsum(shared, axis=1) - shared)[rows, cut]
    terms = _wap_terms(relevant, total, shared, groups)
    earlier = (terms * (np.arange(total.shape[1])[None, :] < cut[:, None])).sum(axis=1)
    mean_share = _ratio(g, r)
    weights, values = [], []
    for x in range(int(np.minimum(m, r).max(initial=0)) + 1):
        weights.append(_hypergeometric(n, r, m, x))
        given = _ratio(x, m) * (shared_before + mean_share) * spread + _ratio(
            x * (x - 1), m * (m - 1)
        ) * mean_share * (m - (s + 1) * spread)
        values.append(_ratio(earlier + given, rho + x))
    weights = np.stack(weights, axis=1)
    weights /= weights.sum(axis=1, keepdims=True)
    return (weights * np.stack(values, axis=1)).sum(axis=1)


def expected_graded_metrics(
    *,
    relevant_hist: Any,
    total_hist: Any,
    shared_hist: Any,
    gain_hist: Any,
    level_counts: Any,
    k: int,
) -> dict[str, float]:
    """Tie-aware NDCG@k, ACG@k and WAP@k (both normalisers): expected values over tie orders.

    Definitions (index order): :func:`hpsh_tf2.evaluation.metrics.ndcg_at_k`,
    :func:`~hpsh_tf2.evaluation.metrics.acg_at_k`, :func:`~hpsh_tf2.evaluation.metrics.wap_at_k`.
    Expectations (derivation in the comment above this function)::

        E[ACG@k]  = (1/k) sum_d m_d g_d / n_d
        E[NDCG@k] = sum_d (G_d / n_d) (D(s_d + m_d) - D(s_d)) / IDCG@k
                    with D(j) = sum_{i<=j} 1 / log2(i + 1)
        E[WAP@k]  = E[W_k / hits_k]  (exact hypergeometric sum),  and  E[W_k] / min(k, R_q)

    Args:
        relevant_hist: ``[Q, B + 1]`` relevant items per Hamming distance.
        total_hist: ``[Q, B + 1]`` database items per Hamming distance.
        shared_hist: ``[Q, B + 1]`` summed shared-label counts per distance.
        gain_hist: ``[Q, B + 1]`` summed gains ``2^s - 1`` per distance.
        level_counts: ``[Q, S + 1]`` items sharing exactly ``s`` labels (for IDCG).
        k: Cut-off rank.

    Returns:
        ``{"ndcg@k", "acg@k", "wap@k", "wap@k_min_k_r"}`` with ``k`` replaced by its value.
    """
    relevant, total = _histograms(relevant_hist, total_hist)
    k = _check_k(k, total)
    shared = _graded(shared_hist, total, "shared_hist")
    gains = _graded(gain_hist, total, "gain_hist")
    groups = _Groups(relevant, total, _cutoff(total, k))
    discounts = _cumulative_discounts(int(total.sum(axis=1).max(initial=0)))
    span = (discounts[groups.before + groups.taken] - discounts[groups.before]).astype(np.float64)
    dcg = (_ratio(gains, total) * span).sum(axis=1)
    ideal = ideal_dcg_at_k(level_counts=level_counts, k=k)
    counts = relevant.sum(axis=1)
    wap_sum = _wap_terms(relevant, total, shared, groups).sum(axis=1)
    return {
        f"ndcg@{k}": _mean(_ratio(dcg, ideal)),
        f"acg@{k}": _mean((groups.taken * _ratio(shared, total)).sum(axis=1) / k),
        f"wap@{k}": _mean(_wap_retrieved(relevant, total, shared, groups, k)),
        f"wap@{k}_min_k_r": _mean(_ratio(wap_sum, np.minimum(counts, k))),
    }
