"""Readers of Linux's /proc files: raw numbers, no policy.

Each reader returns None (or an empty result) where the kernel does not
have the file (no PSI, another OS): bcrun then works with what it has.
Parsers take text, so that recorded files can be tested.  The cgroup
readers are in :mod:`bcrun.cgroup`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

PROC = Path("/proc")

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def read_text(path: Path | str) -> str | None:
    """The whole file, or None if it cannot be read."""
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.read()
    except OSError:
        return None


# -- load ---------------------------------------------------------------------


class LoadAvg(NamedTuple):
    load1: float
    load5: float
    load15: float
    #: Tasks runnable now (the reader among them), field 4 of /proc/loadavg.
    running: int


def parse_loadavg(text: str) -> LoadAvg:
    """``0.06 0.21 0.25 1/79 17596``."""
    fields = text.split()
    return LoadAvg(
        float(fields[0]),
        float(fields[1]),
        float(fields[2]),
        int(fields[3].split("/")[0]),
    )


def read_loadavg() -> LoadAvg | None:
    text = read_text(PROC / "loadavg")
    try:
        return parse_loadavg(text) if text else None
    except (IndexError, ValueError):
        return None


def parse_cpu_busy_s(text: str, cpus: frozenset[int] | None = None) -> float:
    """Seconds all CPUs (or those of *cpus*) spent busy (not idle, not
    waiting for I/O) since boot, from the ``cpu`` (``cpuN``) lines of
    /proc/stat."""
    busy = 0
    found = False
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if cpus is None and name != "cpu":
            continue
        if cpus is not None and not (name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        ticks = [int(field) for field in rest.split()]
        # user nice system idle iowait irq softirq steal (guest is in user).
        busy += sum(ticks[:8]) - ticks[3] - ticks[4]
        found = True
    if not found:
        raise ValueError("no cpu line")
    return busy / CLOCK_TICKS


def read_cpu_busy_s(cpus: frozenset[int] | None = None) -> float | None:
    text = read_text(PROC / "stat")
    try:
        return parse_cpu_busy_s(text, cpus) if text else None
    except (IndexError, ValueError):
        return None


# -- pressure (PSI) -------------------------------------------------------------


class Pressure(NamedTuple):
    """Microseconds since boot that some (or all) tasks stalled."""

    some_us: int
    full_us: int


def parse_pressure(text: str) -> Pressure:
    """``some avg10=0.00 avg60=0.27 avg300=1.00 total=621199827`` and a
    ``full`` line (absent for cpu before Linux 5.13)."""
    totals = {"some": 0, "full": 0}
    for line in text.splitlines():
        kind, *fields = line.split()
        for field in fields:
            if field.startswith("total="):
                totals[kind] = int(field[len("total=") :])
    return Pressure(totals["some"], totals["full"])


def read_pressure(resource: str) -> Pressure | None:
    """PSI of ``cpu``, ``memory`` or ``io``; None without PSI."""
    text = read_text(PROC / "pressure" / resource)
    try:
        return parse_pressure(text) if text else None
    except (IndexError, ValueError):
        return None


# -- memory ---------------------------------------------------------------------


class Memory(NamedTuple):
    total_bytes: int
    available_bytes: int


def parse_meminfo(text: str) -> Memory:
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        fields = rest.split()
        if fields:
            values[name] = int(fields[0]) * 1024
    available = values.get("MemAvailable")
    if available is None:  # before Linux 3.14
        available = values["MemFree"] + values.get("Cached", 0)
    return Memory(values["MemTotal"], available)


def read_meminfo() -> Memory | None:
    text = read_text(PROC / "meminfo")
    try:
        return parse_meminfo(text) if text else None
    except (KeyError, ValueError):
        return None


def parse_swap_pages(text: str) -> int:
    """Pages swapped in and out since boot, from /proc/vmstat."""
    total = 0
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("pswpin", "pswpout"):
            total += int(value)
    return total


def read_swap_pages() -> int | None:
    text = read_text(PROC / "vmstat")
    try:
        return parse_swap_pages(text) if text else None
    except ValueError:
        return None


# -- processes ----------------------------------------------------------------


class SignalMasks(NamedTuple):
    """A process's signals, as bit masks (bit N-1 for signal N)."""

    #: Sent and not yet handled, to the thread or to the whole process.
    pending: int
    blocked: int
    ignored: int
    caught: int

    def has(self, mask: int, sig: int) -> bool:
        return bool(mask >> (sig - 1) & 1)


def parse_signal_masks(text: str) -> SignalMasks:
    """The Sig* and ShdPnd lines of /proc/PID/status."""
    fields = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt"):
            fields[name] = int(value.strip(), 16)
    return SignalMasks(
        pending=fields["SigPnd"] | fields["ShdPnd"],
        blocked=fields["SigBlk"],
        ignored=fields["SigIgn"],
        caught=fields["SigCgt"],
    )


def read_signal_masks(pid: int) -> SignalMasks | None:
    text = read_text(f"/proc/{pid}/status")
    try:
        return None if text is None else parse_signal_masks(text)
    except (KeyError, ValueError):
        return None


class ProcStat(NamedTuple):
    pid: int
    ppid: int
    name: str
    #: R running, S sleeping, D disk wait, T stopped, Z zombie...
    state: str
    #: CPU seconds of the process, and of its children it has waited for.
    cpu_s: float
    #: Seconds after boot it started.
    start_s: float
    rss_bytes: int
    #: Its threads; the state is its main thread's.
    threads: int = 1
    #: The CPU it last ran on.
    processor: int = -1
    #: The part of cpu_s that its children it has waited for took.
    children_cpu_s: float = 0.0


def parse_stat(text: str) -> ProcStat:
    """One /proc/PID/stat line; the name may hold spaces and parentheses."""
    pid, _, rest = text.partition(" (")
    name, _, rest = rest.rpartition(") ")
    fields = rest.split()
    # fields[0] is field 3 of proc(5): state.
    children = int(fields[13]) + int(fields[14])  # cutime cstime
    ticks = int(fields[11]) + int(fields[12]) + children  # and utime stime
    return ProcStat(
        pid=int(pid),
        ppid=int(fields[1]),
        name=name,
        state=fields[0],
        cpu_s=ticks / CLOCK_TICKS,
        start_s=int(fields[19]) / CLOCK_TICKS,
        rss_bytes=int(fields[21]) * PAGE_SIZE,
        threads=int(fields[17]),
        processor=int(fields[36]) if len(fields) > 36 else -1,
        children_cpu_s=children / CLOCK_TICKS,
    )


def read_stat(pid: int) -> ProcStat | None:
    """One process's stat, or None if it is gone or unreadable."""
    text = read_text(f"/proc/{pid}/stat")
    try:
        return None if text is None else parse_stat(text)
    except (IndexError, ValueError):
        return None


def runnable_threads(pid: int) -> int | None:
    """How many threads of *pid* are runnable now; None if it is gone."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    runnable = 0
    for tid in tids:
        stat = read_text(f"/proc/{pid}/task/{tid}/stat")
        # The state follows the name, which may hold ") ".
        if stat is not None and stat.rpartition(") ")[2][:1] == "R":
            runnable += 1
    return runnable


def read_runnable_s(pid: int, threads: int = 1) -> dict[int, float] | None:
    """Seconds each thread of *pid* alive now has been runnable, by thread
    id: on a CPU or waiting for one (/proc/PID/task/TID/schedstat:
    nanoseconds on a CPU, waiting, then timeslices).  None if it is gone,
    or the kernel keeps no such count."""
    tids = [pid]
    if threads > 1:
        try:
            tids = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
        except (OSError, ValueError):
            return None
    found = {}
    for tid in tids:
        text = read_text(f"/proc/{pid}/task/{tid}/schedstat")
        if text is None:
            continue  # a thread that ended while we looked
        fields = text.split()
        try:
            found[tid] = (int(fields[0]) + int(fields[1])) / 1e9
        except (IndexError, ValueError):
            return None
    return found or None


def name_self(name: str) -> None:
    """Set this process's name as ps(1) and /proc/PID/stat show it (15
    bytes at most); where that cannot be done, nothing happens."""
    try:
        with open(PROC / "self" / "comm", "w", encoding="ascii") as file:
            file.write(name)
    except OSError:
        pass


def read_processes() -> dict[int, ProcStat]:
    """Every process this reader can see, by pid (one read each).

    This runs every tick over every process of the machine: plain os calls
    on string paths, at a third of the cost of pathlib and text files.
    """
    processes = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{entry}/stat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue  # gone while we looked
        try:
            text = os.read(fd, 4096).decode("ascii", "replace")
        except OSError:
            continue
        finally:
            os.close(fd)
        try:
            process = parse_stat(text)
        except (IndexError, ValueError):
            continue
        processes[process.pid] = process
    return processes
