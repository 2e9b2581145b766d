"""Multi-label splits: iterative stratification in make_split, split.json, checks, table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hpsh_tf2.data.scan import ScanResult
from hpsh_tf2.data.split import (
    SUBSET_NAMES,
    check_split_matches,
    load_split,
    make_split,
    prepare_split,
    save_split,
    split_counts,
    split_table,
)
from hpsh_tf2.errors import DatasetError

NAMES = ("Forest", "River", "Road", "Urban")


def _data(n: int = 80, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    hot = (rng.random((n, len(NAMES))) < [0.6, 0.3, 0.2, 0.1]).astype(np.uint8)
    hot[hot.sum(axis=1) == 0, 0] = 1
    return [f"patch_{i:03d}.png" for i in range(n)], hot


def _scan(paths, hot) -> ScanResult:
    return ScanResult(root="/data", class_names=NAMES, paths=tuple(paths), labels=hot)


def test_make_split_multi_label_covers_every_item_with_its_labels() -> None:
    paths, hot = _data()
    split = make_split(paths, hot, NAMES, train=0.5, val=0.2, test=0.3, seed=1)
    assert split.multi_label
    seen = {}
    for name in SUBSET_NAMES:
        subset = split.subsets[name]
        assert list(subset.paths) == sorted(subset.paths)
        assert subset.labels.shape == (len(subset), len(NAMES)) and subset.labels.dtype == np.uint8
        seen.update(zip(subset.paths, map(tuple, subset.labels)))
    assert seen == dict(zip(paths, map(tuple, hot)))
    counts = split_counts(split)
    for c, name in enumerate(NAMES):
        assert sum(counts[name].values()) == hot[:, c].sum()
        assert abs(counts[name]["train"] - 0.5 * hot[:, c].sum()) <= 1.5


def test_make_split_is_order_independent_and_seeded() -> None:
    paths, hot = _data()
    order = np.random.default_rng(5).permutation(len(paths))
    a = make_split(paths, hot, NAMES, seed=3)
    b = make_split([paths[i] for i in order], hot[order], NAMES, seed=3)
    assert a == b
    assert a != make_split(paths, hot, NAMES, seed=4)


def test_split_json_stores_label_lists_and_round_trips(tmp_path: Path) -> None:
    paths, hot = _data(20)
    split = make_split(paths, hot, NAMES, seed=0)
    target = save_split(split, tmp_path / "split.json")
    raw = json.loads(target.read_text())
    assert raw["multi_label"] is True and raw["class_names"] == list(NAMES)
    first = raw["subsets"]["train"]
    row = split.subsets["train"].labels[0]
    assert first["labels"][0] == np.flatnonzero(row).tolist()
    assert load_split(target) == split


def test_single_label_split_json_has_no_multi_label_key(tmp_path: Path) -> None:
    split = make_split(
        ["a/1", "a/2", "b/1", "b/2"], [0, 0, 1, 1], ("a", "b"), train=0.5, test=0.5, seed=0
    )
    raw = json.loads(save_split(split, tmp_path / "split.json").read_text())
    assert "multi_label" not in raw and raw["subsets"]["train"]["labels"] == [0, 1]


@pytest.mark.parametrize(
    ("labels", "match"),
    [([[]], "non-empty lists"), ([[0, 9]], r"lie in \[0, 3\]"), ([1], "non-empty lists")],
)
def test_load_split_rejects_bad_label_lists(tmp_path: Path, labels, match: str) -> None:
    raw = {
        "class_names": list(NAMES),
        "fractions": {"train": 0.6, "val": 0.0, "test": 0.4},
        "seed": 0,
        "multi_label": True,
        "subsets": {
            "train": {"paths": ["x"], "labels": labels},
            "val": {"paths": [], "labels": []},
            "test": {"paths": [], "labels": []},
        },
    }
    path = tmp_path / "split.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(DatasetError, match=match):
        load_split(path)


def test_prepare_split_reuses_and_detects_changed_labels(tmp_path: Path) -> None:
    paths, hot = _data(30)
    target = tmp_path / "split.json"
    split, created = prepare_split(_scan(paths, hot), target, seed=2)
    again, created_again = prepare_split(_scan(paths, hot), target, seed=2)
    assert created and not created_again and again == split
    changed = hot.copy()
    changed[0] = 1 - changed[0]
    if not changed[0].any():
        changed[0, 0] = 1
    with pytest.raises(DatasetError, match=r"1 image\(s\) changed class: 'patch_000.png'"):
        check_split_matches(split, _scan(paths, changed))
    with pytest.raises(DatasetError, match="the split is multi-label, the dataset single-label"):
        check_split_matches(split, _scan(paths, np.argmax(hot, axis=1)))


def test_split_table_per_label_with_images_row() -> None:
    paths, hot = _data(40)
    split = make_split(paths, hot, NAMES, train=0.5, val=0.25, test=0.25, seed=0)
    table = split_table(split).splitlines()
    assert table[0].split() == ["label", "train", "val", "test"]
    rows = {line.split()[0]: [int(v) for v in line.split()[1:]] for line in table[2:-2]}
    assert list(rows) == list(NAMES)
    for c, name in enumerate(NAMES):
        assert rows[name] == [int(split.subsets[s].labels[:, c].sum()) for s in SUBSET_NAMES]
    assert table[-1].split() == ["images", *(str(len(split.subsets[s])) for s in SUBSET_NAMES)]


def test_multi_label_split_without_test_items_is_an_error() -> None:
    with pytest.raises(DatasetError, match="no test image"):
        make_split(["a"], np.array([[1, 0, 0, 0]]), NAMES, seed=0)
