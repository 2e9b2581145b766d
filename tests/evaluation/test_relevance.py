"""Relevance in one place: shared labels, relevance, gains, R_q and label text."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from hpsh_tf2.evaluation import relevance


def _multi_hot(rng, rows, classes=5):
    labels = (rng.random((rows, classes)) < 0.35).astype(np.uint8)
    labels[np.arange(rows), rng.integers(0, classes, rows)] = 1  # at least one label each
    return labels


def test_shared_counts_common_labels_pair_by_pair():
    rng = np.random.default_rng(0)
    query, database = _multi_hot(rng, 6), _multi_hot(rng, 9)
    expected = np.array(
        [[len(set(np.flatnonzero(q)) & set(np.flatnonzero(x))) for x in database] for q in query]
    )
    np.testing.assert_array_equal(relevance.shared(query, database), expected)
    np.testing.assert_array_equal(relevance.relevant(query, database), expected >= 1)
    np.testing.assert_array_equal(relevance.relevant(query.astype(bool), database), expected >= 1)


def test_single_label_is_label_equality():
    query, database = np.array([0, 2, 1]), np.array([2, 2, 0, 1, 3])
    np.testing.assert_array_equal(
        relevance.shared(query, database), (query[:, None] == database[None, :]).astype(int)
    )
    np.testing.assert_array_equal(
        relevance.shared(query[:, None], database),
        [[0, 0, 1, 0, 0], [1, 1, 0, 0, 0], [0, 0, 0, 1, 0]],
    )


def test_single_label_equals_its_one_hot_multi_label_form():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 12)
    one_hot = np.eye(4, dtype=np.uint8)[labels]
    np.testing.assert_array_equal(
        relevance.shared(labels, labels), relevance.shared(one_hot, one_hot)
    )
    np.testing.assert_array_equal(
        relevance.num_relevant(labels, labels, exclude_self=True),
        relevance.num_relevant(one_hot, one_hot, exclude_self=True),
    )


def test_gain_is_two_to_the_shared_minus_one():
    np.testing.assert_allclose(relevance.gain([0, 1, 2, 3]), [0.0, 1.0, 3.0, 7.0])


def test_num_relevant_leaves_out_the_query_itself():
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]], np.uint8)
    np.testing.assert_array_equal(relevance.num_relevant(labels, labels), [2, 2, 1, 0])
    np.testing.assert_array_equal(
        relevance.num_relevant(labels, labels, exclude_self=True), [1, 1, 0, 0]
    )
    np.testing.assert_array_equal(
        relevance.num_relevant(np.array([5, 1]), np.array([1, 1, 2])), [0, 2]
    )


def test_ranked_shared_reads_retrieved_rows():
    query = np.array([[1, 1, 0], [0, 0, 1]], np.uint8)
    database = np.array([[1, 0, 0], [1, 1, 1], [0, 0, 1]], np.uint8)
    indices = np.array([[1, 0, 2], [2, 1, 0]])
    np.testing.assert_array_equal(
        relevance.ranked_shared(query, database[indices]), [[2, 1, 0], [1, 1, 0]]
    )


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 3, 4)), np.array([[0, 2], [1, 0]]), np.array([0.5, 1.0]), np.array([-1, 0])],
)
def test_bad_labels_are_refused(bad):
    with pytest.raises(ValueError, match="Received: labels"):
        relevance.check_labels(bad)


def test_mixed_forms_are_refused():
    with pytest.raises(ValueError, match="expected both"):
        relevance.shared(np.array([0, 1]), np.eye(3, dtype=np.uint8))


def test_label_text_joins_names():
    names = ("Forest", "River", "Beach")
    assert relevance.label_text(np.array([1, 1, 0]), names) == "Forest;River"
    assert relevance.label_text(2, names) == "Beach"
    assert relevance.label_text(np.array([0, 0, 0]), names) == ""


def test_tf_relevant_matches_numpy_eagerly_and_in_a_graph():
    rng = np.random.default_rng(2)
    multi, single = _multi_hot(rng, 8), rng.integers(0, 3, 8)
    for labels in (multi, single, single[:, None]):
        expected = relevance.relevant(labels, labels)
        np.testing.assert_array_equal(relevance.tf_relevant(tf.constant(labels)).numpy(), expected)
        graph = tf.function(relevance.tf_relevant)(tf.constant(labels))
        np.testing.assert_array_equal(graph.numpy(), expected)
