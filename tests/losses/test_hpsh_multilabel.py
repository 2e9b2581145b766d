"""The auxiliary classifier term with multi-hot labels: one sigmoid per label."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from hpsh_tf2.losses import classification_loss


def test_multi_hot_classification_is_mean_binary_cross_entropy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4))
    labels = (rng.random((6, 4)) < 0.4).astype(np.uint8)
    p = 1.0 / (1.0 + np.exp(-logits))
    reference = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    got = classification_loss(tf.constant(labels), tf.constant(logits, tf.float32), weight=0.5)
    assert float(got) == pytest.approx(0.5 * reference, rel=1e-5)


def test_single_label_column_stays_softmax():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], np.float32)
    labels = np.array([[0], [1]])
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    reference = -np.mean(log_p[[0, 1], [0, 1]])
    assert float(classification_loss(tf.constant(labels), tf.constant(logits))) == pytest.approx(
        reference, rel=1e-5
    )
