"""The CLI: ``index build|search|info`` and ``query --index``, run through hpsh_tf2.cli.main."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pymilvus", reason="the index extra is not installed (pip install .[index])")

from hpsh_tf2.cli import main
from hpsh_tf2.config import ConfigError, load_config


def test_cli_build_search_info_and_query_index(tmp_path, tiny_export, small_archive, capsys):
    common = ["--set", f"output.workdir={tmp_path}"]
    status = main(["index", "build", "--model", str(tiny_export), "--images", str(small_archive),
                   "--quiet", *common])  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    assert "20 added" in out and f"{tmp_path / 'index.db'}" in out

    query = sorted((small_archive / "Beach").iterdir())[2]
    rel = query.relative_to(small_archive).as_posix()
    grid = tmp_path / "grid.png"
    status = main(["index", "search", "--image", str(query), "--top", "3", "--out", str(grid),
                   *common])  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    table = [line.split() for line in out.splitlines()[2:-1]]
    assert out.splitlines()[-1] == f"wrote {grid}"
    assert [row[0] for row in table] == ["1", "2", "3"]
    assert [row[4] for row in table if row[1] == "0"].count(rel) == 1  # itself, at distance 0
    assert grid.is_file() and grid.stat().st_size > 0

    klass = rel.split("/")[0]
    other = sorted(p.name for p in small_archive.iterdir() if p.name != klass)[0]
    status = main(["index", "search", "--image", str(query), "--filter", f'class == "{other}"',
                   *common])  # fmt: skip
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines()[2:] if line.strip()]
    assert status == 0 and len(rows) == 5 and all(f"{other}/" in line for line in rows)

    assert main(["index", "info", "--json", *common]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 20 and info["model"]["bits"] == 32
    assert info["last_build"]["added"] == 20

    assert main(["query", "--index", "--image", str(query), "--top", "2", *common]) == 0
    out = capsys.readouterr().out
    assert "index" in out and rel in out


def test_cli_errors_are_one_line(tmp_path, tiny_export, capsys):
    status = main(["index", "info", "--set", f"output.workdir={tmp_path}"])
    assert status == 2
    assert "no index at" in capsys.readouterr().err


def test_index_config_section_is_validated():
    config = load_config(None, ["index.uri=http://milvus:19530", "index.batch_size=128"])
    assert (config.index.uri, config.index.batch_size) == ("http://milvus:19530", 128)
    with pytest.raises(ConfigError, match=r"index\.collection"):
        load_config(None, ["index.collection=1-bad"])
    with pytest.raises(ConfigError, match=r"index\.index_type"):
        load_config(None, ["index.index_type=HNSW"])
