"""Tests for hpsh_tf2.samplers: the configured triplet sampler and make_sampler."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from hpsh_tf2.config import Config, SamplerConfig, apply_overrides
from hpsh_tf2.ops.sampling import sample_triplets
from hpsh_tf2.registry import SAMPLERS
from hpsh_tf2.samplers import TripletSampler, make_sampler


def _batch(classes: int = 4, k: int = 5, bits: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    s = 1 / (
        1 + np.exp(-(rng.normal(size=(classes, 1, bits)) + rng.normal(size=(classes, k, bits))))
    )
    s = s.reshape(classes * k, bits)
    e = s / np.linalg.norm(s, axis=1, keepdims=True)
    return e.astype(np.float32), np.repeat(np.arange(classes), k)


def _from(config: Config) -> TripletSampler:
    return make_sampler(
        config.sampler,
        samples_per_class=config.train.samples_per_class,
        default_cutoff=config.loss.alpha + config.loss.beta,
    )


@pytest.mark.parametrize("mode", SAMPLERS.names())
def test_call_equals_sample_triplets(mode: str) -> None:
    e, labels = _batch()
    sampler = TripletSampler(samples_per_class=5, mode=mode, cutoff=0.4, nonzero_loss_cutoff=1.3)
    got = sampler(e, labels, tf.constant([3, 4]))
    ref = sample_triplets(
        e,
        labels,
        samples_per_class=5,
        mode=mode,
        cutoff=0.4,
        nonzero_loss_cutoff=1.3,
        seed=[3, 4],
    )
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_array_equal(g.numpy(), r.numpy())
    assert got[0].shape == (20 * 4,)


def test_call_works_under_tf_function() -> None:
    e, labels = _batch(seed=1)
    sampler = TripletSampler(samples_per_class=5)
    graph = tf.function(lambda x, y, s: sampler(x, y, s))(e, labels, tf.constant([1, 1]))
    eager = sampler(e, labels, tf.constant([1, 1]))
    for g, r in zip(graph, eager, strict=True):
        np.testing.assert_array_equal(g.numpy(), r.numpy())


def test_default_nonzero_loss_cutoff_per_mode() -> None:
    assert TripletSampler(samples_per_class=2).nonzero_loss_cutoff == 0.9
    assert TripletSampler(samples_per_class=2, mode="original").nonzero_loss_cutoff == 1.4
    explicit = TripletSampler(samples_per_class=2, mode="original", nonzero_loss_cutoff=1.1)
    assert explicit.nonzero_loss_cutoff == 1.1


def test_make_sampler_follows_the_config() -> None:
    default = _from(Config())
    assert default == TripletSampler(samples_per_class=5, mode="hpsh", nonzero_loss_cutoff=0.9)
    assert default.nonzero_loss_cutoff == 0.9  # 0.3 + 0.6 rounded, not 0.8999999999999999
    margins = _from(apply_overrides(Config(), ["loss.alpha=0.25", "loss.beta=0.5"]))
    assert margins.nonzero_loss_cutoff == 0.75
    original = _from(
        apply_overrides(
            Config(),
            ["sampler.mode=original", "sampler.empty_rows=error", "train.samples_per_class=3"],
        )
    )
    assert (original.mode, original.empty_rows, original.samples_per_class) == (
        "original",
        "error",
        3,
    )
    assert original.nonzero_loss_cutoff == 1.4  # not alpha + beta
    explicit = _from(
        apply_overrides(Config(), ["sampler.nonzero_loss_cutoff=1.1", "sampler.cutoff=0.3"])
    )
    assert (explicit.nonzero_loss_cutoff, explicit.cutoff) == (1.1, 0.3)


def test_make_sampler_maps_the_deprecated_mode() -> None:
    section = SamplerConfig(mode="seed")  # built directly, not through load_config
    with pytest.warns(DeprecationWarning, match="mode='seed' is deprecated"):
        sampler = make_sampler(section, samples_per_class=4, default_cutoff=0.9)
    assert sampler.mode == "original" and sampler.nonzero_loss_cutoff == 1.4


def test_get_config_round_trip() -> None:
    sampler = TripletSampler(samples_per_class=4, mode="semihard", cutoff=0.25)
    config = sampler.get_config()
    assert config == {
        "samples_per_class": 4,
        "mode": "semihard",
        "cutoff": 0.25,
        "nonzero_loss_cutoff": 0.9,
        "empty_rows": "index0",
    }
    assert json.loads(json.dumps(config)) == config
    assert TripletSampler.from_config(config) == sampler
    assert set(config) == {f.name for f in dataclasses.fields(TripletSampler)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        sampler.mode = "hard"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"samples_per_class": 1}, ValueError, r"samples_per_class=1"),
        ({"samples_per_class": True}, TypeError, r"samples_per_class=True"),
        ({"samples_per_class": 3, "mode": "fancy"}, ValueError, r"mode='fancy'"),
        ({"samples_per_class": 3, "cutoff": 0.0}, ValueError, r"cutoff=0\.0"),
        ({"samples_per_class": 3, "nonzero_loss_cutoff": -1.0}, ValueError, r"cutoff=-1\.0"),
        ({"samples_per_class": 3, "empty_rows": "nan"}, ValueError, r"empty_rows='nan'"),
    ],
)
def test_invalid_options_are_rejected_at_construction(kwargs, error, pattern) -> None:
    with pytest.raises(error, match=pattern):
        TripletSampler(**kwargs)
