"""Readers of this process's cgroups: its true CPU capacity and memory limit.

A container sees the host's CPUs and memory in /proc; what it may use is
set in its cgroups, on its own cgroup or on any ancestor (Kubernetes puts
the limits on the pod's cgroup, not the container's).  So every reader
here walks the chain from this process's cgroup up to the top of what is
mounted, and the tightest level binds.

Both cgroup versions: v2 has one unified hierarchy for every controller;
v1 mounts a hierarchy per controller (or a few together, ``cpu,cpuacct``),
and a process may sit at a different path in each (cgroups(7)).

As in :mod:`bcrun.proc`, parsers take text and readers return None where
a file is missing or unreadable, or holds what they cannot parse: that
level then sets no limit.  A reader costs a few small file reads and may
run every tick.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, TypeVar

from bcrun.proc import PROC, Pressure, parse_pressure, read_text
from bcrun.units import format_size

#: cgroup v1 reports "no limit" as a huge page-aligned number.
UNLIMITED_V1 = 1 << 62

T = TypeVar("T")


def _parsed(parse: Callable[..., T], *paths: Path) -> T | None:
    """*parse* of the texts of *paths*; None if one is missing, unreadable
    or holds what *parse* cannot read."""
    texts = []
    for path in paths:
        text = read_text(path)
        if text is None:
            return None
        texts.append(text)
    try:
        return parse(*texts)
    except (IndexError, KeyError, ValueError):
        return None


# -- finding the cgroups ----------------------------------------------------------


class Cgroup(NamedTuple):
    """This process's cgroup in one hierarchy.  (Named tuples here, not
    dataclasses: the CPU capacity is read before the build starts, and
    importing dataclasses would add several milliseconds to that.)"""

    #: 1 or 2.
    version: int
    #: This process's cgroup directory.
    path: Path
    #: Where the hierarchy is mounted: the top of what this process sees.
    mount: Path

    def levels(self) -> list[Path]:
        """:attr:`path` and its parents up to the mount point, leaf first."""
        return [
            path
            for path in (self.path, *self.path.parents)
            if path.is_relative_to(self.mount)
        ]


class Cgroups(NamedTuple):
    """This process's cgroup for each controller bcrun reads; None where
    that controller is not mounted.  On v2 all are the same cgroup."""

    cpu: Cgroup | None = None
    cpuacct: Cgroup | None = None
    cpuset: Cgroup | None = None
    memory: Cgroup | None = None


CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory")


def find_cgroups(cgroup_text: str, mountinfo_text: str) -> Cgroups:
    """This process's cgroups, from the texts of /proc/self/cgroup and
    /proc/self/mountinfo.

    A controller is in the v1 hierarchy whose mount options name it, else
    in the v2 one: a controller is bound to one hierarchy at a time, and a
    hybrid system mounts both.
    """
    mounts = _cgroup_mounts(mountinfo_text)
    paths: dict[str, str] = {}  # controller ("" for v2) -> path in its hierarchy
    for line in cgroup_text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            paths[""] = path
        for controller in controllers.split(","):
            paths.setdefault(controller, path)
    found: dict[str, Cgroup | None] = {}
    for controller in CONTROLLERS:
        if controller in mounts and controller in paths:
            found[controller] = _cgroup(1, mounts[controller], paths[controller])
        elif "" in mounts and "" in paths:
            found[controller] = _cgroup(2, mounts[""], paths[""])
        else:
            found[controller] = None
    return Cgroups(**found)


def own_cgroups() -> Cgroups:
    """This process's cgroups now (two small reads: call it again to follow
    a process moved to another cgroup)."""
    return find_cgroups(
        read_text(PROC / "self" / "cgroup") or "",
        read_text(PROC / "self" / "mountinfo") or "",
    )


def _cgroup_mounts(mountinfo_text: str) -> dict[str, list[tuple[str, Path]]]:
    """The cgroup mounts as ``(root, mount point)`` by controller, "" for
    v2, in the order mounted (proc(5), "/proc/pid/mountinfo")."""
    mounts: dict[str, list[tuple[str, Path]]] = {}
    for line in mountinfo_text.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        if tail[0] not in ("cgroup", "cgroup2"):
            continue  # most lines: a path made of each would cost a build's start
        mount = (_unescape(fields[3]), Path(_unescape(fields[4])))
        if tail[0] == "cgroup2":
            mounts.setdefault("", []).append(mount)
        else:
            for option in tail[2].split(","):
                mounts.setdefault(option, []).append(mount)
    return mounts


def _unescape(field: str) -> str:
    """mountinfo writes a space in a path as ``\\040``."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match[1], 8)), field)


def _cgroup(version: int, mounts: list[tuple[str, Path]], path: str) -> Cgroup | None:
    """The first mount of the hierarchy that shows *path*."""
    for root, point in mounts:
        inside = _inside(root, point, path)
        if inside is not None:
            return Cgroup(version, inside, point)
    return None


def _inside(root: str, point: Path, path: str) -> Path | None:
    """Where the cgroup *path* is under a mount of the hierarchy's *root*
    at *point*; None when it is not in the mounted part."""
    # In a cgroup namespace the mount's root is "/" and paths are relative
    # to the namespace's root; a cgroup outside it shows as "/../.."
    # (cgroup_namespaces(7)), and one outside a mounted sub-root is not
    # reachable from here either.
    if ".." in path.split("/"):
        return None
    if root != "/" and not (path == root or path.startswith(root + "/")):
        return None
    relative = path[len(root) :] if root != "/" else path
    return point / relative.lstrip("/")


# -- CPU limits -----------------------------------------------------------------


class CpuLimit(NamedTuple):
    """The CPUs this process may use, and which limit says so."""

    #: Perhaps a fraction: a quota of 150 ms per 100 ms is 1.5 CPUs.
    cpus: float
    #: ``cpu.max of /sys/fs/cgroup/ci.slice: 1.5 CPUs``, ``affinity: 2 CPUs``.
    source: str
    #: The cgroup directory whose quota binds, where :func:`read_cpu_stat`
    #: and :func:`read_cpu_pressure` look; None when a cpuset or the
    #: affinity binds.
    quota_dir: Path | None = None


def parse_cpu_max(text: str) -> float | None:
    """CPUs of a v2 ``cpu.max``: ``150000 100000`` is 1.5, ``max 100000``
    is None (no limit)."""
    quota, period = text.split()
    if quota == "max":
        return None
    return _cpus(int(quota), int(period))


def parse_cfs_quota(quota_text: str, period_text: str) -> float | None:
    """CPUs of v1 ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us``; a quota
    of -1 is None (no limit)."""
    return _cpus(int(quota_text), int(period_text))


def _cpus(quota_us: int, period_us: int) -> float | None:
    if quota_us <= 0 or period_us <= 0:
        return None
    return quota_us / period_us


def parse_cpu_list(text: str) -> frozenset[int]:
    """The CPUs of a cpuset list, ``0-3,8,10-11`` (cpuset(7), "List format")."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return frozenset(cpus)


def read_cpu_limit(cgroups: Cgroups, affinity: int) -> CpuLimit:
    """The fewest CPUs any limit leaves this process: the CPU quota and the
    cpuset of its cgroup and of every ancestor, and its *affinity* (the
    number of CPUs in ``os.sched_getaffinity(0)``).

    On a tie the affinity is named (the top cpuset has every CPU), then a
    quota (so that :func:`read_cpu_stat` follows it), then the level
    nearest the process.
    """
    limits = [CpuLimit(float(affinity), _cpu_source("affinity", affinity))]
    if cgroups.cpu is not None:
        limits += _quotas(cgroups.cpu)
    if cgroups.cpuset is not None:
        limits += _cpusets(cgroups.cpuset)
    # min() keeps the first of equals.
    return min(limits, key=lambda limit: limit.cpus)


def _quotas(cpu: Cgroup) -> list[CpuLimit]:
    """The CPU quotas on *cpu*'s chain, leaf first."""
    limits = []
    for level in cpu.levels():
        if cpu.version == 2:
            name, cpus = "cpu.max", _parsed(parse_cpu_max, level / "cpu.max")
        else:
            name = "cfs quota"
            cpus = _parsed(
                parse_cfs_quota, level / "cpu.cfs_quota_us", level / "cpu.cfs_period_us"
            )
        if cpus is not None:
            limits.append(
                CpuLimit(cpus, _cpu_source(f"{name} of {level}", cpus), level)
            )
    return limits


def _cpusets(cpuset: Cgroup) -> list[CpuLimit]:
    """The cpusets on *cpuset*'s chain, leaf first."""
    names: tuple[str, ...] = ("cpuset.cpus.effective",)
    if cpuset.version == 1:
        # What the parents allow too; older kernels have only cpuset.cpus.
        names = ("cpuset.effective_cpus", "cpuset.cpus")
    limits = []
    for level in cpuset.levels():
        for name in names:
            cpus = _parsed(parse_cpu_list, level / name)
            if cpus is not None:
                break
        # An empty list is no limit: a v1 cpuset not set up yet.
        if cpus:
            count = len(cpus)
            limits.append(
                CpuLimit(float(count), _cpu_source(f"cpuset of {level}", count))
            )
    return limits


def _cpu_source(where: str, cpus: float) -> str:
    return f"{where}: {cpus:g} CPU{'' if cpus == 1 else 's'}"


# -- CPU accounting ---------------------------------------------------------------


class CpuStat(NamedTuple):
    """CPU accounting of one cgroup, counted since it was made."""

    #: CPU seconds its processes used; None on v1 where this process's
    #: cpuacct hierarchy has no cgroup at the same path.
    usage_s: float | None
    #: Enforcement periods (``cpu.cfs_period_us`` each) in which it had
    #: tasks to run, and those of them in which it ran out of quota.
    periods: int
    throttled_periods: int
    #: Time its run queues spent throttled, summed over the CPUs: it may
    #: pass the time elapsed.
    throttled_s: float


def parse_cpu_stat(text: str) -> CpuStat:
    """A ``cpu.stat``: v2 (``usage_usec``, ``nr_periods``, ``nr_throttled``,
    ``throttled_usec``) or v1 (``throttled_time`` in ns, no usage: that is
    ``cpuacct.usage``, see Documentation/scheduler/sched-bwc.rst)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        if line.strip():
            name, _, value = line.partition(" ")
            values[name] = int(value)
    if "throttled_usec" in values:
        throttled_s = values["throttled_usec"] / 1e6
    else:
        throttled_s = values["throttled_time"] / 1e9
    usage_us = values.get("usage_usec")
    return CpuStat(
        usage_s=None if usage_us is None else usage_us / 1e6,
        periods=values["nr_periods"],
        throttled_periods=values["nr_throttled"],
        throttled_s=throttled_s,
    )


def read_cpu_stat(cgroups: Cgroups, limit: CpuLimit) -> CpuStat | None:
    """The accounting of the cgroup whose quota is *limit* (from
    :func:`read_cpu_limit`); None when no quota binds."""
    cpu, level = cgroups.cpu, limit.quota_dir
    if cpu is None or level is None:
        return None
    stat = _parsed(parse_cpu_stat, level / "cpu.stat")
    if stat is None or cpu.version == 2:
        return stat
    return stat._replace(usage_s=_cpuacct_usage_s(cpu, cgroups.cpuacct, level))


def _cpuacct_usage_s(cpu: Cgroup, cpuacct: Cgroup | None, level: Path) -> float | None:
    """v1 ``cpuacct.usage`` of the cgroup at *level*'s path in the cpuacct
    hierarchy (the same one when cpuacct is mounted with cpu), if that is on
    this process's chain there too: systemd and container engines make the
    same path in every hierarchy."""
    if cpuacct is None or not level.is_relative_to(cpu.mount):
        return None
    same = cpuacct.mount / level.relative_to(cpu.mount)
    if same not in cpuacct.levels():
        return None
    usage_ns = _parsed(int, same / "cpuacct.usage")
    return None if usage_ns is None else usage_ns / 1e9


def read_cpu_pressure(cgroups: Cgroups, limit: CpuLimit) -> Pressure | None:
    """The v2 ``cpu.pressure`` of the cgroup whose quota is *limit*: time
    its tasks waited for CPU.  None on v1, without PSI, and when no quota
    binds."""
    cpu, level = cgroups.cpu, limit.quota_dir
    if cpu is None or cpu.version != 2 or level is None:
        return None
    return _parsed(parse_pressure, level / "cpu.pressure")


# -- memory limits ---------------------------------------------------------------


class CgroupMemory(NamedTuple):
    """The smallest memory limit on the way from this process's cgroup to
    the top, and what the limits leave."""

    limit_bytes: int
    #: What the limits leave: limit minus usage, page cache that can be
    #: dropped (inactive files) counted as free, as the kernel would.
    available_bytes: int
    #: ``memory.max of /sys/fs/cgroup/ci.slice: 1.0G``.
    source: str


def parse_memory_limit(text: str) -> int | None:
    """Bytes of a ``memory.max``, ``memory.high`` or v1
    ``memory.limit_in_bytes``; None for no limit (``max``, or v1's huge
    number)."""
    text = text.strip()
    if text == "max":
        return None
    limit = int(text)
    return None if limit >= UNLIMITED_V1 else limit


def parse_memory_stat(text: str, name: str) -> int:
    """One field of a ``memory.stat``; 0 if absent."""
    for line in text.splitlines():
        field, _, value = line.partition(" ")
        if field == name:
            return int(value)
    return 0


def read_memory_level(version: int, directory: Path) -> CgroupMemory | None:
    """The memory limit set at one cgroup directory and what it leaves;
    None if it sets none."""
    names: tuple[str, ...]
    if version == 2:
        # Above memory.high the kernel throttles and reclaims hard: as good
        # as a limit for a build (Documentation/admin-guide/cgroup-v2.rst).
        names = ("memory.max", "memory.high")
        usage_name, inactive_name = "memory.current", "inactive_file"
    else:
        # Soft limits only matter under global pressure: not limits.
        names = ("memory.limit_in_bytes",)
        usage_name, inactive_name = "memory.usage_in_bytes", "total_inactive_file"
    limits = []
    for name in names:
        limit = _parsed(parse_memory_limit, directory / name)
        if limit is not None:
            limits.append((limit, name))
    usage = _parsed(int, directory / usage_name)
    if not limits or usage is None:
        return None
    limit, name = min(limits, key=lambda found: found[0])
    inactive = _parsed(
        lambda text: parse_memory_stat(text, inactive_name), directory / "memory.stat"
    )
    available = max(limit - max(usage - (inactive or 0), 0), 0)
    return CgroupMemory(
        limit, available, f"{name} of {directory}: {format_size(limit)}"
    )


def read_cgroup_memory(cgroups: Cgroups) -> CgroupMemory | None:
    """The smallest memory limit on this process's cgroup and its
    ancestors, and the least memory any of them leaves (a parent shared
    with siblings may leave less than a smaller limit lower down)."""
    memory = cgroups.memory
    if memory is None:
        return None
    levels = [read_memory_level(memory.version, level) for level in memory.levels()]
    found = [level for level in levels if level is not None]
    if not found:
        return None
    tightest = min(found, key=lambda level: level.limit_bytes)
    available = min(level.available_bytes for level in found)
    return tightest._replace(available_bytes=available)
