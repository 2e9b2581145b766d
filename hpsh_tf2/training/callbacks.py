"""Keras callbacks of a training run: validation-based model selection and epoch checkpoints."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import keras
import tensorflow as tf

from hpsh_tf2.config import Config
from hpsh_tf2.data.images import BandReading
from hpsh_tf2.dataset import SubsetInputs
from hpsh_tf2.encode import ScoreEncoder
from hpsh_tf2.evaluation.metrics import map_at_k
from hpsh_tf2.evaluation.search import search
from hpsh_tf2.evaluation.ties import code_histograms, expected_map_at_k
from hpsh_tf2.layout import RunLayout
from hpsh_tf2.ops.codes import np_binarize
from hpsh_tf2.training.checkpoints import Progress, ResumeState, save_keras_atomic

__all__ = [
    "EpochCheckpoint",
    "RetrievalValidation",
    "build_callbacks",
    "diverged",
    "validation_callback",
]

logger = logging.getLogger(__name__)


def diverged(logs: dict | None) -> bool:
    """Whether an epoch's logs show a non-finite loss (the weights are then unusable)."""
    loss = (logs or {}).get("loss")
    try:
        return loss is not None and not math.isfinite(float(loss))
    except (TypeError, ValueError):
        return False


class RetrievalValidation(keras.callbacks.Callback):
    """Logs ``val_map@k`` (validation queries vs the training set) and keeps the best model.

    With ``ties="expected"`` (default) the value is tie-aware: the expected mAP@k over every
    order of database items at equal Hamming distance, so model selection does not depend on
    how the training files are named; ``"index"`` ranks ties by database index.

    Args:
        train_inputs: The database (training subset).
        val_inputs: The queries (validation subset).
        k: Cut-off of mAP@k.
        save_path: Where the best model is written (``.keras``).
        model_to_save: The model saved on improvement.
        encode: Callable ``(inputs) -> scores`` with the current weights.
        best: Best value of an earlier (resumed) part of the run.
        best_epoch: Its 1-based epoch.
        ties: ``"expected"`` or ``"index"`` (``eval.ties``).
        patience: Early stopping: training stops once this many epochs have passed without a
            better value (``train.early_stopping_patience``; 0 = never). The best epoch's model
            is the one kept.
    """

    def __init__(
        self,
        *,
        train_inputs,
        val_inputs,
        k,
        save_path,
        model_to_save,
        encode,
        best=None,
        best_epoch=None,
        ties="expected",
        patience=0,
    ):
        super().__init__()
        self.patience = int(patience)
        self.stopped_epoch: int | None = None
        self.ties = ties
        self.train_inputs = train_inputs
        self.val_inputs = val_inputs
        self.k = int(k)
        self.save_path = Path(save_path)
        self.model_to_save = model_to_save
        self.encode = encode
        self.best = best
        self.best_epoch = best_epoch
        self.key = f"val_map@{self.k}"

    def on_epoch_end(self, epoch, logs=None):
        if diverged(logs):  # NaN weights: never scored, never saved over a good model
            logger.warning("epoch %d: the loss is not finite; the model is not saved", epoch + 1)
            return
        self.record(epoch, self.measure(), logs)

    def measure(self) -> float:
        """``val_map@k`` of the current weights."""
        db_codes = np_binarize(self.encode(self.train_inputs))
        query_codes = np_binarize(self.encode(self.val_inputs))
        return self._map(query_codes, db_codes, min(self.k, len(db_codes)))

    def record(self, epoch: int, value: float, logs: dict | None = None) -> None:
        """Logs ``value`` for 0-based ``epoch`` and saves the model if it improved."""
        if logs is not None:
            logs[self.key] = value
        if self.best is None or value > self.best:
            self.best = value
            self.best_epoch = epoch + 1
            save_keras_atomic(self.model_to_save, self.save_path)
            logger.info("epoch %d: %s improved to %.4f; saved", epoch + 1, self.key, value)
        elif self.patience and epoch + 1 - self.best_epoch >= self.patience:
            self.stopped_epoch = epoch + 1
            if self.model is not None:
                self.model.stop_training = True
            logger.info(
                "epoch %d: no better %s for %d epochs (best %.4f at epoch %d); stopping",
                epoch + 1,
                self.key,
                self.patience,
                self.best,
                self.best_epoch,
            )

    def _map(self, query_codes, db_codes, k: int) -> float:
        query_labels, db_labels = self.val_inputs.labels, self.train_inputs.labels
        if self.ties == "index":
            retrieved = db_labels[search(query_codes, db_codes, k=k).indices]
            return float(map_at_k(query_labels=query_labels, retrieved_labels=retrieved, k=k))
        relevant, total = code_histograms(
            query_codes=query_codes,
            query_labels=query_labels,
            db_codes=db_codes,
            db_labels=db_labels,
        )
        return float(expected_map_at_k(relevant_hist=relevant, total_hist=total, k=k))


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves model, optimizer state and progress (epoch, best) after every epoch, as one
    checkpoint, for resuming an interrupted run. A diverged epoch (non-finite loss) is not
    saved, so a resume starts from the last finite weights."""

    def __init__(
        self,
        manager: tf.train.CheckpointManager,
        progress: Progress,
        *,
        validation: RetrievalValidation | None = None,
    ):
        super().__init__()
        self.manager = manager
        self.progress = progress
        self.validation = validation

    def on_epoch_end(self, epoch, logs=None):
        if diverged(logs):
            return
        best = None if self.validation is None else self.validation.best
        best_epoch = None if self.validation is None else self.validation.best_epoch
        self.progress.set(epoch + 1, best, best_epoch)
        self.manager.save(checkpoint_number=epoch + 1)


def validation_callback(
    config: Config,
    save_path: Path,
    model_to_save: keras.Model,
    train_inputs: SubsetInputs,
    val_inputs: SubsetInputs | None,
    resume: ResumeState,
) -> RetrievalValidation | None:
    """Model selection on the validation split; ``None`` without one (final epoch is kept)."""
    if val_inputs is None or len(val_inputs) == 0:
        return None
    encode = ScoreEncoder(
        model_to_save,
        batch_size=config.train.eval_batch_size,
        image_size=config.model.image_size,
        backbone=config.model.backbone,
        reading=BandReading.from_config(config),
    )
    return RetrievalValidation(
        train_inputs=train_inputs,
        val_inputs=val_inputs,
        k=config.eval.k,
        save_path=save_path,
        model_to_save=model_to_save,
        encode=encode,
        best=resume.best,
        best_epoch=resume.best_epoch,
        ties=config.eval.ties,
        patience=config.train.early_stopping_patience,
    )


def build_callbacks(
    layout: RunLayout,
    *,
    manager: tf.train.CheckpointManager,
    progress: Progress,
    validation: RetrievalValidation | None,
) -> list[keras.callbacks.Callback]:
    """Validation (if any), epoch checkpoints, CSV history, TensorBoard, stop on NaN."""
    return [
        *([validation] if validation is not None else []),
        EpochCheckpoint(manager, progress, validation=validation),
        keras.callbacks.CSVLogger(str(layout.history), append=True),
        keras.callbacks.TensorBoard(log_dir=str(layout.logs), write_graph=False),
        keras.callbacks.TerminateOnNaN(),
    ]
