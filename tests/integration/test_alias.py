"""``alias make='bcrun make'``: what the shell sees is what the tool alone
gives it, output and status, in every case a habit meets."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import Bcrun

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")

#: An up-to-date target, one that is out of date, one that fails, and a
#: chain that runs one job at a time whatever the count.
MAKEFILE = """\
done.txt:
\t@echo made > $@
stale: done.txt
\t@echo stale
fail:
\t@echo failing; exit 3
other:
\t@echo other
keep: fail other
chain: one two three
one:
\t@echo one
two: one
\t@echo two
three: two
\t@echo three
ask:
\t@read line; echo "got $$line"
.PHONY: stale fail other keep chain one two three ask
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    where = tmp_path / "p"
    where.mkdir()
    (where / "Makefile").write_text(MAKEFILE)
    subprocess.run(["make", "-s", "-C", str(where), "done.txt"], check=True)
    return where


def both(
    bcrun: Bcrun, argv: list[str], cwd: Path, stdin: str | None = None, **kwargs
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """*argv* alone, then behind bcrun, in *cwd*."""
    alone = subprocess.run(
        argv, cwd=cwd, env=bcrun.env, input=stdin, capture_output=True, text=True,
        timeout=60, **kwargs,
    )  # fmt: skip
    wrapped = bcrun.run(*argv, cwd=cwd, input=stdin, **kwargs)
    return alone, wrapped


def same(
    alone: subprocess.CompletedProcess[str], wrapped: subprocess.CompletedProcess[str]
) -> None:
    assert (wrapped.returncode, undated(wrapped.stdout), wrapped.stderr) == (
        alone.returncode,
        undated(alone.stdout),
        alone.stderr,
    )


def undated(text: str) -> str:
    """make -p's database but for the times it was printed at."""
    return "\n".join(
        line for line in text.splitlines() if "ata base" not in line or "# " not in line
    )


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["-q", "done.txt"], 0),  # up to date
        (["-q", "stale"], 1),  # out of date
        (["-n", "stale"], 0),
        (["--dry-run", "keep"], 0),
        (["-qp", "stale"], 1),
        (["-p", "-n", "done.txt"], 0),
        (["-p", "other"], 0),  # prints its database (bcrun's in it?), then builds
        (["--print-data-base", "other"], 0),
        (["-t", "stale"], 0),
        (["--version"], 0),
        (["--help"], 0),
        (["-j1", "chain"], 0),  # serial, as asked
        (["-j", "1", "keep"], 2),
        (["fail"], 2),
    ],
)
def test_make_options_give_what_make_gives(
    bcrun: Bcrun, project: Path, args: list[str], code: int
) -> None:
    alone, wrapped = both(bcrun, ["make", *args], project)
    assert alone.returncode == code, alone
    same(alone, wrapped)
    assert bcrun.leftovers() == []


def test_keep_going_after_a_failure(bcrun: Bcrun, project: Path) -> None:
    """``make -k``: the same lines and status; bcrun runs the two targets
    in parallel (the CPUs it may use), so they may come in another order."""
    alone, wrapped = both(bcrun, ["make", "-k", "keep"], project)
    assert alone.returncode == wrapped.returncode == 2
    assert sorted(wrapped.stdout.splitlines()) == sorted(alone.stdout.splitlines())
    assert sorted(wrapped.stderr.splitlines()) == sorted(alone.stderr.splitlines())


def test_a_chain_of_targets_in_order(bcrun: Bcrun, project: Path) -> None:
    alone, wrapped = both(bcrun, ["make", "chain"], project)
    same(alone, wrapped)


def test_a_make_that_reads_its_standard_input(bcrun: Bcrun, project: Path) -> None:
    alone, wrapped = both(bcrun, ["make", "-s", "ask"], project, stdin="hello\n")
    assert alone.stdout == "got hello\n"
    same(alone, wrapped)


@pytest.mark.parametrize("args", [["-l"], ["no-such-file"]])
def test_a_tool_that_is_no_build_tool(
    bcrun: Bcrun, project: Path, args: list[str]
) -> None:
    alone, wrapped = both(bcrun, ["ls", *args], project)
    same(alone, wrapped)


def test_serial_runs_as_asked_and_says_so_under_v(bcrun: Bcrun, project: Path) -> None:
    result = bcrun.run("-v", "make", "-j1", "chain", cwd=project)
    assert result.returncode == 0
    assert result.stderr == (
        "bcrun: GNU make "
        + result.stderr.split("GNU make ")[1].split(":")[0]
        + ": run as it is: -j1 asks for a serial build\n"
    )


def recursive(project: Path, inner: str, outer_flags: str = "") -> Path:
    """A top Makefile that runs *inner* ``-C sub`` in a recipe."""
    top = project.parent / f"top{abs(hash((inner, outer_flags)))}"
    (top / "sub").mkdir(parents=True)
    (top / "sub" / "Makefile").write_text("all:\n\t@echo inner $(MAKELEVEL)\n")
    (top / "Makefile").write_text(
        f"all: first\n\t+@{inner} -C sub\nfirst:\n\t@echo outer\n.PHONY: all first\n"
    )
    return top


BCRUN = f"{sys.executable} -m bcrun"


@pytest.mark.parametrize("outer_jobs", [[], ["-j2"]])
def test_makeflags_of_an_enclosing_make(
    bcrun: Bcrun, project: Path, outer_jobs: list[str]
) -> None:
    """An enclosing make (a jobserver of its own with -j2, none without)
    runs ``bcrun make`` in a recipe: what make alone would print."""
    plain = recursive(project, "make")
    wrapped = recursive(project, f"{BCRUN} make")
    alone = subprocess.run(
        ["make", *outer_jobs, "-C", str(plain)], env=bcrun.env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    inner = subprocess.run(
        ["make", *outer_jobs, "-C", str(wrapped)], env=bcrun.env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert inner.returncode == alone.returncode == 0
    assert inner.stdout == alone.stdout.replace(str(plain), str(wrapped))
    assert inner.stderr == alone.stderr == ""
    assert bcrun.leftovers() == []


def test_a_bcrun_make_nested_in_a_bcrun_make(bcrun: Bcrun, project: Path) -> None:
    plain = recursive(project, "make")
    nested = recursive(project, f"{BCRUN} make")
    alone = subprocess.run(
        ["make", "-C", str(plain)], env=bcrun.env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    wrapped = bcrun.run("make", "-C", str(nested))
    assert wrapped.returncode == alone.returncode == 0
    assert wrapped.stdout == alone.stdout.replace(str(plain), str(nested))
    assert wrapped.stderr == alone.stderr == ""
    assert bcrun.leftovers() == []


def test_a_serial_build_is_refused_only_through_a_forced_jobserver(
    bcrun: Bcrun, project: Path
) -> None:
    result = bcrun.run("--via", "jobserver", "make", "-j1", cwd=project)
    assert result.returncode == 125
    assert "asks for a serial build" in result.stderr
    assert result.stderr.count("\n") == 1


def test_explain_to_a_reader_that_has_gone_ends_without_a_traceback(
    bcrun: Bcrun,
) -> None:
    """``bcrun --explain make | head -1``: the lines after the first find
    no reader."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = bcrun.run(
            "--explain",
            "make",
            "-j4",
            capture_output=False,
            stdout=write,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(write)
    assert result.returncode == 141
    assert result.stderr == ""
