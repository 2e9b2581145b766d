"""Argument checks shared by the TF ops and losses; errors name the argument and its value."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["check_choice", "check_finite", "check_positive", "check_samples_per_class"]

_NUMBER = (int, float, np.floating, np.integer)


def check_finite(name: str, value: float) -> float:
    """A finite number, as a float."""
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        raise TypeError(f"Received: {name}={value!r}; expected a finite float.")
    if not math.isfinite(value):
        raise ValueError(f"Received: {name}={value!r}; expected a finite float.")
    return float(value)


def check_positive(name: str, value: float) -> float:
    """A finite number > 0, as a float."""
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        raise TypeError(f"Received: {name}={value!r}; expected a positive float.")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"Received: {name}={value!r}; expected a positive finite float.")
    return float(value)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """One of ``choices``."""
    if value not in choices:
        raise ValueError(f"Received: {name}={value!r}; expected one of {choices}.")
    return value


def check_samples_per_class(samples_per_class: int) -> int:
    """K of a P x K batch: an integer >= 2 (each anchor needs a positive)."""
    if isinstance(samples_per_class, bool) or not isinstance(samples_per_class, int | np.integer):
        raise TypeError(f"Received: samples_per_class={samples_per_class!r}; expected an int >= 2.")
    if samples_per_class < 2:
        raise ValueError(
            f"Received: samples_per_class={samples_per_class}; expected an int >= 2 "
            "(each anchor needs at least one positive)."
        )
    return int(samples_per_class)
