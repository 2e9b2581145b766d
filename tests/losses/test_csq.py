"""CSQ against NumPy written from Yuan et al. 2020: Hadamard centres, multi-label centres."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from hpsh_tf2.errors import ConfigError
from hpsh_tf2.losses.csq import hadamard, hash_centres
from tests.losses.conftest import build


# ---------------------------------------------------------------------------- CSQ
def test_hadamard_rows_are_orthogonal():
    for order in (1, 2, 16, 64):
        h = hadamard(order).astype(np.int64)
        np.testing.assert_array_equal(h @ h.T, order * np.eye(order, dtype=np.int64))
    with pytest.raises(ValueError, match="power of two"):
        hadamard(24)


def test_hash_centres_are_far_apart():
    centres = hash_centres(30, 16)  # 30 <= 2K: rows of H and -H
    distances = (16 - centres @ centres.T) / 2  # Hamming distances
    off = distances[~np.eye(30, dtype=bool)]
    assert set(np.unique(off)) <= {8.0, 16.0}
    random = hash_centres(30, 24, seed=5)  # 24 bits: Bernoulli centres, seeded
    assert set(np.unique(random)) == {-1.0, 1.0}
    np.testing.assert_array_equal(random, hash_centres(30, 24, seed=5))


def _np_csq(scores, centres, lam):
    s = scores.astype(np.float64)
    t = (centres + 1) / 2
    bce = -(t * np.log(s) + (1 - t) * np.log(1 - s))
    h = 2 * s - 1
    quant = np.log(np.cosh(np.abs(h) - 1))
    return {"central": bce.mean(), "quantization": lam * quant.mean()}


def test_csq_single_label_matches_numpy(scores, int_labels):
    loss = build("csq", "loss.options.quantization_weight=0.5")
    centres = hash_centres(4, 16)[int_labels]
    got = loss.terms(tf.constant(scores), labels=tf.constant(int_labels))
    for key, value in _np_csq(scores, centres, 0.5).items():
        np.testing.assert_allclose(float(got[key]), value, rtol=1e-5)


def test_csq_multi_label_centre_is_the_sign_of_the_mean(scores, multi_hot):
    loss = build("csq", num_classes=5)
    table = hash_centres(5, 16)
    mean = multi_hot @ table / multi_hot.sum(1, keepdims=True)
    tie = loss.tie_break.numpy()
    centres = np.where(mean == 0, tie[None, :], np.sign(mean))
    assert (mean == 0).any()  # the fixture exercises the tie-break
    got = loss.terms(tf.constant(scores), labels=tf.constant(multi_hot))
    expected = _np_csq(scores, centres, loss.options.quantization_weight)
    np.testing.assert_allclose(float(got["central"]), expected["central"], rtol=1e-5)


def test_csq_needs_classes():
    with pytest.raises(ConfigError, match="needs the number of classes"):
        build("csq", num_classes=None)
