"""The build's own processes: which of them are jobs, and what they use.

A *job* is what a build tool starts to do one piece of work: a process
whose parent is a build tool (make, ninja...) and below which no build tool
runs.  A shell that only runs a sub-make is not a job; the sub-make's jobs
are.  What the jobs use (CPU, memory, runnable tasks) is the build's load;
whatever else the machine runs is external load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bcrun.proc import ProcStat

#: Names of the processes that run jobs, as the kernel shows them (15 chars).
TOOLS = frozenset({"make", "gmake", "bmake", "ninja", "samu", "samurai", "cargo"})


@dataclass(frozen=True)
class Job:
    """One job and everything below it."""

    pid: int
    start_s: float
    pids: tuple[int, ...]
    rss_bytes: int
    #: Tasks of the job that are runnable now.
    runnable: int


@dataclass(frozen=True)
class BuildUse:
    """What the build rooted at one process uses now."""

    jobs: tuple[Job, ...]
    #: Every process of the build.
    pids: frozenset[int]
    #: Build tools running (make, ninja...): each holds one jobserver slot.
    tools: int
    #: CPU seconds of every process of the build, with the children they
    #: have waited for, so that a job that ended keeps counting.
    cpu_s: float
    rss_bytes: int
    runnable: int


def children_map(processes: Mapping[int, ProcStat]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for process in processes.values():
        children.setdefault(process.ppid, []).append(process.pid)
    return children


def subtree(root: int, children: Mapping[int, list[int]]) -> list[int]:
    """*root* and its descendants."""
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, ()))
    return found


def tools_under(
    processes: Mapping[int, ProcStat], root: int, names: frozenset[str]
) -> list[int]:
    """The processes named in *names* in the tree under *root* (included)."""
    if root not in processes:
        return []
    tree = subtree(root, children_map(processes))
    return [pid for pid in tree if processes[pid].name in names]


def build_use(
    processes: Mapping[int, ProcStat], root: int, tools: frozenset[str] = TOOLS
) -> BuildUse:
    """Split the tree under *root* into jobs; empty if *root* is gone."""
    if root not in processes:
        return BuildUse((), frozenset(), 0, 0.0, 0, 0)
    children = children_map(processes)
    pids = subtree(root, children)
    has_tool = {pid: False for pid in pids}
    # Children come after their parents in pids: walk it backwards.
    for pid in reversed(pids):
        if processes[pid].name in tools:
            has_tool[pid] = True
        if has_tool[pid] and pid != root:
            has_tool[processes[pid].ppid] = True
    jobs = []
    # (pid, whether a build tool is above it); without any build tool in
    # the tree, the root's children are the jobs.
    stack = [(child, True) for child in children.get(root, ())]
    if has_tool[root]:
        stack = [(root, False)]
    while stack:
        pid, under_tool = stack.pop()
        process = processes[pid]
        if under_tool and not has_tool[pid]:
            members = subtree(pid, children)
            jobs.append(
                Job(
                    pid=pid,
                    start_s=process.start_s,
                    pids=tuple(members),
                    rss_bytes=sum(processes[p].rss_bytes for p in members),
                    runnable=sum(processes[p].state == "R" for p in members),
                )
            )
            continue
        below_tool = under_tool or process.name in tools
        stack.extend((child, below_tool) for child in children.get(pid, ()))
    return BuildUse(
        jobs=tuple(jobs),
        pids=frozenset(pids),
        tools=sum(processes[pid].name in tools for pid in pids),
        cpu_s=sum(processes[pid].cpu_s for pid in pids),
        rss_bytes=sum(processes[pid].rss_bytes for pid in pids),
        runnable=sum(processes[pid].state == "R" for pid in pids),
    )
