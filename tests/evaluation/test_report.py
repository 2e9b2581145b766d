"""Tests of hpsh_tf2.evaluation.report against an independent brute-force evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hpsh_tf2.evaluation import ties as T
from hpsh_tf2.evaluation.report import compute_report, format_report_table

HEADLINE = ("map@{k}", "map@{k}_min_k_r", "precision@{k}", "recall@{k}", "map@r")


def _clustered(num_items, bits, classes, flip, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, num_items)
    centers = rng.integers(0, 2, (classes, bits), dtype=np.uint8)
    noise = (rng.random((num_items, bits)) < flip).astype(np.uint8)
    return centers[labels] ^ noise, labels


def _reference(query, query_labels, db, db_labels, k, exclude_self, radius):
    """Brute force with per-query Python loops, following the metric definitions."""
    dist = (query[:, None, :] != db[None, :, :]).sum(-1)
    top, hist, total = [], [], []
    out = {"map": [], "min": [], "p": [], "r": [], "mapr": [], "seed": [], "prad": []}
    for q in range(query.shape[0]):
        keep = [j for j in range(db.shape[0]) if not (exclude_self and j == q)]
        same = [j for j in keep if db_labels[j] == query_labels[q]]
        hist.append(np.bincount(dist[q, same], minlength=query.shape[1] + 1))
        total.append(np.bincount(dist[q, keep], minlength=query.shape[1] + 1))
        ranked = sorted(keep, key=lambda j: (dist[q, j], j))
        top.append(ranked[: k + 1])
        labels = [db_labels[j] for j in ranked]
        rel = [label == query_labels[q] for label in labels]
        total_rel = sum(rel)
        hits, ap = 0, 0.0
        for j in range(k):
            if rel[j]:
                hits += 1
                ap += hits / (j + 1)
        out["map"].append(ap / hits if hits else 0.0)
        out["min"].append(ap / min(k, total_rel) if total_rel else 0.0)
        out["p"].append(hits / k)
        out["r"].append(hits / total_rel if total_rel else 0.0)
        hits, ap = 0, 0.0
        for j in range(total_rel):
            if rel[j]:
                hits += 1
                ap += hits / (j + 1)
        out["mapr"].append(ap / total_rel if total_rel else 0.0)
        hits, ap = 0, 0.0
        for j in range(1, k + 1):
            if labels[j] == labels[0]:
                hits += 1
                ap += hits / j
        out["seed"].append(ap / hits if hits else 0.0)
        within = [j for j in keep if dist[q, j] <= radius]
        good = sum(db_labels[j] == query_labels[q] for j in within)
        out["prad"].append(good / len(within) if within else 0.0)
    means = {key: float(np.mean(values)) for key, values in out.items()}
    return means, np.array(top), np.array(hist), np.array(total)


@pytest.mark.parametrize("exclude_self", [True, False])
def test_report_matches_brute_force(exclude_self):
    codes, labels = _clustered(160, 16, 6, 0.2, seed=1)
    query, query_labels = (codes, labels) if exclude_self else (codes[:50], labels[:50])
    if not exclude_self:
        query = query ^ (np.random.default_rng(9).random(query.shape) < 0.1).astype(np.uint8)
    report, result = compute_report(
        query_codes=query,
        query_labels=query_labels,
        db_codes=codes,
        db_labels=labels,
        k=10,
        exclude_self=exclude_self,
        radius=3,
    )
    ref, top, hist, total = _reference(query, query_labels, codes, labels, 10, exclude_self, 3)
    assert report["map@10_index"] == pytest.approx(ref["map"])
    assert report["map@10_min_k_r_index"] == pytest.approx(ref["min"])
    assert report["precision@10_index"] == pytest.approx(ref["p"])
    assert report["recall@10_index"] == pytest.approx(ref["r"])
    assert report["map@r_index"] == pytest.approx(ref["mapr"])
    # Tie-aware values from histograms counted here, one query at a time.
    args = {"relevant_hist": hist, "total_hist": total}
    expected = {
        "map@10": T.expected_map_at_k(**args, k=10),
        "map@10_min_k_r": T.expected_map_at_k(**args, k=10, normalizer="min_k_r"),
        "precision@10": T.expected_precision_at_k(**args, k=10),
        "recall@10": T.expected_recall_at_k(**args, k=10),
        "map@r": T.expected_map_at_r(**args),
    }
    for key, value in expected.items():
        assert report[key] == report[f"{key}_expected"] == pytest.approx(value, abs=1e-12), key
    assert report["ties"] == "expected"
    assert report["tied_cut@10"] == T.tied_cut_fraction(total_hist=total, k=10) > 0
    assert report["seed_map@10"] == pytest.approx(ref["seed"])
    assert report["precision@radius3"] == pytest.approx(ref["prad"])
    assert report["pr_curve"]["precision"][3] == pytest.approx(ref["prad"])
    assert len(report["pr_curve"]["radius"]) == 17
    assert report["pr_curve"]["recall"][-1] == pytest.approx(1.0)
    assert report["bits"] == 16 and report["num_database"] == 160
    assert report["num_queries"] == query.shape[0]
    assert report["exclude_self"] is exclude_self and report["ranking"] == "full"
    np.testing.assert_array_equal(result.indices, top)
    json.dumps(report)  # JSON-ready


@pytest.mark.parametrize("backend", ["tf", "numpy"])
def test_search_route_equals_full_ranking_route(backend):
    codes, labels = _clustered(300, 24, 5, 0.25, seed=2)
    args = {
        "query_codes": codes,
        "query_labels": labels,
        "db_codes": codes,
        "db_labels": labels,
        "k": 20,
        "exclude_self": True,
        "backend": backend,
    }
    full, full_result = compute_report(**args)
    searched, searched_result = compute_report(**args, full_ranking_limit=0)
    assert full["ranking"] == "full" and searched["ranking"] == "search"
    for key in full:
        if key != "ranking":
            assert searched[key] == full[key], key
    np.testing.assert_array_equal(full_result.indices, searched_result.indices)
    np.testing.assert_array_equal(full_result.distances, searched_result.distances)
    assert full_result.indices.shape == (300, 21)


@pytest.mark.parametrize("ties", ["expected", "index"])
def test_ties_selects_the_headline_and_keeps_both_variants(ties):
    codes, labels = _clustered(120, 16, 4, 0.25, seed=5)
    report, _ = compute_report(
        query_codes=codes,
        query_labels=labels,
        db_codes=codes,
        db_labels=labels,
        k=10,
        exclude_self=True,
        ties=ties,
    )
    assert report["ties"] == ties
    names = [name.format(k=10) for name in HEADLINE]
    assert list(report)[:5] == names
    for name in names:
        assert report[name] == report[f"{name}_{ties}"]
    # Ties matter here, so the two variants differ somewhere.
    assert any(report[f"{n}_expected"] != report[f"{n}_index"] for n in names)
    assert report["seed_map@10"] >= 0.0


def test_tie_aware_values_do_not_depend_on_storage_order():
    codes, labels = _clustered(200, 16, 4, 0.25, seed=6)
    order = np.lexsort((np.arange(200), labels))  # stored by label, as the datasets are
    codes, labels = codes[order], labels[order]
    query, query_labels = codes[:40] ^ (np.arange(16) % 5 == 0), labels[:40]
    perm = np.random.default_rng(0).permutation(200)
    args = {"query_codes": query, "query_labels": query_labels, "k": 20, "exclude_self": False}
    stored, _ = compute_report(**args, db_codes=codes, db_labels=labels)
    shuffled, _ = compute_report(**args, db_codes=codes[perm], db_labels=labels[perm])
    names = [name.format(k=20) for name in HEADLINE]
    for name in names:
        assert shuffled[name] == stored[name], name
        assert shuffled[f"{name}_expected"] == stored[f"{name}_expected"], name
    assert shuffled["tied_cut@20"] == stored["tied_cut@20"] > 0.5
    # Index order follows the storage order: some value moves.
    assert any(shuffled[f"{n}_index"] != stored[f"{n}_index"] for n in names)
    # Paper protocol: shuffling the whole set permutes the queries too (same mean).
    paper = {"k": 20, "exclude_self": True}
    stored, _ = compute_report(
        query_codes=codes, query_labels=labels, db_codes=codes, db_labels=labels, **paper
    )
    shuffled, _ = compute_report(
        query_codes=codes[perm],
        query_labels=labels[perm],
        db_codes=codes[perm],
        db_labels=labels[perm],
        **paper,
    )
    for name in names:
        assert shuffled[name] == pytest.approx(stored[name], abs=1e-12), name


def test_format_report_table_lists_scalars_and_curve():
    codes, labels = _clustered(60, 8, 3, 0.1, seed=3)
    report, _ = compute_report(
        query_codes=codes,
        query_labels=labels,
        db_codes=codes,
        db_labels=labels,
        k=5,
        exclude_self=True,
    )
    table = format_report_table(report)
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "value"]
    assert any(line.split() == ["map@5", f"{report['map@5']:.4f}"] for line in lines)
    assert any(line.split() == ["bits", "8"] for line in lines)
    assert any(line.split() == ["ties", "expected"] for line in lines)
    assert any(line.split() == ["map@5_index", f"{report['map@5_index']:.4f}"] for line in lines)
    assert "radius  precision  recall" in table
    assert "pr_curve" not in table
    with pytest.raises(TypeError, match="list"):
        format_report_table([])


def test_report_validation():
    codes, labels = _clustered(30, 8, 3, 0.1, seed=4)
    args = {"query_codes": codes, "query_labels": labels, "db_codes": codes, "db_labels": labels}
    with pytest.raises(ValueError, match="not db_labels"):
        compute_report(**{**args, "query_labels": labels[::-1]}, k=3, exclude_self=True)
    with pytest.raises(ValueError, match="k=29"):
        compute_report(**args, k=29, exclude_self=True)
    with pytest.raises(ValueError, match="ties='random'"):
        compute_report(**args, k=3, exclude_self=True, ties="random")
    with pytest.raises(ValueError, match="radius=9"):
        compute_report(**args, k=3, exclude_self=True, radius=9)
    with pytest.raises(ValueError, match="expected 0/1"):
        compute_report(**{**args, "db_codes": codes * 3}, k=3, exclude_self=False)
    with pytest.raises(ValueError, match=r"expected \(30,\)"):
        compute_report(**{**args, "db_labels": labels[:5]}, k=3, exclude_self=False)
    with pytest.raises(ValueError, match="same number of bits"):
        compute_report(
            **{**args, "query_codes": np.zeros((30, 16), np.uint8)}, k=3, exclude_self=False
        )
