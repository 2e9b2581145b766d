"""Shared pytest fixtures.

TensorFlow is configured here once, before any test module imports it: quiet logs and a
small thread pool (CI machines have 2 cores).
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
AID_SAMPLE = SHARED / "data" / "aid_sample"
AID_FEATURES = SHARED / "data" / "aid_sample_effnet_lite0.npz"
GOLDEN_TRIPLET = SHARED / "golden" / "tfa_triplet_losses.json"


def separated_binary_codes(classes: int, k: int, bits: int = 64, seed: int = 0) -> np.ndarray:
    """0/1 codes ``[classes * k, bits]`` in class blocks, the regime of spec 4.5(c).

    Each class has a balanced prototype (``bits / 2`` ones); each of its ``k`` rows flips one
    one and one zero. At 64 bits the original's ``D < 1.4`` mask then empties most rows.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(classes):
        proto = np.zeros(bits)
        proto[rng.permutation(bits)[: bits // 2]] = 1.0
        for _ in range(k):
            code = proto.copy()
            code[rng.choice(np.flatnonzero(proto == 1))] = 0.0
            code[rng.choice(np.flatnonzero(proto == 0))] = 1.0
            rows.append(code)
    return np.array(rows)


@pytest.fixture(scope="session")
def aid_sample_root() -> Path:
    """The shared AID sample (30 classes x 10 real aerial JPEGs), used in place."""
    if not AID_SAMPLE.is_dir():
        pytest.fail(f"shared test data missing: {AID_SAMPLE}")
    return AID_SAMPLE


@pytest.fixture(scope="session")
def aid_features_path() -> Path:
    """Pretrained EfficientNet-Lite0 features of the AID sample (bring-your-own format)."""
    if not AID_FEATURES.is_file():
        pytest.fail(f"shared test data missing: {AID_FEATURES}")
    return AID_FEATURES


@pytest.fixture(scope="session")
def golden_triplet_path() -> Path:
    """Golden values of tensorflow-addons' triplet losses (tfa 0.23 on TF 2.15)."""
    return GOLDEN_TRIPLET
