"""Training: ``model.fit`` on the P x K pipeline with the HPSH sampler and loss.

``HashTrainer`` wraps the model being trained (the hash head on cached features, or backbone +
head on images) and overrides ``train_step``: forward, sample triplets inside the batch, HPSH
loss, Adam update. The sampler's randomness is stateless and keyed by ``(train.seed, optimizer
step, replica)``, so a resumed run draws exactly what an uninterrupted one would.

Model selection uses the validation split (mAP@k of validation queries against the training
set); with no validation split the final epoch is kept. The test split is never looked at.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from hpsh_tf2.atomic import write_text_atomic
from hpsh_tf2.config import Config
from hpsh_tf2.data.pipeline import (
    ClassBalancedSampler,
    image_dataset,
    train_dataset_from_arrays,
    train_dataset_from_images,
)
from hpsh_tf2.losses import LossWeights, hpsh_loss, make_loss_weights
from hpsh_tf2.models.backbone import build_backbone, preprocessor
from hpsh_tf2.models.head import build_hash_model, build_image_hash_model
from hpsh_tf2.samplers import TripletSampler, make_sampler

__all__ = [
    "HashTrainer",
    "RetrievalValidation",
    "ScoreEncoder",
    "TrainInputs",
    "TrainResult",
    "dtype_policy_scope",
    "encode_scores",
    "make_strategy",
    "train",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainInputs:
    """One subset as the trainer sees it: feature rows or image paths, with labels.

    Attributes:
        labels: int32 [N].
        features: float32 [N, D] in features mode, else ``None``.
        paths: Absolute image paths in end-to-end mode, else ``None``.
    """

    labels: np.ndarray
    features: np.ndarray | None = None
    paths: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        model_dir: ``<workdir>/model``.
        hash_model_path: The selected hash model (features -> scores), ``.keras``.
        image_model_path: The full image -> scores model (end-to-end mode), else ``None``.
        selected_epoch: 1-based epoch of the kept model.
        selection: ``"val_map@k"`` or ``"final_epoch"``.
        best_val_map: Best validation mAP@k, or ``None`` without a validation split.
        history: Per-epoch logs.
    """

    model_dir: Path
    hash_model_path: Path
    image_model_path: Path | None
    selected_epoch: int
    selection: str
    best_val_map: float | None
    history: dict[str, list[float]]


@contextlib.contextmanager
def dtype_policy_scope(mixed_precision: bool) -> Iterator[None]:
    """Temporarily sets Keras' dtype policy while models are built, then restores it.

    ``mixed_float16`` on GPUs, ``mixed_bfloat16`` elsewhere (CPU, TPU).
    """
    if not mixed_precision:
        yield
        return
    previous = keras.config.dtype_policy()
    policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """``"default"`` (one device) or ``"mirrored"`` (all local GPUs, or logical CPUs)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"Received: train.strategy={name!r}; expected 'default' or 'mirrored'")


class HashTrainer(keras.Model):
    """Trains ``model`` (inputs -> sigmoid scores) with the HPSH sampler and loss.

    Args:
        model: The model being trained; its output is the [n, bits] sigmoid scores.
        sampler: The triplet sampler (:func:`hpsh_tf2.samplers.make_sampler`).
        weights: The loss weights (:func:`hpsh_tf2.losses.make_loss_weights`).
        seed: Base seed of the triplet sampler.
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        sampler: TripletSampler,
        weights: LossWeights,
        seed: int,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.triplet_sampler = sampler
        self.hpsh_weights = weights
        self.sampler_seed = int(seed)
        self.trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("loss", "margin", "quantization", "push", "balance")
        }

    def call(self, inputs, training=False):
        return self.model(inputs, training=training)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def _step_seed(self) -> tf.Tensor:
        replica = tf.distribute.get_replica_context()
        replica_id = 0 if replica is None else replica.replica_id_in_sync_group
        step = tf.cast(self.optimizer.iterations, tf.int64)
        base = tf.constant(self.sampler_seed, tf.int64) * 1000 + tf.cast(replica_id, tf.int64)
        return tf.stack([base, step])

    def train_step(self, data):
        inputs, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            scores = self(inputs, training=True)
            loss, parts = hpsh_loss(
                labels,
                scores,
                sampler=self.triplet_sampler,
                weights=self.hpsh_weights,
                seed=self._step_seed(),
                return_components=True,
            )
            scaled = self.optimizer.scale_loss(loss / replicas)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        self.trackers["loss"].update_state(loss)
        for name, value in parts.items():
            if name in self.trackers:
                self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}


class ScoreEncoder:
    """Runs a model over a subset (feature rows or image files) and returns its scores.

    The forward pass is a ``tf.function`` with an unknown batch dimension, traced once, so
    encoding subsets of different sizes (every epoch) does not retrace.

    Args:
        model: Inputs -> scores model (hash head or image model).
        batch_size: Rows per forward pass.
        image_size: Input side, for image subsets.
        backbone: Backbone name, for the image preprocessing.
    """

    def __init__(self, model: keras.Model, *, batch_size: int, image_size: int, backbone: str):
        self.model = model
        self.batch_size = int(batch_size)
        self.image_size = int(image_size)
        self.backbone = backbone
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        self._forward = tf.function(
            lambda x: model(x, training=False), input_signature=[spec], autograph=False
        )

    def __call__(self, inputs: TrainInputs) -> np.ndarray:
        if len(inputs) == 0:
            return np.zeros((0, self.model.output_shape[-1]), np.float32)
        if inputs.features is not None:
            batches = tf.data.Dataset.from_tensor_slices(inputs.features).batch(self.batch_size)
        else:
            batches = image_dataset(
                inputs.paths,
                image_size=self.image_size,
                batch_size=self.batch_size,
                preprocess=preprocessor(self.backbone),
            )
        return np.concatenate([self._forward(batch).numpy() for batch in batches])


def encode_scores(
    model: keras.Model, inputs: TrainInputs, *, batch_size: int, image_size: int, backbone: str
) -> np.ndarray:
    """One-off :class:`ScoreEncoder` call: the scores of a subset."""
    encoder = ScoreEncoder(model, batch_size=batch_size, image_size=image_size, backbone=backbone)
    return encoder(inputs)


class RetrievalValidation(keras.callbacks.Callback):
    """Logs ``val_map@k`` (validation queries vs the training set) and keeps the best model.

    Args:
        train_inputs: The database (training subset).
        val_inputs: The queries (validation subset).
        k: Cut-off of mAP@k.
        save_path: Where the best hash model is written (``.keras``).
        hash_model: The model saved on improvement.
        encode: Callable ``(inputs) -> scores`` with the current weights.
    """

    def __init__(self, *, train_inputs, val_inputs, k, save_path, hash_model, encode, best=None):
        super().__init__()
        self.train_inputs = train_inputs
        self.val_inputs = val_inputs
        self.k = int(k)
        self.save_path = Path(save_path)
        self.hash_model = hash_model
        self.encode = encode
        self.best = best
        self.best_epoch: int | None = None
        self.key = f"val_map@{self.k}"

    def on_epoch_end(self, epoch, logs=None):
        from hpsh_tf2.evaluation.metrics import map_at_k
        from hpsh_tf2.evaluation.search import search
        from hpsh_tf2.ops.codes import np_binarize

        db_codes = np_binarize(self.encode(self.train_inputs))
        query_codes = np_binarize(self.encode(self.val_inputs))
        k = min(self.k, len(db_codes))
        result = search(query_codes, db_codes, k=k)
        retrieved = self.train_inputs.labels[result.indices]
        value = float(
            map_at_k(query_labels=self.val_inputs.labels, retrieved_labels=retrieved, k=k)
        )
        if logs is not None:
            logs[self.key] = value
        if self.best is None or value > self.best:
            self.best = value
            self.best_epoch = epoch + 1
            _atomic_keras_save(self.hash_model, self.save_path)
            logger.info("epoch %d: %s improved to %.4f; saved", epoch + 1, self.key, value)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves model + optimizer state after every epoch, for resuming an interrupted run."""

    def __init__(
        self,
        manager: tf.train.CheckpointManager,
        state_path: Path,
        fingerprint: str,
        *,
        validation: RetrievalValidation | None = None,
    ):
        super().__init__()
        self.manager = manager
        self.state_path = state_path
        self.fingerprint = fingerprint
        self.validation = validation

    def on_epoch_end(self, epoch, logs=None):
        self.manager.save(checkpoint_number=epoch + 1)
        state = {"epoch": epoch + 1, "fingerprint": self.fingerprint}
        if self.validation is not None:
            state["best"] = self.validation.best
            state["best_epoch"] = self.validation.best_epoch
        write_text_atomic(self.state_path, json.dumps(state))


def _atomic_keras_save(model: keras.Model, path: Path) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    model.save(tmp)
    os.replace(tmp, path)


def _train_fingerprint(config: Config, num_train: int) -> str:
    """What a checkpoint must match to be resumed (everything but epochs and eval options)."""
    import hashlib

    from hpsh_tf2.config import config_to_dict

    raw = config_to_dict(config)
    raw["train"].pop("epochs")
    raw.pop("eval")
    raw.pop("export")
    raw["num_train"] = num_train
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16]


def triplet_sampler(config: Config) -> TripletSampler:
    """The triplet sampler of a config (``sampler`` section, K, alpha + beta as the bound)."""
    return make_sampler(
        config.sampler,
        samples_per_class=config.train.samples_per_class,
        default_cutoff=config.loss.alpha + config.loss.beta,
    )


def head_options(config: Config) -> dict:
    """Keyword arguments of :func:`hpsh_tf2.models.head.build_hash_model` from a config."""
    return {
        "bits": config.model.bits,
        "hidden_units": config.model.hidden_units,
        "leaky_relu_slope": config.model.leaky_relu_slope,
        "seed": config.model.init_seed,
        "init": config.model.init,
    }


def _build_models(config: Config, feature_dim: int | None):
    """Returns (model being trained, hash model, image model or None)."""
    if config.train.mode == "features":
        hash_model = build_hash_model(feature_dim, **head_options(config))
        return hash_model, hash_model, None
    backbone = build_backbone(
        config.model.backbone,
        weights=config.model.weights,
        image_size=config.model.image_size,
        seed=config.model.init_seed,
    )
    _set_trainable_layers(backbone, config.train.trainable_layers)
    hash_model = build_hash_model(backbone.output_shape[-1], **head_options(config))
    image_model = build_image_hash_model(backbone, hash_model)
    return image_model, hash_model, image_model


def _set_trainable_layers(backbone: keras.Model, top_layers: int) -> None:
    """Freezes all but the top ``top_layers`` weighted layers (0 = train the whole backbone)."""
    if top_layers <= 0:
        backbone.trainable = True
        return
    weighted = [layer for layer in backbone.layers if layer.weights]
    for index, layer in enumerate(weighted):
        layer.trainable = index >= len(weighted) - top_layers
    # BatchNorm statistics of frozen layers stay frozen (trainable=False implies inference mode).


def train(
    config: Config,
    *,
    train_inputs: TrainInputs,
    val_inputs: TrainInputs | None = None,
    workdir: str | os.PathLike | None = None,
    verbose: int = 1,
) -> TrainResult:
    """Trains the hash model and writes ``<workdir>/model``.

    Args:
        config: The resolved config (``train.mode`` picks features or end-to-end).
        train_inputs: Training subset (features in features mode, image paths end-to-end).
        val_inputs: Validation subset for model selection; empty or ``None``: final epoch.
        workdir: Output folder; defaults to ``config.output.workdir``.
        verbose: Keras fit verbosity.

    Returns:
        A :class:`TrainResult`.
    """
    workdir = Path(workdir or config.output.workdir)
    model_dir = workdir / "model"
    (model_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    _check_inputs(config, train_inputs)
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.train.seed)

    strategy = make_strategy(config.train.strategy)
    classes_per_batch = config.train.classes_per_batch
    sampler = ClassBalancedSampler(
        train_inputs.labels,
        classes_per_batch=classes_per_batch,
        samples_per_class=config.train.samples_per_class,
        seed=config.train.seed,
    )
    if sampler.classes_per_batch % strategy.num_replicas_in_sync:
        raise ValueError(
            f"train.classes_per_batch={sampler.classes_per_batch} must be divisible by the "
            f"number of replicas ({strategy.num_replicas_in_sync}) so each replica gets whole "
            "P x K blocks"
        )
    feature_dim = None if train_inputs.features is None else train_inputs.features.shape[1]
    with strategy.scope(), dtype_policy_scope(config.train.mixed_precision):
        fit_model, hash_model, image_model = _build_models(config, feature_dim)
        trainer = HashTrainer(
            fit_model,
            sampler=triplet_sampler(config),
            weights=make_loss_weights(config.loss),
            seed=config.train.seed,
        )
        optimizer = keras.optimizers.Adam(
            learning_rate=config.train.learning_rate,
            beta_1=config.train.beta_1,
            beta_2=config.train.beta_2,
            epsilon=config.train.epsilon,
        )
        if config.train.mixed_precision and keras.config.dtype_policy().name == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        trainer.compile(optimizer=optimizer, jit_compile=config.train.jit_compile)
        trainer.optimizer.build(trainer.trainable_variables)

    fingerprint = _train_fingerprint(config, len(train_inputs))
    checkpoint = tf.train.Checkpoint(model=fit_model, optimizer=trainer.optimizer)
    manager = tf.train.CheckpointManager(checkpoint, model_dir / "checkpoints", max_to_keep=2)
    state_path = model_dir / "checkpoints" / "state.json"
    initial_epoch, best, best_epoch = _maybe_resume(manager, checkpoint, state_path, fingerprint)

    dataset = _training_dataset(config, train_inputs, sampler, initial_epoch)
    selected = image_model if image_model is not None else hash_model
    best_path = model_dir / ("image_model.keras" if image_model is not None else "hash_model.keras")
    validation = _validation_callback(config, best_path, selected, train_inputs, val_inputs)
    if validation is not None:
        validation.best, validation.best_epoch = best, best_epoch
    callbacks = [
        *([validation] if validation is not None else []),
        EpochCheckpoint(manager, state_path, fingerprint, validation=validation),
        keras.callbacks.CSVLogger(str(model_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(log_dir=str(model_dir / "logs"), write_graph=False),
        keras.callbacks.TerminateOnNaN(),
    ]
    history = {}
    if initial_epoch < config.train.epochs:
        fit = trainer.fit(
            dataset,
            epochs=config.train.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=config.train.steps_per_epoch,
            callbacks=callbacks,
            shuffle=False,
            verbose=verbose,
        )
        history = {key: [float(v) for v in values] for key, values in fit.history.items()}
    return _finish(config, model_dir, hash_model, image_model, validation, history)


def _check_inputs(config: Config, train_inputs: TrainInputs) -> None:
    if config.train.mode == "features" and train_inputs.features is None:
        raise ValueError("train.mode='features' needs feature rows; run extract first")
    if config.train.mode == "end_to_end" and train_inputs.paths is None:
        raise ValueError(
            "train.mode='end_to_end' needs image paths; it is not available with data.features"
        )
    if len(train_inputs) == 0:
        raise ValueError("the training subset is empty")


def _maybe_resume(manager, checkpoint, state_path: Path, fingerprint: str):
    """Restores the last epoch checkpoint if it belongs to this configuration."""
    if manager.latest_checkpoint is None or not state_path.is_file():
        return 0, None, None
    state = json.loads(state_path.read_text())
    if state.get("fingerprint") != fingerprint:
        logger.warning(
            "checkpoints in %s were made with another configuration; starting afresh",
            manager.directory,
        )
        for path in Path(manager.directory).glob("*"):
            path.unlink()
        return 0, None, None
    checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    logger.info("resuming after epoch %d from %s", state["epoch"], manager.latest_checkpoint)
    return int(state["epoch"]), state.get("best"), state.get("best_epoch")


def _training_dataset(config, inputs: TrainInputs, sampler, initial_epoch: int):
    start = initial_epoch * config.train.steps_per_epoch
    if inputs.features is not None:
        return train_dataset_from_arrays(inputs.features, inputs.labels, sampler, start_batch=start)
    return train_dataset_from_images(
        inputs.paths,
        inputs.labels,
        sampler,
        image_size=config.model.image_size,
        preprocess=preprocessor(config.model.backbone),
        augment=config.train.augment,
        deterministic=True,  # the P x K block order must be kept
        start_batch=start,
    )


def _validation_callback(
    config: Config,
    save_path: Path,
    selected: keras.Model,
    train_inputs: TrainInputs,
    val_inputs: TrainInputs | None,
) -> RetrievalValidation | None:
    """Model selection on the validation split; ``None`` without one (final epoch is kept)."""
    if val_inputs is None or len(val_inputs) == 0:
        return None
    encode = ScoreEncoder(
        selected,
        batch_size=config.train.eval_batch_size,
        image_size=config.model.image_size,
        backbone=config.model.backbone,
    )
    return RetrievalValidation(
        train_inputs=train_inputs,
        val_inputs=val_inputs,
        k=config.eval.k,
        save_path=save_path,
        hash_model=selected,
        encode=encode,
    )


def _finish(config, model_dir: Path, hash_model, image_model, validation, history) -> TrainResult:
    """Writes the selected model(s) and a summary."""
    best_file = model_dir / ("image_model.keras" if image_model is not None else "hash_model.keras")
    if validation is not None and validation.best_epoch is not None and not best_file.is_file():
        logger.warning(
            "the best-epoch model %s is missing (deleted after training?); keeping the final "
            "epoch's weights instead",
            best_file,
        )
        validation = None
    if validation is not None and validation.best_epoch is not None:
        selection = f"val_map@{config.eval.k}"
        selected_epoch = validation.best_epoch
        if image_model is not None:
            selected = keras.saving.load_model(model_dir / "image_model.keras")
            hash_part = selected.layers[-1]
            _atomic_keras_save(hash_part, model_dir / "hash_model.keras")
    else:
        selection = "final_epoch"
        selected_epoch = config.train.epochs
        _atomic_keras_save(hash_model, model_dir / "hash_model.keras")
        if image_model is not None:
            _atomic_keras_save(image_model, model_dir / "image_model.keras")
    summary = {
        "mode": config.train.mode,
        "selection": selection,
        "selected_epoch": selected_epoch,
        "best_val_map": None if validation is None else validation.best,
        "epochs": config.train.epochs,
        "steps_per_epoch": config.train.steps_per_epoch,
        "final_loss": history.get("loss", [math.nan])[-1] if history else None,
    }
    write_text_atomic(model_dir / "train_summary.json", json.dumps(summary, indent=1))
    return TrainResult(
        model_dir=model_dir,
        hash_model_path=model_dir / "hash_model.keras",
        image_model_path=(model_dir / "image_model.keras") if image_model is not None else None,
        selected_epoch=selected_epoch,
        selection=selection,
        best_val_map=None if validation is None else validation.best,
        history=history,
    )


def subset_inputs(
    labels: Sequence[int],
    *,
    features: np.ndarray | None = None,
    paths: Sequence[str] | None = None,
) -> TrainInputs:
    """Builds :class:`TrainInputs` with dtype normalisation."""
    return TrainInputs(
        labels=np.asarray(labels, np.int32),
        features=None if features is None else np.asarray(features, np.float32),
        paths=None if paths is None else tuple(paths),
    )
