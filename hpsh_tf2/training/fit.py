"""One training run: build -> resume -> fit -> finish.

:func:`fit_hash_model` runs ``keras.Model.fit`` on the infinite P x K pipeline with the HPSH
sampler and loss (:class:`~hpsh_tf2.training.trainer.HashTrainer`) and writes ``model/`` of the
run folder. Model selection uses the validation split (mAP@k of validation queries against the
training set); with no validation split the final epoch is kept. The test split is never
looked at.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from hpsh_tf2.atomic import write_text_atomic
from hpsh_tf2.config import Config
from hpsh_tf2.data.pipeline import (
    ClassBalancedSampler,
    train_dataset_from_arrays,
    train_dataset_from_images,
)
from hpsh_tf2.dataset import SubsetInputs
from hpsh_tf2.errors import HPSHError
from hpsh_tf2.layout import RunLayout
from hpsh_tf2.models.backbone import preprocessor
from hpsh_tf2.training import distributed
from hpsh_tf2.training.callbacks import RetrievalValidation, build_callbacks, validation_callback
from hpsh_tf2.training.checkpoints import (
    maybe_resume,
    save_keras_atomic,
    train_fingerprint,
)
from hpsh_tf2.training.trainer import (
    HashTrainer,
    TrainedModels,
    build_models,
    dtype_policy_scope,
    loss_options,
    make_optimizer,
    make_strategy,
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

    Returns:
        A :class:`TrainResult`.

    Raises:
        TrainingError: If the inputs do not fit ``train.mode`` or the batch does not split over
            the replicas.
    """
    layout = layout or RunLayout(config.output.workdir)
    _check_inputs(config, train_inputs)
    session = _build(config, train_inputs)
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
    fingerprint = train_fingerprint(config, len(train_inputs))
    checkpoint = tf.train.Checkpoint(
        model=session.models.fit_model, optimizer=session.trainer.optimizer
    )
    manager = tf.train.CheckpointManager(checkpoint, layout.checkpoints, max_to_keep=2)
    resume = maybe_resume(manager, checkpoint, layout.checkpoint_state, fingerprint)
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
    callbacks = build_callbacks(
        layout, manager=manager, fingerprint=fingerprint, validation=validation
    )
    history = _fit(config, session, train_inputs, resume, callbacks, verbose)
    return _finish(config, layout, session.models, validation, history), validation


def _check_inputs(config: Config, train_inputs: SubsetInputs) -> None:
    if config.train.mode == "features" and train_inputs.features is None:
        raise TrainingError("train.mode='features' needs feature rows; run extract first")
    if config.train.mode == "end_to_end" and train_inputs.paths is None:
        raise TrainingError(
            "train.mode='end_to_end' needs image paths; it is not available with data.features"
        )
    if len(train_inputs) == 0:
        raise TrainingError("the training subset is empty")


def _build(config: Config, train_inputs: SubsetInputs) -> _Session:
    """Seeds, strategy, batch sampler, models and the compiled trainer."""
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.train.seed)
    strategy = make_strategy(
        config.train.strategy, collective_timeout_seconds=config.train.collective_timeout_seconds
    )
    sampler = ClassBalancedSampler(
        train_inputs.labels,
        classes_per_batch=config.train.classes_per_batch,
        samples_per_class=config.train.samples_per_class,
        seed=config.train.seed,
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
        trainer = HashTrainer(
            models.fit_model, loss_options=loss_options(config), seed=config.train.seed
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
