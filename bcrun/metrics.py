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


def jobs_holding_tokens(root: int, clients: frozenset[str]) -> int:
    """How many jobs of the build rooted at *root* hold a jobserver token.

    Every running process named in *clients* (make, ninja) runs its first job
    on its own implicit slot and each further job on a token; a job is a
    direct child of a client.  Processes that vanish while we look are
    simply not counted.
    """
    try:
        tree = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.Error:
        return 0
    held = 0
    for process in tree:
        try:
            if process.name() in clients:
                held += max(len(process.children()) - 1, 0)
        except psutil.Error:
            continue
    return held
