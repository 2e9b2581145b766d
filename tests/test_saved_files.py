"""Tests for hpsh_tf2.saved_files and the export loading that uses it (issue 23, item 7).

A truncated ``variables.data-*`` or a deleted ``saved_model.pb`` in an export made ``query``,
``index build`` and ``evaluate --saved-model`` exit 1 with ``IndexError: Read less bytes than
requested``; now every path loads through :func:`hpsh_tf2.serving.load_exported`, which names
the export folder and the damaged file in one line.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import pytest

from hpsh_tf2 import cli
from hpsh_tf2.errors import DamagedFileError, HPSHError
from hpsh_tf2.export import export_saved_model
from hpsh_tf2.index.encoder import SavedModelEncoder
from hpsh_tf2.saved_files import saved_model_damage
from hpsh_tf2.serving import load_exported, query_images

SIZE, BITS = 32, 16


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny export (mean colour -> 16 scores), version 1 of model ``hpsh``."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(BITS, activation="sigmoid")(pooled))
    root = tmp_path_factory.mktemp("export")
    export_saved_model(
        image_model=model,
        backbone="mobilenet_v2",
        image_size=SIZE,
        bits=BITS,
        export_dir=root,
        model_name="hpsh",
    )
    return root / "hpsh"


def _damaged(exported, tmp_path, how: str) -> tuple[Path, str]:
    """A copy of the export with one file damaged; returns the model folder and that file."""
    model_dir = tmp_path / "hpsh"
    shutil.copytree(exported, model_dir)
    version = model_dir / "1"
    if how == "data":
        (data,) = (version / "variables").glob("variables.data-*")
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
        return model_dir, data.name
    if how == "index":
        index = version / "variables" / "variables.index"
        index.write_bytes(index.read_bytes()[:10])
        return model_dir, index.name
    if how == "pb":
        pb = version / "saved_model.pb"
        pb.write_bytes(pb.read_bytes()[:100])
        return model_dir, pb.name
    (version / "saved_model.pb").unlink()
    return model_dir, "saved_model.pb"


def test_a_whole_export_has_no_damage(exported):
    assert saved_model_damage(exported / "1") is None
    assert "serving_default" in load_exported(exported).signatures


HOWS = ["data", "index", "pb", "deleted_pb"]


@pytest.mark.parametrize("how", HOWS)
def test_load_exported_names_the_folder_and_the_file(exported, tmp_path, how):
    model_dir, bad = _damaged(exported, tmp_path, how)
    with pytest.raises(DamagedFileError) as info:
        load_exported(model_dir)
    message = str(info.value)
    assert "\n" not in message
    assert str(model_dir / "1") in message and bad in message
    assert "export" in message


@pytest.mark.parametrize("how", HOWS)
def test_query_and_the_index_encoder_name_the_file(exported, tmp_path, scene_tree, how):
    model_dir, bad = _damaged(exported, tmp_path, how)
    image = next(p for p in sorted(scene_tree.rglob("*")) if p.is_file())
    with pytest.raises(DamagedFileError, match=bad):
        query_images(model_dir, [image])
    with pytest.raises(DamagedFileError, match=bad):
        SavedModelEncoder(model_dir)


def test_cli_query_exits_2_with_one_line(exported, tmp_path, scene_tree, capsys):
    model_dir, bad = _damaged(exported, tmp_path, "data")
    image = next(p for p in sorted(scene_tree.rglob("*")) if p.is_file())
    code = cli.main(["query", "--model", str(model_dir), "--image", str(image)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and bad in err[0], err


def test_damage_is_an_hpsh_error():
    assert issubclass(DamagedFileError, HPSHError)
