"""Shell completion through click's own mechanism (_BCRUN_COMPLETE)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import Bcrun


def complete(bcrun: Bcrun, line: str) -> list[str]:
    """What bash's completion asks of bcrun for *line* (the cursor at its
    end): the protocol's "type,value" lines."""
    words = line.split()
    cword = len(words) if line.endswith(" ") else len(words) - 1
    env = dict(
        bcrun.env,
        _BCRUN_COMPLETE="bash_complete",
        COMP_WORDS=line,
        COMP_CWORD=str(cword),
    )
    result = subprocess.run(
        bcrun.argv(), env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_the_first_word_is_a_subcommand_or_a_program(bcrun: Bcrun) -> None:
    assert "plain,jobs" in complete(bcrun, "bcrun jo")
    assert "plain,status" in complete(bcrun, "bcrun ")
    assert "plain,make" in complete(bcrun, "bcrun mak")
    assert "plain,make" in complete(bcrun, "bcrun -v -j 4 mak")


def test_options_and_their_values(bcrun: Bcrun) -> None:
    assert "plain,--policy" in complete(bcrun, "bcrun --pol")
    assert complete(bcrun, "bcrun --policy adaptive,me") == ["plain,adaptive,memory"]
    assert "plain,jobserver" in complete(bcrun, "bcrun --via ")
    assert "plain,--recommend" in complete(bcrun, "bcrun jobs --rec")


def test_past_the_command_its_arguments_are_files(bcrun: Bcrun) -> None:
    assert complete(bcrun, "bcrun make ") == ["file,"]
    # Not bcrun's options: they would be make's.
    assert complete(bcrun, "bcrun make -j") == ["file,-j"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_shells_script(bcrun: Bcrun, shell: str) -> None:
    env = dict(bcrun.env, _BCRUN_COMPLETE=f"{shell}_source")
    result = subprocess.run(bcrun.argv(), env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "_bcrun_completion" in result.stdout
    assert f"_BCRUN_COMPLETE={shell}_complete" in result.stdout


def test_bash_completes_with_it(bcrun: Bcrun, tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "bcrun"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m bcrun "$@"\n')
    wrapper.chmod(0o755)
    script = (
        'eval "$(_BCRUN_COMPLETE=bash_source bcrun)"\n'
        "COMP_WORDS=(bcrun pau); COMP_CWORD=1; _bcrun_completion bcrun\n"
        'echo "${COMPREPLY[@]}"\n'
    )
    env = dict(bcrun.env, PATH=f"{bin_dir}{os.pathsep}{bcrun.env['PATH']}")
    result = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.stdout.split() == ["pause"], result.stderr
