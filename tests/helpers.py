"""Helpers for tests that run real bcrun processes, each test in its own
runtime directory, and real cgroups to run them in."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bcrun.cgroup import own_cgroups
from bcrun.proc import read_text

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "tests" / "buildclient.py"


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def read_trace(trace: Path) -> list[dict[str, Any]]:
    """The ticks of a --trace file so far (a line being written left out)."""
    try:
        lines = trace.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.endswith("}")]


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class CountLog:
    """The log a tests/buildclient.py writes: (monotonic time, event) pairs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self) -> list[tuple[float, str]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        pairs = [line.split(" ", 1) for line in text.splitlines() if " " in line]
        return [(float(t), event) for t, event in pairs]

    def counts(self) -> list[int]:
        return [int(e) for _, e in self.events() if e.isdigit()]

    def time_of(self, count: int, after: float = 0.0) -> float | None:
        for t, event in self.events():
            if event == str(count) and t >= after:
                return t
        return None

    def wait_for(self, count: int, after: float = 0.0, timeout: float = 10.0) -> float:
        wait_until(
            lambda: self.time_of(count, after) is not None, timeout, f"count {count}"
        )
        found = self.time_of(count, after)
        assert found is not None
        return found


class Bcrun:
    """Starts ``python -m bcrun`` in an isolated runtime directory."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.xdg = tmp_path / "xdg"
        self.xdg.mkdir(mode=0o700)
        (tmp_path / "tmp").mkdir()
        self.env = dict(os.environ)
        self.env["XDG_RUNTIME_DIR"] = str(self.xdg)
        self.env["TMPDIR"] = str(tmp_path / "tmp")
        # What bcrun learns of the programs it runs (bcrun.detect.ProgramFacts).
        self.env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
        self.env.pop("BUILDSOCKET", None)
        self.env.pop("BUILDTOKEN", None)
        self.env["PYTHONPATH"] = str(ROOT)
        self.procs: list[subprocess.Popen[str]] = []
        self._logs = 0

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "bcrun", *args]

    def start(self, *args: str, **kwargs) -> subprocess.Popen[str]:
        kwargs.setdefault("env", self.env)
        kwargs.setdefault("text", True)
        proc = subprocess.Popen(self.argv(*args), **kwargs)
        self.procs.append(proc)
        return proc

    def run(
        self, *args: str, timeout: float = 30, **kwargs
    ) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("env", self.env)
        kwargs.setdefault("capture_output", True)
        return subprocess.run(self.argv(*args), text=True, timeout=timeout, **kwargs)

    def client(self, *args: str) -> tuple[list[str], CountLog]:
        """A build command that behaves like a patched tool, and its log."""
        self._logs += 1
        log = self.tmp_path / f"client{self._logs}.log"
        return [sys.executable, str(CLIENT), "--log", str(log), *args], CountLog(log)

    def instance_dirs(self) -> list[Path]:
        parent = self.xdg / "bcrun"
        if not parent.exists():
            return []
        # Published ones only: a directory is made under a temporary name.
        return sorted(p for p in parent.iterdir() if p.name.isdigit())

    def leftovers(self) -> list[Path]:
        """Everything left in the runtime parent, half-made directories too."""
        parent = self.xdg / "bcrun"
        return sorted(parent.iterdir()) if parent.exists() else []

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


# -- real cgroups ------------------------------------------------------------------

#: The default CFS period, 100 ms (Documentation/scheduler/sched-bwc.rst).
CFS_PERIOD_US = 100_000

_cgroup_names = itertools.count()


@dataclass(frozen=True)
class QuotaCgroup:
    """A real cgroup with a CPU quota, made by :func:`cpu_quota_cgroup`."""

    version: int
    #: Where a command run with :attr:`prefix` goes: one directory per
    #: hierarchy (v1 may mount cpuacct apart from cpu).
    dirs: tuple[Path, ...]
    #: The cgroup that has the quota: that of :attr:`dirs` or its parent.
    quota_dir: Path

    @property
    def prefix(self) -> list[str]:
        """Put before an argv to run it inside."""
        moves = "".join(
            f"echo $$ > {shlex.quote(str(path / 'cgroup.procs'))} && "
            for path in self.dirs
        )
        return ["sh", "-c", moves + 'exec "$@"', "sh"]

    def resize(self, cpus: float) -> None:
        """Set the quota to *cpus* CPUs, as a resized pod would have it."""
        quota = round(cpus * CFS_PERIOD_US)
        if self.version == 1:
            (self.quota_dir / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (self.quota_dir / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}")


@contextlib.contextmanager
def cpu_quota_cgroup(cpus: float, nested: bool = False) -> Iterator[QuotaCgroup]:
    """A new cgroup limited to *cpus* CPUs; with *nested*, commands run in
    a child of it that has no quota of its own.  On leaving, what is still
    inside is killed and the cgroups are removed.  Skips the test, saying
    why, where it cannot be made.
    """
    if os.geteuid() != 0:
        pytest.skip("making a cgroup needs root")
    own = own_cgroups()
    cpu = own.cpu
    if cpu is None:
        pytest.skip("no cpu controller is mounted (/proc/self/mountinfo)")
    name = f"bcrun-test-{os.getpid()}-{next(_cgroup_names)}"
    quota = round(cpus * CFS_PERIOD_US)
    made: list[Path] = []
    try:
        if cpu.version == 1:
            top = [cpu.mount / name]
            if own.cpuacct is not None and own.cpuacct.mount != cpu.mount:
                # Where systemd and container engines put it: the same path.
                top.append(own.cpuacct.mount / name)
            for path in top:
                _make_cgroup(path, made)
            _write_or_skip(top[0] / "cpu.cfs_period_us", str(CFS_PERIOD_US))
            _write_or_skip(top[0] / "cpu.cfs_quota_us", str(quota))
        else:
            # A sibling of this process's cgroup: a cgroup with processes
            # cannot give controllers to children (cgroup-v2.rst, "No
            # Internal Process Constraint"); the root can.
            parent = cpu.path.parent if cpu.path != cpu.mount else cpu.mount
            if "cpu" not in (read_text(parent / "cgroup.controllers") or "").split():
                pytest.skip(f"no cpu controller in {parent}/cgroup.controllers")
            # Left enabled: another test may be using it.
            _write_or_skip(parent / "cgroup.subtree_control", "+cpu")
            top = [parent / name]
            _make_cgroup(top[0], made)
            _write_or_skip(top[0] / "cpu.max", f"{quota} {CFS_PERIOD_US}")
        dirs = top
        if nested:
            dirs = [path / "child" for path in top]
            for path in dirs:
                _make_cgroup(path, made)
        yield QuotaCgroup(cpu.version, tuple(dirs), top[0])
    finally:
        for path in reversed(made):
            _remove_cgroup(path)


def _make_cgroup(path: Path, made: list[Path]) -> None:
    try:
        path.mkdir()
    except OSError as err:
        pytest.skip(f"cannot make the cgroup {path}: {err.strerror}")
    made.append(path)


def _write_or_skip(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as err:
        pytest.skip(f"cannot write {text!r} to {path}: {err.strerror}")


def _remove_cgroup(path: Path, timeout: float = 10.0) -> None:
    """Kill what is left in the cgroup (the test's own leftovers), wait
    until it is empty, remove it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pids = [int(pid) for pid in (path / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not pids:
            try:
                path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                pass  # busy while its last tasks finish exiting
        if time.monotonic() > deadline:
            raise AssertionError(f"cannot remove {path}: it still holds {pids}")
        time.sleep(0.01)
