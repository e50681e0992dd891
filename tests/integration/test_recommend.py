"""``bcrun jobs --recommend``: the count for a build bcrun does not run,
from the CPUs a container may really use, not the host's."""

from __future__ import annotations

import subprocess

from bcrun.recommend import recommend
from bcrun.startcount import cpu_capacity, default_jobs
from tests.helpers import Bcrun, cpu_quota_cgroup


def test_the_count_is_the_cpus_at_most_what_fits_in_memory(bcrun: Bcrun) -> None:
    result = bcrun.run("jobs", "--recommend", "-v")
    assert result.returncode == 0, result.stderr
    count = int(result.stdout)
    assert 1 <= count <= default_jobs(cpu_capacity())
    assert count == recommend()[0]
    jobs = "job" if count == 1 else "jobs"
    assert result.stderr.startswith(f"bcrun: {count} {jobs}: ")
    assert cpu_capacity().source in result.stderr
    assert "a job" in result.stderr  # the memory policy's per-job size


def test_a_job_larger_than_the_memory_there_is_leaves_one(bcrun: Bcrun) -> None:
    result = bcrun.run("jobs", "--recommend", "-v", "--job-memory", "1024T")
    assert (result.returncode, result.stdout) == (0, "1\n")
    assert result.stderr.startswith("bcrun: 1 job: "), result.stderr


def test_export_for_a_shell_and_for_an_env_file(bcrun: Bcrun) -> None:
    count = recommend()[0]
    shell = bcrun.run("jobs", "--recommend", "--export")
    assert shell.returncode == 0, shell.stderr
    assert f"export MAKEFLAGS=-j{count}\n" in shell.stdout
    assert f"export CARGO_BUILD_JOBS={count}\n" in shell.stdout
    env = dict(bcrun.env, DEB_BUILD_OPTIONS="nocheck")
    lines = bcrun.run("jobs", "--recommend", "--export=env", env=env).stdout
    assert f"CMAKE_BUILD_PARALLEL_LEVEL={count}\n" in lines
    assert f"DEB_BUILD_OPTIONS=nocheck parallel={count}\n" in lines
    # What the shell makes of it is what was meant.
    check = subprocess.run(
        ["sh", "-c", 'eval "$1"; echo "$MAKEFLAGS|$DEB_BUILD_OPTIONS"', "sh",
         bcrun.run("jobs", "--recommend", "--export", env=env).stdout],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert check.stdout == f"-j{count}|nocheck parallel={count}\n"


def test_inside_a_cpu_quota_the_quota_counts(bcrun: Bcrun) -> None:
    """nproc and the affinity say the host's CPUs; the quota is what the
    container may use."""
    with cpu_quota_cgroup(1.0) as group:
        result = subprocess.run(
            [*group.prefix, *bcrun.argv("jobs", "--recommend", "--export", "-v")],
            env=bcrun.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "export MAKEFLAGS=-j1\n" in result.stdout
    assert "export CARGO_BUILD_JOBS=1\n" in result.stdout
    assert "export CMAKE_BUILD_PARALLEL_LEVEL=1\n" in result.stdout
    assert "quota" in result.stderr or "cpu.max" in result.stderr, result.stderr


def test_recommend_options_go_with_recommend(bcrun: Bcrun) -> None:
    for args in (
        ("jobs", "--export"),
        ("jobs", "4", "--job-memory", "2G"),
        ("jobs", "--recommend", "4"),
        ("jobs", "--recommend", "--job-memory", "10%"),
        ("jobs",),
    ):
        result = bcrun.run(*args)
        assert result.returncode == 125, args
        assert result.stderr.startswith("bcrun: ") and result.stderr.count("\n") == 1
