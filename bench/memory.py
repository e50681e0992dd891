"""bcrun's memory policy against stock make, on a build whose jobs each need
a lot of memory, inside a memory-limited cgroup, measured in the same run.

    python3 bench/memory.py [--runs N] [--jobs K] [--job-mb MB] [--ramp S]
                            [--hold S] [--limit-mb MB] [--timeout S]
                            [--keep-trace PATH]

Needs root and a usable memory cgroup: v2 (memory.max and memory.swap.max)
where the memory controller is there, else v1 (memory.limit_in_bytes and
memory.memsw.limit_in_bytes); otherwise it says why and skips.  The cgroup
is made below the benchmark's own, anew for each build, and removed
afterwards whatever happens (Ctrl-C included).

The build: K jobs (default 10), each a small C program compiled once here
that allocates and touches MB megabytes (default 350) gradually over --ramp
seconds (default 1) and holds them --hold seconds (default 1.5), run by a
Makefile from a cgroup limited to --limit-mb (default 1024, swap included)
with four jobs allowed:

- ``make -j4``: stock make; four such jobs do not fit, so some are
  OOM-killed and make fails;
- ``make -j2``: what fits, for reference;
- ``bcrun --policy memory make -j4`` and the same with ``--freeze``.

The command itself runs inside the cgroup (``sh -c 'echo $$ >
cgroup.procs; exec "$@"'``), bcrun included.  Measured for each build: its
exit status, the jobs that completed (each touches a file when done), the
cgroup's OOM kills (memory.oom_control's oom_kill on v1, memory.events's
oom_kill on v2) and limit hits (memory.failcnt or memory.memsw.failcnt,
whichever is higher; memory.events's max: some kernels leave the v1
counters at 0 even when they OOM-kill), its peak memory, wall time, and the
most jobs running at once (the cgroup's processes scanned every 50 ms;
stopped ones, from --freeze, apart).  For bcrun, its --trace gives the
range of counts it set, and the last run's -v output is printed; the last
run's traces are kept at --keep-trace (NAME-freeze for --freeze's), with
their -v output beside them (.log).  Wall time is the median over the runs,
the other figures their range.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    Cgroup,
    Children,
    Sampler,
    Unusable,
    arguments,
    choose_cgroup,
    compile_c,
    exits_cleanly,
    fmt,
    keep,
    kept_as,
    median_of,
    new_cgroup,
    read_text,
    run,
    say,
    table,
    trace_ticks,
    version,
)
from tests.helpers import Bcrun  # noqa: E402

HOG = r"""
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* memhog MB RAMP HOLD: take MB megabytes, touched, in 8 MB steps over RAMP
   seconds, hold them HOLD seconds, exit 0. */
int main(int argc, char **argv) {
    if (argc != 4) return 2;
    long mb = atol(argv[1]), step = 8, steps = mb / step;
    double ramp = atof(argv[2]), hold = atof(argv[3]);
    for (long i = 0; i < steps; i++) {
        char *p = malloc(step << 20);
        if (p == NULL) return 1;
        memset(p, 1, step << 20);
        usleep((useconds_t)(ramp * 1e6 / steps));
    }
    usleep((useconds_t)(hold * 1e6));
    return 0;
}
"""

HOG_NAME = "memhog"


def write_makefile(
    directory: Path, hog: Path, jobs: int, mb: int, ramp: float, hold: float
) -> None:
    targets = " ".join(f"j{i}" for i in range(jobs))
    (directory / "Makefile").write_text(
        f".PHONY: all {targets}\n"
        f"all: {targets}\n"
        f"{targets}:\n"
        f"\t{hog} {mb} {ramp:g} {hold:g} && touch $@.done\n"
    )


# -- cgroups -------------------------------------------------------------------


def counters_of(group: Cgroup) -> dict[str, int]:
    """OOM kills, limit hits and peak usage (bytes), as the kernel says."""
    found = {}
    if group.version == 1:
        oom = group.keyed("memory.oom_control")
        if "oom_kill" in oom:
            found["oom_kills"] = oom["oom_kill"]
        # The memory limit or the memory+swap one, whichever was hit.
        for key, names in (
            ("limit_hits", ("memory.failcnt", "memory.memsw.failcnt")),
            ("peak", ("memory.max_usage_in_bytes",)),
        ):
            values = [read_text(group.path / name) for name in names]
            got = [int(v) for v in values if v is not None]
            if got:
                found[key] = max(got)
    else:
        events = group.keyed("memory.events")
        for name, key in (("oom_kill", "oom_kills"), ("max", "limit_hits")):
            if name in events:
                found[key] = events[name]
        text = read_text(group.path / "memory.peak")
        if text is not None:
            found["peak"] = int(text)
    return found


@contextlib.contextmanager
def limited_cgroup(version: int, parent: Path, limit: int) -> Iterator[Cgroup]:
    """A new cgroup below *parent*, limited to *limit* bytes of memory and
    swap together; killed and removed on leaving, whatever happened."""
    with new_cgroup(version, parent) as group:
        if version == 1:
            # The memory limit first: memsw may not go below it.
            (group.path / "memory.limit_in_bytes").write_text(str(limit))
            memsw = group.path / "memory.memsw.limit_in_bytes"
            if memsw.exists():
                memsw.write_text(str(limit))
        else:
            (group.path / "memory.max").write_text(str(limit))
            swap = group.path / "memory.swap.max"
            if swap.exists():
                swap.write_text("0")
        yield group


# -- one build -----------------------------------------------------------------


@dataclass
class Variant:
    name: str
    argv: list[str]
    bcrun: bool = False


@dataclass
class Outcome:
    status: int | None = None
    completed: int = 0
    oom_kills: int | None = None
    limit_hits: int | None = None
    peak_bytes: int | None = None
    wall_s: float = 0.0
    peak_running: int = 0
    peak_stopped: int = 0
    #: bcrun's counts over the build, from its trace.
    counts: list[int] | None = None


def hog_states(group: Cgroup) -> tuple[int, int]:
    """The cgroup's memory jobs: (running, stopped)."""
    running = stopped = 0
    for pid in group.pids():
        text = read_text(f"/proc/{pid}/stat")
        if text is None or text[text.find("(") + 1 : text.rfind(")")] != HOG_NAME:
            continue
        if text[text.rfind(")") + 2] in "Tt":
            stopped += 1
        else:
            running += 1
    return running, stopped


def run_variant(
    children: Children,
    variant: Variant,
    project: Path,
    where: tuple[int, Path],
    limit: int,
    env: dict[str, str],
    trace: Path,
    log: Path,
    timeout: float,
) -> Outcome:
    for done in project.glob("*.done"):
        done.unlink()
    trace.unlink(missing_ok=True)
    outcome = Outcome()
    with limited_cgroup(*where, limit) as group:
        argv = group.enter(variant.argv)
        with Sampler(lambda: hog_states(group)) as sampler, open(log, "w") as err:
            started = time.monotonic()
            build = children.start(
                argv, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=err
            )
            try:
                outcome.status = build.wait(timeout)
            except subprocess.TimeoutExpired:
                say(f"  {variant.name}: still running after {timeout:g} s; killed")
            outcome.wall_s = time.monotonic() - started
            children.end(build)
        states = [value for _, value in sampler.samples]
        outcome.peak_running = max((r for r, _ in states), default=0)
        outcome.peak_stopped = max((s for _, s in states), default=0)
        counters = counters_of(group)
        outcome.oom_kills = counters.get("oom_kills")
        outcome.limit_hits = counters.get("limit_hits")
        outcome.peak_bytes = counters.get("peak")
    outcome.completed = len(list(project.glob("*.done")))
    if variant.bcrun:
        outcome.counts = [int(j) for (j,) in trace_ticks(trace, "jobs")]
    return outcome


# -- the benchmark -------------------------------------------------------------


def main() -> int:
    parser = arguments(__doc__, "bcrun-memory-trace.jsonl")
    parser.add_argument("--jobs", type=int, default=10, help="jobs (default 10)")
    parser.add_argument(
        "--job-mb", type=int, default=350, help="megabytes a job takes (default 350)"
    )
    parser.add_argument(
        "--ramp",
        type=float,
        default=1.0,
        help="seconds a job takes to reach its size (default 1)",
    )
    parser.add_argument(
        "--hold", type=float, default=1.5, help="seconds it then holds it (default 1.5)"
    )
    parser.add_argument(
        "--limit-mb",
        type=int,
        default=1024,
        help="the cgroup's limit, memory and swap together (default 1024)",
    )
    parser.add_argument(
        "--timeout", type=float, default=180, help="seconds a build may take"
    )
    args = parser.parse_args()
    try:
        where = choose_cgroup("memory")
        with limited_cgroup(*where, 64 << 20):
            pass
    except (Unusable, OSError) as err:
        say(f"skipped: no memory cgroup to use: {err}")
        return 0
    about = f"cgroup v{where[0]}, below {where[1]}"
    limit = args.limit_mb << 20
    with exits_cleanly() as children, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        runner = Bcrun(tmp)
        project = tmp / "project"
        project.mkdir()
        hog = compile_c(HOG, tmp / HOG_NAME)
        write_makefile(project, hog, args.jobs, args.job_mb, args.ramp, args.hold)
        trace, log = tmp / "trace.jsonl", tmp / "build.log"
        bcrun = [*runner.argv("--policy", "memory"), "--trace", str(trace), "-v"]
        todo = [
            Variant("make -j4", ["make", "-j4"]),
            Variant("make -j2", ["make", "-j2"]),
            Variant("bcrun --policy memory make -j4", [*bcrun, "make", "-j4"], True),
            Variant(
                "bcrun --policy memory --freeze make -j4",
                [*bcrun, "--freeze", "make", "-j4"],
                True,
            ),
        ]
        say(f"{version()}; {about}")
        results: dict[str, list[Outcome]] = {v.name: [] for v in todo}
        for turn in range(args.runs):
            order = todo[turn % len(todo) :] + todo[: turn % len(todo)]
            for variant in order:
                say(f"run {turn + 1}/{args.runs}: {variant.name}")
                got = run_variant(
                    children,
                    variant,
                    project,
                    where,
                    limit,
                    runner.env,
                    trace,
                    log,
                    args.timeout,
                )
                results[variant.name].append(got)
                say(
                    f"  exit {got.status}, {got.completed}/{args.jobs} done, "
                    f"{got.oom_kills} OOM kills, {got.wall_s:.1f} s, "
                    f"peak {got.peak_running} running"
                )
                if variant.bcrun:
                    keep(trace, log, keep_path(args.keep_trace, variant))
        print(f"{version()}; {about}")
        report(args, results)
        for variant in todo:
            if variant.bcrun:
                kept = keep_path(args.keep_trace, variant)
                print(
                    f"\n{variant.name}, last run: -v output ({kept.with_suffix('.log')}, trace {kept}):\n"
                )
                print(
                    "\n".join(
                        "    " + line
                        for line in kept.with_suffix(".log").read_text().splitlines()
                    )
                )
    return 0


def keep_path(path: Path, variant: Variant) -> Path:
    """Where *variant*'s trace is kept: *path*, NAME-freeze for --freeze."""
    return kept_as(path, "freeze") if "--freeze" in variant.argv else path


def report(args: argparse.Namespace, results: dict[str, list[Outcome]]) -> None:
    def spread(values: Sequence[int | None]) -> str:
        got = [v for v in values if v is not None]
        if not got:
            return "-"
        low, high = min(got), max(got)
        return str(low) if low == high else f"{low}-{high}"

    print(
        f"\n{args.runs} run(s); {args.jobs} jobs of {args.job_mb} MB (reached in "
        f"{args.ramp:g} s, held {args.hold:g} s) in a cgroup "
        f"of {args.limit_mb} MB (swap included); ranges over the runs, wall time "
        "the median\n"
    )
    rows = []
    for name, got in results.items():
        ok = sum(o.status == 0 for o in got)
        walls = [o.wall_s for o in got]
        peaks = [o.peak_bytes for o in got if o.peak_bytes is not None]
        counts = [c for o in got if o.counts for c in o.counts]
        rows.append(
            [
                name,
                f"{ok}/{len(got)}",
                spread([o.status if o.status is not None else -1 for o in got]),
                spread([o.completed for o in got]) + f" of {args.jobs}",
                spread([o.oom_kills for o in got]),
                spread([o.limit_hits for o in got]),
                fmt(statistics.median(walls), " s"),
                spread([o.peak_running for o in got]),
                spread([o.peak_stopped for o in got]),
                fmt(max(peaks) / 2**20 if peaks else None, " MB", 0),
                f"{min(counts)}-{max(counts)}" if counts else "-",
            ]
        )
    print(
        table(
            [
                "variant",
                "completed",
                "exit status",
                "jobs done",
                "OOM kills",
                "limit hits",
                "wall",
                "peak jobs running",
                "peak jobs stopped",
                "peak memory",
                "bcrun count",
            ],
            rows,
        )
    )
    bcrun_walls = median_of(
        [o.wall_s for o in results["bcrun --policy memory make -j4"] if o.status == 0]
    )
    fits = median_of([o.wall_s for o in results["make -j2"] if o.status == 0])
    if bcrun_walls and fits:
        print(
            f"\nbcrun --policy memory's wall against make -j2 (what fits): "
            f"{bcrun_walls / fits:.2f}x"
        )


if __name__ == "__main__":
    run(main)
