"""Code health statistics against a brute-force NumPy reference (issue 23 item 13)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hpsh_tf2.evaluation.code_health import (
    code_health,
    degenerate_warning,
    format_code_health,
    tie_note,
)


def _reference(codes: np.ndarray) -> dict:
    """Every pair compared explicitly; distinct rows as a set of tuples."""
    n, bits = codes.shape
    pairs = list(itertools.combinations(range(n), 2))
    distances = [int(np.count_nonzero(codes[i] != codes[j])) for i, j in pairs]
    balance = [sum(int(row[b]) for row in codes) / n for b in range(bits)]
    return {
        "distinct_codes": len({tuple(row) for row in codes.tolist()}),
        "bit_balance": balance,
        "bits_constant": sum(1 for v in balance if v in (0.0, 1.0)),
        "mean_pairwise_hamming": sum(distances) / len(pairs),
    }


@pytest.mark.parametrize(
    ("rows", "bits", "p_one", "seed"),
    [(40, 16, 0.5, 0), (33, 12, 0.9, 1), (25, 20, 0.02, 2), (2, 8, 0.5, 3)],
)
def test_matches_brute_force_reference_on_01_and_packed_codes(rows, bits, p_one, seed):
    rng = np.random.default_rng(seed)
    codes = (rng.random((rows, bits)) < p_one).astype(np.uint8)
    codes[rows // 2 :: 3] = codes[0]  # some duplicate rows
    expected = _reference(codes)
    for health in (code_health(codes), code_health(np.packbits(codes, axis=1), bits=bits)):
        assert health["num_codes"] == rows and health["bits"] == bits
        assert health["distinct_codes"] == expected["distinct_codes"]
        assert health["distinct_fraction"] == pytest.approx(expected["distinct_codes"] / rows)
        np.testing.assert_allclose(health["bit_balance"], expected["bit_balance"])
        assert health["bits_constant"] == expected["bits_constant"]
        assert health["mean_pairwise_hamming"] == pytest.approx(
            expected["mean_pairwise_hamming"], rel=1e-12
        )


def test_collapsed_codes_are_degenerate_and_warned_once():
    same = np.tile(np.array([[1, 0, 1, 1, 0, 0, 1, 0]], np.uint8), (300, 1))
    health = code_health(same)
    assert health["distinct_codes"] == 1 and health["bits_constant"] == 8
    assert health["mean_pairwise_hamming"] == 0.0 and health["degenerate"]
    warning = degenerate_warning(health)
    assert warning is not None and "\n" not in warning and "1 distinct of 300" in warning
    assert "1 distinct codes of 300" in format_code_health(health)


def test_constant_bits_alone_make_codes_degenerate():
    rng = np.random.default_rng(4)
    codes = rng.integers(0, 2, (500, 16), dtype=np.uint8)
    assert not code_health(codes)["degenerate"] and degenerate_warning(code_health(codes)) is None
    codes[:, :5] = 1  # 5 of 16 bits constant > a quarter
    health = code_health(codes)
    assert health["bits_constant"] == 5 and health["degenerate"]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="0 and 1"):
        code_health(np.array([[0, 2]]))
    with pytest.raises(ValueError, match="bytes for 16 bits"):
        code_health(np.zeros((3, 1), np.uint8), bits=16)


def test_tie_note_only_when_every_result_ties():
    assert tie_note([3, 3, 3]) is not None and "all 3 results tie at Hamming distance 3" in (
        tie_note([3, 3, 3]) or ""
    )
    assert tie_note([0, 0, 1]) is None and tie_note([2]) is None and tie_note([]) is None
