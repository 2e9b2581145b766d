"""Checks of our stored copy of the tensorflow-addons golden values (tests/data/)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from tests.conftest import SHARED

ORIGINAL = SHARED / "golden" / "tfa_triplet_losses.json"


def _expand(data: dict) -> list[dict]:
    return [{**case, **data["inputs"][case["input"]]} for case in data["cases"]]


def test_copy_covers_every_configuration_on_every_input(golden_triplet_path):
    data = json.loads(golden_triplet_path.read_text())
    assert len(data["inputs"]) == 10 and len(data["cases"]) == 180
    configs = {(c["loss"], c["margin"], c["distance_metric"], c.get("soft")) for c in data["cases"]}
    expected = {
        ("TripletSemiHardLoss", m, d, None)
        for m, d in itertools.product((0.2, 1.0), ("L2", "squared-L2", "angular"))
    } | {
        ("TripletHardLoss", m, d, s)
        for m, d, s in itertools.product((0.2, 1.0), ("L2", "squared-L2", "angular"), (False, True))
    }
    assert configs == expected
    pairs = {
        (c["input"], c["loss"], c["margin"], c["distance_metric"], c.get("soft"))
        for c in data["cases"]
    }
    assert len(pairs) == 180  # each configuration once per input
    for inp in data["inputs"]:
        emb = np.array(inp["embeddings"], np.float32)
        assert emb.ndim == 2 and emb.shape[0] == len(inp["labels"])
        assert np.isfinite(emb).all()


def test_copy_equals_the_shared_original(golden_triplet_path):
    if not ORIGINAL.is_file():
        pytest.skip(f"needs the original golden file at {ORIGINAL} (absent on a fresh clone)")
    original = json.loads(ORIGINAL.read_text())["cases"]
    ours = _expand(json.loads(golden_triplet_path.read_text()))
    assert len(ours) == len(original) == 180
    for a, b in zip(ours, original, strict=True):
        assert {k: v for k, v in a.items() if k != "input"}.keys() == b.keys()
        for key in ("loss", "margin", "distance_metric", "soft", "labels", "value"):
            assert a.get(key) == b.get(key), key
        np.testing.assert_array_equal(
            np.array(a["embeddings"], np.float32), np.array(b["embeddings"], np.float32)
        )
