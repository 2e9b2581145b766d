"""Tests of hpsh_tf2.data.pipeline: the P x K sampler, augmentation, loading and datasets."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from hpsh_tf2.data.pipeline import (
    ClassBalancedSampler,
    augment_image,
    image_dataset,
    load_and_preprocess,
    train_dataset_from_arrays,
    train_dataset_from_images,
)

PIPELINE_LOGGER = "hpsh_tf2.data.pipeline"

# Non-contiguous labels with uneven class sizes: class 1 and 9 are shorter than K = 4.
CLASS_SIZES = {0: 7, 1: 3, 2: 12, 5: 4, 9: 2, 11: 6}


def _labels(sizes: dict[int, int], seed: int = 0) -> np.ndarray:
    """Labels with the given class sizes, shuffled so classes are not contiguous."""
    labels = np.concatenate([np.full(n, c) for c, n in sizes.items()]).astype(np.int64)
    return np.random.default_rng(seed).permutation(labels)


def _batches(sampler: ClassBalancedSampler, count: int, start: int = 0) -> np.ndarray:
    """``count`` index batches from the sampler's dataset, as an array [count, P*K]."""
    return np.stack([b.numpy() for b in sampler.dataset(start).take(count)])


def _check_batch(indices: np.ndarray, labels: np.ndarray, p: int, k: int) -> None:
    """Asserts the P x K layout of one batch."""
    assert indices.shape == (p * k,)
    assert indices.min() >= 0 and indices.max() < len(labels)
    blocks = indices.reshape(p, k)
    block_labels = labels[blocks]
    assert np.all(block_labels == block_labels[:, :1]), "a block mixes labels"
    classes = block_labels[:, 0]
    assert np.all(np.diff(classes) > 0), f"blocks not in ascending label order: {classes}"
    counts = Counter(labels.tolist())
    for block, label in zip(blocks, classes, strict=True):
        if counts[int(label)] >= k:
            assert len(set(block.tolist())) == k, f"repeated item in block of class {label}"


def _write_png(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return str(path)


def _solid_images(folder: Path, count: int, size: int = 6) -> list[str]:
    """PNG i is a solid image whose red channel is 10 * i (decodes back to its index)."""
    if count > 26:
        raise ValueError(f"Received: count={count}; expected at most 26")
    paths = []
    for i in range(count):
        pixel = np.array([10 * i, 255 - 10 * i, 7], np.uint8)
        paths.append(_write_png(folder / f"solid_{i:02d}.png", np.tile(pixel, (size, size, 1))))
    return paths


def _indices_from_solid(images: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_solid_images` for a batch [b, S, S, 3] of unprocessed pixels."""
    red = images[..., 0]
    assert np.all(red == red[:, :1, :1]), "solid image not solid after loading"
    return np.rint(red[:, 0, 0] / 10.0).astype(np.int64)


def _noise(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def _variants(image: np.ndarray) -> list[np.ndarray]:
    """The 8 images reachable by a horizontal flip and a multiple of 90-degree rotation."""
    return [np.rot90(base, k) for base in (image, np.fliplr(image)) for k in range(4)]


def _variant_index(output: np.ndarray, image: np.ndarray) -> int:
    matches = [i for i, v in enumerate(_variants(image)) if np.array_equal(output, v)]
    assert len(matches) == 1, "output is not exactly one flip/rotation of the input"
    return matches[0]


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear downsampling by an integer factor 2 with half-pixel centres = 2x2 means."""
    h, w, c = image.shape
    return image.reshape(h // factor, factor, w // factor, factor, c).mean(axis=(1, 3))


# --------------------------------------------------------------------------------------------
# ClassBalancedSampler
# --------------------------------------------------------------------------------------------


class TestSamplerLayout:
    def test_pxk_composition_over_many_batches(self) -> None:
        labels = _labels(CLASS_SIZES)
        sampler = ClassBalancedSampler(labels, classes_per_batch=3, samples_per_class=4, seed=1)
        assert sampler.batch_size == 12
        assert sampler.num_classes == len(CLASS_SIZES)
        for batch in _batches(sampler, 200):
            _check_batch(batch, labels, 3, 4)

    def test_all_classes_when_p_is_none(self) -> None:
        sizes = {c: 5 + c for c in range(6)}
        labels = _labels(sizes, seed=3)
        sampler = ClassBalancedSampler(labels, classes_per_batch=None, samples_per_class=5, seed=0)
        assert sampler.classes_per_batch == 6
        for batch in _batches(sampler, 50):
            _check_batch(batch, labels, 6, 5)
            np.testing.assert_array_equal(labels[batch.reshape(6, 5)[:, 0]], np.arange(6))

    def test_p_equal_to_class_count_is_allowed(self) -> None:
        labels = _labels({0: 3, 1: 3})
        sampler = ClassBalancedSampler(labels, classes_per_batch=2, samples_per_class=3, seed=0)
        batch = sampler.batch_indices(0).numpy()
        # K equals the class size: every item of both classes, each exactly once.
        assert sorted(batch.tolist()) == list(range(6))
        _check_batch(batch, labels, 2, 3)

    def test_short_classes_drawn_with_replacement(self, caplog: pytest.LogCaptureFixture) -> None:
        labels = _labels(CLASS_SIZES)
        with caplog.at_level(logging.WARNING, logger=PIPELINE_LOGGER):
            sampler = ClassBalancedSampler(labels, classes_per_batch=4, samples_per_class=4, seed=2)
        warnings = [r for r in caplog.records if r.name == PIPELINE_LOGGER]
        assert len(warnings) == 1
        assert warnings[0].levelno == logging.WARNING
        assert "samples_per_class=4" in warnings[0].getMessage()
        assert "[1, 9]" in warnings[0].getMessage()
        seen: dict[int, set[int]] = {1: set(), 9: set()}
        for batch in _batches(sampler, 200):
            blocks = batch.reshape(4, 4)
            for block in blocks:
                label = int(labels[block[0]])
                if label in seen:
                    assert np.all(labels[block] == label)
                    seen[label].update(block.tolist())
        assert seen[1] == set(np.flatnonzero(labels == 1).tolist())
        assert seen[9] == set(np.flatnonzero(labels == 9).tolist())

    def test_no_warning_when_every_class_is_large_enough(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING, logger=PIPELINE_LOGGER):
            ClassBalancedSampler(
                _labels({0: 4, 1: 5}), classes_per_batch=2, samples_per_class=4, seed=0
            )
        assert not [r for r in caplog.records if r.name == PIPELINE_LOGGER]

    def test_all_classes_short(self) -> None:
        labels = _labels({0: 2, 1: 3, 2: 2})
        sampler = ClassBalancedSampler(labels, classes_per_batch=2, samples_per_class=5, seed=4)
        for batch in _batches(sampler, 30):
            _check_batch(batch, labels, 2, 5)


class TestSamplerStatistics:
    def test_class_frequency_is_p_over_c(self) -> None:
        num_classes, p, batches = 10, 4, 1000
        labels = _labels({c: 6 for c in range(num_classes)}, seed=5)
        sampler = ClassBalancedSampler(labels, classes_per_batch=p, samples_per_class=2, seed=7)
        drawn = labels[_batches(sampler, batches)[:, ::2]]  # first row of every block
        frequency = np.bincount(drawn.ravel(), minlength=num_classes) / batches
        # Binomial std is sqrt(0.4 * 0.6 / 1000) = 0.0155; 0.07 is about 4.5 std.
        np.testing.assert_allclose(frequency, p / num_classes, atol=0.07)

    def test_item_frequency_inside_a_class_is_uniform(self) -> None:
        labels = _labels({0: 6, 1: 9}, seed=6)
        sampler = ClassBalancedSampler(labels, classes_per_batch=2, samples_per_class=3, seed=8)
        rows = _batches(sampler, 600)
        counts = np.bincount(rows.ravel(), minlength=len(labels)) / len(rows)
        expected = np.where(labels == 0, 3 / 6, 3 / 9)
        np.testing.assert_allclose(counts, expected, atol=0.08)


class TestSamplerDeterminism:
    def test_same_seed_same_batches(self) -> None:
        labels = _labels(CLASS_SIZES)

        def make(seed: int) -> ClassBalancedSampler:
            return ClassBalancedSampler(labels, classes_per_batch=3, samples_per_class=4, seed=seed)

        np.testing.assert_array_equal(_batches(make(11), 20), _batches(make(11), 20))
        assert not np.array_equal(_batches(make(11), 20), _batches(make(12), 20))

    def test_batches_differ_across_steps(self) -> None:
        sampler = ClassBalancedSampler(
            _labels(CLASS_SIZES), classes_per_batch=3, samples_per_class=4, seed=0
        )
        batches = _batches(sampler, 20)
        assert len({tuple(b) for b in batches}) > 15

    @pytest.mark.parametrize("start", [1, 37, 123])
    def test_start_batch_resumes_exactly(self, start: int) -> None:
        sampler = ClassBalancedSampler(
            _labels(CLASS_SIZES), classes_per_batch=3, samples_per_class=4, seed=5
        )
        fresh = _batches(sampler, start + 3)
        resumed = _batches(sampler, 3, start=start)
        np.testing.assert_array_equal(resumed, fresh[start:])

    def test_eager_graph_and_dataset_agree(self) -> None:
        sampler = ClassBalancedSampler(
            _labels(CLASS_SIZES), classes_per_batch=4, samples_per_class=3, seed=9
        )
        graph = tf.function(sampler.batch_indices)
        mapped = _batches(sampler, 6)
        for b in range(6):
            eager = sampler.batch_indices(b).numpy()
            assert eager.dtype == np.int64
            np.testing.assert_array_equal(eager, mapped[b])
            np.testing.assert_array_equal(graph(tf.constant(b, tf.int64)).numpy(), eager)
        np.testing.assert_array_equal(sampler.batch_indices(np.int64(3)).numpy(), mapped[3])


class TestSamplerValidation:
    def test_class_with_one_item(self) -> None:
        labels = _labels({0: 4, 3: 1, 4: 5})
        with pytest.raises(ValueError, match=r"classes label 3 \(1 item\(s\)\) have fewer than 2"):
            ClassBalancedSampler(labels, classes_per_batch=2, samples_per_class=2, seed=0)

    def test_class_with_one_item_is_named(self) -> None:
        from hpsh_tf2.errors import DatasetError

        labels = _labels({0: 4, 3: 1, 4: 5})
        names = ["Airport", "Bridge", "Church", "Desert", "Forest"]
        with pytest.raises(DatasetError, match=r"classes 'Desert' \(label 3, 1 item\(s\)\)"):
            ClassBalancedSampler(
                labels, classes_per_batch=2, samples_per_class=2, seed=0, class_names=names
            )

    @pytest.mark.parametrize("p", [0, 1, 4, 10])
    def test_p_out_of_range(self, p: int) -> None:
        labels = _labels({0: 4, 1: 4, 2: 4})
        with pytest.raises(ValueError, match=rf"classes_per_batch={p}\b.*\[2, 3\]"):
            ClassBalancedSampler(labels, classes_per_batch=p, samples_per_class=2, seed=0)

    @pytest.mark.parametrize("k", [1, 0, -3])
    def test_k_below_two(self, k: int) -> None:
        with pytest.raises(ValueError, match=rf"samples_per_class={k}\b"):
            ClassBalancedSampler(
                _labels({0: 4, 1: 4}), classes_per_batch=2, samples_per_class=k, seed=0
            )

    @pytest.mark.parametrize(
        "labels",
        [np.zeros((3, 2), np.int64), np.array([0.0, 1.0, 0.0, 1.0]), np.array([], np.int64)],
        ids=["2d", "float", "empty"],
    )
    def test_bad_labels(self, labels: np.ndarray) -> None:
        with pytest.raises(ValueError, match="labels must be a non-empty 1-D integer array"):
            ClassBalancedSampler(labels, classes_per_batch=2, samples_per_class=2, seed=0)


# --------------------------------------------------------------------------------------------
# augment_image
# --------------------------------------------------------------------------------------------


def _augment_eager(image: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    return augment_image(tf.constant(image), tf.constant(seed, tf.int64)).numpy()


def _augment_graph(image: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    return tf.function(augment_image)(tf.constant(image), tf.constant(seed, tf.int64)).numpy()


def _augment_mapped(image: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    ds = tf.data.Dataset.from_tensors((tf.constant(image), tf.constant(seed, tf.int64)))
    return next(iter(ds.map(augment_image))).numpy()


AUGMENT_RUNNERS: dict[str, Callable[[np.ndarray, tuple[int, int]], np.ndarray]] = {
    "eager": _augment_eager,
    "tf_function": _augment_graph,
    "dataset_map": _augment_mapped,
}


class TestAugment:
    @pytest.mark.parametrize("mode", sorted(AUGMENT_RUNNERS))
    @pytest.mark.parametrize("dtype", [np.uint8, np.float32])
    def test_output_is_a_flip_rotation_variant(self, mode: str, dtype: type) -> None:
        image = _noise(7, seed=1).astype(dtype)
        for seed in [(0, 0), (3, 5), (8, 1), (2, 2)]:
            out = AUGMENT_RUNNERS[mode](image, seed)
            assert out.dtype == dtype and out.shape == image.shape
            _variant_index(out, image)

    def test_deterministic_and_identical_across_modes(self) -> None:
        image = _noise(5, seed=2)
        for seed in [(1, 1), (4, 9), (10, 3)]:
            outputs = [run(image, seed) for run in AUGMENT_RUNNERS.values()]
            for out in outputs[1:]:
                np.testing.assert_array_equal(out, outputs[0])
            np.testing.assert_array_equal(_augment_eager(image, seed), outputs[0])

    def test_all_eight_variants_roughly_uniform(self) -> None:
        image = _noise(4, seed=3)
        seeds = tf.stack([tf.zeros([400], tf.int64), tf.range(400, dtype=tf.int64)], axis=1)
        mapped = tf.data.Dataset.from_tensor_slices(seeds).map(
            lambda s: augment_image(tf.constant(image), s)
        )
        outputs = np.stack([o.numpy() for o in mapped])
        hits = Counter(_variant_index(o, image) for o in outputs)
        assert sorted(hits) == list(range(8))
        # Each variant has probability 1/8 = 0.125; std over 400 draws is 0.0165.
        for count in hits.values():
            assert abs(count / 400 - 0.125) < 0.07


# --------------------------------------------------------------------------------------------
# load_and_preprocess and image_dataset
# --------------------------------------------------------------------------------------------


class TestLoadAndPreprocess:
    @pytest.fixture
    def noise_png(self, tmp_path: Path) -> tuple[str, np.ndarray]:
        array = _noise(8, seed=4)
        return _write_png(tmp_path / "noise.png", array), array

    def test_same_size_is_exact(self, noise_png: tuple[str, np.ndarray]) -> None:
        path, array = noise_png
        out = load_and_preprocess(tf.constant(path), image_size=8).numpy()
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, array.astype(np.float32))

    def test_half_size_is_block_mean(self, noise_png: tuple[str, np.ndarray]) -> None:
        path, array = noise_png
        out = load_and_preprocess(path, image_size=4).numpy()
        np.testing.assert_allclose(out, _block_mean(array.astype(np.float64), 2), atol=1e-4)

    def test_preprocess_is_applied(self, noise_png: tuple[str, np.ndarray]) -> None:
        path, array = noise_png
        out = load_and_preprocess(path, image_size=8, preprocess=lambda x: x / 127.5 - 1.0)
        np.testing.assert_allclose(out.numpy(), array / 127.5 - 1.0, atol=1e-6)

    def test_inside_dataset_map(self, noise_png: tuple[str, np.ndarray]) -> None:
        path, array = noise_png
        ds = tf.data.Dataset.from_tensors(path).map(
            lambda p: load_and_preprocess(p, image_size=8, preprocess=lambda x: x * 2.0)
        )
        np.testing.assert_array_equal(next(iter(ds)).numpy(), array.astype(np.float32) * 2.0)

    def test_grayscale_becomes_rgb(self, tmp_path: Path) -> None:
        gray = _noise(6, seed=5)[..., 0]
        path = _write_png(tmp_path / "gray.png", gray)
        out = load_and_preprocess(path, image_size=6).numpy()
        np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2).astype(np.float32))

    def test_real_aid_jpegs(self, aid_sample_root: Path) -> None:
        files = sorted(aid_sample_root.glob("*/*.jpg"))[::75]
        assert len(files) == 4
        for file in files:
            with Image.open(file) as img:
                pixels = np.asarray(img.convert("RGB"), dtype=np.float64)
            eager = load_and_preprocess(str(file), image_size=75).numpy()
            expected = _block_mean(pixels, 2)  # 150 px -> 75 px
            np.testing.assert_allclose(eager, expected, atol=1e-3)
        mapped = tf.data.Dataset.from_tensor_slices([str(f) for f in files]).map(
            lambda p: load_and_preprocess(p, image_size=150, preprocess=lambda x: x / 255.0)
        )
        for file, out in zip(files, mapped, strict=True):
            with Image.open(file) as img:
                pixels = np.asarray(img.convert("RGB"), dtype=np.float64)
            np.testing.assert_allclose(out.numpy(), pixels / 255.0, atol=1e-6)


class TestImageDataset:
    def test_order_and_batch_sizes(self, tmp_path: Path) -> None:
        paths = _solid_images(tmp_path, 7)
        order = [3, 0, 6, 1, 5, 2, 4]
        batches = list(image_dataset([paths[i] for i in order], image_size=4, batch_size=3))
        assert [b.shape[0] for b in batches] == [3, 3, 1]
        assert all(tuple(b.shape[1:]) == (4, 4, 3) and b.dtype == tf.float32 for b in batches)
        got = np.concatenate([_indices_from_solid(b.numpy()) for b in batches])
        np.testing.assert_array_equal(got, order)

    def test_preprocess_and_jpeg_files(self, scene_tree: Path) -> None:
        files = [str(f) for f in sorted(scene_tree.glob("*/*.jpg"))[:5]]
        batches = list(
            image_dataset(files, image_size=75, batch_size=2, preprocess=lambda x: x / 127.5 - 1)
        )
        assert [b.shape[0] for b in batches] == [2, 2, 1]
        stacked = np.concatenate([b.numpy() for b in batches])
        for file, out in zip(files, stacked, strict=True):
            expected = load_and_preprocess(file, image_size=75).numpy() / 127.5 - 1
            np.testing.assert_allclose(out, expected, atol=1e-6)

    @pytest.mark.parametrize("batch_size", [0, -2])
    def test_bad_batch_size(self, batch_size: int) -> None:
        with pytest.raises(ValueError, match=rf"batch_size={batch_size}\b"):
            image_dataset(["x.png"], image_size=4, batch_size=batch_size)


# --------------------------------------------------------------------------------------------
# Training datasets
# --------------------------------------------------------------------------------------------

TRAIN_SIZES = {0: 5, 1: 6, 2: 7, 3: 6}  # 24 items, all >= K = 3


@pytest.fixture
def train_items(tmp_path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    labels = _labels(TRAIN_SIZES, seed=9)
    paths = _solid_images(tmp_path / "solid", len(labels))
    features = np.random.default_rng(10).normal(size=(len(labels), 5)).astype(np.float32)
    return paths, labels, features


def _train_sampler(labels: np.ndarray, seed: int = 3) -> ClassBalancedSampler:
    return ClassBalancedSampler(labels, classes_per_batch=3, samples_per_class=3, seed=seed)


class TestTrainDatasets:
    def test_feature_and_image_datasets_serve_the_same_batches(
        self, train_items: tuple[list[str], np.ndarray, np.ndarray]
    ) -> None:
        paths, labels, features = train_items
        sampler = _train_sampler(labels)
        from_arrays = train_dataset_from_arrays(features, labels, sampler).take(5)
        from_images = train_dataset_from_images(paths, labels, sampler, image_size=4).take(5)
        for b, ((feats, f_labels), (images, i_labels)) in enumerate(
            zip(from_arrays, from_images, strict=True)
        ):
            indices = sampler.batch_indices(b).numpy()
            _check_batch(indices, labels, 3, 3)
            np.testing.assert_array_equal(feats.numpy(), features[indices])
            np.testing.assert_array_equal(f_labels.numpy(), labels[indices])
            assert f_labels.dtype == tf.int32 and i_labels.dtype == tf.int32
            assert images.shape == (9, 4, 4, 3)
            np.testing.assert_array_equal(_indices_from_solid(images.numpy()), indices)
            np.testing.assert_array_equal(i_labels.numpy(), labels[indices])

    def test_arrays_start_batch(
        self, train_items: tuple[list[str], np.ndarray, np.ndarray]
    ) -> None:
        _, labels, features = train_items
        sampler = _train_sampler(labels)
        fresh = list(train_dataset_from_arrays(features, labels, sampler).take(8))
        resumed = next(iter(train_dataset_from_arrays(features, labels, sampler, start_batch=7)))
        np.testing.assert_array_equal(resumed[0].numpy(), fresh[7][0].numpy())
        np.testing.assert_array_equal(resumed[1].numpy(), fresh[7][1].numpy())

    def test_arrays_validation(self) -> None:
        sampler = _train_sampler(_labels(TRAIN_SIZES))
        with pytest.raises(ValueError, match=r"features.shape=\(24,\)"):
            train_dataset_from_arrays(np.zeros(24), np.zeros(24, np.int64), sampler)
        with pytest.raises(ValueError, match=r"labels.shape=\(23,\)"):
            train_dataset_from_arrays(np.zeros((24, 2)), np.zeros(23, np.int64), sampler)

    def test_augmented_images_preprocessed_deterministic_resumable(self, tmp_path: Path) -> None:
        labels = _labels({0: 3, 1: 4, 2: 3}, seed=11)
        sources = [_noise(5, seed=100 + i) for i in range(len(labels))]
        paths = [_write_png(tmp_path / f"n{i}.png", a) for i, a in enumerate(sources)]
        sampler = ClassBalancedSampler(labels, classes_per_batch=2, samples_per_class=3, seed=6)

        def make(start: int = 0) -> tf.data.Dataset:
            return train_dataset_from_images(
                paths,
                labels,
                sampler,
                image_size=5,
                preprocess=lambda x: x / 255.0,
                augment=True,
                start_batch=start,
            )

        first = [(i.numpy(), lab.numpy()) for i, lab in make().take(6)]
        second = [(i.numpy(), lab.numpy()) for i, lab in make().take(6)]
        variants = Counter()
        for b, (images, batch_labels) in enumerate(first):
            indices = sampler.batch_indices(b).numpy()
            np.testing.assert_array_equal(batch_labels, labels[indices])
            for row, index in zip(images, indices, strict=True):
                pixels = np.rint(row * 255.0).astype(np.uint8)
                np.testing.assert_allclose(row, pixels / 255.0, atol=1e-6)  # preprocess applied
                variants[_variant_index(pixels, sources[index])] += 1
            np.testing.assert_array_equal(images, second[b][0])
        assert len(variants) >= 6  # augmentation really varies (36 rows, 8 variants)
        resumed = next(iter(make(start=4)))
        np.testing.assert_array_equal(resumed[0].numpy(), first[4][0])
        np.testing.assert_array_equal(resumed[1].numpy(), first[4][1])

    def test_no_augmentation_returns_originals(self, tmp_path: Path) -> None:
        labels = _labels({0: 2, 1: 2})
        sources = [_noise(4, seed=200 + i) for i in range(4)]
        paths = [_write_png(tmp_path / f"m{i}.png", a) for i, a in enumerate(sources)]
        sampler = ClassBalancedSampler(labels, classes_per_batch=2, samples_per_class=2, seed=1)
        images, _ = next(iter(train_dataset_from_images(paths, labels, sampler, image_size=4)))
        expected = np.stack([sources[i] for i in sampler.batch_indices(0).numpy()])
        np.testing.assert_array_equal(images.numpy(), expected.astype(np.float32))
