"""HashTrainer calls the selected loss through its one interface (metric names from the loss)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from hpsh_tf2.config import load_config
from hpsh_tf2.losses.common import similarity_matrix
from hpsh_tf2.losses.dpsh import dpsh_terms
from hpsh_tf2.losses.hashnet import continuation_beta, hashnet_terms, head_logits
from hpsh_tf2.models.head import build_hash_model
from hpsh_tf2.samplers import TripletSampler
from hpsh_tf2.training.trainer import HashTrainer, loss_from_config


def _batch():
    rng = np.random.default_rng(0)
    return rng.normal(size=(12, 8)).astype(np.float32), np.repeat(np.arange(4), 3)


def _heads():
    return (build_hash_model(8, bits=16, hidden_units=(8,), seed=3) for _ in range(2))


def _manual_step(model, x, y, loss_fn):
    optimizer = keras.optimizers.Adam(1e-3)
    with tf.GradientTape() as tape:
        loss = loss_fn(model(x, training=True))
    optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    return float(loss)


@pytest.mark.parametrize("name", ["dpsh", "hashnet"])
def test_pairwise_loss_step_matches_manual_update(name):
    config = load_config(None, [f"loss.name={name}", "model.bits=16"])
    x, y = _batch()
    model_a, model_b = _heads()
    loss = loss_from_config(config, num_classes=4)
    trainer = HashTrainer(model_a, sampler=TripletSampler(3), loss=loss, seed=5)
    assert list(trainer.trackers) == ["loss", *loss.term_names]
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    logs = trainer.train_on_batch(x, y, return_dict=True)

    s = similarity_matrix(y)
    if name == "dpsh":

        def loss_fn(scores):
            return tf.add_n(list(dpsh_terms(2 * scores - 1, s, eta=loss.options.eta).values()))
    else:
        beta = continuation_beta(0, gamma=loss.options.beta_gamma, power=loss.options.beta_power)

        def loss_fn(scores):
            h = tf.tanh(beta * head_logits(scores))
            return hashnet_terms(h, s, alpha=loss.options.alpha)["likelihood"]

    expected = _manual_step(model_b, x, y, loss_fn)
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-5)
    for a, b in zip(model_a.get_weights(), model_b.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_classifier_only_for_losses_that_take_it():
    config = load_config(None, ["loss.name=dpsh", "loss.classification_weight=0.5"])
    model, _ = _heads()
    trainer = HashTrainer(
        model,
        sampler=TripletSampler(3),
        loss=loss_from_config(config, num_classes=4),
        seed=1,
        num_classes=4,
    )
    assert trainer.classifier is None and "classification" not in trainer.trackers
