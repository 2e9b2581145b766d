"""Fixtures of the loss tests: small batches of sigmoid scores with single- and multi-label
labels, and a helper that builds a training loss by name."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from hpsh_tf2.config import load_config
from hpsh_tf2.losses.common import HashLoss, make_loss, similarity_matrix


@pytest.fixture
def scores() -> np.ndarray:
    """``[12, 16]`` float32 sigmoid scores in (0.02, 0.98)."""
    return np.random.default_rng(0).uniform(0.02, 0.98, (12, 16)).astype(np.float32)


@pytest.fixture
def int_labels() -> np.ndarray:
    """Four classes in blocks of three."""
    return np.repeat(np.arange(4), 3).astype(np.int32)


@pytest.fixture
def multi_hot() -> np.ndarray:
    """``[12, 5]`` multi-hot labels: every row has one to three labels, some rows share none."""
    rng = np.random.default_rng(1)
    y = (rng.random((12, 5)) < 0.3).astype(np.int32)
    y[np.arange(12), np.arange(12) % 5] = 1
    return y


def np_similarity(labels: np.ndarray) -> np.ndarray:
    """``S_ij = 1`` when rows i and j share a label (integer labels: equal labels)."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        return ((labels @ labels.T) > 0).astype(np.float64)
    y = labels.reshape(-1)
    return (y[:, None] == y[None, :]).astype(np.float64)


def build(name: str, *overrides: str, bits: int = 16, num_classes: int | None = 4) -> HashLoss:
    """The training loss ``loss.name=name`` with ``--set`` overrides."""
    config = load_config(None, [f"loss.name={name}", *overrides])
    return make_loss(config.loss, bits=bits, num_classes=num_classes)


def pairs(n: int) -> list[tuple[int, int]]:
    """The ordered pairs i != j of n rows."""
    return [(i, j) for i in range(n) for j in range(n) if i != j]


def balanced_weights(s: np.ndarray, pair_list) -> dict:
    """HashNet's weights |S| / |S_1| (similar) and |S| / |S_0| (dissimilar), pair by pair."""
    n_sim = sum(s[i, j] for i, j in pair_list)
    n_all = len(pair_list)
    return {(i, j): n_all / n_sim if s[i, j] else n_all / (n_all - n_sim) for i, j in pair_list}


def pair_terms(loss: HashLoss, scores, labels, step: int = 0) -> dict[str, float]:
    """A pairwise loss's terms on a batch, as floats."""
    parts = loss.terms(
        tf.constant(scores),
        labels=tf.constant(labels),
        similarity=similarity_matrix(labels),
        step=tf.constant(step, tf.int64),
    )
    return {k: float(v) for k, v in parts.items()}


def check_terms(got: dict, expected: dict) -> None:
    """Each expected term, and the total as their sum."""
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=2e-5, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(got["loss"], sum(expected.values()), rtol=2e-5, atol=1e-6)


@pytest.fixture(params=["single", "multi"])
def labels(request, int_labels, multi_hot):
    """Integer labels, then multi-hot labels (pairwise methods run on both)."""
    return int_labels if request.param == "single" else multi_hot
