"""One writer per index, readers alongside it and in a read-only folder (issue 23 item 3).

A real second process runs ``index build`` and pauses after its first batch; while it holds the
index, a second build here fails at once naming it, and ``index info`` / ``index search`` read.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("pymilvus", reason="the index extra is not installed (pip install .[index])")

from hpsh_tf2.cli import main
from tests.conftest import REPO_ROOT
from tests.index.conftest import read_only_folder

_PAUSED_BUILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from hpsh_tf2.index.build import build_index

    ready, go = Path(sys.argv[4] + "/ready"), Path(sys.argv[4] + "/go")

    def pause(written):
        ready.write_text(str(written))
        deadline = time.monotonic() + 240
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    report = build_index(sys.argv[1], sys.argv[2], uri=sys.argv[3], batch_size=4,
                         progress=False, workdir=sys.argv[4], on_batch=pause)
    print("rows", report.rows)
    """
)


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def test_second_writer_fails_at_once_while_readers_read(tmp_path, tiny_export, small_archive):
    work = tmp_path / "work"
    work.mkdir()
    uri = str(work / "index.db")
    common = ["--uri", uri, "--set", f"output.workdir={work}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO_ROOT)}
    writer = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_BUILD, str(tiny_export), str(small_archive), uri,
         str(work)],
        env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (work / "ready").exists():
            assert writer.poll() is None, writer.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the writer never reached its first batch"
            time.sleep(0.2)

        started = time.monotonic()
        status, out, err = _cli("index", "build", "--model", str(tiny_export), "--images",
                                str(small_archive), "--quiet", *common)  # fmt: skip
        assert status == 2, out + err
        assert time.monotonic() - started < 30  # no waiting for the writer
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert f"PID {writer.pid}" in lines[0] and "being written" in lines[0]

        status, out, err = _cli("index", "info", "--json", *common)
        assert status == 0, err
        assert json.loads(out)["rows"] >= 4  # at least the first batch
        query = sorted((small_archive / "Beach").iterdir())[0]
        status, out, err = _cli("index", "search", "--image", str(query), "--top", "3", *common)
        assert status == 0, err
        assert len(out.strip().splitlines()) == 5  # title, header, 3 rows
    finally:
        (work / "go").write_text("")
        stdout, stderr = writer.communicate(timeout=300)
    assert writer.returncode == 0, stderr.decode()[-2000:]
    assert "rows 20" in stdout.decode()

    # readers in a read-only folder (nothing can be created beside the index there)
    shared = tmp_path / "shared"
    shared.mkdir()
    for name in ("index.db", "index.db.build.json"):
        shutil.copy2(work / name, shared / name)
    with read_only_folder(shared) as view:
        ro = ["--uri", str(view / "index.db"), "--set", f"output.workdir={tmp_path / 'other'}"]
        status, out, err = _cli("index", "info", "--json", *ro)
        assert status == 0, err
        assert json.loads(out)["rows"] == 20
        status, out, err = _cli("index", "search", "--image", str(query), "--top", "3", *ro)
        assert status == 0, err
        assert sorted(os.listdir(view)) == ["index.db", "index.db.build.json"]
