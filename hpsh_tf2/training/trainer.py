"""The model being trained and its training step.

``HashTrainer`` wraps the model being trained (the hash head on cached features, or backbone +
head on images) and overrides ``train_step``: forward, the selected training loss
(``loss.name``; a :class:`hpsh_tf2.losses.common.HashLoss`) called through its one interface
with what the method reads (the batch's label-similarity matrix, or triplets sampled inside the
batch), Adam update. HPSH's optional auxiliary term (``loss.classification_weight > 0``) is the
cross-entropy of a linear softmax classifier on the scores; the classifier is trained with the
head but is not part of the hash model, so it is neither selected, saved with the model nor
exported. The sampler's randomness is stateless and keyed by ``(train.seed, optimizer step,
replica)``, so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import tensorflow as tf

from hpsh_tf2.config import Config, LossConfig
from hpsh_tf2.errors import HPSHError
from hpsh_tf2.losses.common import HashLoss, make_loss, similarity_matrix
from hpsh_tf2.losses.hpsh import HPSHHashLoss, LossWeights
from hpsh_tf2.models.backbone import backbone_from_config
from hpsh_tf2.models.head import build_hash_model, build_image_hash_model
from hpsh_tf2.samplers import TripletSampler, make_sampler
from hpsh_tf2.training.strategies import make_strategy

__all__ = [
    "HashTrainer",
    "TrainedModels",
    "build_models",
    "dtype_policy_scope",
    "head_options",
    "learning_rate",
    "loss_from_config",
    "make_optimizer",
    "make_strategy",
    "triplet_sampler",
]


@contextlib.contextmanager
def dtype_policy_scope(mixed_precision: bool) -> Iterator[None]:
    """Temporarily sets Keras' dtype policy while models are built, then restores it.

    ``mixed_float16`` on GPUs, ``mixed_bfloat16`` elsewhere (CPU, TPU).
    """
    if not mixed_precision:
        yield
        return
    previous = keras.config.dtype_policy()
    policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def triplet_sampler(config: Config) -> TripletSampler:
    """The triplet sampler of a config: the ``sampler`` section, ``train.samples_per_class``,
    and ``loss.alpha + loss.beta`` as the default distance bound."""
    return make_sampler(
        config.sampler,
        samples_per_class=config.train.samples_per_class,
        default_cutoff=config.loss.alpha + config.loss.beta,
    )


def head_options(config: Config) -> dict:
    """Keyword arguments of :func:`hpsh_tf2.models.head.build_hash_model` from a config."""
    return {
        "bits": config.model.bits,
        "hidden_units": config.model.hidden_units,
        "leaky_relu_slope": config.model.leaky_relu_slope,
        "seed": config.model.init_seed,
        "init": config.model.init,
        "input_dropout": config.model.input_dropout,
        "input_norm": config.model.input_norm,
    }


def loss_from_config(config: Config, num_classes: int | None) -> HashLoss:
    """The training loss ``loss.name`` selects, for ``model.bits``-bit codes."""
    return make_loss(config.loss, bits=config.model.bits, num_classes=num_classes)


class HashTrainer(keras.Model):
    """Trains ``model`` (inputs -> sigmoid scores) with the selected training loss.

    Args:
        model: The model being trained; its output is the [n, bits] sigmoid scores.
        sampler: The triplet sampler (:func:`triplet_sampler`, or any
            :class:`hpsh_tf2.samplers.TripletSampler`); used when the loss reads triplets.
        loss: The training loss (:func:`loss_from_config`); ``None``: the HPSH loss with
            ``weights``.
        weights: HPSH loss weights (:func:`hpsh_tf2.losses.make_loss_weights`), when ``loss``
            is not given.
        seed: Base seed of the triplet sampler.
        num_classes: Classes of the auxiliary classifier; it is built (a float32
            ``Dense(num_classes)`` on the scores, attribute ``classifier``) only when this is
            given, the loss takes it (HPSH) and ``classification_weight > 0``.
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        sampler: TripletSampler,
        seed: int,
        loss: HashLoss | None = None,
        weights: LossWeights | None = None,
        num_classes: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.triplet_sampler = sampler
        if loss is None:
            weights = LossWeights() if weights is None else weights
            loss = HPSHHashLoss(
                LossConfig(**weights.get_config()),
                bits=model.output_shape[-1],
                num_classes=num_classes,
            )
        self.hash_loss = loss
        self.sampler_seed = int(seed)
        self.classifier = None
        names = ["loss", *loss.term_names]
        weight = getattr(loss, "loss_weights", LossWeights()).classification_weight
        if num_classes is not None and loss.takes_logits and weight > 0:
            if int(num_classes) < 2:
                raise HPSHError(f"Received: num_classes={num_classes}; expected an int >= 2")
            self.classifier = keras.layers.Dense(
                int(num_classes), name="classifier", dtype="float32"
            )
            self.classifier.build((None, model.output_shape[-1]))
            names.append("classification")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}

    def call(self, inputs, training=False):
        return self.model(inputs, training=training)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def _step_seed(self) -> tf.Tensor:
        replica = tf.distribute.get_replica_context()
        replica_id = 0 if replica is None else replica.replica_id_in_sync_group
        step = tf.cast(self.optimizer.iterations, tf.int64)
        base = tf.constant(self.sampler_seed, tf.int64) * 1000 + tf.cast(replica_id, tf.int64)
        return tf.stack([base, step])

    def loss_terms(self, scores: tf.Tensor, labels: tf.Tensor) -> dict[str, tf.Tensor]:
        """The loss of one batch through the loss's interface: ``{"loss": total, ...terms}``."""
        loss = self.hash_loss
        logits = None if self.classifier is None else self.classifier(scores)
        similarity = similarity_matrix(labels) if loss.uses_similarity else None
        triplets = None
        if loss.uses_triplets:
            embeddings = loss.sampling_embeddings(scores)
            triplets = self.triplet_sampler(embeddings, labels, self._step_seed())
        return loss.terms(
            scores,
            labels=labels,
            similarity=similarity,
            triplets=triplets,
            step=self.optimizer.iterations,
            logits=logits,
        )

    def train_step(self, data):
        inputs, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            scores = self(inputs, training=True)
            parts = self.loss_terms(scores, labels)
            loss = parts["loss"]
            scaled = self.optimizer.scale_loss(loss / replicas)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        for name, value in parts.items():
            if name in self.trackers:
                self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}


class TrainedModels:
    """The models of one training run.

    Attributes:
        fit_model: The model being trained (inputs -> scores).
        hash_model: The hash head (features -> scores).
        image_model: Backbone + head in end-to-end mode, else ``None``.
    """

    def __init__(self, fit_model, hash_model, image_model=None) -> None:
        self.fit_model = fit_model
        self.hash_model = hash_model
        self.image_model = image_model

    @property
    def selected(self) -> keras.Model:
        """The model that model selection saves (the image model end-to-end, else the head)."""
        return self.image_model if self.image_model is not None else self.hash_model


def build_models(config: Config, feature_dim: int | None) -> TrainedModels:
    """The models ``train.mode`` trains: the head alone, or backbone + head."""
    if config.train.mode == "features":
        hash_model = build_hash_model(feature_dim, **head_options(config))
        return TrainedModels(hash_model, hash_model)
    backbone = backbone_from_config(config.model)
    _set_trainable_layers(backbone, config.train.trainable_layers)
    hash_model = build_hash_model(backbone.output_shape[-1], **head_options(config))
    image_model = build_image_hash_model(backbone, hash_model)
    return TrainedModels(image_model, hash_model, image_model)


def _set_trainable_layers(backbone: keras.Model, top_layers: int) -> None:
    """Freezes all but the top ``top_layers`` weighted layers (0 = train the whole backbone)."""
    if top_layers <= 0:
        backbone.trainable = True
        return
    weighted = [layer for layer in backbone.layers if layer.weights]
    for index, layer in enumerate(weighted):
        layer.trainable = index >= len(weighted) - top_layers
    # BatchNorm statistics of frozen layers stay frozen (trainable=False implies inference mode).


def learning_rate(config: Config) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """``train.learning_rate``, constant or (``train.lr_schedule: cosine``) decayed to 0 along
    a half cosine over ``train.epochs x train.steps_per_epoch`` steps."""
    if config.train.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            config.train.learning_rate,
            decay_steps=config.train.epochs * config.train.steps_per_epoch,
        )
    return config.train.learning_rate


def make_optimizer(config: Config) -> keras.optimizers.Optimizer:
    """Adam with the config's settings (loss-scaled under ``mixed_float16``)."""
    optimizer = keras.optimizers.Adam(
        learning_rate=learning_rate(config),
        beta_1=config.train.beta_1,
        beta_2=config.train.beta_2,
        epsilon=config.train.epsilon,
    )
    if config.train.mixed_precision and keras.config.dtype_policy().name == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
