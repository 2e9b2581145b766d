"""Hostile file and class names through every index verb (issue 23 items 1-2).

One archive whose folder and file names hold ``'``, ``"``, ``\\``, a newline, ``%``, ``{}``,
unicode and one that looks like a filter expression is indexed once; a file with a newline in
its name is then deleted and the index rebuilt. Every verb (``index build``, ``index search``,
``index info``, ``query --index``) must keep working and return the names unchanged.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest

pytest.importorskip("pymilvus", reason="the index extra is not installed (pip install .[index])")

from hpsh_tf2.cli import main
from hpsh_tf2.index.build import search_images
from hpsh_tf2.index.store import IndexStore

EXPRESSION = 'x" or path != "'
CLASSES = ("John's", "森林", EXPRESSION, "plain")
FILES = (
    "John's beach.jpg",
    'a"b.jpg',
    "back\\slash.jpg",
    "new\nline.jpg",
    "two\nlines.jpg",
    "50%.jpg",
    "{}.jpg",
    "é.jpg",
    f"{EXPRESSION}.jpg",
    "x' or path != '.jpg",
)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, tiny_export, aid_root):
    """The archive, the CLI's common options and the outputs of the two builds."""
    tmp = tmp_path_factory.mktemp("names")
    root = tmp / "archive"
    first_class = sorted(q for q in aid_root.iterdir() if q.is_dir())[0]
    sources = sorted(first_class.iterdir())
    position = 0
    for klass in CLASSES:
        (root / klass).mkdir(parents=True)
        for name in FILES[:3] if klass == "plain" else FILES:
            shutil.copy2(sources[position % len(sources)], root / klass / name)
            position += 1
    common = ["--set", f"output.workdir={tmp / 'work'}"]
    capsys_out = {}

    def run(*argv):
        out = io.StringIO()
        err = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main([*argv, *common])
        return status, out.getvalue(), err.getvalue()

    capsys_out["first"] = run(
        "index", "build", "--model", str(tiny_export), "--images", str(root), "--quiet"
    )
    (root / "John's" / "new\nline.jpg").unlink()
    capsys_out["second"] = run(
        "index", "build", "--model", str(tiny_export), "--images", str(root), "--quiet"
    )
    rels = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    return {"root": root, "run": run, "builds": capsys_out, "rels": rels, "tmp": tmp}


def test_build_indexes_every_hostile_name_and_rebuilds_after_a_newline_file_is_deleted(hostile):
    status, out, err = hostile["builds"]["first"]
    assert status == 0, err
    total = len(hostile["rels"]) + 1
    assert f"{total} added" in out and "0 skipped" in out
    status, out, err = hostile["builds"]["second"]
    assert status == 0, err
    assert "1 removed" in out and f"{total - 1} unchanged" in out
    with IndexStore(str(hostile["tmp"] / "work" / "index.db")) as store:
        stored = {row["path"] for row in store.iter_rows(("path",))}
    assert stored == set(hostile["rels"])


def test_search_returns_each_hostile_name_intact(hostile, tiny_export):
    root, rels = hostile["root"], hostile["rels"]
    uri = str(hostile["tmp"] / "work" / "index.db")
    hits = search_images([root / rel for rel in rels], uri=uri, top=len(rels) + 5)
    for rel, found in zip(rels, hits):
        assert len(found) == len(rels)  # every row, the deleted one gone
        assert rel in [h.path for h in found if h.distance == 0]
        assert {h.path for h in found} == set(rels)
        assert {h.class_name for h in found} == set(CLASSES)
    # the user's own filter expression still works, on a hostile class name
    status, out, err = hostile["run"](
        "index", "search", "--image", str(root / rels[0]), "--filter", 'class == "森林"'
    )
    assert status == 0, err
    assert "森林/" in out and out.count("John's/") == 1  # the query's own title line
    # each image is copied into 3-4 classes: its top 3 all tie at distance 0, and output says so
    status, out, err = hostile["run"]("index", "search", "--image", str(root / rels[0]),
                                      "--top", "3")  # fmt: skip
    assert status == 0, err
    assert "note: all 3 results tie at Hamming distance 0" in out
    status, out, err = hostile["run"]("index", "search", "--image", str(root / rels[0]),
                                      "--top", "30")  # fmt: skip
    assert status == 0 and "note:" not in out


def test_info_and_query_index_work_with_hostile_names(hostile):
    status, out, err = hostile["run"]("index", "info", "--json")
    assert status == 0, err
    info = json.loads(out)
    assert info["rows"] == len(hostile["rels"])
    assert set(info["classes"]) == set(CLASSES)
    assert info["classes"]["John's"] == len(FILES) - 1
    status, out, err = hostile["run"]("index", "info")
    assert status == 0, err
    query = hostile["root"] / EXPRESSION / f"{EXPRESSION}.jpg"
    status, out, err = hostile["run"]("query", "--index", "--image", str(query), "--top", "40")
    assert status == 0, err
    assert f"{EXPRESSION}/{EXPRESSION}.jpg" in out


def test_row_ids_are_stable_distinct_int64():
    from hpsh_tf2.index.store import row_id

    ids = [row_id(name) for name in (*FILES, *CLASSES, "", "a", "b")]
    assert len(set(ids)) == len(ids)
    assert all(isinstance(i, int) and 0 <= i < 2**63 for i in ids)
    assert row_id("John's beach.jpg") == row_id("John's beach.jpg")


def test_an_index_keyed_by_path_is_refused_in_one_line(tmp_path, tiny_export):
    """An index of the older layout (path as the primary key) is named, not half-used."""
    import pymilvus

    from hpsh_tf2.index.encoder import model_record
    from hpsh_tf2.index.store import ArchiveIndexError

    uri = str(tmp_path / "old.db")
    client = pymilvus.MilvusClient(uri=uri)
    schema = client.create_schema(auto_id=False, description=model_record(tiny_export).to_json())
    schema.add_field("path", pymilvus.DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("code", pymilvus.DataType.BINARY_VECTOR, dim=32)
    params = client.prepare_index_params()
    params.add_index(field_name="code", index_type="BIN_FLAT", metric_type="HAMMING")
    client.create_collection("hpsh", schema=schema, index_params=params)
    client.close()
    with IndexStore(uri) as store, pytest.raises(ArchiveIndexError, match="older hpsh-tf2"):
        store.record()
