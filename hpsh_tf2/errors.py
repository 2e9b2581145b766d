"""Exception hierarchy of hpsh_tf2.

Every error the package raises on purpose for bad user input (a config key, a data file, a model
that does not fit the config, a busy workdir) derives from :class:`HPSHError`; the CLI turns
those into exit status 2 and one line. Most subclasses are also ``ValueError`` so generic
handlers keep working. Anything else escaping the package is a bug.
"""

from __future__ import annotations

__all__ = [
    "BadImageError",
    "ConfigError",
    "DamagedFileError",
    "DataError",
    "DatasetError",
    "HPSHError",
    "ModelMismatchError",
    "RunFailedError",
    "UsageError",
    "WorkdirLockedError",
]


class HPSHError(Exception):
    """Base class of the errors raised by hpsh_tf2 for bad input or an unusable state."""


class ConfigError(HPSHError, ValueError):
    """A config file or override is invalid; the message names the file, key and value."""


class DatasetError(HPSHError, ValueError):
    """A dataset on disk (images, class folders, split file, archive, features file) is unusable
    as given."""


DataError = DatasetError
"""Alias: the data family's name in the issue tracker and the README."""


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


class UsageError(HPSHError, ValueError):
    """A command-line option or argument is invalid (e.g. an unknown dataset name)."""


class ModelMismatchError(HPSHError, ValueError):
    """A saved artifact (model, features, report) was made with settings other than the
    config's; the message names the differing keys with both values."""


class WorkdirLockedError(HPSHError):
    """Another process holds the workdir lock; the message names its PID and command."""


class RunFailedError(HPSHError):
    """A run stopped without a usable result (e.g. training diverged to NaN)."""


class DamagedFileError(HPSHError, ValueError):
    """A saved file the run needs (a training checkpoint, a SavedModel's ``saved_model.pb`` or
    variables) is truncated, corrupt or missing; the message names the file and what to do."""
