"""Iterative stratification of multi-label data (Sechidis, Tsoumakas & Vlahavas, 2011).

K. Sechidis, G. Tsoumakas, I. Vlahavas, "On the stratification of multi-label data", ECML PKDD
2011, Algorithm 1. With ``D`` the items, ``D^i`` the items carrying label ``i`` and ``r_j`` the
fraction wanted in subset ``j``:

- desired items per subset ``c_j = |D| r_j``; desired items of label ``i`` per subset
  ``c_j^i = |D^i| r_j``;
- while items are left: take the label ``l`` with the fewest (but at least one) remaining items
  (ties at random); hand each remaining item of ``D^l`` to the subset with the largest
  ``c_j^l``, ties broken by the largest ``c_j``, then at random; after each hand-out decrease
  ``c_m`` and ``c_m^λ`` for every label ``λ`` of the item;
- items without labels go to the subsets with the largest ``c_j``.

Vectorised per label: while the items of ``D^l`` are handed out only the chosen subset's
``c_m^l`` and ``c_m`` change, both by 1, so ``c_j - c_j^l`` is constant for every ``j`` and the
sequence of chosen subsets does not depend on which item is handed out. The greedy choice of the
largest ``c_j^l`` at each of the ``m = |D^l|`` steps takes the ``m`` largest values of
``{c_j^l - t : t >= 0}`` over all subsets, ordered by value, then ``c_j - c_j^l``, then a random
rank; so the number of items per subset is one sort, and shuffling the items before pairing them
with the choices gives Algorithm 1 with the items of ``D^l`` in random order. The desired counts
of every label are then updated with one matrix product. Subsets with fraction 0 get nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["iterative_stratification"]

_DECIMALS = 9  # desired counts are rounded so that equal fractions tie exactly


def _hand_out(
    primary: np.ndarray,
    secondary: np.ndarray,
    count: int,
    active: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Items per subset when ``count`` items go, one by one, to the subset with the largest
    ``primary`` (ties: largest ``secondary``, then random), each decreasing both by 1.

    Returns:
        int64 ``[k]``, summing to ``count`` (0 for inactive subsets).
    """
    subsets = np.flatnonzero(active)
    steps = np.arange(count)
    values = np.round(primary[subsets, None] - steps[None, :], _DECIMALS)
    offset = np.round(secondary[subsets] - primary[subsets], _DECIMALS)
    rank = rng.permutation(len(subsets))
    which = np.repeat(np.arange(len(subsets)), count)
    order = np.lexsort((rank[which], -offset[which], -values.reshape(-1)))[:count]
    counts = np.zeros(len(primary), np.int64)
    counts[subsets] = np.bincount(which[order], minlength=len(subsets))
    return counts


def iterative_stratification(
    labels: np.ndarray, fractions: Sequence[float], *, seed: int
) -> np.ndarray:
    """Assigns each item of a multi-label set to one subset so that every label keeps its share.

    Args:
        labels: Multi-hot ``[N, C]`` (0/1 or bool).
        fractions: ``r_j`` per subset, each in ``[0, 1]``, summing to 1.
        seed: Seed of ``np.random.default_rng`` (item order and tie-breaks).

    Returns:
        int64 ``[N]``: the subset index of each item (every item exactly once).

    Raises:
        ValueError: ``labels`` is not 2-D or the fractions are not a distribution.
    """
    hot = np.asarray(labels)
    if hot.ndim != 2:
        raise ValueError(f"Received: labels of shape {hot.shape}; expected multi-hot [N, C]")
    ratios = np.asarray(fractions, np.float64)
    if ratios.ndim != 1 or np.any(ratios < 0) or abs(ratios.sum() - 1.0) > 1e-6:
        raise ValueError(f"Received: fractions={list(fractions)}; expected fractions summing to 1")
    hot = hot.astype(bool)
    rng = np.random.default_rng(seed)
    n = hot.shape[0]
    active = ratios > 0
    per_label = hot.sum(axis=0).astype(np.int64)
    desired = n * ratios  # c_j
    desired_label = ratios[:, None] * per_label[None, :]  # c_j^i
    remaining = per_label.copy()
    assignment = np.full(n, -1, np.int64)
    while remaining.any():
        fewest = remaining[remaining > 0].min()
        label = rng.choice(np.flatnonzero(remaining == fewest))
        members = rng.permutation(np.flatnonzero(hot[:, label] & (assignment < 0)))
        counts = _hand_out(desired_label[:, label], desired, len(members), active, rng)
        chosen = np.repeat(np.arange(len(ratios)), counts)
        assignment[members] = chosen
        member_labels = hot[members].astype(np.float64)
        one_hot = np.eye(len(ratios))[chosen]
        desired_label -= one_hot.T @ member_labels
        desired -= counts
        remaining -= member_labels.sum(axis=0).astype(np.int64)
    rest = rng.permutation(np.flatnonzero(assignment < 0))
    if rest.size:
        counts = _hand_out(desired, desired, len(rest), active, rng)
        assignment[rest] = np.repeat(np.arange(len(ratios)), counts)
    return assignment
