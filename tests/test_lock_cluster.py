"""Tests for hpsh_tf2.lock's cluster mode: the workers of one multi-worker cluster share a
workdir; a plain run or another cluster is still refused (issue 23, item 9). Real processes."""

from __future__ import annotations

import subprocess
import sys

from hpsh_tf2.lock import holder_info, workdir_lock
from tests.conftest import REPO_ROOT

HOLD = """
import sys, time
from hpsh_tf2.lock import workdir_lock
cluster = None if sys.argv[2] == "-" else (sys.argv[2], sys.argv[3])
with workdir_lock(sys.argv[1], command="hpsh train", cluster=cluster):
    print("locked", flush=True)
    sys.stdin.readline()
"""

TRY = """
import sys
from hpsh_tf2.errors import WorkdirLockedError
from hpsh_tf2.lock import workdir_lock
cluster = None if sys.argv[2] == "-" else (sys.argv[2], sys.argv[3])
try:
    with workdir_lock(sys.argv[1], command="second", cluster=cluster):
        print("acquired", flush=True)
except WorkdirLockedError as err:
    print("refused:", err, flush=True)
    sys.exit(3)
"""


def _hold(workdir, cluster="-", task="-"):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(workdir), cluster, task],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _release(proc):
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.wait(timeout=30) == 0


def _try(workdir, cluster="-", task="-"):
    return subprocess.run(
        [sys.executable, "-c", TRY, str(workdir), cluster, task],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_workers_of_one_cluster_share_the_workdir(tmp_path):
    chief = _hold(tmp_path, "c1", "worker 0")
    try:
        other = _try(tmp_path, "c1", "worker 1")
        assert other.returncode == 0 and "acquired" in other.stdout, other.stdout
        info = holder_info(tmp_path)
        assert info["cluster"] == "c1"
        assert [t.split(" (")[0] for t in info["tasks"]] == ["worker 0", "worker 1"]
        # a plain run and another cluster are refused, naming the cluster
        for cluster, task in (("-", "-"), ("c2", "worker 0")):
            refused = _try(tmp_path, cluster, task)
            assert refused.returncode == 3, refused.stdout
            assert "multi-worker cluster" in refused.stdout and "c1" in refused.stdout
    finally:
        _release(chief)
    assert _try(tmp_path).returncode == 0  # released with the last member


def test_a_worker_is_refused_while_a_plain_run_holds_the_workdir(tmp_path):
    plain = _hold(tmp_path)
    try:
        refused = _try(tmp_path, "c1", "worker 1")
        assert refused.returncode == 3 and "hpsh train" in refused.stdout, refused.stdout
    finally:
        _release(plain)


def test_a_new_cluster_takes_a_workdir_its_predecessor_left(tmp_path):
    first = _hold(tmp_path, "old", "worker 0")
    _release(first)
    assert _try(tmp_path, "new", "worker 0").returncode == 0
    assert _try(tmp_path).returncode == 0


def test_cluster_mode_is_reentrant_in_one_process(tmp_path):
    with workdir_lock(tmp_path, cluster=("c1", "chief 0")):
        with workdir_lock(tmp_path, cluster=("c1", "chief 0")):
            assert holder_info(tmp_path)["cluster"] == "c1"
