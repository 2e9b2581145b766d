"""Tests of hpsh_tf2.data.split."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from hpsh_tf2.data.scan import scan_dataset
from hpsh_tf2.data.split import (
    Split,
    Subset,
    check_split_matches,
    load_split,
    make_split,
    prepare_split,
    save_split,
    split_counts,
    split_table,
)
from hpsh_tf2.errors import DatasetError
from tests.data.conftest import make_class_tree, noisy_rgb, write_image

# AID's 30 class sizes (Xia et al. 2017), 10,000 images in all.
AID_COUNTS = [
    360,
    310,
    220,
    400,
    360,
    260,
    240,
    350,
    410,
    300,
    370,
    250,
    390,
    280,
    290,
    340,
    350,
    390,
    370,
    420,
    380,
    260,
    290,
    410,
    300,
    300,
    330,
    290,
    360,
    420,
]


def _synthetic(counts: list[int]) -> tuple[list[str], np.ndarray, list[str]]:
    names = [f"class{c:02d}" for c in range(len(counts))]
    paths = [f"{names[c]}/img_{i:04d}.jpg" for c, n in enumerate(counts) for i in range(n)]
    labels = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
    return paths, labels, names


def _all_pairs(split: Split) -> list[tuple[str, int]]:
    return [(p, int(v)) for s in split.subsets.values() for p, v in zip(s.paths, s.labels)]


def test_split_disjoint_and_covering() -> None:
    paths, labels, names = _synthetic([10, 7, 13])
    split = make_split(paths, labels, names, train=0.5, val=0.2, test=0.3, seed=3)
    pairs = _all_pairs(split)
    assert len(pairs) == len(set(pairs)) == len(paths)
    assert sorted(pairs) == sorted(zip(paths, labels.tolist()))
    for subset in split.subsets.values():
        for path, label in zip(subset.paths, subset.labels):
            assert path.startswith(names[label] + "/")
        keys = list(zip(subset.labels.tolist(), subset.paths))
        assert keys == sorted(keys)


@pytest.mark.parametrize(
    ("n", "fractions", "expected"),
    [
        (100, (0.6, 0.0, 0.4), (60, 0, 40)),
        (10, (0.6, 0.0, 0.4), (6, 0, 4)),
        (7, (0.6, 0.0, 0.4), (5, 0, 2)),  # ceil(4.2) = 5 train+val
        (10, (0.5, 0.2, 0.3), (5, 2, 3)),
        (7, (0.5, 0.25, 0.25), (4, 2, 1)),  # ceil(5.25)=6, val round(1.75)=2
        (6, (0.5, 0.25, 0.25), (3, 2, 1)),  # val 1.5 rounds half up
        (5, (0.8, 0.0, 0.2), (4, 0, 1)),
        (9, (0.75, 0.0, 0.25), (7, 0, 2)),  # ceil(6.75) = 7
    ],
)
def test_split_counts_rule(n: int, fractions: tuple[float, float, float], expected) -> None:
    paths, labels, names = _synthetic([n])
    train, val, test = fractions
    split = make_split(paths, labels, names, train=train, val=val, test=test, seed=0)
    got = tuple(len(split.subsets[k]) for k in ("train", "val", "test"))
    assert got == expected


def test_split_aid_counts_exact_60_40() -> None:
    paths, labels, names = _synthetic(AID_COUNTS)
    split = make_split(paths, labels, names, train=0.6, val=0.0, test=0.4, seed=1)
    assert (len(split.subsets["train"]), len(split.subsets["test"])) == (6000, 4000)
    for name, count in zip(names, AID_COUNTS):
        per = split_counts(split)[name]
        assert (per["train"], per["val"], per["test"]) == (count * 6 // 10, 0, count * 4 // 10)


def test_split_every_aid_like_size_exact() -> None:
    counts = list(range(220, 421, 10))
    paths, labels, names = _synthetic(counts)
    split = make_split(paths, labels, names, seed=5)
    for name, count in zip(names, counts):
        per = split.counts()[name]
        assert per["train"] == math.ceil(0.6 * count - 1e-9) == count * 6 // 10
        assert per["test"] == count * 4 // 10


def test_split_deterministic_and_order_independent() -> None:
    paths, labels, names = _synthetic([12, 9])
    first = make_split(paths, labels, names, seed=42)
    order = np.random.default_rng(0).permutation(len(paths))
    shuffled = make_split([paths[i] for i in order], labels[order], names, seed=42)
    assert first == shuffled
    assert make_split(paths, labels, names, seed=43) != first


def test_split_seeds_give_different_but_valid_splits() -> None:
    paths, labels, names = _synthetic([20, 20])
    trains = {make_split(paths, labels, names, seed=s).subsets["train"].paths for s in range(5)}
    assert len(trains) == 5


def test_split_aid_sample(aid_sample_root: Path) -> None:
    scan = scan_dataset(aid_sample_root, verify=False)
    split = make_split(scan.paths, scan.labels, scan.class_names, seed=0)
    assert len(split.class_names) == 30
    for per in split.counts().values():
        assert per == {"train": 6, "val": 0, "test": 4}


def test_split_class_too_small_names_class() -> None:
    paths, labels, names = _synthetic([10, 1])
    with pytest.raises(DatasetError, match=r"'class01' has 1 image"):
        make_split(paths, labels, names, seed=0)


def test_split_class_without_images_names_class() -> None:
    paths, labels, names = _synthetic([5, 5])
    with pytest.raises(DatasetError, match=r"'extra' has 0 image"):
        make_split(paths, labels, [*names, "extra"], seed=0)


@pytest.mark.parametrize(
    ("train", "val", "test", "match"),
    [
        (0.6, 0.0, 0.3, "sum to 1"),
        (0.7, 0.1, 0.4, "sum to 1"),
        (0.0, 0.6, 0.4, "train > 0"),
        (1.0, 0.0, 0.0, "test > 0"),
        (1.2, -0.2, 0.0, r"train=1\.2; expected a number in \[0, 1\]"),
        (0.8, -0.2, 0.4, r"val=-0\.2"),
        ("0.6", 0.0, 0.4, "train='0.6'"),
        (0.6, None, 0.4, "val=None"),
    ],
)
def test_split_fraction_validation(train, val, test, match: str) -> None:
    paths, labels, names = _synthetic([10])
    with pytest.raises(ValueError, match=match):
        make_split(paths, labels, names, train=train, val=val, test=test, seed=0)


def test_split_sum_tolerance() -> None:
    paths, labels, names = _synthetic([10])
    split = make_split(paths, labels, names, train=0.6, val=0.1, test=0.3 + 5e-7, seed=0)
    assert len(split.subsets["test"]) == 3


@pytest.mark.parametrize("seed", [-1, 1.5, True, None])
def test_split_seed_validation(seed: object) -> None:
    paths, labels, names = _synthetic([10])
    with pytest.raises(ValueError, match="seed"):
        make_split(paths, labels, names, seed=seed)


def test_split_input_validation() -> None:
    paths, labels, names = _synthetic([10])
    with pytest.raises(ValueError, match="one label per path"):
        make_split(paths[:-1], labels, names, seed=0)
    with pytest.raises(ValueError, match="expected values"):
        make_split(paths, labels + 1, names, seed=0)
    with pytest.raises(ValueError, match="duplicate"):
        make_split([*paths[:-1], paths[0]], labels, names, seed=0)


def test_save_load_round_trip(tmp_path: Path) -> None:
    paths, labels, names = _synthetic([10, 8])
    split = make_split(paths, labels, names, train=0.5, val=0.2, test=0.3, seed=9)
    target = save_split(split, tmp_path / "sub" / "split.json")
    assert target == tmp_path / "sub" / "split.json"
    loaded = load_split(target)
    assert loaded == split
    assert loaded.fractions == {"train": 0.5, "val": 0.2, "test": 0.3}
    assert loaded.seed == 9
    raw = json.loads(target.read_text())
    assert set(raw) == {"class_names", "fractions", "seed", "subsets"}
    assert raw["subsets"]["val"]["labels"] == split.subsets["val"].labels.tolist()
    assert [p.name for p in target.parent.iterdir()] == ["split.json"]  # no temp files left


def test_save_split_replaces_existing_file(tmp_path: Path) -> None:
    paths, labels, names = _synthetic([10])
    target = tmp_path / "split.json"
    target.write_text("old")
    save_split(make_split(paths, labels, names, seed=0), target)
    assert load_split(target).seed == 0


def _valid_raw() -> dict:
    return {
        "class_names": ["a", "b"],
        "fractions": {"train": 0.5, "val": 0.0, "test": 0.5},
        "seed": 1,
        "subsets": {
            "train": {"paths": ["a/1", "b/1"], "labels": [0, 1]},
            "val": {"paths": [], "labels": []},
            "test": {"paths": ["a/2", "b/2"], "labels": [0, 1]},
        },
    }


def _broken(mutate) -> dict:
    raw = _valid_raw()
    mutate(raw)
    return raw


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (_broken(lambda r: r.pop("seed")), "missing key 'seed'"),
        (_broken(lambda r: r.update(seed="1")), "'seed' has type str"),
        (_broken(lambda r: r.update(class_names=[])), "class_names"),
        (_broken(lambda r: r["subsets"].pop("val")), r"missing key subsets\.'val'"),
        (_broken(lambda r: r["fractions"].pop("test")), r"fractions\.'test'"),
        (_broken(lambda r: r["subsets"]["test"]["labels"].append(0)), "2 entries, labels 3"),
        (_broken(lambda r: r["subsets"]["test"].update(labels=[0, 2])), r"\[0, 1\]"),
        (_broken(lambda r: r["subsets"]["test"].update(labels=[0, 1.0])), "integers"),
        (_broken(lambda r: r["subsets"]["test"].update(paths=["a/1", "b/2"])), "overlap"),
        ([1, 2], "missing key 'class_names'"),
    ],
)
def test_load_split_malformed(tmp_path: Path, raw: object, match: str) -> None:
    path = tmp_path / "split.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(DatasetError, match=match) as info:
        load_split(path)
    assert "malformed" in str(info.value)


def test_load_split_valid_minimal(tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    path.write_text(json.dumps(_valid_raw()))
    split = load_split(path)
    assert split.subsets["test"] == Subset(("a/2", "b/2"), np.array([0, 1]))


def test_load_split_not_json_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_split(path)
    with pytest.raises(DatasetError, match="does not exist"):
        load_split(tmp_path / "other.json")


# --------------------------------------------------------------------------- prepare / check


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_class_tree(tmp_path / "data", {"a": 5, "b": 5}, size=4)


def test_prepare_split_creates_then_reuses(tree: Path, tmp_path: Path) -> None:
    split_path = tmp_path / "work" / "split.json"
    scan = scan_dataset(tree)
    split, created = prepare_split(scan, split_path, train=0.6, val=0.0, test=0.4, seed=4)
    assert created is True
    assert split_path.is_file()
    again, created_again = prepare_split(scan, split_path, train=0.6, val=0.0, test=0.4, seed=4)
    assert created_again is False
    assert again == split


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"train": 0.6, "val": 0.0, "test": 0.4, "seed": 5}, "seed=4"),
        ({"train": 0.4, "val": 0.2, "test": 0.4, "seed": 4}, "fractions"),
    ],
)
def test_prepare_split_rejects_other_parameters(
    tree: Path, tmp_path: Path, kwargs: dict, match: str
) -> None:
    split_path = tmp_path / "split.json"
    scan = scan_dataset(tree)
    prepare_split(scan, split_path, train=0.6, val=0.0, test=0.4, seed=4)
    with pytest.raises(DatasetError, match=match):
        prepare_split(scan, split_path, **kwargs)


def test_check_split_file_deleted(tree: Path, tmp_path: Path) -> None:
    split, _ = prepare_split(scan_dataset(tree), tmp_path / "split.json", seed=0)
    (tree / "a" / "a_002.png").unlink()
    with pytest.raises(DatasetError) as info:
        prepare_split(scan_dataset(tree), tmp_path / "split.json", seed=0)
    message = str(info.value)
    assert "1 split image(s) are no longer on disk" in message
    assert "a/a_002.png" in message
    assert "Delete split.json" in message
    with pytest.raises(DatasetError, match="no longer on disk"):
        check_split_matches(split, scan_dataset(tree))


def test_check_split_file_added(tree: Path) -> None:
    split = make_split(*_scan_args(tree), seed=0)
    for i in range(5):
        write_image(tree / "b" / f"new_{i}.png", noisy_rgb(4, 4))
    with pytest.raises(DatasetError, match=r"5 image\(s\) are not in the split: .*new_0.*\.\.\."):
        check_split_matches(split, scan_dataset(tree))


def test_check_split_file_became_unreadable(tree: Path) -> None:
    split = make_split(*_scan_args(tree), seed=0)
    (tree / "a" / "a_000.png").write_bytes(b"broken")
    with pytest.raises(DatasetError, match="no longer decode"):
        check_split_matches(split, scan_dataset(tree))


def test_check_split_label_changed(tree: Path) -> None:
    split = make_split(*_scan_args(tree), seed=0)
    train = split.subsets["train"]
    wrong = train.labels.copy()
    wrong[0] = 1 - wrong[0]
    relabelled = Split(
        split.class_names,
        {**split.subsets, "train": Subset(train.paths, wrong)},
        split.fractions,
        split.seed,
    )
    with pytest.raises(DatasetError, match=r"1 image\(s\) changed class: '" + train.paths[0]):
        check_split_matches(relabelled, scan_dataset(tree))


def test_check_split_class_names_differ(tree: Path) -> None:
    split = make_split(*_scan_args(tree), seed=0)
    write_image(tree / "c" / "c_0.png", noisy_rgb(4, 4))
    with pytest.raises(DatasetError, match="class names differ"):
        check_split_matches(split, scan_dataset(tree))


def test_check_split_matches_passes(tree: Path) -> None:
    split = make_split(*_scan_args(tree), seed=0)
    check_split_matches(split, scan_dataset(tree))


def _scan_args(root: Path) -> tuple:
    scan = scan_dataset(root)
    return scan.paths, scan.labels, scan.class_names


def test_split_table(tree: Path) -> None:
    (tree / "b" / "b_004.png").write_bytes(b"x")
    scan = scan_dataset(tree)
    split = make_split(scan.paths, scan.labels, scan.class_names, seed=0)
    table = split_table(split, scan)
    lines = table.splitlines()
    assert lines[0].split() == ["class", "train", "val", "test", "skipped"]
    assert lines[2].split() == ["a", "3", "0", "2", "0"]
    assert lines[3].split() == ["b", "3", "0", "1", "1"]
    assert lines[-1].split() == ["total", "6", "0", "3", "1"]
    assert split_table(split).splitlines()[0].split() == ["class", "train", "val", "test"]
