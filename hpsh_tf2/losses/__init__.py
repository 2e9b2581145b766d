"""Training losses: HPSH and the deep-hashing baselines, chosen by ``loss.name``.

One module per method (:mod:`~hpsh_tf2.losses.hpsh` and the baselines), the interface they share
in :mod:`~hpsh_tf2.losses.common` (:class:`~hpsh_tf2.losses.common.HashLoss`,
:func:`~hpsh_tf2.losses.common.make_loss`). Methods are registered by name in
:data:`hpsh_tf2.registry.LOSSES`. The names below are the HPSH module's public API, re-exported
so that ``from hpsh_tf2.losses import hpsh_loss`` keeps working.
"""

from hpsh_tf2.losses.common import HashLoss, log_cosh, make_loss, similarity_matrix
from hpsh_tf2.losses.hpsh import (
    DISTANCE_METRICS,
    HPSH_VARIANTS,
    HPSHHashLoss,
    HPSHLoss,
    LossWeights,
    TripletHardLoss,
    TripletSemiHardLoss,
    classification_loss,
    hpsh_loss,
    hpsh_triplet_loss,
    make_loss_weights,
    margin_loss,
    triplet_hard_loss,
    triplet_semihard_loss,
)

__all__ = [
    "DISTANCE_METRICS",
    "HPSH_VARIANTS",
    "HPSHHashLoss",
    "HPSHLoss",
    "HashLoss",
    "LossWeights",
    "TripletHardLoss",
    "TripletSemiHardLoss",
    "classification_loss",
    "hpsh_loss",
    "hpsh_triplet_loss",
    "log_cosh",
    "make_loss",
    "make_loss_weights",
    "margin_loss",
    "similarity_matrix",
    "triplet_hard_loss",
    "triplet_semihard_loss",
]
