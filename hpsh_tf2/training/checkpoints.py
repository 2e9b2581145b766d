"""Checkpoints of an interrupted run: what they must match, resuming, atomic model saves.

After every epoch the model and optimizer state go to ``model/checkpoints/`` and a small state
file records the epoch, the fingerprint of the configuration and the best validation result so
far. Re-running ``train`` with the same configuration continues after the last finished epoch.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from hpsh_tf2.atomic import write_text_atomic
from hpsh_tf2.config import Config, config_fingerprint

__all__ = ["ResumeState", "maybe_resume", "save_keras_atomic", "train_fingerprint", "write_state"]

logger = logging.getLogger(__name__)


def save_keras_atomic(model: keras.Model, path: str | os.PathLike[str]) -> Path:
    """Saves a ``.keras`` file under a temporary name beside ``path``, then renames it."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    model.save(tmp)
    os.replace(tmp, path)
    return path


def train_fingerprint(config: Config, num_train: int) -> str:
    """What a checkpoint must match to be resumed (everything but epochs and eval/export)."""
    return config_fingerprint(
        config, drop=("train.epochs", "eval", "export"), extra={"num_train": num_train}
    )


@dataclass(frozen=True)
class ResumeState:
    """Where a run continues.

    Attributes:
        epoch: Finished epochs (0 = start afresh).
        best: Best validation value so far, or ``None``.
        best_epoch: Its 1-based epoch, or ``None``.
    """

    epoch: int = 0
    best: float | None = None
    best_epoch: int | None = None


def write_state(state_path: Path, fingerprint: str, state: ResumeState) -> None:
    """Records the checkpoint state (atomically)."""
    payload = {
        "epoch": state.epoch,
        "fingerprint": fingerprint,
        "best": state.best,
        "best_epoch": state.best_epoch,
    }
    write_text_atomic(state_path, json.dumps(payload))


def maybe_resume(
    manager: tf.train.CheckpointManager,
    checkpoint: tf.train.Checkpoint,
    state_path: Path,
    fingerprint: str,
) -> ResumeState:
    """Restores the last epoch checkpoint if it belongs to this configuration."""
    if manager.latest_checkpoint is None or not state_path.is_file():
        return ResumeState()
    state = json.loads(state_path.read_text())
    if state.get("fingerprint") != fingerprint:
        logger.warning(
            "checkpoints in %s were made with another configuration; starting afresh",
            manager.directory,
        )
        for path in Path(manager.directory).glob("*"):
            path.unlink()
        return ResumeState()
    checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    logger.info("resuming after epoch %d from %s", state["epoch"], manager.latest_checkpoint)
    return ResumeState(int(state["epoch"]), state.get("best"), state.get("best_epoch"))
