"""What bcrun itself costs, against the same build without bcrun, measured
in the same run.

    python3 bench/cost.py [--runs N] [--jobs J] [--minute S]

- Start-up and exit delays: from starting the command to the build's first
  instruction (a shell that prints the time), and from there to the
  command's exit, ``bcrun sh -c ...`` against ``sh -c ...`` directly; and
  the same with ``--policy adaptive,memory``.
- CPU per minute of build: bcrun's own CPU (its process, not the build's)
  while it runs a build of sleeping jobs for --minute seconds (default 60),
  with the fixed policy (no sampling) and with ``adaptive,memory`` (a
  sample every half second), scaled to a minute; and its peak memory
  (VmHWM).
- Many trivial jobs: the wall time of ``make -j2`` over --jobs (default
  20000, some ten seconds of build) targets whose recipes are ``@true``,
  with bcrun against make alone: the system's stock make through bcrun's
  jobserver, and the patched GNU make (built by the test harness) through
  the protocol; the target is within 2%.  What bcrun adds is mostly the
  fixed start-up and exit delays above, so the ratio of a shorter build is
  larger: ``--jobs 3000`` (1.3 s) shows it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import arguments, exits_cleanly, fmt, read_text, run, say, table
from tests.helpers import Bcrun
from tests.tools.buildtools import Unavailable, build_tool


def start_and_end_delays(bcrun: Bcrun, *options: str) -> tuple[float, float]:
    """Seconds from starting the command to its build's first instruction,
    and from the build's last instruction to the command's exit."""
    script = "date +%s.%N"
    argv = ["sh", "-c", script]
    if options != ("none",):
        argv = bcrun.argv(*options, *argv)
    started = time.time()
    out = subprocess.run(argv, capture_output=True, text=True, env=bcrun.env)
    ended = time.time()
    instruction = float(out.stdout.split()[0])
    return instruction - started, ended - instruction


def own_cpu_and_peak(bcrun: Bcrun, seconds: float, *options: str) -> tuple[float, int]:
    """bcrun's own CPU seconds over a build of *seconds*, and its VmHWM."""
    proc = subprocess.Popen(
        bcrun.argv(*options, "-j", "2", "sh", "-c", f"sleep {seconds + 2}"),
        env=bcrun.env,
        stderr=subprocess.DEVNULL,
    )
    # Start-up (Python's own imports) is measured above: count from 2 s on.
    time.sleep(2)
    start_cpu = None
    cpu, peak = 0.0, 0
    while proc.poll() is None:
        stat = read_text(f"/proc/{proc.pid}/stat")
        status = read_text(f"/proc/{proc.pid}/status")
        if stat and status:
            fields = stat.rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            if start_cpu is None:
                start_cpu = cpu
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
        time.sleep(0.2)
    return cpu - (start_cpu or 0.0), peak


def trivial_makefile(directory: Path, jobs: int) -> None:
    names = [f"t{i}" for i in range(jobs)]
    lines = [f"all: {' '.join(names)}", ""]
    lines += [f"{name}:\n\t@true\n" for name in names]
    lines.append(f".PHONY: all {' '.join(names)}\n")
    (directory / "Makefile").write_text("\n".join(lines))


def make_wall(bcrun: Bcrun, directory: Path, make: str, through_bcrun: bool) -> float:
    argv = [make, "-j2", "-s", "-C", str(directory)]
    if through_bcrun:
        argv = bcrun.argv(*argv)
    started = time.perf_counter()
    subprocess.run(argv, env=bcrun.env, check=True, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = arguments(__doc__, "bcrun-cost-trace.jsonl")
    parser.add_argument("--jobs", type=int, default=20000, help="trivial targets")
    parser.add_argument(
        "--minute", type=float, default=60.0, help="seconds of the CPU build"
    )
    args = parser.parse_args()
    with exits_cleanly(), tempfile.TemporaryDirectory() as tmp:
        bcrun = Bcrun(Path(tmp))
        rows = []
        say("start-up and exit delays")
        for label, options in (
            ("the command alone", ("none",)),
            ("bcrun (fixed)", ()),
            ("bcrun --policy adaptive,memory", ("--policy", "adaptive,memory")),
        ):
            starts, ends = zip(
                *(start_and_end_delays(bcrun, *options) for _ in range(5)),
                strict=True,
            )
            rows.append(
                [
                    label,
                    fmt(statistics.median(starts) * 1000, " ms", 0),
                    fmt(statistics.median(ends) * 1000, " ms", 0),
                ]
            )
        print(
            table(
                [
                    "medians of 5",
                    "start: to the build's first instruction",
                    "exit: from the build's last instruction",
                ],
                rows,
            )
        )
        print()

        rows = []
        for label, options in (
            ("fixed (no sampling)", ()),
            ("adaptive,memory (a tick each 0.5 s)", ("--policy", "adaptive,memory")),
        ):
            say(f"CPU over {args.minute:g} s: {label}")
            cpu, peak = own_cpu_and_peak(bcrun, args.minute, *options)
            per_minute = cpu * 60 / args.minute
            rows.append(
                [
                    label,
                    fmt(per_minute * 1000, " ms", 0),
                    fmt(per_minute / 60 * 100, "%", 2),
                    fmt(peak / (1 << 20), " MiB", 1),
                ]
            )
        print(
            table(
                [
                    "bcrun's own cost",
                    "CPU per minute of build",
                    "of one CPU",
                    "peak memory (VmHWM)",
                ],
                rows,
            )
        )
        print()

        project = Path(tmp) / "trivial"
        project.mkdir()
        trivial_makefile(project, args.jobs)
        makes = [("system make (jobserver)", "make")]
        try:
            patched = build_tool("gmake", patched=True)
            makes.append(("patched GNU make (protocol)", str(patched)))
        except Unavailable as why:
            say(f"no patched GNU make: {why}")
        rows = []
        for label, make in makes:
            alone, wrapped = [], []
            for run_number in range(args.runs):
                say(f"{label}: {args.jobs} trivial jobs, {run_number + 1}/{args.runs}")
                # Alternate the order: neither always runs on a warm cache.
                pair = [(alone, False), (wrapped, True)]
                for walls, through in pair if run_number % 2 == 0 else pair[::-1]:
                    walls.append(make_wall(bcrun, project, make, through))
            ratio = statistics.median(wrapped) / statistics.median(alone)
            rows.append(
                [
                    label,
                    fmt(statistics.median(alone), " s", 2),
                    fmt(statistics.median(wrapped), " s", 2),
                    f"{ratio:.3f}",
                    f"{(statistics.median(wrapped) - statistics.median(alone)) / args.jobs * 1e6:.0f} µs",
                ]
            )
        print(
            table(
                [
                    f"make -j2, {args.jobs} jobs of `true`",
                    "alone",
                    "under bcrun",
                    "ratio",
                    "added per job",
                ],
                rows,
            )
        )
        print(f"\nmedians of {args.runs} runs; target: a ratio within 1.02")
        bcrun.cleanup()
    return 0


if __name__ == "__main__":
    run(main)
