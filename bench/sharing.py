"""Concurrent builds under bcrun's adaptive policy against N x make -jT,
N x make -jT -lT and the fair split chosen by hand, N x make -j(T/N), all
in the same run.

    python3 -m bench.sharing [--quick] [--runs R] [--targets 8,32]
                                [--builds 2,3] [--loads none,steady,bursty,quota]
                                [--seconds S] [--json FILE] [--keep-trace PATH]

The scale: this machine has 2 CPUs, its users 8 to 64, so a target T above
the CPUs stands in for a bigger machine.  Each job is a compiled helper
that burns CPU in a busy loop until 0.8 s of WALL time have passed,
whatever CPU it gets (so it is runnable all along), then appends its start
and end to its build's log: 8 running jobs stand in for 8 busy CPUs.  One
consequence: a variant that runs more than T jobs is not slowed down as it
would be on a T-CPU machine, so its wall time is flattered; "above target"
says by how much it cheated.

A scenario is N builds (each its own directory and Makefile of J jobs,
started together, within a few ms) at a target T, and an external load.
The hand split is floor(T/N) jobs a build, at least 1 (so it never runs
more than T in all when T >= N; 2 builds at T = 8: make -j4).  J is what
makes a build last --seconds (default 20, --quick 14) at the hand split:
J = seconds x split / 0.8 (2 builds at T = 8: 200 jobs each; at T = 32:
400).  The variants, one after the other, each build in its own directory:

- ``bcrun --policy adaptive --load T --trace FILE -v make -f Makefile`` N times;
- ``make -jT``, ``make -jT -l T`` and ``make -j(T/N)`` (the hand split),
  N times each (with one build, make -jT is the hand split and runs once).

The external load is k = T/4 burners (at least 1), the same helper:
"steady" runs them from 25% of --seconds (at least 5 s in) to 60%;
"bursty" runs them 0.3 s every 2 s from 2 s in until the builds end;
"none" runs none.  The "quota" scenario is one build in a cgroup whose CPU
quota is 1 CPU (v1: cpu.cfs_quota_us = cpu.cfs_period_us; v2: cpu.max
"100000 100000"), bcrun and make inside it: ``bcrun --policy adaptive`` with
no --load (it should find the quota itself) against ``make -j<nproc>``;
where no such cgroup can be made its row says why.

Measured, from the jobs' own logs after the fact (nothing polls /proc
while the builds run, so that the benchmark takes no CPU from them):

- fill: the sum over the builds of each one's time-mean running jobs while
  all of them run (from the last build's first job start to the first
  build's last job end), over T (the builds' jobs only: under a steady
  load, the best fill is lower by k/T over the load's share of the time);
- fairness: the smallest of those means over the largest;
- above target: the share of that time the builds together run more than T
  jobs;
- changes/build/min: bcrun's count changes (its --trace, one line a tick),
  per build and minute, leaving out the first 5 s (the start from -j's
  default) and the 3 s after each edge of a steady load (down and back
  measure those); "-" for make;
- down and back, under the steady load, per bcrun build: from the load's
  start (the burners' own log) until the count first drops below its value
  at the last tick before, and from the load's end until it is back at
  that value; the median and the largest over the builds (and runs);
- wall: from the start until the last build ends, against the hand split's;
- in the quota case: the time-mean running jobs over the build (the quota:
  1) and the time the cgroup was throttled (cpu.stat).

A second table holds bcrun against the issue's bounds, at targets 8 and 32
with 2 and 3 builds: fairness at least 0.8; fill at least 90% of the room
the load leaves (the time-mean of T less the burners running, over T: a
policy that gives the steady load its room is not held to 90% of T);
above target at most 10% of the time; at most 6 changes/build/min under
the steady and the bursty load; down within 1 s and back within 1.5 s for
every build.

Each figure is the median over --runs (default 1); the variants' order
rotates from run to run.  --json FILE writes every run's raw figures.  The
last run's bcrun traces are kept at --keep-trace, with the scenario and the
build's number in the name and bcrun's -v output beside each (.log).

The default matrix: targets 8 and 32 with 2 and 3 builds under no load, the
steady load and the bursty load; 1 and 4 builds at target 8, and 2 builds
at target 2, under the steady load; the quota case.  It took 24 minutes
here (2 CPUs, shared with other work); --quick (2 builds at target 8,
steady and bursty load, the quota case, 14 s builds) 2.3 minutes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bcrun.metrics import usable_cpus  # noqa: E402
from bench.harness import (  # noqa: E402
    Cgroup,
    Children,
    arguments,
    compile_c,
    count_range,
    cpu_quota,
    cpu_quota_place,
    exits_cleanly,
    fmt,
    keep,
    kept_as,
    median_of,
    quota_table,
    run,
    say,
    table,
    throttled_s,
    trace_ticks,
    version,
)
from tests.helpers import Bcrun  # noqa: E402

#: burn LOG SECONDS [AT EVERY UNTIL]: a job, or a burner of the external load.
BURN = r"""
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* burn LOG SECONDS: keep a CPU busy until SECONDS of wall time have passed
   (runnable all along, however little CPU it gets), then append
   "START END\n" (seconds since the epoch, as Python's time.time()) to LOG.
   burn LOG SECONDS AT EVERY UNTIL: the same from AT (epoch seconds), and
   again every EVERY seconds (if > 0) while before UNTIL. */

static double now(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int burn(int fd, double seconds) {
    double start = now(CLOCK_REALTIME), deadline = now(CLOCK_MONOTONIC) + seconds;
    while (now(CLOCK_MONOTONIC) < deadline)
        ;
    char line[64];
    int n = snprintf(line, sizeof line, "%.4f %.4f\n", start, now(CLOCK_REALTIME));
    return write(fd, line, n) == n ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 6) return 2;
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return 1;
    double seconds = atof(argv[2]);
    if (argc == 3) return burn(fd, seconds);
    double at = atof(argv[3]), every = atof(argv[4]), until = atof(argv[5]);
    for (int i = 0;; i++) {
        double t = at + i * every;
        if (i > 0 && (every <= 0 || t >= until)) return 0;
        struct timespec ts = {(time_t)t, (long)((t - (time_t)t) * 1e9)};
        while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        if (burn(fd, seconds)) return 1;
    }
}
"""

#: A job's wall time.
JOB_S = 0.8
#: A build's length at the hand split (--seconds), and with --quick.
FAIR_S, QUICK_FAIR_S = 20.0, 14.0
#: The steady load, as shares of --seconds; it starts after the start-up.
STEADY = (0.25, 0.60)
#: The bursty load: ON seconds every EVERY seconds, from EVERY seconds in.
BURST_ON_S, BURST_EVERY_S = 0.3, 2.0
#: Count changes in the first STARTUP_S of a build (bcrun's start from
#: -j's default) and EDGE_S after each edge of a steady load are not counted.
STARTUP_S, EDGE_S = 5.0, 3.0
#: Pause between two variants, for the last one's processes to be gone.
SETTLE_S = 2.0

LOADS = ("none", "steady", "bursty", "quota")


@dataclass(frozen=True)
class Scenario:
    builds: int
    target: int
    load: str

    @property
    def split(self) -> int:
        """The hand split: floor(T/N) jobs a build, at least 1."""
        return max(self.target // self.builds, 1)

    @property
    def burners(self) -> int:
        return max(self.target // 4, 1) if self.load in ("steady", "bursty") else 0

    @property
    def slug(self) -> str:
        if self.load == "quota":
            return "quota"
        return f"T{self.target}-N{self.builds}-{self.load}"


def matrix(
    targets: Sequence[int] | None,
    builds: Sequence[int] | None,
    loads: Sequence[str] | None,
) -> list[Scenario]:
    """The scenarios asked for: the product of the lists given (the
    defaults for those not given), or, with none given, the default matrix."""
    cpus = usable_cpus()
    quota = [Scenario(1, cpus, "quota")]
    if targets is None and builds is None and loads is None:
        main = itertools.product((8, 32), (2, 3), ("none", "steady", "bursty"))
        extra = [(8, 1, "steady"), (8, 4, "steady"), (2, 2, "steady")]
        return [Scenario(n, t, load) for t, n, load in [*main, *extra]] + quota
    loads = loads or LOADS
    return [
        Scenario(n, t, load)
        for t, n, load in itertools.product(targets or (8, 32), builds or (2, 3), loads)
        if load != "quota"
    ] + (quota if "quota" in loads else [])


class Build:
    """One build's directory, Makefile and files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.makefile = directory / "Makefile"
        self.jobs_log = directory / "jobs.log"
        self.trace = directory / "trace.jsonl"
        self.stderr = directory / "stderr.log"

    def make(self, burn: Path, jobs: int) -> None:
        """A Makefile of *jobs* phony targets, each one burn of JOB_S (so
        nothing needs cleaning between variants)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        names = " ".join(f"j{i}" for i in range(jobs))
        self.makefile.write_text(
            f".PHONY: all {names}\nall: {names}\n"
            f"{names}:\n\t@{burn} {self.jobs_log} {JOB_S:g}\n"
        )

    def reset(self) -> None:
        for path in (self.jobs_log, self.trace, self.stderr):
            path.unlink(missing_ok=True)


@dataclass
class Variant:
    name: str
    argv: Callable[[Build], list[str]]
    bcrun: bool = False
    hand_split: bool = False


def variants(scenario: Scenario, runner: Bcrun) -> list[Variant]:
    t, n = scenario.target, scenario.builds

    def make(*flags: str) -> Callable[[Build], list[str]]:
        return lambda b: ["make", "-f", str(b.makefile), *flags]

    def bcrun(*options: str) -> Callable[[Build], list[str]]:
        flags = ["--policy", "adaptive", *options, "-v"]
        return lambda b: [*runner.argv(*flags, "--trace", str(b.trace)), *make()(b)]

    if scenario.load == "quota":
        return [
            Variant("bcrun --policy adaptive (no --load)", bcrun(), bcrun=True),
            Variant(f"make -j{t}", make(f"-j{t}")),
        ]
    split = scenario.split
    found = [
        Variant(f"bcrun --policy adaptive --load {t}", bcrun("--load", str(t)), True)
    ]
    if split != t:  # with one build, make -jT is the hand split
        found.append(Variant(f"{n} x make -j{t}", make(f"-j{t}")))
    return [
        *found,
        Variant(f"{n} x make -j{t} -l {t}", make(f"-j{t}", "-l", str(t))),
        Variant(f"{n} x make -j{split} (hand split)", make(f"-j{split}"), False, True),
    ]


# -- one variant -------------------------------------------------------------------


@dataclass
class Outcome:
    """One variant's builds, as they ran."""

    started: float = 0.0
    #: Between the first build's start and the last's.
    spread_s: float = 0.0
    statuses: list[int | None] = field(default_factory=list)
    #: When each build's command ended.
    ends: list[float] = field(default_factory=list)
    #: Each build's jobs: (start, end).
    jobs: list[list[tuple[float, float]]] = field(default_factory=list)
    #: Each bcrun build's ticks: (time, count).
    ticks: list[list[tuple[float, int]]] = field(default_factory=list)
    #: The burners' bursts: (start, end).
    load: list[tuple[float, float]] = field(default_factory=list)
    throttled_s: float | None = None


def intervals(path: Path) -> list[tuple[float, float]]:
    """The (start, end) lines of a job or burner log."""
    found = []
    for line in path.read_text().splitlines() if path.exists() else []:
        with contextlib.suppress(ValueError):
            start, end = map(float, line.split())
            found.append((start, end))
    return found


def start_load(
    children: Children,
    scenario: Scenario,
    burn: Path,
    log: Path,
    t0: float,
    fair_s: float,
    until: float,
) -> list[subprocess.Popen[bytes]]:
    """The burners of *scenario*'s external load; they sleep until their time."""
    if scenario.load == "steady":
        a = t0 + max(STEADY[0] * fair_s, STARTUP_S)
        schedule = [f"{t0 + STEADY[1] * fair_s - a:g}", f"{a:.3f}", "0", "0"]
    elif scenario.load == "bursty":
        first = t0 + BURST_EVERY_S
        schedule = [f"{BURST_ON_S:g}", f"{first:.3f}", f"{BURST_EVERY_S:g}"]
        schedule.append(f"{until:.3f}")
    else:
        return []
    return [
        children.start([str(burn), str(log), *schedule])
        for _ in range(scenario.burners)
    ]


def run_variant(
    children: Children,
    scenario: Scenario,
    variant: Variant,
    builds: Sequence[Build],
    burn: Path,
    work: Path,
    env: dict[str, str],
    fair_s: float,
    group: Cgroup | None = None,
) -> Outcome:
    for build in builds:
        build.reset()
    load_log = work / "load.log"
    load_log.unlink(missing_ok=True)
    outcome = Outcome()
    # A build held to one job by a starving policy takes split x fair_s.
    timeout = scenario.split * fair_s + 60
    t0 = time.time() + 0.3
    burners = start_load(children, scenario, burn, load_log, t0, fair_s, t0 + timeout)
    time.sleep(max(t0 - time.time(), 0))
    procs = []
    with contextlib.ExitStack() as stack:
        for build in builds:
            argv = variant.argv(build)
            err = stack.enter_context(open(build.stderr, "w"))
            procs.append(
                children.start(
                    group.enter(argv) if group else argv,
                    cwd=build.directory,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            )
            if len(procs) == 1:
                outcome.started = time.time()
        outcome.spread_s = time.time() - outcome.started
    ends: dict[int, float] = {}
    # Polled, not waited for in threads: 20 cheap wake-ups a second.
    while len(ends) < len(procs) and time.time() < t0 + timeout:
        for i, proc in enumerate(procs):
            if i not in ends and proc.poll() is not None:
                ends[i] = time.time()
        time.sleep(0.05)
    for i, proc in enumerate(procs):
        if i not in ends:
            say(f"    build {i + 1}: still running after {timeout:g} s; killed")
        children.end(proc)
        outcome.statuses.append(proc.returncode if i in ends else None)
        outcome.ends.append(ends.get(i, time.time()))
    for burner in burners:
        children.end(burner)
    if group is not None:
        outcome.throttled_s = throttled_s(group)
    outcome.jobs = [intervals(b.jobs_log) for b in builds]
    outcome.load = intervals(load_log)
    if variant.bcrun:
        outcome.ticks = [
            [(t, int(j)) for t, j in trace_ticks(b.trace, "time", "jobs")]
            for b in builds
        ]
    for i, status in enumerate(outcome.statuses):
        if status != 0:
            say(f"    build {i + 1}: exit status {status}; see {builds[i].stderr}")
    return outcome


# -- analysis ----------------------------------------------------------------------


def mean_running(jobs: Sequence[tuple[float, float]], a: float, b: float) -> float:
    """Time-mean of the jobs running over [a, b]."""
    return sum(max(min(e, b) - max(s, a), 0) for s, e in jobs) / (b - a)


def share_above(
    jobs: Sequence[tuple[float, float]], limit: float, a: float, b: float
) -> float:
    """Share of [a, b] during which more than *limit* jobs run."""
    inside = [(max(s, a), min(e, b)) for s, e in jobs if e > a and s < b]
    events = sorted([(s, 1) for s, _ in inside] + [(e, -1) for _, e in inside])
    running, last, above = 0, a, 0.0
    for t, step in events:
        if running > limit:
            above += t - last
        running, last = running + step, t
    return above / (b - a)


@dataclass
class Figures:
    """One variant's figures in one run (None: not measured; in down_s and
    back_s: never)."""

    wall_s: float | None = None
    fill: float | None = None
    fairness: float | None = None
    #: Each build's time-mean running jobs while all run.
    means: list[float] = field(default_factory=list)
    #: The share of T the external load leaves, time-mean while all run.
    room: float | None = None
    above: float | None = None
    #: The same with the external load's burners counted in.
    above_with_load: float | None = None
    changes: list[int] = field(default_factory=list)
    changes_per_min: float | None = None
    down_s: list[float | None] = field(default_factory=list)
    back_s: list[float | None] = field(default_factory=list)
    #: The quota case: mean running jobs over the build, throttled time.
    mean_jobs: float | None = None
    throttled_s: float | None = None
    counts: tuple[int, int] | None = None
    spread_s: float = 0.0
    failed: int = 0
    ratio: float | None = None


def steady_window(load: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    if not load:
        return None
    return min(s for s, _ in load), max(e for _, e in load)


def changes_per_min(
    ticks: Sequence[tuple[float, int]],
    start: float,
    end: float,
    edges: Sequence[float],
) -> tuple[int, float | None]:
    """Count changes after *start* + STARTUP_S and outside EDGE_S after each
    of *edges*: how many, and per minute of the time counted (None if
    under 5 s)."""
    cuts: list[list[float]] = []
    for edge in sorted(edges):
        if cuts and edge <= cuts[-1][1]:
            cuts[-1][1] = edge + EDGE_S
        else:
            cuts.append([edge, edge + EDGE_S])
    begin = start + STARTUP_S

    def counted(t: float) -> bool:
        return t >= begin and not any(a <= t < b for a, b in cuts)

    changes = sum(
        new != old and counted(t) for (_, old), (t, new) in itertools.pairwise(ticks)
    )
    seconds = max(end - begin, 0) - sum(
        max(min(b, end) - max(a, begin), 0) for a, b in cuts
    )
    return changes, (changes / seconds * 60 if seconds >= 5 else None)


def reaction(
    ticks: Sequence[tuple[float, int]], a: float, b: float
) -> tuple[float | None, float | None]:
    """Down: from *a* until the count drops below its value at the last tick
    before *a*; back: from *b* until it is at that value again."""
    before = [j for t, j in ticks if t < a]
    if not before:
        return None, None
    level = before[-1]
    down = next((t for t, j in ticks if a <= t and j < level), None)
    if down is None:
        return None, None
    back = next((t for t, j in ticks if t >= max(b, down) and j >= level), None)
    return down - a, None if back is None else back - b


def total_count(
    builds: Sequence[Sequence[tuple[float, int]]],
) -> list[tuple[float, int]]:
    """The builds' counts added up, at each tick of any of them."""
    events = sorted((t, b, j) for b, ticks in enumerate(builds) for t, j in ticks)
    latest: dict[int, int] = {}
    total = []
    for t, b, j in events:
        latest[b] = j
        if len(latest) == len(builds):
            total.append((t, sum(latest.values())))
    return total


def analyse(scenario: Scenario, outcome: Outcome) -> Figures:
    got = Figures(
        wall_s=max(outcome.ends) - outcome.started,
        spread_s=outcome.spread_s,
        failed=sum(s != 0 for s in outcome.statuses),
        throttled_s=outcome.throttled_s,
    )
    jobs = outcome.jobs
    if all(jobs):
        if scenario.load == "quota":
            span = (min(s for s, _ in jobs[0]), max(e for _, e in jobs[0]))
            got.mean_jobs = mean_running(jobs[0], *span)
        a = max(min(s for s, _ in build) for build in jobs)
        b = min(max(e for _, e in build) for build in jobs)
        if b > a:
            got.means = [mean_running(build, a, b) for build in jobs]
            got.fill = sum(got.means) / scenario.target
            got.fairness = min(got.means) / max(got.means)
            got.room = 1 - mean_running(outcome.load, a, b) / scenario.target
            every = [job for build in jobs for job in build]
            got.above = share_above(every, scenario.target, a, b)
            got.above_with_load = share_above(
                every + outcome.load, scenario.target, a, b
            )
    window = steady_window(outcome.load) if scenario.load == "steady" else None
    # Changes are counted while every build still has jobs to start: once
    # one is in its tail, the others taking its share is no chasing.
    steady_end = min(
        (max(s for s, _ in build) for build in jobs if build), default=None
    )
    rates = []
    for ticks, end in zip(outcome.ticks, outcome.ends, strict=False):
        edges = list(window) if window else []
        until = min(end, steady_end) if steady_end is not None else end
        changes, rate = changes_per_min(ticks, outcome.started, until, edges)
        got.changes.append(changes)
        if rate is not None:
            rates.append(rate)
    if window and outcome.ticks and all(outcome.ticks):
        # The builds together: an uneven split (7 between 2) may leave one
        # build's count where it was, rightly.
        down, back = reaction(total_count(outcome.ticks), *window)
        got.down_s.append(down)
        got.back_s.append(back)
    got.changes_per_min = statistics.mean(rates) if rates else None
    counts = [j for ticks in outcome.ticks for _, j in ticks]
    got.counts = (min(counts), max(counts)) if counts else None
    return got


# -- the benchmark -----------------------------------------------------------------


def numbers(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def names(text: str) -> list[str]:
    got = [v for v in text.split(",") if v]
    for name in got:
        if name not in LOADS:
            raise ValueError(name)
    return got


def main() -> int:
    parser = arguments(__doc__, "bcrun-sharing-trace.jsonl")
    parser.set_defaults(runs=1)
    parser.add_argument("--quick", action="store_true", help="the quick subset")
    parser.add_argument("--targets", type=numbers, help="targets, like 8,32")
    parser.add_argument("--builds", type=numbers, help="builds at once, like 2,3")
    parser.add_argument(
        "--loads", type=names, help=f"external loads, of {','.join(LOADS)}"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        help=f"a build's length at the hand split (default {FAIR_S:g}, "
        f"--quick {QUICK_FAIR_S:g})",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="raw figures")
    args = parser.parse_args()
    if args.quick:
        args.targets = args.targets or [8]
        args.builds = args.builds or [2]
        args.loads = args.loads or ["steady", "bursty", "quota"]
    fair_s = args.seconds or (QUICK_FAIR_S if args.quick else FAIR_S)
    scenarios = matrix(args.targets, args.builds, args.loads)
    quota_where, quota_why = cpu_quota_place()
    results: dict[Scenario, dict[str, list[Figures]]] = {}
    began = time.monotonic()
    with exits_cleanly() as children, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        runner = Bcrun(tmp)
        burn = compile_c(BURN, tmp / "burn")
        say(f"{version()}; {usable_cpus()} CPUs; {len(scenarios)} scenarios")
        for scenario in scenarios:
            todo = variants(scenario, runner)
            results[scenario] = {v.name: [] for v in todo}
            if scenario.load == "quota" and quota_where is None:
                say(f"{scenario.slug}: skipped: {quota_why}")
                continue
            split = 1 if scenario.load == "quota" else scenario.split
            jobs = round(fair_s * split / JOB_S)
            work = tmp / scenario.slug
            builds = [Build(work / f"build{i + 1}") for i in range(scenario.builds)]
            for build in builds:
                build.make(burn, jobs)
            for turn in range(args.runs):
                order = todo[turn % len(todo) :] + todo[: turn % len(todo)]
                for variant in order:
                    say(
                        f"{scenario.slug}, run {turn + 1}/{args.runs}: {variant.name} "
                        f"({jobs} jobs a build; {time.monotonic() - began:.0f} s in)"
                    )
                    with contextlib.ExitStack() as stack:
                        group = None
                        if quota_where is not None and scenario.load == "quota":
                            group = stack.enter_context(cpu_quota(quota_where, 1))
                        outcome = run_variant(
                            children,
                            scenario,
                            variant,
                            builds,
                            burn,
                            work,
                            runner.env,
                            fair_s,
                            group,
                        )
                    got = analyse(scenario, outcome)
                    results[scenario][variant.name].append(got)
                    say(
                        f"    {got.wall_s:.1f} s, fill {fmt(got.fill, '', 2)}, "
                        f"fairness {fmt(got.fairness, '', 2)}, means "
                        + " ".join(f"{m:.1f}" for m in got.means)
                    )
                    if variant.bcrun and turn == args.runs - 1:
                        for i, build in enumerate(builds):
                            where = kept_as(args.keep_trace, f"{scenario.slug}-{i + 1}")
                            keep(build.trace, build.stderr, where)
                    time.sleep(SETTLE_S)
            hand = [v.name for v in todo if v.hand_split]
            for variant in todo:
                for i, got in enumerate(results[scenario][variant.name]):
                    base = results[scenario][hand[0]][i].wall_s if hand else None
                    if base and got.wall_s:
                        got.ratio = got.wall_s / base
    minutes = (time.monotonic() - began) / 60
    print(f"{version()}; {usable_cpus()} CPUs; {minutes:.1f} minutes")
    report(results, args.runs, fair_s, quota_where, quota_why)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "version": version(),
                    "cpus": usable_cpus(),
                    "runs": args.runs,
                    "seconds": fair_s,
                    "job_s": JOB_S,
                    "scenarios": [
                        {
                            **asdict(scenario),
                            "split": scenario.split,
                            "burners": scenario.burners,
                            "variants": {
                                name: [asdict(g) for g in runs]
                                for name, runs in by_variant.items()
                            },
                        }
                        for scenario, by_variant in results.items()
                    ],
                },
                indent=1,
            )
        )
        say(f"raw figures: {args.json}")
    say(f"kept: the last run's bcrun traces at {args.keep_trace.stem}-*")
    return 0


# -- output ------------------------------------------------------------------------


def med(runs: Sequence[Figures], name: str, scale: float = 1.0) -> float | None:
    got = median_of([getattr(r, name) for r in runs])
    return None if got is None else got * scale


def spread(values: Sequence[float | None]) -> str:
    """Median / largest of reaction times, with how many never came."""
    if not values:
        return "-"
    got = [v for v in values if v is not None]
    text = f"{statistics.median(got):.1f} / {max(got):.1f} s" if got else "never"
    missing = len(values) - len(got)
    return (
        text if not missing or not got else f"{text} (never: {missing}/{len(values)})"
    )


def bounds(results: dict[Scenario, dict[str, list[Figures]]]) -> str:
    """The issue's bounds for bcrun, at targets 8 and 32 with 2 and 3
    builds: met or not, and the figure."""

    def check(value: float | None, met: bool, text: str) -> str:
        return "-" if value is None else f"{'yes' if met else 'NO'} ({text})"

    def reaction(values: list[float | None], limit: float) -> str:
        if not values:
            return "-"
        if None in values:
            return f"NO (never: {values.count(None)}/{len(values)})"
        worst = max(v for v in values if v is not None)
        return check(worst, worst <= limit, f"{worst:.1f} s")

    rows = []
    for scenario, by_variant in results.items():
        if scenario.target not in (8, 32) or scenario.builds not in (2, 3):
            continue
        # The bcrun variant comes first.
        got = next(iter(by_variant.values()))
        fairness, fill = med(got, "fairness"), med(got, "fill", 100)
        least = 90 * (med(got, "room") or 1)
        above, changes = med(got, "above", 100), med(got, "changes_per_min")
        loaded = scenario.load in ("steady", "bursty")
        rows.append(
            [
                str(scenario.builds),
                str(scenario.target),
                scenario.load,
                check(fairness, (fairness or 0) >= 0.8, fmt(fairness, "", 2)),
                check(
                    fill, (fill or 0) >= least, f"{fmt(fill, '%', 0)} of {least:.0f}%"
                ),
                check(above, (above or 0) <= 10, fmt(above, "%", 0)),
                check(changes, (changes or 0) <= 6, fmt(changes)) if loaded else "-",
                reaction([v for r in got for v in r.down_s], 1.0),
                reaction([v for r in got for v in r.back_s], 1.5),
            ]
        )
    headers = [
        "builds",
        "target",
        "load",
        "fairness >= 0.8",
        "fill >= 90% of the room the load leaves",
        "above target <= 10%",
        "changes/build/min <= 6 (loaded)",
        "down <= 1 s (all builds)",
        "back <= 1.5 s",
    ]
    return "\nbcrun --policy adaptive against the bounds:\n\n" + table(headers, rows)


def report(
    results: dict[Scenario, dict[str, list[Figures]]],
    runs: int,
    fair_s: float,
    quota_where: tuple[int, Path] | None,
    quota_why: str,
) -> None:
    print(
        f"\n{runs} run(s), medians; jobs of {JOB_S:g} s of wall time; each build "
        f"lasts {fair_s:g} s at the hand split floor(T/N); load: T/4 burners "
        f"(at least 1), steady from {STEADY[0]:.0%} (at least {STARTUP_S:g} s) to "
        f"{STEADY[1]:.0%} of that, bursty {BURST_ON_S:g} s every "
        f"{BURST_EVERY_S:g} s; down / back: of the builds' counts added up (median / largest over runs); changes: while every build still has jobs to start\n"
    )
    rows = []
    for scenario, by_variant in results.items():
        if scenario.load == "quota":
            continue
        for name, got in by_variant.items():
            failed = sum(r.failed for r in got)
            rows.append(
                [
                    str(scenario.builds),
                    str(scenario.target),
                    f"{scenario.load} ({scenario.burners})"
                    if scenario.burners
                    else scenario.load,
                    name + (f" (failed {failed}x)" if failed else ""),
                    fmt(med(got, "fill", 100), "%", 0),
                    fmt(med(got, "fairness"), "", 2),
                    fmt(med(got, "above", 100), "%", 0),
                    fmt(med(got, "changes_per_min"), "", 1),
                    spread([v for r in got for v in r.down_s]),
                    spread([v for r in got for v in r.back_s]),
                    f"{fmt(med(got, 'ratio'), '', 2)} ({fmt(med(got, 'wall_s'), ' s')})",
                ]
            )
    print(
        table(
            [
                "builds",
                "target",
                "load (burners)",
                "variant",
                "fill",
                "fairness (min/max)",
                "above target",
                "changes/build/min",
                "down",
                "back",
                "wall vs hand split",
            ],
            rows,
        )
    )
    print(bounds(results))
    quota = [s for s in results if s.load == "quota"]
    if not quota:
        return
    cells = {
        name: [
            fmt(med(got, "mean_jobs"), "", 2),
            fmt(med(got, "throttled_s"), " s"),
            count_range([r.counts for r in got]),
            fmt(med(got, "changes_per_min"), "", 1),
            fmt(med(got, "wall_s"), " s"),
        ]
        for name, got in results[quota[0]].items()
    }
    headers = [
        "variant",
        "running jobs, mean (the quota: 1)",
        "throttled",
        "bcrun's count",
        "changes/min",
        "wall",
    ]
    about = "one build, bcrun given no --load, medians"
    print(quota_table(quota_where, quota_why, about, headers, cells))


if __name__ == "__main__":
    run(main)
