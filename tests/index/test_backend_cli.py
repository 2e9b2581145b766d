"""``index build|search|info`` and ``query --index`` with other backends than Milvus: the
in-memory one (``index.backend=memory``, an ``.npz`` between CLI calls) and a toy backend
registered by a plugin module from outside the package (``--plugin tests.plugins.toy_index``)."""

from __future__ import annotations

import json

import pytest

from hpsh_tf2.cli import main


def _search_rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()[2:] if line.strip()]


@pytest.mark.parametrize("backend", ["memory", "toy_dict"])
def test_index_verbs_through_a_registered_backend(
    backend, tmp_path, tiny_export, small_archive, capsys, toy_plugin_unloaded
):
    plugin = ["--plugin", "tests.plugins.toy_index"] if backend == "toy_dict" else []
    common = ["--set", f"output.workdir={tmp_path}", "--set", f"index.backend={backend}"]
    status = main([*plugin, "index", "build", "--model", str(tiny_export), "--images",
                   str(small_archive), "--quiet", *common])  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    assert "20 added" in out
    if backend == "memory":
        assert (tmp_path / "index.npz").is_file()

    (
        small_archive / "Beach" / sorted(p.name for p in (small_archive / "Beach").iterdir())[0]
    ).unlink()
    assert main([*plugin, "index", "build", "--model", str(tiny_export), "--images",
                 str(small_archive), "--quiet", *common]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "1 removed" in out and "19 unchanged" in out and ": 19 images" in out

    query = sorted((small_archive / "Beach").iterdir())[1]
    rel = query.relative_to(small_archive).as_posix()
    assert main([*plugin, "index", "search", "--image", str(query), "--top", "10", *common]) == 0
    rows = _search_rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == [str(i) for i in range(1, 11)]
    assert [int(row[1]) for row in rows] == sorted(int(row[1]) for row in rows)
    assert any(rel in row for row in rows if row[1] == "0")  # itself, at distance 0

    other = sorted(p.name for p in small_archive.iterdir() if p.name != "Beach")[0]
    assert main([*plugin, "index", "search", "--image", str(query), "--where",
                 f"class={other}", *common]) == 0  # fmt: skip
    rows = _search_rows(capsys.readouterr().out)
    assert len(rows) == 5 and all(f"{other}/" in " ".join(row) for row in rows)

    assert main([*plugin, "index", "info", "--json", *common]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backend"] == backend and info["rows"] == 19
    assert sum(info["classes"].values()) == 19 and info["model"]["bits"] == 32

    assert main([*plugin, "query", "--index", "--image", str(query), "--top", "2", *common]) == 0
    assert rel in capsys.readouterr().out


def test_memory_backend_refuses_a_milvus_filter_in_one_line(
    tmp_path, tiny_export, small_archive, capsys
):
    common = ["--set", f"output.workdir={tmp_path}", "--set", "index.backend=memory"]
    assert main(["index", "build", "--model", str(tiny_export), "--images", str(small_archive),
                 "--quiet", *common]) == 0  # fmt: skip
    capsys.readouterr()
    query = next((small_archive / "Beach").iterdir())
    status = main(["index", "search", "--image", str(query), "--filter", 'class == "x"', *common])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1
    assert "search option(s) filter with index.backend=memory" in err and "--where" in err


def test_unknown_index_backend_lists_the_registered_ones(tmp_path, capsys):
    status = main(["index", "info", "--set", "index.backend=sqlite"])
    err = capsys.readouterr().err
    assert status == 2 and "'index.backend'" in err and "'milvus', 'memory'" in err
