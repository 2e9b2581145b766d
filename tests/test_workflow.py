"""End-to-end tests of the CLI verbs and hpsh_tf2.workflow (prepare, extract, train, evaluate,
export, run, query), on generated features and demo data, and on the shared AID sample where
present (those tests skip without ../shared)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tensorflow as tf

from hpsh_tf2 import cli, workflow
from hpsh_tf2.config import load_config
from hpsh_tf2.data.demo import make_demo_dataset
from hpsh_tf2.data.split import SUBSET_NAMES
from tests.conftest import REPO_ROOT

FAST = (
    "train.epochs=2",
    "train.steps_per_epoch=10",
    "train.learning_rate=0.001",
    "model.hidden_units=[64, 32]",
    "model.bits=16",
)


def test_prepare_aid_sample_reports_30_classes(aid_sample_root, tmp_path, capsys):
    argv = [
        "prepare",
        "--config",
        str(REPO_ROOT / "aid.yaml"),
        "--set",
        f"data.root={aid_sample_root}",
        "--set",
        f"output.workdir={tmp_path}",
    ]
    assert cli.main(argv) == 0
    table = capsys.readouterr().out
    assert "total                180    0   120        0" in table
    assert table.count("     6    0     4") == 30
    split = json.loads((tmp_path / "split.json").read_text())
    assert len(split["class_names"]) == 30
    train, test = set(split["subsets"]["train"]["paths"]), set(split["subsets"]["test"]["paths"])
    assert len(train) == 180 and len(test) == 120 and not train & test
    assert (tmp_path / "config.yaml").is_file()
    # Re-running re-uses the split; a second workdir with the same seed reproduces it.
    assert cli.main(argv) == 0
    assert "re-used" in capsys.readouterr().out
    other = tmp_path / "again"
    assert cli.main([*argv[:-1], f"output.workdir={other}"]) == 0
    assert json.loads((other / "split.json").read_text()) == split


def test_cli_errors_name_the_problem(tmp_path, capsys):
    code = cli.main(["prepare", "--config", str(REPO_ROOT / "aid.yaml"), "--set", "model.bits=7"])
    err = capsys.readouterr().err
    assert code == 2
    assert "aid.yaml" in err and "model.bits" in err and "bits=7" in err
    code = cli.main(
        [
            "prepare",
            "--set",
            f"data.root={tmp_path / 'nope'}",
            "--set",
            f"output.workdir={tmp_path / 'w'}",
        ]
    )
    assert code == 2 and "nope" in capsys.readouterr().err
    code = cli.main(["prepare", "--set", f"output.workdir={tmp_path / 'w'}"])
    assert code == 2 and "data.root" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["fly"])


def test_cli_reports_a_tensorflow_runtime_error_in_one_line(
    synthetic_features_path, tmp_path, capsys
):
    # 64-bit codes of the original seed sampler with the CPU policy: once the classes separate,
    # rows lose every candidate and training stops (docs/method.md section 11.2). Here it
    # happens at once because the cutoff is tiny.
    args = [
        "train",
        "--config",
        str(REPO_ROOT / "aid.yaml"),
        *("--set", "data.root=null", "--set", f"data.features={synthetic_features_path}"),
        *("--set", f"output.workdir={tmp_path}", "--set", "model.hidden_units=[16]"),
        *("--set", "sampler.mode=original", "--set", "sampler.empty_rows=error"),
        *("--set", "sampler.nonzero_loss_cutoff=0.01", "--set", "train.classes_per_batch=4"),
        *("--set", "train.epochs=1", "--set", "train.steps_per_epoch=1"),
    ]
    assert cli.main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: train stopped: InvalidArgumentError:")
    assert "no eligible negative" in err and len(err.splitlines()) == 1
    with pytest.raises(tf.errors.InvalidArgumentError):  # --verbose keeps the traceback
        cli.main(["--verbose", *args, "--set", f"output.workdir={tmp_path / 'v'}"])


def test_features_file_train_and_evaluate(synthetic_features_path, tmp_path, capsys):
    """Bring-your-own features: prepare, train and evaluate work unchanged."""
    config = load_config(
        REPO_ROOT / "aid.yaml",
        [
            "data.root=null",
            f"data.features={synthetic_features_path}",
            "data.split.train=0.5",
            "data.split.val=0.1",
            "eval.k=5",
            f"output.workdir={tmp_path}",
            *FAST,
        ],
    )
    prepared = workflow.prepare(config)
    assert prepared.features is not None
    assert {n: len(prepared.subset_paths(n)) for n in SUBSET_NAMES} == {
        "train": 150,
        "val": 30,
        "test": 120,
    }
    result = workflow.train(config, prepared=prepared, verbose=0)
    assert result.selection == "val_map@5"
    report = workflow.evaluate(config, prepared=prepared)
    assert (tmp_path / "eval" / "report.json").is_file()
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert saved["protocol"] == "paper" and saved["bits"] == 16
    for key in ("map@5", "precision@5", "map@r", "seed_map@5"):
        assert 0.0 <= saved[key] <= 1.0
    assert saved["map@5"] == pytest.approx(report["map@5"])
    codes = np.load(tmp_path / "eval" / "codes.npz")
    assert codes["query_codes"].shape == (120, 16) and codes["query_codes"].dtype == np.uint8
    assert set(np.unique(codes["query_codes"])) <= {0, 1}
    assert np.array_equal(codes["query_codes"], codes["db_codes"])  # paper protocol
    assert list(codes["query_paths"]) == list(prepared.subset_paths("test"))
    assert (tmp_path / "eval" / "pr_curve.png").is_file()
    assert "map@5" in capsys.readouterr().out


def test_standard_protocol_uses_train_and_val_as_database(synthetic_features_path, tmp_path):
    config = load_config(
        None,
        [
            f"data.features={synthetic_features_path}",
            "data.split.train=0.5",
            "data.split.val=0.1",
            "eval.protocol=standard",
            "eval.figures=false",
            f"output.workdir={tmp_path}",
            *FAST,
        ],
    )
    workflow.train(config, verbose=0)
    report = workflow.evaluate(config)
    assert report["num_queries"] == 120 and report["num_database"] == 180
    codes = np.load(tmp_path / "eval" / "codes.npz")
    assert len(codes["db_paths"]) == 180
    assert not set(codes["db_paths"]) & set(codes["query_paths"])


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One full `run` on a small generated dataset (InceptionV3 at 75 px, random weights)."""
    workdir = tmp_path_factory.mktemp("demo")
    make_demo_dataset(workdir / "data", num_classes=4, images_per_class=12, image_size=64)
    config = workflow.demo_config(
        workdir, ["train.epochs=2", "train.steps_per_epoch=5", "eval.k=3", "eval.interval=5"]
    )
    summary = workflow.run(config, echo=lambda _: None)
    return config, summary


def test_run_writes_every_output(demo_run):
    config, summary = demo_run
    workdir = config.workdir
    for path in (
        "config.yaml",
        "split.json",
        "scan_report.json",
        "features/features.npy",
        "model/hash_model.keras",
        "model/history.csv",
        "eval/report.json",
        "eval/codes.npz",
        "eval/pr_curve.png",
        "eval/code_embedding.png",
    ):
        assert (workdir / path).exists(), path
    assert list((workdir / "eval").glob("grid_*.png"))
    assert summary["bits"] == 16 and 0.0 <= summary["map@3"] <= 1.0
    assert (workdir / "export" / "demo" / "1" / "saved_model.pb").is_file()
    assert set(summary["steps"].values()) == {"evaluated", "exported"} | {summary["steps"]["train"]}


def test_second_run_skips_up_to_date_steps(demo_run):
    config, _ = demo_run
    again = workflow.run(config, echo=lambda _: None)
    assert again["steps"] == {
        "train": "up to date",
        "evaluate": "up to date",
        "export": "up to date",
    }
    assert not (config.workdir / "export" / "demo" / "2").exists()
    # A changed evaluation option re-runs evaluation only.
    changed = workflow.run(config.replace(["eval.radius=1"]), echo=lambda _: None)
    assert changed["steps"]["train"] == "up to date"
    assert changed["steps"]["evaluate"] == "evaluated"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.image_size=150", "model.image_size: trained 75, requested 150"),
        ("model.bits=32", "model.bits: trained 16, requested 32"),
        ("model.backbone=resnet50", "model.backbone: trained 'inception_v3', requested 'resnet50'"),
        ("model.weights=imagenet", "model.weights: trained 'none', requested 'imagenet'"),
    ],
)
def test_export_refuses_a_model_trained_with_other_settings(demo_run, override, expected):
    from hpsh_tf2.errors import ModelMismatchError

    config, _ = demo_run
    saved = (config.workdir / "config.yaml").read_text()
    versions = sorted(p.name for p in (config.workdir / "export" / "demo").iterdir())
    with pytest.raises(ModelMismatchError, match=re.escape(expected)):
        workflow.export(config.replace([override]), echo=lambda _: None)
    assert sorted(p.name for p in (config.workdir / "export" / "demo").iterdir()) == versions
    assert (config.workdir / "config.yaml").read_text() == saved  # the refused config is not kept


def test_query_cli_on_the_export(demo_run, capsys, tmp_path):
    config, _ = demo_run
    prepared = workflow.prepare(config, echo=lambda _: None)
    image = prepared.root / prepared.subset_paths("test")[0]
    out = tmp_path / "grid.png"
    code = cli.main(
        [
            "query",
            "--model",
            str(config.workdir / "export" / "demo"),
            "--image",
            str(image),
            "--top",
            "4",
            "--out",
            str(out),
            "--image-root",
            str(prepared.root),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert text.count("\n") >= 5 and str(image) in text
    assert out.is_file()
    # With --config, the export and the image root come from the run's saved config.
    out2 = tmp_path / "grid2.png"
    saved = str(config.workdir / "config.yaml")
    argv = ["query", "--config", saved, "--image", str(image), "--top", "4", "--out", str(out2)]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.splitlines()[2:6] == text.splitlines()[2:6]
    assert out2.is_file()


def test_evaluate_from_saved_model_matches_keras_model(demo_run):
    config, _ = demo_run
    from_keras = json.loads((config.workdir / "eval" / "report.json").read_text())
    from_export = workflow.evaluate(
        config.replace(["eval.figures=false"]),
        saved_model=config.workdir / "export" / "demo",
        echo=lambda _: None,
    )
    assert from_export["map@3"] == pytest.approx(from_keras["map@3"], abs=1e-6)


def test_end_to_end_mode_tiny(tmp_path):
    """Images in, backbone trainable (top layers), 75 px: a few steps run, the best epoch on the
    validation split is kept, and both the image model and its hash head are saved."""
    import keras

    make_demo_dataset(tmp_path / "data", num_classes=3, images_per_class=10, image_size=48)
    config = workflow.demo_config(
        tmp_path,
        [
            "train.mode=end_to_end",
            "model.input_norm=none",  # the demo standardises cached features only
            "train.epochs=2",
            "train.steps_per_epoch=2",
            "train.samples_per_class=2",
            "train.trainable_layers=4",
            "train.augment=true",
            "data.split.train=0.5",
            "data.split.val=0.2",
            "data.split.test=0.3",
            "eval.k=2",
        ],
    )
    result = workflow.train(config, verbose=0)
    assert np.isfinite(result.history["loss"]).all()
    assert result.selection == "val_map@2"
    assert result.selected_epoch == int(np.argmax(result.history["val_map@2"])) + 1
    image_model = keras.saving.load_model(result.image_model_path)
    hash_model = keras.saving.load_model(result.hash_model_path)
    assert image_model.output_shape == hash_model.output_shape == (None, 16)
    # The saved hash head is the head inside the saved image model.
    for a, b in zip(image_model.layers[-1].get_weights(), hash_model.get_weights()):
        np.testing.assert_array_equal(a, b)


_TRAIN_IN_A_PROCESS = """
import sys
from pathlib import Path
from hpsh_tf2 import workflow
workdir, *overrides = sys.argv[1:]
result = workflow.train(workflow.demo_config(Path(workdir), overrides), verbose=0)
print(len(result.history["loss"]))
"""


def test_end_to_end_resume_equals_uninterrupted_run(tmp_path):
    """Whole backbone trainable (BatchNorm in training mode): a run cut after epoch 1 and
    resumed ends with the variables of an uninterrupted run, moving statistics included.
    Each run is its own process, as with the CLI (within one process the second end-to-end
    training of a session differs slightly from the first; see the README)."""
    import subprocess
    import sys

    import keras

    import hpsh_tf2.models.head  # noqa: F401 (registers HashHead for loading)

    make_demo_dataset(tmp_path / "data", num_classes=3, images_per_class=8, image_size=48)
    common = [
        f"data.root={tmp_path / 'data'}",
        "train.mode=end_to_end",
        "model.input_norm=none",
        "train.steps_per_epoch=2",
        "train.samples_per_class=2",
        "train.trainable_layers=0",
        "train.lr_schedule=constant",
        "data.split.train=0.6",
        "data.split.val=0.0",
        "data.split.test=0.4",
    ]

    def train(name: str, epochs: int) -> int:
        argv = [str(tmp_path / name), *common, f"train.epochs={epochs}"]
        done = subprocess.run(
            [sys.executable, "-c", _TRAIN_IN_A_PROCESS, *argv],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return int(done.stdout.split()[-1])

    assert train("full", 2) == 2
    assert train("cut", 1) == 1
    assert train("cut", 2) == 1  # resumed: only epoch 2 ran
    full = keras.saving.load_model(tmp_path / "full" / "model" / "image_model.keras")
    resumed = keras.saving.load_model(tmp_path / "cut" / "model" / "image_model.keras")
    moving = [v for v in full.non_trainable_variables if "moving" in v.path]
    assert len(moving) == 188  # InceptionV3: 94 BatchNorm layers
    # Training moved them from their initial values (mean 0, variance 1).
    assert not any(np.allclose(v.numpy(), 0.0) or np.allclose(v.numpy(), 1.0) for v in moving)
    assert len(full.variables) == len(resumed.variables)
    for a, b in zip(full.variables, resumed.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # the truncated TIFFs
def test_end_to_end_undecodable_image_is_named(tmp_path):
    """data.verify_images=false lets truncated files through the scan; end-to-end training then
    hits TF's decoder error, which names no file: the error must name one."""
    from hpsh_tf2.errors import BadImageError

    make_demo_dataset(tmp_path / "data", num_classes=3, images_per_class=6, image_size=48)
    truncated = sorted((tmp_path / "data").rglob("*.*"))
    for path in truncated:
        path.write_bytes(path.read_bytes()[:40])
    config = workflow.demo_config(
        tmp_path,
        [
            "train.mode=end_to_end",
            "model.input_norm=none",
            "data.verify_images=false",
            "train.epochs=1",
            "train.steps_per_epoch=1",
            "train.samples_per_class=2",
        ],
    )
    with pytest.raises(BadImageError) as info:
        workflow.train(config, verbose=0)
    assert info.value.path in {str(path) for path in truncated}
    assert "end-to-end training" in str(info.value) and "verify_images" in str(info.value)
    assert isinstance(info.value.__cause__, tf.errors.OpError)


def test_demo_config_layers_demo_settings_over_a_base_file(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("loss:\n  alpha: 0.25\nsampler:\n  mode: seed\n")
    config = workflow.demo_config(tmp_path / "w", ["eval.k=7"], base=base)
    assert (config.loss.alpha, config.sampler.mode) == (0.25, "original")  # from the base file
    assert (config.model.image_size, config.model.weights) == (75, "none")  # demo settings
    assert config.eval.k == 7  # overrides last
    assert config.data.root == str(tmp_path / "w" / "data")


def test_run_on_features_file_skips_export(synthetic_features_path, tmp_path):
    config = load_config(
        None,
        [
            f"data.features={synthetic_features_path}",
            "eval.k=5",
            "eval.figures=false",
            f"output.workdir={tmp_path}",
            *FAST,
        ],
    )
    lines = []
    summary = workflow.run(config, echo=lines.append)
    assert summary["export"] is None
    assert summary["steps"]["export"].startswith("skipped")
    assert summary["steps"]["evaluate"] == "evaluated"
    assert any("SavedModel: -" in line for line in lines)
    assert not (tmp_path / "export").exists()


def test_console_script_is_the_same_cli(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("hpsh")
    assert script.is_file(), "the hpsh console script is installed with the package"
    done = subprocess.run(
        [str(script), "prepare", "--set", "model.bits=12"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "Received: bits=12" in done.stderr
    help_text = subprocess.run([str(script), "--help"], capture_output=True, text=True).stdout
    for verb in ("download", "prepare", "extract", "train", "evaluate", "export", "query", "run"):
        assert verb in help_text


def test_demo_shows_the_method_working(tmp_path):
    """`make demo` as a user runs it: the default demo learns its six classes (mAP@10 >= 0.95)."""
    lines: list[str] = []
    summary = workflow.demo(tmp_path / "demo", echo=lines.append)
    assert summary["map@10"] >= 0.95
    line = next(x for x in lines if x.startswith("\ndemo: a 16-bit hash head"))
    assert "6 synthetic texture classes" in line and f"{summary['map@10']:.3f}" in line
    assert "(75 px, random weights, standardised)" in line
    assert "top 5 via the SavedModel's retrieve signature" in "\n".join(lines)


def test_degenerate_codes_are_reported_and_warned_once(tmp_path):
    """Identical features give every image one code: report.json's code_health says so, the
    evaluate output warns once, and a later run's summary (evaluate up to date) warns once."""
    from hpsh_tf2.evaluation.code_health import code_health
    from tests.conftest import synthetic_features

    arrays = synthetic_features(seed=3)
    arrays["features"] = np.ones_like(arrays["features"])
    path = tmp_path / "same.npz"
    np.savez(path, **arrays)
    config = load_config(
        None,
        [f"data.features={path}", "eval.k=5", "eval.figures=false",
         f"output.workdir={tmp_path / 'run'}", *FAST],
    )  # fmt: skip
    for expected_status in ("evaluated", "up to date"):
        lines: list[str] = []
        summary = workflow.run(config, echo=lines.append)
        assert summary["steps"]["evaluate"] == expected_status
        assert sum(line.startswith("WARNING: degenerate codes") for line in lines) == 1, lines
        assert any("code health: 1 distinct codes of 120" in line for line in lines), lines
    saved = json.loads((tmp_path / "run" / "eval" / "report.json").read_text())
    codes = np.load(tmp_path / "run" / "eval" / "codes.npz")
    assert saved["code_health"] == code_health(codes["db_codes"])
    assert saved["code_health"]["distinct_codes"] == 1 and saved["code_health"]["degenerate"]
