"""One writer per archive index: an exclusive ``flock`` on a file beside the Milvus Lite ``.db``.

``index build`` holds :func:`index_writer_lock` for its whole run. The lock is taken without
waiting: a second build on the same index fails at once with :class:`IndexBusyError`, one line
naming the holder's PID and command line (recorded in the lock file). The kernel drops a
``flock`` when its holder exits in any way (``kill -9`` included), so a stale lock file never
blocks anybody. Readers (``index search``, ``index info``) never take it: they read a snapshot
when the index is busy (see :class:`hpsh_tf2.index.store.IndexStore`).

A server URI (``http://...``) has no file to lock beside; the server serialises writes itself
and a build's upserts are idempotent, so no lock is taken there.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from hpsh_tf2.index.store import ArchiveIndexError, disk_full_error, is_local_uri

__all__ = ["IndexBusyError", "index_writer_lock", "writer_lock_path"]


class IndexBusyError(ArchiveIndexError):
    """Another process is writing the index."""


def writer_lock_path(uri: str) -> Path:
    """The writer lock of a Milvus Lite file: ``<name>.db.writer.lock`` beside it."""
    path = Path(uri)
    return path.with_name(path.name + ".writer.lock")


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict):
        info = {}
    since = f", since {info['since']}" if info.get("since") else ""
    return f"PID {info.get('pid', '?')} ({info.get('command') or 'unknown command'}{since})"


@contextlib.contextmanager
def index_writer_lock(uri: str, command: str | None = None) -> Iterator[Path | None]:
    """Holds the exclusive writer lock of the index at ``uri`` for the block.

    Args:
        uri: The index URI; a server URI takes no lock (yields None).
        command: What the holder does, for a second process's message; default this
            process's command line.

    Yields:
        The lock file (None for a server URI).

    Raises:
        IndexBusyError: Another process holds the lock (the message names it).
    """
    if not is_local_uri(uri):
        yield None
        return
    path = writer_lock_path(uri)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise IndexBusyError(
            f"index {uri} is being written by {_holder(path)}; wait for it to finish "
            f"(lock file: {path})"
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
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        except OSError as err:
            raise (disk_full_error(err, path) or err) from None
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the flock
