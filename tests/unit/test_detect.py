"""Taking a build tool's own job count off its command line and MAKEFLAGS."""

from __future__ import annotations

import pytest

from bcrun.detect import (
    Plan,
    _bsd_make_notices,
    _clean_makeflags,
    _runs_no_job,
    _strip_jobs,
)


def stripped(*argv: str, ninja: bool = False) -> tuple[list[str], int | None]:
    plan = Plan("jobserver", "make", "", "pipe", list(argv))
    return _strip_jobs(plan, "--jobs", ninja=ninja), plan.jobs


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
    assert stripped("ninja", "-C", "out", "-j", "12", ninja=True) == (
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
    _strip_jobs(plan, "--jobs")
    assert plan.serial == serial


def test_a_serial_count_in_makeflags_is_noted_unless_the_command_line_has_one():
    plan = Plan("jobserver", "make", "", "pipe", ["make"])
    _clean_makeflags("-j1 -k", plan)
    assert plan.serial == "-j1 in MAKEFLAGS"
    plan = Plan("jobserver", "make", "", "pipe", ["make", "-j3"])
    _strip_jobs(plan, "--jobs")
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
    assert _runs_no_job(argv, {"MAKEFLAGS": makeflags}, ninja=False) == idle


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
    assert _runs_no_job(argv, {"MAKEFLAGS": "n"}, ninja=True) == idle


def test_cmake_parallel_options():
    plan = Plan("jobserver", "cmake", "", "fifo", ["cmake", "--build", "b", "-j8"])
    assert _strip_jobs(plan, "--parallel", combined=False) == ["cmake", "--build", "b"]
    plan = Plan(
        "jobserver", "cmake", "", "fifo", ["cmake", "--build", "b", "--parallel", "3"]
    )
    assert _strip_jobs(plan, "--parallel", combined=False) == ["cmake", "--build", "b"]
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
