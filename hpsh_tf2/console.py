"""How progress is shown: Keras' live bar on a terminal, plain lines anywhere else.

Keras' ``verbose=1`` bar redraws itself with carriage returns and backspaces; written to a log
file or a pipe (a batch job, ``tee``, Kubernetes logs) that becomes one long smear of escape
codes. ``verbose=2`` prints one plain line per epoch (or per finished loop) instead.
"""

from __future__ import annotations

import sys
from typing import TextIO

__all__ = ["keras_verbosity"]


def keras_verbosity(stream: TextIO | None = None) -> int:
    """Keras' ``verbose`` for ``fit``, ``predict`` and ``Progbar``: 1 (a live bar) when
    ``stream`` (default ``sys.stdout``) is a terminal, else 2 (plain lines)."""
    stream = sys.stdout if stream is None else stream
    try:
        return 1 if stream.isatty() else 2
    except (AttributeError, ValueError):  # a closed or unusual stream
        return 2
