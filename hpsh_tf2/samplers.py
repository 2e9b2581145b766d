"""Triplet samplers: configured objects that turn a P x K batch into (anchor, positive, negative).

A sampler is the *miner* half of the HPSH loss (the loss half is
:func:`hpsh_tf2.losses.hpsh_triplet_loss`): it is built once from the ``sampler`` section of
a config and called on every batch,

    sampler = make_sampler(config.sampler, samples_per_class=5, default_cutoff=0.9)
    anchors, positives, negatives = sampler(embeddings, labels, seed)

The maths lives in :func:`hpsh_tf2.ops.sampling.sample_triplets`; this module only holds the
options, validates them once, and serialises them (``get_config`` / ``from_config``, the
dataclass's fields). Adding a sampling mode is one :class:`hpsh_tf2.ops.sampling.NegativeRule`
plus one line registering it in :data:`hpsh_tf2.registry.SAMPLERS` (CONTRIBUTING.md); the
config's ``sampler.mode`` accepts every registered name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from hpsh_tf2.config import SamplerConfig
from hpsh_tf2.ops.checks import (
    ORIGINAL_ALIASES,
    check_choice,
    check_positive,
    check_samples_per_class,
)
from hpsh_tf2.ops.sampling import (
    EMPTY_ROW_POLICIES,
    ORIGINAL_NONZERO_LOSS_CUTOFF,
    negative_rule,
    sample_triplets,
)
from hpsh_tf2.registry import SAMPLERS

__all__ = ["ORIGINAL_NONZERO_LOSS_CUTOFF", "TripletSampler", "make_sampler"]

# The default bound of the other modes: alpha + beta with the loss's default margins.
_DEFAULT_NONZERO_LOSS_CUTOFF = 0.9


@dataclass(frozen=True)
class TripletSampler:
    """Samples the ``n * (K - 1)`` triplets of a P x K batch (see ``sample_triplets``).

    Every row is an anchor ``K - 1`` times, once with each block mate as the positive; the
    negatives depend on ``mode``: ``"hpsh"`` (distance-weighted on true distances),
    ``"original"`` (the original code's sampler; ``"seed"`` is a deprecated alias),
    ``"random"``, ``"semihard"`` or ``"hard"``.

    Attributes:
        samples_per_class: ``K >= 2``, rows per class block.
        mode: A name registered in :data:`hpsh_tf2.registry.SAMPLERS`.
        cutoff: Lower clip of the distance before weighting (> 0; ``"hpsh"``/``"original"``).
        nonzero_loss_cutoff: Distances at or beyond are never drawn (> 0). ``None`` resolves
            to 1.4 in mode ``"original"`` (the original's value) and 0.9 (alpha + beta with
            the default margins) otherwise; ``make_sampler`` passes alpha + beta of the config.
        empty_rows: ``"index0"`` or ``"error"``: what a row of the original sampler with no
            eligible negative does (``"original"`` only).

    Raises:
        ValueError: On an unknown mode or policy or an out-of-range number.
        TypeError: On a value of the wrong type.
    """

    samples_per_class: int
    mode: str = "hpsh"
    cutoff: float = 0.5
    nonzero_loss_cutoff: float | None = None
    empty_rows: str = "index0"

    def __post_init__(self) -> None:
        mode = _canonical_mode(self.mode)
        rule = negative_rule(mode)
        bound = self.nonzero_loss_cutoff
        if bound is None:
            bound = rule.default_nonzero_loss_cutoff or _DEFAULT_NONZERO_LOSS_CUTOFF
        values = {
            "samples_per_class": check_samples_per_class(self.samples_per_class),
            "mode": mode,
            "cutoff": check_positive("cutoff", self.cutoff),
            "nonzero_loss_cutoff": check_positive("nonzero_loss_cutoff", bound),
            "empty_rows": check_choice("empty_rows", self.empty_rows, EMPTY_ROW_POLICIES),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __call__(
        self, embeddings: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Triplet indices of one batch.

        Args:
            embeddings: ``[n, d]`` embeddings (HPSH: the L2-normalised sigmoid scores); read
                through ``stop_gradient``.
            labels: Integer labels ``[n]`` or ``[n, 1]`` in blocks of ``samples_per_class``.
            seed: ``None`` (stateful draws) or an integer ``[2]`` tensor (stateless draws).

        Returns:
            ``(anchors, positives, negatives)``, int32 ``[n * (K - 1)]`` row indices.
        """
        return sample_triplets(
            embeddings,
            labels,
            samples_per_class=self.samples_per_class,
            mode=self.mode,
            cutoff=self.cutoff,
            nonzero_loss_cutoff=self.nonzero_loss_cutoff,
            seed=seed,
            empty_rows=self.empty_rows,
        )

    def get_config(self) -> dict[str, Any]:
        """The fields as a JSON-friendly dict (``nonzero_loss_cutoff`` resolved)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TripletSampler:
        """Inverse of :meth:`get_config`."""
        return cls(**config)


def _canonical_mode(mode: str) -> str:
    """The registered name of ``mode`` (a deprecated alias mapped to its new name)."""
    return check_choice("mode", mode, SAMPLERS.names(), aliases=ORIGINAL_ALIASES)


def make_sampler(
    config: SamplerConfig, *, samples_per_class: int, default_cutoff: float
) -> TripletSampler:
    """The sampler described by a config's ``sampler`` section.

    Args:
        config: The ``sampler`` section (mode, cutoff, nonzero_loss_cutoff, empty_rows).
        samples_per_class: ``train.samples_per_class``.
        default_cutoff: The distance bound when ``sampler.nonzero_loss_cutoff`` is null and
            the mode is not ``"original"`` (which defaults to 1.4): ``loss.alpha + loss.beta``.

    Returns:
        The sampler.
    """
    bound = config.nonzero_loss_cutoff
    if bound is None and negative_rule(config.mode).default_nonzero_loss_cutoff is None:
        bound = round(check_positive("default_cutoff", default_cutoff), 10)  # 0.3 + 0.6 -> 0.9
    return TripletSampler(
        samples_per_class=samples_per_class,
        mode=config.mode,
        cutoff=config.cutoff,
        nonzero_loss_cutoff=bound,
        empty_rows=config.empty_rows,
    )
