"""Tests for hpsh_tf2.table (``cli.py table``): a tiny grid on generated features."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from hpsh_tf2 import cli
from hpsh_tf2.config import ConfigError, load_config
from hpsh_tf2.data.split import make_split
from hpsh_tf2.dataset import Prepared, scan_from_features
from hpsh_tf2.features import load_feature_file
from hpsh_tf2.table import TableError, knn_reference, results_table, summary_markdown

FAST = (
    "train.epochs=1",
    "train.steps_per_epoch=4",
    "train.samples_per_class=3",
    "train.learning_rate=0.001",
    "model.hidden_units=[32]",
    "data.split.train=0.5",
    "data.split.val=0.1",
    "data.split.test=0.4",
    "eval.k=5",
)


@pytest.fixture(scope="module")
def features_npz(tmp_path_factory):
    """Six classes x 20 rows of 24-d features around class centres."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, 24))
    labels = np.repeat(np.arange(6), 20).astype(np.int32)
    features = centres[labels] + 0.8 * rng.normal(size=(labels.size, 24))
    paths = np.asarray([f"c{label}/img_{i:03d}.png" for i, label in enumerate(labels)])
    path = tmp_path_factory.mktemp("table") / "features.npz"
    np.savez(
        path,
        features=features.astype(np.float32),
        labels=labels,
        paths=paths,
        class_names=np.asarray([f"class{i}" for i in range(6)]),
    )
    return path


def _config(features_npz, workdir, *extra):
    return load_config(
        None, [*FAST, f"data.features={features_npz}", f"output.workdir={workdir}", *extra]
    )


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_table_grid_writes_csv_markdown_png_and_resumes(features_npz, tmp_path):
    config = _config(features_npz, tmp_path)
    lines: list[str] = []
    out = results_table(
        config, bits=(16, 32), methods=("hpsh", "random"), seeds=(1, 2), echo=lines.append
    )
    rows = _rows(out / "results.csv")
    assert len(rows) == 8
    assert {(r["bits"], r["sampler"], r["seed"]) for r in rows} == {
        (b, m, s) for b in ("16", "32") for m in ("hpsh", "random") for s in ("1", "2")
    }
    for row in rows:
        assert 0.0 <= float(row["map@5"]) <= 1.0 and 0.0 <= float(row["knn_map@5"]) <= 1.0
    assert {r["method"] for r in rows} == {"hpsh", "random"} and {r["loss"] for r in rows} == {
        "hpsh"
    }
    # The markdown summary is the mean +- sample std of the CSV, per (bits, method).
    markdown = (out / "results.md").read_text()
    group = [float(r["map@5"]) for r in rows if r["bits"] == "32" and r["method"] == "random"]
    expected = f"{np.mean(group):.4f} ± {np.std(group, ddof=1):.4f}"
    line = next(x for x in markdown.splitlines() if x.startswith("| 32 |") and "| random |" in x)
    assert expected in line
    assert "cosine kNN (reference)" in markdown
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    progress = [x for x in lines if x.startswith("[")]
    assert len(progress) == 8 and progress[0].startswith("[1/8] bits=16 method=hpsh seed=1")

    # A rerun skips finished cells; a cell whose row is missing (killed) runs again.
    killed = out / "cells" / "bits32-random-seed2" / "row.json"
    before = json.loads(killed.read_text())
    killed.unlink()
    lines.clear()
    results_table(  # the deprecated --samplers spelling names the same cells
        config, bits=(16, 32), samplers=("hpsh", "random"), seeds=(1, 2), echo=lines.append
    )
    progress = [x for x in lines if x.startswith("[")]
    assert sum("done earlier" in x for x in progress) == 7
    again = json.loads(killed.read_text())
    assert again["map@5"] == pytest.approx(before["map@5"], abs=1e-6)  # same seeds, same run


def test_table_rejects_bad_grids_before_any_work(features_npz, tmp_path):
    config = _config(features_npz, tmp_path)
    with pytest.raises(TableError, match="at least one"):
        results_table(config, bits=(), samplers=("hpsh",), seeds=(1,))
    with pytest.raises(ConfigError, match=r"sampler\.mode"):
        results_table(config, bits=(16,), samplers=("nope",), seeds=(1,))
    with pytest.raises(TableError, match=r"--methods 'nope'.*dpsh"):
        results_table(config, bits=(16,), methods=("nope",), seeds=(1,))
    with pytest.raises(ConfigError, match=r"model\.bits"):
        results_table(config, bits=(12,), samplers=("hpsh",), seeds=(1,))
    assert not (tmp_path / "table").exists()


def test_knn_reference_matches_a_per_query_loop(features_npz):
    features = load_feature_file(features_npz)
    scan = scan_from_features(features, features_npz)
    split = make_split(
        scan.paths, scan.labels, scan.class_names, train=0.5, val=0.1, test=0.4, seed=5
    )
    prepared = Prepared(scan, split, True, features)
    got = knn_reference(prepared, protocol="paper", k=5)
    rows = prepared.feature_rows()["test"].astype(np.float64)
    labels = prepared.subset_labels("test")
    aps, precisions = [], []
    for q in range(len(rows)):
        others = [i for i in range(len(rows)) if i != q]
        cos = [
            rows[q] @ rows[i] / np.linalg.norm(rows[q]) / np.linalg.norm(rows[i]) for i in others
        ]
        ranked = [others[i] for i in sorted(range(len(others)), key=lambda j: (-cos[j], j))][:5]
        rel = [int(labels[i] == labels[q]) for i in ranked]
        hits = np.cumsum(rel)
        ap = sum(r * hits[j] / (j + 1) for j, r in enumerate(rel)) / max(hits[-1], 1)
        aps.append(ap if hits[-1] else 0.0)
        precisions.append(hits[-1] / 5)
    assert got["map@5"] == pytest.approx(np.mean(aps), abs=1e-12)
    assert got["precision@5"] == pytest.approx(np.mean(precisions), abs=1e-12)


def test_summary_markdown_single_seed_has_zero_std():
    rows = [
        {
            "bits": 16,
            "sampler": "hpsh",
            "seed": 1,
            "map@5": 0.5,
            "map@r": 0.4,
            "precision@5": 0.3,
            "knn_map@5": 0.6,
            "knn_map@r": 0.5,
            "knn_precision@5": 0.4,
        },
    ]
    text = summary_markdown(rows, 5)
    assert (
        "| 16 | 1 | hpsh | 1 | 0.5000 ± 0.0000 | 0.4000 ± 0.0000 | 0.3000 ± 0.0000 | best |" in text
    )
    assert "| float | | cosine kNN (reference) | 1 | 0.6000 ± 0.0000" in text


def test_summary_markdown_ranks_methods_and_marks_the_seed_spread():
    def row(method, seed, value):
        return {
            "bits": 32,
            "method": method,
            "sampler": "",
            "seed": seed,
            "map@5": value,
            "map@r": value,
            "precision@5": value,
            "knn_map@5": 0.5,
            "knn_map@r": 0.4,
            "knn_precision@5": 0.3,
        }

    values = {"a": (0.80, 0.82, 0.84), "b": (0.81, 0.83, 0.85), "c": (0.60, 0.61, 0.62)}
    rows = [row(m, s, v) for m, vs in values.items() for s, v in enumerate(vs)]
    lines = [x for x in summary_markdown(rows, 5).splitlines() if x.startswith("| 32 |")]
    assert [x.split(" | ")[2] for x in lines] == ["b", "a", "c"]  # ranked by mean
    assert lines[0].endswith("| best |")
    # a: gap -0.01, stds 0.02 each -> within sqrt(2) * 0.02; c: gap -0.22 -> outside
    assert lines[1].endswith("| -0.0100 ≈ |") and lines[2].endswith("| -0.2200 |")


def test_cli_table_verb(features_npz, tmp_path, capsys):
    argv = ["table", "--bits", "16", "--methods", "random", "--seeds", "7"]
    for item in (*FAST, f"data.features={features_npz}", f"output.workdir={tmp_path}"):
        argv += ["--set", item]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "[1/1] bits=16 method=random seed=7" in out
    assert len(_rows(tmp_path / "table" / "results.csv")) == 1


def test_cli_table_rejects_a_malformed_list(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["table", "--bits", "16,x"])
    assert exit_info.value.code == 2
    assert "comma-separated integers" in capsys.readouterr().err


def test_table_methods_train_baselines_with_their_presets(features_npz, tmp_path):
    config = _config(features_npz, tmp_path)
    out = results_table(
        config, bits=(16,), methods=("csq", "greedyhash"), seeds=(3,), echo=lambda _: None
    )
    rows = {r["method"]: r for r in _rows(out / "results.csv")}
    assert set(rows) == {"csq", "greedyhash"}
    assert rows["csq"]["loss"] == "csq" and rows["csq"]["sampler"] == ""
    for row in rows.values():
        assert 0.0 <= float(row["map@5"]) <= 1.0
