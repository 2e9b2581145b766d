"""tf.data pipelines: image loading, augmentation and the class-balanced P x K sampler.

The sampler yields batches of exactly P classes x K samples laid out as P consecutive blocks of
K rows with the same label, which the HPSH negative sampler relies on. Batch ``b`` is drawn with
stateless random ops seeded by ``(seed, b)``, so a run is reproducible and can resume at any
step without replaying earlier batches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from hpsh_tf2.data.images import BandReading, load_image_bands, read_image, resize_image
from hpsh_tf2.errors import BadImageError, ConfigError, DatasetError

__all__ = [
    "ClassBalancedSampler",
    "augment_image",
    "image_dataset",
    "load_and_preprocess",
    "train_dataset_from_arrays",
    "train_dataset_from_images",
]

logger = logging.getLogger(__name__)

Preprocess = Callable[[tf.Tensor], tf.Tensor]


class ClassBalancedSampler:
    """Draws index batches of P classes x K samples, as P consecutive same-label blocks.

    For every batch, P distinct classes are drawn uniformly at random (all classes when P equals
    the number of classes, which reproduces the original HPSH batches) and laid out in ascending
    label order. Inside a class, K samples are drawn without replacement; a class with fewer than
    K samples is drawn with replacement (a warning is logged once at construction).

    Multi-label (multi-hot labels ``[N, C]``): the batch is drawn per *label*, not per class
    block of disjoint items: P distinct labels, then K items carrying each label, so every
    anchor has its K - 1 block mates as positives (they share at least the drawn label). An
    item with several labels belongs to each of its labels' pools (and may appear in two
    blocks of one batch). A label carried by fewer than 2 items cannot give a positive pair and
    is never drawn (a warning names it); its items still appear through their other labels.

    Args:
        labels: Integer labels [N] of the items to sample from, or multi-hot [N, C].
        classes_per_batch: P; ``None`` means all classes.
        samples_per_class: K (>= 2).
        seed: Integer seed; batch ``b`` uses the stateless seed ``(seed, b)``.
        class_names: Names of the classes, index = label; used in error messages (a class with
            too few items is named, not only numbered).

    Raises:
        DatasetError: If a class has fewer than 2 items (a ``ValueError`` too).
        ValueError: If P exceeds the number of classes, or an
            argument is out of range.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        *,
        classes_per_batch: int | None,
        samples_per_class: int,
        seed: int,
        class_names: Sequence[str] | None = None,
    ) -> None:
        labels = np.asarray(labels)
        multi_hot = labels.ndim == 2 and labels.shape[1] > 1
        if multi_hot:
            labels = _drawable_multi_hot(labels, class_names)
        elif labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                "labels must be a non-empty 1-D integer array or multi-hot [N, C]. Received: "
                f"shape={labels.shape}, dtype={labels.dtype}"
            )
        if samples_per_class < 2:
            raise ValueError(
                f"Received: samples_per_class={samples_per_class}; expected an integer >= 2"
            )
        if multi_hot:
            counts_all = labels.sum(axis=0)
            classes = np.flatnonzero(counts_all >= 2)
            counts = counts_all[classes]
        else:
            classes, counts = np.unique(labels, return_counts=True)
        p = len(classes) if classes_per_batch is None else int(classes_per_batch)
        if not 2 <= p <= len(classes):
            raise ConfigError(
                f"Received: classes_per_batch={classes_per_batch}; expected an integer in "
                f"[2, {len(classes)}] (the number of classes in the training set) or null"
            )
        too_small = classes[counts < 2]
        if too_small.size:
            named = [
                f"{class_names[c]!r} (label {c}, {counts[classes == c][0]} item(s))"
                if class_names is not None and 0 <= c < len(class_names)
                else f"label {c} ({counts[classes == c][0]} item(s))"
                for c in too_small.tolist()
            ]
            raise DatasetError(
                f"classes {', '.join(named)} have fewer than 2 training items; a class needs "
                "at least 2 to form anchor-positive pairs (give it more images or a larger "
                "data.split.train)"
            )
        short = classes[counts < samples_per_class]
        if short.size:
            logger.warning(
                "%d classes have fewer than samples_per_class=%d training items and are drawn "
                "with replacement: %s",
                short.size,
                samples_per_class,
                short.tolist(),
            )
        self.classes_per_batch = p
        self.samples_per_class = int(samples_per_class)
        self.seed = int(seed)
        self.num_classes = len(classes)
        self._class_ids = tf.constant(classes, tf.int32)
        self._counts = tf.constant(counts, tf.int32)
        self._table = tf.constant(_member_table(labels, classes, counts), tf.int64)

    @property
    def batch_size(self) -> int:
        """Rows per batch, P x K."""
        return self.classes_per_batch * self.samples_per_class

    def batch_indices(self, batch_number: tf.Tensor | int) -> tf.Tensor:
        """Item indices [P*K] (int64) of batch ``batch_number``; a pure function of the seed."""
        batch_number = tf.cast(batch_number, tf.int64)
        seed = tf.stack([tf.constant(self.seed, tf.int64), batch_number])
        class_seed, item_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, num=2), num=2
        )
        num_classes = self.num_classes
        class_keys = tf.random.stateless_uniform([num_classes], seed=class_seed)
        chosen = tf.sort(tf.math.top_k(class_keys, k=self.classes_per_batch).indices)
        counts = tf.gather(self._counts, chosen)
        width = self._table.shape[1]
        keys = tf.random.stateless_uniform([self.classes_per_batch, width], seed=item_seed)
        valid = tf.range(width)[tf.newaxis, :] < counts[:, tf.newaxis]
        keys = tf.where(valid, keys, 2.0)  # invalid slots sort last
        k = min(self.samples_per_class, width)
        without = tf.math.top_k(-keys, k=k).indices  # k smallest keys: no replacement
        if k < self.samples_per_class:
            without = tf.pad(without, [[0, 0], [0, self.samples_per_class - k]])
        uniform = tf.random.stateless_uniform(
            [self.classes_per_batch, self.samples_per_class],
            seed=tf.random.experimental.stateless_fold_in(item_seed, 1),
        )
        with_repl = tf.cast(uniform * tf.cast(counts[:, tf.newaxis], tf.float32), tf.int32)
        with_repl = tf.minimum(with_repl, counts[:, tf.newaxis] - 1)
        enough = (counts >= self.samples_per_class)[:, tf.newaxis]
        slots = tf.where(enough, without, with_repl)
        rows = tf.gather(self._table, chosen)
        return tf.reshape(tf.gather(rows, slots, batch_dims=1), [-1])

    def dataset(self, start_batch: int = 0) -> tf.data.Dataset:
        """An infinite dataset of index batches, starting at batch ``start_batch``."""
        return tf.data.Dataset.counter(start=start_batch).map(
            self.batch_indices, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )


def _drawable_multi_hot(labels: np.ndarray, class_names: Sequence[str] | None) -> np.ndarray:
    """Validates multi-hot labels; warns about the labels too rare to be drawn."""
    if labels.shape[0] == 0 or not np.isin(labels, (0, 1)).all() or not labels.any(axis=1).all():
        raise ValueError(
            "labels must be a non-empty 1-D integer array or a 0/1 multi-hot array [N, C] "
            f"with a label in every row. Received: shape={labels.shape}, "
            f"{int((labels.sum(axis=1) == 0).sum())} row(s) without a label, "
            f"values {np.unique(labels)[:5].tolist()}"
        )
    labels = labels.astype(np.int64)
    rare = np.flatnonzero(labels.sum(axis=0) == 1)
    if rare.size:
        logger.warning(
            "%d label(s) are carried by a single training item and are never drawn as a batch "
            "block (no positive pair): %s",
            rare.size,
            [class_names[c] if class_names is not None else int(c) for c in rare.tolist()],
        )
    return labels


def _member_table(labels: np.ndarray, classes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``[len(classes), max(counts)]``: the items of each class (or carrying each label)."""
    if labels.ndim == 2:
        members = [np.flatnonzero(labels[:, c]) for c in classes]
    else:
        order = np.argsort(labels, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        members = [order[start : start + count] for start, count in zip(starts, counts)]
    table = np.zeros((len(classes), counts.max()), np.int64)
    for row, items in enumerate(members):
        table[row, : len(items)] = items
    return table


def augment_image(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random horizontal flip and a random multiple of 90-degree rotation (aerial imagery).

    Args:
        image: A square image [S, S, C].
        seed: A stateless seed, int tensor of shape [2].

    Returns:
        The augmented image, same shape and dtype.
    """
    flip_seed, rot_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2), num=2)
    flip = tf.random.stateless_uniform([], seed=flip_seed) < 0.5
    image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
    turns = tf.random.stateless_uniform([], seed=rot_seed, minval=0, maxval=4, dtype=tf.int32)
    return tf.image.rot90(image, k=turns)


def load_and_preprocess(
    path: tf.Tensor,
    *,
    image_size: int,
    preprocess: Preprocess | None = None,
    reading: BandReading | None = None,
) -> tf.Tensor:
    """Reads, decodes (any supported format, to RGB; GeoTIFF bands with an active ``reading``,
    see :func:`hpsh_tf2.data.images.read_image`), resizes and preprocesses one image."""
    image = resize_image(read_image(path, reading=reading), image_size)
    return preprocess(image) if preprocess is not None else image


def _check_first(paths: Sequence[str], reading: BandReading | None) -> None:
    """Reads the first image eagerly when GeoTIFF bands are read, so that a config that does
    not fit the files (:class:`~hpsh_tf2.geo.raster.BandError`) stops here, with its one-line
    message, rather than inside ``tf.data``. An undecodable file is left to the pipeline's
    own reporting."""
    if reading is not None and reading.active and len(paths):
        try:
            load_image_bands(paths[0], reading)
        except BadImageError:
            pass


def _options(deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    return options


def image_dataset(
    paths: Sequence[str],
    *,
    image_size: int,
    batch_size: int,
    preprocess: Preprocess | None = None,
    deterministic: bool = True,
    reading: BandReading | None = None,
) -> tf.data.Dataset:
    """A finite, ordered dataset of preprocessed image batches (for extraction and encoding).

    Args:
        paths: Absolute image paths, in output order.
        image_size: Side of the square model input.
        batch_size: Images per batch (the last batch may be smaller).
        preprocess: The backbone's preprocessing, applied to float pixels in [0, 255].
        deterministic: Keep the input order (required for extraction).
        reading: How GeoTIFFs are read (``data.bands``, ``data.band_scale``,
            ``model.input_bands``); None: as before.

    Returns:
        A dataset of float32 tensors [b, image_size, image_size, C] (C: 3, or
        ``reading.input_bands``).

    Raises:
        BandError: The band reading does not fit the first image.
    """
    if batch_size <= 0:
        raise ValueError(f"Received: batch_size={batch_size}; expected a positive integer")
    _check_first(paths, reading)
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(list(paths), tf.string))
    ds = ds.map(
        lambda p: load_and_preprocess(
            p, image_size=image_size, preprocess=preprocess, reading=reading
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(_options(deterministic))


def _row_range(rows: tuple[int, int] | None, sampler: ClassBalancedSampler) -> tuple[int, int]:
    """Checks ``rows`` against the sampler's P x K batch; ``None`` is the whole batch."""
    if rows is None:
        return 0, sampler.batch_size
    start, stop = (int(v) for v in rows)
    k = sampler.samples_per_class
    if not 0 <= start < stop <= sampler.batch_size or start % k or stop % k:
        raise ValueError(
            f"Received: rows={tuple(rows)}; expected (start, stop) with "
            f"0 <= start < stop <= {sampler.batch_size} (the P x K batch) on "
            f"samples_per_class={k} block boundaries"
        )
    return start, stop


def train_dataset_from_arrays(
    features: np.ndarray,
    labels: np.ndarray,
    sampler: ClassBalancedSampler,
    *,
    start_batch: int = 0,
    rows: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """Infinite P x K batches of cached feature rows: ``(features [P*K, D], labels [P*K])``.

    Args:
        features: Float rows [N, D].
        labels: Integer labels [N] (or multi-hot [N, C]: the batches' labels are [P*K, C]).
        sampler: The P x K batch sampler.
        start_batch: First batch number (resuming).
        rows: ``(start, stop)``: keep only these rows of every P x K batch (one worker's or
            replica's share of the global batch); ``None`` keeps the whole batch.
    """
    features = np.asarray(features, np.float32)
    labels = np.asarray(labels)
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(
            "features must be [N, D] with one label per row. Received: "
            f"features.shape={features.shape}, labels.shape={labels.shape}"
        )
    start, stop = _row_range(rows, sampler)
    table = tf.constant(features)
    label_table = tf.constant(labels.astype(np.int32))

    def gather(indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        indices = indices[start:stop]
        return tf.gather(table, indices), tf.gather(label_table, indices)

    return (
        sampler.dataset(start_batch)
        .map(gather, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def train_dataset_from_images(
    paths: Sequence[str],
    labels: np.ndarray,
    sampler: ClassBalancedSampler,
    *,
    image_size: int,
    preprocess: Preprocess | None = None,
    augment: bool = False,
    deterministic: bool = True,
    start_batch: int = 0,
    rows: tuple[int, int] | None = None,
    reading: BandReading | None = None,
) -> tf.data.Dataset:
    """Infinite P x K batches of images: ``(images [P*K, S, S, C], labels [P*K])``.

    Images are decoded in parallel; with ``deterministic`` the block order is kept exactly
    (the HPSH sampler needs it). Augmentation is seeded per batch and row (the row of the
    whole P x K batch, also when ``rows`` keeps a part of it). With ``rows=(start, stop)``
    only those rows of every batch are read and decoded (one worker's share). ``reading``:
    GeoTIFFs give ``reading.input_bands`` channels (see
    :func:`hpsh_tf2.data.images.read_image`); None: RGB as before.
    """
    _check_first(paths, reading)
    path_table = tf.constant(list(paths), tf.string)
    label_table = tf.constant(np.asarray(labels).astype(np.int32))
    start, stop = _row_range(rows, sampler)
    batch_size = stop - start
    base_seed = sampler.seed

    def expand(batch_number: tf.Tensor, indices: tf.Tensor) -> tf.data.Dataset:
        indices = indices[start:stop]
        row_numbers = tf.range(start, stop, dtype=tf.int64)
        seeds = tf.stack(
            [
                tf.fill([batch_size], tf.constant(base_seed + 1, tf.int64)),
                batch_number * 4096 + row_numbers,
            ],
            axis=1,
        )
        return tf.data.Dataset.from_tensor_slices(
            (tf.gather(path_table, indices), tf.gather(label_table, indices), seeds)
        )

    def load(path: tf.Tensor, label: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = resize_image(read_image(path, reading=reading), image_size)
        if augment:
            image = augment_image(image, seed)
        if preprocess is not None:
            image = preprocess(image)
        return image, label

    counter = tf.data.Dataset.counter(start=start_batch)
    ds = tf.data.Dataset.zip((counter, sampler.dataset(start_batch)))
    ds = ds.flat_map(expand)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_options(deterministic))
