"""Training on multi-hot labels: one trainer, label-balanced batches, the multi-label sampler."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np

from hpsh_tf2.config import load_config
from hpsh_tf2.dataset import subset_inputs
from hpsh_tf2.evaluation import relevance
from hpsh_tf2.features import load_feature_file
from hpsh_tf2.training import fit_hash_model
from tests.conftest import REPO_ROOT

_OVERRIDES = [
    "data.root=null",
    "train.epochs=2",
    "train.steps_per_epoch=5",
    "train.classes_per_batch=4",
    "train.samples_per_class=3",
    "train.learning_rate=0.003",
    "model.bits=16",
    "model.hidden_units=[32]",
    "eval.k=5",
]


def test_fit_with_multi_hot_labels_and_validation(tmp_path, synthetic_multilabel_features_path):
    data = load_feature_file(synthetic_multilabel_features_path)
    train, val = np.arange(72), np.arange(72, 96)
    config = load_config(
        REPO_ROOT / "aid.yaml",
        [*_OVERRIDES, "loss.classification_weight=0.1", f"output.workdir={tmp_path}"],
    )
    result = fit_hash_model(
        config,
        train_inputs=subset_inputs(data.labels[train], features=data.features[train]),
        val_inputs=subset_inputs(data.labels[val], features=data.features[val]),
        verbose=0,
    )
    assert np.isfinite(result.history["loss"]).all()
    assert result.selection.startswith("val_map")
    assert 0.0 < result.best_val_map <= 1.0
    scores = keras.saving.load_model(result.hash_model_path).predict(data.features, verbose=0)
    codes = scores > 0.5
    # the codes carry the label structure: items sharing a label are closer in Hamming distance
    distance = (codes[:, None, :] != codes[None, :, :]).sum(-1)
    related = relevance.relevant(data.labels, data.labels) & ~np.eye(96, dtype=bool)
    assert distance[related].mean() < distance[~related].mean()


def test_mirrored_strategy_on_two_logical_cpus_with_multi_hot_labels(
    tmp_path, synthetic_multilabel_features_path
):
    script = textwrap.dedent(
        f"""
        import os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
        )
        from hpsh_tf2.config import load_config
        from hpsh_tf2.features import load_feature_file
        from hpsh_tf2.dataset import subset_inputs
        from hpsh_tf2.training import fit_hash_model, make_strategy
        assert make_strategy("mirrored").num_replicas_in_sync == 2
        fs = load_feature_file({str(synthetic_multilabel_features_path)!r})
        config = load_config(None, {[*_OVERRIDES, "train.strategy=mirrored"]!r}
                             + ["output.workdir={tmp_path}"])
        inputs = subset_inputs(fs.labels, features=fs.features)
        result = fit_hash_model(config, train_inputs=inputs, verbose=0)
        print("LOSS", result.history["loss"][-1])
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loss = float(done.stdout.split("LOSS")[-1])
    assert np.isfinite(loss) and loss > 0
