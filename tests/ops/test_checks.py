"""Tests for hpsh_tf2.ops.checks: errors name the argument and the value received."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpsh_tf2.ops.checks import check_choice, check_finite, check_positive, check_samples_per_class


def test_accepted_values_are_normalised():
    assert check_finite("alpha", np.float32(0.5)) == 0.5 and isinstance(
        check_finite("alpha", 1), float
    )
    assert check_positive("cutoff", np.int64(2)) == 2.0
    assert check_choice("mode", "hpsh", ("hpsh", "seed")) == "hpsh"
    assert check_samples_per_class(np.int32(5)) == 5


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: check_finite("alpha", math.nan), ValueError, r"alpha=nan; expected a finite"),
        (lambda: check_finite("alpha", "0.3"), TypeError, r"alpha='0.3'"),
        (lambda: check_finite("alpha", True), TypeError, r"alpha=True"),
        (lambda: check_positive("cutoff", 0), ValueError, r"cutoff=0; expected a positive"),
        (lambda: check_positive("cutoff", math.inf), ValueError, r"cutoff=inf"),
        (lambda: check_choice("mode", "x", ("a", "b")), ValueError, r"mode='x'.*\('a', 'b'\)"),
        (lambda: check_samples_per_class(1), ValueError, r"samples_per_class=1"),
        (lambda: check_samples_per_class(2.0), TypeError, r"samples_per_class=2\.0"),
    ],
)
def test_rejections_name_argument_and_value(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
