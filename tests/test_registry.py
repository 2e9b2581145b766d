"""Tests of hpsh_tf2.registry: registration, lazy import paths, errors, scoped entries."""

from __future__ import annotations

import pytest

from hpsh_tf2.errors import ConfigError
from hpsh_tf2.registry import REGISTRIES, Registry, RegistryError, load_plugins


def test_register_object_and_decorator():
    reg = Registry("thing", "section.thing")
    reg.register("a", int)

    @reg.register("b_2")
    def make_b():
        """Makes b."""
        return "b"

    assert reg.names() == ("a", "b_2")
    assert reg.get("a") is int
    assert reg.build("b_2") == "b"
    assert reg.doc("b_2") == "Makes b."
    assert "a" in reg and "c" not in reg
    assert reg.expected() == "one of 'a', 'b_2'"


def test_lazy_import_path_is_resolved_on_first_use():
    reg = Registry("thing", "section.thing")
    reg.register("join", "os.path:join", doc="joins paths")
    import os.path

    assert reg.get("join") is os.path.join
    assert reg.doc("join") == "joins paths"


def test_unknown_name_names_the_key_and_choices():
    reg = Registry("loss", "loss.name")
    reg.register("hpsh", int)
    with pytest.raises(
        ConfigError, match=r"unknown loss 'nope' \('loss.name'\); expected one of 'hpsh'"
    ):
        reg.get("nope")


@pytest.mark.parametrize("name", ["", "Upper", "with-dash", "sp ace"])
def test_malformed_names_are_refused(name):
    with pytest.raises(RegistryError, match="invalid name"):
        Registry("x", "x.y").register(name, int)


def test_duplicate_needs_override():
    reg = Registry("x", "x.y")
    reg.register("a", int)
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("a", float)
    reg.register("a", float, override=True)
    assert reg.get("a") is float


def test_bad_import_paths():
    reg = Registry("x", "x.y")
    reg.register("a", "os.path")
    reg.register("b", "os.path:no_such_attribute")
    with pytest.raises(RegistryError, match="invalid import path"):
        reg.get("a")
    with pytest.raises(RegistryError, match="no attribute 'no_such_attribute'"):
        reg.get("b")


def test_scoped_restores_previous_state():
    reg = Registry("x", "x.y")
    reg.register("a", int)
    with reg.scoped("a", float), reg.scoped("b", str):
        assert reg.get("a") is float and reg.get("b") is str
    assert reg.get("a") is int
    assert "b" not in reg


def test_load_plugins_names_the_missing_module():
    load_plugins(["json"])
    with pytest.raises(RegistryError, match="cannot import plugin module 'no_such_module_xyz'"):
        load_plugins(["no_such_module_xyz"])


def test_every_registry_serves_a_distinct_config_key():
    assert set(REGISTRIES) == {
        "loss.name",
        "sampler.mode",
        "eval.backend",
        "train.strategy",
        "model.backbone",
        "index.backend",
        "data.format",
    }
