"""The results table with multi-hot labels: kNN reference row and summary columns."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpsh_tf2.evaluation.report import compute_report
from hpsh_tf2.table import knn_metrics, report_columns, summary_markdown


def _ref(query_labels, db_labels, query, database, k):
    """Per query: rank by cosine (ties by index), then the formulas of DSRH / NDCG."""
    values = {"map": [], "ndcg": [], "acg": [], "wap": []}
    for q in range(len(query)):
        sims = [(-float(query[q] @ database[i]), i) for i in range(len(database)) if i != q]
        order = [i for _, i in sorted(sims)]
        shared = [int(np.sum(query_labels[q] & db_labels[i])) for i in order]
        top = shared[:k]
        rel = [s > 0 for s in top]
        hits = sum(rel)
        ap = sum(rel[j] * sum(rel[: j + 1]) / (j + 1) for j in range(k))
        wap = sum(rel[j] * sum(top[: j + 1]) / (j + 1) for j in range(k))
        dcg = sum((2 ** top[j] - 1) / math.log2(j + 2) for j in range(k))
        ideal = sorted(shared, reverse=True)[:k]
        idcg = sum((2 ** ideal[j] - 1) / math.log2(j + 2) for j in range(k))
        values["map"].append(ap / hits if hits else 0.0)
        values["wap"].append(wap / hits if hits else 0.0)
        values["acg"].append(sum(top) / k)
        values["ndcg"].append(dcg / idcg if idcg else 0.0)
    return {key: float(np.mean(v)) for key, v in values.items()}


def test_knn_metrics_multi_label_follow_the_formulas():
    rng = np.random.default_rng(0)
    labels = (rng.random((30, 5)) < 0.3).astype(np.uint8)
    labels[np.arange(30), rng.integers(0, 5, 30)] = 1
    x = rng.normal(size=(30, 8)) + labels @ rng.normal(size=(5, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    got = knn_metrics(x, labels, x, labels, exclude_self=True, k=6)
    ref = _ref(labels, labels, x, x, 6)
    for key in ("map", "ndcg", "acg", "wap"):
        assert got[f"{key}@6"] == pytest.approx(ref[key]), key


def test_knn_metrics_single_label_keep_their_keys():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 20)
    x = rng.normal(size=(20, 4))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    got = knn_metrics(x, labels, x, labels, exclude_self=True, k=5)
    assert set(got) == {"map@5", "map@r", "precision@5", "recall@5"}


def test_summary_has_the_multi_label_columns():
    row = {
        "bits": 32,
        "sampler": "hpsh",
        "seed": 42,
        **{f"{key}@20": 0.5 for key in ("map", "ndcg", "acg", "wap")},
        **{f"knn_{key}@20": 0.25 for key in ("map", "ndcg", "acg", "wap")},
    }
    text = summary_markdown([row, {**row, "seed": 43, "ndcg@20": 0.7}], 20)
    assert text.splitlines()[0] == (
        "| bits | rank | method | seeds | map@20 | ndcg@20 | acg@20 | wap@20 | Δ map@20 vs best |"
    )
    assert "| 32 | 1 | hpsh | 2 | 0.5000 ± 0.0000 | 0.6000 ± 0.1414 |" in text
    assert "| float | | cosine kNN (reference) | 2 | 0.2500 ± 0.0000 |" in text


def test_report_columns_of_a_multi_label_report_feed_the_summary():
    rng = np.random.default_rng(2)
    labels = (rng.random((40, 4)) < 0.4).astype(np.uint8)
    labels[np.arange(40), rng.integers(0, 4, 40)] = 1
    codes = rng.integers(0, 2, (40, 16)).astype(np.uint8)
    report, _ = compute_report(
        query_codes=codes,
        query_labels=labels,
        db_codes=codes,
        db_labels=labels,
        k=5,
        exclude_self=True,
    )
    columns = report_columns(report, 5)
    assert {"map@5", "ndcg@5", "acg@5", "wap@5"} <= set(columns)
    assert columns["ndcg@5"] == report["ndcg@5"]
    row = {"bits": 16, "sampler": "hpsh", "seed": 1, **columns}
    row.update({f"knn_{key}": 0.0 for key in columns})
    assert "| ndcg@5 |" in summary_markdown([row], 5)
