"""The HPSH hash head: features -> K sigmoid scores, and models built around it.

Dense 1024 -> LeakyReLU(0.2) -> Dense 512 -> LeakyReLU(0.2) -> Dense K -> sigmoid, initialised
as the original (HPSH_SPEC.md section 3): uniform U(-a, a) with a = sqrt(12 / (fan_in + fan_out))
(Glorot-uniform with gain sqrt(2)) and zero biases. The embedding used by the metric loss is the
L2-normalised sigmoid output; the binary code is ``scores > 0.5``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

__all__ = ["HashHead", "build_hash_model", "build_image_hash_model"]


@keras.saving.register_keras_serializable(package="hpsh_tf2")
class HashHead(keras.layers.Layer):
    """Maps backbone features to K scores in (0, 1).

    Args:
        bits: Code length K, a positive multiple of 8.
        hidden_units: Widths of the hidden dense layers.
        leaky_relu_slope: Negative slope of the LeakyReLU activations.
        seed: Seed of the weight initialisers (a fixed seed gives identical weights).
        **kwargs: Base layer arguments (``name``, ``dtype``...).
    """

    def __init__(
        self,
        bits: int = 32,
        hidden_units: Sequence[int] = (1024, 512),
        leaky_relu_slope: float = 0.2,
        seed: int | None = 123,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(bits, int) or bits <= 0 or bits % 8:
            raise ValueError(f"Received: bits={bits!r}; expected a positive multiple of 8")
        hidden_units = tuple(int(u) for u in hidden_units)
        if any(u <= 0 for u in hidden_units):
            raise ValueError(f"Received: hidden_units={hidden_units}; expected positive integers")
        self.bits = bits
        self.hidden_units = hidden_units
        self.leaky_relu_slope = float(leaky_relu_slope)
        self.seed = seed
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
        for layer in self.dense_layers:
            layer.build(shape)
            shape = (*shape[:-1], layer.units)
        self.built = True

    def call(self, inputs):
        x = inputs
        for layer in self.dense_layers[:-1]:
            x = keras.ops.leaky_relu(layer(x), negative_slope=self.leaky_relu_slope)
        logits = self.dense_layers[-1](x)
        # Scores stay float32 under mixed precision: losses and thresholds need the range.
        return keras.ops.sigmoid(keras.ops.cast(logits, "float32"))

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
    name: str = "hash_model",
) -> keras.Model:
    """Features ``[b, input_dim]`` -> scores ``[b, bits]`` (a functional Keras model)."""
    if input_dim <= 0:
        raise ValueError(f"Received: input_dim={input_dim}; expected a positive integer")
    inputs = keras.Input((input_dim,), name="features")
    head = HashHead(bits, hidden_units, leaky_relu_slope, seed, name="hash_head")
    return keras.Model(inputs, head(inputs), name=name)


def build_image_hash_model(
    backbone: keras.Model, hash_model: keras.Model, *, name: str = "image_hash_model"
) -> keras.Model:
    """Preprocessed images -> scores: the backbone followed by the hash head (end-to-end)."""
    inputs = keras.Input(backbone.input_shape[1:], name="images")
    return keras.Model(inputs, hash_model(backbone(inputs)), name=name)
