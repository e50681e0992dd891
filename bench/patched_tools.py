"""How fast each patched tool obeys bcrun, against the stock tool with a
fixed -j, measured in the same run.

    python3 -m bench.patched_tools [--runs N] [--seconds S] [TOOL ...]

For each tool (gmake, ninja, bmake, and samurai when BCRUN_SAMURAI_SOURCE is
set) it runs, under the real bcrun:

- increase: a build at 1 job of S-second jobs; ``bcrun jobs 4`` once the first
  job runs; the delay until 4 jobs run, from the jobs' own start times;
- decrease: a build at 4 jobs of 0.5-second jobs; ``bcrun jobs 1``; how many
  jobs started while 1 or more already ran after the decrease.

The stock tool is given the same commands: it cannot grow (the delay is
reported as "never") and keeps its -j when asked to shrink.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bcrun.control import choose_instance, send_command  # noqa: E402
from tests.helpers import Bcrun, wait_until  # noqa: E402
from tests.tools.buildtools import TOOLS, Unavailable, build_tool  # noqa: E402
from tests.tools.conftest import Tool  # noqa: E402
from tests.tools.jobs import make_project  # noqa: E402


def bcrun_in(tmp: Path) -> Bcrun:
    runner = Bcrun(tmp)
    os.environ["XDG_RUNTIME_DIR"] = runner.env["XDG_RUNTIME_DIR"]
    return runner


def increase_delay(
    tool: Tool, tool_jobs: int, seconds: float, tmp: Path
) -> float | None:
    """Seconds from ``jobs 4`` to 4 jobs running; None if it never happened.

    *tool_jobs* is the tool's own -j: the stock tool keeps it.
    """
    runner = bcrun_in(tmp)
    log = make_project(tmp / "p", jobs=5, seconds=seconds)
    env = dict(runner.env, JOBLOG=str(log.path))
    proc = runner.start(
        "-j",
        "1",
        "--via",
        "protocol",  # a stock tool keeps its own -j: no jobserver
        *tool.argv(tmp / "p", tool_jobs),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: runner.instance_dirs() and log.started() >= 1, what="a job")
        instance = choose_instance(proc.pid)
        time.sleep(0.2)
        before = time.time()
        send_command(instance, "1:4")
        deadline = before + seconds * 0.8
        while time.time() < deadline and log.running_at(time.time()) < 4:
            time.sleep(0.002)
        reached = log.time_running_reached(4, before)
        return None if reached is None else reached - before
    finally:
        stop(proc)
        runner.cleanup()


def started_over_after_decrease(tool: Tool, tmp: Path) -> int:
    runner = bcrun_in(tmp)
    log = make_project(tmp / "p", jobs=12, seconds=0.5)
    env = dict(runner.env, JOBLOG=str(log.path))
    proc = runner.start(
        "-j",
        "4",
        "--via",
        "protocol",
        *tool.argv(tmp / "p", 4),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: runner.instance_dirs() and log.running_at(time.time()) >= 4,
            what="4 jobs",
        )
        instance = choose_instance(proc.pid)
        decreased = time.time()
        send_command(instance, "1:1")
        proc.wait(120)
        return len(log.starts_while_at_or_above(1, decreased + 0.005))
    finally:
        stop(proc)
        runner.cleanup()


def stop(proc: subprocess.Popen[str]) -> None:
    """End bcrun and the whole build: it runs in a session of its own."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("tools", nargs="*", default=list(TOOLS))
    args = parser.parse_args()
    rows = []
    for name in args.tools:
        try:
            patched = Tool(name, build_tool(name, patched=True))
            plain = Tool(name, build_tool(name, patched=False))
        except Unavailable as why:
            print(f"{name}: skipped: {why}", file=sys.stderr)
            continue
        # The patched tool is given room to grow; the stock one its -j 1.
        for label, tool, tool_jobs in (("patched", patched, 8), ("stock", plain, 1)):
            delays, overs = [], []
            for _ in range(args.runs):
                with tempfile.TemporaryDirectory() as tmp:
                    delays.append(
                        increase_delay(tool, tool_jobs, args.seconds, Path(tmp))
                    )
                with tempfile.TemporaryDirectory() as tmp:
                    overs.append(started_over_after_decrease(tool, Path(tmp)))
            got = [d for d in delays if d is not None]
            delay = (
                f"{statistics.median(got) * 1000:.0f} ms (max {max(got) * 1000:.0f})"
                if len(got) == len(delays)
                else "never"
            )
            rows.append((name, label, delay, f"{statistics.mean(overs):.1f}"))
            print(
                f"{name} {label}: increase {delay}, over after decrease {overs}",
                file=sys.stderr,
            )
    print(f"\n{args.runs} runs each; increase while {args.seconds:g} s jobs run\n")
    print(
        "| tool | build | 1 -> 4 jobs: delay to 4 running | jobs started at or above 1 after 4 -> 1 |"
    )
    print("| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
