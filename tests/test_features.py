"""Tests of hpsh_tf2.features: cached, resumable extraction and bring-your-own feature files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import ClassVar

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from hpsh_tf2.errors import BadImageError, DatasetError
from hpsh_tf2.features import FeatureSet, cache_key, extract_features, load_feature_file

NUM_IMAGES = 12
SOURCE_SIZE = 8


class Factory:
    """A model factory that counts its calls; its model averages the preprocessed image.

    The model counts the images it forwards (a ``tf.Variable``, so the count is right inside
    ``tf.function``) and, with ``fail_after``, raises on batch ``fail_after + 1`` to simulate an
    interrupted run.
    """

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after
        self.images = tf.Variable(0, dtype=tf.int64)
        self.batches = tf.Variable(0, dtype=tf.int64)

    def __call__(self) -> keras.Model:
        self.calls += 1
        return keras.Sequential([keras.Input((None, None, 3)), _CountingMean(self)])

    def count(self, x: tf.Tensor) -> None:
        """Records one forwarded batch (fails instead when the crash is due)."""
        limit = self.fail_after if self.fail_after is not None else np.iinfo(np.int64).max
        check = tf.debugging.assert_less(
            self.batches, tf.constant(limit, tf.int64), message="simulated crash"
        )
        with tf.control_dependencies([check]):
            self.batches.assign_add(1)
            self.images.assign_add(tf.shape(x, out_type=tf.int64)[0])


class _CountingMean(keras.layers.Layer):
    """Global average pooling that reports every batch to its :class:`Factory`."""

    def __init__(self, factory: Factory) -> None:
        super().__init__()
        self._factory = factory

    def call(self, x: tf.Tensor) -> tf.Tensor:
        self._factory.count(x)
        return tf.reduce_mean(x, axis=[1, 2])


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, list[str], np.ndarray]:
    """12 random PNGs in two class folders; returns (root, relative paths, pixels)."""
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(NUM_IMAGES, SOURCE_SIZE, SOURCE_SIZE, 3), dtype=np.uint8)
    paths = []
    for i, array in enumerate(pixels):
        rel = f"class_{i % 2}/img_{i:02d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(root / rel)
        paths.append(rel)
    return root, paths, pixels


def _expected(pixels: np.ndarray, image_size: int = SOURCE_SIZE) -> np.ndarray:
    """Mean over the image of the InceptionV3 preprocessing (x / 127.5 - 1), in NumPy."""
    x = pixels.astype(np.float64)
    if image_size != SOURCE_SIZE:
        factor = SOURCE_SIZE // image_size  # bilinear, half-pixel centres: block means
        n, h, w, c = x.shape
        x = x.reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))
    return (x / 127.5 - 1.0).mean(axis=(1, 2))


def _extract(root: Path, paths: list[str], out_dir: Path, **kwargs) -> np.ndarray:
    options = {
        "backbone": "inception_v3",
        "weights": "none",
        "image_size": SOURCE_SIZE,
        "batch_size": 2,
        "chunk_batches": 1,
        "progress": False,
    }
    options.update(kwargs)
    return extract_features(paths=paths, root=root, out_dir=out_dir, **options)


def _gap_factory(calls: list[int], image_size: int = SOURCE_SIZE):
    def make() -> keras.Model:
        calls.append(1)
        return keras.Sequential(
            [keras.Input((image_size, image_size, 3)), keras.layers.GlobalAveragePooling2D()]
        )

    return make


class TestExtractFeatures:
    def test_values_and_order(self, dataset, tmp_path: Path) -> None:
        root, paths, pixels = dataset
        calls: list[int] = []
        out_dir = tmp_path / "features"
        features = _extract(
            root, paths, out_dir, batch_size=5, chunk_batches=2, model_factory=_gap_factory(calls)
        )
        assert calls == [1]
        assert features.shape == (NUM_IMAGES, 3) and features.dtype == np.float32
        np.testing.assert_allclose(features, _expected(pixels), atol=1e-5)
        np.testing.assert_array_equal(np.load(out_dir / "features.npy"), features)
        meta = json.loads((out_dir / "cache.json").read_text())
        assert meta["complete"] is True and meta["rows"] == NUM_IMAGES
        assert meta["key"] == cache_key(
            backbone="inception_v3", weights="none", image_size=SOURCE_SIZE, paths=paths, root=root
        )
        assert not list(out_dir.glob("part-*.npy"))

    def test_cache_hit_does_not_build_a_model(self, dataset, tmp_path: Path) -> None:
        root, paths, _ = dataset
        out_dir = tmp_path / "features"
        calls: list[int] = []
        first = _extract(root, paths, out_dir, model_factory=_gap_factory(calls))
        second = _extract(root, paths, out_dir, model_factory=_gap_factory(calls))
        assert calls == [1]
        np.testing.assert_array_equal(second, first)

    def test_image_size_change_recomputes(self, dataset, tmp_path: Path) -> None:
        root, paths, pixels = dataset
        out_dir = tmp_path / "features"
        calls: list[int] = []
        _extract(root, paths, out_dir, model_factory=_gap_factory(calls))
        half = _extract(root, paths, out_dir, image_size=4, model_factory=_gap_factory(calls, 4))
        assert len(calls) == 2
        np.testing.assert_allclose(half, _expected(pixels, image_size=4), atol=1e-5)

    def test_paths_change_recomputes_in_new_order(self, dataset, tmp_path: Path) -> None:
        root, paths, pixels = dataset
        out_dir = tmp_path / "features"
        calls: list[int] = []
        _extract(root, paths, out_dir, model_factory=_gap_factory(calls))
        order = [7, 2, 9, 0, 4]
        subset = _extract(
            root, [paths[i] for i in order], out_dir, model_factory=_gap_factory(calls)
        )
        assert len(calls) == 2
        np.testing.assert_allclose(subset, _expected(pixels[order]), atol=1e-5)

    def test_resume_after_interruption(self, dataset, tmp_path: Path) -> None:
        root, paths, pixels = dataset
        out_dir = tmp_path / "features"
        crashed = Factory(fail_after=3)
        with pytest.raises(tf.errors.InvalidArgumentError, match="simulated crash"):
            _extract(root, paths, out_dir, model_factory=crashed)
        assert int(crashed.images.numpy()) == 6  # three batches of two, then the crash
        assert len(list(out_dir.glob("part-*.npy"))) == 3
        assert json.loads((out_dir / "cache.json").read_text())["complete"] is False
        assert not (out_dir / "features.npy").exists()

        resumed = Factory()
        features = _extract(root, paths, out_dir, model_factory=resumed)
        assert resumed.calls == 1
        assert int(resumed.images.numpy()) == NUM_IMAGES - 6  # only the rest is computed

        clean = Factory()
        reference = _extract(root, paths, tmp_path / "clean", model_factory=clean)
        assert int(clean.images.numpy()) == NUM_IMAGES
        np.testing.assert_array_equal(features, reference)
        np.testing.assert_allclose(features, _expected(pixels), atol=1e-5)

    def test_resume_from_precreated_parts(self, dataset, tmp_path: Path) -> None:
        root, paths, pixels = dataset
        out_dir = tmp_path / "features"
        out_dir.mkdir()
        key = cache_key(
            backbone="inception_v3", weights="none", image_size=8, paths=paths, root=root
        )
        (out_dir / "cache.json").write_text(json.dumps({"key": key, "complete": False}))
        # Deliberately wrong values in the part: a resume must keep them, not recompute them.
        np.save(out_dir / "part-00000.npy", np.full((5, 3), 42.0, np.float32))
        counter = Factory()
        features = _extract(root, paths, out_dir, model_factory=counter)
        assert int(counter.images.numpy()) == NUM_IMAGES - 5
        np.testing.assert_array_equal(features[:5], 42.0)
        np.testing.assert_allclose(features[5:], _expected(pixels[5:]), atol=1e-5)

    def test_interruption_while_removing_parts(
        self, dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        root, paths, pixels = dataset
        out_dir = tmp_path / "features"
        original_unlink = Path.unlink

        class Interrupted(Exception):
            pass

        def unlink_once(self: Path, missing_ok: bool = False) -> None:
            if self.name == "part-00001.npy":
                raise Interrupted
            original_unlink(self, missing_ok=missing_ok)

        monkeypatch.setattr(Path, "unlink", unlink_once)
        with pytest.raises(Interrupted):
            _extract(root, paths, out_dir, model_factory=Factory())
        monkeypatch.setattr(Path, "unlink", original_unlink)
        counter = Factory()
        features = _extract(root, paths, out_dir, model_factory=counter)
        assert counter.calls == 0
        np.testing.assert_allclose(features, _expected(pixels), atol=1e-5)

    def test_key_change_keeps_unrelated_files(self, dataset, tmp_path: Path) -> None:
        root, paths, _ = dataset
        out_dir = tmp_path / "features"
        out_dir.mkdir()
        (out_dir / "notes.txt").write_text("mine")
        _extract(root, paths, out_dir, model_factory=Factory())
        _extract(root, paths[:4], out_dir, model_factory=Factory())
        assert (out_dir / "notes.txt").read_text() == "mine"
        assert len(np.load(out_dir / "features.npy")) == 4

    def test_corrupt_cache_json_recomputes(self, dataset, tmp_path: Path) -> None:
        root, paths, pixels = dataset
        out_dir = tmp_path / "features"
        _extract(root, paths, out_dir, model_factory=Factory())
        (out_dir / "cache.json").write_text("{not json")
        counter = Factory()
        features = _extract(root, paths, out_dir, model_factory=counter)
        assert int(counter.images.numpy()) == NUM_IMAGES
        np.testing.assert_allclose(features, _expected(pixels), atol=1e-5)


class TestInPlaceEdits:
    def test_image_replaced_under_the_same_name_misses_the_cache(
        self, dataset, tmp_path: Path
    ) -> None:
        root, paths, pixels = dataset
        out_dir = tmp_path / "features"
        calls: list[int] = []
        first = _extract(root, paths, out_dir, model_factory=_gap_factory(calls))
        np.testing.assert_allclose(first, _expected(pixels), atol=1e-5)
        # overwrite image 3 with image 4's pixels (same name, same size in bytes or not)
        target = root / paths[3]
        before = target.stat().st_mtime_ns
        Image.fromarray(pixels[4]).save(target)
        os.utime(target, ns=(before + 1_000_000, before + 1_000_000))
        second = _extract(root, paths, out_dir, model_factory=_gap_factory(calls))
        assert calls == [1, 1], "the edit must not be a cache hit"
        expected = _expected(pixels)
        expected[3] = expected[4]
        np.testing.assert_allclose(second, expected, atol=1e-5)
        # unchanged files: a hit again
        _extract(root, paths, out_dir, model_factory=_gap_factory(calls))
        assert calls == [1, 1]

    def test_content_hash_sees_an_edit_that_keeps_size_and_mtime(
        self, dataset, tmp_path: Path
    ) -> None:
        root, paths, _ = dataset
        target = root / paths[0]
        stat = target.stat()

        def key(content: bool) -> str:
            return cache_key(
                backbone="b",
                weights="none",
                image_size=8,
                paths=paths,
                root=root,
                content_hash=content,
            )

        keys = {content: key(content) for content in (False, True)}
        data = bytearray(target.read_bytes())
        data[-13] ^= 0xFF  # same length
        target.write_bytes(bytes(data))
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        for content in (False, True):
            # size + mtime_ns cannot see this edit; the content hash does
            assert (key(content) == keys[content]) is (not content)

    def test_missing_image_is_named(self, dataset, tmp_path: Path) -> None:
        root, paths, _ = dataset
        (root / paths[5]).unlink()
        with pytest.raises(DatasetError, match=paths[5]):
            _extract(root, paths, tmp_path / "features", model_factory=_gap_factory([]))

    def test_undecodable_image_found_late_is_named(self, dataset, tmp_path: Path) -> None:
        # data.verify_images=false: the scan did not decode the files, extraction hits it
        root, paths, _ = dataset
        bad = root / paths[7]
        bad.write_bytes(bad.read_bytes()[:40])  # truncated PNG
        with pytest.raises(BadImageError) as info:
            _extract(root, paths, tmp_path / "features", model_factory=_gap_factory([]))
        assert info.value.path == str(bad)
        assert "verify_images" in str(info.value)


class TestCacheKey:
    BASE: ClassVar[dict] = {
        "backbone": "inception_v3",
        "weights": "imagenet",
        "image_size": 299,
        "paths": ["a/1.jpg", "b/2.jpg"],
    }

    def _key(self, **changes) -> str:
        return cache_key(**{**self.BASE, **changes})

    def test_stable(self) -> None:
        assert self._key() == self._key()
        assert self._key(weights="ImageNet") == self._key()
        assert self._key(paths=("a/1.jpg", "b/2.jpg")) == self._key()

    @pytest.mark.parametrize(
        "changes",
        [
            {"backbone": "resnet50"},
            {"weights": "none"},
            {"image_size": 224},
            {"paths": ["b/2.jpg", "a/1.jpg"]},
            {"paths": ["a/1.jpg"]},
            {"paths": ["a/1.jpgb/2.jpg"]},
            {"paths": ["a/1.jp", "gb/2.jpg"]},
        ],
        ids=["backbone", "weights", "size", "order", "subset", "joined", "split"],
    )
    def test_sensitive(self, changes: dict) -> None:
        assert self._key(**changes) != self._key()

    def test_local_weights_file_content(self, tmp_path: Path) -> None:
        weights = tmp_path / "w.h5"
        weights.write_bytes(b"1234")
        os.utime(weights, (1_000_000, 1_000_000))
        first = self._key(weights=str(weights))
        assert first == self._key(weights=str(weights))
        weights.write_bytes(b"123456")
        os.utime(weights, (1_000_000, 1_000_000))
        assert self._key(weights=str(weights)) != first  # size changed
        weights.write_bytes(b"1234")
        os.utime(weights, (2_000_000, 2_000_000))
        assert self._key(weights=str(weights)) != first  # modification time changed


def _save_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _valid_arrays() -> dict[str, np.ndarray]:
    return {
        "features": np.arange(12, dtype=np.float32).reshape(4, 3),
        "labels": np.array([0, 1, 2, 1], np.int64),
        "paths": np.array(["a/1.jpg", "b/1.jpg", "c/1.jpg", "b/2.jpg"]),
        "class_names": np.array(["a", "b", "c"]),
    }


class TestLoadFeatureFile:
    def test_real_aid_features(self, aid_features_path: Path) -> None:
        loaded = load_feature_file(aid_features_path)
        assert isinstance(loaded, FeatureSet)
        assert loaded.features.shape == (300, 1280) and loaded.features.dtype == np.float32
        assert loaded.labels.shape == (300,) and loaded.labels.dtype == np.int32
        assert len(loaded.class_names) == 30 and loaded.class_names[0] == "Airport"
        assert len(set(loaded.paths)) == 300
        assert np.bincount(loaded.labels).tolist() == [10] * 30
        for path, label in zip(loaded.paths, loaded.labels, strict=True):
            assert path.split("/")[0] == loaded.class_names[label]

    def test_valid_file_and_conversions(self, tmp_path: Path) -> None:
        arrays = _valid_arrays()
        arrays["features"] = arrays["features"].astype(np.float64)
        loaded = load_feature_file(_save_npz(tmp_path / "f.npz", **arrays))
        assert loaded.features.dtype == np.float32 and loaded.labels.dtype == np.int32
        np.testing.assert_array_equal(loaded.features, arrays["features"])
        assert loaded.paths == ("a/1.jpg", "b/1.jpg", "c/1.jpg", "b/2.jpg")
        assert loaded.class_names == ("a", "b", "c")

    def test_default_class_names(self, tmp_path: Path) -> None:
        arrays = _valid_arrays()
        del arrays["class_names"]
        loaded = load_feature_file(_save_npz(tmp_path / "f.npz", **arrays))
        assert loaded.class_names == ("class_0", "class_1", "class_2")

    @pytest.mark.parametrize(
        ("array", "value", "message"),
        [
            ("features", np.zeros(4, np.float32), "'features' must be a float array"),
            ("features", np.zeros((4, 3), np.int32), "'features' must be a float array"),
            ("features", np.zeros((4, 3, 1), np.float32), "'features' must be a float array"),
            ("features", np.zeros((0, 3), np.float32), "'features' has no rows"),
            ("labels", np.array([0, 1, 2], np.int64), "'labels' must be an int array"),
            ("labels", np.array([0.0, 1.0, 2.0, 1.0]), "'labels' must be an int array"),
            ("labels", np.array([0, -1, 2, 1]), "'labels' must be >= 0"),
            ("labels", np.array([0, 1, 3, 1]), "label 3 has no entry in 'class_names'"),
            ("paths", np.array([1, 2, 3, 4]), "'paths' must be a string array"),
            ("paths", np.array(["a", "b", "c"]), "'paths' must be a string array"),
            ("paths", np.array(["a", "b", "a", "c"]), "'paths' has duplicate entries"),
        ],
    )
    def test_malformed_array(self, tmp_path: Path, array: str, value, message: str) -> None:
        arrays = _valid_arrays()
        arrays[array] = value
        path = _save_npz(tmp_path / "bad.npz", **arrays)
        with pytest.raises(ValueError, match=message) as info:
            load_feature_file(path)
        assert str(path) in str(info.value)

    def test_nan_features(self, tmp_path: Path) -> None:
        arrays = _valid_arrays()
        arrays["features"][2, 1] = np.nan
        path = _save_npz(tmp_path / "nan.npz", **arrays)
        with pytest.raises(ValueError, match="'features' contains NaN") as info:
            load_feature_file(path)
        assert str(path) in str(info.value)

    @pytest.mark.parametrize("missing", ["features", "labels", "paths"])
    def test_missing_array(self, tmp_path: Path, missing: str) -> None:
        arrays = _valid_arrays()
        del arrays[missing]
        path = _save_npz(tmp_path / "partial.npz", **arrays)
        with pytest.raises(ValueError, match=rf"lacks array\(s\) \['{missing}'\]") as info:
            load_feature_file(path)
        assert str(path) in str(info.value)

    def test_missing_file(self, tmp_path: Path) -> None:
        path = tmp_path / "absent.npz"
        with pytest.raises(ValueError, match="file not found") as info:
            load_feature_file(path)
        assert str(path) in str(info.value)

    @pytest.mark.parametrize("array", ["features", "labels", "paths", "class_names"])
    def test_object_array_names_file_and_array(self, tmp_path: Path, array: str) -> None:
        arrays = _valid_arrays()
        arrays[array] = arrays[array].astype(object)
        path = _save_npz(tmp_path / "obj.npz", **arrays)
        with pytest.raises(DatasetError, match=rf"array '{array}' holds Python objects") as info:
            load_feature_file(path)
        assert str(path) in str(info.value)

    def test_not_an_npz(self, tmp_path: Path) -> None:
        path = tmp_path / "text.npz"
        path.write_text("hello")
        with pytest.raises(ValueError, match=r"not a readable \.npz") as info:
            load_feature_file(path)
        assert str(path) in str(info.value)


def _multi_hot_arrays() -> dict[str, np.ndarray]:
    arrays = _valid_arrays()
    arrays["labels"] = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1]], np.uint8)
    return arrays


class TestLoadMultiHotFeatureFile:
    def test_real_multilabel_mosaics(self, aid_multilabel_path: Path) -> None:
        loaded = load_feature_file(aid_multilabel_path)
        assert loaded.features.shape == (1212, 1280) and loaded.features.dtype == np.float32
        assert loaded.labels.shape == (1212, 30) and loaded.labels.dtype == np.uint8
        # README: 250 / 629 / 333 mosaics hold 1 / 2 / 3 classes
        assert np.bincount(loaded.labels.sum(axis=1)).tolist() == [0, 250, 629, 333]
        assert len(loaded.class_names) == 30

    @pytest.mark.parametrize("dtype", [np.uint8, np.bool_, np.int64])
    def test_multi_hot_labels_load_as_uint8(self, tmp_path: Path, dtype) -> None:
        arrays = _multi_hot_arrays()
        arrays["labels"] = arrays["labels"].astype(dtype)
        loaded = load_feature_file(_save_npz(tmp_path / "m.npz", **arrays))
        assert loaded.labels.dtype == np.uint8
        np.testing.assert_array_equal(loaded.labels, _multi_hot_arrays()["labels"])
        assert loaded.class_names == ("a", "b", "c")

    def test_default_class_names_one_per_column(self, tmp_path: Path) -> None:
        arrays = _multi_hot_arrays()
        del arrays["class_names"]
        loaded = load_feature_file(_save_npz(tmp_path / "m.npz", **arrays))
        assert loaded.class_names == ("class_0", "class_1", "class_2")

    @pytest.mark.parametrize(
        ("labels", "names", "message"),
        [
            (np.array([[1, 0, 2], [1, 1, 0], [0, 0, 1], [0, 1, 1]]), None, "only 0 and 1"),
            (np.full((4, 3), 0.5), None, "must be uint8/bool/int 0-1"),
            (np.array([[1, 0, 0], [0, 0, 0], [0, 0, 1], [0, 1, 1]]), None, "row 1 carries no"),
            (np.ones((4, 3), np.uint8), ["a", "b"], "3 columns"),
        ],
    )
    def test_malformed_multi_hot(self, tmp_path: Path, labels, names, message) -> None:
        arrays = _multi_hot_arrays()
        arrays["labels"] = labels
        if names is not None:
            arrays["class_names"] = np.array(names)
        path = _save_npz(tmp_path / "bad.npz", **arrays)
        with pytest.raises(DatasetError, match=message) as info:
            load_feature_file(path)
        assert str(path) in str(info.value)
