"""The HPSH hash head: features -> K sigmoid scores, and models built around it.

Dense 1024 -> LeakyReLU(0.2) -> Dense 512 -> LeakyReLU(0.2) -> Dense K -> sigmoid, initialised
as the original (docs/method.md section 3): uniform U(-a, a) with a = sqrt(12 / (fan_in + fan_out))
(Glorot-uniform with gain sqrt(2)) and zero biases. The embedding used by the metric loss is the
L2-normalised sigmoid output; the binary code is ``scores > 0.5``. An optional dropout on the
head's input (``input_dropout``, not in the original) acts in training only.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from hpsh_tf2.ops.checks import ORIGINAL_ALIASES, check_bits, check_choice, check_int

__all__ = [
    "HEAD_INITS",
    "INPUT_NORMS",
    "HashHead",
    "build_hash_model",
    "build_image_hash_model",
    "seed_kernels",
]

HEAD_INITS = ("keras", "original")
INPUT_NORMS = ("none", "l2", "standardize")


def seed_kernels(input_dim: int, units: Sequence[int], seed: int = 123) -> list[np.ndarray]:
    """The original's head kernels, bit for bit (docs/method.md section 3).

    The original draws each 1x1 convolution filter ``[1, 1, fan_in, fan_out]`` from NumPy's
    legacy global generator after ``np.random.seed(123)``, in layer order, as
    ``np.random.uniform(-stdev * sqrt(3), stdev * sqrt(3))`` with
    ``stdev = sqrt(4 / (fan_in + fan_out))``, then casts to float32. This replays that stream
    with a private ``np.random.RandomState(seed)`` (the global generator is left alone),
    assuming that nothing else draws from it between the seeding and the
    network's construction.

    Args:
        input_dim: Width of the head's input (2048 for InceptionV3 features).
        units: Widths of the dense layers in order, the code length last.
        seed: The original's NumPy seed.

    Returns:
        One float32 kernel ``[fan_in, fan_out]`` per layer.
    """
    rng = np.random.RandomState(seed)
    kernels = []
    fan_in = int(input_dim)
    for fan_out in units:
        stdev = np.sqrt(4.0 / (fan_in + fan_out))
        bound = stdev * np.sqrt(3)
        draws = rng.uniform(low=-bound, high=bound, size=(1, 1, fan_in, int(fan_out)))
        kernels.append(draws.astype("float32").reshape(fan_in, int(fan_out)))
        fan_in = int(fan_out)
    return kernels


@keras.saving.register_keras_serializable(package="hpsh_tf2")
class HashHead(keras.layers.Layer):
    """Maps backbone features to K scores in (0, 1).

    Args:
        bits: Code length K, a positive multiple of 8.
        hidden_units: Widths of the hidden dense layers.
        leaky_relu_slope: Negative slope of the LeakyReLU activations.
        seed: Seed of the weight initialisers (a fixed seed gives identical weights).
        init: ``"keras"``: seeded Keras ``VarianceScaling`` initialisers with the original's
            distribution (layer ``i`` seeded ``seed + i``). ``"original"`` (deprecated alias
            ``"seed"``): the original's kernels bit for bit (:func:`seed_kernels`, NumPy's
            legacy generator seeded ``seed``); needs an integer seed.
        input_dropout: Dropout rate on the input features in training (``0`` = none, the
            original); inference is unaffected.
        input_norm: ``"none"`` (the original); ``"l2"``: each input row is scaled to norm
            ``sqrt(D)`` (``x / max(||x||, 1e-12) * sqrt(D)``), stateless; ``"standardize"``:
            ``(x - mean) / std`` per feature, with the training set's statistics stored in the
            layer (:meth:`set_input_statistics`). Either way the normalisation is part of the
            saved and exported model, so features of any scale (e.g. a randomly initialised
            backbone's) reach the head at unit scale.
        **kwargs: Base layer arguments (``name``, ``dtype``...).
    """

    def __init__(
        self,
        bits: int = 32,
        hidden_units: Sequence[int] = (1024, 512),
        leaky_relu_slope: float = 0.2,
        seed: int | None = 123,
        init: str = "keras",
        input_dropout: float = 0.0,
        input_norm: str = "none",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.input_norm = check_choice("input_norm", input_norm, INPUT_NORMS)
        if isinstance(input_dropout, bool) or not 0.0 <= float(input_dropout) < 1.0:
            raise ValueError(
                f"Received: input_dropout={input_dropout!r}; expected a rate in [0, 1)"
            )
        init = check_choice("init", init, HEAD_INITS, aliases=ORIGINAL_ALIASES)
        if init == "original" and seed is None:
            raise ValueError("Received: seed=None with init='original'; expected an integer")
        if seed is not None:
            seed = check_int("seed", seed)
        bits = check_bits(bits)
        hidden_units = tuple(int(u) for u in hidden_units)
        if any(u <= 0 for u in hidden_units):
            raise ValueError(f"Received: hidden_units={hidden_units}; expected positive integers")
        self.bits = bits
        self.hidden_units = hidden_units
        self.leaky_relu_slope = float(leaky_relu_slope)
        self.seed = seed
        self.init = init
        self.input_dropout = float(input_dropout)
        self.dropout = None
        if self.input_dropout > 0:
            self.dropout = keras.layers.Dropout(
                self.input_dropout, seed=seed if isinstance(seed, int) else None, name="dropout"
            )
        self.dense_layers = []
        for index, units in enumerate((*hidden_units, bits)):
            init_seed = None if seed is None else seed + index
            self.dense_layers.append(
                keras.layers.Dense(
                    units,
                    kernel_initializer=keras.initializers.VarianceScaling(
                        scale=2.0, mode="fan_avg", distribution="uniform", seed=init_seed
                    ),
                    bias_initializer="zeros",
                    name=f"dense_{index}",
                    dtype=self.dtype_policy,
                )
            )

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if self.input_norm == "standardize":
            width = int(shape[-1])
            self.input_mean = self.add_weight(
                shape=(width,), initializer="zeros", trainable=False, name="input_mean"
            )
            self.input_scale = self.add_weight(
                shape=(width,), initializer="ones", trainable=False, name="input_scale"
            )
        for layer in self.dense_layers:
            layer.build(shape)
            shape = (*shape[:-1], layer.units)
        if self.init == "original":
            units = [layer.units for layer in self.dense_layers]
            for layer, kernel in zip(
                self.dense_layers, seed_kernels(input_shape[-1], units, self.seed)
            ):
                layer.kernel.assign(kernel)
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        if self.input_norm == "standardize":
            mean = keras.ops.cast(self.input_mean, x.dtype)
            x = (x - mean) * keras.ops.cast(self.input_scale, x.dtype)
        elif self.input_norm == "l2":
            norm = keras.ops.sqrt(keras.ops.sum(keras.ops.square(x), axis=-1, keepdims=True))
            scale = float(np.sqrt(x.shape[-1])) / keras.ops.maximum(norm, 1e-12)
            x = x * keras.ops.cast(scale, x.dtype)
        if self.dropout is not None:
            x = self.dropout(x, training=training)
        for layer in self.dense_layers[:-1]:
            x = keras.ops.leaky_relu(layer(x), negative_slope=self.leaky_relu_slope)
        logits = self.dense_layers[-1](x)
        # Scores stay float32 under mixed precision: losses and thresholds need the range.
        return keras.ops.sigmoid(keras.ops.cast(logits, "float32"))

    def set_input_statistics(self, features: np.ndarray, *, eps: float = 1e-6) -> None:
        """Stores the per-feature mean and ``1 / max(std, eps)`` of ``features`` (standardize).

        Args:
            features: ``[N, D]`` training features.
            eps: Floor of the standard deviation (constant features pass through centred).

        Raises:
            ValueError: If the layer does not standardise, is not built, or the width differs.
        """
        if self.input_norm != "standardize":
            raise ValueError(
                f"Received: input statistics for input_norm={self.input_norm!r}; expected "
                "input_norm='standardize'"
            )
        rows = np.asarray(features, np.float64)
        if not self.built or rows.ndim != 2 or rows.shape[1] != self.input_mean.shape[0]:
            raise ValueError(
                f"Received: features with shape {rows.shape}; expected [N, "
                f"{self.input_mean.shape[0] if self.built else 'D'}] for a built head"
            )
        self.input_mean.assign(rows.mean(axis=0).astype("float32"))
        self.input_scale.assign((1.0 / np.maximum(rows.std(axis=0), eps)).astype("float32"))

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.bits)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "bits": self.bits,
                "hidden_units": list(self.hidden_units),
                "leaky_relu_slope": self.leaky_relu_slope,
                "seed": self.seed,
                "init": self.init,
                "input_dropout": self.input_dropout,
                "input_norm": self.input_norm,
            }
        )
        return config


def build_hash_model(
    input_dim: int,
    *,
    bits: int,
    hidden_units: Sequence[int] = (1024, 512),
    leaky_relu_slope: float = 0.2,
    seed: int | None = 123,
    init: str = "keras",
    input_dropout: float = 0.0,
    input_norm: str = "none",
    name: str = "hash_model",
) -> keras.Model:
    """Features ``[b, input_dim]`` -> scores ``[b, bits]`` (a functional Keras model).

    ``input_dropout`` (training only) is passed to :class:`HashHead`.
    """
    if input_dim <= 0:
        raise ValueError(f"Received: input_dim={input_dim}; expected a positive integer")
    inputs = keras.Input((input_dim,), name="features")
    head = HashHead(
        bits,
        hidden_units,
        leaky_relu_slope,
        seed,
        init,
        input_dropout,
        input_norm=input_norm,
        name="hash_head",
    )
    return keras.Model(inputs, head(inputs), name=name)


def build_image_hash_model(
    backbone: keras.Model, hash_model: keras.Model, *, name: str = "image_hash_model"
) -> keras.Model:
    """Preprocessed images -> scores: the backbone followed by the hash head (end-to-end)."""
    inputs = keras.Input(backbone.input_shape[1:], name="images")
    return keras.Model(inputs, hash_model(backbone(inputs)), name=name)
