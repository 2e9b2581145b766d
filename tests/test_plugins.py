"""Plugins: ``--plugin MODULE`` and the ``hpsh_tf2.plugins`` entry points, loaded before the
config is validated; components registered there run through ``train`` and ``evaluate``."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap

from hpsh_tf2 import cli
from hpsh_tf2.registry import PLUGIN_GROUP, SAMPLERS, SEARCH_BACKENDS, load_entry_point_plugins
from tests.conftest import REPO_ROOT

FAST = (
    "train.epochs=1",
    "train.steps_per_epoch=3",
    "model.hidden_units=[16]",
    "model.bits=16",
    "eval.k=5",
    "eval.figures=false",
)


def _args(verb: str, features, workdir) -> list[str]:
    sets = [
        "data.root=null",
        f"data.features={features}",
        f"output.workdir={workdir}",
        "sampler.mode=toy_first",
        "eval.backend=toy_brute",
        *FAST,
    ]
    return [verb, "--config", str(REPO_ROOT / "aid.yaml"), *(x for s in sets for x in ("--set", s))]


def test_without_the_plugin_its_names_are_config_errors(synthetic_features_path, tmp_path, capsys):
    assert cli.main(_args("prepare", synthetic_features_path, tmp_path)) == 2
    err = capsys.readouterr().err
    assert "'sampler.mode'" in err and "'toy_first'" in err and "expected one of 'hpsh'" in err
    assert len(err.strip().splitlines()) == 1


def test_plugin_components_run_through_train_and_evaluate(
    synthetic_features_path, tmp_path, capsys, toy_plugin_unloaded
):
    args = _args("train", synthetic_features_path, tmp_path)
    assert cli.main(["--plugin", "tests.plugins.toy", *args]) == 0
    assert "toy_first" in SAMPLERS and "toy_brute" in SEARCH_BACKENDS
    # the verb-level spelling works too (already imported: a second import is a no-op)
    evaluate = _args("evaluate", synthetic_features_path, tmp_path)
    assert cli.main([*evaluate, "--plugin", "tests.plugins.toy"]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert 0.0 <= report["map@5"] <= 1.0
    resolved = (tmp_path / "config.yaml").read_text()
    assert "mode: toy_first" in resolved and "backend: toy_brute" in resolved
    capsys.readouterr()


def test_a_plugin_loss_trains_through_the_trainer(
    synthetic_features_path, tmp_path, capsys, toy_plugin_unloaded
):
    """A loss registered from outside the package is a valid ``loss.name``, and the trainer
    logs its own term names (nothing about a loss is written twice in the package)."""
    args = _args("train", synthetic_features_path, tmp_path)
    args += ["--set", "loss.name=toy_pairs", "--set", "sampler.mode=hpsh"]
    assert cli.main(args) == 2  # not registered yet: a config error
    capsys.readouterr()
    assert cli.main(["--plugin", "tests.plugins.toy", *args]) == 0
    history = (tmp_path / "model" / "history.csv").read_text().splitlines()
    assert "pairs" in history[0].split(",") and "triplet" not in history[0]
    assert "name: toy_pairs" in (tmp_path / "config.yaml").read_text()
    capsys.readouterr()


def test_the_toy_sampler_is_what_training_draws(toy_plugin_unloaded):
    """The registered rule, not a built-in, picks the negatives of a configured sampler."""
    import numpy as np
    import tensorflow as tf

    from hpsh_tf2.config import Config
    from hpsh_tf2.samplers import make_sampler

    importlib.import_module("tests.plugins.toy")
    config = Config().replace(["sampler.mode=toy_first"])
    sampler = make_sampler(config.sampler, samples_per_class=2, default_cutoff=0.9)
    labels = np.array([5, 5, 8, 8, 9, 9])
    e = tf.math.l2_normalize(tf.random.stateless_normal([6, 4], seed=[0, 1]), axis=1)
    anchors, _, negatives = sampler(e, labels, tf.constant([1, 2]))
    np.testing.assert_array_equal(negatives.numpy(), np.where(anchors.numpy() < 2, 2, 0))


def test_a_missing_plugin_is_one_line(capsys):
    assert cli.main(["--plugin", "no_such_plugin_xyz", "prepare"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot import plugin module 'no_such_plugin_xyz'")
    assert len(err.splitlines()) == 1


def _install_entry_point(site, value: str) -> None:
    info = site / "toy_hpsh_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-hpsh-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{PLUGIN_GROUP}]\ntoy = {value}\n")


def test_installed_plugins_load_from_their_entry_points(tmp_path, monkeypatch, toy_plugin_unloaded):
    _install_entry_point(tmp_path, "tests.plugins.toy")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "tests.plugins.toy" in load_entry_point_plugins()
    assert "toy_first" in SAMPLERS and "toy_brute" in SEARCH_BACKENDS


def test_a_broken_entry_point_names_its_distribution(tmp_path, monkeypatch, capsys):
    _install_entry_point(tmp_path, "no_such_plugin_xyz.sub")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli.main(["prepare"]) == 2
    err = capsys.readouterr().err
    assert "cannot load plugin 'toy' (no_such_plugin_xyz.sub) of toy-hpsh-plugin" in err


def test_help_answers_without_tensorflow():
    code = textwrap.dedent(
        """
        import sys
        from hpsh_tf2.cli import main
        for argv in (["--help"], ["train", "--help"], ["index", "build", "--help"]):
            try:
                main(argv)
            except SystemExit:
                pass
        assert "tensorflow" not in sys.modules, "--help imported TensorFlow"
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "--plugin MODULE" in done.stdout
