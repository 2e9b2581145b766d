"""The seeded random split of the multi-label development protocol (labels ignored)."""

from __future__ import annotations

import numpy as np
import pytest

from hpsh_tf2.data.split import random_split_indices
from hpsh_tf2.errors import DatasetError


def _paths(count):
    return [f"mosaics/mosaic_{i:05d}.jpg" for i in range(count)]


def test_sizes_follow_the_rounding_rule_and_parts_cover_every_item_once():
    parts = random_split_indices(_paths(1212), train=0.5, val=0.1, test=0.4, seed=42)
    # n_trainval = ceil(0.6 * 1212) = 728, n_val = floor(121.2 + 0.5) = 121
    assert [len(parts[n]) for n in ("train", "val", "test")] == [607, 121, 484]
    together = np.concatenate(list(parts.values()))
    np.testing.assert_array_equal(np.sort(together), np.arange(1212))


def test_the_split_depends_on_the_paths_and_seed_not_their_order():
    paths = _paths(50)
    shuffled = [paths[i] for i in np.random.default_rng(0).permutation(50)]
    first = random_split_indices(paths, train=0.6, val=0.0, test=0.4, seed=43)
    second = random_split_indices(shuffled, train=0.6, val=0.0, test=0.4, seed=43)
    for name in first:
        assert [paths[i] for i in first[name]] == [shuffled[i] for i in second[name]]
        assert [paths[i] for i in first[name]] == sorted(paths[i] for i in first[name])
    other = random_split_indices(paths, train=0.6, val=0.0, test=0.4, seed=44)
    assert set(other["test"].tolist()) != set(first["test"].tolist())


def test_the_draw_is_a_plain_permutation_of_the_sorted_paths():
    paths = _paths(10)
    parts = random_split_indices(paths, train=0.6, val=0.0, test=0.4, seed=7)
    permuted = np.random.default_rng(7).permutation(10)  # paths are already sorted
    assert set(parts["train"].tolist()) == set(permuted[:6].tolist())
    assert set(parts["test"].tolist()) == set(permuted[6:].tolist())


def test_an_empty_test_part_is_refused():
    with pytest.raises(DatasetError, match="expected at least one each"):
        random_split_indices(_paths(1), train=0.6, val=0.0, test=0.4, seed=0)


def test_make_split_random_method_round_trips_through_split_json(tmp_path):
    from hpsh_tf2.data.scan import ScanResult
    from hpsh_tf2.data.split import load_split, make_split, prepare_split

    paths = [f"c{i % 3}/img_{i:03d}.jpg" for i in range(30)]
    labels = np.arange(30) % 3
    split = make_split(paths, labels, ("a", "b", "c"), seed=42, method="random")
    parts = random_split_indices(paths, train=0.6, val=0.0, test=0.4, seed=42)
    assert split.method == "random"
    assert split.subsets["test"].paths == tuple(paths[i] for i in parts["test"])
    np.testing.assert_array_equal(split.subsets["test"].labels, labels[parts["test"]])
    scan = ScanResult(
        root=str(tmp_path), class_names=("a", "b", "c"), paths=tuple(paths), labels=labels
    )
    made, created = prepare_split(scan, tmp_path / "split.json", seed=42, method="random")
    assert created and load_split(tmp_path / "split.json").method == "random"
    again, created = prepare_split(scan, tmp_path / "split.json", seed=42, method="random")
    assert not created and again.subsets["test"].paths == made.subsets["test"].paths
    with pytest.raises(DatasetError, match=r"data\.split\.method='random'"):
        prepare_split(scan, tmp_path / "split.json", seed=42)
