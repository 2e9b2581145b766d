"""The loss interface: label similarity, options, presets, the registry and the config keys."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from hpsh_tf2.config import ConfigError, load_config
from hpsh_tf2.losses.common import (
    HashLoss,
    balanced_pair_weights,
    label_count,
    log_cosh,
    similarity_matrix,
    unit_range,
)
from hpsh_tf2.registry import LOSSES
from tests.losses.conftest import build, np_similarity

BASELINES = ("dpsh", "dsh", "hashnet", "dch", "csq", "greedyhash", "dtsh")


def test_similarity_matrix_single_and_multi_label(int_labels, multi_hot):
    np.testing.assert_array_equal(similarity_matrix(int_labels).numpy(), np_similarity(int_labels))
    column = int_labels[:, None]  # [n, 1] is integer labels, not one-hot of one class
    np.testing.assert_array_equal(similarity_matrix(column).numpy(), np_similarity(int_labels))
    got = similarity_matrix(multi_hot).numpy()
    np.testing.assert_array_equal(got, np_similarity(multi_hot))
    assert 0 < got.mean() < 1  # the fixture has both kinds of pairs


def test_label_count():
    assert label_count(np.array([0, 3, 1])) == 4
    assert label_count(np.zeros((5, 7), np.int32)) == 7


def test_balanced_pair_weights_match_the_formula(int_labels):
    s = np_similarity(int_labels)
    off = 1 - np.eye(len(s))
    n_pairs, n_sim = off.sum(), (s * off).sum()
    expected = off * np.where(s > 0, n_pairs / n_sim, n_pairs / (n_pairs - n_sim))
    got = balanced_pair_weights(tf.constant(s, tf.float32)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_unit_range_and_log_cosh(scores):
    np.testing.assert_allclose(unit_range(scores).numpy(), 2 * scores - 1, rtol=1e-6)
    x = np.array([-30.0, -1.0, 0.0, 0.5, 40.0], np.float32)
    np.testing.assert_allclose(log_cosh(x).numpy(), np.logaddexp(x, -x) - np.log(2), atol=1e-6)


def test_every_loss_is_registered_and_builds():
    assert LOSSES.names()[0] == "hpsh"
    for name in ("hpsh", *BASELINES):
        loss = build(name)
        assert isinstance(loss, HashLoss) and loss.method == name
        assert loss.term_names and "loss" not in loss.term_names


def test_presets_then_explicit_options_win():
    for name in BASELINES:
        cls = LOSSES.get(name)
        assert build(name).describe() == {"name": name, **cls.Options(**cls.preset).__dict__}
    assert build("dpsh", "loss.options.eta=0.7").options.eta == 0.7
    assert build("dch", "loss.options.gamma=5").options.quantization_weight == 0.1  # preset kept


def test_config_validates_loss_name_and_options():
    with pytest.raises(ConfigError, match=r"'loss.name'.*expected one of 'hpsh', 'dpsh'"):
        load_config(None, ["loss.name=nope"])
    with pytest.raises(ConfigError, match=r"unknown key 'loss.options.gamma'.*loss.options.eta"):
        load_config(None, ["loss.name=dpsh", "loss.options.gamma=1"])
    with pytest.raises(ConfigError, match=r"'loss.options.eta'.*expected a number >= 0"):
        load_config(None, ["loss.name=dpsh", "loss.options.eta=-1"])
    with pytest.raises(ConfigError, match=r"takes no loss\.options"):
        load_config(None, ["loss.options.alpha=1"])
    config = load_config(None, ["loss.name=dsh", "loss.options={alpha: 0.5}"])
    assert config.loss.options == {"alpha": 0.5}


def test_pairwise_losses_need_similarity_triplet_losses_triplets():
    flags = {
        name: (LOSSES.get(name).uses_similarity, LOSSES.get(name).uses_triplets)
        for name in ("hpsh", *BASELINES)
    }
    assert flags["hpsh"] == (False, True) and flags["dtsh"] == (False, True)
    assert all(flags[name] == (True, False) for name in ("dpsh", "dsh", "hashnet", "dch"))
    assert flags["csq"] == flags["greedyhash"] == (False, False)


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
