"""DTSH against NumPy written from Wang et al. 2016 (triplet by triplet)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tests.losses.conftest import build


# ---------------------------------------------------------------------------- DTSH
def test_dtsh_matches_numpy(scores):
    loss = build("dtsh", "loss.options.margin_per_bit=0.25", "loss.options.quantization_weight=0.2")
    a, p, n = np.array([0, 3, 6, 9]), np.array([1, 4, 7, 10]), np.array([5, 8, 11, 2])
    got = loss.terms(tf.constant(scores), labels=None, triplets=(a, p, n))
    u = 2 * scores.astype(np.float64) - 1
    margin = 0.25 * 16
    nll = []
    for i, j, k in zip(a, p, n):
        x = 0.5 * u[i] @ u[j] - 0.5 * u[i] @ u[k] - margin
        nll.append(-(x - np.log1p(np.exp(x))))  # -log sigma(x), eq. 3
    quant = np.mean(np.sum((np.where(u > 0, 1.0, -1.0) - u) ** 2, axis=1))
    np.testing.assert_allclose(float(got["likelihood"]), np.mean(nll), rtol=1e-5)
    np.testing.assert_allclose(float(got["quantization"]), 0.2 * quant, rtol=1e-5)
