"""An exclusive lock on a run folder, so two writing commands never share one workdir.

Every verb that writes into ``<workdir>`` holds :func:`workdir_lock` while it runs. The lock is
``fcntl.flock`` on ``<workdir>/.lock``, taken without waiting: a second process fails at once with
:class:`~hpsh_tf2.errors.WorkdirLockedError` naming the holder's PID and command line (recorded in
the file). The kernel drops a ``flock`` when its holder exits in any way, ``kill -9`` included,
so a stale ``.lock`` file never blocks anybody; its text is only informative.

The lock is re-entrant inside one process (a ``run`` calling ``train`` takes it once).

**Multi-worker clusters.** The workers of one ``train.strategy: multi_worker`` cluster may share
one workdir (one volume mounted by every pod): each takes a *shared* ``flock`` in cluster mode
(``cluster=(cluster_id, task)``), and the lock file records the cluster and its tasks. A worker
of the same cluster joins; a plain run (exclusive) or a worker of another cluster is refused
at once, naming the holder. The first member alone on the lock writes the record (checked by
upgrading to an exclusive lock under a short guard lock, ``.lock.guard``), so a crashed
cluster's stale record never blocks the next one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from hpsh_tf2.errors import WorkdirLockedError

__all__ = ["LOCK_NAME", "holder_info", "is_locked", "workdir_lock"]

LOCK_NAME = ".lock"
"""The lock file, inside the workdir."""

_held: dict[str, tuple[int, int]] = {}  # resolved workdir -> (fd, depth)
_guard = threading.Lock()


def _describe(info: dict) -> str:
    if info.get("cluster"):
        tasks = ", ".join(info.get("tasks", [])) or "?"
        return (
            f"a multi-worker cluster (id {info['cluster']}; tasks {tasks}; "
            f"{info.get('command') or 'unknown command'})"
        )
    pid = info.get("pid", "?")
    command = info.get("command") or "unknown command"
    since = info.get("since")
    when = f", since {since}" if since else ""
    return f"PID {pid} ({command}{when})"


def holder_info(workdir: str | os.PathLike) -> dict:
    """What ``<workdir>/.lock`` says about its last holder (``{}`` when absent or unreadable).

    The file is not removed on exit, so this may describe a process that has ended; use
    :func:`is_locked` to know whether the lock is held now.
    """
    try:
        info = json.loads((Path(workdir) / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def is_locked(workdir: str | os.PathLike) -> bool:
    """Whether some process (this one included) holds the workdir lock now."""
    path = Path(workdir) / LOCK_NAME
    key = str(Path(workdir).resolve())
    if key in _held:
        return True
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _record(fd: int, info: dict) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)


def _busy(folder: Path, path: Path) -> WorkdirLockedError:
    return WorkdirLockedError(
        f"workdir {str(folder)!r} is in use by {_describe(holder_info(folder))}; wait for it "
        f"to finish or use another output.workdir (lock file: {path})"
    )


def _try_flock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            return False
        raise
    return True


def _join_cluster(fd: int, folder: Path, path: Path, info: dict, cluster: tuple[str, str]):
    """Takes the shared lock for a cluster member (under the guard lock) and records the task.

    Raises:
        WorkdirLockedError: A plain run or another cluster holds the workdir.
    """
    cluster_id, task = cluster
    guard = os.open(folder / f"{LOCK_NAME}.guard", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)  # held for microseconds by other members only
        if not _try_flock(fd, fcntl.LOCK_SH):
            raise _busy(folder, path)  # a plain run holds it exclusively
        alone = _try_flock(fd, fcntl.LOCK_EX)  # Linux drops the shared lock if this fails
        if not alone and not _try_flock(fd, fcntl.LOCK_SH):
            raise _busy(folder, path)
        held = holder_info(folder)
        if alone:
            record = {**info, "cluster": cluster_id, "tasks": [f"{task} (PID {os.getpid()})"]}
        elif held.get("cluster") == cluster_id:
            record = {**held, "tasks": [*held.get("tasks", []), f"{task} (PID {os.getpid()})"]}
        else:
            raise _busy(folder, path)
        _record(fd, record)
        if alone and not _try_flock(fd, fcntl.LOCK_SH):  # back to shared, for the others
            raise _busy(folder, path)
    finally:
        os.close(guard)


@contextlib.contextmanager
def workdir_lock(
    workdir: str | os.PathLike,
    command: str | None = None,
    *,
    cluster: tuple[str, str] | None = None,
) -> Iterator[Path]:
    """Holds the lock of ``workdir`` for the duration of the block.

    Args:
        workdir: The run folder (created if missing).
        command: What the holder is doing, recorded for the error message of a second process;
            defaults to this process's command line.
        cluster: ``(cluster_id, task)`` for a worker of a multi-worker cluster (e.g.
            ``("3f2a...", "worker 1")``): the workers of one cluster share the lock; ``None``:
            an exclusive lock.

    Yields:
        The lock file.

    Raises:
        WorkdirLockedError: Another process holds the lock (the message names its PID and
            command line, or the cluster and its tasks).
    """
    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    path = folder / LOCK_NAME
    with _guard:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield path
        finally:
            with _guard:
                fd, depth = _held[key]
                _held[key] = (fd, depth - 1)
        return
    info = {
        "pid": os.getpid(),
        "command": command if command is not None else " ".join(sys.argv),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if cluster is not None:
            _join_cluster(fd, folder, path, info, cluster)
        elif not _try_flock(fd, fcntl.LOCK_EX):
            raise _busy(folder, path)
        else:
            _record(fd, info)
    except BaseException:
        os.close(fd)
        raise
    try:
        with _guard:
            _held[key] = (fd, 1)
        yield path
    finally:
        with _guard:
            _held.pop(key, None)
        os.close(fd)  # closing the last descriptor releases the flock
