"""The code and the docs say what the project promises: lint and format
clean, the man page lints clean and names every option the code has."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from bcrun.cli import cli

ROOT = Path(__file__).resolve().parents[1]
MAN = ROOT / "man" / "bcrun.1"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_ruff_check_and_format():
    ruff = [sys.executable, "-m", "ruff"]
    check = run(*ruff, "check", "bcrun", "tests", "examples")
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = run(*ruff, "format", "--check", "bcrun", "tests", "examples")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_man_page_lints_clean():
    if shutil.which("mandoc") is None:
        pytest.skip("mandoc is not installed (tests/setup installs it)")
    result = run("mandoc", "-T", "lint", "-W", "warning", str(MAN))
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def man_flags() -> set[str]:
    text = MAN.read_text()
    return set(re.findall(r"Fl (-?[\w-]+)", text)) | set(
        re.findall(r"Cm ([\w-]+)", text)
    )


def test_man_page_names_every_subcommand_and_option():
    documented = man_flags()
    missing = []
    for name, command in cli.commands.items():
        if name not in documented:
            missing.append(name)
        for param in command.params:
            if isinstance(param, click.Option):
                for opt in param.opts + param.secondary_opts:
                    if opt.lstrip("-") not in {f.lstrip("-") for f in documented}:
                        missing.append(f"{name} {opt}")
    assert not missing, f"not in man/bcrun.1: {missing}"


def test_mypy_strict():
    result = run(sys.executable, "-m", "mypy", "--strict", "bcrun")
    assert result.returncode == 0, result.stdout + result.stderr
