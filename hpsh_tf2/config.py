"""Run configuration: YAML files loaded into frozen dataclasses, validated on load.

A config file has one mapping per section (``data``, ``model``, ``train``, ``sampler``,
``loss``, ``eval``, ``export``, ``index``, ``output``) plus a top-level ``name``. Every value is
checked against its declared type and range when the file is loaded; command-line overrides use
dotted keys (``--set train.epochs=5``) and go through the same checks. Errors name the file, the
dotted key, the value received and what was expected.

Keys that choose a registered component (``sampler.mode``, ``eval.backend``, ``train.strategy``,
``model.backbone``, ``index.backend``) are strings checked against their registry in
:mod:`hpsh_tf2.registry` when the config is validated, so a plugin's registration makes its name
a valid value.

This module imports only :mod:`hpsh_tf2.errors` (``ConfigError`` lives there and is
re-exported here), :mod:`hpsh_tf2.atomic` and :mod:`hpsh_tf2.registry` of the package (the
registry names its entries by import path: nothing heavy is imported).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hpsh_tf2.atomic import write_text_atomic
from hpsh_tf2.errors import ConfigError
from hpsh_tf2.registry import (
    BACKBONES,
    DATA_FORMATS,
    INDEX_BACKENDS,
    LOSSES,
    SAMPLERS,
    SEARCH_BACKENDS,
    STRATEGIES,
    Registry,
)

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ExportConfig",
    "IndexConfig",
    "LossConfig",
    "ModelConfig",
    "OutputConfig",
    "SamplerConfig",
    "SplitConfig",
    "TrainConfig",
    "add_config_arguments",
    "apply_overrides",
    "apply_values",
    "config_fingerprint",
    "config_to_dict",
    "field_expected",
    "fingerprint",
    "load_config",
    "parse_override",
    "save_config",
    "valid_bits",
]


logger = logging.getLogger(__name__)

SEED_LIMIT = 2**31
"""Seeds must lie in ``[0, SEED_LIMIT)``: NumPy, Keras and TF's stateless kernels all take them."""


def _check(predicate: Callable[[Any], bool], expected: str) -> dict[str, Any]:
    """Field metadata: a validity predicate and a description of what is expected."""
    return {"check": predicate, "expected": expected}


def _registered(registry: Registry[Any], **extra: Any) -> dict[str, Any]:
    """Field metadata of a key whose value names an entry of ``registry``.

    The allowed values are read from the registry when a value is validated (plugins loaded
    before then count), never written here.
    """
    return {
        "check": lambda value: value in registry,
        "expected": registry.expected,
        "registry": registry,
        **extra,
    }


def field_expected(fld: dataclasses.Field) -> str | None:
    """What a field's range check expects, in words (``None``: only its type is checked).

    For a registry-backed key this lists the names registered *now*.
    """
    expected = fld.metadata.get("expected")
    return expected() if callable(expected) else expected


def _positive(value: Any) -> bool:
    return value > 0


def _non_negative(value: Any) -> bool:
    return value >= 0


def _fraction(value: Any) -> bool:
    return 0.0 <= value <= 1.0


def valid_bits(value: int) -> bool:
    """Whether ``value`` is a code length the project supports: a positive multiple of 8
    (codes are packed into whole bytes). The one definition; ``model.bits`` and
    :func:`hpsh_tf2.ops.checks.check_bits` use it."""
    return value > 0 and value % 8 == 0


def _valid_seed(value: int) -> bool:
    return 0 <= value < SEED_LIMIT


_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")

FOLDER_NAME_EXPECTED = (
    "a name of 1-64 ASCII letters, digits, '_', '-' or '.', starting with a letter or digit "
    "(it becomes a folder name: no path separators, no '..')"
)
COLLECTION_NAME_EXPECTED = (
    "a name of 1-255 ASCII letters, digits and underscores, not starting with a digit"
)


def _folder_name(value: str) -> bool:
    """A run or export name: one safe folder name (also a valid TF Serving model name)."""
    return _FOLDER_NAME.fullmatch(value) is not None


def _collection_name(value: str) -> bool:
    """A Milvus collection name (Milvus allows ASCII letters, digits and '_', 255 at most)."""
    return _COLLECTION_NAME.fullmatch(value) is not None


# --- band selection and scaling of GeoTIFF scenes and training images.
_BAND_RANGE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*-\s*(-?\d+(?:\.\d+)?)\s*$")
_BAND_PERCENTILE = re.compile(r"^\s*p(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)\s*$")
BAND_SCALE_EXPECTED = (
    "null (by data type), 'LO-HI' with LO < HI (e.g. '0-3000'), a list of such ranges (one "
    "per band), 'percentile' (2-98 per scene) or 'pA-B' with 0 <= A < B <= 100"
)


def _valid_range(text: str) -> bool:
    match = _BAND_RANGE.match(text)
    return bool(match) and float(match.group(1)) < float(match.group(2))


def _valid_band_scale(value: str | tuple[str, ...]) -> bool:
    if isinstance(value, tuple):
        return bool(value) and all(_valid_range(v) for v in value)
    text = value.strip().lower()
    match = _BAND_PERCENTILE.match(text)
    if match:
        return 0 <= float(match.group(1)) < float(match.group(2)) <= 100
    return text == "percentile" or _valid_range(text)


def _valid_bands(value: tuple[int, ...]) -> bool:
    return bool(value) and all(v >= 1 for v in value)


SEED_EXPECTED = f"an integer in [0, {SEED_LIMIT}) (2**31)"
_SEED_CHECK = _check(_valid_seed, SEED_EXPECTED)


BITS_EXPECTED = "one of 16, 24, 32, 48, 64 or a multiple of 8"

# Deprecated spellings of the compatibility modes: "seed" meant "as the original code does".
_ORIGINAL_ALIAS = {"aliases": {"seed": "original"}}

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitConfig:
    """Per-class split fractions; val is carved out of the training part.

    ``method``: ``stratified`` (per class; today's split) or ``random`` (seeded, labels
    ignored: the multi-label development protocol's random split).
    """

    train: float = field(default=0.6, metadata=_check(_fraction, "a fraction in [0, 1]"))
    val: float = field(default=0.0, metadata=_check(_fraction, "a fraction in [0, 1]"))
    test: float = field(default=0.4, metadata=_check(_fraction, "a fraction in [0, 1]"))
    method: Literal["stratified", "random"] = "stratified"


@dataclass(frozen=True)
class DataConfig:
    """Where the images (or pre-computed features) are and how they are split."""

    root: str | None = None
    features: str | None = None
    split: SplitConfig = field(default_factory=SplitConfig)
    seed: int = field(default=42, metadata=_SEED_CHECK)
    on_bad_image: Literal["skip", "error"] = "skip"
    verify_images: bool = True
    content_hash: bool = False
    manifest: str | None = None
    format: str | None = field(
        default=None,
        metadata=_registered(
            DATA_FORMATS,
            expected=lambda: (
                DATA_FORMATS.expected()
                + " or null (manifest if data.manifest is set, else folders)"
            ),
        ),
    )
    # GeoTIFF images and scenes: which bands, and how their values map to 0-255
    bands: tuple[int, ...] | None = field(
        default=None,
        metadata=_check(_valid_bands, "null or a list of 1-based band indices, e.g. [4, 3, 2]"),
    )
    band_scale: str | tuple[str, ...] | None = field(
        default=None, metadata=_check(_valid_band_scale, BAND_SCALE_EXPECTED)
    )


@dataclass(frozen=True)
class ModelConfig:
    """Backbone and hash head."""

    backbone: str = field(default="inception_v3", metadata=_registered(BACKBONES))
    weights: str = "imagenet"
    image_size: int = field(default=299, metadata=_check(lambda v: v >= 32, "an integer >= 32"))
    bits: int = field(default=32, metadata=_check(valid_bits, BITS_EXPECTED))
    hidden_units: tuple[int, ...] = (1024, 512)
    leaky_relu_slope: float = field(default=0.2, metadata=_check(_non_negative, "a value >= 0"))
    init_seed: int = field(default=123, metadata=_SEED_CHECK)
    init: Literal["keras", "original"] = field(default="keras", metadata=_ORIGINAL_ALIAS)
    input_dropout: float = field(
        default=0.0, metadata=_check(lambda v: 0.0 <= v < 1.0, "a fraction in [0, 1)")
    )
    input_norm: Literal["none", "l2", "standardize"] = "none"
    input_bands: int = field(
        default=3, metadata=_check(_positive, "a positive integer (bands the backbone takes)")
    )


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, batching and execution options."""

    mode: Literal["features", "end_to_end"] = "features"
    epochs: int = field(default=40, metadata=_check(_positive, "a positive integer"))
    steps_per_epoch: int = field(default=100, metadata=_check(_positive, "a positive integer"))
    classes_per_batch: int | None = field(
        default=None, metadata=_check(lambda v: v >= 2, "an integer >= 2 or null (all classes)")
    )
    samples_per_class: int = field(default=5, metadata=_check(lambda v: v >= 2, "an integer >= 2"))
    learning_rate: float = field(default=1e-4, metadata=_check(_positive, "a positive number"))
    beta_1: float = field(default=0.5, metadata=_check(lambda v: 0 <= v < 1, "a value in [0, 1)"))
    beta_2: float = field(default=0.9, metadata=_check(lambda v: 0 <= v < 1, "a value in [0, 1)"))
    epsilon: float = field(default=1e-8, metadata=_check(_positive, "a positive number"))
    lr_schedule: Literal["constant", "cosine"] = "constant"
    early_stopping_patience: int = field(
        default=0, metadata=_check(_non_negative, "an integer >= 0 (0 = no early stopping)")
    )
    seed: int = field(default=123, metadata=_SEED_CHECK)
    trainable_layers: int = field(
        default=0, metadata=_check(_non_negative, "an integer >= 0 (0 = whole backbone)")
    )
    augment: bool = False
    mixed_precision: bool = False
    jit_compile: bool = False
    strategy: str = field(default="default", metadata=_registered(STRATEGIES))
    collective_timeout_seconds: float | None = field(
        default=None,
        metadata=_check(_positive, "a positive number of seconds or null (no limit)"),
    )
    cluster_start_timeout_seconds: float = field(
        default=300.0, metadata=_check(_positive, "a positive number of seconds")
    )
    deterministic: bool = False
    extract_batch_size: int = field(default=32, metadata=_check(_positive, "a positive integer"))
    eval_batch_size: int = field(default=256, metadata=_check(_positive, "a positive integer"))


@dataclass(frozen=True)
class SamplerConfig:
    """Negative sampling inside a P x K batch."""

    mode: str = field(default="hpsh", metadata=_registered(SAMPLERS, **_ORIGINAL_ALIAS))
    cutoff: float = field(default=0.5, metadata=_check(_non_negative, "a value >= 0"))
    nonzero_loss_cutoff: float | None = field(
        default=None,
        metadata=_check(_positive, "a positive number or null (alpha + beta; 1.4 if original)"),
    )
    empty_rows: Literal["index0", "error"] = "index0"


@dataclass(frozen=True)
class LossConfig:
    """The training loss: ``name`` (registry ``LOSSES``), its ``options``, and HPSH's weights.

    ``alpha`` ... ``classification_weight`` are the HPSH loss's (``name: hpsh``); the other
    methods take their hyper-parameters from ``options`` on top of their preset
    (docs/how-to/baselines.md), validated when the config is loaded.
    """

    name: str = field(
        default="hpsh",
        metadata={"check": lambda v: v in LOSSES, "expected": LOSSES.expected},
    )
    options: dict[str, bool | int | float | str] = field(default_factory=dict)
    variant: Literal["fixed", "original"] = field(default="fixed", metadata=_ORIGINAL_ALIAS)
    alpha: float = field(default=0.3, metadata=_check(_non_negative, "a value >= 0"))
    beta: float = field(default=0.6, metadata=_check(_non_negative, "a value >= 0"))
    quantization_weight: float = field(default=0.01, metadata=_check(_non_negative, "a value >= 0"))
    push_weight: float = field(default=0.001, metadata=_check(_non_negative, "a value >= 0"))
    balance_weight: float = field(default=1.0, metadata=_check(_non_negative, "a value >= 0"))
    classification_weight: float = field(
        default=0.0, metadata=_check(_non_negative, "a value >= 0 (0 = no classifier)")
    )


@dataclass(frozen=True)
class EvalConfig:
    """Retrieval evaluation."""

    k: int = field(default=20, metadata=_check(_positive, "a positive integer"))
    protocol: Literal["paper", "standard"] = "paper"
    radius: int = field(default=2, metadata=_check(_non_negative, "an integer >= 0"))
    backend: str = field(default="tf", metadata=_registered(SEARCH_BACKENDS))
    ties: Literal["expected", "index"] = "expected"
    figures: bool = True
    interval: int = field(default=100, metadata=_check(_positive, "a positive integer"))
    max_grids: int = field(default=20, metadata=_check(_non_negative, "an integer >= 0"))


@dataclass(frozen=True)
class ExportConfig:
    """SavedModel export for TF Serving."""

    name: str | None = field(default=None, metadata=_check(_folder_name, FOLDER_NAME_EXPECTED))
    database: Literal["all", "train", "none"] = "all"
    warmup_requests: int = field(default=3, metadata=_check(_non_negative, "an integer >= 0"))
    max_pixels: int = field(
        default=40_000_000, metadata=_check(_positive, "a positive integer (width x height)")
    )


@dataclass(frozen=True)
class IndexConfig:
    """The searchable archive index (Milvus, embedded Milvus Lite by default, or in memory).

    ``backend`` chooses the implementation of :class:`hpsh_tf2.index.backend.IndexBackend`;
    ``uri`` is where it lives (Milvus: a server URL or a Milvus Lite ``.db`` file; memory: an
    ``.npz`` file). ``index_type``, ``nlist`` and ``nprobe`` are Milvus' own settings.
    """

    backend: str = field(default="milvus", metadata=_registered(INDEX_BACKENDS))
    uri: str | None = None
    collection: str = field(
        default="hpsh", metadata=_check(_collection_name, COLLECTION_NAME_EXPECTED)
    )
    batch_size: int = field(default=64, metadata=_check(_positive, "a positive integer"))
    index_type: Literal["BIN_FLAT", "BIN_IVF_FLAT"] = "BIN_FLAT"
    nlist: int = field(default=1024, metadata=_check(_positive, "a positive integer"))
    nprobe: int = field(default=16, metadata=_check(_positive, "a positive integer"))
    runner: Literal["local", "beam"] = "local"
    # a build may remove at most this fraction of the rows without --prune
    max_remove_fraction: float = field(
        default=0.5, metadata=_check(_fraction, "a fraction in [0, 1]")
    )
    # `index build --scenes`: how scenes are cut into tiles
    tile_size: int = field(default=256, metadata=_check(_positive, "a positive integer (px)"))
    tile_stride: int = field(default=256, metadata=_check(_positive, "a positive integer (px)"))
    max_nodata_fraction: float = field(
        default=0.5, metadata=_check(_fraction, "a fraction in [0, 1]")
    )
    stac_asset: str = field(
        default="visual", metadata=_check(lambda v: bool(v.strip()), "a non-empty asset name")
    )


@dataclass(frozen=True)
class OutputConfig:
    """Where a run writes its outputs."""

    workdir: str = field(
        default="runs/default",
        metadata=_check(lambda v: bool(v.strip()), "a non-empty folder path"),
    )


@dataclass(frozen=True)
class Config:
    """A complete, validated run configuration."""

    name: str = field(default="hpsh", metadata=_check(_folder_name, FOLDER_NAME_EXPECTED))
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def replace(self, overrides: Iterable[str] = (), *, source: str = "--set") -> Config:
        """Returns a copy with dotted-key overrides (``"train.epochs=5"``) applied."""
        return apply_overrides(self, overrides, source=source)

    def with_values(self, values: Mapping[str, Any], *, source: str = "<values>") -> Config:
        """Returns a copy with dotted keys set to typed values (``{"model.bits": 16}``)."""
        return apply_values(self, values, source=source)

    @property
    def workdir(self) -> Path:
        """The run's output folder."""
        return Path(self.output.workdir)


# --------------------------------------------------------------------------- conversion


def _describe_type(tp: Any) -> str:
    """A user-facing description of a type annotation."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        parts = [_describe_type(a) for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(parts) + " or null"
    if origin is tuple:
        return f"a list of {_describe_type(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of names to {_describe_type(typing.get_args(tp)[1])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


class _Invalid(Exception):
    """Internal: a value does not fit its annotation."""


def _coerce(value: Any, tp: Any) -> Any:
    """Converts ``value`` to annotation ``tp`` or raises ``_Invalid``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise _Invalid
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except _Invalid:
                continue
        raise _Invalid
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Invalid
        (item_type, *_) = typing.get_args(tp)
        return tuple(_coerce(v, item_type) for v in value)
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _Invalid
        _, item_type = typing.get_args(tp)
        return {k: _coerce(v, item_type) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Invalid
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Invalid
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Invalid
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Invalid
    raise TypeError(f"unsupported config annotation {tp!r}")


def _build(cls: type, raw: Any, *, prefix: str, source: str) -> Any:
    """Builds dataclass ``cls`` from a mapping, validating every field."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        where = prefix.rstrip(".") or "top level"
        raise ConfigError(
            f"{source}: '{where}' must be a mapping. Received: {raw!r} ({type(raw).__name__})"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(
            f"{source}: unknown key '{key}'. Expected one of: "
            + ", ".join(f"{prefix}{name}" for name in fields)
        )
    kwargs = {}
    for name, fld in fields.items():
        if name not in raw:
            continue
        tp = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, raw[name], prefix=f"{key}.", source=source)
            continue
        kwargs[name] = _validate_value(raw[name], tp, fld, key=key, source=source)
    return cls(**kwargs)


def _validate_value(value: Any, tp: Any, fld: dataclasses.Field, *, key: str, source: str) -> Any:
    """Type-checks one leaf value (mapping a deprecated alias) and runs its range check."""
    aliases = fld.metadata.get("aliases", {})
    if isinstance(value, str) and value in aliases:
        _log.warning(
            "%s: '%s: %s' is deprecated; use '%s: %s' (same behaviour)",
            source,
            key,
            value,
            key,
            aliases[value],
        )
        value = aliases[value]
    try:
        result = _coerce(value, tp)
    except _Invalid:
        expected = field_expected(fld) if "registry" in fld.metadata else _describe_type(tp)
        raise ConfigError(
            f"{source}: invalid value for '{key}'. Received: {key.rsplit('.', 1)[-1]}={value!r}; "
            f"expected {expected}"
        ) from None
    if isinstance(result, float) and not math.isfinite(result):
        raise ConfigError(
            f"{source}: invalid value for '{key}'. Received: {key.rsplit('.', 1)[-1]}={value!r}; "
            "expected a finite number (not inf or nan)"
        )
    check = fld.metadata.get("check")
    if check is not None and result is not None and not check(result):
        raise ConfigError(
            f"{source}: invalid value for '{key}'. Received: {key.rsplit('.', 1)[-1]}={value!r}; "
            f"expected {field_expected(fld)}"
        )
    return result


def _validate_cross_field(config: Config, *, source: str) -> None:
    """Checks constraints that involve more than one key."""
    split = config.data.split
    total = split.train + split.val + split.test
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(
            f"{source}: 'data.split' fractions must sum to 1. Received: train={split.train}, "
            f"val={split.val}, test={split.test} (sum {total:g})"
        )
    if split.train <= 0 or split.test <= 0:
        raise ConfigError(
            f"{source}: 'data.split.train' and 'data.split.test' must be > 0. "
            f"Received: train={split.train}, test={split.test}"
        )
    if any(units <= 0 for units in config.model.hidden_units):
        raise ConfigError(
            f"{source}: invalid value for 'model.hidden_units'. Received: "
            f"{list(config.model.hidden_units)}; expected positive integers"
        )
    if config.model.input_norm == "standardize" and config.train.mode != "features":
        raise ConfigError(
            f"{source}: 'model.input_norm: standardize' takes its statistics from the cached "
            "training features and needs 'train.mode: features'. Received: train.mode="
            f"{config.train.mode!r}; use input_norm 'l2' or 'none' end to end"
        )
    if config.train.early_stopping_patience > 0 and split.val <= 0:
        raise ConfigError(
            f"{source}: 'train.early_stopping_patience' watches the validation mAP and needs "
            f"'data.split.val' > 0. Received: early_stopping_patience="
            f"{config.train.early_stopping_patience}, val={split.val}"
        )
    _validate_data_format(config.data, source)
    _validate_loss_options(config, source=source)
    if config.data.root is None and config.data.features is None:
        return
    if config.data.root is not None and config.data.features is not None:
        raise ConfigError(
            f"{source}: set only one of 'data.root' (images) and 'data.features' (a .npz of "
            f"pre-computed features). Received both: root={config.data.root!r}, "
            f"features={config.data.features!r}"
        )


def _validate_data_format(data: DataConfig, source: str) -> None:
    """``data.manifest`` / ``data.format`` against each other and ``data.features``."""
    if data.manifest is not None and data.features is not None:
        raise ConfigError(
            f"{source}: set only one of 'data.manifest' (a list of images) and 'data.features' "
            f"(a .npz). Received both: manifest={data.manifest!r}, features={data.features!r}"
        )
    if data.format is None:
        return
    use = _manifest_use(data.format)
    if use == "required" and data.manifest is None:
        raise ConfigError(
            f"{source}: 'data.format: {data.format}' needs 'data.manifest' (a .csv or .jsonl "
            "file). Received: manifest=None"
        )
    if data.manifest is not None and use is None:
        readers = [n for n in DATA_FORMATS.names() if _manifest_use(n)]
        raise ConfigError(
            f"{source}: 'data.manifest' is read by data.format {' or '.join(readers)} only. "
            f"Received: format={data.format!r}"
        )


def _manifest_use(format_name: str) -> str | None:
    """What the ``data.format`` reader does with ``data.manifest`` (see
    :mod:`hpsh_tf2.data.formats`): ``required``, ``optional`` or None (ignores it)."""
    return getattr(DATA_FORMATS.get(format_name), "manifest_use", None)


def config_from_dict(raw: Any, *, source: str = "<dict>") -> Config:
    """Builds and validates a :class:`Config` from a nested mapping.

    Args:
        raw: Nested mapping, as loaded from YAML.
        source: Name used in error messages (the file path).

    Returns:
        The validated config.

    Raises:
        ConfigError: On unknown keys, wrong types or out-of-range values.
    """
    config = _build(Config, raw, prefix="", source=source)
    _validate_cross_field(config, source=source)
    return config


def config_to_dict(config: Config) -> dict[str, Any]:
    """Converts a config to plain YAML-friendly Python types (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


MAX_CONFIG_BYTES = 1 << 20
"""The largest config file :func:`load_config` reads (1 MiB; the shipped ones are ~5 KiB)."""


def _read_config_file(path: Path, source: str) -> dict[str, Any]:
    """The top-level mapping of a YAML config file.

    Raises:
        ConfigError: The file is missing, unreadable, larger than :data:`MAX_CONFIG_BYTES`,
            not YAML, empty (comments only) or not a mapping.
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {source}") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {source}: {err}") from None
    if len(data) > MAX_CONFIG_BYTES:
        size = path.stat().st_size
        raise ConfigError(
            f"{source}: {size} bytes; a config file may hold at most {MAX_CONFIG_BYTES} bytes "
            "(1 MiB): is this the right file?"
        )
    try:
        raw = yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{source}: not UTF-8 text ({err})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    if raw is None:
        raise ConfigError(
            f"{source}: empty config; expected a mapping of sections (data, model, train, ...); "
            "leave out --config to run with every default"
        )
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{source}: expected a mapping of sections (data, model, train, ...) at the top "
            f"level. Received: {type(raw).__name__}"
        )
    return raw


def load_config(path: str | os.PathLike | None, overrides: Iterable[str] = ()) -> Config:
    """Loads a YAML config file and applies dotted-key overrides.

    Args:
        path: The YAML file; ``None`` starts from the built-in defaults.
        overrides: Strings like ``"train.epochs=5"``; values are parsed as YAML scalars.

    Returns:
        The validated config.

    Raises:
        ConfigError: If the file is missing or unreadable, or any value is invalid.
    """
    if path is None:
        raw: Any = {}
        source = "<defaults>"
    else:
        source = str(path)
        raw = _read_config_file(Path(path), source)
    config = config_from_dict(raw, source=source)
    overrides = list(overrides)
    if not overrides:
        return config
    return apply_overrides(config, overrides, source=f"{source} (--set)")


def parse_override(text: str, *, source: str = "--set") -> tuple[str, Any]:
    """Splits ``"a.b=value"`` into the dotted key and the YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"{source}: expected KEY=VALUE (e.g. train.epochs=5). Received: {text!r}")
    key, _, value_text = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"{source}: empty key. Received: {text!r}")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError:
        value = value_text
    return key, value


def apply_overrides(config: Config, overrides: Iterable[str], *, source: str = "--set") -> Config:
    """Applies dotted-key overrides to a config and validates the result.

    Args:
        config: The starting config.
        overrides: Strings like ``"train.epochs=5"`` or ``"data.split.val=0.1"``.
        source: Name used in error messages.

    Returns:
        A new validated config.

    Raises:
        ConfigError: For unknown keys or invalid values.
    """
    return apply_values(config, [parse_override(text, source=source) for text in overrides],
                        source=source)  # fmt: skip


def apply_values(
    config: Config,
    values: Mapping[str, Any] | Iterable[tuple[str, Any]],
    *,
    source: str = "<values>",
) -> Config:
    """Sets dotted keys to Python values (``{"model.bits": 16}``) and validates the result.

    The typed twin of :func:`apply_overrides`: code that already holds a value passes it as
    it is, and it goes through the same checks as a value read from YAML.

    Raises:
        ConfigError: For unknown keys or invalid values.
    """
    pairs = list(values.items()) if isinstance(values, Mapping) else list(values)
    raw = config_to_dict(config)
    _drop_replaced_data_source(raw, {key for key, _ in pairs})
    for key, value in pairs:
        node = raw
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"{source}: unknown key '{key}' ('{where}' is not a section)")
            node = child
        if parts[-1] not in node and not _is_free_mapping(parts[:-1]):
            raise ConfigError(
                f"{source}: unknown key '{key}'. Expected one of: "
                + ", ".join(".".join([*parts[:-1], name]) for name in node)
            )
        if isinstance(node.get(parts[-1]), dict) and not _is_free_mapping(parts):
            raise ConfigError(f"{source}: '{key}' is a section; set one of its keys instead")
        node[parts[-1]] = value
    return config_from_dict(raw, source=source)


def _is_free_mapping(parts: list[str]) -> bool:
    """Whether the dotted key ``parts`` names a mapping field with free keys (``loss.options``)."""
    tp: Any = Config
    for part in parts:
        if not dataclasses.is_dataclass(tp):
            return False
        hints = typing.get_type_hints(tp)
        if part not in hints:
            return False
        tp = hints[part]
    return typing.get_origin(tp) is dict


def _validate_loss_options(config: Config, *, source: str) -> None:
    """``loss.options`` against the chosen method's option keys (imports the method's module,
    so only when options are given)."""
    if not config.loss.options:
        return
    method = LOSSES.get(config.loss.name)
    check = getattr(method, "check_options", None)
    if check is None:
        return
    try:
        check(config.loss.options, method=config.loss.name)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


_DATA_SOURCES = ("root", "features")


def _drop_replaced_data_source(raw: dict[str, Any], keys: set[str]) -> None:
    """An override of one of data.root / data.features replaces the other from the base config.

    The two are exclusive; a config file naming the images and a ``--set data.features=...``
    (or the reverse) means "use this source instead". Both on the command line stays an error.
    """
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    for name in _DATA_SOURCES:
        other = _DATA_SOURCES[1 - _DATA_SOURCES.index(name)]
        if f"data.{name}" in keys and f"data.{other}" not in keys and data.get(other):
            logger.info(
                "--set data.%s replaces data.%s=%r from the config file", name, other, data[other]
            )
            data[other] = None


def save_config(config: Config, path: str | os.PathLike) -> Path:
    """Writes the resolved config as YAML, atomically (temp file, then rename)."""
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    return write_text_atomic(path, text)


def fingerprint(payload: Any, *, length: int | None = None) -> str:
    """SHA-256 of the canonical JSON of ``payload`` (sorted keys, compact separators).

    Args:
        payload: JSON-serialisable data (a config dict, a mapping of inputs); values JSON does
            not know are written with ``str``.
        length: Keep the first ``length`` hex digits (``None``: all 64).

    Returns:
        The hex digest.
    """
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return digest if length is None else digest[:length]


def config_fingerprint(
    config: Config,
    *,
    sections: Iterable[str] | None = None,
    drop: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
    length: int = 16,
) -> str:
    """Fingerprint of (part of) a config, for deciding whether an output is up to date.

    Args:
        config: The config.
        sections: Top-level sections to include (``None``: all).
        drop: Dotted keys to leave out (``"train.epochs"``, ``"export"``).
        extra: More inputs mixed in (e.g. upstream fingerprints, file stamps).
        length: Hex digits kept.

    Returns:
        The hex digest.
    """
    raw = config_to_dict(config)
    if sections is not None:
        raw = {name: raw[name] for name in sections}
    for key in drop:
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    return fingerprint({"config": raw, "extra": dict(extra or {})}, length=length)


def add_config_arguments(
    parser: argparse.ArgumentParser, *, example: str = "train.epochs=5"
) -> None:
    """Adds ``--config FILE``, repeatable ``--set KEY=VALUE`` and ``--plugin MODULE`` to a parser.

    Args:
        parser: The (sub)parser of a verb.
        example: The override shown in the help text.
    """
    parser.add_argument("--config", metavar="FILE", help="YAML config (e.g. aid.yaml, ucmd.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config key, e.g. --set {example} (repeatable)",
    )
    parser.add_argument(
        "--plugin",
        dest="verb_plugins",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first: its registered components become valid config values "
        "(repeatable; same as 'hpsh --plugin MODULE VERB')",
    )
