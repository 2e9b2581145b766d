"""Fixtures for the model tests: one randomly initialised InceptionV3 per session."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from hpsh_tf2.models.backbone import build_backbone

INCEPTION_SIZE = 75


@pytest.fixture(scope="session")
def inception_backbone() -> keras.Model:
    """InceptionV3 without top, random weights, 75 px input (built once: slow to trace)."""
    return build_backbone("inception_v3", weights="none", image_size=INCEPTION_SIZE)


@pytest.fixture(scope="session")
def inception_inputs() -> np.ndarray:
    """Two preprocessed-looking images in [-1, 1] for the InceptionV3 fixture."""
    rng = np.random.default_rng(7)
    return rng.uniform(-1.0, 1.0, size=(2, INCEPTION_SIZE, INCEPTION_SIZE, 3)).astype(np.float32)
