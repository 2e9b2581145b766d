"""Whether TensorFlow's saved files are whole: training checkpoints and SavedModel exports.

A crash, a full disk or a partial copy leaves a checkpoint or an export truncated; loading it
then fails deep inside TensorFlow (``IndexError: Read less bytes than requested``, ``not an
sstable``) without naming a file. These checks run before loading and name the damaged file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import saved_model_pb2

__all__ = ["checkpoint_damage", "saved_model_damage", "short_reason"]

READ_ERRORS = (tf.errors.OpError, RuntimeError, ValueError, IndexError)
"""What TensorFlow's checkpoint reader raises on a damaged file."""


def short_reason(err: BaseException) -> str:
    """The first non-empty line of an error's message (TF's run over several lines)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(err).__name__


def checkpoint_damage(prefix: str | os.PathLike[str]) -> str | None:
    """Why the TF checkpoint at ``prefix`` cannot be restored, or ``None`` if it can.

    The index must parse (``tf.train.load_checkpoint``), its data shards must be there, and every
    tensor must read back in full (a truncated data file fails with "Read less bytes than
    requested").

    Args:
        prefix: The checkpoint prefix (``.../ckpt-3``, ``<export>/variables/variables``).

    Returns:
        One line naming the damaged file (by its name) and the cause, or ``None``.
    """
    prefix = Path(prefix)
    index = prefix.with_name(f"{prefix.name}.index")
    if not index.is_file():
        return f"{index.name} is missing"
    try:
        reader = tf.train.load_checkpoint(str(prefix))
    except READ_ERRORS as err:
        missing = re.search(r"(\S+\.data-\d+-of-\d+); No such file", str(err))
        if missing:
            return f"{Path(missing.group(1)).name} is missing"
        return f"{index.name} is unreadable ({short_reason(err)})"
    shards = sorted(p.name for p in prefix.parent.glob(f"{prefix.name}.data-*-of-*"))
    try:
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except READ_ERRORS as err:
        where = " or ".join(shards) or f"{prefix.name}.data-*"
        return f"{where} is truncated or corrupt ({short_reason(err)})"
    return None


def saved_model_damage(version_dir: str | os.PathLike[str]) -> str | None:
    """Why the SavedModel folder cannot be loaded, or ``None`` if its files are whole.

    Checks that ``saved_model.pb`` exists and parses, and that ``variables/`` (when the model
    has any) reads back in full (:func:`checkpoint_damage`).

    Returns:
        One line naming the damaged file relative to ``version_dir`` and the cause, or ``None``.
    """
    folder = Path(version_dir)
    graph = folder / "saved_model.pb"
    if not graph.is_file():
        return "saved_model.pb is missing"
    try:
        saved_model_pb2.SavedModel().ParseFromString(graph.read_bytes())
    except DecodeError as err:
        return f"saved_model.pb is truncated or corrupt ({short_reason(err)})"
    variables = folder / "variables"
    if not variables.is_dir():
        return None
    damage = checkpoint_damage(variables / "variables")
    return None if damage is None else f"variables/{damage}"
