"""One training run: build -> resume -> fit -> finish.

:func:`fit_hash_model` runs ``keras.Model.fit`` on the infinite P x K pipeline with the
selected training loss (``loss.name``) and, for triplet losses, the sampler
(:class:`~hpsh_tf2.training.trainer.HashTrainer`) and writes ``model/`` of the run folder.
Model selection uses the validation split (mAP@k of validation queries against the training
set); with no validation split the final epoch is kept. The test split is never
looked at.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from hpsh_tf2.atomic import write_text_atomic
from hpsh_tf2.config import Config
from hpsh_tf2.data.images import BandReading, first_undecodable
from hpsh_tf2.data.pipeline import (
    ClassBalancedSampler,
    train_dataset_from_arrays,
    train_dataset_from_images,
)
from hpsh_tf2.dataset import SubsetInputs
from hpsh_tf2.errors import BadImageError, HPSHError, RunFailedError
from hpsh_tf2.layout import RunLayout
from hpsh_tf2.losses.common import label_count
from hpsh_tf2.models.backbone import preprocessor
from hpsh_tf2.training import distributed
from hpsh_tf2.training.callbacks import RetrievalValidation, build_callbacks, validation_callback
from hpsh_tf2.training.checkpoints import (
    MAX_TO_KEEP,
    Progress,
    maybe_resume,
    save_keras_atomic,
    train_fingerprint,
)
from hpsh_tf2.training.trainer import (
    HashTrainer,
    TrainedModels,
    build_models,
    dtype_policy_scope,
    loss_from_config,
    make_optimizer,
    make_strategy,
    triplet_sampler,
)

__all__ = ["TrainResult", "TrainingError", "fit_hash_model"]

logger = logging.getLogger(__name__)


class TrainingError(HPSHError, ValueError):
    """The inputs or options cannot be trained as given."""


@dataclass(frozen=True)
class TrainResult:
    """What :func:`fit_hash_model` produced.

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


@dataclass
class _Session:
    """What :func:`_build` sets up: the models, the compiled trainer and the batch sampler."""

    models: TrainedModels
    trainer: HashTrainer
    sampler: ClassBalancedSampler
    strategy: tf.distribute.Strategy


def fit_hash_model(
    config: Config,
    *,
    train_inputs: SubsetInputs,
    val_inputs: SubsetInputs | None = None,
    layout: RunLayout | None = None,
    verbose: int = 1,
    class_names: Sequence[str] | None = None,
) -> TrainResult:
    """Trains the hash model and writes ``model/`` of the run folder.

    With ``train.strategy: multi_worker`` every worker calls this; only the chief writes
    ``layout`` (the others write to a temporary folder they remove) and a non-chief's result
    names the chief's files (see :mod:`hpsh_tf2.training.distributed`).

    Args:
        config: The resolved config (``train.mode`` picks features or end-to-end).
        train_inputs: Training subset (features in features mode, image paths end-to-end).
        val_inputs: Validation subset for model selection; empty or ``None``: final epoch.
        layout: The run folder; defaults to ``config.output.workdir``.
        verbose: Keras fit verbosity.
        class_names: Class names by label, for error messages (a class with too few items).

    Returns:
        A :class:`TrainResult`.

    Raises:
        TrainingError: If the inputs do not fit ``train.mode`` or the batch does not split over
            the replicas.
        RunFailedError: The loss became NaN or infinite; nothing is saved over the selected
            model, the checkpoints keep the last finite epoch.
        BadImageError: End to end, an image failed to decode (``data.verify_images: false``
            lets undecodable files through the scan); names the file.
    """
    layout = layout or RunLayout(config.output.workdir)
    _check_inputs(config, train_inputs)
    session = _build(config, train_inputs, class_names)
    # multi_worker: only the chief writes `layout`; a lost worker stops the run with one line.
    strategy = session.strategy
    with (
        distributed.writer_layout(strategy, layout) as own,
        distributed.worker_errors(strategy, layout),
    ):
        result, validation = _train(config, session, train_inputs, val_inputs, own, verbose)
    if own is layout:
        return result
    return distributed.chief_result(result, layout, validation, config.eval.k)


def _train(config, session: _Session, train_inputs, val_inputs, layout, verbose):
    """Resume, fit and finish in the run folder ``layout``; returns the result and validation."""
    layout.checkpoints.mkdir(parents=True, exist_ok=True)
    fingerprint = train_fingerprint(config, train_inputs, val_inputs)
    progress = Progress()
    checkpoint = tf.train.Checkpoint(**_checkpointed(session), **progress.checkpoint_items())
    manager = tf.train.CheckpointManager(checkpoint, layout.checkpoints, max_to_keep=MAX_TO_KEEP)
    resume = maybe_resume(manager, checkpoint, progress, layout, fingerprint)
    # the folder may have changed (emptied, a damaged checkpoint set aside): a fresh list
    manager = tf.train.CheckpointManager(checkpoint, layout.checkpoints, max_to_keep=MAX_TO_KEEP)
    variables = [*session.models.fit_model.variables, *session.trainer.optimizer.variables]
    resume = distributed.sync_resume(session.strategy, resume, variables)  # multi_worker only
    validation = validation_callback(
        config,
        layout.selected_model(config.train.mode),
        session.models.selected,
        train_inputs,
        val_inputs,
        resume,
    )
    if validation is not None and distributed.is_multi_worker(session.strategy):
        validation = distributed.SharedValidation(validation, session.strategy)
    callbacks = build_callbacks(layout, manager=manager, progress=progress, validation=validation)
    try:
        history = _fit(config, session, train_inputs, resume, callbacks, verbose)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as err:
        bad = _undecodable_image(train_inputs, val_inputs, BandReading.from_config(config))
        if bad is None:
            raise
        raise bad from err
    _stop_if_diverged(config, layout, history, resume, validation)
    return _finish(config, layout, session.models, validation, history), validation


def _undecodable_image(
    train_inputs, val_inputs, reading: BandReading | None = None
) -> BadImageError | None:
    """After a TF error in end-to-end training: the first training or validation image that
    cannot be decoded on the host (Pillow, or the scene reader for GeoTIFFs with an active
    ``reading``, which raises a :class:`~hpsh_tf2.geo.raster.BandError` naming the file and
    key), named (TF's decoder error names no file), or None."""
    paths = [*(train_inputs.paths or ())]
    if val_inputs is not None and val_inputs.paths is not None:
        paths += val_inputs.paths
    if not paths:
        return None
    logger.warning(
        "training stopped with a TensorFlow error; decoding the %d training and validation "
        "images to look for an undecodable one",
        len(paths),
    )
    bad = first_undecodable(paths, reading=reading)
    if bad is None:
        return None
    return BadImageError(
        bad.path,
        f"{bad.reason} (found during end-to-end training: data.verify_images is false; set it "
        "to true to skip undecodable images during the scan)",
    )


def _checkpointed(session: _Session) -> dict:
    """What an epoch checkpoint holds: the model, the optimizer (its variables include every
    trainable weight, the auxiliary classifier's too) and the hash head's non-trainable state
    (the input dropout's seed generator, which the optimizer does not reach), so a resumed run
    drops what an uninterrupted one would."""
    parts = {"model": session.models.fit_model, "optimizer": session.trainer.optimizer}
    state = list(session.models.hash_model.non_trainable_variables)
    if state:
        parts["head_state"] = state
    if session.trainer.classifier is not None:
        parts["classifier"] = session.trainer.classifier
    if session.trainer.hash_loss.weights:  # a loss with weights of its own (GreedyHash)
        parts["loss"] = session.trainer.hash_loss
    return parts


def _stop_if_diverged(config, layout, history: dict, resume, validation) -> None:
    """Raises :class:`RunFailedError` (one line) when the last epoch's loss is not finite.

    Nothing is saved then: the selected model on disk (if any) is the last good one, and the
    checkpoints hold the last finite epoch.
    """
    losses = history.get("loss", [])
    if not losses or math.isfinite(losses[-1]):
        return
    epoch = resume.epoch + len(losses)
    best_file = layout.selected_model(config.train.mode)
    if validation is not None and validation.best_epoch is not None and best_file.is_file():
        kept = f"kept the model of epoch {validation.best_epoch} ({best_file})"
    elif best_file.is_file():
        kept = f"left the existing {best_file} untouched"
    else:
        kept = "no model was written"
    raise RunFailedError(
        f"training diverged: the loss became NaN or infinite in epoch {epoch} "
        f"(train.learning_rate={config.train.learning_rate:g}); {kept}; try a lower "
        "train.learning_rate"
    )


def _check_inputs(config: Config, train_inputs: SubsetInputs) -> None:
    if config.train.mode == "features" and train_inputs.features is None:
        raise TrainingError("train.mode='features' needs feature rows; run extract first")
    if config.train.mode == "end_to_end" and train_inputs.paths is None:
        raise TrainingError(
            "train.mode='end_to_end' needs image paths; it is not available with data.features"
        )
    if len(train_inputs) == 0:
        raise TrainingError("the training subset is empty")


def _build(
    config: Config, train_inputs: SubsetInputs, class_names: Sequence[str] | None = None
) -> _Session:
    """Seeds, strategy, batch sampler, models and the compiled trainer."""
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.train.seed)
    strategy = make_strategy(
        config.train.strategy,
        collective_timeout_seconds=config.train.collective_timeout_seconds,
        cluster_start_timeout_seconds=config.train.cluster_start_timeout_seconds,
    )
    sampler = ClassBalancedSampler(
        train_inputs.labels,
        classes_per_batch=config.train.classes_per_batch,
        samples_per_class=config.train.samples_per_class,
        seed=config.train.seed,
        class_names=class_names,
    )
    if sampler.classes_per_batch % strategy.num_replicas_in_sync:
        raise TrainingError(
            f"train.classes_per_batch={sampler.classes_per_batch} must be divisible by the "
            f"number of replicas ({strategy.num_replicas_in_sync}) so each replica gets whole "
            "P x K blocks"
        )
    if sampler.classes_per_batch < 2 * strategy.num_replicas_in_sync:
        raise TrainingError(
            f"train.classes_per_batch={sampler.classes_per_batch} gives each of the "
            f"{strategy.num_replicas_in_sync} replicas fewer than 2 classes; a replica samples "
            f"negatives inside its own blocks, so P must be at least "
            f"{2 * strategy.num_replicas_in_sync}"
        )
    feature_dim = None if train_inputs.features is None else train_inputs.features.shape[1]
    with strategy.scope(), dtype_policy_scope(config.train.mixed_precision):
        models = build_models(config, feature_dim)
        if config.model.input_norm == "standardize":
            models.hash_model.get_layer("hash_head").set_input_statistics(train_inputs.features)
        num_classes = label_count(train_inputs.labels)
        trainer = HashTrainer(
            models.fit_model,
            sampler=triplet_sampler(config),
            loss=loss_from_config(config, num_classes),
            seed=config.train.seed,
            num_classes=num_classes,
        )
        trainer.compile(optimizer=make_optimizer(config), jit_compile=config.train.jit_compile)
        trainer.optimizer.build(trainer.trainable_variables)
    return _Session(models, trainer, sampler, strategy)


def _training_dataset(config, inputs: SubsetInputs, sampler, initial_epoch: int, rows=None):
    start = initial_epoch * config.train.steps_per_epoch
    if inputs.features is not None:
        return train_dataset_from_arrays(
            inputs.features, inputs.labels, sampler, start_batch=start, rows=rows
        )
    return train_dataset_from_images(
        inputs.paths,
        inputs.labels,
        sampler,
        image_size=config.model.image_size,
        preprocess=preprocessor(config.model.backbone),
        augment=config.train.augment,
        deterministic=True,  # the P x K block order must be kept
        start_batch=start,
        rows=rows,
        reading=BandReading.from_config(config),
    )


def _fit(config, session, train_inputs, resume, callbacks, verbose: int) -> dict:
    """Runs the remaining epochs; returns the per-epoch logs of this call."""
    if resume.epoch >= config.train.epochs:
        return {}
    if distributed.is_multi_worker(session.strategy):  # each worker reads its replicas' rows

        def build(rows):
            return _training_dataset(config, train_inputs, session.sampler, resume.epoch, rows)

        dataset = distributed.distributed_training_dataset(
            session.strategy,
            build,
            batch_size=session.sampler.batch_size,
            samples_per_class=session.sampler.samples_per_class,
        )
        share = session.sampler.batch_size // session.strategy.num_replicas_in_sync
        distributed.adapt_trainer(session.trainer, build((0, share)).element_spec)
    else:
        dataset = _training_dataset(config, train_inputs, session.sampler, resume.epoch)
    fit = session.trainer.fit(
        dataset,
        epochs=config.train.epochs,
        initial_epoch=resume.epoch,
        steps_per_epoch=config.train.steps_per_epoch,
        callbacks=callbacks,
        shuffle=False,
        verbose=verbose,
    )
    return {key: [float(v) for v in values] for key, values in fit.history.items()}


def _finish(
    config: Config,
    layout: RunLayout,
    models: TrainedModels,
    validation: RetrievalValidation | None,
    history: dict,
) -> TrainResult:
    """Writes the selected model(s) and a summary."""
    best_file = layout.selected_model(config.train.mode)
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
        if models.image_model is not None:
            selected = keras.saving.load_model(layout.image_model)
            save_keras_atomic(selected.layers[-1], layout.hash_model)
    else:
        selection = "final_epoch"
        selected_epoch = config.train.epochs
        save_keras_atomic(models.hash_model, layout.hash_model)
        if models.image_model is not None:
            save_keras_atomic(models.image_model, layout.image_model)
    best = None if validation is None else validation.best
    summary = {
        "mode": config.train.mode,
        "selection": selection,
        "selected_epoch": selected_epoch,
        "best_val_map": best,
        "epochs": config.train.epochs,
        "epochs_run": len(history.get("loss", [])),
        "stopped_early": bool(validation is not None and validation.stopped_epoch is not None),
        "steps_per_epoch": config.train.steps_per_epoch,
        "final_loss": history.get("loss", [math.nan])[-1] if history else None,
    }
    write_text_atomic(layout.train_summary, json.dumps(summary, indent=1))
    return TrainResult(
        model_dir=layout.model_dir,
        hash_model_path=layout.hash_model,
        image_model_path=layout.image_model if models.image_model is not None else None,
        selected_epoch=selected_epoch,
        selection=selection,
        best_val_map=best,
        history=history,
    )
