"""What the policies see of the machine: one frozen snapshot per tick.

The only module that reads system state (psutil and /proc), so that every
policy is a pure function of a :class:`Metrics` and can be tested with
recorded values.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil

from bcrun.errors import MetricsError


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Metrics:
    """One sample of the machine, units in the names."""

    time_s: float
    cpus: int
    load1: float
    load5: float
    load15: float
    mem_total_bytes: int
    mem_available_bytes: int


def sample() -> Metrics:
    """Read the machine's state now."""
    try:
        load1, load5, load15 = psutil.getloadavg()
        memory = psutil.virtual_memory()
    except OSError as err:
        raise MetricsError(f"cannot read system metrics: {err}") from err
    return Metrics(
        time_s=time.monotonic(),
        cpus=usable_cpus(),
        load1=load1,
        load5=load5,
        load15=load15,
        mem_total_bytes=memory.total,
        mem_available_bytes=memory.available,
    )


@dataclass(frozen=True)
class JobserverUse:
    """How a build rooted at one process uses its jobserver."""

    #: Running clients (make, ninja): each runs one job without a token.
    clients: int
    #: Jobs that hold a token: a client's children beyond its first.
    holding: int


def jobserver_use(root: int, clients: frozenset[str]) -> JobserverUse:
    """Count the clients named in *clients* under *root*, and the jobs that
    hold tokens.  Processes that vanish while we look are not counted."""
    try:
        top = psutil.Process(root)
        tree = [top, *top.children(recursive=True)]
    except psutil.Error:
        return JobserverUse(0, 0)
    running = holding = 0
    for process in tree:
        try:
            if process.name() in clients:
                running += 1
                holding += max(len(process.children()) - 1, 0)
        except psutil.Error:
            continue
    return JobserverUse(running, holding)
