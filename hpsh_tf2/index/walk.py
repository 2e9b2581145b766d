"""List the image files of an archive folder with the fingerprint an incremental build compares.

Any layout is accepted: images directly in the root (no class), or in sub-folders at any depth,
in which case the first folder under the root is the image's class. Hidden entries (leading
``.``) and files without an image extension (:data:`hpsh_tf2.data.images.IMAGE_EXTENSIONS`)
are ignored and counted. A file is identified by its path relative to the root (POSIX
separators) and fingerprinted by ``(size, mtime_ns)``: a file whose size or modification time
changed is encoded again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hpsh_tf2.data.images import has_image_extension
from hpsh_tf2.errors import DatasetError

__all__ = ["ArchiveFile", "WalkResult", "walk_images"]

MAX_PATH_BYTES = 1024
"""Longest relative path (UTF-8 bytes) the index stores; longer ones are skipped."""


@dataclass(frozen=True)
class ArchiveFile:
    """One image file of the archive.

    Attributes:
        path: Path relative to the archive root, POSIX separators (the index's primary key).
        class_name: The first folder under the root, or ``""`` for files directly in the root.
        size: File size in bytes.
        mtime_ns: Modification time in nanoseconds since the epoch.
    """

    path: str
    class_name: str
    size: int
    mtime_ns: int

    @property
    def fingerprint(self) -> tuple[int, int]:
        """``(size, mtime_ns)``: what a rebuild compares to decide whether to re-encode."""
        return (self.size, self.mtime_ns)


@dataclass(frozen=True)
class WalkResult:
    """The image files found under an archive root.

    Attributes:
        root: The archive root, absolute.
        files: The image files, sorted by path.
        ignored: Hidden entries, non-image files and over-long paths that were left out.
    """

    root: str
    files: tuple[ArchiveFile, ...]
    ignored: int = 0

    def absolute(self, rel_path: str) -> str:
        """A relative path joined to the root (native separators)."""
        return os.path.join(self.root, *rel_path.split("/"))


def walk_images(root: str | os.PathLike[str]) -> WalkResult:
    """Lists the image files under ``root`` (recursively) with their fingerprints.

    Args:
        root: The archive folder.

    Returns:
        The :class:`WalkResult`, files sorted by relative path.

    Raises:
        DatasetError: ``root`` does not exist or is not a folder.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        what = "does not exist" if not base.exists() else "is not a folder"
        raise DatasetError(f"Received: images={str(root)!r}, which {what}; expected a folder")
    base = Path(os.path.abspath(base))
    files: list[ArchiveFile] = []
    ignored = 0
    for folder, dirs, names in os.walk(base):
        hidden_dirs = [d for d in dirs if d.startswith(".")]
        ignored += len(hidden_dirs)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel_folder = Path(folder).relative_to(base).as_posix()
        for name in names:
            if name.startswith(".") or not has_image_extension(name):
                ignored += 1
                continue
            rel = name if rel_folder == "." else f"{rel_folder}/{name}"
            if len(rel.encode("utf-8")) > MAX_PATH_BYTES:
                ignored += 1
                continue
            try:
                stat = os.stat(os.path.join(folder, name))
            except OSError:  # vanished between listing and stat
                ignored += 1
                continue
            files.append(
                ArchiveFile(
                    path=rel,
                    class_name=rel.split("/", 1)[0] if "/" in rel else "",
                    size=int(stat.st_size),
                    mtime_ns=int(stat.st_mtime_ns),
                )
            )
    files.sort(key=lambda f: f.path)
    return WalkResult(root=str(base), files=tuple(files), ignored=ignored)
