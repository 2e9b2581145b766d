"""Shared pytest fixtures.

TensorFlow is configured here once, before any test module imports it: quiet logs and a
small thread pool (CI machines have 2 cores).

Two kinds of test data:

* generated here, always available (a fresh clone has everything it needs): a class tree of
  small JPEG scenes (``scene_tree``) and a bring-your-own features file with class structure
  (``synthetic_features_path``); small stored fixtures live in ``tests/data/`` (the
  tensorflow-addons golden values);
* the real AID sample and its pretrained features, read in place from ``../shared`` beside the
  repository. They are not part of the repository: the fixtures ``aid_sample_root`` and
  ``aid_features_path`` skip their tests, with the reason, when ``../shared`` is absent. CI
  provides it, so CI runs them. ``HPSH_SHARED`` overrides the location.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = REPO_ROOT / "tests" / "data"
SHARED = Path(os.environ.get("HPSH_SHARED") or REPO_ROOT.parent / "shared")
AID_SAMPLE = SHARED / "data" / "aid_sample"
AID_FEATURES = SHARED / "data" / "aid_sample_effnet_lite0.npz"
AID_MULTILABEL = SHARED / "data" / "aid_multilabel_dev_effnet_lite0.npz"
GOLDEN_TRIPLET = TEST_DATA / "tfa_triplet_losses.json"

SCENE_CLASSES = 16
SCENE_IMAGES = 6
SCENE_SIZE = 64
FEATURE_CLASSES = 30
FEATURE_ROWS = 10
FEATURE_DIM = 256


def separated_binary_codes(classes: int, k: int, bits: int = 64, seed: int = 0) -> np.ndarray:
    """0/1 codes ``[classes * k, bits]`` in class blocks, the regime of docs/method.md section 11.2.

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


def _skip_without_shared(path: Path, what: str) -> None:
    if not path.exists():
        pytest.skip(
            f"needs {what} at {path} (the shared test data beside the repository, absent on a "
            "fresh clone; CI provides it; set HPSH_SHARED to point elsewhere)"
        )


@pytest.fixture(scope="session")
def aid_sample_root() -> Path:
    """The shared AID sample (30 classes x 10 real aerial JPEGs), used in place; else skip."""
    _skip_without_shared(AID_SAMPLE, "the real AID sample")
    return AID_SAMPLE


@pytest.fixture(scope="session")
def aid_features_path() -> Path:
    """Pretrained EfficientNet-Lite0 features of the AID sample (bring-your-own); else skip."""
    _skip_without_shared(AID_FEATURES, "the AID sample's pretrained features")
    return AID_FEATURES


def synthetic_multilabel_features(
    rows: int = 96, classes: int = 6, dim: int = 32, seed: int = 0
) -> dict[str, np.ndarray]:
    """A multi-label bring-your-own features file, the dev mosaics in miniature.

    Each item carries 1-3 of ``classes`` labels (multi-hot uint8) and its features are the mean
    of its labels' random prototypes plus noise, so sharing labels means similar features.
    """
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(0.0, 1.0, (classes, dim))
    labels = np.zeros((rows, classes), np.uint8)
    for row in range(rows):
        labels[row, rng.choice(classes, size=1 + row % 3, replace=False)] = 1
    features = labels @ prototypes / labels.sum(axis=1, keepdims=True)
    features += rng.normal(0.0, 0.3, features.shape)
    return {
        "features": features.astype(np.float32),
        "labels": labels,
        "paths": np.array([f"mosaics/mosaic_{i:05d}.jpg" for i in range(rows)]),
        "class_names": np.array([f"Label{c}" for c in range(classes)]),
    }


@pytest.fixture(scope="session")
def synthetic_multilabel_features_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated multi-label features file (see ``synthetic_multilabel_features``)."""
    path = tmp_path_factory.mktemp("features") / "synthetic_multilabel_features.npz"
    np.savez(path, **synthetic_multilabel_features())
    return path


@pytest.fixture(scope="session")
def aid_multilabel_path() -> Path:
    """The multi-label AID mosaics' features (multi-hot labels [1212, 30]); else skip."""
    _skip_without_shared(AID_MULTILABEL, "the multi-label AID mosaic features")
    return AID_MULTILABEL


@pytest.fixture(scope="session")
def golden_triplet_path() -> Path:
    """Golden values of tensorflow-addons' triplet losses (tfa 0.23 on TF 2.15), our copy."""
    return GOLDEN_TRIPLET


def scene_image(class_index: int, image_index: int, size: int = SCENE_SIZE) -> np.ndarray:
    """A uint8 RGB "scene": a class colour pair and stripe angle, per-image phase and noise."""
    cls = np.random.default_rng([11, class_index])
    img = np.random.default_rng([11, class_index, image_index])
    colours = cls.uniform(30, 225, size=(2, 3))
    angle = np.pi * class_index / SCENE_CLASSES + img.normal(0, 0.05)
    cycles = 1.5 + (class_index % 4) + img.uniform(-0.2, 0.2)
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    wave = 0.5 + 0.5 * np.sin(
        2 * np.pi * cycles * (xx * np.cos(angle) + yy * np.sin(angle)) + img.uniform(0, 2 * np.pi)
    )
    pixels = colours[0] + (colours[1] - colours[0]) * wave[..., None]
    pixels += img.normal(0, 6, size=pixels.shape)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def scene_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated AID-like class tree: ``<Class>/<class>_<n>.jpg``, 16 classes x 6 JPEGs.

    Stands in for the real sample wherever a test only needs some decodable scenes in class
    folders (export, serving, pipelines), so these tests also run on a fresh clone.
    """
    root = tmp_path_factory.mktemp("scene_tree")
    for c in range(SCENE_CLASSES):
        name = f"Scene{c:02d}"
        (root / name).mkdir()
        for i in range(SCENE_IMAGES):
            path = root / name / f"{name.lower()}_{i + 1}.jpg"
            Image.fromarray(scene_image(c, i)).save(path, quality=90)
    return root


def synthetic_features(seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays of a bring-your-own features file: 30 classes x 10 rows, 256 non-negative dims.

    Like pooled CNN features, the class information lives in a low-dimensional subspace: each
    class has a centre in a 32-d latent space, each row adds within-class spread, and a fixed
    random linear map to 256 dims, an offset, per-dimension noise and a ReLU follow (about 58%
    zeros). Raw cosine kNN mAP@5 is about 0.96: the classes are learnable in a few short
    epochs, but they overlap. Labels are sorted by class, paths follow the AID layout.
    """
    rng = np.random.default_rng(seed)
    latent = 32
    centres = rng.normal(0.0, 1.0, size=(FEATURE_CLASSES, latent))
    mixing = rng.normal(0.0, 1.0 / np.sqrt(latent), size=(latent, FEATURE_DIM))
    offset = rng.normal(-0.3, 0.3, size=FEATURE_DIM)
    labels = np.repeat(np.arange(FEATURE_CLASSES), FEATURE_ROWS).astype(np.int32)
    z = centres[labels] + rng.normal(0.0, 0.8, size=(labels.size, latent))
    noise = rng.normal(0.0, 0.4, size=(labels.size, FEATURE_DIM))
    features = np.maximum(z @ mixing + offset + noise, 0.0).astype(np.float32)
    class_names = np.array([f"Class{c:02d}" for c in range(FEATURE_CLASSES)])
    index = np.tile(np.arange(FEATURE_ROWS), FEATURE_CLASSES)
    paths = np.array(
        [
            f"{class_names[c]}/{class_names[c].lower()}_{i + 1}.jpg"
            for c, i in zip(labels, index, strict=True)
        ]
    )
    return {"features": features, "labels": labels, "paths": paths, "class_names": class_names}


@pytest.fixture(scope="session")
def synthetic_features_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated features file in the bring-your-own format (see ``synthetic_features``)."""
    path = tmp_path_factory.mktemp("features") / "synthetic_features.npz"
    np.savez(path, **synthetic_features())
    return path


@pytest.fixture
def toy_plugin_unloaded():
    """Removes what ``tests/plugins`` modules register once the test is done (a plugin's
    registrations otherwise last for the process, as in real use)."""
    import sys

    yield
    for name in [m for m in sys.modules if m.startswith("tests.plugins.")]:
        module = sys.modules.pop(name)
        for registry, names in getattr(module, "NAMES", {}).items():
            for entry in names:
                registry.unregister(entry)
