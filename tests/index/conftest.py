"""Fixtures of the index tests: a tiny export (built once per session) and small archives.

The model is a tiny Keras network (mean colour -> 32 sigmoid scores) exported with
:func:`hpsh_tf2.export.export_saved_model`, so the index encodes through a real SavedModel
``serving_default`` signature in well under a second per batch. Milvus Lite runs for real.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest

from hpsh_tf2.export import export_saved_model
from tests.conftest import AID_SAMPLE

BACKBONE = "mobilenet_v2"
SIZE = 32
BITS = 32


def tiny_image_model(seed: int = 5, bands: int = 3) -> keras.Model:
    """Mean colour and colour spread -> 32 sigmoid scores: fast, scenes get different codes."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, bands))
    features = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    outputs = keras.layers.Dense(BITS, activation="sigmoid")(pooled)
    return keras.Model(inputs, outputs)


def export_tiny(export_dir: Path, seed: int = 5, input_bands: int = 3, **kwargs) -> Path:
    """Exports a tiny model as a new version under ``export_dir/tiny``; returns the version.

    ``input_bands`` other than 3 exports a multi-band model; ``kwargs`` go to
    :func:`export_saved_model` (e.g. the recorded ``bands`` and ``band_scale``).
    """
    return export_saved_model(
        image_model=tiny_image_model(seed, input_bands),
        backbone=BACKBONE,
        image_size=SIZE,
        bits=BITS,
        export_dir=export_dir,
        model_name="tiny",
        warmup_images=[],
        config={"seed": seed},
        input_bands=input_bands,
        **kwargs,
    )


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> Path:
    """Version folder of the tiny export (version 1)."""
    return export_tiny(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="session")
def aid_root() -> Path:
    """The shared AID sample (30 classes x 10 JPEGs); the test is skipped when it is absent."""
    if not AID_SAMPLE.is_dir():
        pytest.skip(f"shared AID sample not found at {AID_SAMPLE}")
    return AID_SAMPLE


@pytest.fixture
def small_archive(tmp_path, aid_root) -> Path:
    """A copy of 4 classes x 5 AID images (the tests add, change and delete files)."""
    root = tmp_path / "archive"
    for name in sorted(p.name for p in aid_root.iterdir() if p.is_dir())[:4]:
        (root / name).mkdir(parents=True)
        for path in sorted((aid_root / name).iterdir())[:5]:
            shutil.copy2(path, root / name / path.name)
    return root


def random_codes(rows: int, bits: int, seed: int) -> np.ndarray:
    """Random 0/1 codes ``uint8 [rows, bits]``."""
    return np.random.default_rng(seed).integers(0, 2, (rows, bits), dtype=np.uint8)


@contextlib.contextmanager
def read_only_folder(folder: Path) -> Iterator[Path]:
    """``folder`` made read-only for this process (a read-only bind mount when root).

    Yields:
        The read-only view of ``folder`` (``folder`` itself when not root).
    """
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    view = folder.with_name(folder.name + "-ro")
    view.mkdir()
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(view)],
                             capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot make a read-only folder as root: {mounted.stderr.decode().strip()}")
    try:
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=False)
