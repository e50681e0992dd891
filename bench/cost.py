"""What bcrun itself costs, against the same build without bcrun, measured
in the same run.

    python3 bench/cost.py [--runs N] [--rounds R] [--jobs J] [--minute S]
                          [--parts startup,cpu,jobs]

- Start-up: from starting the command to the build's first instruction (a
  Makefile whose first recipe prints the time), for ``python3 -c pass``
  (Python's own start-up, the floor: to its first instruction, which
  prints the time too), the tool alone, and ``bcrun`` with
  the fixed policy and with ``--policy adaptive,memory``: the system's
  stock make through bcrun's jobserver, the patched GNU make (built by the
  test harness) through the protocol.  All of them in each of --rounds
  rounds (default 21), in a rotating order; medians, and the median of
  bcrun's excess over ``python3 -c pass`` in the same round, which a
  machine's load moves far less.  Python's bytecode is compiled first, as
  an installed bcrun's is (PYTHONDONTWRITEBYTECODE is ignored).
- Exit delay: from a shell build's last instruction to bcrun's exit.
- A make with nothing to do (an up-to-date tree): from start to exit, for
  ``python3 -c pass``, make alone and bcrun (fixed, and adaptive,memory):
  what a user waits for, which a build shorter than bcrun's own start-up
  ends at once.
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
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import arguments, exits_cleanly, fmt, read_text, run, say, table
from tests.helpers import Bcrun
from tests.tools.buildtools import Unavailable, build_tool

#: The build of the start-up measures: its first instruction says the time.
FIRST_INSTRUCTION = "all:\n\t@date +%s.%N\n"


def first_instruction_s(argv: list[str], env: dict[str, str]) -> float:
    """Seconds from starting *argv* to its build's first instruction."""
    started = time.time()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.split()[0]) - started


def end_delay_s(bcrun: Bcrun, env: dict[str, str]) -> float:
    """Seconds from a build's last instruction to bcrun's exit."""
    out = subprocess.run(
        bcrun.argv("sh", "-c", "date +%s.%N"), capture_output=True, text=True, env=env
    )
    ended = time.time()
    return ended - float(out.stdout.split()[0])


def wall_s(argv: list[str], env: dict[str, str]) -> float:
    """Seconds from starting *argv* to its exit."""
    started = time.perf_counter()
    subprocess.run(argv, capture_output=True, env=env, check=True)
    return time.perf_counter() - started


def compiled_env(bcrun: Bcrun, tmp: Path) -> dict[str, str]:
    """bcrun's environment, with its bytecode written as an install's is."""
    env = dict(bcrun.env, PYTHONPYCACHEPREFIX=str(tmp / "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def in_rounds(
    commands: dict[str, list[str]],
    measure: Callable[[list[str], dict[str, str]], float],
    env: dict[str, str],
    rounds: int,
    what: str,
) -> dict[str, list[float]]:
    """*measure* of each command in each of *rounds* rounds, in a rotating
    order, after two rounds that warm every cache up."""
    for argv in list(commands.values()) * 2:
        measure(argv, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for number in range(rounds):
        say(f"{what}, round {number + 1}/{rounds}")
        turn = number % len(names)
        for name in names[turn:] + names[:turn]:
            times[name].append(measure(commands[name], env))
    return times


def up_to_date(bcrun: Bcrun, tmp: Path, rounds: int) -> list[list[str]]:
    """The rows of a make that has nothing to do: start to exit."""
    project = tmp / "done"
    project.mkdir()
    (project / "Makefile").write_text("all: done.txt\ndone.txt:\n\ttouch $@\n")
    subprocess.run(["make", "-s", "-C", str(project)], check=True)
    build = ["make", "-s", "-C", str(project)]
    commands = {
        "python3 -c pass": [sys.executable, "-c", "pass"],
        "make alone": build,
        "bcrun make": bcrun.argv(*build),
        "bcrun --policy adaptive,memory make": bcrun.argv(
            "--policy", "adaptive,memory", *build
        ),
    }
    env = compiled_env(bcrun, tmp)
    times = in_rounds(commands, wall_s, env, rounds, "up-to-date make")
    return [
        [name, fmt(statistics.median(values) * 1000, " ms", 1)]
        for name, values in times.items()
    ]


def startup(bcrun: Bcrun, tmp: Path, rounds: int) -> list[list[str]]:
    """The start-up rows: each command to its build's first instruction."""
    project = tmp / "first"
    project.mkdir()
    (project / "Makefile").write_text(FIRST_INSTRUCTION)
    tools = [("stock make", "jobserver", ["make"])]
    try:
        tools.append(
            ("patched make", "protocol", [str(build_tool("gmake", patched=True))])
        )
    except Unavailable as why:
        say(f"no patched GNU make: {why}")
    # Python's own start-up, to its first instruction as for the builds.
    python = [sys.executable, "-c", "import time; print(repr(time.time()))"]
    commands: dict[str, list[str]] = {"python3 -c pass": python}
    for tool, _, make in tools:
        build = [*make, "-s", "-C", str(project)]
        commands[f"{tool} alone"] = build
        commands[f"bcrun {tool}"] = bcrun.argv(*build)
        commands[f"bcrun --policy adaptive,memory {tool}"] = bcrun.argv(
            "--policy", "adaptive,memory", *build
        )
    # Bytecode compiled, the programs' facts known (bcrun.detect), caches warm.
    env = compiled_env(bcrun, tmp)
    times = in_rounds(commands, first_instruction_s, env, rounds, "start-up")
    floor = times["python3 -c pass"]
    rows = []
    for name, values in times.items():
        mode = next((how for tool, how, _ in tools if tool in name), "")
        excess = ""
        if name.startswith("bcrun"):
            excess = fmt(
                statistics.median(v - f for v, f in zip(values, floor, strict=True))
                * 1000,
                " ms",
                1,
            )
        rows.append(
            [
                name,
                mode if name.startswith("bcrun") else "",
                fmt(statistics.median(values) * 1000, " ms", 1),
                excess,
            ]
        )
    return rows


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
    parser.add_argument(
        "--rounds", type=int, default=21, help="rounds of the start-up (default 21)"
    )
    parser.add_argument(
        "--parts",
        default="startup,cpu,jobs",
        help="what to measure, of startup, cpu, jobs (default all)",
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    with exits_cleanly(), tempfile.TemporaryDirectory() as tmp:
        bcrun = Bcrun(Path(tmp))
        if "startup" in parts:
            rows = startup(bcrun, Path(tmp), args.rounds)
            print(
                table(
                    [
                        f"medians of {args.rounds} rounds",
                        "control",
                        "to the build's first instruction",
                        "over python3 -c pass (same round)",
                    ],
                    rows,
                )
            )
            rows = up_to_date(bcrun, Path(tmp), args.rounds)
            print()
            print(
                table(
                    [
                        f"a make with nothing to do, medians of {args.rounds} rounds",
                        "start to exit",
                    ],
                    rows,
                )
            )
            env = compiled_env(bcrun, Path(tmp))
            ends = [end_delay_s(bcrun, env) for _ in range(args.rounds)]
            print(
                f"\nexit, from the build's last instruction: "
                f"{fmt(statistics.median(ends) * 1000, ' ms', 0)}\n"
            )
        if "cpu" in parts:
            cpu_part(bcrun, args.minute)
        if "jobs" in parts:
            jobs_part(bcrun, Path(tmp), args.jobs, args.runs)
        bcrun.cleanup()
    return 0


def cpu_part(bcrun: Bcrun, minute: float) -> None:
    rows = []
    for label, options in (
        ("fixed (no sampling)", ()),
        ("adaptive,memory (a tick each 0.5 s)", ("--policy", "adaptive,memory")),
    ):
        say(f"CPU over {minute:g} s: {label}")
        cpu, peak = own_cpu_and_peak(bcrun, minute, *options)
        per_minute = cpu * 60 / minute
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


def jobs_part(bcrun: Bcrun, tmp: Path, jobs: int, runs: int) -> None:
    project = tmp / "trivial"
    project.mkdir()
    trivial_makefile(project, jobs)
    makes = [("system make (jobserver)", "make")]
    try:
        patched = build_tool("gmake", patched=True)
        makes.append(("patched GNU make (protocol)", str(patched)))
    except Unavailable as why:
        say(f"no patched GNU make: {why}")
    rows = []
    for label, make in makes:
        alone, wrapped = [], []
        for run_number in range(runs):
            say(f"{label}: {jobs} trivial jobs, {run_number + 1}/{runs}")
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
                f"{(statistics.median(wrapped) - statistics.median(alone)) / jobs * 1e6:.0f} µs",
            ]
        )
    print(
        table(
            [
                f"make -j2, {jobs} jobs of `true`",
                "alone",
                "under bcrun",
                "ratio",
                "added per job",
            ],
            rows,
        )
    )
    print(f"\nmedians of {runs} runs; target: a ratio within 1.02")


if __name__ == "__main__":
    run(main)
