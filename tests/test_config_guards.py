"""Tests for hpsh_tf2.config's guards on names and on the config file itself (issue 23, 8 + 12).

Names that become folders or collection names are checked when the config loads, with one line
naming the key; an empty or oversized YAML file is refused naming the file.
"""

from __future__ import annotations

import time

import pytest

from hpsh_tf2.config import MAX_CONFIG_BYTES, Config, ConfigError, load_config
from tests.conftest import REPO_ROOT

_BAD_FOLDER_NAMES = ["../../../evil", "a/b", "..", ".hidden", "-x", "", "a\nb", "é" * 3, "x" * 65]


@pytest.mark.parametrize("key", ["export.name", "name"])
@pytest.mark.parametrize("value", _BAD_FOLDER_NAMES)
def test_bad_folder_names_fail_at_load_naming_the_key(key, value):
    with pytest.raises(ConfigError) as info:
        load_config(REPO_ROOT / "aid.yaml", [f"{key}={value}"])
    message = str(info.value)
    assert "\n" not in message.replace(repr(value), "")
    assert f"'{key}'" in message and "letters, digits" in message


@pytest.mark.parametrize("value", ["my-model", "hpsh_16.v2", "A1", "x" * 64])
def test_good_folder_names_load(value):
    config = load_config(None, [f"export.name={value}", f"name={value}"])
    assert config.export.name == config.name == value


@pytest.mark.parametrize("value", ["1abc", "a-b", "a b", "森林", "café", "x" * 256, "a'b"])
def test_bad_collection_names_fail_at_load(value):
    with pytest.raises(ConfigError, match=r"'index\.collection'"):
        load_config(None, [f"index.collection={value}"])


def test_good_collection_names_load():
    assert load_config(None, ["index.collection=_aid_16"]).index.collection == "_aid_16"
    assert load_config(None, [f"index.collection={'c' * 255}"]).index.collection == "c" * 255


def test_bad_names_in_a_file_name_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("export:\n  name: ../evil\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: invalid value for 'export\.name'"):
        load_config(path)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "null\n"])
def test_an_empty_config_file_is_refused(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"empty\.yaml: empty config; expected a mapping"):
        load_config(path)


def test_a_non_mapping_config_file_is_refused(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list\.yaml.*expected a mapping"):
        load_config(path)


def test_an_oversized_config_file_is_refused_quickly(tmp_path):
    path = tmp_path / "huge.yaml"
    line = "# " + "x" * 1000 + "\n"
    path.write_text("name: hpsh\n" + line * (MAX_CONFIG_BYTES // len(line) + 2))
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"huge\.yaml: .* bytes; a config file may hold at most"):
        load_config(path)
    assert time.perf_counter() - start < 1.0
    # a file just under the cap still loads
    path.write_text("name: hpsh\n" + line * (MAX_CONFIG_BYTES // len(line) - 2))
    assert load_config(path) == Config()


def test_cluster_start_timeout_key():
    assert load_config(None).train.cluster_start_timeout_seconds == 300.0
    config = load_config(None, ["train.cluster_start_timeout_seconds=5"])
    assert config.train.cluster_start_timeout_seconds == 5.0
    for bad in ("0", "-1", "null", "inf"):
        with pytest.raises(ConfigError, match=r"'train\.cluster_start_timeout_seconds'"):
            load_config(None, [f"train.cluster_start_timeout_seconds={bad}"])
