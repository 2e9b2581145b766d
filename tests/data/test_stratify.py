"""Tests of hpsh_tf2.data.stratify (Sechidis et al. 2011, Algorithm 1)."""

from __future__ import annotations

import numpy as np
import pytest

from hpsh_tf2.data.stratify import iterative_stratification

FRACTIONS = (0.6, 0.1, 0.3)


def _multi_label_set(n: int = 600, classes: int = 12, seed: int = 0) -> np.ndarray:
    """Imbalanced, correlated labels: Zipf-like label frequencies, 1-4 labels per item."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, classes + 1) ** 1.1
    weights /= weights.sum()
    hot = np.zeros((n, classes), np.uint8)
    for i in range(n):
        k = rng.integers(1, 5)
        hot[i, rng.choice(classes, size=k, replace=False, p=weights)] = 1
    return hot


def _label_deviation(hot: np.ndarray, assignment: np.ndarray, fractions) -> np.ndarray:
    """|share of each label's items in subset j - r_j|, per subset and label [k, C]."""
    per_label = hot.sum(axis=0)
    shares = np.stack([hot[assignment == j].sum(axis=0) / per_label for j in range(3)])
    return np.abs(shares - np.asarray(fractions)[:, None])


def _random_split(n: int, fractions, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(n)
    cuts = np.rint(np.cumsum(fractions)[:-1] * n).astype(int)
    out = np.empty(n, np.int64)
    for j, part in enumerate(np.split(order, cuts)):
        out[part] = j
    return out


def test_every_item_assigned_once_with_the_requested_sizes() -> None:
    hot = _multi_label_set()
    assignment = iterative_stratification(hot, FRACTIONS, seed=3)
    assert assignment.shape == (len(hot),) and set(np.unique(assignment)) == {0, 1, 2}
    sizes = np.bincount(assignment, minlength=3) / len(hot)
    np.testing.assert_allclose(sizes, FRACTIONS, atol=0.03)


def test_each_label_keeps_its_share_better_than_a_random_split() -> None:
    hot = _multi_label_set()
    strat, rand = [], []
    for seed in range(5):
        strat.append(
            _label_deviation(hot, iterative_stratification(hot, FRACTIONS, seed=seed), FRACTIONS)
        )
        rand.append(_label_deviation(hot, _random_split(len(hot), FRACTIONS, seed), FRACTIONS))
    strat_mean, rand_mean = np.mean(strat), np.mean(rand)
    assert strat_mean < 0.5 * rand_mean, (strat_mean, rand_mean)
    # Each label's share within 5 points of the fraction (labels with >= 20 items).
    frequent = hot.sum(axis=0) >= 20
    assert np.max(np.stack(strat)[:, :, frequent]) <= 0.05


def test_deterministic_for_a_seed_and_varies_with_it() -> None:
    hot = _multi_label_set(n=300)
    first = iterative_stratification(hot, FRACTIONS, seed=7)
    np.testing.assert_array_equal(first, iterative_stratification(hot, FRACTIONS, seed=7))
    assert not np.array_equal(first, iterative_stratification(hot, FRACTIONS, seed=8))


def test_rare_labels_reach_train_and_test_and_zero_fraction_gets_nothing() -> None:
    hot = np.zeros((50, 3), np.uint8)
    hot[:, 0] = 1
    hot[:2, 1] = 1  # a label on two items only
    hot[10:13, 2] = 1
    assignment = iterative_stratification(hot, (0.5, 0.0, 0.5), seed=0)
    assert not np.any(assignment == 1)
    assert sorted(assignment[:2].tolist()) == [0, 2]


def test_items_without_labels_fill_the_subsets() -> None:
    hot = np.zeros((10, 2), np.uint8)
    hot[:4, 0] = 1
    assignment = iterative_stratification(hot, (0.6, 0.0, 0.4), seed=1)
    assert np.bincount(assignment, minlength=3).tolist() == [6, 0, 4]


def test_matches_a_step_by_step_reference() -> None:
    """The rarest label's items per subset equal Algorithm 1 run item by item (exact ties
    broken by the larger c_j, as in the paper)."""
    hot = _multi_label_set(n=120, classes=6, seed=2).astype(bool)
    per_label = hot.sum(axis=0)
    rarest = int(np.argmin(per_label))
    assert np.sum(per_label == per_label[rarest]) == 1  # processed first, no random choice
    assignment = iterative_stratification(hot, FRACTIONS, seed=0)
    desired = len(hot) * np.asarray(FRACTIONS)
    desired_label = np.asarray(FRACTIONS) * per_label[rarest]
    counts = np.zeros(3, int)
    for _ in range(int(per_label[rarest])):
        level = np.round(desired_label, 9)  # exact arithmetic up to float noise
        best = np.flatnonzero(level == level.max())
        best = best[desired[best] == desired[best].max()]
        assert len(best) == 1  # no random tie-break needed on this data
        counts[best[0]] += 1
        desired_label[best[0]] -= 1
        desired[best[0]] -= 1
    got = np.bincount(assignment[hot[:, rarest]], minlength=3)
    np.testing.assert_array_equal(got, counts)


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="multi-hot"):
        iterative_stratification(np.zeros(3), FRACTIONS, seed=0)
    with pytest.raises(ValueError, match="summing to 1"):
        iterative_stratification(np.zeros((3, 2)), (0.5, 0.1, 0.1), seed=0)
