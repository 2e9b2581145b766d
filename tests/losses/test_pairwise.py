"""DPSH, DSH, HashNet and DCH against NumPy written from the papers' formulas (pair by pair),
with single-label and multi-label similarity matrices."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from hpsh_tf2.losses.common import similarity_matrix
from hpsh_tf2.losses.hashnet import continuation_beta
from tests.losses.conftest import build, np_similarity


def _pairs(n: int):
    return [(i, j) for i in range(n) for j in range(n) if i != j]


def _sign(u):
    return np.where(u > 0, 1.0, -1.0)


def _terms(loss, scores, labels, step=0):
    parts = loss.terms(
        tf.constant(scores),
        labels=tf.constant(labels),
        similarity=similarity_matrix(labels),
        step=tf.constant(step, tf.int64),
    )
    return {k: float(v) for k, v in parts.items()}


def _balanced_weights(s, pairs):
    n_sim = sum(s[i, j] for i, j in pairs)
    return {
        (i, j): len(pairs) / n_sim if s[i, j] else len(pairs) / (len(pairs) - n_sim)
        for i, j in pairs
    }


# DPSH (Li et al. 2016): -sum(s Theta - log(1 + e^Theta)) + eta sum ||b - u||^2
def _np_dpsh(scores, labels, eta):
    u = 2.0 * scores.astype(np.float64) - 1.0
    s = np_similarity(labels)
    pairs = _pairs(len(u))
    nll = [np.log1p(np.exp(0.5 * u[i] @ u[j])) - s[i, j] * 0.5 * u[i] @ u[j] for i, j in pairs]
    quant = np.mean([np.sum((_sign(row) - row) ** 2) for row in u])
    return {"likelihood": np.mean(nll), "quantization": eta * quant}


# DSH (Liu et al. 2016): 1/2 (1-y) D + 1/2 y max(m - D, 0) + alpha (|||b1|-1||_1 + |||b2|-1||_1)
def _np_dsh(scores, labels, margin, alpha):
    u = 2.0 * scores.astype(np.float64) - 1.0
    s = np_similarity(labels)
    pair_terms, reg = [], []
    for i in range(len(u)):
        for j in range(i + 1, len(u)):
            d = np.sum((u[i] - u[j]) ** 2)
            y = 1.0 - s[i, j]  # the paper's y: 1 for a dissimilar pair
            pair_terms.append(0.5 * (1 - y) * d + 0.5 * y * max(margin - d, 0.0))
            reg.append(np.sum(np.abs(np.abs(u[i]) - 1)) + np.sum(np.abs(np.abs(u[j]) - 1)))
    return {"contrastive": np.mean(pair_terms), "regularizer": alpha * np.mean(reg)}


# HashNet (Cao et al. 2017): sum w_ij (log(1 + exp(alpha <h_i,h_j>)) - alpha s_ij <h_i,h_j>)
def _np_hashnet(scores, labels, alpha, beta):
    logits = np.log(scores.astype(np.float64) / (1.0 - scores))  # the head's pre-sigmoid a
    h = np.tanh(beta * logits / 2.0)
    s = np_similarity(labels)
    pairs = _pairs(len(h))
    w = _balanced_weights(s, pairs)
    terms = [
        w[i, j] * (np.log1p(np.exp(alpha * h[i] @ h[j])) - alpha * s[i, j] * h[i] @ h[j])
        for i, j in pairs
    ]
    return {"likelihood": np.sum(terms) / len(pairs)}


# DCH (Cao et al. 2018): sigma(d) = gamma / (gamma + d), d = K/2 (1 - cos)
def _np_dch(scores, labels, gamma, lam):
    h = 2.0 * scores.astype(np.float64) - 1.0
    k = h.shape[1]
    s = np_similarity(labels)
    pairs = _pairs(len(h))
    w = _balanced_weights(s, pairs)

    def dist(a, b):
        return k / 2 * (1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    terms = []
    for i, j in pairs:
        d = dist(h[i], h[j]) + 1e-6
        prob = gamma / (gamma + d)  # Cauchy probability of "similar"
        nll = -np.log(prob) if s[i, j] else -np.log(1 - prob)
        terms.append(w[i, j] * nll)
    quant = np.mean([np.log(1 + dist(np.abs(row), np.ones(k)) / gamma) for row in h])
    return {"cauchy": np.sum(terms) / len(pairs), "quantization": lam * quant}


@pytest.fixture(params=["single", "multi"])
def labels(request, int_labels, multi_hot):
    return int_labels if request.param == "single" else multi_hot


def _check(got, expected):
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=2e-5, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(got["loss"], sum(expected.values()), rtol=2e-5, atol=1e-6)


def test_dpsh_matches_numpy(scores, labels):
    loss = build("dpsh", "loss.options.eta=0.3")
    _check(_terms(loss, scores, labels), _np_dpsh(scores, labels, 0.3))


def test_dsh_matches_numpy(scores, labels):
    loss = build("dsh", "loss.options.margin_per_bit=0.5", "loss.options.alpha=0.2")
    _check(_terms(loss, scores, labels), _np_dsh(scores, labels, 0.5 * 16, 0.2))


@pytest.mark.parametrize("step", [0, 1000])
def test_hashnet_matches_numpy(scores, labels, step):
    loss = build("hashnet", "loss.options.alpha=0.4")
    beta = (1 + 0.005 * step) ** 0.5
    _check(_terms(loss, scores, labels, step), _np_hashnet(scores, labels, 0.4, beta))


def test_hashnet_continuation_grows_and_keeps_the_code(scores):
    betas = [float(continuation_beta(t, gamma=0.005, power=0.5)) for t in (0, 200, 2000)]
    np.testing.assert_allclose(betas, [1.0, 2.0**0.5, 11.0**0.5], rtol=1e-6)
    loss = build("hashnet")
    from hpsh_tf2.losses.hashnet import head_logits

    for beta in betas:  # sign(tanh(beta z)) is the evaluated code s > 0.5 for every beta
        h = np.tanh(beta * head_logits(tf.constant(scores)).numpy())
        np.testing.assert_array_equal(h > 0, scores > 0.5)
    np.testing.assert_allclose(np.tanh(head_logits(scores).numpy()), 2 * scores - 1, atol=1e-5)
    assert loss.options.beta_gamma == 0.005


def test_dch_matches_numpy(scores, labels):
    loss = build("dch", "loss.options.gamma=4", "loss.options.quantization_weight=0.5")
    _check(_terms(loss, scores, labels), _np_dch(scores, labels, 4.0, 0.5))


@pytest.mark.parametrize("name", ["dpsh", "dsh", "hashnet", "dch"])
def test_pairwise_gradients_are_finite_and_move_similar_codes_together(name, int_labels):
    # Two classes, codes at random: one gradient step must lower the loss.
    rng = np.random.default_rng(3)
    scores = tf.Variable(rng.uniform(0.3, 0.7, (12, 16)).astype(np.float32))
    loss = build(name)
    s = similarity_matrix(int_labels)

    def value():
        return loss.terms(scores, labels=int_labels, similarity=s, step=tf.constant(0))["loss"]

    with tf.GradientTape() as tape:
        before = value()
    grad = tape.gradient(before, scores)
    assert np.isfinite(grad.numpy()).all() and np.abs(grad.numpy()).sum() > 0
    scores.assign_sub(1e-3 * grad / tf.norm(grad))
    assert float(value()) < float(before)
