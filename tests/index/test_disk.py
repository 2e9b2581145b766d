"""Undecodable archive files and a full disk under ``index build`` (issue 23 item 5): one line
each, naming the file and the cause."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("pymilvus", reason="the index extra is not installed (pip install .[index])")

from hpsh_tf2.cli import main
from hpsh_tf2.index.encoder import SavedModelEncoder
from tests.conftest import REPO_ROOT


def _bad_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("these are not pixels\n")
    return folder / "empty.jpg", folder / "text.jpg"


def test_encoder_names_empty_and_undecodable_files(tmp_path, tiny_export, aid_root):
    empty, text = _bad_files(tmp_path)
    good = sorted(next(p for p in sorted(aid_root.iterdir()) if p.is_dir()).iterdir())[0]
    result = SavedModelEncoder(tiny_export).encode_files([empty, good, text])
    assert result.ok == (1,) and result.packed.shape == (1, 4)
    reasons = dict(result.bad)
    assert reasons[0] == f"cannot decode {empty}: empty file"
    assert reasons[2].startswith(f"cannot decode {text}: ") and "Assert" not in reasons[2]
    assert "\n" not in reasons[2]


@contextlib.contextmanager
def _tmpfs(folder, size: str):
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(folder)], capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder) -> None:
    """Writes a file in ``folder`` until the file system is full."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 512):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)


def test_build_on_a_full_disk_says_so_in_one_line(tmp_path, tiny_export, small_archive, aid_root):
    empty, text = _bad_files(small_archive / "Beach")
    with _tmpfs(tmp_path / "disk", "8m") as disk:
        uri = str(disk / "index.db")
        work = f"output.workdir={tmp_path / 'work'}"
        argv = ["index", "build", "--model", str(tiny_export), "--images", str(small_archive),
                "--quiet", "--uri", uri, "--set", work]  # fmt: skip
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            assert main(argv) == 0, err.getvalue()
        summary = out.getvalue()
        assert "20 added" in summary and "2 skipped" in summary
        assert f"skipped Beach/empty.jpg: cannot decode {empty}: empty file" in summary
        assert f"skipped Beach/text.jpg: cannot decode {text}: " in summary
        assert "Assert" not in summary

        extra = sorted(p for p in aid_root.iterdir() if p.is_dir())[10]
        shutil.copytree(extra, small_archive / extra.name)
        _fill(disk)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO_ROOT)}
        proc = subprocess.run([sys.executable, "cli.py", *argv], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        # the index file or the build status beside it, whichever write failed first
        assert len(errors) == 1 and errors[0].startswith(f"error: disk full writing {disk}/")

        # space freed: the next build completes the index (nothing lost, nothing twice)
        (disk / "filler").unlink()
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            assert main(argv) == 0
        assert ": 30 images" in out.getvalue(), out.getvalue()
