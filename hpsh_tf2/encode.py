"""Scores of a subset: a Keras model or an exported SavedModel signature over feature rows or
image files, batched through tf.data.

:class:`ScoreEncoder` serves validation during training and the evaluation of a trained
Keras model; :class:`SignatureEncoder` encodes images through a SavedModel's
``encode_images`` signature (the served code path).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from hpsh_tf2.data.images import BandReading
from hpsh_tf2.data.pipeline import image_dataset
from hpsh_tf2.dataset import SubsetInputs
from hpsh_tf2.errors import DatasetError
from hpsh_tf2.models.backbone import preprocessor

__all__ = ["ScoreEncoder", "SignatureEncoder", "encode_scores"]


class ScoreEncoder:
    """Runs a model over a subset (feature rows or image files) and returns its scores.

    The forward pass is a ``tf.function`` with an unknown batch dimension, traced once, so
    encoding subsets of different sizes (every epoch) does not retrace.

    Args:
        model: Inputs -> scores model (hash head or image model).
        batch_size: Rows per forward pass.
        image_size: Input side, for image subsets.
        backbone: Backbone name, for the image preprocessing.
        reading: How GeoTIFF images are read (``data.bands``, ``data.band_scale``,
            ``model.input_bands``); None: as before.
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        batch_size: int,
        image_size: int,
        backbone: str,
        reading: BandReading | None = None,
    ):
        self.model = model
        self.batch_size = int(batch_size)
        self.image_size = int(image_size)
        self.backbone = backbone
        self.reading = reading
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        self._forward = tf.function(
            lambda x: model(x, training=False), input_signature=[spec], autograph=False
        )

    def __call__(self, inputs: SubsetInputs) -> np.ndarray:
        if len(inputs) == 0:
            return np.zeros((0, self.model.output_shape[-1]), np.float32)
        if inputs.features is not None:
            batches = tf.data.Dataset.from_tensor_slices(inputs.features).batch(self.batch_size)
        else:
            batches = image_dataset(
                inputs.paths,
                image_size=self.image_size,
                batch_size=self.batch_size,
                preprocess=preprocessor(self.backbone),
                reading=self.reading,
            )
        return np.concatenate([self._forward(batch).numpy() for batch in batches])


def encode_scores(
    model: keras.Model,
    inputs: SubsetInputs,
    *,
    batch_size: int,
    image_size: int,
    backbone: str,
    reading: BandReading | None = None,
) -> np.ndarray:
    """One-off :class:`ScoreEncoder` call: the scores of a subset."""
    encoder = ScoreEncoder(
        model, batch_size=batch_size, image_size=image_size, backbone=backbone, reading=reading
    )
    return encoder(inputs)


class SignatureEncoder:
    """Scores of image subsets through an exported ``encode_images`` signature.

    The images are decoded and resized by the training pipeline's own code (RGB 0..255); the
    signature applies the backbone's normalisation, the model and the binarisation itself.

    Args:
        signature: The loaded ``encode_images`` concrete function (``images=`` -> dict with
            ``"scores"``).
        bits: Code length (the width of an empty result).
        batch_size: Images per call.
        image_size: Side the images are resized to.
        reading: How GeoTIFF images are read (the signature takes 3 bands).
    """

    def __init__(
        self,
        signature: Callable[..., dict],
        *,
        bits: int,
        batch_size: int,
        image_size: int,
        reading: BandReading | None = None,
    ):
        self.signature = signature
        self.bits = int(bits)
        self.batch_size = int(batch_size)
        self.image_size = int(image_size)
        self.reading = reading

    def __call__(self, inputs: SubsetInputs) -> np.ndarray:
        if inputs.paths is None:
            raise DatasetError("a SavedModel encodes images; this subset has feature rows only")
        if len(inputs) == 0:
            return np.zeros((0, self.bits), np.float32)
        batches = image_dataset(
            inputs.paths,
            image_size=self.image_size,
            batch_size=self.batch_size,
            reading=self.reading,
        )
        return np.concatenate([self.signature(images=b)["scores"].numpy() for b in batches])
