"""An exclusive lock on a run folder, so two writing commands never share one workdir.

Every verb that writes into ``<workdir>`` holds :func:`workdir_lock` while it runs. The lock is
``fcntl.flock`` on ``<workdir>/.lock``, taken without waiting: a second process fails at once with
:class:`~hpsh_tf2.errors.WorkdirLockedError` naming the holder's PID and command line (recorded in
the file). The kernel drops a ``flock`` when its holder exits in any way, ``kill -9`` included,
so a stale ``.lock`` file never blocks anybody; its text is only informative.

The lock is re-entrant inside one process (a ``run`` calling ``train`` takes it once).
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def workdir_lock(workdir: str | os.PathLike, command: str | None = None) -> Iterator[Path]:
    """Holds the exclusive lock of ``workdir`` for the duration of the block.

    Args:
        workdir: The run folder (created if missing).
        command: What the holder is doing, recorded for the error message of a second process;
            defaults to this process's command line.

    Yields:
        The lock file.

    Raises:
        WorkdirLockedError: Another process holds the lock (the message names its PID and
            command line).
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
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WorkdirLockedError(
            f"workdir {str(folder)!r} is in use by {_describe(holder_info(folder))}; wait for it "
            f"to finish or use another output.workdir (lock file: {path})"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    info = {
        "pid": os.getpid(),
        "command": command if command is not None else " ".join(sys.argv),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        with _guard:
            _held[key] = (fd, 1)
        yield path
    finally:
        with _guard:
            _held.pop(key, None)
        os.close(fd)  # closing the last descriptor releases the flock
