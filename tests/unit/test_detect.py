"""Taking a build tool's own job count off its command line and MAKEFLAGS."""

from __future__ import annotations

from pathlib import Path

import pytest

from bcrun.detect import (
    _BEFORE_J,
    Dialect,
    Plan,
    _bsd_make_notices,
    _clean_makeflags,
    _runs_no_job,
    _strip_jobs,
    plan,
)


def stripped(*argv: str, dialect: Dialect = "gnu") -> tuple[list[str], int | None]:
    plan = Plan("jobserver", "make", "", "pipe", list(argv))
    return _strip_jobs(plan, "--jobs", _BEFORE_J[dialect]), plan.jobs


@pytest.mark.parametrize(
    ("argv", "expected", "jobs"),
    [
        (["make", "-j8", "all"], ["make", "all"], 8),
        (["make", "-j", "8", "all"], ["make", "all"], 8),
        (["make", "-j", "all"], ["make", "all"], None),
        (["make", "--jobs=6"], ["make"], 6),
        (["make", "--jobs", "6"], ["make"], 6),
        (["make", "-kj4", "x"], ["make", "-k", "x"], 4),
        (["make", "-Cjdir", "x"], ["make", "-Cjdir", "x"], None),
        (["make", "-C", "dir", "-l", "2"], ["make", "-C", "dir", "-l", "2"], None),
        (["make", "--", "-j8"], ["make", "--", "-j8"], None),
    ],
)
def test_make_job_counts_are_taken_off(argv, expected, jobs):
    assert stripped(*argv) == (expected, jobs)


def test_ninja_counts_are_taken_off():
    assert stripped("ninja", "-C", "out", "-j", "12", dialect="ninja") == (
        ["ninja", "-C", "out"],
        12,
    )


@pytest.mark.parametrize(
    ("argv", "serial"),
    [
        (["make", "-j1"], "-j1"),
        (["make", "-j", "1", "all"], "-j 1"),
        (["make", "--jobs=1"], "--jobs=1"),
        (["make", "-kj1"], "-kj1"),
        # The last count given wins, as in make.
        (["make", "-j1", "-j4"], None),
        (["make", "-j4", "-j1"], "-j1"),
        (["make", "-j1", "-j"], None),
        (["make", "-j2"], None),
    ],
)
def test_a_serial_build_is_noted(argv, serial):
    """A serial build is run as it is (bcrun.detect.plan): a jobserver
    cannot keep a build to one job."""
    plan = Plan("jobserver", "make", "", "pipe", argv)
    _strip_jobs(plan, "--jobs", _BEFORE_J["gnu"])
    assert plan.serial == serial


def test_a_serial_count_in_makeflags_is_noted_unless_the_command_line_has_one():
    plan = Plan("jobserver", "make", "", "pipe", ["make"])
    _clean_makeflags("-j1 -k", plan)
    assert plan.serial == "-j1 in MAKEFLAGS"
    plan = Plan("jobserver", "make", "", "pipe", ["make", "-j3"])
    _strip_jobs(plan, "--jobs", _BEFORE_J["gnu"])
    _clean_makeflags("-j1", plan)
    assert plan.serial is None


@pytest.mark.parametrize(
    ("argv", "makeflags", "idle"),
    [
        (["make", "-q"], "", "-q"),
        (["make", "-n", "all"], "", "-n"),
        (["make", "-kn"], "", "-n"),
        (["make", "-qp"], "", "-q"),
        (["make", "--just-print"], "", "--just-print"),
        (["make", "--dry-run"], "", "--dry-run"),
        (["make", "--recon"], "", "--recon"),
        (["make", "--question"], "", "--question"),
        (["make", "-t"], "", "-t"),
        (["make", "--version"], "", "--version"),
        (["make", "-v"], "", "-v"),
        (["make", "--help"], "", "--help"),
        (["make", "-h"], "", "-h"),
        # -p prints the database (with bcrun's variables), then builds.
        (["make", "-p"], "", "-p"),
        (["make", "--print-data-base"], "", "--print-data-base"),
        (["make", "-k", "all"], "", None),
        # The argument of an option is no option.
        (["make", "-C", "-n"], "", None),
        (["make", "-Cn"], "", None),
        (["make", "-f", "-q"], "", None),
        (["make", "--file", "--version"], "", None),
        (["make", "--file=x", "-n"], "", "-n"),
        (["make", "--", "-n"], "", None),
        (["make", "n"], "", None),
        # An enclosing make's flags.
        (["make"], "n -- X=1", "-n (MAKEFLAGS)"),
        (["make"], "ks", None),
        (["make"], " --jobserver-auth=3,4", None),
    ],
)
def test_make_options_that_run_no_job(argv, makeflags, idle):
    assert _runs_no_job(argv, {"MAKEFLAGS": makeflags}, "gnu") == idle


@pytest.mark.parametrize(
    ("argv", "idle"),
    [
        (["ninja", "-n"], "-n"),
        (["ninja", "-t", "clean"], "-t"),
        (["ninja", "--version"], "--version"),
        (["ninja", "-h"], "-h"),
        # ninja's -v is --verbose; -C and -j take an argument.
        (["ninja", "-v"], None),
        (["ninja", "-C", "-n"], None),
        (["ninja", "-j", "4", "all"], None),
    ],
)
def test_ninja_options_that_run_no_job(argv, idle):
    # MAKEFLAGS is make's alone.
    assert _runs_no_job(argv, {"MAKEFLAGS": "n"}, "ninja") == idle


def test_cmake_parallel_options():
    plan = Plan("jobserver", "cmake", "", "fifo", ["cmake", "--build", "b", "-j8"])
    assert _strip_jobs(plan, "--parallel") == ["cmake", "--build", "b"]
    plan = Plan(
        "jobserver", "cmake", "", "fifo", ["cmake", "--build", "b", "--parallel", "3"]
    )
    assert _strip_jobs(plan, "--parallel") == ["cmake", "--build", "b"]
    assert plan.jobs == 3


@pytest.mark.parametrize(
    ("makeflags", "expected"),
    [
        ("", ""),
        ("-k", "-k"),
        ("-j4 -k", "-k"),
        ("kj4 -l2", "k -l2"),
        ("j", ""),
        ("--jobs=3 --no-print-directory", "--no-print-directory"),
    ],
)
def test_makeflags_lose_their_job_count(makeflags, expected):
    plan = Plan("jobserver", "make", "", "pipe", ["make"])
    assert _clean_makeflags(makeflags, plan) == expected


@pytest.mark.parametrize(
    ("argv", "makeflags", "expected"),
    [
        (["bmake"], "", "no -j"),
        (["bmake", "-k", "all"], "", "no -j"),
        (["bmake", "-C", "j", "-fj"], "", "no -j"),  # arguments, not -j
        (["bmake", "-j4"], "", None),
        (["bmake", "-kj", "4"], "", None),
        (["bmake"], "-j 4 -J 15,16", None),
        (["bmake", "-B", "-j4"], "", "-B"),
        (["bmake"], "-B", "-B"),
    ],
)
def test_a_patched_bsd_make_says_how_it_runs(argv, makeflags, expected):
    notices = _bsd_make_notices(argv, {"MAKEFLAGS": makeflags})
    if expected is None:
        assert notices == []
    else:
        (notice,) = notices
        assert notice.startswith(expected + ":")


def patched_tool(directory: Path, name: str, bsd: bool = False) -> Path:
    """A program named *name* that holds what bcrun looks for in a patched
    tool's executable (and BSD make's variable)."""
    directory.mkdir(exist_ok=True)
    program = directory / name
    marks = "BUILDSOCKET .MAKE.JOBS" if bsd else "BUILDSOCKET"
    program.write_text(f"#!/bin/sh\n# {marks}\nexit 0\n")
    program.chmod(0o755)
    return program


@pytest.mark.parametrize(
    ("name", "bsd", "argv", "makeflags", "via", "jobs"),
    [
        # The tool's own -jN is the count to start at, and stays.
        ("make", False, ["-j12", "all"], "", "protocol", 12),
        ("make", False, ["-kj", "6"], "", "protocol", 6),
        ("make", False, [], "-j5", "protocol", 5),
        ("make", False, ["-j3"], "-j5", "protocol", 3),
        ("make", False, [], "", "protocol", None),
        ("bmake", True, ["-j", "12"], "", "protocol", 12),
        ("bmake", True, ["-Dj1", "-j4"], "", "protocol", 4),  # -D takes "j1"
        ("ninja", False, ["-j12"], "-j1", "protocol", 12),  # MAKEFLAGS: make's
        ("samu", False, ["-C", "out", "-j", "12"], "", "protocol", 12),
        # -j1 asks for a serial build, run as it is, as by the tool alone.
        ("make", False, ["-j1"], "", "direct", None),
        ("make", False, [], "-j1", "direct", None),
        ("bmake", True, ["-j", "1"], "", "direct", None),
        ("ninja", False, ["-j1"], "", "direct", None),
        ("samu", False, ["-j1"], "", "direct", None),
        # Builds nothing: run as it is.
        ("make", False, ["-n"], "", "direct", None),
        ("bmake", True, ["-V", "CC"], "", "direct", None),
        ("bmake", True, ["-q"], "", "direct", None),
        ("samu", False, ["-t", "clean"], "", "direct", None),
        # A patched tool bcrun does not know: its options are its own.
        ("mymake", False, ["-j1", "-n"], "", "protocol", None),
    ],
)
def test_a_patched_tool_starts_at_its_own_count(
    tmp_path, name, bsd, argv, makeflags, via, jobs
):
    program = str(patched_tool(tmp_path / "bin", name, bsd))
    env = {"MAKEFLAGS": makeflags, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = plan([program, *argv], env)
    assert (result.via, result.jobs) == (via, jobs), result.reason
    assert result.argv == [program, *argv]  # nothing taken off


def test_a_patched_tool_s_serial_build_obeys_bcrun_s_own_count(tmp_path):
    """bcrun -j 3 make -j1: the count the user gave bcrun, from -j1."""
    program = str(patched_tool(tmp_path / "bin", "bmake", bsd=True))
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = plan([program, "-j1"], env, count_given=True)
    assert (result.via, result.serial) == ("protocol", "-j1")
