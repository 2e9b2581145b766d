"""Argument checks shared by the TF ops, losses and layers; errors name the argument and value.

Scalar validators (``check_int``, ``check_bool``, ``check_finite``, ``check_positive``,
``check_choice``, ``check_samples_per_class``) and the two tensor coercions every op starts
with (``float_matrix`` for ``[n, d]`` embeddings, ``label_vector`` for ``[n]``/``[n, 1]``
labels). ``bool`` is never accepted where a number is expected (``True`` is an ``int`` in
Python).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from hpsh_tf2.config import valid_bits

__all__ = [
    "ORIGINAL_ALIASES",
    "check_bits",
    "check_bool",
    "check_choice",
    "check_finite",
    "check_int",
    "check_positive",
    "check_samples_per_class",
    "float_matrix",
    "label_vector",
]

_NUMBER = (int, float, np.floating, np.integer)

# Deprecated spelling of the compatibility modes (sampler mode, loss variant, head init).
ORIGINAL_ALIASES: Mapping[str, str] = {"seed": "original"}


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_number(value: object) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool | np.bool_)


def check_int(name: str, value: int, *, minimum: int | None = None) -> int:
    """An integer (not a bool), optionally ``>= minimum``, as a Python int.

    Raises:
        TypeError: If ``value`` is not an integer.
        ValueError: If ``value < minimum``.
    """
    bound = "" if minimum is None else f" >= {minimum}"
    if not _is_int(value):
        raise TypeError(f"Received: {name}={value!r}; expected an int{bound}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"Received: {name}={value}; expected an int{bound}.")
    return int(value)


def check_bool(name: str, value: bool) -> bool:
    """A bool (Python or NumPy), as a Python bool.

    Raises:
        TypeError: If ``value`` is not a bool.
    """
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"Received: {name}={value!r}; expected a bool.")
    return bool(value)


def check_finite(name: str, value: float) -> float:
    """A finite number, as a float."""
    if not _is_number(value):
        raise TypeError(f"Received: {name}={value!r}; expected a finite float.")
    if not math.isfinite(value):
        raise ValueError(f"Received: {name}={value!r}; expected a finite float.")
    return float(value)


def check_positive(name: str, value: float) -> float:
    """A finite number > 0, as a float."""
    if not _is_number(value):
        raise TypeError(f"Received: {name}={value!r}; expected a positive float.")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"Received: {name}={value!r}; expected a positive finite float.")
    return float(value)


def check_choice(
    name: str,
    value: str,
    choices: tuple[str, ...],
    *,
    aliases: Mapping[str, str] | None = None,
) -> str:
    """One of ``choices``; a deprecated alias is mapped to its new name with a warning.

    Args:
        name: Argument name used in messages.
        value: The value received.
        choices: The accepted (canonical) values.
        aliases: Deprecated spelling -> canonical value (e.g. ``{"seed": "original"}``).

    Returns:
        The canonical value.

    Raises:
        ValueError: If ``value`` is neither a choice nor an alias.
    """
    if aliases and isinstance(value, str) and value in aliases:
        new = aliases[value]
        warnings.warn(
            f"{name}={value!r} is deprecated; use {name}={new!r} (same behaviour).",
            DeprecationWarning,
            stacklevel=3,
        )
        value = new
    if value not in choices:
        raise ValueError(f"Received: {name}={value!r}; expected one of {choices}.")
    return value


def check_bits(bits: object, name: str = "bits") -> int:
    """A code length (:func:`hpsh_tf2.config.valid_bits`: a positive multiple of 8) as an int.

    Raises:
        ValueError: Not an integer, or not a positive multiple of 8.
    """
    shown = int(bits) if _is_int(bits) else bits
    if not _is_int(bits) or not valid_bits(int(bits)):
        raise ValueError(f"Received: {name}={shown!r}; expected a positive multiple of 8")
    return int(bits)


def check_samples_per_class(samples_per_class: int) -> int:
    """K of a P x K batch: an integer >= 2 (each anchor needs a positive)."""
    if not _is_int(samples_per_class):
        raise TypeError(f"Received: samples_per_class={samples_per_class!r}; expected an int >= 2.")
    if samples_per_class < 2:
        raise ValueError(
            f"Received: samples_per_class={samples_per_class}; expected an int >= 2 "
            "(each anchor needs at least one positive)."
        )
    return int(samples_per_class)


def float_matrix(x: tf.Tensor, name: str, *, upcast: bool = True) -> tf.Tensor:
    """A rank-2 floating tensor ``[n, d]``.

    Args:
        x: Tensor-like input.
        name: Argument name used in messages.
        upcast: ``True``: compute dtype of the losses and sampler, float32 (float64 kept;
            float16/bfloat16 and integers cast up). ``False``: floating dtypes kept, other
            dtypes cast to float32.

    Returns:
        The tensor.

    Raises:
        ValueError: If ``x`` has a known rank other than 2.
    """
    x = tf.convert_to_tensor(x)
    if x.shape.rank is not None and x.shape.rank != 2:
        raise ValueError(f"Received: {name} with shape {x.shape}; expected a rank-2 tensor [n, d].")
    keep = x.dtype == tf.float64 if upcast else x.dtype.is_floating
    return x if keep else tf.cast(x, tf.float32)


def label_vector(labels: tf.Tensor, n: int | None = None) -> tf.Tensor:
    """Integer (or integral float) labels ``[n]`` or ``[n, 1]`` as an int64 vector ``[n]``.

    Args:
        labels: Tensor-like labels.
        n: Number of embedding rows, if known: the label count must match.

    Returns:
        int64 tensor ``[n]``.

    Raises:
        ValueError: On a rank other than 1 (or ``[n, 1]``) or a length other than ``n``.
        TypeError: On a non-numeric dtype.
    """
    y = tf.convert_to_tensor(labels)
    if y.shape.rank == 2 and y.shape[1] == 1:
        y = tf.reshape(y, [-1])
    if y.shape.rank is not None and y.shape.rank != 1:
        raise ValueError(f"Received: labels with shape {y.shape}; expected [n] or [n, 1].")
    if not (y.dtype.is_floating or y.dtype.is_integer):
        raise TypeError(f"Received: labels of dtype {y.dtype.name}; expected integer labels.")
    if n is not None and y.shape[0] is not None and y.shape[0] != n:
        raise ValueError(
            f"Received: labels of length {y.shape[0]} for {n} embeddings; "
            "expected one label per embedding row."
        )
    return tf.cast(y, tf.int64)
