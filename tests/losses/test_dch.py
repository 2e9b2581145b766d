"""DCH against NumPy written from Cao et al. 2018 (pair by pair), single- and multi-label."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from hpsh_tf2.losses.common import similarity_matrix
from tests.losses.conftest import (
    balanced_weights,
    build,
    check_terms,
    np_similarity,
    pair_terms,
    pairs,
)


# DCH (Cao et al. 2018): sigma(d) = gamma / (gamma + d), d = K/2 (1 - cos)
def _np_dch(scores, labels, gamma, lam):
    h = 2.0 * scores.astype(np.float64) - 1.0
    k = h.shape[1]
    s = np_similarity(labels)
    pair_list = pairs(len(h))
    w = balanced_weights(s, pair_list)

    def dist(a, b):
        return k / 2 * (1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    terms = []
    for i, j in pair_list:
        d = dist(h[i], h[j]) + 1e-6
        prob = gamma / (gamma + d)  # Cauchy probability of "similar"
        nll = -np.log(prob) if s[i, j] else -np.log(1 - prob)
        terms.append(w[i, j] * nll)
    quant = np.mean([np.log(1 + dist(np.abs(row), np.ones(k)) / gamma) for row in h])
    return {"cauchy": np.sum(terms) / len(pair_list), "quantization": lam * quant}


def test_dch_matches_numpy(scores, labels):
    loss = build("dch", "loss.options.gamma=4", "loss.options.quantization_weight=0.5")
    check_terms(pair_terms(loss, scores, labels), _np_dch(scores, labels, 4.0, 0.5))


def test_dch_is_finite_for_equal_codes():
    # Equal rows: for this draw float32 rounding gives 1 - cos = -1.2e-7 (d = -1.9e-6), which
    # made log1p(gamma / (d + 1e-6)) NaN before d was clipped at 0 (a run diverged at once).
    rng = np.random.default_rng(13)
    rows = np.tile(rng.uniform(0.05, 0.95, (1, 32)), (6, 1)).astype(np.float32)
    x = tf.Variable(rows)
    labels = np.repeat([0, 1], 3)
    loss = build("dch", bits=32, num_classes=2)
    with tf.GradientTape() as tape:
        value = loss.terms(x, labels=labels, similarity=similarity_matrix(labels))["loss"]
    assert np.isfinite(float(value))
    assert np.isfinite(tape.gradient(value, x).numpy()).all()
