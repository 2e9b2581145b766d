"""Issue 11: a run never lies about what it did, and two runs never corrupt each other.

Workflow-level tests on the shared AID features (fast: features mode, a few steps). Faults are
injected where a real kill would be racy (an exception right after a checkpoint is written).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from hpsh_tf2 import cli, workflow
from hpsh_tf2.config import load_config
from hpsh_tf2.dataset import subset_inputs
from hpsh_tf2.errors import ModelMismatchError, RunFailedError, WorkdirLockedError
from hpsh_tf2.features import load_feature_file
from hpsh_tf2.training import callbacks as callbacks_lib
from hpsh_tf2.training import fit_hash_model
from tests.conftest import REPO_ROOT

FAST = (
    "data.root=null",
    "data.split.train=0.5",
    "data.split.val=0.1",
    "data.split.test=0.4",
    "train.epochs=2",
    "train.steps_per_epoch=5",
    "train.classes_per_batch=10",
    "train.samples_per_class=3",
    "train.learning_rate=0.001",
    "model.hidden_units=[32]",
    "model.bits=16",
    "eval.k=5",
    "eval.figures=false",
)


def _config(features, workdir, *overrides):
    return load_config(
        REPO_ROOT / "aid.yaml",
        [*FAST, f"data.features={features}", f"output.workdir={workdir}", *overrides],
    )


def _cli_args(features, workdir, *overrides):
    args = ["--config", str(REPO_ROOT / "aid.yaml")]
    for item in (*FAST, f"data.features={features}", f"output.workdir={workdir}", *overrides):
        args += ["--set", item]
    return args


@pytest.fixture(scope="module")
def aid_features(aid_features_path):
    return load_feature_file(aid_features_path)


# --------------------------------------------------------------------------- items 1, 2


def test_run_rebuilds_a_model_trained_with_another_config(aid_features_path, tmp_path):
    quiet = {"echo": lambda _: None}
    config_a = _config(aid_features_path, tmp_path)
    first = workflow.run(config_a, **quiet)
    assert first["steps"]["train"].startswith("trained")
    config_b = _config(aid_features_path, tmp_path, "train.learning_rate=0.01", "model.init_seed=7")
    workflow.train(config_b, verbose=0)
    # a consuming verb refuses the other model, naming every differing key and both values
    with pytest.raises(ModelMismatchError) as info:
        workflow.evaluate(config_a, echo=lambda _: None)
    message = str(info.value)
    assert "train.learning_rate: trained 0.01, requested 0.001" in message
    assert "model.init_seed: trained 7, requested 123" in message
    # run with the first config retrains instead of reporting "up to date"
    again = workflow.run(config_a, **quiet)
    assert again["steps"]["train"].startswith("trained")
    assert again["steps"]["evaluate"] == "evaluated"
    recorded = json.loads((tmp_path / "model" / "fingerprint.json").read_text())
    assert recorded["inputs"]["train.learning_rate"] == 0.001
    assert recorded["inputs"]["model.init_seed"] == 123
    # and once it matches, nothing is redone
    third = workflow.run(config_a, **quiet)
    assert third["steps"]["train"] == third["steps"]["evaluate"] == "up to date"
    # a changed eval key that does not select the epoch re-evaluates only
    fourth = workflow.run(config_a.replace(["eval.radius=1"]), **quiet)
    assert fourth["steps"] == {
        "train": "up to date",
        "evaluate": "evaluated",
        "export": "skipped: a data.features run has no image model to export",
    }


def test_fingerprint_ignores_workdir_name_and_presentation_keys(aid_features_path, tmp_path):
    # a constant schedule: with cosine, train.epochs is the schedule's length and restarts
    config = _config(aid_features_path, tmp_path / "a", "train.lr_schedule=constant")
    workflow.train(config, verbose=0)
    shutil.move(tmp_path / "a", tmp_path / "b")
    moved = _config(
        aid_features_path,
        tmp_path / "b",
        "train.lr_schedule=constant",
        "name=other",
        "eval.figures=true",
    )
    assert workflow._model_up_to_date(moved, workflow.RunLayout(moved.workdir))
    # the checkpoints follow the folder: one more epoch resumes instead of starting afresh
    longer = workflow.train(moved.replace(["train.epochs=3"]), verbose=0)
    assert len(longer.history["loss"]) == 1


# --------------------------------------------------------------------------- item 3


def test_a_diverged_run_fails_in_one_line_and_keeps_the_good_model(
    aid_features_path, tmp_path, capsys
):
    args = _cli_args(aid_features_path, tmp_path)
    assert cli.main(["train", *args]) == 0
    model = tmp_path / "model" / "hash_model.keras"
    good = model.read_bytes()
    capsys.readouterr()
    code = cli.main(["train", *args, "--set", "train.learning_rate=1.0e+38"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "training diverged" in err and "NaN" in err
    assert model.read_bytes() == good  # never replaced by a NaN model
    weights = keras.saving.load_model(model).get_weights()
    assert all(np.all(np.isfinite(w)) for w in weights)


def test_diverged_epoch_writes_no_checkpoint_nor_model(aid_features, tmp_path):
    config = load_config(
        None,
        [
            "train.epochs=2",
            "train.steps_per_epoch=3",
            "train.classes_per_batch=10",
            "train.samples_per_class=3",
            "model.bits=16",
            "model.hidden_units=[16]",
            f"output.workdir={tmp_path}",
        ],
    )
    features = aid_features.features.copy()
    features[:, 0] = np.inf
    inputs = subset_inputs(aid_features.labels, features=features)
    with pytest.raises(RunFailedError, match=r"epoch 1 .*no model was written"):
        fit_hash_model(config, train_inputs=inputs, verbose=0)
    assert not (tmp_path / "model" / "hash_model.keras").exists()
    assert not list((tmp_path / "model" / "checkpoints").glob("ckpt-*"))


# --------------------------------------------------------------------------- item 5


HOLDER = """
import sys, time
from hpsh_tf2.lock import workdir_lock
with workdir_lock(sys.argv[1], command="hpsh train --config other.yaml"):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_writer_is_refused_at_once(aid_features_path, tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        for verb in ("prepare", "train", "run"):
            code = cli.main([verb, *_cli_args(aid_features_path, tmp_path)])
            err = capsys.readouterr().err.strip()
            assert code == 2, verb
            assert f"PID {holder.pid}" in err and "hpsh train --config other.yaml" in err
            assert len(err.splitlines()) == 1
        assert not (tmp_path / "config.yaml").exists()  # nothing was written
        with pytest.raises(WorkdirLockedError):
            workflow.evaluate(_config(aid_features_path, tmp_path))
    finally:
        holder.kill()
        holder.wait()
    assert cli.main(["prepare", *_cli_args(aid_features_path, tmp_path)]) == 0


# --------------------------------------------------------------------------- items 6, 7


def _crash_after_epoch(monkeypatch, epoch_index: int) -> None:
    """Raises right after the checkpoint of epoch ``epoch_index + 1`` is written."""
    original = callbacks_lib.EpochCheckpoint.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == epoch_index:
            raise KeyboardInterrupt("simulated kill after the checkpoint")

    monkeypatch.setattr(callbacks_lib.EpochCheckpoint, "on_epoch_end", on_epoch_end)


def test_resume_reads_the_epoch_from_the_checkpoint_itself(
    aid_features_path, tmp_path, monkeypatch
):
    full_config = _config(aid_features_path, tmp_path / "full", "train.epochs=3")
    full = workflow.train(full_config, verbose=0)
    cut_config = _config(aid_features_path, tmp_path / "cut", "train.epochs=3")
    with monkeypatch.context() as patch:
        _crash_after_epoch(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            workflow.train(cut_config, verbose=0)
    state = tmp_path / "cut" / "model" / "checkpoints" / "state.json"
    assert "epoch" not in json.loads(state.read_text())  # one source of truth: the checkpoint
    resumed = workflow.train(cut_config, verbose=0)
    assert len(resumed.history["loss"]) == 1  # only epoch 3 ran, on epoch-2 weights
    a = keras.saving.load_model(full.hash_model_path).get_weights()
    b = keras.saving.load_model(resumed.hash_model_path).get_weights()
    for wa, wb in zip(a, b):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)


def test_changed_training_keys_set_old_checkpoints_aside(aid_features_path, tmp_path):
    workflow.train(_config(aid_features_path, tmp_path), verbose=0)
    model_dir = tmp_path / "model"
    old_history = (model_dir / "history.csv").read_text()
    workflow.train(_config(aid_features_path, tmp_path, "loss.alpha=0.2"), verbose=0)
    aside = list(model_dir.glob("abandoned-*"))
    assert len(aside) == 1
    assert sorted(p.name for p in aside[0].glob("ckpt-2.*"))  # kept, not deleted
    assert (aside[0] / "history.csv").read_text() == old_history
    history = (model_dir / "history.csv").read_text().splitlines()
    assert len(history) == 3 and history[0].startswith("epoch")  # one header, two epochs


# --------------------------------------------------------------------------- items 9, 12, 13


def test_config_yaml_is_saved_only_after_validation(aid_features_path, tmp_path, capsys):
    assert cli.main(["prepare", *_cli_args(aid_features_path, tmp_path)]) == 0
    saved = (tmp_path / "config.yaml").read_text()
    missing = tmp_path / "nope.npz"
    code = cli.main(
        ["prepare", *_cli_args(aid_features_path, tmp_path), "--set", f"data.features={missing}"]
    )
    assert code == 2 and "nope.npz" in capsys.readouterr().err
    assert (tmp_path / "config.yaml").read_text() == saved
    args = _cli_args(aid_features_path, tmp_path)
    code = cli.main(["prepare", *args, "--set", "output.workdir="])
    assert code == 2 and "output.workdir" in capsys.readouterr().err


def test_query_with_a_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    code = cli.main(["query", "--model", str(tmp_path / "m"), "--image", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "is a folder" in err and len(err.splitlines()) == 1


def test_ctrl_c_exits_130_saying_what_was_kept(aid_features_path, tmp_path, capsys, monkeypatch):
    _crash_after_epoch(monkeypatch, 0)
    code = cli.main(["train", *_cli_args(aid_features_path, tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 130
    assert len(err.splitlines()) == 1
    assert "kept 1 finished epoch(s)" in err and "run the same command again to resume" in err


def test_cli_exit_codes_bug_versus_bad_input(tmp_path, capsys, monkeypatch):
    def bug(*args, **kwargs):
        raise TypeError("a bug inside the package")

    monkeypatch.setattr(workflow, "prepare", bug)
    with pytest.raises(TypeError, match="a bug inside"):  # traceback, not "invalid input"
        cli.main(["prepare", "--set", f"output.workdir={tmp_path}"])

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(workflow, "prepare", disk_full)
    assert cli.main(["prepare", "--set", f"output.workdir={tmp_path}"]) == 2
    assert "No space left" in capsys.readouterr().err
