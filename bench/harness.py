"""What the benchmarks of bench/ share: children that are always ended, a
sampler thread, a reader of /proc, cgroups (memory limits, CPU quotas) that
are always removed, C helpers compiled once, and markdown tables.

Every child leads a process group of its own (or, with *sessions*, a
session of its own), so that the terminal's Ctrl-C reaches only the
benchmark, which then ends each child's whole process group (the build and
its jobs with it) before it exits; SIGTERM and SIGHUP do the same.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from bcrun.cgroup import Cgroup as BcrunCgroup
from bcrun.cgroup import own_cgroups

ROOT = Path(__file__).resolve().parents[1]


class Children:
    """Processes started for a benchmark, each the leader of its own
    process group; :meth:`end_all` kills every group still alive.

    With *sessions*, each leads a session too, and so (where the kernel has
    sched_autogroup_enabled) a scheduling group of its own, as programs
    started from different terminals do: the scheduler then shares the CPUs
    between the groups first, and nice acts only inside each one.
    """

    def __init__(self, sessions: bool = False) -> None:
        self.procs: list[subprocess.Popen[Any]] = []
        self.sessions = sessions

    def start(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        if self.sessions:
            kwargs.setdefault("start_new_session", True)
        else:
            kwargs.setdefault("process_group", 0)
        proc: subprocess.Popen[Any] = subprocess.Popen(list(argv), **kwargs)
        self.procs.append(proc)
        return proc

    def end(self, proc: subprocess.Popen[Any]) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc in self.procs:
            self.procs.remove(proc)

    def end_all(self) -> None:
        for proc in list(self.procs):
            self.end(proc)


@contextlib.contextmanager
def exits_cleanly(sessions: bool = False) -> Iterator[Children]:
    """Children that are ended however the block is left: an exception,
    Ctrl-C, or SIGTERM/SIGHUP (made into SystemExit here)."""

    def leave(signum: int, _frame: FrameType | None) -> None:
        say(f"{signal.Signals(signum).name}: ending every process, removing files")
        raise SystemExit(128 + signum)

    previous = {
        sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)
    }
    children = Children(sessions)
    try:
        yield children
    finally:
        # A second signal must not cut the cleaning short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        children.end_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)


class Sampler(threading.Thread):
    """Calls *probe* every *period* seconds in a thread and keeps
    ``(time.time(), value)`` pairs until :meth:`stop`."""

    def __init__(self, probe: Callable[[], Any], period: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.probe = probe
        self.period = period
        self.samples: list[tuple[float, Any]] = []
        self._stopped = threading.Event()

    def run(self) -> None:
        next_at = time.monotonic()
        while not self._stopped.is_set():
            self.samples.append((time.time(), self.probe()))
            next_at += self.period
            self._stopped.wait(max(next_at - time.monotonic(), 0))

    def stop(self) -> list[tuple[float, Any]]:
        self._stopped.set()
        self.join()
        return self.samples

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


# -- /proc ---------------------------------------------------------------------


def read_text(path: str | Path) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def comm_and_ppid(pid: int | str) -> tuple[str, int] | None:
    """A process's name and parent, from /proc/PID/stat; None if gone."""
    text = read_text(f"/proc/{pid}/stat")
    if text is None:
        return None
    name = text[text.find("(") + 1 : text.rfind(")")]
    return name, int(text[text.rfind(")") + 2 :].split()[1])


def count_below(root: int, name: str) -> int:
    """Processes called *name* that descend from *root* (read here, not
    through bcrun, so that the benchmark does not trust what it measures)."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = comm_and_ppid(entry)
            if found is not None:
                table[int(entry)] = found
    count = 0
    for pid, (comm, _) in table.items():
        if comm != name:
            continue
        seen = 0
        while pid in table and seen < 64:
            if pid == root:
                count += 1
                break
            pid, seen = table[pid][1], seen + 1
    return count


def cpu_busy_s() -> float:
    """CPU seconds the whole machine has been busy since boot (/proc/stat)."""
    fields = (read_text("/proc/stat") or "cpu 0").splitlines()[0].split()[1:]
    # user nice system idle iowait irq softirq steal: all but idle and iowait.
    busy = sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4))
    return busy / os.sysconf("SC_CLK_TCK")


def running_tasks() -> int:
    """Runnable tasks now, the reader excluded: /proc/loadavg's fourth
    field counts the task that reads it."""
    text = read_text("/proc/loadavg") or "0 0 0 1/1"
    return max(int(text.split()[3].split("/")[0]) - 1, 0)


def wait_with_cpu(proc: subprocess.Popen[Any]) -> float:
    """Wait for *proc*; return the CPU seconds it and the children it
    waited for used (os.wait4's rusage)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def version() -> str:
    """The bcrun measured: the commit, and whether bcrun/ has changes."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "bcrun"], capture_output=True, text=True
    ).stdout.strip()
    return f"bcrun at {head or 'unknown commit'}" + (
        " with uncommitted changes in bcrun/" if dirty else ""
    )


def trace_ticks(path: Path, *keys: str) -> list[tuple[float, ...]]:
    """The values of *keys* in each tick of a bcrun --trace file, as floats;
    ticks without them are passed over."""
    ticks = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            tick = json.loads(line)
            ticks.append(tuple(float(tick[key]) for key in keys))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return ticks


def keep(trace: Path, log: Path | None, where: Path) -> None:
    """Copy a run's trace to *where* and its bcrun -v output (if any) beside it."""
    where.write_text(trace.read_text() if trace.exists() else "")
    output = log.read_text() if log is not None and log.exists() else ""
    where.with_suffix(".log").write_text(output)


def kept_as(path: Path, tag: str) -> Path:
    """*path* with ``-TAG`` before its suffix: one kept trace of several."""
    return path.with_name(f"{path.stem}-{tag}{path.suffix}")


def add_keep_trace(parser: argparse.ArgumentParser, trace_name: str) -> None:
    parser.add_argument(
        "--keep-trace",
        type=Path,
        default=Path(tempfile.gettempdir()) / trace_name,
        metavar="PATH",
        help="where bcrun's traces are kept, its -v output beside each as "
        ".log (default %(default)s)",
    )


def arguments(doc: str | None, trace_name: str) -> argparse.ArgumentParser:
    """A parser whose help is *doc*, with --runs and --keep-trace."""
    summary, _, rest = (doc or "").partition("\n\n")
    parser = argparse.ArgumentParser(
        description=" ".join(summary.split()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=rest,
    )
    parser.add_argument("--runs", type=int, default=3, help="runs (default 3)")
    add_keep_trace(parser, trace_name)
    return parser


# -- cgroups -------------------------------------------------------------------


class Unusable(Exception):
    """No cgroup of the kind needed can be made here; the message says why."""


@dataclass
class Cgroup:
    version: int
    path: Path

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def pids(self) -> list[int]:
        return [int(p) for p in (read_text(self.procs) or "").split()]

    def enter(self, argv: Sequence[str]) -> list[str]:
        """*argv* run inside this cgroup, and so all it starts: a shell puts
        itself in (``echo $$ > cgroup.procs``), then execs *argv*."""
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.procs), *argv]

    def keyed(self, name: str) -> dict[str, int]:
        """A flat keyed file of the cgroup (cpu.stat, memory.events) as
        {key: value}; empty if it cannot be read."""
        found = {}
        for line in (read_text(self.path / name) or "").splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                found[key] = int(value)
        return found

    def remove(self) -> None:
        """Kill what is left inside, then remove the directory."""
        deadline = time.monotonic() + 10
        while self.path.exists() and time.monotonic() < deadline:
            for pid in self.pids():
                for sig in (signal.SIGKILL, signal.SIGCONT):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
            try:
                self.path.rmdir()
            except OSError:
                time.sleep(0.05)
        if self.path.exists():
            say(f"warning: could not remove {self.path}")


def v2_reason(parent: Path, controller: str) -> str | None:
    """Why cgroup v2 cannot apply *controller* below *parent*; None if it can."""
    controllers = (read_text(parent / "cgroup.controllers") or "").split()
    if controller not in controllers:
        return f"cgroup v2 at {parent} has no {controller} controller (bound to v1?)"
    subtree = parent / "cgroup.subtree_control"
    if controller in (read_text(subtree) or "").split():
        return None
    if (parent / "cgroup.type").exists():
        # Not the root: enabling it there would move processes about.
        return f"{controller} is not enabled for the children of {parent}"
    try:
        subtree.write_text(f"+{controller}")
    except OSError as err:
        return f"cannot enable {controller} in {subtree}: {err.strerror}"
    return None


def v1_reason(parent: Path) -> str | None:
    if not os.access(parent, os.W_OK):
        return f"{parent} is not writable (run as root)"
    return None


def choose_cgroup(controller: str) -> tuple[int, Path]:
    """The cgroup version to use and the parent to make cgroups of
    *controller* in: v2 where it has the controller, else v1; Unusable says
    why neither."""
    own: BcrunCgroup | None = getattr(own_cgroups(), controller)
    if own is None:
        raise Unusable(f"no cgroup hierarchy with {controller} is mounted")
    v, parent = own.version, own.path
    reason = v2_reason(parent, controller) if v == 2 else v1_reason(parent)
    if reason is not None:
        raise Unusable(reason)
    return v, parent


@contextlib.contextmanager
def new_cgroup(version: int, parent: Path) -> Iterator[Cgroup]:
    """A new cgroup below *parent*; what is in it killed and the cgroup
    removed on leaving, whatever happened."""
    group = Cgroup(version, parent / f"bcrun-bench-{os.getpid()}")
    group.path.mkdir()
    try:
        yield group
    finally:
        group.remove()


@contextlib.contextmanager
def cpu_quota(where: tuple[int, Path], cpus: float) -> Iterator[Cgroup]:
    """A new cgroup (see :func:`new_cgroup`) whose processes get at most
    *cpus* CPUs of time: the CFS quota, v1 cpu.cfs_quota_us against
    cpu.cfs_period_us, v2 cpu.max."""
    with new_cgroup(*where) as group:
        if group.version == 1:
            period = int(read_text(group.path / "cpu.cfs_period_us") or 100_000)
            (group.path / "cpu.cfs_quota_us").write_text(str(int(cpus * period)))
        else:
            (group.path / "cpu.max").write_text(f"{int(cpus * 100_000)} 100000")
        yield group


def cpu_quota_place() -> tuple[tuple[int, Path] | None, str]:
    """Where :func:`cpu_quota` can make its cgroups (one is made and
    removed to find out), and ""; or None, and why nowhere."""
    try:
        where = choose_cgroup("cpu")
    except Unusable as err:
        return None, str(err)
    try:
        with cpu_quota(where, 1):
            pass
    except OSError as err:
        return None, f"cannot make a CPU-quota cgroup below {where[1]}: {err.strerror}"
    return where, ""


def throttled_s(group: Cgroup) -> float | None:
    """Seconds the cgroup's processes were held back by its CPU quota
    (cpu.stat: v1 throttled_time in ns, v2 throttled_usec); None if not said."""
    stat = group.keyed("cpu.stat")
    if "throttled_usec" in stat:
        return stat["throttled_usec"] / 1e6
    if "throttled_time" in stat:
        return stat["throttled_time"] / 1e9
    return None


# -- helpers and output ----------------------------------------------------------


def compile_c(source: str, output: Path, *flags: str) -> Path:
    """Compile a one-file C program (once per run of a benchmark)."""
    c_file = output.with_suffix(".c")
    c_file.write_text(source)
    subprocess.run(
        ["gcc", "-O2", "-o", str(output), str(c_file), *flags],
        check=True,
        capture_output=True,
        text=True,
    )
    return output


def count_range(counts: Sequence[tuple[int, int] | None]) -> str:
    """ "LOW-HIGH" over (lowest, highest) pairs of bcrun's counts; "-" if none."""
    got = [c for c in counts if c is not None]
    if not got:
        return "-"
    return f"{min(c[0] for c in got)}-{max(c[1] for c in got)}"


def percentile(values: Sequence[float], share: float) -> float:
    """The *share* (0-1) percentile, nearest rank."""
    ordered = sorted(values)
    return ordered[min(int(share * len(ordered)), len(ordered) - 1)]


def median_of(values: Sequence[float | None]) -> float | None:
    """The median of the values that exist; None if none does."""
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def fmt(value: float | None, unit: str = "", digits: int = 1, none: str = "-") -> str:
    return none if value is None else f"{value:.{digits}f}{unit}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join("---" for _ in headers) + " |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def quota_table(
    where: tuple[int, Path] | None,
    why: str,
    about: str,
    headers: Sequence[str],
    rows: dict[str, list[str]],
) -> str:
    """A heading and a table of builds run in a 1-CPU quota (each row a
    variant's name and cells); where :func:`cpu_quota_place` found no
    place (*where* None), each row says *why* instead."""
    heading = "In a cgroup with a CPU quota of 1 CPU"
    if where is not None:
        heading += f" (cgroup v{where[0]})"
    body = [
        [name, *cells] if where else [name, f"not run: {why}", *["-"] * len(cells[1:])]
        for name, cells in rows.items()
    ]
    return f"\n{heading}, {about}:\n\n" + table(headers, body)


def run(main: Callable[[], int]) -> None:
    """Exit with *main*'s status; Ctrl-C (once *main* has cleaned up, which
    :func:`exits_cleanly` does) with 130 and one line, no traceback."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        say("interrupted: every process ended, temporary files removed")
        sys.exit(130)


def say(*words: object) -> None:
    """Progress, on stderr: the tables alone go to standard output."""
    print(*words, file=sys.stderr, flush=True)
