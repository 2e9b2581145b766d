"""The ``train.strategy`` choices: how a training spreads over devices and machines.

Each entry of :data:`hpsh_tf2.registry.STRATEGIES` is a :class:`StrategyEntry`: a function
``(collective_timeout_seconds, cluster_start_timeout_seconds) -> tf.distribute.Strategy``
plus whether it spans several worker processes (such a strategy must be created before
TensorFlow runs anything, see :func:`hpsh_tf2.training.distributed.start_multi_worker`,
and one-machine verbs such as ``table`` refuse it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

from hpsh_tf2.registry import STRATEGIES
from hpsh_tf2.training.distributed import multi_worker_strategy

__all__ = ["DEFAULT", "MIRRORED", "MULTI_WORKER", "StrategyEntry", "make_strategy"]


@dataclass(frozen=True)
class StrategyEntry:
    """One ``train.strategy`` choice.

    Attributes:
        create: ``(collective_timeout_seconds, cluster_start_timeout_seconds) ->
            tf.distribute.Strategy``: the first bounds a collective operation, the second the
            wait for the other workers at start; strategies without workers ignore both.
        spans_workers: The strategy runs one process per worker from ``TF_CONFIG``.
    """

    create: Callable[[float | None, float], tf.distribute.Strategy]
    spans_workers: bool = False

    def __call__(
        self,
        collective_timeout_seconds: float | None = None,
        cluster_start_timeout_seconds: float = 300.0,
    ) -> tf.distribute.Strategy:
        return self.create(collective_timeout_seconds, cluster_start_timeout_seconds)


def _default(collective_timeout_seconds: float | None, start: float) -> tf.distribute.Strategy:
    del collective_timeout_seconds, start
    return tf.distribute.get_strategy()


def _mirrored(collective_timeout_seconds: float | None, start: float) -> tf.distribute.Strategy:
    del collective_timeout_seconds, start
    return tf.distribute.MirroredStrategy()


DEFAULT = StrategyEntry(_default)
"""One device: TensorFlow's default strategy."""
MIRRORED = StrategyEntry(_mirrored)
"""All local GPUs (or logical CPUs), synchronous all-reduce."""
MULTI_WORKER = StrategyEntry(multi_worker_strategy, spans_workers=True)
"""Workers from ``TF_CONFIG`` (see :mod:`hpsh_tf2.training.distributed`)."""


def make_strategy(
    name: str,
    *,
    collective_timeout_seconds: float | None = None,
    cluster_start_timeout_seconds: float = 300.0,
) -> tf.distribute.Strategy:
    """The strategy registered as ``train.strategy`` ``name``.

    Args:
        name: ``train.strategy``.
        collective_timeout_seconds: Limit of one collective operation (multi-worker only).
        cluster_start_timeout_seconds: Limit of the wait for the other workers (multi-worker
            only).

    Raises:
        HPSHError: An unregistered name (``RegistryError``, listing the registered ones), or a
            bad ``TF_CONFIG`` (``ClusterError``).
    """
    return STRATEGIES.build(name, collective_timeout_seconds, cluster_start_timeout_seconds)
