"""DPSH against NumPy written from Li et al. 2016 (pair by pair), single- and multi-label."""

from __future__ import annotations

import numpy as np

from tests.losses.conftest import (
    build,
    check_terms,
    np_similarity,
    pair_terms,
    pairs,
)


def _sign(u):
    return np.where(u > 0, 1.0, -1.0)


# DPSH (Li et al. 2016): -sum(s Theta - log(1 + e^Theta)) + eta sum ||b - u||^2
def _np_dpsh(scores, labels, eta):
    u = 2.0 * scores.astype(np.float64) - 1.0
    s = np_similarity(labels)
    pair_list = pairs(len(u))
    nll = [np.log1p(np.exp(0.5 * u[i] @ u[j])) - s[i, j] * 0.5 * u[i] @ u[j] for i, j in pair_list]
    quant = np.mean([np.sum((_sign(row) - row) ** 2) for row in u])
    return {"likelihood": np.mean(nll), "quantization": eta * quant}


def test_dpsh_matches_numpy(scores, labels):
    loss = build("dpsh", "loss.options.eta=0.3")
    check_terms(pair_terms(loss, scores, labels), _np_dpsh(scores, labels, 0.3))
