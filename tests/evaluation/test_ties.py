"""Tests of hpsh_tf2.evaluation.ties: brute force over every tie order, Monte Carlo, hand values.

The references rank explicitly (every order, or random orders) and score each ranking with the
index-order metrics of :mod:`hpsh_tf2.evaluation.metrics`; the closed forms never see a ranking.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hpsh_tf2.evaluation import metrics as M
from hpsh_tf2.evaluation import ties as T
from tests.conftest import separated_binary_codes

KEYS = ("map", "map_min", "precision", "recall", "map_r")


def _index_metrics(query_labels, ranked_labels, k, counts):
    """Per-query index-order metrics of explicit rankings ``[Q, N']`` (the reference)."""
    common = {"query_labels": query_labels, "retrieved_labels": ranked_labels, "k": k}
    rel = ranked_labels == query_labels[:, None]
    within_r = np.arange(ranked_labels.shape[1])[None, :] < counts[:, None]
    precision_terms = rel * np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)
    safe = np.maximum(counts, 1)
    return {
        "map": M.average_precision_at_k(**common),
        "map_min": M.average_precision_at_k(**common, normalizer="min_k_r", num_relevant=counts),
        "precision": rel[:, :k].sum(axis=1) / k,
        "recall": np.where(counts > 0, rel[:, :k].sum(axis=1) / safe, 0.0),
        "map_r": np.where(counts > 0, (precision_terms * within_r).sum(axis=1) / safe, 0.0),
    }


def _expected(hist, total, k):
    """Per-query closed forms (means for precision/recall come from the public functions)."""
    args = {"relevant_hist": hist, "total_hist": total}
    return {
        "map": T.expected_average_precision_at_k(**args, k=k),
        "map_min": T.expected_average_precision_at_k(**args, k=k, normalizer="min_k_r"),
        "map_r": T.expected_average_precision_at_r(**args),
    }


def _all_orders(distances, keep):
    """Every ranking of ``keep`` (database ids) sorted by distance, ties in every order."""
    values = np.unique(distances[keep])
    groups = [keep[distances[keep] == value] for value in values]
    per_group = [list(itertools.permutations(group)) for group in groups]
    return np.array([np.concatenate(choice) for choice in itertools.product(*per_group)])


def _tiny_case(seed, exclude_self):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, 8)
    queries = labels if exclude_self else rng.integers(0, 3, 4)
    distances = rng.integers(0, 4, (queries.shape[0], labels.shape[0]))
    return queries, labels, distances


@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_forms_equal_mean_over_every_tie_order(seed, exclude_self):
    queries, labels, distances = _tiny_case(seed, exclude_self)
    hist, total = M.distance_histograms(
        query_labels=queries,
        db_labels=labels,
        distances=distances,
        max_distance=3,
        exclude_self=exclude_self,
    )
    ties_seen = 0
    for k in (1, 3, 5):
        brute = {key: [] for key in KEYS}
        for q in range(queries.shape[0]):
            keep = np.array([j for j in range(labels.shape[0]) if not (exclude_self and j == q)])
            orders = _all_orders(distances[q], keep)
            ties_seen = max(ties_seen, orders.shape[0])
            count = int((labels[keep] == queries[q]).sum())
            scores = _index_metrics(
                np.full(orders.shape[0], queries[q]),
                labels[orders],
                k,
                np.full(orders.shape[0], count),
            )
            for key in KEYS:
                brute[key].append(scores[key].mean())
        closed = _expected(hist, total, k)
        for key in ("map", "map_min", "map_r"):
            np.testing.assert_allclose(closed[key], brute[key], rtol=0, atol=1e-12, err_msg=key)
        args = {"relevant_hist": hist, "total_hist": total, "k": k}
        assert T.expected_precision_at_k(**args) == pytest.approx(
            np.mean(brute["precision"]), abs=1e-12
        )
        assert T.expected_recall_at_k(**args) == pytest.approx(np.mean(brute["recall"]), abs=1e-12)
        assert T.expected_map_at_k(**args) == pytest.approx(np.mean(brute["map"]), abs=1e-12)
        assert T.expected_map_at_r(relevant_hist=hist, total_hist=total) == pytest.approx(
            np.mean(brute["map_r"]), abs=1e-12
        )
    assert ties_seen > 1  # the case really has tie groups


def test_retrieved_normaliser_is_mean_of_ratio_not_ratio_of_means():
    # One group of three items at distance 0, two relevant (R) and one not (N), k = 2.
    # Orders: N at rank 1 -> rel 0 1, AP = (1/2)/1; N at rank 2 -> rel 1 0, AP = 1;
    # N at rank 3 -> AP = 1. Mean = (1/2 + 1 + 1)/3 = 5/6 (E[S]/E[Z] would give 7/8).
    hist, total = np.array([[2, 0]]), np.array([[3, 0]])
    got = T.expected_average_precision_at_k(relevant_hist=hist, total_hist=total, k=2)
    np.testing.assert_allclose(got, [5 / 6], rtol=0, atol=1e-15)
    # min(k, R) = 2: E[S] = (1/2 + 1 + 2)/3 = 7/6, AP = 7/12.
    got = T.expected_average_precision_at_k(
        relevant_hist=hist, total_hist=total, k=2, normalizer="min_k_r"
    )
    np.testing.assert_allclose(got, [7 / 12], rtol=0, atol=1e-15)
    # Precision@2 = E[hits] / 2 = (4/3)/2, recall@2 = (4/3)/2.
    assert T.expected_precision_at_k(relevant_hist=hist, total_hist=total, k=2) == pytest.approx(
        2 / 3
    )
    assert T.expected_recall_at_k(relevant_hist=hist, total_hist=total, k=2) == pytest.approx(2 / 3)


def _random_order_rankings(distances, exclude_self, rng, columns):
    """Top ``columns`` of a ranking by distance, ties in a uniformly random order.

    Ties are broken by a fresh random permutation of the database (a random storage order),
    which puts each query's tie groups in a uniformly random order.
    """
    dist = distances.astype(np.int64)
    if exclude_self:
        dist = dist + np.diag(np.full(dist.shape[0], distances.max() + 2))
    keys = dist * dist.shape[1] + rng.permutation(dist.shape[1])[None, :]
    # Unique keys below 2**16: NumPy's stable sort is then a fast radix sort.
    return np.argsort(keys.astype(np.uint16), axis=1, kind="stable")[:, :columns]


def test_closed_forms_within_three_standard_errors_of_monte_carlo():
    rng = np.random.default_rng(5)
    codes = separated_binary_codes(classes=10, k=30, bits=32, seed=3).astype(np.uint8)
    codes ^= (rng.random(codes.shape) < 0.12).astype(np.uint8)
    labels = np.repeat(np.arange(10), 30)
    distances = (codes[:, None, :] != codes[None, :, :]).sum(-1)
    hist, total = M.distance_histograms(
        query_labels=labels,
        db_labels=labels,
        distances=distances,
        max_distance=32,
        exclude_self=True,
    )
    k, counts = 20, hist.sum(axis=1)
    assert T.tied_cut_fraction(total_hist=total, k=k) > 0.5  # a realistic, tie-heavy case
    columns = max(k, int(counts.max()))
    samples = {key: [] for key in KEYS}
    for _ in range(2000):
        ranked = _random_order_rankings(distances, True, rng, columns)
        scores = _index_metrics(labels, labels[ranked], k, counts)
        for key in KEYS:
            samples[key].append(scores[key].mean())
    args = {"relevant_hist": hist, "total_hist": total}
    closed = {
        "map": T.expected_map_at_k(**args, k=k),
        "map_min": T.expected_map_at_k(**args, k=k, normalizer="min_k_r"),
        "precision": T.expected_precision_at_k(**args, k=k),
        "recall": T.expected_recall_at_k(**args, k=k),
        "map_r": T.expected_map_at_r(**args),
    }
    for key in KEYS:
        values = np.array(samples[key])
        error = values.std(ddof=1) / np.sqrt(values.size)
        assert error > 0, key  # tie order really changes the metric
        assert abs(values.mean() - closed[key]) < 3 * error, (key, values.mean(), closed[key])


def test_equal_to_index_order_without_ties():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, 8)
    queries = rng.integers(0, 3, 5)
    # Every query sees distinct distances 0..7: no tie at all.
    distances = np.stack([rng.permutation(8) for _ in range(5)])
    ranked = labels[np.argsort(distances, axis=1)]
    hist, total = M.distance_histograms(
        query_labels=queries, db_labels=labels, distances=distances, max_distance=7
    )
    counts = hist.sum(axis=1)
    for k in (1, 4, 7):
        reference = _index_metrics(queries, ranked, k, counts)
        closed = _expected(hist, total, k)
        for key in ("map", "map_min", "map_r"):
            np.testing.assert_allclose(closed[key], reference[key], rtol=0, atol=1e-14)
        args = {"relevant_hist": hist, "total_hist": total, "k": k}
        assert T.expected_precision_at_k(**args) == pytest.approx(reference["precision"].mean())
        assert T.expected_recall_at_k(**args) == pytest.approx(reference["recall"].mean())
        assert T.tied_cut_fraction(total_hist=total, k=k) == 0.0


def test_pure_tie_groups_equal_index_order():
    # Every group of equal distances is all relevant or all irrelevant: the order inside the
    # groups changes no metric. Query 0 (label 0): {0, 1} rel | {2, 3, 4} | {5} rel | {6}.
    # Query 1 (label 1): {2, 3, 4} rel | {5, 6} | {0, 1}.
    queries = np.array([0, 1])
    labels = np.array([0, 0, 1, 1, 1, 0, 2])
    distances = np.array([[0, 0, 1, 1, 1, 2, 3], [3, 3, 0, 0, 0, 1, 1]])
    ranked = labels[np.argsort(distances, axis=1, kind="stable")]
    hist, total = M.distance_histograms(
        query_labels=queries, db_labels=labels, distances=distances, max_distance=3
    )
    for k in (2, 4, 6):
        reference = _index_metrics(queries, ranked, k, hist.sum(axis=1))
        closed = _expected(hist, total, k)
        for key in ("map", "map_min", "map_r"):
            np.testing.assert_allclose(closed[key], reference[key], rtol=0, atol=1e-14)
        args = {"relevant_hist": hist, "total_hist": total, "k": k}
        assert T.expected_precision_at_k(**args) == pytest.approx(reference["precision"].mean())


def test_expected_metrics_matches_single_functions_and_tied_cut():
    # Query 0: groups 3 | 2 | 2; k = 4 cuts the second group (tied); k = 5 does not.
    hist = np.array([[1, 1, 0], [2, 0, 1]])
    total = np.array([[3, 2, 2], [2, 3, 2]])
    both = T.expected_metrics(relevant_hist=hist, total_hist=total, k=4)
    args = {"relevant_hist": hist, "total_hist": total}
    assert both["map@4"] == T.expected_map_at_k(**args, k=4)
    assert both["map@4_min_k_r"] == T.expected_map_at_k(**args, k=4, normalizer="min_k_r")
    assert both["precision@4"] == T.expected_precision_at_k(**args, k=4)
    assert both["recall@4"] == T.expected_recall_at_k(**args, k=4)
    assert both["map@r"] == T.expected_map_at_r(**args)
    # k = 4: query 0 cuts 3 | 2 after one of two (tied); query 1 cuts 2 | 3 after two (tied).
    assert both["tied_cut@4"] == 1.0
    # k = 5: query 0 ends exactly at a group boundary, query 1 cuts 2 | 3 after all three.
    assert T.tied_cut_fraction(total_hist=total, k=5) == 0.0
    assert T.tied_cut_fraction(total_hist=total, k=6) == 1.0


def test_validation():
    hist, total = np.array([[1, 0]]), np.array([[2, 1]])
    args = {"relevant_hist": hist, "total_hist": total}
    with pytest.raises(ValueError, match="k=4"):
        T.expected_map_at_k(**args, k=4)
    with pytest.raises(ValueError, match="k=0"):
        T.expected_precision_at_k(**args, k=0)
    with pytest.raises(ValueError, match="normalizer='bad'"):
        T.expected_map_at_k(**args, k=1, normalizer="bad")
    with pytest.raises(ValueError, match="equal"):
        T.expected_map_at_r(relevant_hist=hist, total_hist=np.array([2, 1]))
    with pytest.raises(ValueError, match="above total_hist"):
        T.expected_recall_at_k(relevant_hist=np.array([[3, 0]]), total_hist=total, k=1)
    with pytest.raises(ValueError, match="integer"):
        T.expected_map_at_r(relevant_hist=hist * 0.5, total_hist=total)


@pytest.mark.parametrize("exclude_self", [True, False])
def test_code_histograms_match_counts_per_query(exclude_self, monkeypatch):
    monkeypatch.setattr(T, "_BLOCK_ENTRIES", 100)  # several query blocks of 2 rows
    rng = np.random.default_rng(11)
    db = rng.integers(0, 2, (45, 16), dtype=np.uint8)
    db_labels = rng.integers(0, 4, 45)
    query = db[:13] if exclude_self else rng.integers(0, 2, (13, 16), dtype=np.uint8)
    query_labels = db_labels[:13] if exclude_self else rng.integers(0, 4, 13)
    hist, total = T.code_histograms(
        query_codes=query,
        query_labels=query_labels,
        db_codes=db,
        db_labels=db_labels,
        exclude_self=exclude_self,
    )
    for q in range(13):
        keep = np.array([j for j in range(45) if not (exclude_self and j == q)])
        dist = (query[q] != db[keep]).sum(axis=1)
        same = db_labels[keep] == query_labels[q]
        np.testing.assert_array_equal(total[q], np.bincount(dist, minlength=17))
        np.testing.assert_array_equal(hist[q], np.bincount(dist[same], minlength=17))
    with pytest.raises(ValueError, match="same number of bits"):
        T.code_histograms(
            query_codes=query[:, :8], query_labels=query_labels, db_codes=db, db_labels=db_labels
        )
    with pytest.raises(ValueError, match=r"expected \(13,\) and \(45,\)"):
        T.code_histograms(
            query_codes=query, query_labels=query_labels[:3], db_codes=db, db_labels=db_labels
        )
