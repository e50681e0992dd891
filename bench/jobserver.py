"""How stock tools follow bcrun's jobserver, against a naive owner that waits
in select(), measured in the same run.

    python3 -m bench.jobserver [--runs N] [TOOL ...]

TOOL: make-4.3 (the system's), gmake-4.4.1, ninja-1.13.2 (built unpatched by
the tests' harness), ninja-pypi.  For each, a build of 12 jobs of 0.5-1 s:

- grow: count 2, then 4: delay until 4 jobs run (from the jobs' own logs);
- shrink: count 4, then 1: jobs started while 1 or more ran after it, and the
  time until the build last ran more than 1 job.

bcrun's owner is the real bcrun (a braked pipe for make 4.3 and PyPI
ninja, a braked fifo for make 4.4.1 and upstream ninja); the naive owner is the textbook one: one pipe or
fifo, and on a shrink it waits in select() and reads what it can.
"""

from __future__ import annotations

import argparse
import os
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bcrun.control import choose_instance, send_command  # noqa: E402
from tests.helpers import Bcrun, wait_until  # noqa: E402
from tests.tools.buildtools import build_tool, pypi_ninja  # noqa: E402
from tests.tools.conftest import Tool  # noqa: E402
from tests.tools.jobs import JobLog, make_project  # noqa: E402

TOOLS = ["make-4.3", "gmake-4.4.1", "ninja-1.13.2", "ninja-pypi"]


def tool_named(name: str) -> Tool:
    if name == "make-4.3":
        return Tool("gmake", Path("/usr/bin/make"))
    if name == "ninja-pypi":
        return Tool("ninja", pypi_ninja())
    return Tool(name.split("-")[0], build_tool(name.split("-")[0], patched=False))


class NaiveOwner:
    """One fifo (or, for make 4.3, one pipe); shrinking waits in select()
    and takes what it can read."""

    def __init__(self, directory: Path, pipe: bool) -> None:
        self.pass_fds: tuple[int, ...] = ()
        if pipe:
            r, w = os.pipe()
            self.pass_fds = (r, w)
            self.auth = f"{r},{w}"
            self.fd = os.open(f"/proc/self/fd/{r}", os.O_RDONLY | os.O_NONBLOCK)
            self.write_fd = w
        else:
            path = directory / "naive.fifo"
            os.mkfifo(path)
            self.auth = f"fifo:{path}"
            self.fd = self.write_fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self.tokens = 0
        self.deficit = 0
        self.done = False
        threading.Thread(target=self._take, daemon=True).start()

    def resize(self, count: int) -> None:
        target = max(count - 1, 0)
        if target > self.tokens:
            os.write(self.write_fd, b"+" * (target - self.tokens))
            self.tokens = target
        else:
            self.deficit = self.tokens - target

    def _take(self) -> None:
        while not self.done:
            if not self.deficit:
                time.sleep(0.01)
                continue
            select.select([self.fd], [], [], 0.1)
            try:
                got = len(os.read(self.fd, self.deficit))
            except BlockingIOError:
                continue
            self.deficit -= got
            self.tokens -= got


def run_naive(tool: Tool, tmp: Path, first: int, then: int) -> tuple[JobLog, float]:
    log = make_project(tmp / "p", jobs=12, seconds=0.5, spread=True)
    owner = NaiveOwner(tmp, pipe=str(tool.program) == "/usr/bin/make")
    owner.resize(first)
    env = dict(os.environ, JOBLOG=str(log.path))
    env["MAKEFLAGS"] = f"--jobserver-auth={owner.auth}"
    argv = [str(tool.program), "-C", str(tmp / "p")]
    proc = subprocess.Popen(
        argv,
        env=env,
        pass_fds=owner.pass_fds,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: log.running_at(time.time()) >= min(first, 2), what="jobs")
    time.sleep(0.2)
    changed = time.time()
    owner.resize(then)
    proc.wait(120)
    owner.done = True
    return log, changed


def run_bcrun(tool: Tool, tmp: Path, first: int, then: int) -> tuple[JobLog, float]:
    runner = Bcrun(tmp)
    os.environ["XDG_RUNTIME_DIR"] = runner.env["XDG_RUNTIME_DIR"]
    log = make_project(tmp / "p", jobs=12, seconds=0.5, spread=True)
    env = dict(runner.env, JOBLOG=str(log.path))
    proc = runner.start(
        "-j",
        str(first),
        *tool.argv(tmp / "p", 8),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(
        lambda: runner.instance_dirs() and log.running_at(time.time()) >= min(first, 2),
        what="jobs",
    )
    instance = choose_instance(proc.pid)
    time.sleep(0.2)
    changed = time.time()
    send_command(instance, f"1:{then}")
    proc.wait(120)
    return log, changed


def measure(run, tool: Tool) -> tuple[float | None, int, float]:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as tmp:
        log, changed = run(tool, Path(tmp), 2, 4)
        reached = log.time_running_reached(4, changed)
        grow = None if reached is None else reached - changed
    with tempfile.TemporaryDirectory() as tmp:
        log, changed = run(tool, Path(tmp), 4, 1)
        over = log.starts_while_at_or_above(1, changed + 0.005)
        settle = max((j.start - changed for j in over), default=0.0)
    return grow, len(over), settle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("tools", nargs="*", default=TOOLS)
    args = parser.parse_args()
    print(
        "| tool | owner | 2 -> 4: delay to 4 running | 4 -> 1: jobs started above | 4 -> 1: last start above |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name in args.tools:
        tool = tool_named(name)
        for label, run in (("bcrun", run_bcrun), ("naive select()", run_naive)):
            results = [measure(run, tool) for _ in range(args.runs)]
            grows = [g for g, _, _ in results if g is not None]
            grow = f"{statistics.median(grows) * 1000:.0f} ms" if grows else "never"
            over = statistics.mean(o for _, o, _ in results)
            settle = statistics.median(s for _, _, s in results)
            print(
                f"| {name} | {label} | {grow} | {over:.1f} | {settle:.2f} s |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
