"""Code health: whether a model's binary codes still tell images apart.

A model that collapses (a random-weight backbone, a dead hash layer) gives many or all images the
same code; retrieval then returns ties in arbitrary order and the metrics alone may not make it
obvious. These statistics are computed over the database codes, with NumPy only (no per-row
Python loop), from 0/1 codes ``[N, bits]`` or packed codes ``uint8 [N, bits / 8]``:

* distinct codes: the number of different rows, and that number over ``N``;
* per-bit balance: ``c_b / N``, the fraction of ones of bit ``b`` (``c_b`` = ones of bit ``b``);
  a useful bit is near 0.5 (the balance criterion of Weiss et al., "Spectral Hashing",
  NIPS 2008, Eq. 2's constraint ``sum_i y_i = 0``);
* constant bits: bits with ``c_b = 0`` or ``c_b = N`` (they carry no information);
* mean pairwise Hamming distance over the ``N (N - 1) / 2`` pairs ``i < j``, exactly, from the
  per-bit counts: a pair differs in bit ``b`` iff one code has a one there and the other a
  zero, and ``c_b (N - c_b)`` pairs do, so

      mean_{i<j} d(i, j) = sum_b c_b (N - c_b) / (N (N - 1) / 2).

The codes are *degenerate* when fewer than :data:`MIN_DISTINCT_FRACTION` of the rows are
distinct or more than :data:`MAX_CONSTANT_FRACTION` of the bits are constant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "MAX_CONSTANT_FRACTION",
    "MIN_DISTINCT_FRACTION",
    "code_health",
    "degenerate_warning",
    "format_code_health",
    "tie_note",
]

MIN_DISTINCT_FRACTION = 0.01
"""Fewer distinct codes than this fraction of the database: degenerate."""

MAX_CONSTANT_FRACTION = 0.25
"""More constant bits than this fraction of the bits: degenerate."""


def _ones_and_rows(codes: Any, bits: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-bit ones counts ``c_b``, the rows as packed bytes, and the number of bits."""
    array = np.asarray(codes)
    if array.ndim != 2:
        raise ValueError(f"Received: codes of shape {array.shape}; expected [N, bits]")
    if bits is None:  # 0/1 codes
        if array.size and not np.isin(array, (0, 1)).all():
            raise ValueError("Received: codes with values other than 0 and 1; expected 0/1 codes")
        binary = array.astype(bool)
        return binary.sum(axis=0, dtype=np.int64), np.packbits(binary, axis=1), array.shape[1]
    packed = np.ascontiguousarray(array, np.uint8)
    if packed.shape[1] * 8 < bits:
        raise ValueError(
            f"Received: packed codes of shape {packed.shape}; expected [N, {-(-bits // 8)}] "
            f"bytes for {bits} bits"
        )
    ones = np.zeros(bits, np.int64)
    for start in range(0, packed.shape[0], 65536):  # blocks of rows bound the memory
        block = np.unpackbits(packed[start : start + 65536], axis=1, count=bits)
        ones += block.sum(axis=0, dtype=np.int64)
    return ones, packed, bits


def code_health(codes: Any, *, bits: int | None = None) -> dict[str, Any]:
    """The health statistics of a database's codes (see the module docstring for formulas).

    Args:
        codes: 0/1 codes ``[N, bits]``, or packed codes ``uint8 [N, ceil(bits / 8)]`` when
            ``bits`` is given (``np.packbits`` order, as :func:`hpsh_tf2.ops.codes.np_pack_codes`).
        bits: Code length of packed codes; None for 0/1 codes.

    Returns:
        JSON-ready ``{"num_codes", "bits", "distinct_codes", "distinct_fraction",
        "bit_balance" (list of c_b / N), "bits_constant", "mean_pairwise_hamming",
        "degenerate"}``.
    """
    ones, rows, bits = _ones_and_rows(codes, bits)
    n = int(rows.shape[0])
    if n:
        width = rows.shape[1]
        distinct = int(np.unique(np.ascontiguousarray(rows).view(f"V{width}")).shape[0])
    else:
        distinct = 0
    constant = int(np.count_nonzero((ones == 0) | (ones == n))) if n else 0
    pairs = n * (n - 1) / 2
    mean_distance = float((ones * (n - ones)).sum() / pairs) if pairs else 0.0
    distinct_fraction = distinct / n if n else 0.0
    return {
        "num_codes": n,
        "bits": int(bits),
        "distinct_codes": distinct,
        "distinct_fraction": distinct_fraction,
        "bit_balance": [float(c) / n if n else 0.0 for c in ones.tolist()],
        "bits_constant": constant,
        "mean_pairwise_hamming": mean_distance,
        "degenerate": bool(
            n > 1
            and (
                distinct_fraction < MIN_DISTINCT_FRACTION or constant > MAX_CONSTANT_FRACTION * bits
            )
        ),
    }


def format_code_health(health: dict[str, Any]) -> str:
    """One line: distinct codes, constant bits, balance range, mean pairwise distance."""
    balance = health["bit_balance"]
    span = f"{min(balance):.2f}-{max(balance):.2f}" if balance else "-"
    return (
        f"code health: {health['distinct_codes']} distinct codes of {health['num_codes']} "
        f"({health['distinct_fraction']:.1%}), {health['bits_constant']} of {health['bits']} "
        f"bits constant, bit balance {span}, mean pairwise Hamming "
        f"{health['mean_pairwise_hamming']:.2f}"
    )


def degenerate_warning(health: dict[str, Any] | None) -> str | None:
    """The one warning line for degenerate codes, or None when they are healthy (or unknown)."""
    if not health or not health.get("degenerate"):
        return None
    return (
        f"WARNING: degenerate codes: {health['distinct_codes']} distinct of "
        f"{health['num_codes']} ({health['distinct_fraction']:.1%}), "
        f"{health['bits_constant']} of {health['bits']} bits constant; retrieval ranks mostly "
        "ties (check the backbone weights and the training loss)"
    )


def tie_note(distances: Sequence[int]) -> str | None:
    """A note when two or more results all tie at one Hamming distance (their order is then
    arbitrary), else None."""
    values = np.asarray(distances)
    if values.size < 2 or not (values == values[0]).all():
        return None
    return (
        f"note: all {values.size} results tie at Hamming distance {int(values[0])}; their "
        "order is arbitrary (see the code health in the evaluation report)"
    )
