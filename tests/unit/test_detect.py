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
    _strip_overrides,
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
        # -O's, -l's and -j's argument is the rest of the word.
        (["make", "-Oline"], "", None),
        (["make", "-Otarget", "-j4"], "", None),
        (["make", "-kOnone"], "", None),
        (["make", "-O", "-n"], "", "-n"),
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
    ("makeflags", "expected", "jobs"),
    [
        ("", "", None),
        ("-k", "-k", None),
        ("-j4 -k", "-k", 4),
        ("kj4 -l2", "k -l2", 4),
        ("kj1", "k", 1),
        ("-kj1", "-k", 1),
        ("-j 3 -k", "-k", 3),
        ("j", "", None),
        ("--jobs=3 --no-print-directory", "--no-print-directory", 3),
        ("k -- CFLAGS=-j2", "k -- CFLAGS=-j2", None),  # a variable's value
        ("-Cj", "-Cj", None),  # -C's argument
    ],
)
def test_makeflags_lose_their_job_count(makeflags, expected, jobs):
    plan = Plan("jobserver", "make", "", "pipe", ["make"])
    assert _clean_makeflags(makeflags, plan) == expected
    assert plan.jobs == jobs


def test_bsd_make_s_own_makeflags_are_read():
    plan = Plan("protocol", "bmake", "", argv=["bmake"])
    assert _clean_makeflags(" -j 1 -J 15,16", plan, "bsd") == "-J 15,16"
    assert (plan.jobs, plan.serial) == (1, "-j 1 in MAKEFLAGS")


@pytest.mark.parametrize(
    ("argv", "env", "jobs", "serial"),
    [
        # The command line's count wins over MAKEFLAGS', -j alone too.
        (["make", "-j"], {"MAKEFLAGS": "-j1"}, None, None),
        (["make", "-j1", "-j"], {}, None, None),
        (["make", "-j3"], {"MAKEFLAGS": "-j1"}, 3, None),
        # ninja and cargo take no count from MAKEFLAGS.
        (["ninja"], {"MAKEFLAGS": "-j1"}, None, None),
        (["cargo", "build"], {"MAKEFLAGS": "-j3"}, None, None),
        # cmake's serial level is not undone by MAKEFLAGS.
        (
            ["cmake", "--build", "b"],
            {"CMAKE_BUILD_PARALLEL_LEVEL": "1", "MAKEFLAGS": "-j4"},
            None,
            "CMAKE_BUILD_PARALLEL_LEVEL=1",
        ),
    ],
)
def test_the_count_a_jobserver_build_starts_at(argv, env, jobs, serial):
    plan = Plan("jobserver", argv[0], "", "pipe", argv)
    _strip_overrides(plan, env)
    assert (plan.jobs, plan.serial) == (jobs, serial)


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
    tool's executable (and BSD make's variable); one named make says it is
    GNU make."""
    directory.mkdir(exist_ok=True)
    program = directory / name
    marks = "BUILDSOCKET .MAKE.JOBS" if bsd else "BUILDSOCKET"
    version = "GNU Make 4.4.1" if name == "make" else ""
    program.write_text(f"#!/bin/sh\n# {marks}\necho {version}\n")
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
        ("samu", False, [], "", "protocol", None),
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


def test_samurai_s_own_variable_holds_a_count_too(tmp_path):
    program = str(patched_tool(tmp_path / "bin", "samu"))
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "SAMUFLAGS": "-v -j6"}
    assert plan([program], env).jobs == 6
    env["SAMUFLAGS"] = "-j1"
    assert plan([program], env).via == "direct"
    assert plan([program, "-j3"], env).jobs == 3


def test_via_protocol_starts_a_tool_it_knows_at_its_own_count():
    result = plan(["bmake", "-j", "5"], {}, via="protocol")
    assert (result.via, result.jobs) == ("protocol", 5)
    result = plan(["make", "-j1"], {}, via="protocol")  # asked for: controlled
    assert (result.via, result.jobs) == ("protocol", 1)
    assert plan(["mytool", "-j5"], {}, via="protocol").jobs is None
