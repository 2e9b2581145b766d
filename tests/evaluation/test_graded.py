"""Multi-label metrics: index order against the papers' formulas, tie-aware against brute force.

The references below are written from the formulas (DSRH, Zhao et al. 2015, eqs. 9-11; NDCG
with gain ``2^s - 1``), one query and one ranking at a time, independently of the package. The
tie-aware values must equal the plain mean of the index-order value over every order of the
tied items (``itertools.permutations`` inside each group of equal distance).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from hpsh_tf2.evaluation import metrics, relevance, ties


def _ref_shared(query, item):
    return int(np.sum(np.logical_and(query, item)))


def _ref_all(shared_ranked, shared_all, k):
    """Per-query reference values of one ranking (list of shared counts, best first)."""
    top = shared_ranked[:k]
    rel = [1 if s > 0 else 0 for s in top]
    hits = sum(rel)
    big_r = sum(1 for s in shared_all if s > 0)
    ap = sum(rel[j] * sum(rel[: j + 1]) / (j + 1) for j in range(k))
    wap = sum(rel[j] * sum(top[: j + 1]) / (j + 1) for j in range(k))
    dcg = sum((2 ** top[j] - 1) / math.log2(j + 2) for j in range(k))
    ideal = sorted(shared_all, reverse=True)[:k]
    idcg = sum((2 ** ideal[j] - 1) / math.log2(j + 2) for j in range(len(ideal)))
    return {
        "map": ap / hits if hits else 0.0,
        "map_min_k_r": ap / min(k, big_r) if big_r else 0.0,
        "precision": hits / k,
        "acg": sum(top) / k,
        "ndcg": dcg / idcg if idcg else 0.0,
        "wap": wap / hits if hits else 0.0,
        "wap_min_k_r": wap / min(k, big_r) if big_r else 0.0,
    }


def _tie_orders(distances):
    """Every ranking of the items consistent with their distances (ties in every order)."""
    groups = [list(np.flatnonzero(distances == d)) for d in np.unique(distances)]
    for parts in itertools.product(*(itertools.permutations(g) for g in groups)):
        yield [i for part in parts for i in part]


def _case(seed, items=7, classes=4, bits=3):
    rng = np.random.default_rng(seed)
    labels = (rng.random((items + 1, classes)) < 0.4).astype(np.uint8)
    labels[0, rng.integers(0, classes)] = 1
    distances = rng.integers(0, bits + 1, items)
    return labels[0], labels[1:], distances, bits


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("k", [1, 3, 5])
def test_tie_aware_graded_metrics_equal_the_mean_over_every_tie_order(seed, k):
    query, database, distances, bits = _case(seed)
    shared_all = [_ref_shared(query, x) for x in database]
    orders = list(_tie_orders(distances))
    brute = {
        key: np.mean([_ref_all([shared_all[i] for i in o], shared_all, k)[key] for o in orders])
        for key in _ref_all(shared_all, shared_all, k)
    }
    common = {
        "query_labels": query[None],
        "db_labels": database,
        "distances": distances[None],
        "max_distance": bits,
    }
    rel_hist, total_hist = metrics.distance_histograms(**common)
    shared_hist, gain_hist, levels = metrics.graded_histograms(**common)
    graded = ties.expected_graded_metrics(
        relevant_hist=rel_hist,
        total_hist=total_hist,
        shared_hist=shared_hist,
        gain_hist=gain_hist,
        level_counts=levels,
        k=k,
    )
    plain = ties.expected_metrics(relevant_hist=rel_hist, total_hist=total_hist, k=k)
    assert graded[f"ndcg@{k}"] == pytest.approx(brute["ndcg"], abs=1e-12)
    assert graded[f"acg@{k}"] == pytest.approx(brute["acg"], abs=1e-12)
    assert graded[f"wap@{k}"] == pytest.approx(brute["wap"], abs=1e-12)
    assert graded[f"wap@{k}_min_k_r"] == pytest.approx(brute["wap_min_k_r"], abs=1e-12)
    assert plain[f"map@{k}"] == pytest.approx(brute["map"], abs=1e-12)
    assert plain[f"map@{k}_min_k_r"] == pytest.approx(brute["map_min_k_r"], abs=1e-12)
    assert plain[f"precision@{k}"] == pytest.approx(brute["precision"], abs=1e-12)


def test_a_tied_cut_makes_the_orders_differ():
    """The brute force above is not vacuous: some cases' orders give different values."""
    query, database, distances, _ = _case(3)
    shared_all = [_ref_shared(query, x) for x in database]
    values = {
        round(_ref_all([shared_all[i] for i in o], shared_all, 3)["wap"], 12)
        for o in _tie_orders(distances)
    }
    assert len(values) > 1


@pytest.mark.parametrize("seed", range(4))
def test_index_order_metrics_follow_the_formulas(seed):
    rng = np.random.default_rng(seed)
    queries = (rng.random((5, 6)) < 0.4).astype(np.uint8)
    database = (rng.random((15, 6)) < 0.4).astype(np.uint8)
    order = np.argsort(rng.random((5, 15)), axis=1)
    k = 6
    shared = relevance.shared(queries, database)
    refs = [_ref_all([int(shared[q, i]) for i in order[q]], list(shared[q]), k) for q in range(5)]
    levels = np.stack([np.bincount(shared[q], minlength=7) for q in range(5)])
    retrieved = database[order]
    num_relevant = relevance.num_relevant(queries, database)
    common = {"query_labels": queries, "retrieved_labels": retrieved, "k": k}
    mean = {key: np.mean([r[key] for r in refs]) for key in refs[0]}
    assert metrics.ndcg_at_k(**common, level_counts=levels) == pytest.approx(mean["ndcg"])
    assert metrics.acg_at_k(**common) == pytest.approx(mean["acg"])
    assert metrics.wap_at_k(**common) == pytest.approx(mean["wap"])
    assert metrics.wap_at_k(
        **common, normalizer="min_k_r", num_relevant=num_relevant
    ) == pytest.approx(mean["wap_min_k_r"])
    assert metrics.map_at_k(**common) == pytest.approx(mean["map"])
    assert metrics.precision_at_k(**common) == pytest.approx(mean["precision"])


def test_graded_histograms_sum_shared_and_gains_per_distance():
    query = np.array([[1, 1, 0]], np.uint8)
    database = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1], [1, 1, 1]], np.uint8)
    distances = np.array([[0, 1, 1, 2]])
    shared_hist, gain_hist, levels = metrics.graded_histograms(
        query_labels=query, db_labels=database, distances=distances, max_distance=2
    )
    np.testing.assert_allclose(shared_hist, [[2, 1, 2]])
    np.testing.assert_allclose(gain_hist, [[3, 1, 3]])
    np.testing.assert_array_equal(levels, [[1, 1, 2, 0]])
    _, _, without_self = metrics.graded_histograms(
        query_labels=database,
        db_labels=database,
        distances=np.zeros((4, 4), int),
        max_distance=2,
        exclude_self=True,
    )
    np.testing.assert_array_equal(without_self[0], [1, 1, 1, 0])


def test_single_label_graded_metrics_reduce_to_the_binary_ones():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 30)
    distances = rng.integers(0, 5, (30, 30))
    common = {
        "query_labels": labels,
        "db_labels": labels,
        "distances": distances,
        "max_distance": 4,
        "exclude_self": True,
    }
    rel_hist, total_hist = metrics.distance_histograms(**common)
    shared_hist, gain_hist, levels = metrics.graded_histograms(**common)
    graded = ties.expected_graded_metrics(
        relevant_hist=rel_hist,
        total_hist=total_hist,
        shared_hist=shared_hist,
        gain_hist=gain_hist,
        level_counts=levels,
        k=10,
    )
    plain = ties.expected_metrics(relevant_hist=rel_hist, total_hist=total_hist, k=10)
    assert graded["wap@10"] == pytest.approx(plain["map@10"], abs=1e-12)
    assert graded["wap@10_min_k_r"] == pytest.approx(plain["map@10_min_k_r"], abs=1e-12)
    assert graded["acg@10"] == pytest.approx(plain["precision@10"], abs=1e-12)
