"""HashNet against NumPy written from Cao et al. 2017, with its continuation schedule."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from hpsh_tf2.losses.hashnet import continuation_beta, head_logits
from tests.losses.conftest import (
    balanced_weights,
    build,
    check_terms,
    np_similarity,
    pair_terms,
    pairs,
)


# HashNet (Cao et al. 2017): sum w_ij (log(1 + exp(alpha <h_i,h_j>)) - alpha s_ij <h_i,h_j>)
def _np_hashnet(scores, labels, alpha, beta):
    logits = np.log(scores.astype(np.float64) / (1.0 - scores))  # the head's pre-sigmoid a
    h = np.tanh(beta * logits / 2.0)
    s = np_similarity(labels)
    pair_list = pairs(len(h))
    w = balanced_weights(s, pair_list)
    terms = [
        w[i, j] * (np.log1p(np.exp(alpha * h[i] @ h[j])) - alpha * s[i, j] * h[i] @ h[j])
        for i, j in pair_list
    ]
    return {"likelihood": np.sum(terms) / len(pair_list)}


@pytest.mark.parametrize("step", [0, 1000])
def test_hashnet_matches_numpy(scores, labels, step):
    loss = build("hashnet", "loss.options.alpha=0.4")
    beta = (1 + 0.005 * step) ** 0.5
    check_terms(pair_terms(loss, scores, labels, step), _np_hashnet(scores, labels, 0.4, beta))


def test_hashnet_continuation_grows_and_keeps_the_code(scores):
    betas = [float(continuation_beta(t, gamma=0.005, power=0.5)) for t in (0, 200, 2000)]
    np.testing.assert_allclose(betas, [1.0, 2.0**0.5, 11.0**0.5], rtol=1e-6)
    loss = build("hashnet")
    for beta in betas:  # sign(tanh(beta z)) is the evaluated code s > 0.5 for every beta
        h = np.tanh(beta * head_logits(tf.constant(scores)).numpy())
        np.testing.assert_array_equal(h > 0, scores > 0.5)
    np.testing.assert_allclose(np.tanh(head_logits(scores).numpy()), 2 * scores - 1, atol=1e-5)
    assert loss.options.beta_gamma == 0.005
