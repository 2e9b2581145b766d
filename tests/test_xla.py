"""Tests of hpsh_tf2.xla (XLA_FLAGS handling; no TensorFlow needed)."""

from __future__ import annotations

import subprocess
import sys

from hpsh_tf2.xla import WIDE_VECTORS_FLAG, prefer_wide_vectors, wide_vectors_requested
from tests.conftest import REPO_ROOT


def test_prefer_wide_vectors_adds_the_flag_and_keeps_the_others():
    environ = {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    assert prefer_wide_vectors(environ) is True
    assert environ["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x {WIDE_VECTORS_FLAG}"
    assert prefer_wide_vectors(environ) is True  # idempotent
    assert environ["XLA_FLAGS"].count("prefer_vector_width") == 1
    empty: dict[str, str] = {}
    assert prefer_wide_vectors(empty) is True and empty["XLA_FLAGS"] == WIDE_VECTORS_FLAG


def test_a_users_own_vector_width_is_kept():
    environ = {"XLA_FLAGS": "--xla_cpu_prefer_vector_width=256"}
    assert prefer_wide_vectors(environ) is False
    assert environ["XLA_FLAGS"] == "--xla_cpu_prefer_vector_width=256"


def test_the_last_setting_wins():
    assert not wide_vectors_requested({})
    assert wide_vectors_requested({"XLA_FLAGS": WIDE_VECTORS_FLAG})
    flags = f"{WIDE_VECTORS_FLAG} --xla_cpu_prefer_vector_width=256"
    assert not wide_vectors_requested({"XLA_FLAGS": flags})
    assert wide_vectors_requested(
        {"XLA_FLAGS": f"--xla_cpu_prefer_vector_width=128 {WIDE_VECTORS_FLAG}"}
    )


def test_the_cli_sets_the_flag_before_running_a_verb():
    code = (
        "import os\n"
        "from hpsh_tf2.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(os.environ['XLA_FLAGS'])\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == WIDE_VECTORS_FLAG
