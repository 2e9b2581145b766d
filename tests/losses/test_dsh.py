"""DSH against NumPy written from Liu et al. 2016 (pair by pair), single- and multi-label."""

from __future__ import annotations

import numpy as np

from tests.losses.conftest import (
    build,
    check_terms,
    np_similarity,
    pair_terms,
)


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


def test_dsh_matches_numpy(scores, labels):
    loss = build("dsh", "loss.options.margin_per_bit=0.5", "loss.options.alpha=0.2")
    check_terms(pair_terms(loss, scores, labels), _np_dsh(scores, labels, 0.5 * 16, 0.2))
