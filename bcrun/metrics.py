"""What the policies see of the machine: one frozen snapshot per tick.

:class:`Sampler` reads the machine (through :mod:`bcrun.proc`) once per
tick and turns counters into rates, so that every policy is a pure function
of a :class:`Metrics` and can be tested with recorded values.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from bcrun import proc
from bcrun.buildtree import (
    TOOLS,
    BuildUse,
    Job,
    build_use,
    children_map,
    tools_under,
)
from bcrun.errors import MetricsError


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, kw_only=True)
class Metrics:
    """One sample of the machine and the build, units in the names.

    Rates (CPU, pressure, swap) are over the interval since the previous
    sample; None where the kernel does not tell (no PSI, first sample).
    """

    time_s: float = 0.0
    cpus: int = 1
    load1: float = 0.0
    load5: float = 0.0
    load15: float = 0.0
    #: Runnable processes, smoothed over the last few samples.
    runnable: float = 0.0
    #: Load that is not the build's: its runnable processes (those seen at
    #: two ticks in a row) or the CPUs it kept busy, the larger, smoothed
    #: over the last few samples.
    external_load: float = 0.0
    #: The highest external load of the last few seconds (PEAK_WINDOW_S).
    external_load_peak: float | None = None
    #: CPUs busy, all processes.
    cpu_busy: float | None = None
    #: Share of time some (or all) tasks stalled for CPU, memory or I/O.
    psi_cpu_some: float | None = None
    psi_memory_some: float | None = None
    psi_memory_full: float | None = None
    psi_io_some: float | None = None
    #: Memory of the machine, or of bcrun's cgroup where that is tighter.
    mem_total_bytes: int = 0
    mem_available_bytes: int = 0
    #: The cgroup's memory limit; None when none binds.
    mem_limit_bytes: int | None = None
    swap_pages_s: float | None = None
    #: The build: its jobs now, what they use, the most a finished job took.
    jobs: tuple[Job, ...] = ()
    build_cpu: float | None = None
    build_rss_bytes: int = 0
    job_rss_peak_bytes: int | None = None
    #: Seconds since the user's last input here; None when no source tells.
    idle_s: float | None = None
    #: Local time, for schedules: Monday is 0.
    weekday: int = 0
    minute_of_day: int = 0

    @property
    def jobs_running(self) -> int:
        return len(self.jobs)

    def summary(self) -> dict[str, float | int | None]:
        """The figures status and --trace show, by name."""
        return {
            "running": self.jobs_running,
            "runnable": self.runnable,
            "external_load": self.external_load,
            "external_load_peak": self.external_load_peak,
            "load1": self.load1,
            "cpu_busy": self.cpu_busy,
            "build_cpu": self.build_cpu,
            "psi_cpu_some": self.psi_cpu_some,
            "psi_memory_some": self.psi_memory_some,
            "psi_memory_full": self.psi_memory_full,
            "psi_io_some": self.psi_io_some,
            "mem_total_bytes": self.mem_total_bytes,
            "mem_available_bytes": self.mem_available_bytes,
            "mem_limit_bytes": self.mem_limit_bytes,
            "swap_pages_s": self.swap_pages_s,
            "build_rss_bytes": self.build_rss_bytes,
            "job_rss_peak_bytes": self.job_rss_peak_bytes,
            "idle_s": None if self.idle_s is None else round(self.idle_s, 1),
        }


#: Weight of the newest sample in the smoothed loads: a step in external load
#: shows at half its size after one tick and at 7/8 after three.
SMOOTHING = 0.5

#: Seconds over which the external load's peak is kept: growth waits until
#: a calm has lasted this long.
PEAK_WINDOW_S = 3.0

#: Finished jobs whose peak memory is remembered.
JOB_HISTORY = 64


class Sampler:
    """Reads the machine once per tick and keeps what rates need.

    Set :attr:`root` to the build's pid once it runs; *idle* tells the
    user's idle seconds, when a policy needs them.
    """

    def __init__(
        self,
        root: int | None = None,
        tools: frozenset[str] = TOOLS,
        idle: Callable[[float], float | None] | None = None,
    ) -> None:
        self.root = root
        self.tools = tools
        self.idle = idle
        self._cgroups = proc.memory_cgroups()
        self._previous: _Counters | None = None
        self._runnable: float | None = None
        #: Runnable tasks not the build's at the previous tick.
        self._others = 0
        self._external: float | None = None
        self._recent_external: deque[tuple[float, float]] = deque()
        #: Peak memory of each running job, and of the last finished ones.
        self._job_peaks: dict[int, int] = {}
        self._finished_peaks: deque[int] = deque(maxlen=JOB_HISTORY)

    def sample(self) -> Metrics:
        """Read the machine's state now."""
        now = time.monotonic()
        load = proc.read_loadavg()
        memory = proc.read_meminfo()
        if load is None or memory is None:
            raise MetricsError("cannot read /proc/loadavg or /proc/meminfo")
        processes = proc.read_processes()
        build = BuildUse((), frozenset(), 0, 0.0, 0, 0)
        if self.root is not None:
            build = build_use(processes, self.root, self.tools)
        counters = _Counters(
            time_s=now,
            cpu_busy_s=proc.read_cpu_busy_s(),
            own_cpu_s=_own_cpu_s(),
            build_cpu_s=build.cpu_s,
            swap_pages=proc.read_swap_pages(),
            pressure={r: proc.read_pressure(r) for r in ("cpu", "memory", "io")},
        )
        previous, self._previous = self._previous, counters
        rates = counters.rates_since(previous)
        # Runnable tasks from the same scan as the build's, so the two agree;
        # bcrun itself (reading now) is not one of them.
        me = os.getpid()
        others = sum(
            process.state == "R" and pid not in build.pids and pid != me
            for pid, process in processes.items()
        )
        runnable = others + build.runnable
        # A process that runs for an instant (a shell command, a status
        # query) is not load: only what ran at two ticks in a row counts.
        external = float(min(others, self._others))
        self._others = others
        if rates.cpu_busy is not None and rates.build_cpu is not None:
            # CPU time catches what the scan cannot see (busy threads of a
            # sleeping main thread) and what ran between two ticks.
            busy = rates.cpu_busy - rates.build_cpu - rates.own_cpu
            external = max(external, busy)
        self._runnable = _smooth(self._runnable, runnable)
        self._external = _smooth(self._external, external)
        recent = self._recent_external
        recent.append((now, self._external))
        while recent[0][0] < now - PEAK_WINDOW_S:
            recent.popleft()
        total, available, limit = memory.total_bytes, memory.available_bytes, None
        cgroup = proc.read_cgroup_memory(self._cgroups)
        if cgroup is not None and cgroup.limit_bytes < total:
            total, limit = cgroup.limit_bytes, cgroup.limit_bytes
            available = min(available, cgroup.available_bytes)
        local = time.localtime()
        return Metrics(
            time_s=now,
            cpus=usable_cpus(),
            load1=load.load1,
            load5=load.load5,
            load15=load.load15,
            runnable=round(self._runnable, 3),
            external_load=round(self._external, 3),
            external_load_peak=round(max(value for _, value in recent), 3),
            cpu_busy=rates.cpu_busy,
            psi_cpu_some=rates.pressure_some.get("cpu"),
            psi_memory_some=rates.pressure_some.get("memory"),
            psi_memory_full=rates.pressure_full.get("memory"),
            psi_io_some=rates.pressure_some.get("io"),
            mem_total_bytes=total,
            mem_available_bytes=available,
            mem_limit_bytes=limit,
            swap_pages_s=rates.swap_pages_s,
            jobs=build.jobs,
            build_cpu=rates.build_cpu,
            build_rss_bytes=build.rss_bytes,
            job_rss_peak_bytes=self._job_peak(build.jobs),
            idle_s=self.idle(time.time()) if self.idle else None,
            weekday=local.tm_wday,
            minute_of_day=local.tm_hour * 60 + local.tm_min,
        )

    def _job_peak(self, jobs: tuple[Job, ...]) -> int | None:
        """The most memory a finished job of this build took: a running job
        may still be growing."""
        running = {job.pid: job.rss_bytes for job in jobs}
        for pid in [pid for pid in self._job_peaks if pid not in running]:
            self._finished_peaks.append(self._job_peaks.pop(pid))
        for pid, rss in running.items():
            self._job_peaks[pid] = max(self._job_peaks.get(pid, 0), rss)
        return max(self._finished_peaks) if self._finished_peaks else None


def _smooth(previous: float | None, value: float) -> float:
    if previous is None:
        return value
    return previous + SMOOTHING * (value - previous)


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


@dataclass(frozen=True)
class _Rates:
    cpu_busy: float | None = None
    build_cpu: float | None = None
    own_cpu: float = 0.0
    swap_pages_s: float | None = None
    pressure_some: dict[str, float] = field(default_factory=dict)
    pressure_full: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Counters:
    """Counters that mean something only as a difference between samples."""

    time_s: float
    cpu_busy_s: float | None
    own_cpu_s: float
    build_cpu_s: float
    swap_pages: int | None
    pressure: dict[str, proc.Pressure | None]

    def rates_since(self, old: _Counters | None) -> _Rates:
        if old is None or self.time_s <= old.time_s:
            return _Rates()
        elapsed = self.time_s - old.time_s

        def rate(new: float | None, before: float | None) -> float | None:
            if new is None or before is None:
                return None
            return round(max(new - before, 0) / elapsed, 3)

        some, full = {}, {}
        for resource, now in self.pressure.items():
            before = old.pressure.get(resource)
            if now is not None and before is not None:
                # Microseconds stalled per second: a share of the time.
                some[resource] = min((now.some_us - before.some_us) / elapsed / 1e6, 1)
                full[resource] = min((now.full_us - before.full_us) / elapsed / 1e6, 1)
        return _Rates(
            cpu_busy=rate(self.cpu_busy_s, old.cpu_busy_s),
            build_cpu=rate(self.build_cpu_s, old.build_cpu_s),
            own_cpu=rate(self.own_cpu_s, old.own_cpu_s) or 0.0,
            swap_pages_s=rate(self.swap_pages, old.swap_pages),
            pressure_some={k: round(max(v, 0), 4) for k, v in some.items()},
            pressure_full={k: round(max(v, 0), 4) for k, v in full.items()},
        )


@dataclass(frozen=True)
class JobserverUse:
    """How a build rooted at one process uses its jobserver."""

    #: Running clients (make, ninja): each runs one job without a token.
    clients: int
    #: Jobs that hold a token: a client's children beyond its first.
    holding: int
    #: Whether every client sleeps: one that runs, or waits to, may hold a
    #: token it has just taken and not yet given a job.
    settled: bool = True


def jobserver_use(root: int, clients: frozenset[str]) -> JobserverUse:
    """Count the clients named in *clients* under *root*, and the jobs that
    hold tokens.  Processes that vanish while we look are not counted."""
    processes = proc.read_processes()
    children = children_map(processes)
    found = tools_under(processes, root, clients)
    holding = sum(max(len(children.get(pid, ())) - 1, 0) for pid in found)
    settled = all(processes[pid].state == "S" for pid in found)
    return JobserverUse(len(found), holding, settled)
