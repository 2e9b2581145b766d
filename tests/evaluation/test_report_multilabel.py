"""The retrieval report with multi-hot labels: one code path with the single-label report."""

from __future__ import annotations

import numpy as np
import pytest

from hpsh_tf2.evaluation import metrics, relevance
from hpsh_tf2.evaluation.report import compute_report


def _codes_and_labels(seed=0, rows=60, classes=5, bits=16):
    rng = np.random.default_rng(seed)
    labels = (rng.random((rows, classes)) < 0.3).astype(np.uint8)
    labels[np.arange(rows), rng.integers(0, classes, rows)] = 1
    codes = rng.integers(0, 2, (rows, bits)).astype(np.uint8)
    return codes, labels


def test_one_hot_labels_give_the_single_label_report():
    codes, _ = _codes_and_labels()
    single = np.random.default_rng(1).integers(0, 4, len(codes))
    common = {"query_codes": codes, "db_codes": codes, "k": 8, "exclude_self": True}
    plain, _ = compute_report(**common, query_labels=single, db_labels=single)
    one_hot = np.eye(4, dtype=np.uint8)[single]
    multi, _ = compute_report(**common, query_labels=one_hot, db_labels=one_hot)
    for key, value in plain.items():
        if isinstance(value, float):
            assert multi[key] == pytest.approx(value, abs=1e-12), key
    # with one label per item the graded metrics reduce to the binary ones
    assert multi["wap@8"] == pytest.approx(plain["map@8"], abs=1e-12)
    assert multi["acg@8"] == pytest.approx(plain["precision@8"], abs=1e-12)


@pytest.mark.parametrize("limit", [10**9, 1])
def test_multi_label_index_keys_follow_the_ranked_results(limit):
    codes, labels = _codes_and_labels(2)
    report, result = compute_report(
        query_codes=codes,
        query_labels=labels,
        db_codes=codes,
        db_labels=labels,
        k=10,
        exclude_self=True,
        full_ranking_limit=limit,
    )
    assert report["labels"] == "multi"
    assert list(report)[:4] == ["map@10", "ndcg@10", "acg@10", "wap@10"]
    retrieved = labels[result.indices][:, :10]
    shared = relevance.ranked_shared(labels, retrieved)
    # ACG by hand: the mean number of shared labels of the top 10
    assert report["acg@10_index"] == pytest.approx(shared.mean())
    assert report["map@10_index"] == pytest.approx(
        metrics.map_at_k(query_labels=labels, retrieved_labels=retrieved, k=10)
    )
    num_relevant = relevance.num_relevant(labels, labels, exclude_self=True)
    assert report["recall@10_index"] == pytest.approx(
        np.mean((shared >= 1).sum(1) / np.maximum(num_relevant, 1) * (num_relevant > 0))
    )
    assert 0.0 < report["ndcg@10"] <= 1.0
