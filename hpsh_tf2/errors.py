"""Exception hierarchy of hpsh_tf2.

Every error the package raises on purpose derives from :class:`HPSHError`. Data problems are
:class:`DatasetError` (also a ``ValueError``, so generic handlers keep working).
"""

from __future__ import annotations

__all__ = ["BadImageError", "DatasetError", "HPSHError"]


class HPSHError(Exception):
    """Base class of the errors raised by hpsh_tf2."""


class DatasetError(HPSHError, ValueError):
    """A dataset on disk (images, class folders, split file, archive) is unusable as given."""


class BadImageError(DatasetError):
    """An image file that cannot be decoded.

    Attributes:
        path: The file that failed (as given by the caller).
        reason: Why it failed, e.g. ``"image file is truncated"``.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"Cannot decode image {self.path!r}: {self.reason}")

    def __reduce__(self) -> tuple[type[BadImageError], tuple[str, str]]:
        return (type(self), (self.path, self.reason))
