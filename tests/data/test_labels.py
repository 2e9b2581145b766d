"""Tests of hpsh_tf2.data.labels (integer <-> multi-hot <-> names)."""

from __future__ import annotations

import numpy as np
import pytest

from hpsh_tf2.data.labels import (
    compact,
    from_names,
    is_multi_label,
    join_names,
    label_counts,
    label_indices,
    row_keys,
    to_multi_hot,
    to_names,
    validate_labels,
)

NAMES = ("Forest", "River", "Road")


def test_integers_round_trip_through_multi_hot() -> None:
    labels = np.array([2, 0, 1, 2], np.int32)
    hot = to_multi_hot(labels, 3)
    expected = np.zeros((4, 3), np.uint8)
    expected[np.arange(4), labels] = 1
    np.testing.assert_array_equal(hot, expected)
    assert hot.dtype == np.uint8 and is_multi_label(hot) and not is_multi_label(labels)
    np.testing.assert_array_equal(compact(hot), labels)
    assert compact(hot).dtype == np.int32


def test_compact_keeps_rows_with_several_labels() -> None:
    hot = np.array([[1, 1, 0], [0, 0, 1]], np.uint8)
    assert compact(hot) is hot or np.array_equal(compact(hot), hot)
    assert compact(hot).ndim == 2


def test_names_round_trip() -> None:
    items = [("River", "Forest"), ("Road",), ("Forest", "Road", "River")]
    hot = from_names(items, NAMES)
    np.testing.assert_array_equal(hot, [[1, 1, 0], [0, 0, 1], [1, 1, 1]])
    assert to_names(hot, NAMES) == [("Forest", "River"), ("Road",), ("Forest", "River", "Road")]
    assert join_names(hot, NAMES) == ["Forest;River", "Road", "Forest;River;Road"]
    assert join_names(np.array([1, 0]), NAMES) == ["River", "Forest"]
    with pytest.raises(KeyError, match="Lake"):
        from_names([("Lake",)], NAMES)


def test_indices_keys_and_counts() -> None:
    hot = np.array([[0, 1, 1], [0, 0, 0], [1, 0, 0]], np.uint8)
    assert label_indices(hot) == [(1, 2), (), (0,)]
    assert row_keys(hot) == [(1, 2), (), (0,)]
    assert row_keys(np.array([2, 0])) == [2, 0]
    np.testing.assert_array_equal(label_counts(hot, 3), [1, 1, 1])
    np.testing.assert_array_equal(label_counts(np.array([2, 2, 0]), 3), [1, 0, 2])


def test_validate_labels() -> None:
    out = validate_labels([[1, 0], [True, True]], 2, 2)
    assert out.dtype == np.uint8 and not out.flags.writeable
    assert validate_labels([1, 0], 2, 2).dtype == np.int32
    with pytest.raises(ValueError, match=r"expected \(2, 3\)"):
        validate_labels(np.zeros((2, 2)), 3, 2)
    with pytest.raises(ValueError, match="other than 0 and 1"):
        validate_labels([[2, 0]], 2, 1)
    with pytest.raises(ValueError, match="expected values in"):
        validate_labels([5], 2, 1)
    with pytest.raises(ValueError, match="one label per path"):
        validate_labels([0, 1], 2, 3)


def test_empty_label_sets() -> None:
    assert label_indices(np.zeros((0, 3), np.uint8)) == []
    assert row_keys(np.zeros(0, np.int32)) == []
