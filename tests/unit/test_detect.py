"""Taking a build tool's own job count off its command line and MAKEFLAGS."""

from __future__ import annotations

import pytest

from bcrun.detect import Plan, _bsd_make_notices, _clean_makeflags, _strip_jobs
from bcrun.errors import ConfigError


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


def test_a_serial_build_is_refused():
    with pytest.raises(ConfigError, match="serial build"):
        stripped("make", "-j1")


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
