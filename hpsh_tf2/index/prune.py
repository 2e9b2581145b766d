"""The prune guard of ``index build``, one rule for file and scene archives.

An empty, mistyped or unmounted input (``--images`` folder, ``--scenes`` path) looks like an
archive whose every item was deleted. A build therefore refuses to remove rows when the input
holds nothing at all, or when more than ``index.max_remove_fraction`` of the index's rows would
go, unless ``--prune`` is given. The fraction counts rows: a file is one row, a scene is one row
per tile, so both archives are measured the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from hpsh_tf2.index.backend import ArchiveIndexError

__all__ = ["PruneRefusedError", "check_removal"]

_NAMED = 5  # items named in a refusal


class PruneRefusedError(ArchiveIndexError):
    """A build would remove more rows than allowed without ``--prune``."""


def check_removal(
    removing: int,
    indexed: int,
    *,
    names: Sequence[str],
    kind: str,
    source: str,
    empty: str | None,
    max_fraction: float,
    prune: bool,
    command: str = "index build",
) -> None:
    """Refuses a build that would remove many rows, unless ``prune`` says so.

    Args:
        removing: Rows the build would remove (of items gone from the input).
        indexed: Rows in the index before the build.
        names: The items gone (file paths, scene ids), sorted; the first few are named.
        kind: What ``names`` are, plural (``"files"``, ``"scenes"``).
        source: The flag naming the input (``"--images"``, ``"--scenes"``).
        empty: Why the input holds nothing (``"DIR holds no image files"``), or None when it
            holds something.
        max_fraction: Most of the ``indexed`` rows removed without ``prune`` (in [0, 1]).
        prune: Remove them whatever their number.
        command: The command, for the message.

    Raises:
        PruneRefusedError: One line: how many rows would go, the first items, how to force it.
    """
    if prune or removing == 0:
        return
    if empty is not None:
        why = empty
    elif removing > max_fraction * indexed:
        why = (
            f"that is {removing / indexed:.0%} of the rows, more than "
            f"index.max_remove_fraction={max_fraction:g}"
        )
    else:
        return
    shown = ", ".join(repr(name) for name in names[:_NAMED])
    more = f" and {len(names) - _NAMED} more" if len(names) > _NAMED else ""
    raise PruneRefusedError(
        f"{command} would remove {removing} of {indexed} rows ({why}): {kind} {shown}{more}; "
        f"check {source}, or pass --prune to remove them"
    )
