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
from typing import NamedTuple

from bcrun import cgroup, proc
from bcrun.buildtree import (
    TOOLS,
    BuildUse,
    Job,
    build_use,
    children_map,
    peer_bcruns,
    tools_under,
)
from bcrun.errors import MetricsError
from bcrun.jobcost import JobCost, RunnableTime, runnable_threads_now, smooth
from bcrun.remote import Remote
from bcrun.startcount import usable_cpus


def own_cpus() -> frozenset[int] | None:
    """The CPUs this process may run on, when not all of the machine's."""
    try:
        mine = frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    return mine if len(mine) < (os.cpu_count() or 0) else None


@dataclass(frozen=True)
class PeerBuild:
    """Another bcrun's build on this machine, as the process table shows it."""

    pid: int
    #: Seconds after boot its bcrun started, and how long ago that was.
    start_s: float
    age_s: float
    #: Its runnable load: runnable tasks at either of the last two looks,
    #: or the CPUs it kept busy, the larger; and the most of the last
    #: PEER_WINDOW_S and of the last LONG_WINDOW_S (a build's tool can be
    #: slow to start the next job on a busy machine: a dip is not a step).
    load: float
    load_recent: float = 0.0
    load_peak: float = 0.0

    @property
    def key(self) -> tuple[float, int]:
        """Its place among builds: the oldest first."""
        return (self.start_s, self.pid)


@dataclass(frozen=True, kw_only=True)
class Metrics:
    """One sample of the machine and the build, units in the names.

    Rates (CPU, pressure, swap) are over the interval since the previous
    sample; None where the kernel does not tell (no PSI, first sample).
    """

    time_s: float = 0.0
    cpus: int = 1
    #: The CPUs this build may really use: its affinity, and its cgroups'
    #: cpusets and quotas up the chain (a quota may make it a fraction).
    cpu_capacity: float | None = None
    #: Where that came from: "cfs quota of /sys/fs/cgroup/cpu/ci: 1 CPU".
    cpu_capacity_source: str = ""
    #: CPU-seconds a second the binding quota held back: now (seen at two
    #: looks in a row) and the most over the last THROTTLE_WINDOW_S.
    cpu_throttled: float | None = None
    cpu_throttled_peak: float | None = None
    load1: float = 0.0
    load5: float = 0.0
    load15: float = 0.0
    #: Runnable processes, smoothed over the last few samples.
    runnable: float = 0.0
    #: Load that is no bcrun build's: runnable processes seen at each look
    #: of the last SCAN_PERSIST_S, or the CPUs kept busy in each interval
    #: of the last CPU_PERSIST_S, the larger.  A burst shorter than that
    #: is not load: it is over before a count could follow it.
    external_load: float = 0.0
    #: The highest external load of the last PEAK_WINDOW_S, and of the
    #: last LONG_WINDOW_S: growth by a job or two waits for the long calm.
    external_load_peak: float | None = None
    external_load_peak_long: float | None = None
    #: The other bcrun builds here, which share the target with this one.
    peers: tuple[PeerBuild, ...] = ()
    #: The most builds (this one and its peers) at a look of the last
    #: LONG_WINDOW_S: a peer's share was smaller then.
    builds_peak_long: int | None = None
    #: This build's place among them (see :attr:`PeerBuild.key`).
    own_key: tuple[float, int] = (0.0, 0)
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
    #: The cgroup's memory limit; None when none binds; and where it is set.
    mem_limit_bytes: int | None = None
    mem_limit_source: str = ""
    swap_pages_s: float | None = None
    #: The runnable load one running job of this build makes: its runnable
    #: threads, on average (below 1 for jobs that wait on I/O or a remote
    #: compiler, above for multithreaded ones), on a ladder of COSTS so
    #: that noise does not move it; None until jobs were seen.
    job_cost: float | None = None
    #: Job slots of a distributed compiler's remote hosts that answer now,
    #: and which engine and hosts: "distcc: 2 hosts, 8 slots"; None
    #: without one.
    remote_slots: int | None = None
    remote_source: str = ""
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

    def summary(self) -> dict[str, float | int | str | None]:
        """The figures status and --trace show, by name."""
        return {
            "running": self.jobs_running,
            "runnable": self.runnable,
            "external_load": self.external_load,
            "external_load_peak": self.external_load_peak,
            "external_load_peak_long": self.external_load_peak_long,
            "builds": len(self.peers) + 1,
            "cpu_capacity": self.cpu_capacity,
            "cpu_capacity_source": self.cpu_capacity_source or None,
            "cpu_throttled": self.cpu_throttled,
            "job_cost": self.job_cost,
            "remote_slots": self.remote_slots,
            "remote_source": self.remote_source or None,
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
            "mem_limit_source": self.mem_limit_source or None,
            "swap_pages_s": self.swap_pages_s,
            "build_rss_bytes": self.build_rss_bytes,
            "job_rss_peak_bytes": self.job_rss_peak_bytes,
            "idle_s": None if self.idle_s is None else round(self.idle_s, 1),
        }


#: Weight of the newest sample in the smoothed runnable count (shown only).
SMOOTHING = 0.5

#: Seconds a process must be seen runnable, at every look, to be load; and
#: an interval of CPU time (slower to tell: it sees threads the scan cannot).
#: A burst shorter than these (0.3 s every 2 s) is never load.  A load seen
#: at one look only is looked at again this long after (:attr:`Sampler.
#: unconfirmed`), not a whole tick: the count drops within 1 s of a load.
SCAN_PERSIST_S = 0.4
CPU_PERSIST_S = 1.0

#: Seconds over which the external load's peak is kept: growth waits until
#: the room has lasted this long; a small growth, which noise could undo,
#: waits for the room to have lasted the longer window.
PEAK_WINDOW_S = 0.5
LONG_WINDOW_S = 5.0
PEER_WINDOW_S = 2.0

#: Seconds over which throttling by a quota holds growth back.
THROTTLE_WINDOW_S = 10.0

#: Seconds between two looks at which cgroups this process is in: a
#: process can be moved.  Their limits are read at every tick.
CGROUPS_S = 5.0

#: Finished jobs whose peak memory is remembered.
JOB_HISTORY = 64


class Window:
    """The values of the last *span_s* seconds of samples (and the one
    just before them), for the lowest or highest of them."""

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self._values: deque[tuple[float, float]] = deque()

    def add(self, time_s: float, value: float) -> None:
        values = self._values
        values.append((time_s, value))
        # Keep one sample at or past the span, so that a span of one tick
        # spans two looks whatever the jitter.
        while len(values) > 1 and values[1][0] <= time_s - self.span_s * 0.9:
            values.popleft()

    def lowest(self) -> float:
        return min(value for _, value in self._values)

    def highest(self) -> float:
        return max(value for _, value in self._values)


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
        #: What a distributed compiler's hosts offer, kept up to date by
        #: whoever reads them (see bcrun.remote).
        self.remote: Remote | None = None
        self._cgroups = cgroup.own_cgroups()
        self._cgroups_read_s = time.monotonic()
        self._previous: _Counters | None = None
        self._runnable: float | None = None
        self._scanned = Window(SCAN_PERSIST_S)
        self._busy = Window(CPU_PERSIST_S)
        self._external = Window(PEAK_WINDOW_S)
        self._external_long = Window(LONG_WINDOW_S)
        self._builds_long = Window(LONG_WINDOW_S)
        self._throttled = Window(SCAN_PERSIST_S)
        self._throttled_long = Window(THROTTLE_WINDOW_S)
        #: Each peer's CPU seconds and runnable tasks at the last look, and
        #: its recent loads.
        self._peers: dict[int, tuple[float, int, Window, Window]] = {}
        #: What a job of the build costs.
        self._cost = JobCost()
        self._runnable_time = RunnableTime()
        # A kernel without scheduler statistics shows "0 0 0"; this process
        # has run by now.
        own = proc.read_runnable_s(os.getpid())
        self._schedstat = own is not None and sum(own.values()) > 0
        #: Whether the last look saw runnable tasks the looks before it did
        #: not: a load that the next look, SCAN_PERSIST_S later, confirms.
        self.unconfirmed = False
        #: Peak memory of each running job, and of the last finished ones.
        self._job_peaks: dict[int, int] = {}
        self._finished_peaks: deque[int] = deque(maxlen=JOB_HISTORY)

    def sample(self) -> Metrics:
        """Read the machine's state now."""
        now = time.monotonic()
        boot_now = time.clock_gettime(time.CLOCK_BOOTTIME)
        load = proc.read_loadavg()
        memory = proc.read_meminfo()
        if load is None or memory is None:
            raise MetricsError("cannot read /proc/loadavg or /proc/meminfo")
        processes = proc.read_processes()
        children = children_map(processes)
        build = BuildUse((), frozenset(), 0, 0.0, 0, 0)
        if self.root is not None:
            build = build_use(processes, self.root, self.tools, children)
        me = os.getpid()
        peer_uses = {
            pid: build_use(processes, pid, TOOLS, children)
            for pid in peer_bcruns(processes, me, build.pids)
        }
        # A bcrun with no child runs no build (bcrun status, jobs, serve).
        peer_uses = {pid: use for pid, use in peer_uses.items() if len(use.pids) > 1}
        # Bound to some of the machine's CPUs (a cpuset, taskset), only the
        # load on those is in the way.
        mine = own_cpus()
        if now - self._cgroups_read_s >= CGROUPS_S:
            self._cgroups, self._cgroups_read_s = cgroup.own_cgroups(), now
        cpus = usable_cpus()
        capacity = cgroup.read_cpu_limit(self._cgroups, cpus)
        quota = cgroup.read_cpu_stat(self._cgroups, capacity)
        pressure = {r: proc.read_pressure(r) for r in ("cpu", "memory", "io")}
        pressure["quota"] = cgroup.read_cpu_pressure(self._cgroups, capacity)
        counters = _Counters(
            time_s=now,
            # Under a quota, CPU time spent outside this cgroup is not ours
            # to give way to: only the cgroup's own counts.
            cpu_busy_s=(
                quota.usage_s
                if quota is not None and quota.usage_s is not None
                else proc.read_cpu_busy_s(mine)
            ),
            quota_throttled_s=quota.throttled_s if quota is not None else None,
            own_cpu_s=_own_cpu_s(),
            build_cpu_s=build.cpu_s,
            swap_pages=proc.read_swap_pages(),
            pressure=pressure,
        )
        previous, self._previous = self._previous, counters
        rates = counters.rates_since(previous)
        peers = self._peer_builds(processes, peer_uses, rates.elapsed_s)
        # Runnable tasks from the same scan as the builds', so the two
        # agree; bcrun itself (reading now) is not one of them.
        theirs = build.pids.union(*(use.pids for use in peer_uses.values()))
        others = sum(
            process.state == "R"
            and pid not in theirs
            and pid != me
            and (mine is None or process.processor in mine)
            for pid, process in processes.items()
        )
        runnable = others + build.runnable
        self._scanned.add(now, others)
        external = self._scanned.lowest()
        self.unconfirmed = others >= external + 1
        if rates.cpu_busy is not None and rates.build_cpu is not None:
            # CPU time catches what the scan cannot see (busy threads of a
            # sleeping main thread) and what ran between two looks.
            busy = (
                rates.cpu_busy
                - rates.build_cpu
                - rates.own_cpu
                - sum(peer.cpu for peer in peers)
            )
            self._busy.add(now, max(busy, 0.0))
            external = max(external, self._busy.lowest())
        self._runnable = smooth(self._runnable, runnable, SMOOTHING)
        self._measure_cost(boot_now, processes, build.jobs)
        throttled = throttled_peak = None
        if rates.quota_throttled is not None:
            # CPU-seconds a second held back; the quota's full pressure (all
            # its tasks stalled) says the same where the kernel has it.
            held = rates.quota_throttled
            full = rates.pressure_full.get("quota")
            if full is not None:
                held = max(held, full * capacity.cpus)
            self._throttled.add(now, held)
            self._throttled_long.add(now, held)
            throttled = round(self._throttled.lowest(), 3)
            throttled_peak = round(self._throttled_long.highest(), 3)
        self._external.add(now, external)
        self._external_long.add(now, external)
        self._builds_long.add(now, len(peers) + 1)
        total, available, limit = memory.total_bytes, memory.available_bytes, None
        limit_source = ""
        limited = cgroup.read_cgroup_memory(self._cgroups)
        if limited is not None and limited.limit_bytes < total:
            total, limit = limited.limit_bytes, limited.limit_bytes
            available = min(available, limited.available_bytes)
            limit_source = limited.source
        local = time.localtime()
        own = processes.get(me)
        return Metrics(
            time_s=now,
            cpus=cpus,
            cpu_capacity=capacity.cpus,
            cpu_capacity_source=capacity.source,
            cpu_throttled=throttled,
            cpu_throttled_peak=throttled_peak,
            load1=load.load1,
            load5=load.load5,
            load15=load.load15,
            runnable=round(self._runnable, 3),
            external_load=round(external, 3),
            external_load_peak=round(self._external.highest(), 3),
            external_load_peak_long=round(self._external_long.highest(), 3),
            peers=tuple(peer.build for peer in peers),
            builds_peak_long=int(self._builds_long.highest()),
            own_key=(own.start_s if own else 0.0, me),
            cpu_busy=rates.cpu_busy,
            psi_cpu_some=rates.pressure_some.get("cpu"),
            psi_memory_some=rates.pressure_some.get("memory"),
            psi_memory_full=rates.pressure_full.get("memory"),
            psi_io_some=rates.pressure_some.get("io"),
            mem_total_bytes=total,
            mem_available_bytes=available,
            mem_limit_bytes=limit,
            mem_limit_source=limit_source,
            swap_pages_s=rates.swap_pages_s,
            job_cost=self._cost.told(),
            remote_slots=self.remote.slots if self.remote else None,
            remote_source=self.remote.source if self.remote else "",
            jobs=build.jobs,
            build_cpu=rates.build_cpu,
            build_rss_bytes=build.rss_bytes,
            job_rss_peak_bytes=self._job_peak(build.jobs),
            idle_s=self.idle(time.time()) if self.idle else None,
            weekday=local.tm_wday,
            minute_of_day=local.tm_hour * 60 + local.tm_min,
        )

    def _measure_cost(
        self,
        boot_now: float,
        processes: dict[int, proc.ProcStat],
        jobs: tuple[Job, ...],
    ) -> None:
        """Follow the runnable load one job makes: the jobs' runnable time
        since the last look over the time they ran; without the kernel's
        count of it, the jobs' runnable threads now over the jobs."""
        if not jobs:
            return  # a serial step of the tool itself: nothing to learn
        if not self._schedstat:
            self._cost.look(runnable_threads_now(jobs, processes), len(jobs))
            return
        measured = self._runnable_time.look(boot_now, jobs, processes)
        if measured is not None:
            self._cost.look(*measured)

    def _peer_builds(
        self,
        processes: dict[int, proc.ProcStat],
        uses: dict[int, BuildUse],
        elapsed_s: float | None,
    ) -> list[_Peer]:
        """The peers' builds, their CPU rates from the last look's."""
        boot_now = time.clock_gettime(time.CLOCK_BOOTTIME)
        found = []
        last, self._peers = self._peers, {}
        for pid, use in uses.items():
            # The peer's bcrun itself, sampling, is not its build's load.
            runnable = use.runnable - (processes[pid].state == "R")
            before = last.get(pid)
            cpu = 0.0
            if before is not None and elapsed_s:
                cpu = max(use.cpu_s - before[0], 0.0) / elapsed_s
            seen = max(runnable, before[1] if before else runnable)
            load = max(seen, cpu)
            recent, loads = (
                before[2:] if before else (Window(PEER_WINDOW_S), Window(LONG_WINDOW_S))
            )
            recent.add(boot_now, load)
            loads.add(boot_now, load)
            self._peers[pid] = (use.cpu_s, runnable, recent, loads)
            start = processes[pid].start_s
            build = PeerBuild(
                pid=pid,
                start_s=start,
                age_s=round(boot_now - start, 2),
                load=round(load, 3),
                load_recent=round(recent.highest(), 3),
                load_peak=round(loads.highest(), 3),
            )
            found.append(_Peer(build, cpu))
        return found

    def _job_peak(self, jobs: tuple[Job, ...]) -> int | None:
        """The most memory a finished job of this build took: a running job
        may still be growing."""
        running = {job.pid: job.rss_bytes for job in jobs}
        for pid in [pid for pid in self._job_peaks if pid not in running]:
            self._finished_peaks.append(self._job_peaks.pop(pid))
        for pid, rss in running.items():
            self._job_peaks[pid] = max(self._job_peaks.get(pid, 0), rss)
        return max(self._finished_peaks) if self._finished_peaks else None


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


class _Peer(NamedTuple):
    build: PeerBuild
    #: CPUs its tree kept busy since the last look.
    cpu: float


@dataclass(frozen=True)
class _Rates:
    elapsed_s: float | None = None
    cpu_busy: float | None = None
    quota_throttled: float | None = None
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
    quota_throttled_s: float | None
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
            elapsed_s=elapsed,
            cpu_busy=rate(self.cpu_busy_s, old.cpu_busy_s),
            quota_throttled=rate(self.quota_throttled_s, old.quota_throttled_s),
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
