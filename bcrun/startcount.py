"""The count a build starts at, worked out before it starts.

bcrun starts the build before it imports its policies and its sampler
(most of its start-up), so the first count comes from what costs a few
small reads: the CPUs this process may really use (its affinity, and its
cgroups' cpusets and CPU quotas: :mod:`bcrun.cgroup`), the memory that fits
jobs above the reserve, the schedule's rule of the moment.  Policies that
need a sample of the machine decide at the first tick, moments later: the
count then follows them (a growth at once; a drop as running jobs end).

Each function here gives what the policy or the sampler it stands for
gives for the same figures; tests/unit/test_startcount.py holds them to
it.  Nothing here imports dataclasses, click, psutil or asyncio.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from bcrun.cgroup import (
    Cgroups,
    CpuLimit,
    own_cgroups,
    read_cgroup_memory,
    read_cpu_limit,
)
from bcrun.proc import read_meminfo
from bcrun.units import Size

if TYPE_CHECKING:
    from bcrun.schedule import Schedule

#: What one job is assumed to take before any job of the build finished
#: (the memory policy's, bcrun.policies.memory).
UNSEEN_JOB_BYTES = 512 << 20

#: The memory reserve when none is given: 10% of the memory, at most 4G.
DEFAULT_RESERVE = Size(percent=10)
DEFAULT_RESERVE_MAX = 4 << 30


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@functools.cache
def _own_cgroups() -> Cgroups:
    """This process's cgroups, read once for the CPUs and the memory."""
    return own_cgroups()


def cpu_capacity() -> CpuLimit:
    """The CPUs this process may really use, and where that comes from: its
    affinity, or a tighter cpuset or CPU quota of its cgroups (what the
    sampler reads from the first tick on)."""
    return read_cpu_limit(_own_cgroups(), usable_cpus())


def default_jobs(capacity: CpuLimit) -> int:
    """The count to run at when none is given: the whole CPUs of
    *capacity*, at least 1 (a job above a quota is only throttled)."""
    return max(1, int(capacity.cpus + 1e-9))


def reserve_of(total_bytes: int, reserve: Size | None) -> int:
    """The memory policy's reserve out of *total_bytes*."""
    if reserve is not None:
        return reserve.of(total_bytes)
    return min(DEFAULT_RESERVE.of(total_bytes), DEFAULT_RESERVE_MAX)


class Memory(NamedTuple):
    """Memory of the machine, or of this process's cgroups where a limit
    binds, as the sampler reads it."""

    total_bytes: int
    available_bytes: int
    #: Where a cgroup's limit binds: ``memory.max of /sys/fs/cgroup/ci: 2.0G``.
    limit_source: str = ""


def memory_now() -> Memory | None:
    """The memory there is now; None if /proc/meminfo cannot be read."""
    machine = read_meminfo()
    if machine is None:
        return None
    limited = read_cgroup_memory(_own_cgroups())
    if limited is not None and limited.limit_bytes < machine.total_bytes:
        return Memory(
            limited.limit_bytes,
            min(machine.available_bytes, limited.available_bytes),
            limited.source,
        )
    return Memory(machine.total_bytes, machine.available_bytes)


def memory_fit(memory: Memory, reserve: int, job_bytes: int, jobs: int) -> int:
    """The memory policy's count for a build with no job running yet: the
    jobs of *job_bytes* that fit above *reserve*, at most *jobs*, at least 1."""
    return max(min((memory.available_bytes - reserve) // job_bytes, jobs), 1)


def start_count(
    jobs: int,
    policies: Sequence[str],
    *,
    min_jobs: int = 0,
    max_jobs: int | None = None,
    mem_reserve: Size | None = None,
    active_jobs: int | None = None,
    schedule: Schedule = (),
) -> int:
    """The count to start a build at: the smallest of what the policies
    that need no sample of the machine allow (fixed: *jobs*; memory: what
    fits; presence: the jobs of a user at the keyboard, as one who has just
    typed the command is; schedule: its rule now), within *min_jobs* and
    *max_jobs*, as the governor bounds it.  adaptive decides at the first
    tick."""
    count = jobs
    if "memory" in policies:
        memory = memory_now()
        if memory is not None:
            reserve = reserve_of(memory.total_bytes, mem_reserve)
            count = min(count, memory_fit(memory, reserve, UNSEEN_JOB_BYTES, jobs))
    if "presence" in policies:
        count = min(
            count, max(1, usable_cpus() // 2) if active_jobs is None else active_jobs
        )
    if "schedule" in policies:
        from bcrun.schedule import rule_for  # only with a schedule

        now = time.localtime()
        rule = rule_for(schedule, now.tm_wday, now.tm_hour * 60 + now.tm_min)
        if rule is not None and rule.jobs is not None:
            count = min(count, rule.jobs)
    if max_jobs is not None and count > max_jobs:
        return max_jobs
    return max(count, min_jobs)
