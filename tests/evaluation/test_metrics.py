"""Tests of hpsh_tf2.evaluation.metrics: hand-derived cases and loop-based references."""

from __future__ import annotations

import numpy as np
import pytest

from hpsh_tf2.evaluation import metrics as M

# Three queries, five ranked results each.
#   q0 (label 0): retrieved 0 1 0 0 1 -> rel 1 0 1 1 0, P_j = 1, 1/2, 2/3, 3/4, 3/5
#       sum rel_j P_j = 1 + 2/3 + 3/4 = 29/12; 3 relevant retrieved; R = 4
#   q1 (label 1): retrieved 0 0 0 0 0 -> no hit; R = 3
#   q2 (label 2): retrieved 2 2 2 2 2 -> P_j = 1 everywhere, sum = 5; R = 5
QUERY = np.array([0, 1, 2])
RETRIEVED = np.array([[0, 1, 0, 0, 1], [0, 0, 0, 0, 0], [2, 2, 2, 2, 2]])
RELEVANT = np.array([4, 3, 5])


def test_map_at_k_retrieved_normaliser_hand_values():
    # AP = (29/12)/3 = 29/36, 0, 5/5 = 1.
    per_query = M.average_precision_at_k(query_labels=QUERY, retrieved_labels=RETRIEVED, k=5)
    np.testing.assert_allclose(per_query, [29 / 36, 0.0, 1.0])
    got = M.map_at_k(query_labels=QUERY, retrieved_labels=RETRIEVED, k=5)
    assert got == pytest.approx((29 / 36 + 0 + 1) / 3)


def test_map_at_k_min_k_r_normaliser_hand_values():
    # Z = min(5, R): 4, 3, 5 -> AP = (29/12)/4 = 29/48, 0, 1.
    got = M.map_at_k(
        query_labels=QUERY,
        retrieved_labels=RETRIEVED,
        k=5,
        normalizer="min_k_r",
        num_relevant=RELEVANT,
    )
    assert got == pytest.approx((29 / 48 + 0 + 1) / 3)


def test_map_at_k_uses_only_first_k_columns():
    # k = 2 on q0: rel 1 0 -> AP = 1 (retrieved) and 1/min(2, 4) = 1/2 (min_k_r).
    args = {"query_labels": QUERY[:1], "retrieved_labels": RETRIEVED[:1], "k": 2}
    assert M.map_at_k(**args) == pytest.approx(1.0)
    assert M.map_at_k(**args, normalizer="min_k_r", num_relevant=RELEVANT[:1]) == 0.5


def test_precision_and_recall_at_k_hand_values():
    # precision@5: 3/5, 0, 1; recall@5: 3/4, 0/3, 5/5.
    precision = M.precision_at_k(query_labels=QUERY, retrieved_labels=RETRIEVED, k=5)
    assert precision == pytest.approx((0.6 + 0 + 1) / 3)
    recall = M.recall_at_k(
        query_labels=QUERY, retrieved_labels=RETRIEVED, k=5, num_relevant=RELEVANT
    )
    assert recall == pytest.approx((0.75 + 0 + 1) / 3)
    # A query with R = 0 contributes recall 0.
    zero = M.recall_at_k(
        query_labels=[7], retrieved_labels=[[1, 2]], k=2, num_relevant=np.array([0])
    )
    assert zero == 0.0


def test_map_at_r_hand_values():
    # q0 label 0, R=3: ranks 1..3 rel 1 0 1 -> (1 + 2/3) / 3 = 5/9
    # q1 label 1, R=1: rank 1 rel 0 -> 0
    # q2 label 2, R=2: rel 1 1 -> (1 + 1)/2 = 1
    # q3 label 3, R=0 -> 0
    query = np.array([0, 1, 2, 3])
    retrieved = np.array([[0, 1, 0, 0], [0, 1, 1, 1], [2, 2, 0, 0], [1, 1, 1, 1]])
    got = M.map_at_r(query_labels=query, retrieved_labels=retrieved, num_relevant=[3, 1, 2, 0])
    assert got == pytest.approx((5 / 9 + 0 + 1 + 0) / 4)


def test_seed_map_uses_top1_label_as_reference_hand_values():
    # Row 0: reference = 3 (the first RETRIEVED label); ranks 2..4 = 3 1 3 -> rel 1 0 1,
    #        sum rel P = 1 + 2/3 = 5/3 over 2 hits -> 5/6.
    # Row 1: reference = 5; ranks 2..4 = 1 2 4 -> no hit -> 0.
    retrieved = np.array([[3, 3, 1, 3], [5, 1, 2, 4]])
    assert M.seed_map_at_k(retrieved_labels=retrieved, k=3) == pytest.approx((5 / 6 + 0) / 2)
    # The query label plays no role: a wrong but self-consistent list scores 1 while the
    # query-label mAP of the same list is 0.
    consistent = np.array([[4, 4, 4, 4]])
    assert M.seed_map_at_k(retrieved_labels=consistent, k=3) == 1.0
    assert M.map_at_k(query_labels=[0], retrieved_labels=consistent, k=3) == 0.0


def _pr_reference(query_labels, db_labels, dist, max_radius, exclude_self, empty):
    """Loop-based precision/recall by radius (macro average)."""
    precision, recall = [], []
    for radius in range(max_radius + 1):
        p_values, r_values = [], []
        for q in range(len(query_labels)):
            keep = [j for j in range(len(db_labels)) if not (exclude_self and j == q)]
            within = [j for j in keep if dist[q, j] <= radius]
            relevant = [j for j in keep if db_labels[j] == query_labels[q]]
            hits = sum(1 for j in within if db_labels[j] == query_labels[q])
            if within:
                p_values.append(hits / len(within))
            elif empty == "zero":
                p_values.append(0.0)
            r_values.append(hits / len(relevant) if relevant else 0.0)
        precision.append(np.mean(p_values) if p_values else 0.0)
        recall.append(np.mean(r_values))
    return np.array(precision), np.array(recall)


def test_precision_recall_by_radius_hand_values():
    # q0 label 0 vs db labels 0 0 1 1 at distances 0 2 1 3 (R = 2):
    #   r=0: {0} tp 1/1, R 1/2; r=1: {0,2} 1/2, 1/2; r=2: {0,1,2} 2/3, 1; r=3: all 2/4, 1
    # q1 label 1 at distances 3 3 2 3 (R = 2):
    #   r=0,1: nothing within -> precision 0 ("zero") or left out ("exclude"), recall 0
    #   r=2: {2} 1/1, 1/2; r=3: all 2/4, 1
    query = np.array([0, 1])
    db = np.array([0, 0, 1, 1])
    dist = np.array([[0, 2, 1, 3], [3, 3, 2, 3]])
    args = {"query_labels": query, "db_labels": db, "distances": dist, "max_radius": 3}
    precision, recall = M.precision_recall_by_radius(**args)
    np.testing.assert_allclose(precision, [0.5, 0.25, (2 / 3 + 1) / 2, 0.5])
    np.testing.assert_allclose(recall, [0.25, 0.25, 0.75, 1.0])
    precision, _ = M.precision_recall_by_radius(**args, empty="exclude")
    np.testing.assert_allclose(precision, [1.0, 0.5, (2 / 3 + 1) / 2, 0.5])
    radius2 = M.precision_within_radius(query_labels=query, db_labels=db, distances=dist, radius=2)
    assert radius2 == pytest.approx((2 / 3 + 1) / 2)


def test_exclude_self_drops_diagonal_hand_values():
    # Query i is db item i. q0 (label 0): itself at distance 0 is dropped; the other label-0
    # item (index 1) is at distance 1 -> r=0: nothing within -> 0; r=1: 1/1.
    labels = np.array([0, 0, 1])
    dist = np.array([[0, 1, 1], [1, 0, 2], [1, 2, 0]])
    hits, items = M.distance_histograms(
        query_labels=labels, db_labels=labels, distances=dist, max_distance=2, exclude_self=True
    )
    np.testing.assert_array_equal(items, [[0, 2, 0], [0, 1, 1], [0, 1, 1]])
    np.testing.assert_array_equal(hits, [[0, 1, 0], [0, 1, 0], [0, 0, 0]])
    precision = M.precision_within_radius(
        query_labels=labels, db_labels=labels, distances=dist, radius=1, exclude_self=True
    )
    assert precision == pytest.approx((1 / 2 + 1 + 0) / 3)


def _ap_reference(query_label, ranked, k, normalizer, relevant):
    hits, total = 0, 0.0
    for j in range(k):
        if ranked[j] == query_label:
            hits += 1
            total += hits / (j + 1)
    z = hits if normalizer == "retrieved" else min(k, relevant)
    return total / z if z else 0.0


def test_random_data_against_loop_references():
    rng = np.random.default_rng(0)
    num_q, num_db, bits, k = 40, 120, 12, 10
    query_labels = rng.integers(0, 5, num_q)
    db_labels = rng.integers(0, 5, num_db)
    db_labels[:num_q] = query_labels
    dist = rng.integers(0, bits + 1, (num_q, num_db))
    ranking = np.argsort(dist, axis=1, kind="stable")
    retrieved = db_labels[ranking]
    relevant = np.array([(db_labels == label).sum() for label in query_labels])
    for normalizer in M.NORMALIZERS:
        expected = np.mean(
            [
                _ap_reference(query_labels[q], retrieved[q], k, normalizer, relevant[q])
                for q in range(num_q)
            ]
        )
        got = M.map_at_k(
            query_labels=query_labels,
            retrieved_labels=retrieved,
            k=k,
            normalizer=normalizer,
            num_relevant=relevant,
        )
        assert got == pytest.approx(expected)
    map_r = np.mean(
        [
            sum(
                np.mean(retrieved[q, : j + 1] == query_labels[q])
                for j in range(relevant[q])
                if retrieved[q, j] == query_labels[q]
            )
            / relevant[q]
            for q in range(num_q)
        ]
    )
    got_r = M.map_at_r(query_labels=query_labels, retrieved_labels=retrieved, num_relevant=relevant)
    assert got_r == pytest.approx(map_r)
    seed = np.mean(
        [_ap_reference(retrieved[q, 0], retrieved[q, 1:], k, "retrieved", 0) for q in range(num_q)]
    )
    assert M.seed_map_at_k(retrieved_labels=retrieved, k=k) == pytest.approx(seed)
    precision = np.mean([np.mean(retrieved[q, :k] == query_labels[q]) for q in range(num_q)])
    assert M.precision_at_k(
        query_labels=query_labels, retrieved_labels=retrieved, k=k
    ) == pytest.approx(precision)
    recall = np.mean(
        [np.sum(retrieved[q, :k] == query_labels[q]) / relevant[q] for q in range(num_q)]
    )
    assert M.recall_at_k(
        query_labels=query_labels, retrieved_labels=retrieved, k=k, num_relevant=relevant
    ) == pytest.approx(recall)
    for exclude_self in (False, True):
        for empty in M.EMPTY_POLICIES:
            ref_p, ref_r = _pr_reference(query_labels, db_labels, dist, bits, exclude_self, empty)
            got_p, got_r = M.precision_recall_by_radius(
                query_labels=query_labels,
                db_labels=db_labels,
                distances=dist,
                max_radius=bits,
                exclude_self=exclude_self,
                empty=empty,
            )
            np.testing.assert_allclose(got_p, ref_p)
            np.testing.assert_allclose(got_r, ref_r)


def test_min_k_r_never_exceeds_retrieved_normaliser():
    rng = np.random.default_rng(3)
    query = rng.integers(0, 4, 50)
    retrieved = rng.integers(0, 4, (50, 8))
    relevant = (retrieved == query[:, None]).sum(1) + rng.integers(0, 5, 50)
    per_retrieved = M.average_precision_at_k(query_labels=query, retrieved_labels=retrieved, k=8)
    per_min = M.average_precision_at_k(
        query_labels=query,
        retrieved_labels=retrieved,
        k=8,
        normalizer="min_k_r",
        num_relevant=relevant,
    )
    assert np.all(per_min <= per_retrieved + 1e-12)
    assert np.all((per_min >= 0) & (per_retrieved <= 1))


def test_metric_validation():
    with pytest.raises(ValueError, match="at least 6 ranked results"):
        M.map_at_k(query_labels=QUERY, retrieved_labels=RETRIEVED, k=6)
    with pytest.raises(ValueError, match="normalizer='median'"):
        M.map_at_k(query_labels=QUERY, retrieved_labels=RETRIEVED, k=5, normalizer="median")
    with pytest.raises(ValueError, match="num_relevant=None"):
        M.map_at_k(query_labels=QUERY, retrieved_labels=RETRIEVED, k=5, normalizer="min_k_r")
    with pytest.raises(ValueError, match="one row per query"):
        M.precision_at_k(query_labels=QUERY[:2], retrieved_labels=RETRIEVED, k=2)
    with pytest.raises(ValueError, match="k=0"):
        M.precision_at_k(query_labels=QUERY, retrieved_labels=RETRIEVED, k=0)
    with pytest.raises(ValueError, match="at least 6 ranked"):
        M.seed_map_at_k(retrieved_labels=RETRIEVED, k=5)
    with pytest.raises(ValueError, match="at least 5 ranked"):
        M.map_at_r(query_labels=QUERY, retrieved_labels=RETRIEVED[:, :4], num_relevant=RELEVANT)
    with pytest.raises(ValueError, match="shape"):
        M.recall_at_k(query_labels=QUERY, retrieved_labels=RETRIEVED, k=2, num_relevant=[1, 2])
    with pytest.raises(ValueError, match="max_distance=2"):
        M.distance_histograms(
            query_labels=[0], db_labels=[0, 1], distances=[[0, 3]], max_distance=2
        )
    with pytest.raises(ValueError, match=r"expected \(1, 2\)"):
        M.distance_histograms(query_labels=[0], db_labels=[0, 1], distances=[[0]], max_distance=2)
    with pytest.raises(ValueError, match="empty='skip'"):
        M.precision_recall_from_histograms(hits=[[1]], items=[[1]], empty="skip")
    with pytest.raises(ValueError, match="radius=-1"):
        M.precision_within_radius(query_labels=[0], db_labels=[0], distances=[[0]], radius=-1)
