"""`prepare` on multi-label data: a manifest and the BigEarthNet reader, through the CLI."""

from __future__ import annotations

import json

import numpy as np

from hpsh_tf2 import cli
from tests.conftest import REPO_ROOT
from tests.data.conftest import noisy_rgb, write_bigearthnet_patch, write_image

LABELS = ("Forest", "River", "Road")


def _manifest_tree(root, n=30, seed=0):
    rng = np.random.default_rng(seed)
    rows = ["path,labels"]
    for i in range(n):
        write_image(root / "tiles" / f"t{i:03d}.png", noisy_rgb(8, 8, i))
        hot = rng.random(3) < (0.7, 0.4, 0.3)
        hot[i % 3] = True
        rows.append(f"tiles/t{i:03d}.png," + ";".join(n for n, h in zip(LABELS, hot) if h))
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def _prepare(tmp_path, *sets):
    argv = ["prepare", "--config", str(REPO_ROOT / "ucmd.yaml")]
    for item in (*sets, f"output.workdir={tmp_path / 'work'}"):
        argv += ["--set", item]
    return cli.main(argv)


def test_prepare_multi_label_manifest_prints_a_per_label_table(tmp_path, capsys):
    manifest = _manifest_tree(tmp_path / "data")
    with manifest.open("a") as handle:
        handle.write("tiles/gone.png,River;Road\n")  # missing: skipped, counted per label
    sets = (f"data.root={tmp_path / 'data'}", f"data.manifest={manifest}")
    assert (
        _prepare(
            tmp_path, *sets, "data.split.train=0.5", "data.split.val=0.2", "data.split.test=0.3"
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["label", "train", "val", "test", "skipped"]
    split = json.loads((tmp_path / "work" / "split.json").read_text())
    assert split["multi_label"] is True and split["class_names"] == list(LABELS)
    sizes = [len(split["subsets"][s]["paths"]) for s in ("train", "val", "test")]
    images_row = next(line for line in out if line.startswith("images"))
    assert images_row.split() == ["images", *map(str, sizes), "1"]
    rows = {line.split()[0]: line.split()[-1] for line in out[2:5]}
    assert rows == {"Forest": "0", "River": "1", "Road": "1"}
    assert sum(sizes) == 30
    assert (
        _prepare(
            tmp_path, *sets, "data.split.train=0.5", "data.split.val=0.2", "data.split.test=0.3"
        )
        == 0
    )
    assert "re-used" in capsys.readouterr().out


def test_prepare_bigearthnet_composes_chips_in_the_workdir(tmp_path, capsys):
    root = tmp_path / "BigEarthNet-v1.0"
    for i in range(6):
        write_bigearthnet_patch(
            root, f"S2A_p{i}", ["Pastures", "Water bodies"][: 1 + i % 2], seed=i
        )
    assert _prepare(tmp_path, f"data.root={root}", "data.format=bigearthnet") == 0
    assert "Water bodies" in capsys.readouterr().out
    chips = sorted((tmp_path / "work" / "chips").rglob("*.png"))
    assert [c.name for c in chips] == [f"S2A_p{i}.png" for i in range(6)]
    split = json.loads((tmp_path / "work" / "split.json").read_text())
    assert split["multi_label"] is True


def test_prepare_format_errors_are_one_line(tmp_path, capsys):
    assert _prepare(tmp_path, f"data.root={tmp_path}", "data.format=manifest") == 2
    err = capsys.readouterr().err
    assert "data.format: manifest' needs 'data.manifest'" in err and "Traceback" not in err
    assert _prepare(tmp_path, f"data.root={tmp_path}", "data.format=tiles") == 2
    assert "'folders', 'manifest', 'bigearthnet'" in capsys.readouterr().err
    assert _prepare(tmp_path, "data.manifest=m.csv", "data.format=mlrsnet") == 2
    assert "Received: format='mlrsnet'" in capsys.readouterr().err
    assert _prepare(tmp_path, "data.root=null", "data.manifest=m.csv", "data.features=f.npz") == 2
    assert "set only one of 'data.manifest'" in capsys.readouterr().err
    bad = tmp_path / "m.csv"
    bad.write_text("path,labels\nimg.png\n")
    assert _prepare(tmp_path, f"data.root={tmp_path}", f"data.manifest={bad}") == 2
    err = capsys.readouterr().err
    assert f"Manifest '{bad}' line 2" in err and len(err.strip().splitlines()) == 1
