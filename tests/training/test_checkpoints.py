"""Tests for hpsh_tf2.training.checkpoints: a damaged epoch checkpoint (issue 23, item 6).

A truncated latest checkpoint made every rerun of ``train`` fail with a traceback naming no file.
Now the checkpoints are verified before resuming: the run falls back to the previous good one
with one warning naming both, or stops with one line naming the damaged files and what to do.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import tensorflow as tf

from hpsh_tf2.config import load_config
from hpsh_tf2.dataset import subset_inputs
from hpsh_tf2.errors import DamagedFileError, HPSHError
from hpsh_tf2.features import load_feature_file
from hpsh_tf2.layout import RunLayout
from hpsh_tf2.training import fit_hash_model
from hpsh_tf2.training.checkpoints import checkpoint_damage
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def inputs(synthetic_features_path):
    features = load_feature_file(synthetic_features_path)
    return subset_inputs(features.labels, features=features.features)


def _config(workdir, epochs):
    overrides = [
        "data.root=null",
        f"train.epochs={epochs}",
        "train.steps_per_epoch=2",
        "train.lr_schedule=constant",  # the epoch count may grow on resume
        "train.classes_per_batch=6",
        "train.samples_per_class=2",
        "model.bits=16",
        "model.hidden_units=[16]",
        f"output.workdir={workdir}",
    ]
    return load_config(REPO_ROOT / "aid.yaml", overrides)


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _epoch(prefix) -> int:
    return int(tf.train.load_checkpoint(prefix).get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, inputs):
    """A run folder with the checkpoints of epochs 1 and 2 (trained once per module)."""
    workdir = tmp_path_factory.mktemp("trained")
    fit_hash_model(_config(workdir, 2), train_inputs=inputs, verbose=0)
    return workdir


@pytest.fixture
def two_epochs(tmp_path, trained):
    """A copy of ``trained`` (checkpoint paths are stored relative to their folder)."""
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    folder = RunLayout(workdir).checkpoints
    prefixes = tf.train.get_checkpoint_state(str(folder)).all_model_checkpoint_paths
    assert [Path(p).parent for p in prefixes] == [folder, folder]
    assert [_epoch(p) for p in prefixes] == [1, 2]  # max_to_keep=2 keeps a fallback
    return workdir, [str(p) for p in prefixes]


def test_a_good_checkpoint_has_no_damage(two_epochs):
    _, prefixes = two_epochs
    assert [checkpoint_damage(p) for p in prefixes] == [None, None]


@pytest.mark.parametrize("part", ["data", "index"])
def test_damage_names_the_file(two_epochs, part):
    _, prefixes = two_epochs
    target = f"{prefixes[1]}.index" if part == "index" else f"{prefixes[1]}.data-00000-of-00001"
    _truncate(Path(target))
    reason = checkpoint_damage(prefixes[1])
    assert reason is not None and Path(target).name in reason
    assert checkpoint_damage(prefixes[0]) is None


@pytest.mark.parametrize("part", ["data", "index", "missing"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous(two_epochs, inputs, caplog, part):
    workdir, prefixes = two_epochs

    data = Path(f"{prefixes[1]}.data-00000-of-00001")
    if part == "data":
        _truncate(data)
    elif part == "index":
        _truncate(Path(f"{prefixes[1]}.index"), keep=0.1)
    else:
        data.unlink()
    with caplog.at_level(logging.WARNING, logger="hpsh_tf2.training.checkpoints"):
        result = fit_hash_model(_config(workdir, 3), train_inputs=inputs, verbose=0)
    assert len(result.history["loss"]) == 2  # resumed after epoch 1: epochs 2 and 3 ran
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    fallback = [w for w in warnings if "damaged" in w]
    assert len(fallback) == 1, warnings
    assert Path(prefixes[1]).name in fallback[0] and Path(prefixes[0]).name in fallback[0]
    assert "\n" not in fallback[0]
    # the run goes on from there: the newest checkpoint is epoch 3, and a rerun is clean
    latest = tf.train.latest_checkpoint(str(RunLayout(workdir).checkpoints))
    assert _epoch(latest) == 3 and checkpoint_damage(latest) is None
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hpsh_tf2.training.checkpoints"):
        again = fit_hash_model(_config(workdir, 3), train_inputs=inputs, verbose=0)
    assert again.history == {}
    assert not [r for r in caplog.records if "damaged" in r.getMessage()]


def test_no_good_checkpoint_stops_naming_the_files(two_epochs, inputs):
    workdir, prefixes = two_epochs

    for prefix in prefixes:
        _truncate(Path(f"{prefix}.data-00000-of-00001"))
    with pytest.raises(DamagedFileError) as info:
        fit_hash_model(_config(workdir, 3), train_inputs=inputs, verbose=0)
    message = str(info.value)
    assert isinstance(info.value, HPSHError) and "\n" not in message
    for prefix in prefixes:
        assert f"{Path(prefix).name}.data-00000-of-00001" in message
    assert str(RunLayout(workdir).checkpoints) in message and "move" in message
    # nothing was deleted: the user decides
    for prefix in prefixes:
        assert Path(f"{prefix}.index").is_file()


def test_an_unreadable_checkpoint_list_still_resumes(two_epochs, inputs):
    workdir, _ = two_epochs
    folder = RunLayout(workdir).checkpoints
    (folder / "checkpoint").write_text("garbage {{{")  # TF ignores it with a warning
    result = fit_hash_model(_config(workdir, 3), train_inputs=inputs, verbose=0)
    assert len(result.history["loss"]) == 1  # resumed after epoch 2
    state = tf.train.get_checkpoint_state(str(folder))
    assert _epoch(state.model_checkpoint_path) == 3
    assert len(state.all_model_checkpoint_paths) == 2  # the list is whole again
