"""A multi-label archive index: labels from a list of images, stored as ``"A;B"`` in ``class``.

``index build --labels FILE`` (or the config's ``data.manifest``) stores each image's labels
sorted by name; unlisted files get ``""``; a changed label re-indexes the row; ``index info``
counts per label; ``--where class=Forest`` finds the rows carrying ``Forest`` on both backends
(Milvus through escape-free ``like`` patterns checked again in Python); the result grid frames
a hit green when it shares a label with the query. Milvus Lite and the memory index run for
real on small generated images.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pymilvus", reason="the index extra is not installed (pip install .[index])")

from hpsh_tf2.cli import main
from hpsh_tf2.errors import DatasetError
from hpsh_tf2.evaluation import plots
from hpsh_tf2.index.backend import ArchiveIndexError, class_matches, open_index, parse_where
from hpsh_tf2.index.build import archive_labels, build_index, index_info, label_counts_of
from hpsh_tf2.index.store import MAX_CLASS_BYTES, milvus_filter
from hpsh_tf2.ops.codes import np_pack_codes
from tests.conftest import scene_image
from tests.index.conftest import random_codes
from tests.index.test_store import _record
from tests.test_query_output import _count

BACKENDS = ("milvus", "memory")
URIS = {"milvus": "index.db", "memory": "index.npz"}

LABELS = {
    "tiles/a.png": ["River", "Forest"],  # stored sorted: Forest;River
    "tiles/b.png": ["Forest"],
    "tiles/c.png": ["Beach"],
    "tiles/d.png": ["Beach", "Forest"],
    "other/e.png": ["Port"],
}
UNLISTED = "other/f.png"


@pytest.fixture
def ml_archive(tmp_path) -> Path:
    """Six generated PNG tiles under ``archive/``; five listed in ``labels.csv``."""
    root = tmp_path / "archive"
    for i, rel in enumerate([*LABELS, UNLISTED]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scene_image(i % 4, i, size=32)).save(root / rel)
    _write_csv(tmp_path / "labels.csv", LABELS)
    return root


def _write_csv(path: Path, labels: dict[str, list[str]]) -> Path:
    lines = ["path,labels", *(f"{p},{';'.join(names)}" for p, names in labels.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _rows(backend: str, uri: Path) -> dict[str, str]:
    with open_index(backend, str(uri), "hpsh", read_only=True) as index:
        return index.row_classes()


# --------------------------------------------------------------------------- build


@pytest.mark.parametrize("backend", BACKENDS)
def test_build_stores_sorted_labels_and_relabels_changed_rows(
    tmp_path, tiny_export, ml_archive, backend
):
    uri = tmp_path / URIS[backend]
    labels = tmp_path / "labels.csv"

    def build():
        return build_index(tiny_export, ml_archive, uri=str(uri), backend=backend,
                           labels=labels, workdir=tmp_path, progress=False)  # fmt: skip

    first = build()
    assert (first.added, first.rows) == (6, 6)
    assert first.labels.listed == 5 and first.labels.unlisted == 1
    assert first.labels.missing == 0 and first.labels.relabelled == 0
    assert "1 not listed" in first.summary()
    rows = _rows(backend, uri)
    assert rows["tiles/a.png"] == "Forest;River" and rows["tiles/d.png"] == "Beach;Forest"
    assert rows[UNLISTED] == ""  # not in the list: no labels, not the folder name

    again = build()
    assert (again.added, again.updated, again.unchanged) == (0, 0, 6)

    # b gains a label, e is dropped from the list, a listed file that does not exist
    changed = {**LABELS, "tiles/b.png": ["Forest", "Beach"], "gone.png": ["Port"]}
    del changed["other/e.png"]
    _write_csv(labels, changed)
    third = build()
    assert (third.added, third.updated, third.unchanged) == (0, 2, 4)
    assert third.labels.relabelled == 2 and third.labels.missing == 1
    rows = _rows(backend, uri)
    assert rows["tiles/b.png"] == "Beach;Forest" and rows["other/e.png"] == ""

    info = index_info(str(uri), backend=backend, workdir=tmp_path)
    assert info["classes"] == {"": 2, "Beach": 3, "Forest": 3, "River": 1}
    assert info["last_build"]["labels"]["relabelled"] == 2

    # building without the list again restores the folder classes (labels changed again)
    fourth = build_index(tiny_export, ml_archive, uri=str(uri), backend=backend,
                         workdir=tmp_path, progress=False)  # fmt: skip
    assert fourth.updated == 6 and fourth.labels is None
    assert set(_rows(backend, uri).values()) == {"tiles", "other"}


def test_label_text_is_sorted_trimmed_to_whole_labels_and_refuses_the_separator(tmp_path, caplog):
    long = [f"label{i:03d}_" + "x" * 40 for i in range(20)]  # about 1000 bytes together
    path = _write_csv(tmp_path / "l.csv", {"a.png": ["b", "a"], "long.png": long})
    with caplog.at_level(logging.WARNING):
        labels = archive_labels(path)
    assert labels.text["a.png"] == "a;b"
    kept = labels.text["long.png"]
    assert len(kept.encode()) <= MAX_CLASS_BYTES and kept.split(";") == sorted(long)[:10]
    assert labels.trimmed == ("long.png",) and "longer than 512 bytes" in caplog.text

    jsonl = tmp_path / "l.jsonl"
    jsonl.write_text(json.dumps({"path": "a.png", "labels": ["Forest;River"]}) + "\n")
    with pytest.raises(ArchiveIndexError, match=r"l\.jsonl:1: label 'Forest;River' holds ';'"):
        archive_labels(jsonl)
    with pytest.raises(DatasetError, match="does not exist"):
        archive_labels(tmp_path / "missing.csv")


def test_info_counts_each_label_of_a_row():
    assert label_counts_of({"A;B": 2, "A": 1, "": 4}) == {"A": 3, "B": 2, "": 4}
    assert label_counts_of({"Airport": 5}) == {"Airport": 5}


# --------------------------------------------------------------------------- filters

FILTER_ROWS = [
    "Forest", "Forest;River", "Beach;Forest", "A;Forest;Z", "Forestry", "Rain Forest",
    "a_b;X", "axb;X", "50%", "500", 'q"uo;Forest', "back\\slash", "",
    "new\nline;森林", "x\" or class != \"", "{}", "bell\x07\ttab;X",
]  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Forest", {"Forest", "Forest;River", "Beach;Forest", "A;Forest;Z", 'q"uo;Forest'}),
        ("Forest;River", {"Forest;River"}),  # text with ';' matches the whole text only
        ("a_b", {"a_b;X"}),  # '_' is no wildcard
        ("50%", {"50%"}),
        ('q"uo', {'q"uo;Forest'}),
        ("back\\slash", {"back\\slash"}),
        ("", {""}),
        (["River", "Beach"], {"Forest;River", "Beach;Forest"}),
        ("new\nline", {"new\nline;森林"}),
        ("森林", {"new\nline;森林"}),
        ('x" or class != "', {'x" or class != "'}),  # looks like an expression: a value
        ("{}", {"{}"}),
        ("bell\x07\ttab", {"bell\x07\ttab;X"}),  # control characters
        ("new\nline;森林", {"new\nline;森林"}),  # the whole text, escaped by milvus_literal
    ],
)
def test_class_filter_matches_one_label_on_every_backend(tmp_path, backend, value, expected):
    uri = tmp_path / URIS[backend]
    codes = random_codes(len(FILTER_ROWS), 16, seed=3)
    paths = [f"{i:02d}.png" for i in range(len(FILTER_ROWS))]
    with open_index(backend, str(uri), "c") as index:
        index.open_for(_record(16))
        index.upsert(paths, np_pack_codes(codes), FILTER_ROWS, [1] * len(paths), [0] * len(paths))
        hits = index.search(np_pack_codes(codes[:1]), top=50, filters={"class": value})[0]
    assert {h.class_name for h in hits} == expected
    values = value if isinstance(value, list) else [value]
    assert all(any(class_matches(h.class_name, v) for v in values) for h in hits)


def test_milvus_class_filter_splices_no_escape_and_searches_deeper(tmp_path):
    expression = milvus_filter({"class": 'a_b"%\\'})
    likes = expression.split(" or ")[1:]  # the == clause escapes with milvus_literal
    assert likes and not any("\\" in like for like in likes)
    assert 'class like "a_b___;%"' in expression
    assert milvus_filter({"class": "Forest;River"}) == 'class == "Forest;River"'
    # 40 near rows that the like pattern of "a_b" also matches, 3 far rows that carry a_b
    codes = np.zeros((43, 16), np.uint8)
    codes[40:] = 1
    classes = ["axb;X"] * 40 + ["a_b;X"] * 3
    with open_index("milvus", str(tmp_path / "index.db"), "c") as index:
        index.open_for(_record(16))
        index.upsert([f"{i:02d}" for i in range(43)], np_pack_codes(codes), classes,
                     [1] * 43, [0] * 43)  # fmt: skip
        hits = index.search(np_pack_codes(codes[:1]), top=2, filters=parse_where(["class=a_b"]))
    assert [h.class_name for h in hits[0]] == ["a_b;X", "a_b;X"]


# --------------------------------------------------------------------------- CLI


def test_cli_labels_search_grid_colours_and_info(tmp_path, tiny_export, ml_archive, capsys):
    common = ["--set", f"output.workdir={tmp_path}", "--set", "index.backend=memory"]
    assert main(["index", "build", "--model", str(tiny_export), "--images", str(ml_archive),
                 "--labels", str(tmp_path / "labels.csv"), "--quiet", *common]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "labels from" in out and "5 files listed, 1 not listed" in out

    query = ml_archive / "tiles" / "a.png"  # listed: Forest;River
    grid = tmp_path / "grid.png"
    assert main(["index", "search", "--image", str(query), "--top", "6", "--out", str(grid),
                 *common]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "Forest;River" in out and "Beach;Forest" in out
    # Forest;River shares a label with a, b, d (green); not with c, e, f (red)
    assert _count(grid, plots._GREEN) > 100 and _count(grid, plots._RED) > 100

    assert main(["index", "search", "--image", str(query), "--where", "class=Forest",
                 "--top", "6", *common]) == 0  # fmt: skip
    table = [line.split() for line in capsys.readouterr().out.splitlines()[2:] if line.strip()]
    assert sorted(row[4] for row in table) == ["tiles/a.png", "tiles/b.png", "tiles/d.png"]

    outside = tmp_path / "mine.png"  # not under the archive: labels unknown, grey frames
    Image.fromarray(scene_image(1, 9, size=32)).save(outside)
    assert main(["query", "--index", "--image", str(outside), "--top", "4", "--out",
                 str(grid), *common]) == 0  # fmt: skip
    capsys.readouterr()
    assert _count(grid, plots._GREEN) == 0 and _count(grid, plots._GREY, tolerance=10) > 100
    assert main(["query", "--index", "--image", str(outside), "--top", "6", "--out", str(grid),
                 "--query-labels", "Port", *common]) == 0  # fmt: skip
    capsys.readouterr()
    assert _count(grid, plots._GREEN) > 100  # other/e.png is Port

    assert main(["index", "info", *common]) == 0
    out = capsys.readouterr().out
    assert "(none): 1" in out and "Forest: 3" in out and "an image counts once per label" in out


def test_cli_takes_the_configs_manifest_only_for_its_data_root(
    tmp_path, tiny_export, ml_archive, capsys
):
    manifest = tmp_path / "labels.csv"
    common = ["--set", f"output.workdir={tmp_path}", "--set", "index.backend=memory",
              "--set", f"data.root={ml_archive}", "--set", f"data.manifest={manifest}"]  # fmt: skip
    assert main(["index", "build", "--model", str(tiny_export), "--images", str(ml_archive),
                 "--quiet", *common]) == 0  # fmt: skip
    assert f"labels from {manifest}" in capsys.readouterr().out
    assert _rows("memory", tmp_path / "index.npz")["tiles/a.png"] == "Forest;River"

    other = tmp_path / "other-archive"
    (other / "Airport").mkdir(parents=True)
    Image.fromarray(scene_image(0, 0, size=32)).save(other / "Airport" / "x.png")
    assert main(["index", "build", "--model", str(tiny_export), "--images", str(other),
                 "--quiet", "--prune", "--uri", str(tmp_path / "b.npz"), *common]) == 0  # fmt: skip
    assert "labels: the first folder" in capsys.readouterr().out
    assert _rows("memory", tmp_path / "b.npz") == {"Airport/x.png": "Airport"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_path_filter_with_control_characters_finds_the_file(tmp_path, backend):
    """``--where path=...`` for a file name holding a newline or a tab (Milvus compares no
    escaped control character: a like superset, narrowed to the exact path)."""
    paths = ["new\nline.png", "newXline.png", "tab\there.png", "plain.png"]
    codes = random_codes(len(paths), 16, seed=5)
    with open_index(backend, str(tmp_path / URIS[backend]), "c") as index:
        index.open_for(_record(16))
        index.upsert(paths, np_pack_codes(codes), [""] * 4, [1] * 4, [0] * 4)
        query = np_pack_codes(codes[:1])
        one = index.search(query, top=10, filters={"path": "new\nline.png"})[0]
        two = index.search(query, top=10, filters={"path": ["tab\there.png", "plain.png"]})[0]
    assert [h.path for h in one] == ["new\nline.png"]
    assert {h.path for h in two} == {"tab\there.png", "plain.png"}
