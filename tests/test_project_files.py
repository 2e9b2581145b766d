"""The files a project people can join carries: licence, changelog, pre-commit."""

from __future__ import annotations

import configparser
import re

import yaml

from tests.conftest import REPO_ROOT


def _setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(REPO_ROOT / "setup.cfg")
    return parser


def test_license_is_the_apache_2_text_setup_cfg_declares():
    assert _setup_cfg()["metadata"]["license"] == "Apache-2.0"
    text = (REPO_ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("Apache License\n")
    assert "Version 2.0, January 2004" in text
    # the full text: all nine sections of the terms and the appendix
    sections = re.findall(r"^\s+(\d)\. [A-Z][a-z]+", text, re.MULTILINE)
    assert sections == [str(i) for i in range(1, 10)]
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX" in text


def test_changelog_follows_keep_a_changelog():
    text = (REPO_ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert text.startswith("# Changelog\n")
    assert "https://keepachangelog.com/" in text
    versions = re.findall(r"^## \[([^\]]+)\](.*)$", text, re.MULTILINE)
    assert versions[0] == ("Unreleased", "")
    for version, date in versions[1:]:
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
        assert re.fullmatch(r" - \d{4}-\d{2}-\d{2}", date), date
    kinds = set(re.findall(r"^### (\w+)$", text, re.MULTILINE))
    assert kinds <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def test_pre_commit_runs_ruff_check_and_format_at_the_pinned_version():
    pins = re.findall(r"ruff==([\d.]+)", _setup_cfg()["options.extras_require"]["dev"])
    assert len(pins) == 1
    config = yaml.safe_load((REPO_ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    assert hooks["ruff-check"]["entry"].startswith("ruff check")
    assert hooks["ruff-format"]["entry"].startswith("ruff format")
    for hook in (hooks["ruff-check"], hooks["ruff-format"]):
        assert hook["additional_dependencies"] == [f"ruff=={pins[0]}"]
