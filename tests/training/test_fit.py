"""Tests for hpsh_tf2.training: fit in features and end-to-end modes, resume, selection, options."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from hpsh_tf2.config import load_config
from hpsh_tf2.dataset import subset_inputs
from hpsh_tf2.features import load_feature_file
from hpsh_tf2.training import HashTrainer, fit_hash_model, head_options, triplet_sampler
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def aid_features(synthetic_features_path):
    """AID-sized features (30 classes x 10 rows), generated: runs on a fresh clone."""
    return load_feature_file(synthetic_features_path)


@pytest.fixture(scope="module", params=["generated", "real_aid"])
def any_features(request):
    """The generated features, then the real AID sample's (skipped without ../shared)."""
    name = "synthetic_features_path" if request.param == "generated" else "aid_features_path"
    return load_feature_file(request.getfixturevalue(name))


def _config(workdir, *overrides):
    base = [
        "data.root=null",
        "train.epochs=2",
        "train.steps_per_epoch=5",
        "train.classes_per_batch=10",
        "train.samples_per_class=3",
        "train.learning_rate=0.001",
        "model.bits=16",
        "model.hidden_units=[64, 32]",
        f"output.workdir={workdir}",
    ]
    return load_config(REPO_ROOT / "aid.yaml", [*base, *overrides])


def _split_rows(labels, per_class_val=2):
    """Deterministic train/val rows: the first `per_class_val` rows of each class are val."""
    val = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        val[np.flatnonzero(labels == c)[:per_class_val]] = True
    return np.flatnonzero(~val), np.flatnonzero(val)


def test_triplet_sampler_follows_the_config(tmp_path):
    sampler = triplet_sampler(_config(tmp_path))
    assert sampler.mode == "hpsh" and sampler.empty_rows == "index0"
    assert sampler.nonzero_loss_cutoff == pytest.approx(0.9)
    original = triplet_sampler(
        _config(tmp_path, "sampler.mode=original", "sampler.empty_rows=error")
    )
    assert original.mode == "original" and original.empty_rows == "error"
    assert original.nonzero_loss_cutoff == 1.4 and original.samples_per_class == 3


def test_head_options_follow_the_config(tmp_path):
    from hpsh_tf2.models.head import build_hash_model, seed_kernels

    options = head_options(
        _config(tmp_path, "model.init=original", "model.init_seed=4", "model.input_dropout=0.25")
    )
    assert options == {
        "bits": 16,
        "hidden_units": (64, 32),
        "leaky_relu_slope": 0.2,
        "seed": 4,
        "init": "original",
        "input_dropout": 0.25,
        "input_norm": "none",
    }
    kernel = build_hash_model(30, **options).get_weights()[0]
    np.testing.assert_array_equal(kernel, seed_kernels(30, [64, 32, 16], seed=4)[0])
    assert head_options(_config(tmp_path))["init"] == "keras"


def _batch_and_twin_heads(aid_features):
    """3 rows of each of 10 AID classes and two identically initialised 16-bit heads."""
    from hpsh_tf2.models.head import build_hash_model

    y = np.repeat(np.arange(10), 3).astype(np.int32)
    rows = [i for c in range(10) for i in np.flatnonzero(aid_features.labels == c)[:3]]
    x = aid_features.features[rows]
    model_a = build_hash_model(x.shape[1], bits=16, hidden_units=(64, 32), seed=7)
    model_b = build_hash_model(x.shape[1], bits=16, hidden_units=(64, 32), seed=7)
    return x, y, model_a, model_b


def test_hash_trainer_step_matches_manual_update(aid_features, tmp_path):
    """One train_step equals loss + Adam computed by hand with the same seed."""
    # Non-default weights and sampler: the step must use the ones it was given.
    config = _config(tmp_path, "loss.alpha=0.2", "loss.push_weight=0.05", "sampler.mode=random")
    from hpsh_tf2.losses import hpsh_loss, make_loss_weights

    x, y, model_a, model_b = _batch_and_twin_heads(aid_features)
    sampler, weights = triplet_sampler(config), make_loss_weights(config.loss)
    trainer = HashTrainer(model_a, sampler=sampler, weights=weights, seed=5)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    logs = trainer.train_on_batch(x, y, return_dict=True)

    optimizer = keras.optimizers.Adam(1e-3)
    with tf.GradientTape() as tape:
        loss = hpsh_loss(
            y,
            model_b(x, training=True),
            sampler=sampler,
            weights=weights,
            seed=tf.constant([5000, 0], tf.int64),
        )
    grads = tape.gradient(loss, model_b.trainable_variables)
    optimizer.apply(grads, model_b.trainable_variables)
    np.testing.assert_allclose(logs["loss"], float(loss), rtol=1e-5)
    for a, b in zip(model_a.get_weights(), model_b.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_features_mode_improves_validation_map(any_features, tmp_path):
    train_rows, val_rows = _split_rows(any_features.labels)
    config = _config(tmp_path, "train.epochs=4", "train.steps_per_epoch=15", "eval.k=5")
    train_in = subset_inputs(
        any_features.labels[train_rows], features=any_features.features[train_rows]
    )
    val_in = subset_inputs(any_features.labels[val_rows], features=any_features.features[val_rows])
    result = fit_hash_model(config, train_inputs=train_in, val_inputs=val_in, verbose=0)

    history = result.history
    assert len(history["loss"]) == 4
    assert history["loss"][-1] < history["loss"][0]
    assert result.selection == "val_map@5"
    assert result.best_val_map == pytest.approx(max(history["val_map@5"]))
    assert result.selected_epoch == int(np.argmax(history["val_map@5"])) + 1
    # Chance level for 30 balanced classes is ~1/30; trained codes must beat it clearly.
    assert result.best_val_map > 0.3
    saved = keras.saving.load_model(result.hash_model_path)
    assert saved.output_shape == (None, 16)
    summary = json.loads((result.model_dir / "train_summary.json").read_text())
    assert summary["selection"] == "val_map@5"
    assert (result.model_dir / "history.csv").read_text().count("\n") == 5


@pytest.mark.parametrize("classification_weight", [0.0, 0.5])
def test_resume_after_interruption_equals_uninterrupted_run(
    aid_features, tmp_path, classification_weight
):
    # A constant learning rate, so the epoch count may grow on resume; with the auxiliary
    # classifier its weights (and Adam slots) are part of the checkpoint.
    recipe = ("train.lr_schedule=constant", f"loss.classification_weight={classification_weight}")
    inputs = subset_inputs(aid_features.labels, features=aid_features.features)
    full = fit_hash_model(
        _config(tmp_path / "full", "train.epochs=3", *recipe), train_inputs=inputs, verbose=0
    )
    fit_hash_model(
        _config(tmp_path / "cut", "train.epochs=2", *recipe), train_inputs=inputs, verbose=0
    )
    resumed = fit_hash_model(
        _config(tmp_path / "cut", "train.epochs=3", *recipe), train_inputs=inputs, verbose=0
    )
    assert len(resumed.history["loss"]) == 1  # only epoch 3 ran
    a = keras.saving.load_model(full.hash_model_path).get_weights()
    b = keras.saving.load_model(resumed.hash_model_path).get_weights()
    for wa, wb in zip(a, b):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)


def test_changed_config_does_not_resume(aid_features, tmp_path):
    inputs = subset_inputs(aid_features.labels, features=aid_features.features)
    fit_hash_model(_config(tmp_path, "train.epochs=1"), train_inputs=inputs, verbose=0)
    other = fit_hash_model(
        _config(tmp_path, "train.epochs=2", "loss.alpha=0.2"), train_inputs=inputs, verbose=0
    )
    assert len(other.history["loss"]) == 2  # started afresh


@pytest.mark.parametrize(
    "overrides",
    [
        ("train.mixed_precision=true",),
        ("train.jit_compile=true",),
        ("sampler.mode=original", "loss.variant=original"),
        ("sampler.mode=semihard",),
        ("sampler.mode=random", "train.deterministic=true"),
    ],
)
def test_training_options_give_finite_losses(aid_features, tmp_path, overrides):
    inputs = subset_inputs(aid_features.labels, features=aid_features.features)
    config = _config(tmp_path, "train.epochs=1", "train.steps_per_epoch=3", *overrides)
    result = fit_hash_model(config, train_inputs=inputs, verbose=0)
    assert np.isfinite(result.history["loss"]).all()
    scores = keras.saving.load_model(result.hash_model_path).predict(
        aid_features.features[:8], verbose=0
    )
    assert scores.dtype == np.float32 and np.all((scores > 0) & (scores < 1))


def test_features_mode_without_features_is_an_error(tmp_path):
    config = _config(tmp_path)
    with pytest.raises(ValueError, match="needs feature rows"):
        fit_hash_model(config, train_inputs=subset_inputs([0, 0, 1, 1], paths=["a", "b", "c", "d"]))


def test_mirrored_strategy_on_two_logical_cpus(tmp_path, synthetic_features_path):
    script = textwrap.dedent(
        f"""
        import os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
        )
        import numpy as np
        from hpsh_tf2.config import load_config
        from hpsh_tf2.features import load_feature_file
        from hpsh_tf2.dataset import subset_inputs
        from hpsh_tf2.training import fit_hash_model, make_strategy
        assert make_strategy("mirrored").num_replicas_in_sync == 2
        fs = load_feature_file({str(synthetic_features_path)!r})
        config = load_config(None, [
            "train.strategy=mirrored", "train.epochs=1", "train.steps_per_epoch=3",
            "train.classes_per_batch=10", "train.samples_per_class=3", "model.bits=16",
            "model.hidden_units=[32]", "output.workdir={tmp_path}",
        ])
        inputs = subset_inputs(fs.labels, features=fs.features)
        result = fit_hash_model(config, train_inputs=inputs, verbose=0)
        print("LOSS", result.history["loss"][0])
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loss = float(done.stdout.split("LOSS")[-1])
    assert np.isfinite(loss) and loss > 0


def test_missing_best_model_after_finished_run_falls_back_to_final_epoch(
    aid_features, tmp_path, caplog
):
    train_rows, val_rows = _split_rows(aid_features.labels)
    config = _config(tmp_path, "train.epochs=2", "eval.k=5")
    train_in = subset_inputs(
        aid_features.labels[train_rows], features=aid_features.features[train_rows]
    )
    val_in = subset_inputs(aid_features.labels[val_rows], features=aid_features.features[val_rows])
    first = fit_hash_model(config, train_inputs=train_in, val_inputs=val_in, verbose=0)
    first.hash_model_path.unlink()
    again = fit_hash_model(config, train_inputs=train_in, val_inputs=val_in, verbose=0)
    assert again.history == {}  # nothing left to train: restored after epoch 2
    assert again.selection == "final_epoch"
    assert again.hash_model_path.is_file()
    assert "missing" in caplog.text


# --------------------------------------------------------------------------------------------
# recipe options: classifier term, cosine schedule, early stopping, input dropout
# --------------------------------------------------------------------------------------------
def test_classifier_step_matches_manual_update(aid_features, tmp_path):
    """With loss.classification_weight, one step = HPSH loss + w * CE of a Dense classifier on
    the scores, computed by hand, and both the head and the classifier are updated."""
    from hpsh_tf2.losses import hpsh_loss, make_loss_weights

    config = _config(tmp_path, "loss.classification_weight=0.5")
    x, y, model_a, model_b = _batch_and_twin_heads(aid_features)
    sampler, weights = triplet_sampler(config), make_loss_weights(config.loss)
    assert weights.classification_weight == 0.5
    trainer = HashTrainer(model_a, sampler=sampler, weights=weights, seed=5, num_classes=10)
    assert trainer.classifier is not None
    kernel, bias = (np.array(w) for w in trainer.classifier.get_weights())
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    logs = trainer.train_on_batch(x, y, return_dict=True)

    dense_k, dense_b = tf.Variable(kernel), tf.Variable(bias)
    variables = [*model_b.trainable_variables, dense_k, dense_b]
    optimizer = keras.optimizers.Adam(1e-3)
    with tf.GradientTape() as tape:
        scores = model_b(x, training=True)
        logits = tf.matmul(scores, dense_k) + dense_b
        loss = hpsh_loss(
            y,
            scores,
            sampler=sampler,
            weights=weights,
            seed=tf.constant([5000, 0], tf.int64),
            logits=logits,
        )
        ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    grads = tape.gradient(loss, variables)
    optimizer.apply(grads, variables)
    np.testing.assert_allclose(logs["loss"], float(loss), rtol=1e-5)
    np.testing.assert_allclose(logs["classification"], 0.5 * float(ce), rtol=1e-5)
    for a, b in zip(model_a.get_weights(), model_b.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trainer.classifier.get_weights()[0], dense_k.numpy(), atol=1e-6)
    assert not np.allclose(trainer.classifier.get_weights()[0], kernel)
    # Without the weight (the paper) there is no classifier and no classification term.
    paper = HashTrainer(
        model_b,
        sampler=sampler,
        weights=make_loss_weights(_config(tmp_path, "loss.classification_weight=0").loss),
        seed=5,
        num_classes=10,
    )
    assert paper.classifier is None and "classification" not in paper.trackers


def test_cosine_schedule_matches_the_formula(tmp_path):
    from hpsh_tf2.training import learning_rate

    config = _config(tmp_path, "train.lr_schedule=cosine", "train.epochs=4")
    schedule = learning_rate(config)
    total = 4 * 5
    for step in (0, 5, 10, 15, 20, 30):
        expected = 0.001 * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5, atol=1e-9)
    assert learning_rate(_config(tmp_path, "train.lr_schedule=constant")) == 0.001


def test_cosine_schedule_restarts_when_the_epoch_count_changes(aid_features, tmp_path):
    inputs = subset_inputs(aid_features.labels, features=aid_features.features)
    cosine = ("train.lr_schedule=cosine",)
    fit_hash_model(_config(tmp_path, "train.epochs=1", *cosine), train_inputs=inputs, verbose=0)
    longer = fit_hash_model(
        _config(tmp_path, "train.epochs=2", *cosine), train_inputs=inputs, verbose=0
    )
    assert len(longer.history["loss"]) == 2  # another schedule: started afresh


def test_early_stopping_keeps_the_best_epoch(aid_features, tmp_path):
    train_rows, val_rows = _split_rows(aid_features.labels)
    train_in = subset_inputs(
        aid_features.labels[train_rows], features=aid_features.features[train_rows]
    )
    val_in = subset_inputs(aid_features.labels[val_rows], features=aid_features.features[val_rows])
    # A learning rate too small to change any code: epoch 1 stays the best, patience 2 stops
    # training after epoch 3 of 10.
    config = _config(
        tmp_path,
        "train.epochs=10",
        "train.lr_schedule=constant",
        "train.learning_rate=1.0e-12",
        "train.early_stopping_patience=2",
        "data.split.train=0.5",
        "data.split.val=0.1",
        "eval.k=5",
    )
    result = fit_hash_model(config, train_inputs=train_in, val_inputs=val_in, verbose=0)
    assert len(result.history["loss"]) == 3
    assert result.selected_epoch == 1
    summary = json.loads((result.model_dir / "train_summary.json").read_text())
    assert summary["stopped_early"] is True and summary["epochs_run"] == 3
    # Patience 0: all epochs run.
    full = fit_hash_model(
        _config(tmp_path / "full", "train.epochs=4", "train.learning_rate=1.0e-12", "eval.k=5"),
        train_inputs=train_in,
        val_inputs=val_in,
        verbose=0,
    )
    assert len(full.history["loss"]) == 4
    assert json.loads((full.model_dir / "train_summary.json").read_text())["stopped_early"] is False


def test_input_dropout_is_training_only(aid_features, tmp_path):
    inputs = subset_inputs(aid_features.labels, features=aid_features.features)
    config = _config(tmp_path, "model.input_dropout=0.5", "train.epochs=1")
    result = fit_hash_model(config, train_inputs=inputs, verbose=0)
    model = keras.saving.load_model(result.hash_model_path)
    assert model.get_layer("hash_head").input_dropout == 0.5
    x = aid_features.features[:16]
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))
    assert not np.allclose(model(x, training=True), model(x, training=False))
