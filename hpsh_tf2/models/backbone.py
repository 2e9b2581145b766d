"""Backbones from ``keras.applications`` with explicit weight handling and preprocessing.

``weights`` is ``"imagenet"`` (Keras downloads the no-top file once and caches it under
``~/.keras/models/``), a local ``.h5`` path, or ``"none"`` (random initialisation). Offline, a
failed download says exactly which file to put where.

Preprocessing is written with plain TF ops (no Keras helper), so that the training pipeline and
the exported SavedModel share one definition.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from hpsh_tf2.config import ModelConfig
from hpsh_tf2.errors import ConfigError, HPSHError
from hpsh_tf2.registry import BACKBONES

__all__ = [
    "BACKBONES",
    "DENSENET121",
    "EFFICIENTNET_B0",
    "INCEPTION_V3",
    "MOBILENET_V2",
    "RESNET50",
    "BackboneSpec",
    "WeightsError",
    "backbone_from_config",
    "build_backbone",
    "extend_band_kernel",
    "get_backbone_spec",
    "preprocess_images",
    "preprocessor",
]


class WeightsError(HPSHError, ValueError):
    """Backbone weights are missing, unreadable or do not fit the architecture."""


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one ``keras.applications`` backbone.

    A backbone is one of these registered in :data:`hpsh_tf2.registry.BACKBONES` (re-exported
    here); ``model.backbone`` accepts every registered name.

    Attributes:
        constructor: Name of the ``keras.applications`` function.
        preprocessing: ``"tf"`` (x / 127.5 - 1), ``"torch"`` (ImageNet mean/std on x / 255),
            ``"caffe"`` (RGB to BGR, ImageNet mean subtracted) or ``"none"`` (the model
            normalises internally, e.g. EfficientNet).
        min_size: Smallest accepted input side.
        notop_file: File name of the no-top ImageNet weights in Keras' cache.
        feature_dim: Width of the pooled feature vector.
    """

    constructor: str
    preprocessing: str
    min_size: int
    notop_file: str
    feature_dim: int


INCEPTION_V3 = BackboneSpec(
    "InceptionV3", "tf", 75, "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", 2048
)
"""InceptionV3 (the paper's backbone)."""
RESNET50 = BackboneSpec(
    "ResNet50", "caffe", 32, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", 2048
)
"""ResNet-50."""
MOBILENET_V2 = BackboneSpec(
    "MobileNetV2",
    "tf",
    32,
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    1280,
)
"""MobileNetV2 (width 1.0)."""
DENSENET121 = BackboneSpec(
    "DenseNet121", "torch", 32, "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5", 1024
)
"""DenseNet-121."""
EFFICIENTNET_B0 = BackboneSpec("EfficientNetB0", "none", 32, "efficientnetb0_notop.h5", 1280)
"""EfficientNet-B0 (normalises its input internally)."""

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def get_backbone_spec(name: str) -> BackboneSpec:
    """Looks up a backbone in :data:`hpsh_tf2.registry.BACKBONES`.

    Raises:
        ConfigError: An unregistered name; the message names ``model.backbone`` and lists the
            registered backbones.
    """
    if name not in BACKBONES:
        raise ConfigError(f"Received: model.backbone={name!r}; expected {BACKBONES.expected()}")
    return BACKBONES.get(name)


def preprocess_images(images: tf.Tensor, backbone: str) -> tf.Tensor:
    """Applies the backbone's input normalisation to float RGB pixels in [0, 255].

    Args:
        images: Float tensor [..., H, W, 3], RGB, values in [0, 255].
        backbone: A name registered in :data:`BACKBONES`.

    Returns:
        The normalised float32 tensor, same shape.
    """
    mode = get_backbone_spec(backbone).preprocessing
    images = tf.cast(images, tf.float32)
    channels = images.shape[-1]
    if mode == "tf":
        return images / 127.5 - 1.0
    if mode == "torch":
        mean, std = _per_band(_IMAGENET_MEAN, channels), _per_band(_IMAGENET_STD, channels)
        return (images / 255.0 - tf.constant(mean)) / tf.constant(std)
    if mode == "caffe":
        if channels not in (None, 3):  # N bands: no BGR swap; extra bands get the mean
            return images - tf.constant(_per_band(_CAFFE_MEAN_BGR[::-1], channels))
        return images[..., ::-1] - tf.constant(_CAFFE_MEAN_BGR)
    return images


def _per_band(values: tuple[float, ...], channels: int | None) -> tuple[float, ...]:
    """RGB statistics for ``channels`` bands: R, G, B, then their mean for extra bands (geo)."""
    if channels in (None, 3):
        return values
    mean = sum(values) / len(values)
    return tuple(values[i] if i < 3 else mean for i in range(channels))


def preprocessor(backbone: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """The preprocessing of :func:`preprocess_images` bound to one backbone."""
    get_backbone_spec(backbone)
    return lambda images: preprocess_images(images, backbone)


# MobileNetV2 has one no-top file per square input side in this list (224 otherwise).
_MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)


def _notop_file(spec: BackboneSpec, image_size: int | None) -> str:
    """The no-top file Keras requests at ``image_size`` (``spec.notop_file`` by default)."""
    if spec.constructor == "MobileNetV2" and image_size in _MOBILENET_V2_SIZES:
        return spec.notop_file.replace("_224_no_top", f"_{image_size}_no_top")
    return spec.notop_file


def keras_cache_path(spec: BackboneSpec, image_size: int | None = None) -> Path:
    """Where Keras caches downloaded weights (``$KERAS_HOME/models`` or ``~/.keras/models``).

    Args:
        spec: The backbone.
        image_size: Input side; only MobileNetV2 has size-specific files (96..224).
    """
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models" / _notop_file(spec, image_size)


def _layer_names_in_h5(path: Path) -> list[str]:
    """Top-level layer names stored in a Keras ``.h5`` weights file."""
    import h5py

    with h5py.File(path, "r") as handle:
        group = handle["model_weights"] if "model_weights" in handle else handle
        names = group.attrs.get("layer_names")
        if names is None:
            return list(group.keys())
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _check_local_weights(path: Path, name: str, spec: BackboneSpec) -> None:
    """Validates a local weights file before Keras reads it."""
    if not path.is_file():
        raise WeightsError(
            f"model.weights: file not found: {path}. Expected a Keras .h5 weights file of "
            f"{name} without its classification top (e.g. {spec.notop_file})"
        )
    try:
        layers = _layer_names_in_h5(path)
    except (OSError, KeyError) as err:
        raise WeightsError(
            f"model.weights: {path} is not a readable Keras .h5 file ({err})"
        ) from None
    if "predictions" in layers:
        raise WeightsError(
            f"model.weights: {path} holds the model WITH its ImageNet classification top "
            "('predictions' layer); the backbone needs the no-top file "
            f"({spec.notop_file})"
        )


def build_backbone(
    name: str, *, weights: str, image_size: int, seed: int = 123, input_bands: int = 3
) -> keras.Model:
    """Builds a pooled feature extractor ``images [b, S, S, 3] -> features [b, D]``.

    Args:
        name: A name registered in :data:`BACKBONES` (default of the project: ``inception_v3``).
        weights: ``"imagenet"``, ``"none"`` or a local ``.h5`` path of no-top weights.
        image_size: Input side S.
        seed: With ``weights="none"``, the seed of the random initialisation, so that every
            build (extraction, export) gives the same network. Resets Keras' global seed.
        input_bands: Bands of the input (``model.input_bands``). Other than 3, the RGB network
            is built with ``weights`` and copied into an N-band one: the first convolution
            keeps its R, G, B filters and each extra band's filter is their mean (over the
            input-channel axis); with fewer than 3 bands the first ones are kept.

    Returns:
        A Keras model with global average pooling (``include_top=False, pooling="avg"``).

    Raises:
        ValueError: Unknown backbone or an image size below the backbone's minimum.
        WeightsError: Weights cannot be downloaded, found, or loaded.
    """
    if input_bands != 3:
        rgb = build_backbone(name, weights=weights, image_size=image_size, seed=seed)
        return _with_bands(rgb, name, image_size, input_bands)
    spec = get_backbone_spec(name)
    if image_size < spec.min_size:
        raise ConfigError(
            f"Received: model.image_size={image_size}; {name} needs at least {spec.min_size} px"
        )
    constructor = getattr(keras.applications, spec.constructor)
    kwargs = {"include_top": False, "pooling": "avg", "input_shape": (image_size, image_size, 3)}
    if weights.lower() == "none":
        keras.utils.set_random_seed(seed)
        return constructor(weights=None, **kwargs)
    if weights.lower() == "imagenet":
        try:
            return constructor(weights="imagenet", **kwargs)
        except Exception as err:  # Keras raises bare Exception on failed downloads
            raise WeightsError(
                f"could not obtain ImageNet weights for {name} ({type(err).__name__}: {err}). "
                f"Offline, put the no-top weights file at {keras_cache_path(spec, image_size)} "
                "(Keras' cache), or set model.weights to a local .h5 path, or to none "
                "for random initialisation"
            ) from err
    path = Path(weights).expanduser()
    _check_local_weights(path, name, spec)
    try:
        return constructor(weights=str(path), **kwargs)
    except ValueError as err:
        raise WeightsError(
            f"model.weights: {path} does not fit {name} without top at {image_size} px: {err}"
        ) from err


def extend_band_kernel(kernel: np.ndarray, bands: int) -> np.ndarray:
    """First-convolution kernel ``[kh, kw, 3, out]`` -> ``[kh, kw, bands, out]``: R, G, B
    filters kept, each extra band's filter the mean of the three."""
    mean = kernel.mean(axis=2, keepdims=True)
    parts = [kernel[:, :, : min(bands, 3)]] + [mean] * max(0, bands - 3)
    return np.concatenate(parts, axis=2)


def _with_bands(rgb: keras.Model, name: str, image_size: int, bands: int) -> keras.Model:
    constructor = getattr(keras.applications, get_backbone_spec(name).constructor)
    model = constructor(
        weights=None, include_top=False, pooling="avg", input_shape=(image_size, image_size, bands)
    )
    for source, target in zip(rgb.layers, model.layers):
        values = source.get_weights()
        shapes = [w.shape for w in target.get_weights()]
        target.set_weights(
            [
                extend_band_kernel(v, bands) if v.shape != shape else v
                for v, shape in zip(values, shapes)
            ]
        )
    return model


def backbone_from_config(model: ModelConfig) -> keras.Model:
    """:func:`build_backbone` with the ``model`` section of a config (name, weights, size, seed)."""
    return build_backbone(
        model.backbone,
        weights=model.weights,
        image_size=model.image_size,
        seed=model.init_seed,
        input_bands=model.input_bands,
    )
