"""Readers of this process's cgroups: its true memory limit.

A container sees the host's memory in /proc; what it may use is
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from bcrun.proc import PROC, read_text
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


@dataclass(frozen=True)
class Cgroup:
    """This process's cgroup in one hierarchy."""

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


@dataclass(frozen=True)
class Cgroups:
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
        mount = (_unescape(fields[3]), Path(_unescape(fields[4])))
        if tail[0] == "cgroup2":
            mounts.setdefault("", []).append(mount)
        elif tail[0] == "cgroup":
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


# -- memory limits ---------------------------------------------------------------


@dataclass(frozen=True)
class CgroupMemory:
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
    return replace(tightest, available_bytes=available)
