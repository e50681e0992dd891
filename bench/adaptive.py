"""bcrun's adaptive policy against make -j, make -l and nice, on one real
build while an external CPU load comes and goes, measured in the same run.

    python3 bench/adaptive.py [--runs N] [--quick] [--files F] [--sessions]
                              [--keep-trace PATH]

The build: F generated C files (default 48), each 0.5-1.5 s of gcc -O2 on a
2-core machine, compiled to .o by a Makefile (no link).  N is the CPUs.
Each run builds it, from clean, with:

- ``make -jN``, ``make -jN -l N``, ``nice -n 19 make -jN`` and
  ``bcrun --policy adaptive --trace FILE -v make -jN`` (bcrun takes -jN off
  make's command line and starts at N), while the external load runs: N
  Python processes that burn CPU, started 4 s into the build and stopped
  16 s later (--quick: 3 s and 8 s), each counting units of work;
- the same burners alone, without a build (the external load's 100%);
- ``make -jN`` and bcrun again on the idle machine (no burners), for
  bcrun's throughput loss (the issue's target: at most 5%);
- ``make -jN`` and bcrun once more, no burners, each in a new cgroup whose
  CPU quota is 1 CPU (v1: cpu.cfs_quota_us = cpu.cfs_period_us; v2:
  cpu.max "100000 100000"), the command inside it: the running cc1 (mean
  of the samples; the quota: 1), the cgroup's throttled time (cpu.stat)
  and bcrun's counts.  Where no such cgroup can be made, the table says
  why.

Every process runs in the benchmark's session, so in one autogroup, where
nice works as documented; --sessions gives each build and burner a session
(so an autogroup) of its own, as programs started from separate terminals.

Measured, by the benchmark itself (not by bcrun), for each build:

- wall time, from starting the command to its exit;
- runnable load above the target: /proc/loadavg's running tasks (less the
  reader) sampled every 50 ms, the time-weighted mean of
  max(runnable - N, 0), over the load window and over the whole build;
- the external load's progress: the burners' units against the burners
  alone;
- wake-up latency of an interactive probe: a process that sleeps 5 ms in a
  loop, the lateness of each wake-up, p50 and p99 over the whole build;
- reaction: the build's running cc1 processes (its descendants, counted by
  scanning /proc every 50 ms); "down" is the time from the burners' start
  until the build runs at most max(N - burners, 1) cc1 for the rest of the
  load window (the build never goes below one job), "above" the share of
  the load window's samples above that, "back" the time from the burners'
  end until N cc1 run again;
- the noise: CPU time the machine spent meanwhile on anything but the build
  (its rusage) and the burners (their own CPU time), from /proc/stat; the
  probe and the sampler take a little of it, other users the rest;
- load1 when the build started: make -l starts from what the previous
  build left in the load average.

bcrun's own view comes from its --trace: when its count fell and rose, the
external load it saw before, during and after the burners, how often the
count changed, and how often it fell outside the load window although
nothing but the build used half a CPU over that tick (cpu_busy - build_cpu).  The last run's traces and -v outputs are kept: the loaded
one at --keep-trace, the idle one beside it (NAME-idle).  Each figure is the
median over the runs; the variants' order rotates from run to run.
"""

from __future__ import annotations

import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bcrun.metrics import usable_cpus  # noqa: E402
from bench.harness import (  # noqa: E402
    Cgroup,
    Children,
    Sampler,
    arguments,
    count_below,
    count_range,
    cpu_busy_s,
    cpu_quota,
    cpu_quota_place,
    exits_cleanly,
    fmt,
    keep,
    median_of,
    percentile,
    quota_table,
    read_text,
    run,
    running_tasks,
    say,
    table,
    throttled_s,
    trace_ticks,
    version,
    wait_with_cpu,
)
from tests.helpers import Bcrun  # noqa: E402

#: The external load: burns CPU in units of ~1 ms until its time is up,
#: then prints the units done, when it started and stopped, its CPU time.
BURNER = """
import sys, time
start = time.time()
end = time.monotonic() + float(sys.argv[1])
units = 0
while time.monotonic() < end:
    x = 0
    for i in range(20000):
        x += i
    units += 1
print(units, start, time.time(), time.process_time())
"""

#: The interactive probe: sleeps in a loop until SIGTERM, then prints when
#: each wake-up was and how late (seconds).
PROBE = """
import signal, sys, time
interval = float(sys.argv[1])
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
out = []
while not stop:
    t0 = time.monotonic()
    time.sleep(interval)
    out.append((time.time(), time.monotonic() - t0 - interval))
sys.stdout.write("".join(f"{t:.4f} {late:.6f}\\n" for t, late in out))
"""

PROBE_INTERVAL = 0.005

MAKEFILE = """\
SRCS := $(sort $(wildcard *.c))
OBJS := $(SRCS:.c=.o)
all: $(OBJS)
%.o: %.c
\t$(CC) -O2 -c $< -o $@
"""


def generate(directory: Path, files: int) -> None:
    """*files* C files of 60 to 180 functions (about 0.5 to 1.5 s each at
    -O2 here), sizes shuffled so that the build mixes them throughout."""
    directory.mkdir()
    sizes = [60 + 120 * i // max(files - 1, 1) for i in range(files)]
    random.Random(1).shuffle(sizes)
    for index, functions in enumerate(sizes):
        body = ["#include <stddef.h>"]
        for f in range(functions):
            body.append(
                f"double f{index}_{f}(const double *a, size_t n, int k) {{\n"
                f"    double s = {f}.0;\n"
                "    for (size_t j = 0; j < n; j++) {\n"
                f"        switch ((int)(a[j] * {f + 3}) % 7) {{\n"
                f"        case 0: s += a[j] * {f}; break;\n"
                f"        case 1: s -= a[j] / (s + {f + 1}); break;\n"
                "        case 2: s *= 1.0001 + a[j] * k; break;\n"
                "        case 3: for (int q = 0; q < k; q++) s += q * a[(j + q) % n]; break;\n"
                "        default: s = s * 0.5 + a[j];\n"
                "        }\n    }\n    return s;\n}"
            )
        (directory / f"u{index:03d}.c").write_text("\n".join(body) + "\n")
    (directory / "Makefile").write_text(MAKEFILE)


def clean(directory: Path) -> None:
    for obj in directory.glob("*.o"):
        obj.unlink()


@dataclass
class Schedule:
    """When the burners run, relative to the build's start (None: no load)."""

    burners: int
    start_s: float | None
    seconds: float


class Tick(NamedTuple):
    """One tick of bcrun's trace."""

    time: float
    jobs: int
    #: The external load bcrun saw (smoothed).
    external: float
    #: CPUs busy with anything but the build over the tick (bcrun's own
    #: share, the probe's and the sampler's in it).
    others_cpu: float


@dataclass
class Outcome:
    """One build (or the burners alone), as measured."""

    status: int = 0
    wall_s: float = 0.0
    started: float = 0.0
    #: (time, runnable tasks, the build's running cc1)
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    #: (time, lateness in seconds)
    wakeups: list[tuple[float, float]] = field(default_factory=list)
    units: int = 0
    #: CPU seconds the machine spent on anything but the build and the
    #: burners, meanwhile: the noise (the probe and the sampler are in it).
    other_cpu_s: float = 0.0
    load_from: float | None = None
    load_until: float | None = None
    trace: list[Tick] = field(default_factory=list)
    load1: float = 0.0


class Load(threading.Thread):
    """Starts the burners at their time and collects their work."""

    def __init__(self, children: Children, schedule: Schedule, t0: float) -> None:
        super().__init__(daemon=True)
        self.children, self.schedule, self.t0 = children, schedule, t0
        self.results: list[tuple[int, float, float, float]] = []
        self.cancelled = threading.Event()

    def run(self) -> None:
        assert self.schedule.start_s is not None
        if self.cancelled.wait(max(self.t0 + self.schedule.start_s - time.time(), 0)):
            return
        argv = [sys.executable, "-c", BURNER, str(self.schedule.seconds)]
        procs = [
            self.children.start(argv, stdout=subprocess.PIPE, text=True)
            for _ in range(self.schedule.burners)
        ]
        for proc in procs:
            out, _ = proc.communicate()
            if proc.returncode == 0 and out.split():
                units, start, end, cpu = out.split()
                self.results.append((int(units), float(start), float(end), float(cpu)))
            self.children.procs.remove(proc)


def measure(
    children: Children,
    argv: Sequence[str] | None,
    schedule: Schedule,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> Outcome:
    """Run *argv* (None: the burners alone, for their length) with the
    probe, the sampler and the load of *schedule*."""
    outcome = Outcome()
    probe = children.start(
        [sys.executable, "-c", PROBE, str(PROBE_INTERVAL)],
        stdout=subprocess.PIPE,
        text=True,
    )
    root = [-1]
    sampler = Sampler(lambda: (running_tasks(), count_below(root[0], "cc1")))
    sampler.start()
    time.sleep(0.3)  # the probe and the sampler settle
    outcome.started = time.time()
    outcome.load1 = float((read_text("/proc/loadavg") or "0").split()[0])
    load = None
    if schedule.start_s is not None:
        load = Load(children, schedule, outcome.started)
        load.start()
    try:
        if argv is None:
            assert load is not None
            load.join()
        else:
            busy = cpu_busy_s()
            with open(log or "/dev/null", "w") as err:
                build = children.start(
                    argv, env=env, stdout=subprocess.DEVNULL, stderr=err
                )
                root[0] = build.pid
                build_cpu = wait_with_cpu(build)
                outcome.status = build.returncode
                children.procs.remove(build)
            outcome.other_cpu_s = cpu_busy_s() - busy - build_cpu
        outcome.wall_s = time.time() - outcome.started
        if load is not None:
            load.cancelled.set()
            load.join()
            outcome.units = sum(r[0] for r in load.results)
            outcome.other_cpu_s -= sum(r[3] for r in load.results)
            if load.results:
                outcome.load_from = min(r[1] for r in load.results)
                outcome.load_until = max(r[2] for r in load.results)
    finally:
        samples = sampler.stop()
        probe.terminate()
        out, _ = probe.communicate()
        children.procs.remove(probe)
    outcome.samples = [(t, r, c) for t, (r, c) in samples if t >= outcome.started]
    end = outcome.started + outcome.wall_s
    for line in out.splitlines():
        t, late = map(float, line.split())
        if outcome.started <= t <= end:
            outcome.wakeups.append((t, late))
    return outcome


# -- analysis ------------------------------------------------------------------


def excess(
    samples: Sequence[tuple[float, int, int]], n: int, a: float, b: float
) -> float | None:
    """Time-weighted mean of max(runnable - n, 0) over [a, b]."""
    inside = [(t, r) for t, r, _ in samples if a <= t <= b]
    if len(inside) < 2:
        return None
    total = weight = 0.0
    for (t, r), (t_next, _) in pairwise(inside):
        total += max(r - n, 0) * (t_next - t)
        weight += t_next - t
    return total / weight if weight else None


@dataclass
class Row:
    wall_s: float | None = None
    excess_window: float | None = None
    excess_build: float | None = None
    progress: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    down_s: float | None = None
    above: float | None = None
    back_s: float | None = None
    before: float | None = None
    other_cpu_s: float | None = None
    load1: float | None = None
    failed: int = 0


def analyse(outcome: Outcome, n: int, burners: int, alone_units: int | None) -> Row:
    end = outcome.started + outcome.wall_s
    row = Row(
        wall_s=outcome.wall_s,
        failed=int(outcome.status != 0),
        other_cpu_s=outcome.other_cpu_s,
        load1=outcome.load1,
    )
    row.excess_build = excess(outcome.samples, n, outcome.started, end)
    late = [late * 1000 for _, late in outcome.wakeups]
    if late:
        row.p50_ms, row.p99_ms = percentile(late, 0.5), percentile(late, 0.99)
    a, b = outcome.load_from, outcome.load_until
    if a is None or b is None:
        return row
    row.excess_window = excess(outcome.samples, n, a, b)
    if alone_units:
        row.progress = outcome.units / alone_units
    target = max(n - burners, 1)
    before = [c for t, _, c in outcome.samples if a - 2 <= t < a]
    row.before = sum(before) / len(before) if before else None
    window = [(t, c) for t, _, c in outcome.samples if a <= t <= b]
    if window:
        row.above = sum(c > target for _, c in window) / len(window)
        settled = None
        for t, c in reversed(window):
            if c > target:
                break
            settled = t
        row.down_s = None if settled is None else settled - a
    if row.down_s is not None:
        back = next((t for t, _, c in outcome.samples if t >= b and c >= n), None)
        row.back_s = None if back is None else back - b
    return row


@dataclass
class TraceView:
    """What bcrun itself saw and did, from its trace."""

    down_s: float | None = None
    back_s: float | None = None
    external_before: float | None = None
    external_during: float | None = None
    external_after: float | None = None
    changes: int = 0
    min_jobs: int | None = None
    #: Count decreases while nothing but the build used as much as half a
    #: CPU over the tick (outside the load window).
    idle_drops: int = 0


#: Less than this many CPUs busy with anything but the build: no real load.
IDLE_OTHERS_CPU = 0.5


def view(outcome: Outcome, n: int, burners: int) -> TraceView:
    ticks = outcome.trace
    found = TraceView()
    jobs = [tick.jobs for tick in ticks]
    found.changes = sum(x != y for x, y in pairwise(jobs))
    found.min_jobs = min(jobs) if jobs else None
    a, b = outcome.load_from, outcome.load_until
    found.idle_drops = sum(
        new.jobs < old.jobs
        and new.others_cpu < IDLE_OTHERS_CPU
        and (a is None or b is None or not a <= new.time <= b + 2)
        for old, new in pairwise(ticks)
    )

    def external(start: float, stop: float) -> float | None:
        values = [tick.external for tick in ticks if start <= tick.time <= stop]
        return sum(values) / len(values) if values else None

    end = outcome.started + outcome.wall_s
    if a is None or b is None:
        found.external_during = external(outcome.started + 1, end)
        return found
    target = max(n - burners, 1)
    down = next((t.time for t in ticks if t.time >= a and t.jobs <= target), None)
    back = next((t.time for t in ticks if t.time >= b and t.jobs >= n), None)
    found.down_s = None if down is None else down - a
    found.back_s = None if back is None else back - b
    # Settled parts only: 2 s after each change of the real load.
    found.external_before = external(outcome.started + 1, a)
    found.external_during = external(a + 2, b)
    found.external_after = external(b + 2, end)
    return found


@dataclass
class QuotaRow:
    """A build in a 1-CPU quota."""

    wall_s: float
    #: Running cc1, the mean of the samples (the quota: 1).
    cc1_mean: float | None
    throttled_s: float | None
    #: bcrun's lowest and highest count; None for make.
    counts: tuple[int, int] | None


def quota_row(outcome: Outcome, throttled: float | None) -> QuotaRow:
    cc1 = [c for _, _, c in outcome.samples]
    jobs = [tick.jobs for tick in outcome.trace]
    return QuotaRow(
        outcome.wall_s,
        sum(cc1) / len(cc1) if cc1 else None,
        throttled,
        (min(jobs), max(jobs)) if jobs else None,
    )


# -- the benchmark -------------------------------------------------------------


@dataclass
class Variant:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    bcrun: bool = False


def variants(project: Path, n: int, runner: Bcrun, trace: Path) -> list[Variant]:
    make = ["make", "-C", str(project), f"-j{n}"]
    return [
        Variant(f"make -j{n}", make),
        Variant(f"make -j{n} -l {n}", [*make, "-l", str(n)]),
        Variant(f"nice -n 19 make -j{n}", ["nice", "-n", "19", *make]),
        Variant(
            f"bcrun --policy adaptive make -j{n}",
            runner.argv("--policy", "adaptive", "--trace", str(trace), "-v", *make),
            runner.env,
            bcrun=True,
        ),
    ]


def run_variant(
    children: Children,
    variant: Variant,
    project: Path,
    schedule: Schedule,
    trace: Path,
    log: Path,
    group: Cgroup | None = None,
) -> Outcome:
    """*variant*'s build from clean, inside *group* if given."""
    clean(project)
    trace.unlink(missing_ok=True)
    argv = group.enter(variant.argv) if group else variant.argv
    outcome = measure(children, argv, schedule, variant.env, log)
    if variant.bcrun and trace.exists():
        keys = ("time", "jobs", "external_load", "cpu_busy", "build_cpu")
        outcome.trace = [
            Tick(t, int(j), e, busy - build)
            for t, j, e, busy, build in trace_ticks(trace, *keys)
        ]
    if outcome.status != 0:
        say(f"  {variant.name}: exit status {outcome.status}; see {log}")
    return outcome


def main() -> int:
    parser = arguments(__doc__, "bcrun-adaptive-trace.jsonl")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="24 files, burners from 3 s for 8 s, 1 run unless --runs",
    )
    parser.add_argument("--files", type=int, help="C files (default 48)")
    parser.add_argument(
        "--sessions",
        action="store_true",
        help="start each build and each burner in a session (so, an autogroup) "
        "of its own, as from separate terminals; default: one session for all, "
        "where nice works as documented",
    )
    parser.set_defaults(runs=None)  # --quick: 1
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    files = args.files or (24 if args.quick else 48)
    idle_trace = args.keep_trace.with_name(
        f"{args.keep_trace.stem}-idle{args.keep_trace.suffix}"
    )
    n = usable_cpus()
    burners = n
    loaded = Schedule(burners, 3.0, 8.0) if args.quick else Schedule(burners, 4.0, 16.0)
    idle = Schedule(burners, None, 0.0)
    if shutil.which("gcc") is None or shutil.which("make") is None:
        say("skipped: needs gcc and make")
        return 0
    quota_where, quota_why = cpu_quota_place()
    with (
        exits_cleanly(args.sessions) as children,
        tempfile.TemporaryDirectory() as tmp_name,
    ):
        tmp = Path(tmp_name)
        runner = Bcrun(tmp)
        project = tmp / "project"
        generate(project, files)
        trace, log = tmp / "trace.jsonl", tmp / "build.log"
        todo = variants(project, n, runner, trace)
        background = Sampler(running_tasks)
        with background:
            time.sleep(2)
        before = [v for _, v in background.samples]
        say(
            f"{version()}; {n} CPUs, {files} files, burners: {burners} from "
            f"{loaded.start_s:g} s for {loaded.seconds:g} s; runnable before "
            f"starting: {sum(before) / max(len(before), 1):.2f}"
        )
        loaded_rows: dict[str, list[Row]] = {v.name: [] for v in todo}
        views: list[TraceView] = []
        idle_rows: dict[str, list[Row]] = {todo[0].name: [], todo[3].name: []}
        idle_views: list[TraceView] = []
        quota_rows: dict[str, list[QuotaRow]] = {todo[0].name: [], todo[3].name: []}
        for turn in range(runs):
            say(f"run {turn + 1}/{runs}: the burners alone")
            alone = measure(children, None, loaded)
            say(f"  {alone.units} units")
            order = todo[turn % len(todo) :] + todo[: turn % len(todo)]
            for variant in order:
                say(f"  {variant.name}, with the external load")
                outcome = run_variant(children, variant, project, loaded, trace, log)
                row = analyse(outcome, n, burners, alone.units)
                loaded_rows[variant.name].append(row)
                say(
                    f"    {row.wall_s:.1f} s, progress {fmt(row.progress, '', 2)}, "
                    f"down {fmt(row.down_s, ' s')}, back {fmt(row.back_s, ' s')}"
                )
                if variant.bcrun:
                    views.append(view(outcome, n, burners))
                    keep(trace, log, args.keep_trace)
            pair = (todo[3], todo[0]) if turn % 2 else (todo[0], todo[3])
            for variant in pair:
                say(f"  {variant.name}, idle machine")
                outcome = run_variant(children, variant, project, idle, trace, log)
                idle_rows[variant.name].append(analyse(outcome, n, burners, None))
                say(f"    {outcome.wall_s:.1f} s")
                if variant.bcrun:
                    idle_views.append(view(outcome, n, burners))
                    keep(trace, log, idle_trace)
            for variant in pair if quota_where is not None else ():
                say(f"  {variant.name}, in a 1-CPU quota")
                with cpu_quota(quota_where, 1) as group:
                    outcome = run_variant(
                        children, variant, project, idle, trace, log, group
                    )
                    got = quota_row(outcome, throttled_s(group))
                quota_rows[variant.name].append(got)
                say(f"    {got.wall_s:.1f} s, {fmt(got.cc1_mean, ' cc1', 2)}")
        print(f"{version()}; {'a session each' if args.sessions else 'one session'}")
        report(n, burners, runs, loaded, loaded_rows, views, idle_rows, idle_views)
        report_quota(quota_where, quota_why, quota_rows)
        say(f"kept: {args.keep_trace} and {idle_trace}, each with its .log")
    return 0


def report(
    n: int,
    burners: int,
    runs: int,
    loaded: Schedule,
    loaded_rows: dict[str, list[Row]],
    views: list[TraceView],
    idle_rows: dict[str, list[Row]],
    idle_views: list[TraceView],
) -> None:
    def med(rows: list[Row], name: str, scale: float = 1.0) -> float | None:
        got = median_of([getattr(r, name) for r in rows])
        return None if got is None else got * scale

    def reaction(rows: list[Row], name: str) -> str:
        got = [getattr(r, name) for r in rows]
        text = fmt(median_of(got), " s")
        missing = sum(g is None for g in got)
        return text if not missing else f"{text} (never: {missing}/{len(got)})"

    print(
        f"\n{runs} run(s), medians; N = {n}; external load: {burners} CPU "
        f"burners from {loaded.start_s:g} s for {loaded.seconds:g} s; "
        f"target while they run: at most {max(n - burners, 1)} cc1\n"
    )
    rows = []
    for name, got in loaded_rows.items():
        failed = sum(r.failed for r in got)
        rows.append(
            [
                name + (f" (failed {failed}x)" if failed else ""),
                fmt(med(got, "wall_s"), " s"),
                fmt(med(got, "excess_window"), "", 2),
                fmt(med(got, "excess_build"), "", 2),
                fmt(med(got, "progress", 100), "%", 0),
                f"{fmt(med(got, 'p50_ms'), '', 2)} / {fmt(med(got, 'p99_ms'), '', 1)}",
                fmt(med(got, "load1"), "", 2),
                fmt(med(got, "before"), "", 1),
                reaction(got, "down_s"),
                fmt(med(got, "above", 100), "%", 0),
                reaction(got, "back_s") if med(got, "down_s") is not None else "n/a",
                fmt(med(got, "other_cpu_s"), " s", 1),
            ]
        )
    print(
        table(
            [
                "variant",
                "build wall",
                f"runnable above {n}: load window",
                "whole build",
                "external load's progress",
                "probe wake-up late p50 / p99 (ms)",
                "load1 at start",
                "cc1 running, 2 s before",
                "down: settled at target",
                "load window above target",
                "back: N cc1 again",
                "CPU used by others",
            ],
            rows,
        )
    )
    print("\nbcrun's own view (its --trace, ticks of 0.5 s), each run:\n")
    vrows = [
        [
            str(i + 1),
            fmt(v.down_s, " s"),
            fmt(v.back_s, " s"),
            f"{fmt(v.external_before, '', 2)} / {fmt(v.external_during, '', 2)} / "
            f"{fmt(v.external_after, '', 2)}",
            str(v.changes),
            str(v.idle_drops),
            str(v.min_jobs),
        ]
        for i, v in enumerate(views)
    ]
    print(
        table(
            [
                "run",
                "count at target after burners start",
                "count N after they stop",
                f"external load seen before / during / after (real: 0 / {burners} / 0)",
                "count changes",
                f"drops outside the load with others < {IDLE_OTHERS_CPU} CPU",
                "lowest count",
            ],
            vrows,
        )
    )
    make_name, bcrun_name = list(idle_rows)
    print("\nIdle machine (no burners), each run:\n")
    irows = []
    ratios = []
    pairs = zip(idle_rows[make_name], idle_rows[bcrun_name], idle_views, strict=False)
    for i, (m, b, v) in enumerate(pairs):
        ratio = b.wall_s / m.wall_s if m.wall_s and b.wall_s else None
        if ratio is not None:
            ratios.append(ratio)
        irows.append(
            [
                str(i + 1),
                f"{fmt(m.wall_s, ' s')} ({fmt(m.other_cpu_s, ' s')})",
                f"{fmt(b.wall_s, ' s')} ({fmt(b.other_cpu_s, ' s')})",
                fmt(ratio, "", 3),
                fmt(v.external_during, "", 2),
                f"{v.changes} / {v.idle_drops}",
                str(v.min_jobs),
                f"{fmt(m.p99_ms)} / {fmt(b.p99_ms)}",
            ]
        )
    print(
        table(
            [
                "run",
                f"{make_name}: wall (CPU used by others)",
                "bcrun adaptive: wall (CPU used by others)",
                "bcrun / make",
                "external load bcrun saw",
                f"count changes / drops with others < {IDLE_OTHERS_CPU} CPU",
                "lowest count",
                "probe p99 make / bcrun (ms)",
            ],
            irows,
        )
    )
    if ratios:
        loss = statistics.median(ratios) - 1
        print(
            f"\nadaptive's throughput loss on the idle machine: {loss * 100:+.1f}% "
            "(the median of the per-run ratios; the issue's target: at most "
            f"+5%) -> {'met' if loss <= 0.05 else 'NOT met'}"
        )


def report_quota(
    where: tuple[int, Path] | None, why: str, rows: dict[str, list[QuotaRow]]
) -> None:
    cells = {
        name: [
            fmt(median_of([r.wall_s for r in got]), " s"),
            fmt(median_of([r.cc1_mean for r in got]), "", 2),
            fmt(median_of([r.throttled_s for r in got]), " s"),
            count_range([r.counts for r in got]),
        ]
        for name, got in rows.items()
    }
    headers = [
        "variant",
        "build wall",
        "cc1 running, mean (the quota: 1)",
        "throttled",
        "bcrun's count",
    ]
    print(quota_table(where, why, "no burners, medians", headers, cells))


if __name__ == "__main__":
    run(main)
