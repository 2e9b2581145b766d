"""Training the hash model: trainer (train step), callbacks, checkpoints, one fit.

The entry point is :func:`fit_hash_model`; the CLI's ``train`` verb is
:func:`hpsh_tf2.workflow.train`, which prepares the inputs and calls it.
"""

from hpsh_tf2.training.checkpoints import (
    ResumeState,
    save_keras_atomic,
    train_fingerprint,
    training_keys,
)
from hpsh_tf2.training.fit import TrainingError, TrainResult, fit_hash_model
from hpsh_tf2.training.trainer import (
    HashTrainer,
    build_models,
    dtype_policy_scope,
    head_options,
    learning_rate,
    make_optimizer,
    make_strategy,
    triplet_sampler,
)

__all__ = [
    "HashTrainer",
    "ResumeState",
    "TrainResult",
    "TrainingError",
    "build_models",
    "dtype_policy_scope",
    "fit_hash_model",
    "head_options",
    "learning_rate",
    "make_optimizer",
    "make_strategy",
    "save_keras_atomic",
    "train_fingerprint",
    "training_keys",
    "triplet_sampler",
]
