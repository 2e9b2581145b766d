"""Tests of hpsh_tf2.data.formats: one reader per data.format, on fixtures in that format."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpsh_tf2.data.formats import (
    ReadRequest,
    compose_bands,
    read_bigearthnet,
    read_mlrsnet,
    read_ucmd_multilabel,
    scale_reflectance,
)
from hpsh_tf2.errors import BadImageError, DatasetError
from hpsh_tf2.registry import DATA_FORMATS
from tests.data.conftest import (
    make_class_tree,
    write_bigearthnet_patch,
    write_mlrsnet,
    write_ucmd_multilabel,
)

UCMD_LABELS = ("airplane", "bare-soil", "buildings", "cars")


def test_every_registered_format_resolves_to_a_reader() -> None:
    assert DATA_FORMATS.names() == (
        "folders",
        "manifest",
        "bigearthnet",
        "mlrsnet",
        "ucmd_multilabel",
    )
    for name in DATA_FORMATS.names():
        assert callable(DATA_FORMATS.get(name))


def test_folders_format_is_todays_scan(tmp_path: Path) -> None:
    root = make_class_tree(tmp_path / "d", {"a": 2, "b": 3}, size=4)
    scan = DATA_FORMATS.build("folders", ReadRequest(root=str(root)))
    assert scan.class_names == ("a", "b") and scan.labels.tolist() == [0, 0, 1, 1, 1]


def test_manifest_format_needs_a_manifest() -> None:
    with pytest.raises(DatasetError, match=r"needs data\.manifest"):
        DATA_FORMATS.build("manifest", ReadRequest(root="."))


# --------------------------------------------------------------------------- UCMD multi-label


def test_ucmd_multilabel_reads_the_table_beside_images(tmp_path: Path) -> None:
    rows = [
        ("airplane00", (1, 0, 1, 0)),
        ("airplane01", (1, 1, 0, 0)),
        ("agricultural00", (0, 1, 0, 0)),
    ]
    images = write_ucmd_multilabel(tmp_path, rows, UCMD_LABELS)
    scan = read_ucmd_multilabel(ReadRequest(root=str(images)))
    assert scan.class_names == UCMD_LABELS
    assert scan.paths == (
        "agricultural/agricultural00.tif",
        "airplane/airplane00.tif",
        "airplane/airplane01.tif",
    )
    np.testing.assert_array_equal(scan.labels, [[0, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0]])
    assert scan.multi_label  # stays multi-hot even if each row had one label


def test_ucmd_multilabel_table_from_data_manifest_and_bad_rows(tmp_path: Path) -> None:
    images = write_ucmd_multilabel(tmp_path, [("beach00", (0, 0, 0, 1))], UCMD_LABELS)
    table = tmp_path / "elsewhere.txt"
    table.write_text("IMAGE\\LABEL\tairplane\tbare-soil\tbuildings\tcars\nbeach00\t0\t0\t0\t2\n")
    with pytest.raises(DatasetError, match=r"elsewhere\.txt' line 2: value '2'; expected 0 or 1"):
        read_ucmd_multilabel(ReadRequest(root=str(images), manifest=str(table)))
    table.write_text("IMAGE\\LABEL\tairplane\tbare-soil\tbuildings\tcars\nbeach00\t0\t0\n")
    with pytest.raises(DatasetError, match="line 2: 3 field"):
        read_ucmd_multilabel(ReadRequest(root=str(images), manifest=str(table)))
    table.write_text("IMAGE\\LABEL\tairplane\tbare-soil\tbuildings\tcars\nbeach00\t0\t0\t0\t0\n")
    with pytest.raises(DatasetError, match="expected at least one 1"):
        read_ucmd_multilabel(ReadRequest(root=str(images), manifest=str(table)))


def test_ucmd_multilabel_missing_table_and_missing_image(tmp_path: Path) -> None:
    images = write_ucmd_multilabel(
        tmp_path, [("beach00", (1, 0, 0, 1)), ("beach01", (1, 0, 0, 1))], UCMD_LABELS
    )
    (images / "beach" / "beach01.tif").unlink()
    scan = read_ucmd_multilabel(ReadRequest(root=str(images)))
    assert scan.paths == ("beach/beach00.tif",)
    assert scan.skipped[0].path == "beach/beach01.tif"
    assert "file not found" in scan.skipped[0].reason
    with pytest.raises(BadImageError, match="beach01"):
        read_ucmd_multilabel(ReadRequest(root=str(images), on_bad_image="error"))
    (tmp_path / "UCMerced_LandUse" / "LandUse_Multilabeled.txt").unlink()
    with pytest.raises(DatasetError, match=r"No LandUse_Multilabeled\.txt found"):
        read_ucmd_multilabel(ReadRequest(root=str(images)))


# --------------------------------------------------------------------------- MLRSNet

MLRS_LABELS = ("airplane", "airport", "bare soil")


def test_mlrsnet_reads_every_category_table(tmp_path: Path) -> None:
    root = write_mlrsnet(
        tmp_path / "MLRSNet",
        {
            "airplane": [("airplane_00001.jpg", (1, 1, 0)), ("airplane_00002.jpg", (1, 0, 0))],
            "bareland": [("bareland_00001.jpg", (0, 0, 1))],
        },
        MLRS_LABELS,
    )
    scan = read_mlrsnet(ReadRequest(root=str(root)))
    assert scan.class_names == MLRS_LABELS
    assert scan.paths == (
        "Images/airplane/airplane_00001.jpg",
        "Images/airplane/airplane_00002.jpg",
        "Images/bareland/bareland_00001.jpg",
    )
    np.testing.assert_array_equal(scan.labels, [[1, 1, 0], [1, 0, 0], [0, 0, 1]])


def test_mlrsnet_errors_name_the_table(tmp_path: Path) -> None:
    root = write_mlrsnet(
        tmp_path / "M", {"airplane": [("airplane_00001.jpg", (1, 0, 0))]}, MLRS_LABELS
    )
    (root / "Labels" / "ghost.csv").write_text("image,airplane,airport,bare soil\n")
    with pytest.raises(DatasetError, match=r"ghost\.csv' has no image folder"):
        read_mlrsnet(ReadRequest(root=str(root)))
    (root / "Labels" / "ghost.csv").write_text("image,airplane,airport\n")
    with pytest.raises(DatasetError, match=r"ghost\.csv' line 1: label columns differ"):
        read_mlrsnet(ReadRequest(root=str(root)))
    (root / "Labels" / "ghost.csv").unlink()
    (root / "Labels" / "airplane.csv").write_text(
        "image,airplane,airport,bare soil\nairplane_00001.jpg,1,x,0\n"
    )
    with pytest.raises(DatasetError, match=r"airplane\.csv' line 2: value 'x'"):
        read_mlrsnet(ReadRequest(root=str(root)))
    with pytest.raises(DatasetError, match="needs the folders 'Images' and 'Labels'"):
        read_mlrsnet(ReadRequest(root=str(tmp_path)))


# --------------------------------------------------------------------------- BigEarthNet


def _reference_rgb(red, green, blue, low=0.0, high=3000.0) -> np.ndarray:
    stack = np.stack([red, green, blue], axis=-1).astype(np.float64)
    return np.rint(np.clip((stack - low) / (high - low), 0, 1) * 255).astype(np.uint8)


def test_scale_reflectance_against_the_formula() -> None:
    x = np.array([[[-5.0, 0.0, 1500.0, 3000.0, 9000.0]]])
    np.testing.assert_array_equal(scale_reflectance(x)[0, 0], [0, 0, 128, 255, 255])
    np.testing.assert_array_equal(scale_reflectance(x, (0, 10000))[0, 0], [0, 0, 38, 76, 230])
    with pytest.raises(DatasetError, match="low < high"):
        scale_reflectance(x, (5, 5))


def test_compose_true_colour_and_resample_20m(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    bands = {b: rng.integers(0, 5000, (120, 120)).astype(np.uint16) for b in ("B02", "B03", "B04")}
    bands["B8A"] = np.full((60, 60), 1200, np.uint16)
    folder = write_bigearthnet_patch(tmp_path, "S2A_patch_1", ["Forest"], values=bands)
    rgb = compose_bands(folder)
    np.testing.assert_array_equal(rgb, _reference_rgb(bands["B04"], bands["B03"], bands["B02"]))
    mixed = compose_bands(folder, ("B8A", "B03", "B02"), (0, 10000))
    assert mixed.shape == (120, 120, 3)  # the 60 px band is resampled to the 10 m grid
    assert np.all(mixed[..., 0] == round(1200 / 10000 * 255))
    np.testing.assert_array_equal(
        mixed[..., 1:], _reference_rgb(bands["B03"], bands["B02"], bands["B02"], 0, 10000)[..., :2]
    )


def test_read_bigearthnet_writes_chips_once(tmp_path: Path) -> None:
    root = tmp_path / "BigEarthNet-v1.0"
    write_bigearthnet_patch(root, "S2A_p1", ["Pastures", "Coniferous forest"], seed=1)
    write_bigearthnet_patch(root, "S2A_p2", ["Pastures"], seed=2)
    write_bigearthnet_patch(root, "S2B_p3", ["Pastures"], seed=3, skip_bands=("B03",))
    request = ReadRequest(root=str(root), cache_dir=str(tmp_path / "chips"))
    scan = read_bigearthnet(request)
    assert scan.class_names == ("Coniferous forest", "Pastures")
    np.testing.assert_array_equal(scan.labels, [[1, 1], [0, 1]])
    assert scan.paths == ("S2A_p1.png", "S2A_p2.png")
    assert [s.path for s in scan.skipped] == ["S2B_p3"]
    assert "S2B_p3_B03.tif" in scan.skipped[0].reason
    chip = Path(scan.root) / "S2A_p1.png"
    assert Path(scan.root).parent == tmp_path / "chips"
    np.testing.assert_array_equal(np.asarray(Image.open(chip)), compose_bands(root / "S2A_p1"))
    stamp = chip.stat().st_mtime_ns
    os.utime(chip, ns=(stamp + 10**9, stamp + 10**9))
    again = read_bigearthnet(request)
    assert again == scan and chip.stat().st_mtime_ns == stamp + 10**9  # re-used, not rewritten
    band = root / "S2A_p1" / "S2A_p1_B04.tif"
    os.utime(band, ns=(stamp + 2 * 10**9, stamp + 2 * 10**9))  # a band newer than its chip
    read_bigearthnet(request)
    assert chip.stat().st_mtime_ns != stamp + 10**9  # composed again
    write_bigearthnet_patch(root, "S2B_p4", ["Sea and ocean"], seed=4, skip_bands=("B04",))
    with pytest.raises(DatasetError, match="label 'Sea and ocean' has no valid patch"):
        read_bigearthnet(request)
    custom = ReadRequest(
        root=str(root), cache_dir=str(tmp_path / "chips"), band_scale=lambda x: x / 40
    )
    with pytest.raises(DatasetError, match="needs a band_scale_key"):
        read_bigearthnet(custom)
    with pytest.raises(BadImageError, match="S2B_p3"):
        read_bigearthnet(
            ReadRequest(root=str(root), cache_dir=str(tmp_path / "c2"), on_bad_image="error")
        )
