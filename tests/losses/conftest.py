"""Fixtures of the loss tests: small batches of sigmoid scores with single- and multi-label
labels, and a helper that builds a training loss by name."""

from __future__ import annotations

import numpy as np
import pytest

from hpsh_tf2.config import load_config
from hpsh_tf2.losses.common import HashLoss, make_loss


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
