"""What the training losses share: the one interface the trainer calls, options, label similarity.

Every training objective selected by ``loss.name`` (registry :data:`hpsh_tf2.registry.LOSSES`)
is a :class:`HashLoss`. The trainer builds it once with :func:`make_loss` and calls it on every
batch through :meth:`HashLoss.terms`::

    loss = make_loss(config.loss, bits=32, num_classes=30)
    parts = loss.terms(scores, labels=labels, similarity=S, triplets=t, step=step)
    parts["loss"]  # the total; the other entries are the named terms (loss.term_names)

``scores`` are the hash head's sigmoid outputs ``s`` in ``(0, 1)`` (the code is ``s > 0.5``).
Methods written for codes in ``(-1, 1)`` use ``u = 2 s - 1`` (:func:`unit_range`), whose sign is
the code: ``u > 0`` exactly when ``s > 0.5``, so evaluation's binarisation at 0.5 is the
method's ``sign(u)``. Pairwise methods read ``similarity`` (:func:`similarity_matrix`:
``S_ij = 1`` when items ``i`` and ``j`` share at least one label, which for integer labels is
``y_i == y_j``); triplet methods read the sampler's ``triplets``.

A method's hyper-parameters are a frozen dataclass (``HashLoss.Options``) filled from its
preset (``HashLoss.preset``, the values chosen on the validation split; docs/how-to/
baselines.md) and then from ``loss.options`` of the config (explicit values win), validated by
:func:`resolve_options` with one-line errors that name ``loss.options.<key>``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from hpsh_tf2.config import LossConfig
from hpsh_tf2.errors import ConfigError
from hpsh_tf2.ops.checks import float_matrix
from hpsh_tf2.registry import LOSSES

Triplets = tuple[tf.Tensor, tf.Tensor, tf.Tensor]
"""(anchors, positives, negatives) row indices from a triplet sampler."""

__all__ = [
    "HashLoss",
    "NoOptions",
    "Triplets",
    "balanced_pair_weights",
    "code_signs",
    "label_count",
    "log_cosh",
    "make_loss",
    "non_negative",
    "off_diagonal",
    "positive",
    "resolve_options",
    "similarity_matrix",
    "total",
    "unit_range",
]


# --------------------------------------------------------------------------------------------
# element-wise helpers
# --------------------------------------------------------------------------------------------
def log_cosh(x: tf.Tensor) -> tf.Tensor:
    """Overflow-free ``log(cosh(x)) = |x| + softplus(-2 |x|) - log(2)``.

    Args:
        x: Any float tensor.

    Returns:
        ``log(cosh(x))`` element-wise.
    """
    ax = tf.abs(x)
    return ax + tf.nn.softplus(-2.0 * ax) - tf.constant(math.log(2.0), x.dtype)


def unit_range(scores: tf.Tensor) -> tf.Tensor:
    """``u = 2 s - 1``: the head's sigmoid scores mapped to ``(-1, 1)`` (float32 or wider).

    ``u = tanh(a / 2)`` for the head's pre-sigmoid output ``a``, so methods written for a
    ``tanh`` output use it as is, and ``sign(u)`` is the evaluated code (``s > 0.5``).
    """
    s = float_matrix(scores, "scores")
    return 2.0 * s - 1.0


def code_signs(u: tf.Tensor) -> tf.Tensor:
    """``b = +1 where u > 0 else -1``: the code as evaluated (``s > 0.5``), without gradient."""
    return tf.stop_gradient(tf.where(u > 0, tf.ones_like(u), -tf.ones_like(u)))


# --------------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------------
def _is_multi_hot(labels: tf.Tensor) -> bool:
    return labels.shape.rank == 2 and labels.shape[-1] is not None and labels.shape[-1] > 1


def similarity_matrix(labels: tf.Tensor) -> tf.Tensor:
    """Label similarity of a batch: ``S_ij = 1`` if items i and j share at least one label.

    Integer labels ``[n]`` or ``[n, 1]``: ``S_ij = [y_i == y_j]``. Multi-hot labels ``[n, C]``
    (``C > 1``): ``S_ij = [y_i . y_j > 0]``.

    Returns:
        float32 ``[n, n]`` of zeros and ones (the diagonal is 1 for any labelled row).
    """
    labels = tf.convert_to_tensor(labels)
    if _is_multi_hot(labels):
        y = tf.cast(labels, tf.float32)
        return tf.cast(tf.matmul(y, y, transpose_b=True) > 0, tf.float32)
    y = tf.reshape(labels, [-1])
    return tf.cast(tf.equal(y[:, None], y[None, :]), tf.float32)


def label_count(labels: np.ndarray) -> int:
    """Number of classes of a label array: ``C`` of multi-hot ``[n, C]``, else ``max + 1``."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        return int(labels.shape[1])
    return int(labels.max()) + 1 if labels.size else 0


def off_diagonal(n: tf.Tensor, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """``1 - I``: the mask of pairs ``i != j`` of an ``[n, n]`` matrix."""
    return 1.0 - tf.eye(n, dtype=dtype)


def balanced_pair_weights(similarity: tf.Tensor) -> tf.Tensor:
    """HashNet's pair weights (Cao et al. 2017, eq. 5) over the ``i != j`` pairs of a batch.

    ``w_ij = |S| / |S_1|`` for similar pairs and ``|S| / |S_0|`` for dissimilar ones, with
    ``S`` all ``n (n - 1)`` pairs, ``S_1`` the similar and ``S_0`` the dissimilar ones, and 0 on
    the diagonal; an empty side gets weight 0.

    Args:
        similarity: ``[n, n]`` zeros and ones.

    Returns:
        ``[n, n]`` weights.
    """
    mask = off_diagonal(tf.shape(similarity)[0], similarity.dtype)
    similar = similarity * mask
    dissimilar = (1.0 - similarity) * mask
    total = tf.reduce_sum(mask)
    w_similar = tf.math.divide_no_nan(total, tf.reduce_sum(similar))
    w_dissimilar = tf.math.divide_no_nan(total, tf.reduce_sum(dissimilar))
    return w_similar * similar + w_dissimilar * dissimilar


# --------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A method without ``loss.options`` keys."""


_TYPE_NAMES = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}


def _option_value(key: str, value: Any, tp: Any, fld: dataclasses.Field) -> Any:
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    if ok and tp is float and not math.isfinite(value):
        ok = False
    if ok and "check" in fld.metadata:
        ok = bool(fld.metadata["check"](value))
    if not ok:
        expected = fld.metadata.get("expected", _TYPE_NAMES.get(tp, str(tp)))
        raise ConfigError(f"invalid value for '{key}'. Received: {value!r}; expected {expected}")
    return value


def resolve_options(
    options_class: type, preset: Mapping[str, Any], options: Mapping[str, Any], *, method: str
) -> Any:
    """A method's options: dataclass defaults, then its preset, then ``loss.options``.

    Args:
        options_class: The method's frozen options dataclass.
        preset: The method's chosen values (keys of ``options_class``).
        options: ``loss.options`` of the config (explicit values; they win).
        method: ``loss.name``, for messages.

    Returns:
        An instance of ``options_class``.

    Raises:
        ConfigError: An unknown key (the message lists the method's keys) or a bad value.
    """
    fields = {f.name: f for f in dataclasses.fields(options_class)}
    hints = typing.get_type_hints(options_class)
    merged = {**preset, **options}
    values = {}
    for name, value in merged.items():
        if name not in fields:
            keys = ", ".join(f"loss.options.{k}" for k in fields)
            expected = f"expected one of: {keys}" if keys else "it takes no loss.options"
            raise ConfigError(
                f"unknown key 'loss.options.{name}' for loss.name={method!r}; {expected}"
            )
        values[name] = _option_value(f"loss.options.{name}", value, hints[name], fields[name])
    return options_class(**values)


def positive(expected: str = "a positive number") -> dict[str, Any]:
    """Options field metadata: the value must be > 0."""
    return {"check": lambda v: v > 0, "expected": expected}


def non_negative(expected: str = "a number >= 0") -> dict[str, Any]:
    """Options field metadata: the value must be >= 0."""
    return {"check": lambda v: v >= 0, "expected": expected}


# --------------------------------------------------------------------------------------------
# the interface
# --------------------------------------------------------------------------------------------
class HashLoss(keras.layers.Layer):
    """Base of the training losses: one call per batch returning the named terms and the total.

    A Keras layer so that a method with weights of its own (GreedyHash's classifier) is tracked,
    trained and checkpointed with the trainer; most methods have none.

    Class attributes:
        Options: Frozen dataclass of the method's hyper-parameters (``loss.options`` keys).
        preset: The method's chosen option values (docs/how-to/baselines.md).
        uses_similarity: The method reads the batch's label-similarity matrix.
        uses_triplets: The method reads the sampler's triplets.
        takes_logits: The method adds the trainer's auxiliary classification term
            (``loss.classification_weight``; HPSH only).
        term_names: Names of the terms :meth:`terms` returns besides ``"loss"`` (the trainer's
            metric names, in this order).

    Args:
        config: The ``loss`` section (``options`` are resolved against ``Options``).
        bits: Code length K.
        num_classes: Number of classes (labels are ``[0, C)`` or multi-hot ``[n, C]``).
    """

    Options: ClassVar[type] = NoOptions
    preset: ClassVar[Mapping[str, Any]] = {}
    uses_similarity: ClassVar[bool] = False
    uses_triplets: ClassVar[bool] = False
    takes_logits: ClassVar[bool] = False
    term_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, config: LossConfig, *, bits: int, num_classes: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(name=kwargs.pop("name", f"{config.name}_loss"), **kwargs)
        self.method = config.name
        self.bits = int(bits)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.options = resolve_options(
            self.Options, self.preset, dict(config.options), method=config.name
        )
        self.built = True  # no inputs to build on; sub-layers build themselves

    @classmethod
    def check_options(cls, options: Mapping[str, Any], *, method: str) -> None:
        """Validates ``loss.options`` for this method (the config calls it on load).

        Raises:
            ConfigError: An unknown key or a bad value.
        """
        resolve_options(cls.Options, cls.preset, options, method=method)

    def sampling_embeddings(self, scores: tf.Tensor) -> tf.Tensor:
        """What the triplet sampler measures distances on (triplet methods only)."""
        raise NotImplementedError(f"loss {self.method!r} does not use triplets")

    def terms(
        self,
        scores: tf.Tensor,
        *,
        labels: tf.Tensor,
        similarity: tf.Tensor | None = None,
        triplets: Triplets | None = None,
        step: tf.Tensor | None = None,
        logits: tf.Tensor | None = None,
    ) -> dict[str, tf.Tensor]:
        """The loss of one batch: ``{"loss": total, <term>: value, ...}``.

        Args:
            scores: Sigmoid outputs ``[n, K]``.
            labels: Integer ``[n]``/``[n, 1]`` or multi-hot ``[n, C]`` labels.
            similarity: ``[n, n]`` label similarity (methods with ``uses_similarity``).
            triplets: ``(anchors, positives, negatives)`` (methods with ``uses_triplets``).
            step: The training step (0-based), for methods with a schedule.
            logits: Logits of the trainer's auxiliary classifier (HPSH only).
        """
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The method name and its resolved options (for summaries)."""
        return {"name": self.method, **dataclasses.asdict(self.options)}


def total(parts: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """``{"loss": sum of parts, **parts}``."""
    return {"loss": tf.add_n(list(parts.values())), **parts}


def make_loss(config: LossConfig, *, bits: int, num_classes: int | None = None) -> HashLoss:
    """The training loss a config's ``loss`` section names (``loss.name`` in ``LOSSES``).

    Raises:
        ConfigError: Unknown ``loss.name`` or bad ``loss.options``.
    """
    return LOSSES.build(config.name, config, bits=bits, num_classes=num_classes)
