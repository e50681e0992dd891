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
from typing import NamedTuple

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


class Counted(NamedTuple):
    """One process of a job at a look."""

    #: Runnable seconds of each of its threads alive then, by thread id.
    threads: dict[int, float]
    #: CPU seconds of the children it had reaped.
    reaped_s: float
    #: Its CPU seconds with its reaped children's: what its reaper's count
    #: gains when it ends.
    cpu_s: float


#: A process: its pid and its start, since a pid seen again with another
#: start is another process.
Process = tuple[int, float]


class RunnableTime:
    """The jobs' runnable time between two looks.

    A process's count is the time each of its threads ran or waited for a
    CPU, and the CPU time of the children it has reaped (a compiler driver's
    cc1 and as, which end between looks).  A job's growth since the last
    look is its processes' and threads' growth; a process or thread born
    since counts from zero, one that ended since is lost for its last
    interval (a pid seen again with another start is both), and a process
    that ended takes back the CPU time it had, which its reaper's count now
    holds again.  A job born since the last look counts for the part of
    the interval it lived; one with a process gone while we looked is left
    out of that interval."""

    def __init__(self) -> None:
        self._jobs: dict[int, dict[Process, Counted]] = {}
        self._time_s: float | None = None

    def look(
        self,
        time_s: float,
        jobs: Iterable[Job],
        processes: Mapping[int, proc.ProcStat],
    ) -> tuple[float, float] | None:
        """(runnable threads, jobs), each a mean over the interval since the
        last look at *time_s* (seconds after boot, when *processes* were
        read); None at the first look, or when no job ran through it."""
        last, self._jobs = self._jobs, {}
        since, self._time_s = self._time_s, time_s
        tasks = jobs_seen = 0.0
        for job in jobs:
            root = processes.get(job.pid)
            if root is None:
                continue
            counts, whole = _counts(job, processes)
            if counts is None:
                continue  # the job ended while we looked
            self._jobs[job.pid] = counts
            if not whole or since is None or time_s <= since:
                continue
            before = last.get(job.pid, {})
            if (job.pid, root.start_s) not in before:
                # Not seen then, or another job on a reused pid.
                if not all(_born(processes[pid], since) for pid, _ in counts):
                    continue  # running before, and not seen then
                before = {}
            grown = 0.0
            for process, now in counts.items():
                then = before.get(process)
                if then is None:
                    if _born(processes[process[0]], since):
                        grown += sum(now.threads.values()) + now.reaped_s
                    continue
                grown += now.reaped_s - then.reaped_s
                grown += sum(
                    ran - then.threads.get(tid, 0.0) for tid, ran in now.threads.items()
                )
            # An ended process's CPU time is now in its reaper's count.
            grown -= sum(
                then.cpu_s for process, then in before.items() if process not in counts
            )
            tasks += max(grown, 0.0)
            jobs_seen += min((time_s - max(root.start_s, since)) / (time_s - since), 1)
        if since is None or jobs_seen <= 0:
            return None
        return tasks / (time_s - since), jobs_seen


def _counts(
    job: Job, processes: Mapping[int, proc.ProcStat]
) -> tuple[dict[Process, Counted] | None, bool]:
    """The job's processes counted, and whether all of them were: one gone
    since the scan keeps its CPU time, to be taken back from its reaper's
    count at the next look.  None if the job's own process is gone."""
    counts: dict[Process, Counted] = {}
    whole = True
    for pid in job.pids:
        process = processes.get(pid)
        if process is None:
            continue
        threads = proc.read_runnable_s(pid, process.threads)
        if threads is None:
            if pid == job.pid:
                return None, False
            whole = False
            threads = {}
        counts[pid, process.start_s] = Counted(
            threads, process.children_cpu_s, process.cpu_s
        )
    return counts, whole


def runnable_threads_now(
    jobs: Iterable[Job], processes: Mapping[int, proc.ProcStat]
) -> int:
    """The jobs' threads runnable at this moment: the measure where the
    kernel keeps no schedstat."""
    tasks = 0
    for job in jobs:
        for pid in job.pids:
            process = processes.get(pid)
            if process is None:
                continue
            if process.threads > 1:
                tasks += proc.runnable_threads(pid) or 0
            else:
                tasks += process.state == "R"
    return tasks


def _born(process: proc.ProcStat, since: float | None) -> bool:
    """Whether *process* started after the look at *since*: its start is
    known to a clock tick."""
    return since is not None and process.start_s >= since - 1 / proc.CLOCK_TICKS
