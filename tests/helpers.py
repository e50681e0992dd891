"""Helpers for tests that run real bcrun processes, each test in its own
runtime directory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

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
