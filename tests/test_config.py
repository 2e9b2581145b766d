"""Tests for hpsh_tf2.config: YAML loading, validation, overrides, saving."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import pytest
import yaml

from hpsh_tf2.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_to_dict,
    load_config,
    save_config,
)
from tests.conftest import REPO_ROOT

REQUIRED_KEYS = [
    "data.root",
    "data.features",
    "data.split.train",
    "data.split.val",
    "data.split.test",
    "data.seed",
    "data.on_bad_image",
    "model.backbone",
    "model.weights",
    "model.image_size",
    "model.bits",
    "train.mode",
    "train.epochs",
    "train.steps_per_epoch",
    "train.classes_per_batch",
    "train.samples_per_class",
    "train.learning_rate",
    "sampler.mode",
    "loss.alpha",
    "loss.beta",
    "eval.k",
    "eval.protocol",
    "output.workdir",
]


def _lookup(tree: dict, dotted: str):
    node = tree
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("name", ["ucmd_paper.yaml", "aid_paper.yaml"])
def test_paper_configs_carry_original_hyperparameters(name):
    config = load_config(REPO_ROOT / name)
    raw = yaml.safe_load((REPO_ROOT / name).read_text())
    for key in REQUIRED_KEYS:
        _lookup(raw, key)  # present in the file itself, not only as a default
    assert config.model.bits == 32
    assert config.train.samples_per_class == 5
    assert config.loss.alpha == pytest.approx(0.3)
    assert config.loss.beta == pytest.approx(0.6)
    assert config.loss.quantization_weight == pytest.approx(0.01)
    assert config.loss.push_weight == pytest.approx(0.001)
    assert config.loss.balance_weight == pytest.approx(1.0)
    assert config.train.learning_rate == pytest.approx(1e-4)
    assert (config.train.beta_1, config.train.beta_2) == (0.5, 0.9)
    assert config.train.epochs == 40
    assert (config.data.split.train, config.data.split.test) == (0.6, 0.4)
    assert config.model.backbone == "inception_v3"
    assert config.model.image_size == 299
    assert config.model.weights == "imagenet"
    expected = {"ucmd_paper.yaml": (21, 100), "aid_paper.yaml": (30, 900)}[name]
    assert (config.train.classes_per_batch, config.train.steps_per_epoch) == expected
    assert config.train.lr_schedule == "constant"
    assert config.train.early_stopping_patience == 0
    assert config.model.input_dropout == 0.0
    assert config.loss.classification_weight == 0.0


# What the default recipe changes relative to the paper (docs/tutorials/aid-table.md).
RECIPE = {
    "model.input_dropout": (0.0, 0.5),
    "train.epochs": (40, 15),
    "train.learning_rate": (1e-4, 1e-3),
    "train.lr_schedule": ("constant", "cosine"),
}


@pytest.mark.parametrize("name", ["ucmd", "aid"])
def test_default_configs_differ_from_the_paper_only_by_the_recipe(name):
    paper = config_to_dict(load_config(REPO_ROOT / f"{name}_paper.yaml"))
    default = config_to_dict(load_config(REPO_ROOT / f"{name}.yaml"))
    changed = {
        key: (_lookup(paper, key), _lookup(default, key))
        for key in _leaf_keys(paper)
        if _lookup(paper, key) != _lookup(default, key)
    }
    expected = dict(RECIPE)
    if name == "aid":  # 900 steps per epoch in the original AID trainer
        expected["train.steps_per_epoch"] = (900, 100)
    assert changed == expected


def _leaf_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for name, value in tree.items():
        if isinstance(value, dict) and value:  # an empty mapping (loss.options) is a key
            keys += _leaf_keys(value, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


@pytest.mark.parametrize("name", ["ucmd.yaml", "aid.yaml", "ucmd_paper.yaml", "aid_paper.yaml"])
def test_shipped_configs_list_every_key(name):
    raw = yaml.safe_load((REPO_ROOT / name).read_text())
    defaults = config_to_dict(Config())
    assert sorted(_leaf_keys(raw)) == sorted(_leaf_keys(defaults))


def test_docs_give_every_key_a_meaning():
    """The generated config reference (docs/reference/config.md) has a meaning for every key."""
    meanings = yaml.safe_load((REPO_ROOT / "docs" / "reference" / "config-keys.yaml").read_text())
    fields = {}
    stack = [("", Config)]
    while stack:
        prefix, cls = stack.pop()
        for fld in dataclasses.fields(cls):
            if dataclasses.is_dataclass(fld.default_factory):  # a section
                stack.append((f"{prefix}{fld.name}.", fld.default_factory))
            else:
                fields[f"{prefix}{fld.name}"] = fld
    assert sorted(fields) == sorted(_leaf_keys(config_to_dict(Config())))
    for key, fld in fields.items():
        assert meanings.get(key) or fld.metadata.get("doc"), (
            f"{key} has no meaning in docs/reference/config-keys.yaml (or metadata['doc'])"
        )


def test_defaults_validate_and_roundtrip(tmp_path):
    config = load_config(None)
    assert config == Config()
    path = save_config(config, tmp_path / "sub" / "config.yaml")
    assert load_config(path) == config
    assert not list(path.parent.glob(".config.yaml.*")), "temp file left behind"


def test_override_types_and_nested_keys():
    config = load_config(
        REPO_ROOT / "aid.yaml",
        [
            "train.epochs=5",
            "data.split.train=0.5",
            "data.split.val=0.1",
            "model.weights=none",
            "train.classes_per_batch=null",
            "model.hidden_units=[64, 32]",
        ],
    )
    assert config.train.epochs == 5
    assert (config.data.split.train, config.data.split.val) == (0.5, 0.1)
    assert config.model.weights == "none"
    assert config.train.classes_per_batch is None
    assert config.model.hidden_units == (64, 32)


def test_float_accepts_int_and_int_rejects_float():
    config = apply_overrides(Config(), ["train.learning_rate=1"])
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)
    with pytest.raises(ConfigError, match=r"epochs.*Received: epochs=2\.5; expected an integer"):
        apply_overrides(Config(), ["train.epochs=2.5"])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("model.bits=7", r"model\.bits.*Received: bits=7; expected one of 16, 24, 32, 48, 64"),
        ("model.bits=0", r"Received: bits=0"),
        ("train.epochs=0", r"train\.epochs.*expected a positive integer"),
        ("train.foo=1", r"unknown key 'train\.foo'"),
        ("nosuch.key=1", r"unknown key 'nosuch\.key'"),
        ("sampler.mode=fancy", r"sampler\.mode.*one of 'hpsh', 'original'"),
        ("model.backbone=vgg16", r"model\.backbone.*'vgg16'; expected one of 'inception_v3'"),
        ("data.on_bad_image=ignore", r"data\.on_bad_image.*one of 'skip', 'error'"),
        ("train.samples_per_class=1", r"samples_per_class=1; expected an integer >= 2"),
        ("data.split.val=0.3", r"sum to 1"),
        ("train.augment=maybe", r"train\.augment.*true or false"),
        ("train", r"expected KEY=VALUE"),
        ("data.split=3", r"'data\.split' is a section"),
    ],
)
def test_invalid_overrides_name_file_key_and_value(override, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(REPO_ROOT / "aid.yaml", [override])
    assert "aid.yaml" in str(info.value)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  bits: 12\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*model\.bits.*Received: bits=12"):
        load_config(bad)
    bad.write_text("model: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: 'model' must be a mapping"):
        load_config(bad)
    bad.write_text("model: {bits: 32\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad)
    bad.write_text("modle:\n  bits: 32\n")
    with pytest.raises(ConfigError, match=r"unknown key 'modle'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_root_and_features_are_exclusive():
    with pytest.raises(ConfigError, match=r"only one of 'data\.root'"):
        apply_overrides(Config(), ["data.root=a", "data.features=b.npz"])


@pytest.mark.parametrize(
    ("key", "default", "other", "choices"),
    [
        ("model.init", "keras", "original", r"'keras', 'original'"),
        ("sampler.empty_rows", "index0", "error", r"'index0', 'error'"),
    ],
)
def test_seed_mode_choices(key, default, other, choices):
    section, leaf = key.split(".")
    assert getattr(getattr(Config(), section), leaf) == default
    changed = apply_overrides(Config(), [f"{key}={other}"])
    assert getattr(getattr(changed, section), leaf) == other
    with pytest.raises(ValueError, match=re.escape(key) + ".*" + choices):
        apply_overrides(Config(), [f"{key}=nan"])


@pytest.mark.parametrize(
    ("key", "new"),
    [("sampler.mode", "original"), ("loss.variant", "original"), ("model.init", "original")],
)
def test_deprecated_seed_spelling_loads_as_original(tmp_path, caplog, key, new):
    section, leaf = key.split(".")
    path = tmp_path / "old.yaml"
    path.write_text(f"{section}:\n  {leaf}: seed\n")
    with caplog.at_level(logging.WARNING, logger="hpsh_tf2.config"):
        config = load_config(path)
    assert getattr(getattr(config, section), leaf) == new
    assert f"old.yaml: '{key}: seed' is deprecated; use '{key}: original'" in caplog.text
    saved = save_config(config, tmp_path / "resolved.yaml")
    assert yaml.safe_load(saved.read_text())[section][leaf] == new  # the new name is saved
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hpsh_tf2.config"):
        assert getattr(getattr(load_config(saved), section), leaf) == new
    assert "deprecated" not in caplog.text


def test_every_registered_backbone_is_a_valid_value():
    from hpsh_tf2.models.backbone import BackboneSpec
    from hpsh_tf2.registry import BACKBONES

    assert len(BACKBONES) >= 5
    for name in BACKBONES:
        assert isinstance(BACKBONES.get(name), BackboneSpec)
        assert apply_overrides(Config(), [f"model.backbone={name}"]).model.backbone == name


def test_config_to_dict_is_plain_yaml(tmp_path: Path):
    text = yaml.safe_dump(config_to_dict(Config()))
    assert "!!python" not in text
    assert yaml.safe_load(text)["model"]["hidden_units"] == [1024, 512]


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("model.input_dropout=1.0", r"model\.input_dropout.*1\.0.*\[0, 1\)"),
        ("model.input_dropout=-0.2", r"model\.input_dropout.*-0\.2"),
        ("train.lr_schedule=step", r"train\.lr_schedule.*'constant', 'cosine'"),
        ("train.early_stopping_patience=-1", r"train\.early_stopping_patience.*-1"),
        ("train.early_stopping_patience=1.5", r"train\.early_stopping_patience.*an integer"),
        ("loss.classification_weight=-0.5", r"loss\.classification_weight.*-0\.5"),
    ],
)
def test_recipe_keys_are_validated(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        apply_overrides(Config(), [override])


def test_recipe_keys_default_to_the_paper_and_accept_values():
    config = Config()
    assert config.model.input_dropout == 0.0
    assert config.train.lr_schedule == "constant"
    assert config.train.early_stopping_patience == 0
    assert config.loss.classification_weight == 0.0
    changed = apply_overrides(
        config,
        [
            "model.input_dropout=0.5",
            "train.lr_schedule=cosine",
            "data.split.train=0.5",
            "data.split.val=0.1",
            "train.early_stopping_patience=3",
            "loss.classification_weight=0.1",
        ],
    )
    assert changed.model.input_dropout == 0.5
    assert changed.train.lr_schedule == "cosine"
    assert changed.train.early_stopping_patience == 3
    assert changed.loss.classification_weight == 0.1


def test_early_stopping_needs_a_validation_split():
    with pytest.raises(ConfigError, match=r"early_stopping_patience.*data\.split\.val.*val=0\.0"):
        apply_overrides(Config(), ["train.early_stopping_patience=2"])


@pytest.mark.parametrize(
    "override",
    [
        "train.learning_rate=.inf",
        "train.learning_rate=.nan",
        "loss.alpha=-.inf",
        "sampler.nonzero_loss_cutoff=.inf",
        "data.split.train=.nan",
        "train.epsilon=.inf",
    ],
)
def test_non_finite_numbers_are_rejected_naming_the_key(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=re.escape(f"'{key}'") + r".*expected a finite number"):
        apply_overrides(Config(), [override])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.seed=-1", "data.seed"),
        ("train.seed=100000000000000000000", "train.seed"),
        ("train.seed=1.0e+20", "train.seed"),
        ("train.seed=2147483648", "train.seed"),
        ("model.init_seed=-5", "model.init_seed"),
    ],
)
def test_seeds_outside_the_rng_range_fail_at_load_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(f"'{key}'")):
        load_config(REPO_ROOT / "aid.yaml", [override])
    ok = apply_overrides(Config(), [f"{key}=2147483647"])
    section, leaf = key.split(".")
    assert getattr(getattr(ok, section), leaf) == 2**31 - 1


def test_empty_workdir_is_rejected_at_load():
    with pytest.raises(ConfigError, match=r"'output\.workdir'.*non-empty folder path"):
        load_config(REPO_ROOT / "aid.yaml", ["output.workdir="])
    with pytest.raises(ConfigError, match=r"'output\.workdir'"):
        apply_overrides(Config(), ["output.workdir=  "])


def test_config_error_is_an_hpsh_error():
    from hpsh_tf2 import errors

    assert ConfigError is errors.ConfigError
    assert issubclass(ConfigError, errors.HPSHError)
    assert issubclass(ConfigError, ValueError)


def test_a_command_line_data_source_replaces_the_files_other_one(tmp_path, caplog):
    file = tmp_path / "c.yaml"
    file.write_text("data:\n  root: data/AID\n")
    with caplog.at_level("INFO", logger="hpsh_tf2.config"):
        config = load_config(file, ["data.features=x.npz"])
    assert (config.data.root, config.data.features) == (None, "x.npz")
    notes = [r.getMessage() for r in caplog.records if "replaces" in r.getMessage()]
    assert len(notes) == 1 and "data.root" in notes[0] and "data/AID" in notes[0]
    # and the reverse
    file.write_text("data:\n  features: y.npz\n")
    config = load_config(file, ["data.root=imgs"])
    assert (config.data.root, config.data.features) == ("imgs", None)
    # the README's own feature example on a shipped config
    config = load_config(REPO_ROOT / "aid.yaml", ["data.features=f.npz"])
    assert (config.data.root, config.data.features) == (None, "f.npz")
    # both on the command line stays an error
    with pytest.raises(ConfigError, match=r"only one of 'data\.root'"):
        load_config(file, ["data.root=a", "data.features=b.npz"])
    # without an override the file's own source is kept
    assert load_config(file).data.features == "y.npz"


def test_typed_values_go_through_the_same_checks():
    from hpsh_tf2.config import apply_values

    config = Config().with_values({"model.bits": 48, "eval.figures": False}, source="table x")
    assert (config.model.bits, config.eval.figures) == (48, False)
    assert apply_values(Config(), [("data.seed", 7)]).data.seed == 7
    with pytest.raises(ConfigError, match=r"table x: invalid value for 'model\.bits'.*bits=12"):
        Config().with_values({"model.bits": 12}, source="table x")
    with pytest.raises(ConfigError, match=r"model\.bits.*bits='16'"):
        Config().with_values({"model.bits": "16"})  # a string is not parsed again
    with pytest.raises(ConfigError, match=r"unknown key 'model\.bitz'"):
        Config().with_values({"model.bitz": 16})
