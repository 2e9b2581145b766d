"""Tests of hpsh_tf2.models.head: the HPSH hash head and the models built around it."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest

from hpsh_tf2.models.head import HashHead, build_hash_model, build_image_hash_model, seed_kernels


def _features(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    """Non-negative inputs, like pooled backbone features."""
    return np.random.default_rng(seed).uniform(0.0, 1.0, size=(rows, dim)).astype(np.float32)


def _numpy_head(x: np.ndarray, weights: list[np.ndarray], slope: float = 0.2) -> np.ndarray:
    """Reference forward pass: (Dense, LeakyReLU) x2, Dense, sigmoid, in float64."""
    h = x.astype(np.float64)
    pairs = list(zip(weights[0::2], weights[1::2], strict=True))
    for kernel, bias in pairs[:-1]:
        z = h @ kernel + bias
        h = np.where(z > 0, z, slope * z)
    kernel, bias = pairs[-1]
    return 1.0 / (1.0 + np.exp(-(h @ kernel + bias)))


def _randomise(model: keras.Model, seed: int) -> None:
    """Replace every weight (biases included) with random values, to tell loads from inits."""
    rng = np.random.default_rng(seed)
    model.set_weights(
        [rng.normal(0.0, 0.05, size=w.shape).astype(np.float32) for w in model.get_weights()]
    )


class TestArchitecture:
    @pytest.mark.parametrize("bits", [16, 32, 48, 64])
    def test_parameter_count(self, bits: int) -> None:
        model = build_hash_model(2048, bits=bits)
        assert model.count_params() == 2_622_976 + 513 * bits
        assert model.output_shape == (None, bits)

    def test_parameter_count_k32_from_spec(self) -> None:
        assert build_hash_model(2048, bits=32).count_params() == 2_639_392

    def test_layer_shapes(self) -> None:
        model = build_hash_model(2048, bits=24)
        shapes = [w.shape for w in model.get_weights()]
        assert shapes == [(2048, 1024), (1024,), (1024, 512), (512,), (512, 24), (24,)]

    def test_custom_hidden_units(self) -> None:
        model = build_hash_model(10, bits=8, hidden_units=(6,))
        assert [w.shape for w in model.get_weights()] == [(10, 6), (6,), (6, 8), (8,)]

    def test_forward_matches_numpy(self) -> None:
        model = build_hash_model(64, bits=16, hidden_units=(32, 24), leaky_relu_slope=0.3)
        _randomise(model, 1)
        x = np.random.default_rng(2).normal(size=(5, 64)).astype(np.float32)
        expected = _numpy_head(x, model.get_weights(), slope=0.3)
        np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-5, atol=1e-6)


class TestInitialisation:
    def test_bounds_and_zero_biases(self) -> None:
        bits = 32
        weights = build_hash_model(2048, bits=bits).get_weights()
        kernels, biases = weights[0::2], weights[1::2]
        expected_bounds = [0.0625, 0.08839, 0.14852]  # docs/method.md section 3, K = 32
        for kernel, bound in zip(kernels, expected_bounds, strict=True):
            fan_in, fan_out = kernel.shape
            a = math.sqrt(12.0 / (fan_in + fan_out))
            assert a == pytest.approx(bound, abs=1e-5)
            assert np.abs(kernel).max() <= a
            assert np.abs(kernel).max() >= 0.99 * a
            # U(-a, a) has mean 0 and variance a^2 / 3.
            assert abs(kernel.mean()) < 0.01 * a
            assert kernel.var() == pytest.approx(a * a / 3.0, rel=0.05)
        for bias in biases:
            np.testing.assert_array_equal(bias, 0.0)

    def test_same_seed_same_weights(self) -> None:
        first = build_hash_model(128, bits=16, seed=5).get_weights()
        second = build_hash_model(128, bits=16, seed=5).get_weights()
        for a, b in zip(first, second, strict=True):
            np.testing.assert_array_equal(a, b)

    def test_different_seed_different_weights(self) -> None:
        first = build_hash_model(128, bits=16, seed=5).get_weights()
        second = build_hash_model(128, bits=16, seed=6).get_weights()
        assert not np.array_equal(first[0], second[0])

    def test_layers_do_not_share_a_stream(self) -> None:
        kernels = build_hash_model(64, bits=64, hidden_units=(64, 64), seed=9).get_weights()[0::2]
        assert not np.allclose(kernels[0], kernels[1])
        assert not np.allclose(kernels[1], kernels[2])


class TestOutputs:
    def test_range_shape_dtype(self) -> None:
        head = HashHead(bits=32)
        out = head(_features(7, 2048))
        values = np.asarray(out)
        assert values.shape == (7, 32)
        assert values.dtype == np.float32
        assert np.all((values > 0.0) & (values < 1.0))

    def test_batched_leading_axes(self) -> None:
        head = HashHead(bits=8, hidden_units=(4,))
        out = np.asarray(head(np.zeros((2, 3, 5), np.float32)))
        assert out.shape == (2, 3, 8)
        np.testing.assert_allclose(out, 0.5)  # zero input, zero biases -> sigmoid(0)

    def test_mixed_bfloat16_outputs_float32(self) -> None:
        mixed = HashHead(bits=16, dtype="mixed_bfloat16")
        x = _features(4, 256)
        out = mixed(x)
        assert out.dtype == "float32"
        assert all(layer.compute_dtype == "bfloat16" for layer in mixed.dense_layers)
        assert all(w.dtype == "float32" for w in mixed.weights)
        reference = HashHead(bits=16)
        reference(x)
        reference.set_weights(mixed.get_weights())
        np.testing.assert_allclose(np.asarray(out), np.asarray(reference(x)), atol=3e-2)
        assert np.all((np.asarray(out) > 0.0) & (np.asarray(out) < 1.0))

    @pytest.mark.parametrize("bits", [7, 0, 12, -8])
    def test_bits_validation(self, bits: int) -> None:
        with pytest.raises(ValueError, match=rf"bits={bits}\b.*positive multiple of 8"):
            HashHead(bits=bits)

    def test_bits_must_be_int(self) -> None:
        with pytest.raises(ValueError, match=r"bits=16\.0"):
            HashHead(bits=16.0)

    def test_hidden_units_validation(self) -> None:
        with pytest.raises(ValueError, match="hidden_units"):
            HashHead(bits=8, hidden_units=(16, 0))

    def test_input_dim_validation(self) -> None:
        with pytest.raises(ValueError, match="input_dim=0"):
            build_hash_model(0, bits=8)


def _original_global_draws(input_dim: int, units: list[int], seed: int) -> list[np.ndarray]:
    """The original's recipe through NumPy's *global* generator, state restored afterwards.

    The legacy global API is the point here (NPY002 is silenced on purpose).
    """
    saved = np.random.get_state()  # noqa: NPY002
    try:
        np.random.seed(seed)  # noqa: NPY002
        kernels, fan_in = [], input_dim
        for fan_out in units:
            stdev = np.sqrt(4.0 / (fan_in + fan_out))  # he_init of a 1x1 filter
            values = np.random.uniform(  # noqa: NPY002
                low=-stdev * np.sqrt(3), high=stdev * np.sqrt(3), size=(1, 1, fan_in, fan_out)
            ).astype("float32")
            kernels.append(values[0, 0])
            fan_in = fan_out
        return kernels
    finally:
        np.random.set_state(saved)  # noqa: NPY002


class TestSeedInitialisation:
    def test_seed_kernels_replay_the_global_numpy_stream(self) -> None:
        state = np.random.get_state()[1].copy()  # noqa: NPY002
        got = seed_kernels(2048, [1024, 512, 32], seed=123)
        after = np.random.get_state()[1]  # noqa: NPY002
        np.testing.assert_array_equal(after, state)  # the global generator is untouched
        expected = _original_global_draws(2048, [1024, 512, 32], seed=123)
        for a, b in zip(got, expected, strict=True):
            assert a.dtype == np.float32
            np.testing.assert_array_equal(a, b)

    def test_bounds_from_the_spec(self) -> None:
        kernels = seed_kernels(2048, [1024, 512, 32])
        for kernel, bound in zip(kernels, [0.0625, 0.08839, 0.14852], strict=True):
            assert np.abs(kernel).max() <= bound + 1e-5
            assert np.abs(kernel).max() >= 0.99 * bound

    def test_layers_continue_one_stream(self) -> None:
        # Layer 2 starts where layer 1's draws end: its first value is draw number 2048 * 1024.
        first, second, _ = seed_kernels(2048, [1024, 512, 16], seed=7)
        rng = np.random.RandomState(7)
        rng.random_sample(2048 * 1024)
        bound = np.sqrt(3) * np.sqrt(4.0 / (1024 + 512))
        assert second[0, 0] == np.float32(-bound + 2 * bound * rng.random_sample())
        assert not np.array_equal(first[:1024, :512], second)

    def test_head_uses_the_seed_kernels(self) -> None:
        model = build_hash_model(96, bits=16, hidden_units=(48, 24), seed=11, init="original")
        weights = model.get_weights()
        for got, expected in zip(weights[0::2], seed_kernels(96, [48, 24, 16], 11), strict=True):
            np.testing.assert_array_equal(got, expected)
        for bias in weights[1::2]:
            np.testing.assert_array_equal(bias, 0.0)
        keras_init = build_hash_model(96, bits=16, hidden_units=(48, 24), seed=11).get_weights()
        assert not np.array_equal(keras_init[0], weights[0])

    def test_round_trip_and_reload_keep_trained_weights(self, tmp_path: Path) -> None:
        model = build_hash_model(40, bits=8, hidden_units=(16,), seed=2, init="original")
        head = model.get_layer("hash_head")
        assert head.get_config()["init"] == "original"
        assert HashHead.from_config(head.get_config()).get_config() == head.get_config()
        _randomise(model, 5)  # reloading must restore these, not re-draw the initial kernels
        model.save(tmp_path / "head.keras")
        loaded = keras.saving.load_model(tmp_path / "head.keras")
        x = _features(4, 40)
        np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-7)

    def test_validation(self) -> None:
        with pytest.raises(ValueError, match="init='numpy'"):
            HashHead(bits=8, init="numpy")
        with pytest.raises(ValueError, match="seed=None with init='original'"):
            HashHead(bits=8, seed=None, init="original")
        with pytest.raises(TypeError, match=r"seed=1\.5; expected an int"):
            HashHead(bits=8, seed=1.5)
        with pytest.raises(TypeError, match="seed=True; expected an int"):
            HashHead(bits=8, seed=True, init="original")

    def test_deprecated_seed_init_is_original(self) -> None:
        with pytest.warns(
            DeprecationWarning, match="init='seed' is deprecated; use init='original'"
        ):
            old = HashHead(bits=8, hidden_units=(16,), seed=4, init="seed")
        assert old.init == "original" and old.get_config()["init"] == "original"
        new = HashHead(bits=8, hidden_units=(16,), seed=4, init="original")
        x = _features(3, 12)
        np.testing.assert_array_equal(np.asarray(old(x)), np.asarray(new(x)))


class TestSerialisation:
    def test_config_round_trip(self) -> None:
        head = HashHead(bits=24, hidden_units=(48, 32), leaky_relu_slope=0.1, seed=None)
        config = head.get_config()
        assert config["bits"] == 24
        assert config["hidden_units"] == [48, 32]
        assert config["leaky_relu_slope"] == pytest.approx(0.1)
        assert config["seed"] is None
        clone = HashHead.from_config(config)
        assert clone.get_config() == config
        x = _features(3, 20)
        head(x)
        clone(x)
        assert not np.allclose(np.asarray(head(x)), np.asarray(clone(x)))  # seed None: differ
        clone.set_weights(head.get_weights())
        np.testing.assert_array_equal(np.asarray(clone(x)), np.asarray(head(x)))

    def test_dtype_policy_survives_config(self) -> None:
        head = HashHead(bits=8, dtype="mixed_bfloat16")
        clone = HashHead.from_config(head.get_config())
        assert clone.dtype_policy.name == "mixed_bfloat16"

    def test_save_and_load_keras_file(self, tmp_path: Path) -> None:
        model = build_hash_model(40, bits=16, hidden_units=(24, 12), seed=3)
        _randomise(model, 4)
        path = tmp_path / "head.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        x = _features(6, 40)
        np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-7)
        head = loaded.get_layer("hash_head")
        assert isinstance(head, HashHead)
        assert head.get_config()["hidden_units"] == [24, 12]


class TestImageHashModel:
    def test_tiny_backbone_composition(self) -> None:
        backbone = keras.Sequential(
            [
                keras.Input((9, 9, 3)),
                keras.layers.Conv2D(
                    5, 3, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(1)
                ),
                keras.layers.GlobalAveragePooling2D(),
            ]
        )
        head = build_hash_model(5, bits=8, hidden_units=(6,))
        _randomise(head, 5)
        model = build_image_hash_model(backbone, head)
        images = np.random.default_rng(3).uniform(-1, 1, size=(4, 9, 9, 3)).astype(np.float32)
        assert model.input_shape == (None, 9, 9, 3)
        assert model.output_shape == (None, 8)
        expected = head(backbone(images)).numpy()
        np.testing.assert_allclose(model(images).numpy(), expected, rtol=1e-6, atol=1e-7)
        # The composite shares (does not copy) the weights of both parts.
        assert model.count_params() == backbone.count_params() + head.count_params()

    def test_inception_composition(
        self, inception_backbone: keras.Model, inception_inputs: np.ndarray
    ) -> None:
        head = build_hash_model(2048, bits=32)
        model = build_image_hash_model(inception_backbone, head, name="e2e")
        assert model.name == "e2e"
        assert model.output_shape == (None, 32)
        got = model(inception_inputs, training=False).numpy()
        features = inception_backbone(inception_inputs, training=False).numpy()
        expected = _numpy_head(features, head.get_weights())
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        assert np.all((got > 0.0) & (got < 1.0))


class TestInputDropout:
    def test_inference_unchanged_training_drops_inputs(self) -> None:
        x = _features(64, 40)
        plain = build_hash_model(40, bits=16, hidden_units=(24, 16), seed=3)
        dropped = build_hash_model(40, bits=16, hidden_units=(24, 16), seed=3, input_dropout=0.5)
        np.testing.assert_array_equal(plain.get_weights()[0], dropped.get_weights()[0])
        reference = _numpy_head(x, plain.get_weights())
        # Inference: dropout is a no-op, the forward pass is the plain head's.
        np.testing.assert_allclose(dropped(x, training=False), reference, rtol=1e-5, atol=1e-6)
        # Training: inputs are dropped, so the scores differ (the plain head does not change).
        trained = np.asarray(dropped(x, training=True))
        assert not np.allclose(trained, reference, atol=1e-4)
        plain_out = np.asarray(plain(x, training=True))
        np.testing.assert_allclose(plain_out, reference, rtol=1e-5, atol=1e-6)

    def test_dropout_rate_is_a_fraction_of_inputs(self) -> None:
        head = HashHead(bits=8, hidden_units=(4,), seed=1, input_dropout=0.3)
        x = np.ones((2000, 50), np.float32)
        kept = np.asarray(head.dropout(x, training=True))
        assert set(np.unique(kept)).issubset({0.0, np.float32(1 / 0.7)})
        assert abs((kept == 0).mean() - 0.3) < 0.01

    def test_config_round_trip_and_validation(self, tmp_path: Path) -> None:
        model = build_hash_model(12, bits=8, hidden_units=(6,), input_dropout=0.25)
        head = model.get_layer("hash_head")
        assert HashHead.from_config(head.get_config()).input_dropout == 0.25
        path = tmp_path / "m.keras"
        model.save(path)
        loaded = keras.models.load_model(path)
        x = _features(5, 12)
        np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)
        assert loaded.get_layer("hash_head").input_dropout == 0.25
        for rate in (1.0, -0.1, True):
            with pytest.raises(ValueError, match="input_dropout"):
                HashHead(bits=8, input_dropout=rate)


def test_input_norm_standardize_and_l2_match_numpy(tmp_path):
    rng = np.random.default_rng(0)
    features = (rng.random((40, 12)) * 1e-4 + 5e-5).astype(np.float32)  # tiny, positive
    model = build_hash_model(12, bits=8, hidden_units=(6,), input_norm="standardize", seed=1)
    head = model.get_layer("hash_head")
    head.set_input_statistics(features)
    mean, std = features.astype(np.float64).mean(0), features.astype(np.float64).std(0)
    np.testing.assert_allclose(head.input_mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(head.input_scale.numpy(), 1 / std, rtol=1e-4)
    # The head on raw features equals a plain head on NumPy-standardised features.
    plain = build_hash_model(12, bits=8, hidden_units=(6,), seed=1)
    standardised = ((features - mean) / std).astype(np.float32)
    np.testing.assert_allclose(model(features).numpy(), plain(standardised).numpy(), atol=1e-5)
    # The statistics are saved with the model.
    path = tmp_path / "head.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded(features).numpy(), model(features).numpy(), atol=1e-6)
    # l2: rows scaled to norm sqrt(D), stateless.
    l2 = build_hash_model(12, bits=8, hidden_units=(6,), input_norm="l2", seed=1)
    scaled = features / np.linalg.norm(features, axis=1, keepdims=True) * np.sqrt(12)
    np.testing.assert_allclose(l2(features).numpy(), plain(scaled).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="input_norm='standardize'"):
        l2.get_layer("hash_head").set_input_statistics(features)
