"""``python -m hpsh_tf2`` and ``--version``: one version, written once."""

from __future__ import annotations

import subprocess
import sys

import pytest

import hpsh_tf2
from hpsh_tf2 import cli
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize(
    "command",
    [["-m", "hpsh_tf2", "--version"], [str(REPO_ROOT / "cli.py"), "--version"]],
    ids=["python -m hpsh_tf2", "cli.py"],
)
def test_version_from_the_command_line(command):
    done = subprocess.run(
        [sys.executable, *command], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"hpsh {hpsh_tf2.__version__}\n"


def test_version_of_the_console_script_entry_point(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"hpsh {hpsh_tf2.__version__}"


def test_python_m_runs_the_cli():
    done = subprocess.run(
        [sys.executable, "-m", "hpsh_tf2", "prepare", "--set", "model.bits=7"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "expected one of 16, 24, 32, 48, 64 or a multiple of 8" in done.stderr


def test_setup_cfg_reads_the_package_version():
    from setuptools.config.setupcfg import read_configuration

    metadata = read_configuration(REPO_ROOT / "setup.cfg")["metadata"]
    assert metadata["version"] == hpsh_tf2.__version__
    assert hpsh_tf2.__version__.count(".") == 2
