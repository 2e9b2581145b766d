"""Tests for hpsh_tf2.ops.checks: errors name the argument and the value received."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from hpsh_tf2.ops.checks import (
    ORIGINAL_ALIASES,
    check_bool,
    check_choice,
    check_finite,
    check_int,
    check_positive,
    check_samples_per_class,
    float_matrix,
    label_vector,
)


def test_accepted_values_are_normalised():
    assert check_finite("alpha", np.float32(0.5)) == 0.5 and isinstance(
        check_finite("alpha", 1), float
    )
    assert check_positive("cutoff", np.int64(2)) == 2.0
    assert check_choice("mode", "hpsh", ("hpsh", "original")) == "hpsh"
    assert check_samples_per_class(np.int32(5)) == 5
    assert check_int("k", np.int64(3), minimum=1) == 3 and type(check_int("k", np.int8(3))) is int
    assert check_bool("soft", np.bool_(True)) is True


def test_deprecated_alias_maps_to_new_name_with_warning():
    choices = ("hpsh", "original")
    with pytest.warns(DeprecationWarning, match=r"mode='seed' is deprecated; use mode='original'"):
        assert check_choice("mode", "seed", choices, aliases=ORIGINAL_ALIASES) == "original"
    with pytest.raises(ValueError, match=r"mode='seed'"):
        check_choice("mode", "seed", choices)  # without aliases the old name is unknown


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
        (lambda: check_samples_per_class(True), TypeError, r"samples_per_class=True"),
        (lambda: check_int("k", True), TypeError, r"k=True; expected an int"),
        (lambda: check_int("k", 2.0, minimum=1), TypeError, r"k=2\.0; expected an int >= 1"),
        (lambda: check_int("k", 0, minimum=1), ValueError, r"k=0; expected an int >= 1"),
        (lambda: check_bool("soft", 1), TypeError, r"soft=1; expected a bool"),
    ],
)
def test_rejections_name_argument_and_value(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


@pytest.mark.parametrize(
    ("dtype", "upcast", "expected"),
    [
        ("float16", True, tf.float32),
        ("bfloat16", True, tf.float32),
        ("float64", True, tf.float64),
        ("int32", True, tf.float32),
        ("float16", False, tf.float16),
        ("int32", False, tf.float32),
    ],
)
def test_float_matrix_dtypes(dtype, upcast, expected):
    x = tf.cast(tf.constant([[1.0, 2.0], [3.0, 4.0]]), dtype)
    got = float_matrix(x, "x", upcast=upcast)
    assert got.dtype == expected
    np.testing.assert_array_equal(tf.cast(got, tf.float64).numpy(), [[1, 2], [3, 4]])


def test_float_matrix_rejects_other_ranks():
    with pytest.raises(ValueError, match=r"x with shape \(3,\); expected a rank-2"):
        float_matrix(np.zeros(3), "x")


def test_label_vector_flattens_and_casts():
    got = label_vector(np.array([[3.0], [1.0], [2.0]], np.float32), 3)
    assert got.dtype == tf.int64 and got.numpy().tolist() == [3, 1, 2]
    assert label_vector([4, 5]).numpy().tolist() == [4, 5]


@pytest.mark.parametrize(
    ("labels", "n", "error", "pattern"),
    [
        (np.zeros((2, 2)), None, ValueError, r"shape \(2, 2\); expected \[n\] or \[n, 1\]"),
        (np.zeros(3), 4, ValueError, r"length 3 for 4 embeddings"),
        (np.array(["a", "b"]), None, TypeError, r"dtype string"),
    ],
)
def test_label_vector_rejections(labels, n, error, pattern):
    with pytest.raises(error, match=pattern):
        label_vector(labels, n)
