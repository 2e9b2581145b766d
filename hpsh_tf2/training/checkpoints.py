"""Checkpoints of an interrupted run: what they must match, resuming, atomic model saves.

After every finished epoch the model, the optimizer state **and the training progress** (epoch
count, best validation value and its epoch) go to ``model/checkpoints/`` as one TF checkpoint,
so the epoch a run resumes after can never disagree with the weights it restores (the
checkpoint is the single source of truth; ``state.json`` only names the fingerprint the
checkpoints belong to, written before the first one). Re-running ``train`` with the same
training inputs continues after the last finished epoch.

Before resuming, the checkpoints are verified newest first (:func:`checkpoint_damage`: the index
parses and every tensor reads back in full from the data files). A damaged newest checkpoint (a
crash or a full disk during the save) is moved to ``model/damaged-<UTC time>/`` and the run
resumes from the newest good one, with one warning naming both; the two newest checkpoints are
kept for that (``max_to_keep=2``). When none is good the run stops with one line naming the
damaged files and what to do; nothing is deleted.

The fingerprint covers what changes the training math: the training keys of the config (not
``output.workdir``, ``data.root``, the run name, evaluation or export options) and the training
and validation rows themselves. Checkpoints of another fingerprint are not deleted: they move,
with the old ``history.csv``, to ``model/abandoned-<UTC time>/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from hpsh_tf2.atomic import current_umask, write_text_atomic
from hpsh_tf2.config import Config, config_to_dict, fingerprint
from hpsh_tf2.dataset import SubsetInputs
from hpsh_tf2.errors import DamagedFileError
from hpsh_tf2.layout import RunLayout
from hpsh_tf2.saved_files import checkpoint_damage

__all__ = [
    "MAX_TO_KEEP",
    "NOT_TRAINING_KEYS",
    "Progress",
    "ResumeState",
    "checkpoint_damage",
    "data_digest",
    "maybe_resume",
    "save_keras_atomic",
    "train_fingerprint",
    "training_keys",
    "write_state",
]

logger = logging.getLogger(__name__)

MAX_TO_KEEP = 2
"""Epoch checkpoints kept: the newest and the one before, to fall back to if the newest is
damaged."""

NOT_TRAINING_KEYS = (
    "name",
    "output",
    "export",
    "data.root",
    "data.features",
    "data.on_bad_image",
    "data.verify_images",
    "data.content_hash",
    "train.extract_batch_size",
    "train.eval_batch_size",
    "eval.protocol",
    "eval.radius",
    "eval.backend",
    "eval.figures",
    "eval.interval",
    "eval.max_grids",
)
"""Config keys (or whole sections) that do not change the trained weights. The data keys are
covered by the split and the rows themselves; ``eval.k`` and ``eval.ties`` stay in, since they
select the kept epoch."""


def save_keras_atomic(model: keras.Model, path: str | os.PathLike[str]) -> Path:
    """Saves a ``.keras`` file under a temporary name beside ``path``, then renames it."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    model.save(tmp)
    os.chmod(tmp, 0o666 & ~current_umask())
    os.replace(tmp, path)
    return path


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def training_keys(config: Config) -> dict[str, Any]:
    """The config keys that change the trained weights, flattened (``"train.learning_rate"``)."""
    flat = _flatten(config_to_dict(config))
    return {
        key: value
        for key, value in flat.items()
        if not any(key == skip or key.startswith(f"{skip}.") for skip in NOT_TRAINING_KEYS)
    }


def data_digest(*subsets: SubsetInputs | None) -> str:
    """SHA-256 of the rows the model learns from: labels, feature rows or the images' last two
    path components (``class/file``, so a moved dataset root keeps the digest)."""
    digest = hashlib.sha256()
    for subset in subsets:
        digest.update(b"|subset|")
        if subset is None or len(subset) == 0:
            continue
        digest.update(np.ascontiguousarray(subset.labels, np.int32).tobytes())
        if subset.features is not None:
            digest.update(np.ascontiguousarray(subset.features, np.float32).tobytes())
        if subset.paths is not None:
            tails = ("/".join(Path(p).parts[-2:]) for p in subset.paths)
            digest.update("\0".join(tails).encode("utf-8"))
    return digest.hexdigest()[:16]


def train_fingerprint(
    config: Config, train_inputs: SubsetInputs, val_inputs: SubsetInputs | None = None
) -> str:
    """What a checkpoint must match to be resumed: the training keys but ``train.epochs`` (kept
    with ``train.lr_schedule: cosine``, whose length is the epoch count), and the training and
    validation rows."""
    keys = training_keys(config)
    if config.train.lr_schedule != "cosine":
        keys.pop("train.epochs", None)
    return fingerprint({"keys": keys, "data": data_digest(train_inputs, val_inputs)}, length=16)


class Progress:
    """The training progress saved inside every checkpoint (tf.Variables).

    Attributes:
        epoch: Finished epochs (int64).
        best: Best validation value so far (float64; NaN: none yet).
        best_epoch: Its 1-based epoch (int64; 0: none).
    """

    def __init__(self) -> None:
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="progress_epoch")
        self.best = tf.Variable(math.nan, dtype=tf.float64, trainable=False, name="progress_best")
        self.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="progress_best_ep")

    def checkpoint_items(self) -> dict[str, tf.Variable]:
        """The variables, by checkpoint key."""
        return {"epoch": self.epoch, "best": self.best, "best_epoch": self.best_epoch}

    def set(self, epoch: int, best: float | None, best_epoch: int | None) -> None:
        """Records the state after ``epoch`` finished epochs."""
        self.epoch.assign(int(epoch))
        self.best.assign(math.nan if best is None else float(best))
        self.best_epoch.assign(0 if best_epoch is None else int(best_epoch))

    def state(self) -> ResumeState:
        """The variables as a :class:`ResumeState`."""
        best = float(self.best.numpy())
        best_epoch = int(self.best_epoch.numpy())
        return ResumeState(
            int(self.epoch.numpy()),
            None if math.isnan(best) else best,
            best_epoch or None,
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


def write_state(state_path: Path, fingerprint_value: str) -> None:
    """Records which fingerprint the checkpoints in the folder belong to (atomically)."""
    payload = {
        "fingerprint": fingerprint_value,
        "note": "the epoch and best validation value are stored inside the checkpoint",
    }
    write_text_atomic(state_path, json.dumps(payload))


def _read_state(state_path: Path) -> dict:
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _set_aside(layout: RunLayout, reason: str) -> Path | None:
    """Moves the checkpoints and ``history.csv`` of an abandoned run to a dated folder."""
    leftovers = [p for p in layout.checkpoints.glob("*") if p.is_file()]
    if layout.history.is_file():
        leftovers.append(layout.history)
    if not leftovers:
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = layout.abandoned_checkpoints(stamp)
    target.mkdir(parents=True, exist_ok=True)
    for path in leftovers:
        shutil.move(str(path), target / path.name)
    logger.warning("%s; moved its checkpoints and history to %s", reason, target)
    return target


def _checkpoint_number(prefix: str) -> int:
    found = re.search(r"-(\d+)$", prefix)
    return int(found.group(1)) if found else -1


def _candidates(manager: tf.train.CheckpointManager) -> list[str]:
    """Every checkpoint of the folder, newest first: the manager's list and any ``*.index``."""
    found = {str(p) for p in manager.checkpoints}
    folder = Path(manager.directory)
    found |= {str(p.with_suffix("")) for p in folder.glob("*.index")}
    return sorted(found, key=_checkpoint_number, reverse=True)


def _files_of(prefix: str) -> list[Path]:
    path = Path(prefix)
    return sorted(path.parent.glob(f"{path.name}.*"))


def _newest_good(manager: tf.train.CheckpointManager, layout: RunLayout) -> str | None:
    """The newest checkpoint that passes :func:`checkpoint_damage`, moving newer damaged ones
    to ``model/damaged-<time>/`` (one warning naming both).

    Raises:
        DamagedFileError: Every checkpoint is damaged (one line naming them and what to do).
    """
    damaged: list[tuple[str, str]] = []
    good = None
    for prefix in _candidates(manager):
        reason = checkpoint_damage(prefix)
        if reason is None:
            good = prefix
            break
        damaged.append((prefix, reason))
    if not damaged:
        return good
    listed = "; ".join(f"{Path(p).name}: {reason}" for p, reason in damaged)
    folder = layout.checkpoints
    if good is None:
        raise DamagedFileError(
            f"cannot resume training: every checkpoint in {folder} is damaged ({listed}); move "
            f"that folder aside (e.g. mv {folder} {folder}.bad) or delete it to train from "
            "scratch"
        )
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = layout.damaged_checkpoints(stamp)
    target.mkdir(parents=True, exist_ok=True)
    for prefix, _ in damaged:
        for path in _files_of(prefix):
            shutil.move(str(path), target / path.name)
    logger.warning(
        "checkpoint %s is damaged (%s); resuming from the previous one, %s; moved the damaged "
        "files to %s",
        ", ".join(Path(p).name for p, _ in damaged),
        listed,
        Path(good).name,
        target,
    )
    return good


def _trim_history(history: Path, epochs: int) -> None:
    """Drops the ``history.csv`` rows of epochs after ``epochs`` (0-based ``epoch`` column), so
    a run resumed from an older checkpoint does not log an epoch twice."""
    if not history.is_file():
        return
    lines = history.read_text().splitlines(keepends=True)
    kept = lines[:1] + [
        line
        for line in lines[1:]
        if not line.split(",")[0].isdigit() or int(line.split(",")[0]) < epochs
    ]
    if len(kept) != len(lines):
        write_text_atomic(history, "".join(kept))


def maybe_resume(
    manager: tf.train.CheckpointManager,
    checkpoint: tf.train.Checkpoint,
    progress: Progress,
    layout: RunLayout,
    fingerprint_value: str,
) -> ResumeState:
    """Restores the newest good epoch checkpoint if it belongs to this fingerprint.

    Otherwise (another fingerprint, or none recorded) the old checkpoints and ``history.csv``
    move to ``model/abandoned-<time>/`` and the run starts afresh with a new ``state.json``.
    A damaged newest checkpoint is set aside and the previous good one restored (see the
    module docstring); the caller makes a new manager afterwards (its list is cached).

    Raises:
        DamagedFileError: Every checkpoint of this fingerprint is damaged.
    """
    state = _read_state(layout.checkpoint_state)
    exists = bool(_candidates(manager))
    if exists and state.get("fingerprint") == fingerprint_value:
        latest = _newest_good(manager, layout)
        # the ``checkpoint`` list names what is on disk now (TF ignores an unreadable one)
        kept = sorted(
            (p for p in _candidates(manager) if Path(f"{p}.index").is_file()),
            key=_checkpoint_number,
        )
        tf.compat.v1.train.update_checkpoint_state(  # with times, or the manager forgets them
            str(layout.checkpoints),
            latest,
            all_model_checkpoint_paths=kept,
            all_model_checkpoint_timestamps=[Path(f"{p}.index").stat().st_mtime for p in kept],
        )
        checkpoint.restore(latest).assert_existing_objects_matched()
        resumed = progress.state()
        if resumed.epoch == 0 and "epoch" in state:  # a checkpoint of an older version
            resumed = ResumeState(int(state["epoch"]), state.get("best"), state.get("best_epoch"))
        _trim_history(layout.history, resumed.epoch)
        logger.info("resuming after epoch %d from %s", resumed.epoch, latest)
        return resumed
    if exists:
        _set_aside(layout, "checkpoints were made with other training inputs; starting afresh")
    else:
        _set_aside(layout, "starting a fresh run")
    write_state(layout.checkpoint_state, fingerprint_value)
    return ResumeState()
