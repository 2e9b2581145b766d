"""Multi-worker start-up on a shared disk (issue 23, item 9), with real ``cli.py train`` workers.

Two workers of one cluster share one ``output.workdir``; a worker whose peer never comes stops
within ``train.cluster_start_timeout_seconds`` naming the missing task; SIGTERM ends a waiting
worker at once with exit status 143 and one line. Features mode, 1 epoch of 2 steps.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from hpsh_tf2.layout import RunLayout
from hpsh_tf2.lock import holder_info
from tests.conftest import REPO_ROOT

_GUARD = 300  # seconds: a hang guard per process on a loaded machine


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _train(workdir: Path, features: Path, ports, index: int, log: Path, *extra):
    """``python cli.py train`` as worker ``index`` of a cluster on ``ports``."""
    tf_config = {
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
        "task": {"type": "worker", "index": index},
    }
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": json.dumps(tf_config)}
    env["TMPDIR"] = str(log.parent)
    overrides = [
        "data.root=null",
        f"data.features={features}",
        "train.strategy=multi_worker",
        "train.epochs=1",
        "train.steps_per_epoch=2",
        "train.classes_per_batch=4",
        "train.samples_per_class=2",
        "model.bits=16",
        "model.hidden_units=[8]",
        "train.collective_timeout_seconds=60",
        f"output.workdir={workdir}",
        *extra,
    ]
    command = ["timeout", "-s", "KILL", str(_GUARD), sys.executable, "cli.py", "train"]
    command += [arg for item in overrides for arg in ("--set", item)]
    with open(log, "w") as handle:  # the child keeps its copy
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=handle, stderr=handle)


def test_two_workers_share_one_workdir(tmp_path, synthetic_features_path):
    workdir = tmp_path / "shared"
    ports = _free_ports(2)
    logs = [tmp_path / f"w{i}.log" for i in range(2)]
    workers = [
        _train(workdir, synthetic_features_path, ports, i, logs[i], "eval.k=5") for i in range(2)
    ]
    codes = [w.wait(timeout=_GUARD + 30) for w in workers]
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n".join(t[-3000:] for t in texts)
    assert RunLayout(workdir).hash_model.is_file()  # the chief wrote the model
    info = holder_info(workdir)
    assert [t.split(" (")[0] for t in sorted(info["tasks"])] == ["worker 0", "worker 1"]


def test_a_worker_alone_stops_naming_the_missing_task(tmp_path, synthetic_features_path):
    ports = _free_ports(2)
    log = tmp_path / "w1.log"
    start = time.monotonic()
    worker = _train(
        tmp_path / "run",
        synthetic_features_path,
        ports,
        1,
        log,
        "train.cluster_start_timeout_seconds=3",
    )
    code = worker.wait(timeout=_GUARD + 30)
    elapsed = time.monotonic() - start
    errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    assert code == 2, log.read_text()[-3000:]
    assert len(errors) == 1 and "Traceback" not in log.read_text()
    assert f"worker 0 (127.0.0.1:{ports[0]})" in errors[0]
    assert "cluster_start_timeout_seconds" in errors[0]
    assert elapsed < 120, elapsed  # start-up (TensorFlow import) + 3 s


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_sigterm_ends_a_waiting_worker(tmp_path, synthetic_features_path):
    ports = _free_ports(2)
    log = tmp_path / "w1.log"
    worker = _train(tmp_path / "run", synthetic_features_path, ports, 1, log)
    deadline = time.monotonic() + _GUARD
    while not _port_open(ports[1]) and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the worker listens on its port while it waits for worker 0
    assert worker.poll() is None, log.read_text()[-3000:]
    time.sleep(1.0)
    python = _child_python(worker.pid)
    os.kill(python, signal.SIGTERM)  # the worker's python process (started by this test)
    sent = time.monotonic()
    worker.wait(timeout=60)
    assert time.monotonic() - sent < 10
    text = log.read_text()
    assert worker.returncode == 143, text[-3000:]
    assert "SIGTERM received" in text and "Traceback" not in text


def _child_python(timeout_pid: int) -> int:
    """The python process ``timeout`` started (its only child)."""
    children = Path(f"/proc/{timeout_pid}/task/{timeout_pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_lock_identity_names_one_cluster_and_its_task():
    from hpsh_tf2.config import load_config
    from hpsh_tf2.training.distributed import lock_identity

    def env(workers, index, chief=None):
        cluster = {"worker": workers, **({"chief": [chief]} if chief else {})}
        task = {"type": "worker", "index": index} if index >= 0 else {"type": "chief", "index": 0}
        return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": task})}

    config = load_config(None, ["train.strategy=multi_worker"])
    workers = ["10.0.0.1:2222", "10.0.0.2:2222"]
    first, second = lock_identity(config, env(workers, 0)), lock_identity(config, env(workers, 1))
    assert first[0] == second[0] and (first[1], second[1]) == ("worker 0", "worker 1")
    other = lock_identity(config, env(["10.0.0.3:2222", "10.0.0.2:2222"], 1))
    assert other[0] != first[0]
    assert lock_identity(config, env(workers, -1, chief="10.0.0.9:2222"))[1] == "chief 0"
    assert lock_identity(config, env(workers, 0, chief="10.0.0.9:2222"))[1] == "worker 0"
    assert lock_identity(config, {}) is None  # no TF_CONFIG: a plain lock
    assert lock_identity(load_config(None), env(workers, 0)) is None  # not multi_worker
