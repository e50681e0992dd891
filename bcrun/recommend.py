"""``bcrun jobs --recommend``: the count for builds bcrun cannot run in
front of (a CI file's ``env:``, cargo's configuration, CMake presets,
``DEB_BUILD_OPTIONS``), and the variables that carry it.

The count is the one bcrun would start a build at here and now with the
adaptive and memory policies: the CPUs this process may really use (its
affinity, and its cgroups' cpusets and CPU quotas, where ``nproc`` sees the
host's CPUs), no more jobs than fit in the memory there is (the cgroup's,
in a container) above the memory policy's reserve, a job taking what the
memory policy assumes of a job no build has shown yet, or *job_bytes*.
The load of the moment is left out: it is the adaptive policy's to follow
while a build runs, not a figure to write into a CI file.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from bcrun.metrics import Metrics
from bcrun.policies.memory import memory
from bcrun.settings import Settings
from bcrun.startcount import cpu_capacity, default_jobs, memory_now
from bcrun.units import Size


def recommend(
    job_bytes: int | None = None, mem_reserve: Size | None = None
) -> tuple[int, str]:
    """The count, and where it comes from in a few words."""
    capacity = cpu_capacity()
    jobs = default_jobs(capacity)
    reason = capacity.source
    found = memory_now()
    if found is not None:
        metrics = Metrics(
            mem_total_bytes=found.total_bytes,
            mem_available_bytes=found.available_bytes,
            mem_limit_source=found.limit_source,
            job_rss_peak_bytes=job_bytes,
        )
        decision = memory(metrics, jobs, Settings(jobs=jobs, mem_reserve=mem_reserve))
        jobs = min(jobs, decision.jobs)
        reason += f"; {decision.reason}"
        if found.limit_source:
            reason += f" ({found.limit_source})"
    return jobs, reason


def export_lines(jobs: int, environ: Mapping[str, str], shell: bool) -> list[str]:
    """The variables that give *jobs* to the tools that read one, each
    ``NAME=VALUE`` (*shell*: ``export NAME=VALUE``, quoted for sh).
    MAKEFLAGS, SAMUFLAGS and DEB_BUILD_OPTIONS keep what else *environ*
    holds in them."""
    flags = [
        ("MAKEFLAGS", _with_jobs(environ.get("MAKEFLAGS", ""), f"-j{jobs}", _FLAG)),
        ("CARGO_BUILD_JOBS", str(jobs)),
        ("CMAKE_BUILD_PARALLEL_LEVEL", str(jobs)),
        ("CTEST_PARALLEL_LEVEL", str(jobs)),
        # samurai reads options from SAMUFLAGS; upstream ninja reads none.
        ("SAMUFLAGS", _with_jobs(environ.get("SAMUFLAGS", ""), f"-j{jobs}", _FLAG)),
        (
            "DEB_BUILD_OPTIONS",
            _with_jobs(
                environ.get("DEB_BUILD_OPTIONS", ""), f"parallel={jobs}", _PARALLEL
            ),
        ),
    ]
    if shell:
        return [f"export {name}={shlex.quote(value)}" for name, value in flags]
    return [f"{name}={value}" for name, value in flags]


#: A job count or a jobserver in MAKEFLAGS or SAMUFLAGS, and in
#: DEB_BUILD_OPTIONS (deb-build-options: parallel=N).
_FLAG = re.compile(r"-j\d*|--jobs(=\d+)?|--jobserver-(auth|fds)=\S*")
_PARALLEL = re.compile(r"parallel=\S*")


def _with_jobs(current: str, word: str, drop: re.Pattern[str]) -> str:
    """*current*'s words but those *drop* matches (and the count after a
    bare ``-j``), with *word*: before any ``--``, after which MAKEFLAGS
    holds variables."""
    words = current.split()
    end = words.index("--") if "--" in words else len(words)
    kept: list[str] = []
    dropped = ""
    for item in words[:end]:
        if dropped in ("-j", "--jobs") and item.isdigit():
            dropped = ""
            continue
        dropped = item if drop.fullmatch(item) else ""
        if not dropped:
            kept.append(item)
    return " ".join([*kept, word, *words[end:]])
