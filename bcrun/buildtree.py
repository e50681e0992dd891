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
    processes: Mapping[int, ProcStat],
    root: int,
    tools: frozenset[str] = TOOLS,
    children: Mapping[int, list[int]] | None = None,
) -> BuildUse:
    """Split the tree under *root* into jobs; empty if *root* is gone.
    *children* is :func:`children_map` of *processes*, if already made."""
    if root not in processes:
        return BuildUse((), frozenset(), 0, 0.0, 0, 0)
    if children is None:
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


#: What every bcrun running a build calls itself (/proc/PID/comm), so that
#: builds find each other in the process table, whoever runs them.
BCRUN = "bcrun"


def peer_bcruns(
    processes: Mapping[int, ProcStat], me: int, mine: frozenset[int]
) -> list[int]:
    """The other bcrun processes that run builds of their own: not *me*, not
    in my build (*mine*), not above me, and not inside another bcrun's build
    (a nested bcrun's jobs are its outer build's)."""
    above: set[int] = set()
    pid = me
    while pid in processes and pid not in above:
        above.add(pid)
        pid = processes[pid].ppid

    def nested(pid: int) -> bool:
        seen = {pid}
        pid = processes[pid].ppid
        while pid in processes and pid not in seen:
            if processes[pid].name == BCRUN:
                return True
            seen.add(pid)
            pid = processes[pid].ppid
        return False

    return [
        pid
        for pid, process in processes.items()
        if process.name == BCRUN
        and pid not in above
        and pid not in mine
        and not nested(pid)
    ]
