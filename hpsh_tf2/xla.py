"""XLA CPU code generation settings the project relies on (no TensorFlow import).

XLA reads ``XLA_FLAGS`` once, when the process compiles its first XLA function. By default its
CPU backend vectorises with 256-bit registers even on AVX-512 CPUs, which leaves the Hamming
kernel (:mod:`hpsh_tf2.ops.hamming`) without the 512-bit ``vpopcntq`` instruction. Asking for
512-bit vectors made the whole Hamming top-k search 1.04x (64 bits), 1.18x (128 bits) and 1.23x
(256 bits) faster on a 2-core AMD EPYC (``bench/bench_search.py``, 1,000 queries x 1M codes,
with the kernel's padded rows; before that fix the gain was 1.5-2x). On CPUs without AVX-512
the setting changes nothing: LLVM never uses vectors wider than the CPU has.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

__all__ = ["WIDE_VECTORS_FLAG", "prefer_wide_vectors", "wide_vectors_requested"]

WIDE_VECTORS_FLAG = "--xla_cpu_prefer_vector_width=512"
_FLAG_NAME = "--xla_cpu_prefer_vector_width"


def prefer_wide_vectors(environ: MutableMapping[str, str] | None = None) -> bool:
    """Adds :data:`WIDE_VECTORS_FLAG` to ``XLA_FLAGS`` unless the user set a vector width.

    Call it before the process compiles anything with XLA (the CLI does, first thing); later
    calls change the environment but not the running XLA. It is process-wide: every XLA CPU
    computation of the process may then use 512-bit vectors.

    Args:
        environ: The environment to change (default ``os.environ``).

    Returns:
        Whether ``XLA_FLAGS`` now asks for 512-bit vectors (False if the user chose another
        width, which is kept).
    """
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "")
    if _FLAG_NAME not in flags:
        environ["XLA_FLAGS"] = f"{flags} {WIDE_VECTORS_FLAG}".strip()
    return wide_vectors_requested(environ)


def wide_vectors_requested(environ: MutableMapping[str, str] | None = None) -> bool:
    """Whether ``XLA_FLAGS`` asks XLA's CPU backend for 512-bit vectors (the last setting
    wins, as XLA parses the flags in order)."""
    environ = os.environ if environ is None else environ
    value = None
    for token in environ.get("XLA_FLAGS", "").split():
        if token.startswith(_FLAG_NAME + "="):
            value = token.split("=", 1)[1]
    return value == "512"
