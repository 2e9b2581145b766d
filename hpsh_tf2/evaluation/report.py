"""One-pass retrieval report: search, every metric of ``metrics.py``, a printable table.

Protocol: each query is ranked against the database by Hamming distance. With
``exclude_self=True`` query ``i`` is database item ``i`` and is left out of its own ranking and
relevance counts (the seed code's "database = test set minus the query" protocol).

Ties. Many database items share a Hamming distance. The rank-based metrics are computed two
ways: tie-aware (suffix ``_expected``: the exact expected value over every order of the tied
items, :mod:`hpsh_tf2.evaluation.ties`; it does not depend on how the database is stored) and
index order (suffix ``_index``: ties broken by database index, lower first, the order of the
returned search results). ``ties`` picks which one the headline keys (``map@k``, ...) hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hpsh_tf2.evaluation import metrics, relevance
from hpsh_tf2.evaluation import ties as tie_metrics
from hpsh_tf2.evaluation.code_health import code_health
from hpsh_tf2.evaluation.search import SearchResult, block_distances, search
from hpsh_tf2.ops.codes import np_pack_codes, np_pack_words

__all__ = [
    "FULL_RANKING_LIMIT",
    "HEADLINE_KEYS",
    "MULTI_LABEL_KEYS",
    "TIES",
    "compute_report",
    "format_report_table",
]

FULL_RANKING_LIMIT = 50_000_000
_BLOCK_ENTRIES = 1 << 22
_TABLE_RADII = 8
TIES = tie_metrics.TIES
HEADLINE_KEYS = ("map@{k}", "map@{k}_min_k_r", "precision@{k}", "recall@{k}", "map@r")
MULTI_LABEL_KEYS = (
    "map@{k}",
    "ndcg@{k}",
    "acg@{k}",
    "wap@{k}",
    "map@{k}_min_k_r",
    "wap@{k}_min_k_r",
    "precision@{k}",
    "recall@{k}",
    "map@r",
)


def _labels(labels: Any, name: str, rows: int) -> np.ndarray:
    """Validates a ``[rows]`` (class indices) or ``[rows, C]`` (multi-hot) label array."""
    array = np.asarray(labels)
    if array.shape[:1] != (rows,) or array.ndim not in (1, 2):
        raise ValueError(
            f"Received: {name} with shape {array.shape}; expected ({rows},) or ({rows}, C)"
        )
    return relevance.check_labels(array, name) if relevance.is_multi_hot(array) else array


def _num_relevant(
    query_labels: np.ndarray, db_labels: np.ndarray, exclude_self: bool
) -> np.ndarray:
    """``R_q``: database items relevant to the query (minus the query itself)."""
    return relevance.num_relevant(query_labels, db_labels, exclude_self=exclude_self)


def _blocked_pass(
    query_words: np.ndarray,
    db_words: np.ndarray,
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    bits: int,
    exclude_self: bool,
    columns: int,
    graded: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
) -> tuple[np.ndarray, np.ndarray, SearchResult | None]:
    """Distance histograms and, when ``columns > 0``, a stable ranking, by query blocks.

    Each block of queries gets its full distance row block (memory ``O(block * N)``); the
    ranking is NumPy's stable argsort (a radix sort on these small integer distances). When
    ``graded`` is a list, each block's :func:`~hpsh_tf2.evaluation.metrics.graded_histograms`
    are appended to it.
    """
    rows = max(1, _BLOCK_ENTRIES // max(db_words.shape[0], 1))
    hits, items, indices, distances = [], [], [], []
    for begin in range(0, query_words.shape[0], rows):
        end = min(begin + rows, query_words.shape[0])
        dist = block_distances(query_words[begin:end], db_words)
        block_hits, block_items = metrics.distance_histograms(
            query_labels=query_labels[begin:end],
            db_labels=db_labels,
            distances=dist,
            max_distance=bits,
            exclude_self=exclude_self,
            query_offset=begin,
        )
        hits.append(block_hits)
        items.append(block_items)
        if graded is not None:
            graded.append(
                metrics.graded_histograms(
                    query_labels=query_labels[begin:end],
                    db_labels=db_labels,
                    distances=dist,
                    max_distance=bits,
                    exclude_self=exclude_self,
                    query_offset=begin,
                )
            )
        if columns:
            if exclude_self:
                dist[np.arange(end - begin), np.arange(begin, end)] = bits + 1
            order = np.argsort(dist, axis=1, kind="stable")[:, :columns]
            indices.append(order)
            distances.append(np.take_along_axis(dist, order, axis=1))
    empty = np.zeros((0, bits + 1), np.int64)
    result = None
    if columns:
        result = SearchResult(
            indices=np.concatenate(indices or [np.zeros((0, columns))]).astype(np.int64),
            distances=np.concatenate(distances or [np.zeros((0, columns))]).astype(np.int32),
        )
    return np.concatenate(hits or [empty]), np.concatenate(items or [empty]), result


def _check_protocol(
    query_labels: np.ndarray, db_labels: np.ndarray, k: int, exclude_self: bool
) -> None:
    """Checks ``k`` and, with ``exclude_self``, that query ``i`` can be database item ``i``."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"Received: k={k!r}; expected a positive int")
    available = db_labels.shape[0] - int(exclude_self)
    if k + 1 > available:
        raise ValueError(
            f"Received: k={k} with {available} rankable database items; expected k + 1 <= "
            f"{available} (the seed metric scores ranks 2..k+1)"
        )
    if not exclude_self:
        return
    count = query_labels.shape[0]
    if count > db_labels.shape[0] or not np.array_equal(query_labels, db_labels[:count]):
        raise ValueError(
            "Received: exclude_self=True with query_labels that are not db_labels[:Q]; "
            "expected query i to be database item i"
        )


def compute_report(
    *,
    query_codes: Any,
    query_labels: Any,
    db_codes: Any,
    db_labels: Any,
    k: int,
    exclude_self: bool,
    radius: int = 2,
    backend: str = "tf",
    empty: str = "zero",
    full_ranking_limit: int = FULL_RANKING_LIMIT,
    ties: str = "expected",
) -> tuple[dict[str, Any], SearchResult]:
    """Searches once and computes every retrieval metric.

    Keys of the report (values are plain Python numbers/lists, JSON-ready), in this order:

    * headline ``map@{k}`` (normalised by relevant retrieved), ``map@{k}_min_k_r``,
      ``precision@{k}``, ``recall@{k}``, ``map@r``: tie-aware expected values when
      ``ties="expected"``, index-order values when ``ties="index"``;
    * ``seed_map@{k}`` (the seed's top-1-reference metric over ranks 2..k+1, index order; not
      comparable), ``ties`` (the choice), ``tied_cut@{k}`` (fraction of queries whose rank-k
      cut falls inside a group of equal distances);
    * the same five metrics with the suffix ``_expected`` (tie-aware, always) and with the
      suffix ``_index`` (index order, always), e.g. ``map@20_expected``, ``map@r_index``;
    * ``precision@radius{radius}``, ``recall@radius{radius}``, ``pr_curve``
      (``{"radius", "precision", "recall"}`` lists for r = 0..bits, macro-averaged; these do
      not depend on tie order), ``bits``, ``num_queries``, ``num_database``, ``exclude_self``,
      ``ranking``.

    Multi-label runs (multi-hot ``[N, C]`` labels; relevance = at least one shared label,
    :mod:`hpsh_tf2.evaluation.relevance`): the headline keys are ``map@{k}``, ``ndcg@{k}``,
    ``acg@{k}``, ``wap@{k}``, ``map@{k}_min_k_r``, ``wap@{k}_min_k_r``, ``precision@{k}``,
    ``recall@{k}``, ``map@r`` (graded: :func:`~hpsh_tf2.evaluation.ties.expected_graded_metrics`),
    each also with the ``_expected`` and ``_index`` suffixes, and ``labels="multi"``.

    Ranking: when ``Q * N <= full_ranking_limit`` the whole distance matrix is computed and
    stably sorted once (NumPy; ``ranking="full"``), which also gives MAP@R. Otherwise the
    ``backend`` search runs for ``k + 1`` neighbours and a second search for ``max_q R_q``
    neighbours gives MAP@R (``ranking="search"``); precision/recall by radius then come from
    distance histograms computed block by block (memory ``O(N)`` per query block). Both routes
    give identical numbers.

    Args:
        query_codes: ``[Q, bits]`` 0/1 codes.
        query_labels: ``[Q]`` class indices or ``[Q, C]`` multi-hot labels.
        db_codes: ``[N, bits]`` 0/1 codes.
        db_labels: ``[N]`` or ``[N, C]`` labels (the form of the queries).
        k: Cut-off rank (20 in the papers); ``k + 1`` neighbours are retrieved.
        exclude_self: Query ``i`` is database item ``i`` (then ``query_labels == db_labels[:Q]``).
        radius: Hamming radius of ``precision@radius{radius}``.
        backend: Search backend for large problems: ``"tf"``, ``"numpy"`` or ``"faiss"``.
        empty: Radius precision of a query with nothing within r: ``"zero"`` or ``"exclude"``.
        full_ranking_limit: Largest ``Q * N`` ranked in full.
        ties: Headline values: ``"expected"`` (tie-aware, default) or ``"index"``.

    Returns:
        ``(report, result)``; ``result`` holds the ``k + 1`` nearest neighbours per query.
    """
    if ties not in TIES:
        raise ValueError(f"Received: ties={ties!r}; expected one of {TIES}")
    query = metrics.check_binary_codes(query_codes, "query_codes")
    database = metrics.check_binary_codes(db_codes, "db_codes")
    if query.shape[1] != database.shape[1]:
        raise ValueError(
            f"Received: query_codes with shape {query.shape} and db_codes with shape "
            f"{database.shape}; expected the same number of bits"
        )
    query_labels = _labels(query_labels, "query_labels", query.shape[0])
    db_labels = _labels(db_labels, "db_labels", database.shape[0])
    _check_protocol(query_labels, db_labels, k, exclude_self)
    k, bits = int(k), query.shape[1]
    relevant = _num_relevant(query_labels, db_labels, exclude_self)
    query_words = np_pack_words(np_pack_codes(query))
    db_words = np_pack_words(np_pack_codes(database))
    r_columns = max(int(relevant.max(initial=0)), 1)
    full = query.shape[0] * database.shape[0] <= full_ranking_limit
    columns = max(k + 1, r_columns) if full else 0
    multi = relevance.is_multi_hot(query_labels)
    graded: list | None = [] if multi else None
    hits, items, ranked = _blocked_pass(
        query_words, db_words, query_labels, db_labels, bits, exclude_self, columns, graded
    )
    if ranked is not None:
        ranking = "full"
        result = SearchResult(ranked.indices[:, : k + 1], ranked.distances[:, : k + 1])
        r_indices = ranked.indices[:, :r_columns]
    else:
        ranking = "search"
        result = search(query, database, k=k + 1, exclude_self=exclude_self, backend=backend)
        r_indices = result.indices
        if r_columns > k + 1:
            r_indices = search(
                query, database, k=r_columns, exclude_self=exclude_self, backend=backend
            ).indices
    index = _metrics(query_labels, db_labels, result, r_indices, relevant, k)
    expected = tie_metrics.expected_metrics(relevant_hist=hits, total_hist=items, k=k)
    if graded is not None:
        shared_hist, gain_hist, levels = (np.concatenate(parts) for parts in zip(*graded))
        index.update(_graded_metrics(query_labels, db_labels, result, levels, relevant, k))
        expected.update(
            tie_metrics.expected_graded_metrics(
                relevant_hist=hits,
                total_hist=items,
                shared_hist=shared_hist,
                gain_hist=gain_hist,
                level_counts=levels,
                k=k,
            )
        )
    report = _headline(index, expected, k, ties, MULTI_LABEL_KEYS if multi else HEADLINE_KEYS)
    if multi:
        report["labels"] = "multi"
    report.update(_radius_metrics(hits, items, relevant, radius, empty))
    report.update(
        bits=bits,
        num_queries=int(query.shape[0]),
        num_database=int(database.shape[0]),
        exclude_self=bool(exclude_self),
        ranking=ranking,
    )
    report["code_health"] = code_health(database)
    return report, result


def _metrics(
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    result: SearchResult,
    r_indices: np.ndarray,
    relevant: np.ndarray,
    k: int,
) -> dict[str, Any]:
    """The rank-based metrics in index order (ties broken by database index)."""
    retrieved = db_labels[result.indices]
    common = {"query_labels": query_labels, "retrieved_labels": retrieved, "k": k}
    return {
        f"map@{k}": metrics.map_at_k(**common),
        f"map@{k}_min_k_r": metrics.map_at_k(**common, normalizer="min_k_r", num_relevant=relevant),
        f"precision@{k}": metrics.precision_at_k(**common),
        f"recall@{k}": metrics.recall_at_k(**common, num_relevant=relevant),
        "map@r": metrics.map_at_r(
            query_labels=query_labels,
            retrieved_labels=db_labels[r_indices],
            num_relevant=relevant,
        ),
        f"seed_map@{k}": metrics.seed_map_at_k(retrieved_labels=retrieved, k=k),
    }


def _graded_metrics(
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    result: SearchResult,
    levels: np.ndarray,
    relevant: np.ndarray,
    k: int,
) -> dict[str, Any]:
    """The graded multi-label metrics in index order."""
    common = {"query_labels": query_labels, "retrieved_labels": db_labels[result.indices], "k": k}
    return {
        f"ndcg@{k}": metrics.ndcg_at_k(**common, level_counts=levels),
        f"acg@{k}": metrics.acg_at_k(**common),
        f"wap@{k}": metrics.wap_at_k(**common),
        f"wap@{k}_min_k_r": metrics.wap_at_k(**common, normalizer="min_k_r", num_relevant=relevant),
    }


def _headline(
    index: dict[str, Any], expected: dict[str, Any], k: int, ties: str, keys: Sequence[str]
) -> dict[str, Any]:
    """Orders the rank-based keys: headline, seed metric, tie info, ``_expected``, ``_index``."""
    names = [name.format(k=k) for name in keys]
    chosen = expected if ties == "expected" else index
    report = {name: chosen[name] for name in names}
    report[f"seed_map@{k}"] = index[f"seed_map@{k}"]
    report["ties"] = ties
    report[f"tied_cut@{k}"] = expected[f"tied_cut@{k}"]
    report.update({f"{name}_expected": expected[name] for name in names})
    report.update({f"{name}_index": index[name] for name in names})
    return report


def _radius_metrics(
    hits: np.ndarray, items: np.ndarray, relevant: np.ndarray, radius: int, empty: str
) -> dict[str, Any]:
    """Precision/recall within ``radius`` and the full precision-recall curve."""
    bits = hits.shape[1] - 1
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)):
        raise ValueError(f"Received: radius={radius!r}; expected an int in [0, {bits}]")
    if not 0 <= radius <= bits:
        raise ValueError(f"Received: radius={radius}; expected an int in [0, {bits}]")
    precision, recall = metrics.precision_recall_from_histograms(
        hits=hits, items=items, num_relevant=relevant, empty=empty
    )
    return {
        f"precision@radius{radius}": float(precision[radius]),
        f"recall@radius{radius}": float(recall[radius]),
        "pr_curve": {
            "radius": list(range(bits + 1)),
            "precision": [float(v) for v in precision],
            "recall": [float(v) for v in recall],
        },
    }


def format_report_table(report: dict[str, Any]) -> str:
    """Renders a report from :func:`compute_report` as a plain-text table.

    Scalars first (in the report's order), then precision/recall for radius 0..8 (the full
    curve is in ``report["pr_curve"]``).

    Args:
        report: The dict returned by :func:`compute_report`.

    Returns:
        A multi-line string.
    """
    if not isinstance(report, dict):
        raise TypeError(f"Received: report of type {type(report).__name__}; expected a dict")
    scalars = [(key, value) for key, value in report.items() if not isinstance(value, dict)]
    width = max([len(key) for key, _ in scalars] + [6])
    lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  {'-' * 8}"]
    for key, value in scalars:
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"{key.ljust(width)}  {text}")
    curve = report.get("pr_curve")
    if curve:
        lines += ["", "radius  precision  recall"]
        for radius, prec, rec in list(zip(curve["radius"], curve["precision"], curve["recall"]))[
            : _TABLE_RADII + 1
        ]:
            lines.append(f"{radius:>6}  {prec:>9.4f}  {rec:>6.4f}")
    return "\n".join(lines)
