"""``memory``: keep available memory above a reserve.

One more job may start when the memory available, less what the running
jobs will still take as they grow to the size jobs of this build have been
seen to reach, leaves the reserve free for one more such job.  Memory
pressure (PSI; swapping, on a kernel without PSI) holds the count before the
reserve is reached, once less than twice the reserve is left.
With ``--freeze``, :func:`freeze_step` goes further when memory is
critically short: it stops the youngest job, and continues stopped jobs
once memory has recovered.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from bcrun.metrics import Metrics
from bcrun.policies.base import Decision
from bcrun.settings import Settings

# The reserve (10% of the memory, at most 4G, when none is given) and what
# one job is assumed to take before any job of the build finished: shared
# with the count a build starts at, worked out before the policies load.
from bcrun.startcount import UNSEEN_JOB_BYTES, reserve_of
from bcrun.units import format_size

#: Memory PSI (share of time some task stalled on memory) that holds the
#: count, and that takes one job off it.
PRESSURE_HOLD = 0.05
PRESSURE_SHED = 0.20

#: The same from swapping (pages in and out a second), without PSI.
SWAP_HOLD = 256
SWAP_SHED = 2560
PAGE = 4096


def reserve_bytes(metrics: Metrics, settings: Settings) -> int:
    return reserve_of(metrics.mem_total_bytes, settings.mem_reserve)


def job_bytes(metrics: Metrics) -> int:
    """What one job of this build takes at its largest: the most a finished
    job took (UNSEEN_JOB_BYTES until one finished), or more if a running
    one already takes more."""
    running = max((job.rss_bytes for job in metrics.jobs), default=0)
    return max(metrics.job_rss_peak_bytes or UNSEEN_JOB_BYTES, running)


def memory(metrics: Metrics, previous: int, settings: Settings) -> Decision:
    reserve = reserve_bytes(metrics, settings)
    per_job = job_bytes(metrics)
    running = metrics.jobs_running
    available = metrics.mem_available_bytes
    # Running jobs still growing toward the size jobs reach.
    growth = sum(max(per_job - job.rss_bytes, 0) for job in metrics.jobs)
    room = available - growth - reserve
    said = f"memory {format_size(available)} available"
    if available < reserve:
        short = math.ceil((reserve - available) / per_job)
        return Decision(
            max(running - short, 1), f"{said} < {format_size(reserve)} reserve"
        )
    # The kernel's pressure is system-wide: a thrashing cgroup elsewhere
    # raises it too.  It is an early sign only when memory is getting short.
    if room < reserve:
        level, why = pressure(metrics)
        if level >= 2:
            return Decision(max(running - 1, 1), why)
        if level == 1:
            return Decision(max(running, 1), why)
    fit = max(math.floor(room / per_job), 0)
    count = min(running + fit, settings.jobs)
    return Decision(
        max(count, 1),
        f"{said}, {format_size(reserve)} reserve, "
        f"{format_size(per_job)} a job: {fit} more fit",
    )


def pressure(metrics: Metrics) -> tuple[int, str]:
    """How hard memory is pressed: 0 not, 1 hold the count, 2 take a job
    off; from PSI, or from swapping on a kernel without PSI."""
    if metrics.psi_memory_some is not None:
        share = metrics.psi_memory_some
        level = 2 if share >= PRESSURE_SHED else 1 if share >= PRESSURE_HOLD else 0
        return level, f"memory pressure {share:.0%} (PSI)"
    swapped = metrics.swap_pages_s or 0.0
    level = 2 if swapped >= SWAP_SHED else 1 if swapped >= SWAP_HOLD else 0
    return level, f"memory: swapping {format_size(int(swapped * PAGE))}/s"


class FreezeStep(NamedTuple):
    """One step of ``--freeze``: a job to stop, a job to continue, or neither."""

    stop: int | None
    resume: int | None
    reason: str


def freeze_step(
    metrics: Metrics, stopped: Sequence[int], settings: Settings
) -> FreezeStep:
    """Stop the youngest running job while available memory is under half
    the reserve (one job always runs); continue the oldest stopped one when
    the reserve and one job fit again.  *stopped* lists stopped jobs' pids."""
    reserve = reserve_bytes(metrics, settings)
    available = metrics.mem_available_bytes
    running = [job for job in metrics.jobs if job.pid not in stopped]
    if available < reserve / 2 and len(running) > 1:
        youngest = max(running, key=lambda job: job.start_s)
        return FreezeStep(
            youngest.pid,
            None,
            f"memory {format_size(available)} available < half the "
            f"{format_size(reserve)} reserve: job {youngest.pid} stopped",
        )
    alive = [job for job in metrics.jobs if job.pid in stopped]
    if alive and available >= reserve + job_bytes(metrics):
        oldest = min(alive, key=lambda job: job.start_s)
        return FreezeStep(
            None,
            oldest.pid,
            f"memory {format_size(available)} available: job {oldest.pid} continued",
        )
    return FreezeStep(None, None, "")
