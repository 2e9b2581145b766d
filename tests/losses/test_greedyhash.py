"""GreedyHash against NumPy written from Su et al. 2018, with the straight-through gradient."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from hpsh_tf2.losses.greedyhash import straight_through_sign
from tests.losses.conftest import build


# ---------------------------------------------------------------------------- GreedyHash
def test_straight_through_sign_forward_and_gradient():
    h = tf.constant([[-0.7, 0.0, 0.2], [0.9, -0.1, 0.5]])
    weights = np.array([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]], np.float32)
    with tf.GradientTape() as tape:
        tape.watch(h)
        b = straight_through_sign(h)
        value = tf.reduce_sum(weights * b**2 + weights * b)
    np.testing.assert_array_equal(b.numpy(), [[-1, -1, 1], [1, -1, 1]])  # 0 -> -1 (s = 0.5)
    # dL/dh = dL/db at b = sign(h) (eq. 8): d/db (w b^2 + w b) = 2 w b + w
    expected = 2 * weights * b.numpy() + weights
    np.testing.assert_allclose(tape.gradient(value, h).numpy(), expected, rtol=1e-6)


def _np_greedyhash(scores, labels, kernel, bias, alpha, multi=False):
    h = 2 * scores.astype(np.float64) - 1
    logits = np.where(h > 0, 1.0, -1.0) @ kernel + bias
    if multi:
        p = 1 / (1 + np.exp(-logits))
        ce = -(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean()
    else:
        log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        ce = -log_p[np.arange(len(labels)), labels].mean()
    return {"classification": ce, "penalty": alpha * np.mean(np.abs(np.abs(h) - 1) ** 3)}


@pytest.mark.parametrize("multi", [False, True])
def test_greedyhash_matches_numpy_with_gradient(scores, int_labels, multi_hot, multi):
    labels = multi_hot if multi else int_labels
    loss = build(
        "greedyhash", "loss.options.alpha=0.3", num_classes=labels.max() + 1 if not multi else 5
    )
    kernel, bias = (np.asarray(w, np.float64) for w in loss.code_classifier.get_weights())
    x = tf.Variable(scores)
    with tf.GradientTape() as tape:
        got = loss.terms(x, labels=tf.constant(labels))
    expected = _np_greedyhash(scores, labels, kernel, bias, 0.3, multi)
    for key, value in expected.items():
        np.testing.assert_allclose(float(got[key]), value, rtol=1e-5, err_msg=key)
    # Gradient w.r.t. the scores, by finite differences of the NumPy loss in which sign() is
    # replaced by the identity (the straight-through estimator's surrogate), times dh/ds = 2.
    grad = tape.gradient(got["loss"], x).numpy().astype(np.float64)
    h = 2 * scores.astype(np.float64) - 1
    b = np.where(h > 0, 1.0, -1.0)

    def surrogate(b_like, h_like):
        logits = b_like @ kernel + bias
        if multi:
            p = 1 / (1 + np.exp(-logits))
            ce = -(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean()
        else:
            ce = -(logits - np.log(np.exp(logits).sum(1, keepdims=True)))[
                np.arange(len(labels)), labels
            ].mean()
        return ce + 0.3 * np.mean(np.abs(np.abs(h_like) - 1) ** 3)

    eps = 1e-6
    numeric = np.zeros_like(h)
    for i, k in [(0, 0), (3, 5), (7, 15), (11, 2)]:
        d = np.zeros_like(h)
        d[i, k] = eps
        numeric[i, k] = (surrogate(b + d, h + d) - surrogate(b - d, h - d)) / (2 * eps) * 2
        np.testing.assert_allclose(grad[i, k], numeric[i, k], rtol=1e-3, atol=1e-6)


def test_greedyhash_classifier_is_trained_with_the_trainer(scores, int_labels):
    import keras

    from hpsh_tf2.models.head import build_hash_model
    from hpsh_tf2.samplers import TripletSampler
    from hpsh_tf2.training.trainer import HashTrainer

    head = build_hash_model(8, bits=16, hidden_units=(8,), seed=1)
    loss = build("greedyhash", num_classes=4)
    trainer = HashTrainer(head, sampler=TripletSampler(3), loss=loss, seed=1)
    assert set(trainer.trackers) == {"loss", "classification", "penalty"}
    before = loss.code_classifier.get_weights()[0].copy()
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    logs = trainer.train_on_batch(x, int_labels, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert not np.allclose(loss.code_classifier.get_weights()[0], before)
