"""What one job of the build costs: the runnable load it makes.

The count is a share of the target over this cost (:func:`bcrun.policies.
adaptive.count_for`), so it must be a time mean: jobs that work and sleep
in turns (the network, a remote compiler) are runnable part of the time,
and a look at one moment sees them all working or all asleep, the more so
when they started together and keep step with the ticks.  The kernel counts
for each thread the time it ran and the time it waited for a CPU
(/proc/PID/schedstat); their growth between two looks, over the jobs that
ran between them, is the cost (:class:`RunnableTime`).  Where the kernel
keeps no such count, a look counts the jobs' runnable threads instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from bcrun import proc
from bcrun.buildtree import Job

#: The steps a job's cost may take: a change of step needs the measured
#: cost a tenth past the midpoint to the next, so noise does not move it.
COSTS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
COST_MARGIN = 1.1

#: Weight of the newest look in the job cost's mean: some 1.5 s of memory
#: as it falls, and one look as it rises (jobs costing more than thought
#: overload the machine: a link phase after distributed compiles).
COST_SMOOTHING = 0.3
COST_RISING = 0.5


#: Looks with jobs running before the cost is told: the first jobs of a
#: build have just been forked.  A cost above one job is told sooner:
#: multithreaded jobs overload the machine while it waits.
COST_LOOKS = 4
COST_LOOKS_ABOVE_ONE = 2


class JobCost:
    """The runnable load one job of the build makes, followed look by look
    on the COSTS ladder."""

    def __init__(self) -> None:
        self.cost = 1.0
        self.looks = 0
        self._tasks: float | None = None
        self._jobs: float | None = None

    def look(self, tasks: float, jobs: float) -> None:
        """*tasks* runnable threads in *jobs* running jobs (jobs > 0), seen
        at a look or as means over the time since the last."""
        higher = (
            self._tasks is not None
            and self._jobs is not None
            and tasks / jobs > self._tasks / self._jobs
        )
        smoothing = COST_RISING if higher else COST_SMOOTHING
        self._tasks = smooth(self._tasks, tasks, smoothing)
        self._jobs = smooth(self._jobs, jobs, smoothing)
        self.cost = cost_step(max(self._tasks / self._jobs, COSTS[0]), self.cost)
        self.looks += 1

    def told(self) -> float | None:
        """The cost once enough looks have shown it, else None."""
        if self.looks >= COST_LOOKS or (
            self.looks >= COST_LOOKS_ABOVE_ONE and self.cost > 1
        ):
            return self.cost
        return None


def cost_step(measured: float, current: float) -> float:
    """*measured* on the COSTS ladder, staying on *current* unless past the
    midpoint to a neighbour by COST_MARGIN."""
    index = COSTS.index(current)
    while (
        index + 1 < len(COSTS)
        and measured > math.sqrt(COSTS[index] * COSTS[index + 1]) * COST_MARGIN
    ):
        index += 1
    while (
        index > 0
        and measured < math.sqrt(COSTS[index] * COSTS[index - 1]) / COST_MARGIN
    ):
        index -= 1
    return COSTS[index]


def smooth(previous: float | None, value: float, weight: float) -> float:
    """An exponential mean: *value* weighs *weight*, the past the rest."""
    if previous is None:
        return value
    return previous + weight * (value - previous)


class RunnableTime:
    """The jobs' runnable time between two looks.

    A process's count is the time its threads ran or waited for a CPU, and
    the CPU time of the children it has reaped (a compiler driver's cc1 and
    as, which end between looks).  A job's growth since the last look is
    its processes' growth; a process born since counts from zero, and one
    that ended since takes back the CPU time it had then, which its reaper's
    count now holds again.  A job born since the last look counts for the
    part of the interval it lived."""

    def __init__(self) -> None:
        #: Each job's processes at the last look: their count, and their
        #: CPU time with their reaped children's.
        self._jobs: dict[int, dict[int, tuple[float, float]]] = {}
        self._time_s: float | None = None

    def look(
        self,
        time_s: float,
        jobs: Iterable[Job],
        processes: Mapping[int, proc.ProcStat],
    ) -> tuple[float, float] | None:
        """(runnable threads, jobs), each a mean over the interval since the
        last look at *time_s* (seconds after boot); None at the first look,
        or when no job ran through it."""
        last, self._jobs = self._jobs, {}
        since, self._time_s = self._time_s, time_s
        tasks = jobs_seen = 0.0
        for job in jobs:
            root = processes.get(job.pid)
            if root is None:
                continue
            before = last.get(job.pid)
            counts = _counts(job, processes)
            if counts is None:
                continue  # a process gone while we looked, or no schedstat
            self._jobs[job.pid] = counts
            if since is None or time_s <= since:
                continue
            if before is None:
                if not all(_born(processes[pid], since) for pid in counts):
                    continue  # running before, and not seen then
                before = {}
            grown = 0.0
            for pid, (count, _) in counts.items():
                if pid in before:
                    grown += count - before[pid][0]
                elif _born(processes[pid], since):
                    grown += count
            # An ended process's CPU time is now in its reaper's count.
            grown -= sum(cpu for pid, (_, cpu) in before.items() if pid not in counts)
            tasks += max(grown, 0.0)
            jobs_seen += min((time_s - max(root.start_s, since)) / (time_s - since), 1)
        if since is None or jobs_seen <= 0:
            return None
        return tasks / (time_s - since), jobs_seen


def _counts(
    job: Job, processes: Mapping[int, proc.ProcStat]
) -> dict[int, tuple[float, float]] | None:
    counts = {}
    for pid in job.pids:
        process = processes.get(pid)
        ran = None if process is None else proc.read_runnable_s(pid, process.threads)
        if process is None or ran is None:
            return None
        counts[pid] = (ran + process.children_cpu_s, process.cpu_s)
    return counts


def _born(process: proc.ProcStat, since: float | None) -> bool:
    """Whether *process* started after the look at *since*: its start is
    known to a clock tick."""
    return since is not None and process.start_s >= since - 1 / proc.CLOCK_TICKS
