"""Tests for hpsh_tf2.lock: one writer per workdir, across real processes, kill -9 included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hpsh_tf2.errors import HPSHError, WorkdirLockedError
from hpsh_tf2.lock import LOCK_NAME, holder_info, is_locked, workdir_lock
from tests.conftest import REPO_ROOT

HOLDER = """
import sys, time
from hpsh_tf2.lock import workdir_lock
with workdir_lock(sys.argv[1], command="hpsh train --config fake.yaml"):
    print("locked", flush=True)
    time.sleep(60)
"""

TRY = """
import sys
from hpsh_tf2.errors import WorkdirLockedError
from hpsh_tf2.lock import workdir_lock
try:
    with workdir_lock(sys.argv[1], command="second"):
        print("acquired", flush=True)
except WorkdirLockedError as err:
    print("refused:", err, flush=True)
    sys.exit(3)
"""


def _spawn_holder(workdir):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(workdir)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _try(workdir):
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", TRY, str(workdir)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, time.monotonic() - start


def test_second_process_fails_at_once_naming_the_holder(tmp_path):
    holder = _spawn_holder(tmp_path)
    try:
        assert is_locked(tmp_path)
        done, _ = _try(tmp_path)
        assert done.returncode == 3, done.stderr
        assert f"PID {holder.pid}" in done.stdout
        assert "hpsh train --config fake.yaml" in done.stdout
        # in this process too, without waiting
        start = time.monotonic()
        with pytest.raises(WorkdirLockedError, match=rf"PID {holder.pid}\b") as info:
            with workdir_lock(tmp_path):
                pass
        assert time.monotonic() - start < 1.0
        assert isinstance(info.value, HPSHError)
    finally:
        holder.kill()
        holder.wait()


def test_kill_9_releases_the_lock(tmp_path):
    holder = _spawn_holder(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    # the file (and its stale text) stays, but the kernel dropped the flock
    assert holder_info(tmp_path)["pid"] == holder.pid
    assert not is_locked(tmp_path)
    done, _ = _try(tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "acquired", done.stdout + done.stderr


def test_lock_records_this_process_and_is_reentrant(tmp_path):
    with workdir_lock(tmp_path / "run", command="hpsh run") as path:
        assert path.name == LOCK_NAME
        info = json.loads(path.read_text())
        assert info["pid"] == os.getpid() and info["command"] == "hpsh run"
        with workdir_lock(tmp_path / "run"):  # a verb inside run
            assert is_locked(tmp_path / "run")
        assert is_locked(tmp_path / "run")
        done, _ = _try(tmp_path / "run")
        assert done.returncode == 3
    assert not is_locked(tmp_path / "run")
    done, _ = _try(tmp_path / "run")
    assert done.returncode == 0


def test_released_when_the_block_raises(tmp_path):
    with pytest.raises(RuntimeError):
        with workdir_lock(tmp_path):
            raise RuntimeError("boom")
    assert not is_locked(tmp_path)
    with workdir_lock(tmp_path):
        pass
