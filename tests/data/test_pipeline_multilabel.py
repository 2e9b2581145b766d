"""Label-balanced P x K batches for multi-hot labels (data/pipeline.py)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from hpsh_tf2.data.pipeline import ClassBalancedSampler, train_dataset_from_arrays


def _multi_hot(seed=0, rows=60, classes=6):
    rng = np.random.default_rng(seed)
    labels = (rng.random((rows, classes)) < 0.25).astype(np.uint8)
    labels[np.arange(rows), rng.integers(0, classes, rows)] = 1
    return labels


def _batches(sampler, count):
    return np.stack([sampler.batch_indices(b).numpy() for b in range(count)])


def test_every_block_carries_its_drawn_label_and_labels_are_distinct():
    labels = _multi_hot()
    sampler = ClassBalancedSampler(labels, classes_per_batch=4, samples_per_class=3, seed=1)
    for batch in _batches(sampler, 20):
        blocks = labels[batch].reshape(4, 3, -1)
        common = blocks.min(axis=1)  # labels every row of the block carries
        assert common.any(axis=1).all()
        # K distinct items per block when the label has enough of them
        assert all(len(set(block)) == 3 for block in batch.reshape(4, 3))


def test_one_hot_labels_draw_the_single_label_batches():
    single = np.repeat(np.arange(5), 7)
    one_hot = np.eye(5, dtype=np.uint8)[single]
    kwargs = {"classes_per_batch": 3, "samples_per_class": 4, "seed": 7}
    np.testing.assert_array_equal(
        _batches(ClassBalancedSampler(single, **kwargs), 10),
        _batches(ClassBalancedSampler(one_hot, **kwargs), 10),
    )


def test_labels_are_drawn_uniformly_and_items_of_a_label_cover_its_pool():
    labels = _multi_hot(2, rows=40, classes=5)
    sampler = ClassBalancedSampler(labels, classes_per_batch=2, samples_per_class=2, seed=3)
    seen = np.zeros(len(labels), bool)
    drawn = np.zeros(5)
    for batch in _batches(sampler, 300):
        seen[batch] = True
        for block in batch.reshape(2, 2):
            drawn[np.flatnonzero(labels[block].min(axis=0))] += 1
    assert seen.all()
    assert drawn.min() > 0.5 * drawn.mean()


def test_a_label_of_one_item_is_never_drawn(caplog):
    labels = _multi_hot(3, rows=30, classes=4)
    labels = np.concatenate([labels, np.zeros((30, 1), np.uint8)], axis=1)
    labels[0, 4] = 1  # label 4: a single item
    with caplog.at_level(logging.WARNING):
        sampler = ClassBalancedSampler(
            labels,
            classes_per_batch=3,
            samples_per_class=3,
            seed=0,
            class_names=["a", "b", "c", "d", "Lonely"],
        )
    assert "Lonely" in caplog.text
    assert sampler.num_classes == 4


def test_too_many_labels_per_batch_is_a_config_error():
    with pytest.raises(ValueError, match="classes_per_batch=9"):
        ClassBalancedSampler(_multi_hot(), classes_per_batch=9, samples_per_class=3, seed=0)


def test_replica_shares_keep_whole_blocks_with_their_common_label():
    labels = _multi_hot(4)
    features = np.arange(len(labels) * 2, dtype=np.float32).reshape(-1, 2)
    sampler = ClassBalancedSampler(labels, classes_per_batch=4, samples_per_class=3, seed=5)
    for rows in ((0, 6), (6, 12)):
        dataset = train_dataset_from_arrays(features, labels, sampler, rows=rows)
        for _, batch_labels in dataset.take(5):
            blocks = batch_labels.numpy().reshape(2, 3, -1)
            assert batch_labels.shape == (6, 6)
            assert blocks.min(axis=1).any(axis=1).all()
