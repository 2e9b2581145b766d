"""Tests of hpsh_tf2.models.backbone: preprocessing, construction and weight handling."""

from __future__ import annotations

from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.utils import file_utils

from hpsh_tf2.models.backbone import (
    BACKBONES,
    WeightsError,
    build_backbone,
    get_backbone_spec,
    keras_cache_path,
    preprocess_images,
    preprocessor,
)

INCEPTION_NOTOP = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"

# Independent reference constants (ImageNet statistics as published with torchvision / Caffe).
IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406])
IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225])
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68])

EXPECTED_MODES = {
    "inception_v3": "tf",
    "resnet50": "caffe",
    "mobilenet_v2": "tf",
    "densenet121": "torch",
    "efficientnet_b0": "none",
}


def _reference_preprocess(x: np.ndarray, mode: str) -> np.ndarray:
    x = x.astype(np.float64)
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "torch":
        return (x / 255.0 - IMAGENET_MEAN_RGB) / IMAGENET_STD_RGB
    if mode == "caffe":
        return x[..., ::-1] - CAFFE_MEAN_BGR
    return x


@pytest.fixture
def pixels() -> np.ndarray:
    rng = np.random.default_rng(0)
    values = rng.uniform(0.0, 255.0, size=(2, 5, 4, 3))
    values[0, 0, 0] = [0.0, 127.5, 255.0]
    return values.astype(np.float32)


class TestPreprocess:
    @pytest.mark.parametrize("name", sorted(BACKBONES))
    def test_matches_numpy_formula(self, name: str, pixels: np.ndarray) -> None:
        assert get_backbone_spec(name).preprocessing == EXPECTED_MODES[name]
        got = preprocess_images(tf.constant(pixels), name).numpy()
        assert got.dtype == np.float32
        np.testing.assert_allclose(
            got, _reference_preprocess(pixels, EXPECTED_MODES[name]), rtol=1e-5, atol=1e-4
        )

    def test_tf_mode_hand_values(self) -> None:
        got = preprocess_images(tf.constant([[[0.0, 127.5, 255.0]]]), "inception_v3").numpy()
        np.testing.assert_allclose(got, [[[-1.0, 0.0, 1.0]]], atol=1e-6)

    def test_caffe_swaps_channels(self) -> None:
        got = preprocess_images(tf.constant([[[10.0, 20.0, 30.0]]]), "resnet50").numpy()
        np.testing.assert_allclose(
            got, [[[30.0 - 103.939, 20.0 - 116.779, 10.0 - 123.68]]], rtol=1e-6
        )

    def test_uint8_input_is_cast(self, pixels: np.ndarray) -> None:
        as_uint8 = np.rint(pixels).astype(np.uint8)
        got = preprocess_images(tf.constant(as_uint8), "densenet121").numpy()
        np.testing.assert_allclose(got, _reference_preprocess(as_uint8, "torch"), atol=1e-5)

    @pytest.mark.parametrize("name", ["inception_v3", "resnet50", "densenet121"])
    def test_preprocessor_binds_backbone_and_runs_in_graphs(
        self, name: str, pixels: np.ndarray
    ) -> None:
        fn = preprocessor(name)
        expected = _reference_preprocess(pixels, EXPECTED_MODES[name])
        np.testing.assert_allclose(fn(tf.constant(pixels)).numpy(), expected, atol=1e-4)
        graph = tf.function(fn)(tf.constant(pixels)).numpy()
        np.testing.assert_allclose(graph, expected, atol=1e-4)
        mapped = next(iter(tf.data.Dataset.from_tensor_slices(pixels).map(fn).batch(2)))
        np.testing.assert_allclose(mapped.numpy(), expected, atol=1e-4)

    def test_unknown_backbone_lists_names(self) -> None:
        with pytest.raises(ValueError, match="vgg99") as info:
            preprocessor("vgg99")
        for name in BACKBONES:
            assert name in str(info.value)


class TestBuild:
    def test_inception_output_shape(
        self, inception_backbone: keras.Model, inception_inputs: np.ndarray
    ) -> None:
        assert inception_backbone.input_shape == (None, 75, 75, 3)
        out = inception_backbone(inception_inputs, training=False).numpy()
        assert out.shape == (2, 2048)
        assert np.all(np.isfinite(out))
        assert np.all(out >= 0.0)  # global average pool after ReLU

    @pytest.mark.parametrize("name", sorted(set(BACKBONES) - {"inception_v3"}))
    def test_feature_dim_and_min_size_of_every_backbone(self, name: str) -> None:
        spec = BACKBONES[name]
        model = build_backbone(name, weights="none", image_size=spec.min_size)
        assert model.output_shape == (None, spec.feature_dim)

    @pytest.mark.parametrize("name", sorted(BACKBONES))
    def test_image_size_below_minimum(self, name: str) -> None:
        spec = BACKBONES[name]
        with pytest.raises(ValueError, match=rf"image_size={spec.min_size - 1}\b") as info:
            build_backbone(name, weights="none", image_size=spec.min_size - 1)
        assert str(spec.min_size) in str(info.value)

    def test_unknown_backbone_lists_names(self) -> None:
        with pytest.raises(ValueError, match="'nope'") as info:
            build_backbone("nope", weights="none", image_size=224)
        for name in BACKBONES:
            assert name in str(info.value)

    def test_weights_none_is_case_insensitive_and_seeded(self) -> None:
        first = build_backbone("mobilenet_v2", weights="None", image_size=32, seed=3)
        second = build_backbone("mobilenet_v2", weights="NONE", image_size=32, seed=3)
        other = build_backbone("mobilenet_v2", weights="none", image_size=32, seed=4)
        assert first.output_shape == second.output_shape == (None, 1280)
        # Same seed: the same network (extraction and export must agree); another seed differs.
        for a, b in zip(first.weights, second.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert not np.array_equal(first.weights[0].numpy(), other.weights[0].numpy())


class TestLocalWeights:
    def test_saved_weights_load_identically(
        self,
        inception_backbone: keras.Model,
        inception_inputs: np.ndarray,
        tmp_path: Path,
    ) -> None:
        path = tmp_path / "inception_notop.weights.h5"
        inception_backbone.save_weights(path)
        loaded = build_backbone("inception_v3", weights=str(path), image_size=75)
        expected = inception_backbone(inception_inputs, training=False).numpy()
        got = loaded(inception_inputs, training=False).numpy()
        np.testing.assert_array_equal(got, expected)

    def test_missing_file_names_path(self, tmp_path: Path) -> None:
        path = tmp_path / "absent_notop.h5"
        with pytest.raises(WeightsError, match="not found") as info:
            build_backbone("inception_v3", weights=str(path), image_size=75)
        assert str(path) in str(info.value)
        assert INCEPTION_NOTOP in str(info.value)

    def test_with_top_file_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "inception_with_top.h5"
        with h5py.File(path, "w") as handle:
            handle.attrs["layer_names"] = [b"input_1", b"conv2d", b"avg_pool", b"predictions"]
        with pytest.raises(WeightsError, match="predictions") as info:
            build_backbone("inception_v3", weights=str(path), image_size=75)
        assert str(path) in str(info.value)
        assert INCEPTION_NOTOP in str(info.value)

    def test_with_top_legacy_full_model_file_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "full_model.h5"
        with h5py.File(path, "w") as handle:
            group = handle.create_group("model_weights")
            group.attrs["layer_names"] = [b"conv2d", b"predictions"]
        with pytest.raises(WeightsError, match="no-top"):
            build_backbone("inception_v3", weights=str(path), image_size=75)

    def test_unreadable_file(self, tmp_path: Path) -> None:
        path = tmp_path / "garbage.h5"
        path.write_bytes(b"this is not hdf5")
        with pytest.raises(WeightsError, match="not a readable") as info:
            build_backbone("inception_v3", weights=str(path), image_size=75)
        assert str(path) in str(info.value)

    @pytest.mark.filterwarnings("ignore::UserWarning")  # Keras lists every skipped layer
    def test_weights_of_another_architecture(self, tmp_path: Path) -> None:
        other = build_backbone("mobilenet_v2", weights="none", image_size=75)
        path = tmp_path / "mobilenet.weights.h5"
        other.save_weights(path)
        with pytest.raises(WeightsError, match="does not fit inception_v3") as info:
            build_backbone("inception_v3", weights=str(path), image_size=75)
        assert str(path) in str(info.value)


class TestImagenetWeights:
    @pytest.fixture
    def requested(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
        """Make every Keras download fail (no network is touched); records the file names."""
        monkeypatch.setenv("KERAS_HOME", str(tmp_path))
        names: list[str] = []

        def offline_get_file(fname=None, origin=None, **kwargs):
            names.append(fname)
            raise Exception(f"URL fetch failure on {origin}: None -- name resolution")

        monkeypatch.setattr(file_utils, "get_file", offline_get_file)
        return names

    def test_failed_download_names_cache_path(self, requested: list[str], tmp_path: Path) -> None:
        with pytest.raises(WeightsError, match="URL fetch failure") as info:
            build_backbone("inception_v3", weights="imagenet", image_size=75)
        assert requested == [INCEPTION_NOTOP]
        assert str(tmp_path / "models" / INCEPTION_NOTOP) in str(info.value)

    @pytest.mark.parametrize(
        ("name", "size"),
        [
            ("resnet50", 64),
            ("densenet121", 64),
            ("efficientnet_b0", 64),
            pytest.param(
                "mobilenet_v2",
                75,
                marks=pytest.mark.filterwarnings("ignore:`input_shape` is undefined:UserWarning"),
            ),
            ("mobilenet_v2", 96),
            ("mobilenet_v2", 224),
        ],
    )
    def test_cache_file_name_matches_keras(
        self, name: str, size: int, requested: list[str], tmp_path: Path
    ) -> None:
        spec = BACKBONES[name]
        with pytest.raises(WeightsError) as info:
            build_backbone(name, weights="imagenet", image_size=size)
        assert len(requested) == 1
        expected = tmp_path / "models" / requested[0]
        assert keras_cache_path(spec, size) == expected
        assert str(expected) in str(info.value)

    @pytest.mark.parametrize(
        ("size", "suffix"), [(75, "224"), (96, "96"), (160, "160"), (224, "224"), (256, "224")]
    )
    def test_mobilenet_v2_file_depends_on_size(self, size: int, suffix: str) -> None:
        path = keras_cache_path(BACKBONES["mobilenet_v2"], size)
        assert (
            path.name == f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{suffix}_no_top.h5"
        )

    def test_cached_file_is_used(
        self,
        monkeypatch: pytest.MonkeyPatch,
        inception_backbone: keras.Model,
        inception_inputs: np.ndarray,
        tmp_path: Path,
    ) -> None:
        cached = tmp_path / "cached_notop.weights.h5"
        inception_backbone.save_weights(cached)
        monkeypatch.setattr(file_utils, "get_file", lambda *args, **kwargs: str(cached))
        model = build_backbone("inception_v3", weights="imagenet", image_size=75)
        np.testing.assert_array_equal(
            model(inception_inputs, training=False).numpy(),
            inception_backbone(inception_inputs, training=False).numpy(),
        )


class TestCachePath:
    def test_keras_home(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
        spec = BACKBONES["inception_v3"]
        assert keras_cache_path(spec) == tmp_path / "kh" / "models" / INCEPTION_NOTOP

    def test_default_home(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.delenv("KERAS_HOME", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))
        spec = BACKBONES["resnet50"]
        assert keras_cache_path(spec) == tmp_path / ".keras" / "models" / spec.notop_file
