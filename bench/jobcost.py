"""Jobs that are not one CPU each: a distributed build with the real distcc,
jobs that sleep half their time, jobs of four busy threads; bcrun's
adaptive policy against make at fixed counts, side by side in one run.

    python3 -m bench.jobcost [--scenarios distcc,sleeping,threads]
                             [--keep-trace PATH]

- distcc: two distccd servers on loopback (4 slots each) stand in for
  remote hosts, pinned to CPU 1; the build (bcrun or make, and the distcc
  clients) is pinned to CPU 0, so the local target is 1 CPU and the
  servers' compilers are not the build's local load.  48 C files compiled
  with ``distcc gcc``, then 6 local "link" jobs of a whole CPU for 2 s.
  One server is stopped 4 s into the compile phase.  Against ``make
  -j<distcc -j>`` (the slots distcc itself reports, 8) plus the local CPU,
  and ``make -j1`` (the CPUs the build has).  Reported: in-flight compiles
  (time-mean, from a wrapper's log) while both servers answer, against the
  remote slots plus the local room; the local runnable load (runnable
  processes on CPU 0, sampled at 20 Hz) against the local target; bcrun's
  count after the stop and in the link phase (its trace).
- sleeping: 60 jobs that alternate 50 ms of CPU and 50 ms of sleep for
  1.5 s, at a target of 4 (--load 4): bcrun adaptive against ``make -j4``;
  the build's runnable threads, time-mean, against the target.
- threads: 24 jobs of 4 busy threads for 1.5 s, at a target of 8: bcrun
  adaptive against ``make -j8``; the same measure.

bcrun's traces are kept at --keep-trace, the scenario in the name.  About
3 minutes here.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from shutil import which

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    Children,
    Sampler,
    add_keep_trace,
    compile_c,
    exits_cleanly,
    fmt,
    keep,
    kept_as,
    read_text,
    run,
    say,
    table,
)
from tests.helpers import Bcrun, read_trace
from tests.integration.test_distcc import SLOTS, c_project, distccd, stop
from tests.integration.test_sharing import burner

#: A job of argv[2] threads, each busy for argv[3] of every 100 ms for
#: argv[1] seconds of wall time.
JOB = r"""
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
static double length, duty;
static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}
static void *work(void *unused) {
	double start = now();
	volatile unsigned long spin = 0;
	(void)unused;
	while (now() - start < length) {
		double slice = now();
		while (now() - slice < 0.1 * duty)
			spin++;
		if (duty < 1) {
			struct timespec rest = {0, (long)(0.1 * (1 - duty) * 1e9)};
			nanosleep(&rest, 0);
		}
	}
	return 0;
}
int main(int argc, char **argv) {
	pthread_t threads[64];
	int n = atoi(argv[2]);
	length = atof(argv[1]);
	duty = atof(argv[3]);
	for (int i = 1; i < n; i++)
		pthread_create(&threads[i], 0, work, 0);
	work(0);
	for (int i = 1; i < n; i++)
		pthread_join(threads[i], 0);
	return 0;
}
"""

#: Logs each compile's start and end around the real compiler.
LOGGING_CC = """#!/bin/sh
printf '%s start\\n' "$(date +%s.%N)" >> {log}
distcc gcc "$@"
status=$?
printf '%s end\\n' "$(date +%s.%N)" >> {log}
exit $status
"""


def runnable_on_cpu0() -> int:
    """Runnable processes whose last CPU was 0 (this sampler aside)."""
    count = 0
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        text = read_text(f"/proc/{entry}/stat")
        if not text:
            continue
        fields = text.rpartition(") ")[2].split()
        if fields[0] == "R" and len(fields) > 36 and fields[36] == "0":
            count += 1
    return count


def runnable_threads(name: str) -> Callable[[], int]:
    """A probe: runnable threads of the processes called *name*."""

    def probe() -> int:
        count = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            stat = read_text(f"/proc/{entry}/stat")
            if not stat or f"({name})" not in stat:
                continue
            with contextlib.suppress(OSError):
                for tid in os.listdir(f"/proc/{entry}/task"):
                    task = read_text(f"/proc/{entry}/task/{tid}/stat") or ""
                    count += task.rpartition(") ")[2][:1] == "R"
        return count

    return probe


def in_flight(log: Path, since: float, until: float) -> float:
    """Time-mean compiles running over [since, until], from the wrapper's log."""
    events = sorted(
        (float(t), +1 if what == "start" else -1)
        for t, what in (line.split() for line in log.read_text().splitlines())
    )
    level, last, area = 0, since, 0.0
    for t, step in events:
        if t > since:
            area += level * (min(t, until) - last)
            last = min(t, until)
        level += step
        if t >= until:
            break
    area += level * (until - last)
    return area / (until - since)


def distcc_scenario(
    children: Children, tmp: Path, burn: Path, kept: Path
) -> list[list[str]]:
    rows: list[list[str]] = []
    for name, argv in (
        ("bcrun --policy adaptive", ["--policy", "adaptive"]),
        (f"make -j{2 * SLOTS + 1} (distcc -j + 1)", None),
        ("make -j1 (its CPUs)", None),
    ):
        work = tmp / f"distcc-{len(rows)}"
        work.mkdir()
        project = work / "p"
        c_project(project, files=48, links=6, program=burn)
        log = work / "compiles.log"
        cc = work / "cc"
        cc.write_text(LOGGING_CC.format(log=log))
        cc.chmod(0o755)
        (work / "distcc").mkdir()
        trace = work / "trace.jsonl"
        with (
            distccd(1, work) as (port1, _),
            distccd(1, work) as (
                port2,
                second,
            ),
        ):
            env = {
                **os.environ,
                "DISTCC_HOSTS": f"127.0.0.1:{port1}/{SLOTS} 127.0.0.1:{port2}/{SLOTS}",
                "DISTCC_DIR": str(work / "distcc"),
            }
            make = ["make", "-C", str(project), f"CC={cc}"]
            if argv is not None:
                runner = Bcrun(work)
                command = runner.argv(*argv, "--trace", str(trace), *make)
                env = {**runner.env, **env}
            else:
                command = [*make, name.split()[1]]
            start = time.time()
            with Sampler(runnable_on_cpu0, 0.05) as sampler:
                build = children.start(["taskset", "-c", "0", *command], env=env,
                                       stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)  # fmt: skip
                time.sleep(4.0)
                stop(second)
                stopped = time.time()
                status = build.wait(300)
            samples = sampler.stop()
        compiles = [line.split() for line in log.read_text().splitlines()]
        last_compile = max(float(t) for t, what in compiles if what == "end")
        first = min(float(t) for t, what in compiles if what == "start")
        flight = in_flight(log, first + 1.0, stopped)
        local = [n for t, n in samples if first + 1.0 <= t < last_compile]
        if argv is not None:
            keep(trace, None, kept_as(kept, "distcc"))
        seen = read_trace(trace)
        follow = next(
            (t["time"] - stopped for t in seen if t["time"] > stopped
             and t["jobs"] <= SLOTS + 1),
            None,
        )  # fmt: skip
        linking = [t["jobs"] for t in seen if t["time"] > last_compile + 1.0]
        rows.append(
            [
                name,
                "yes" if status == 0 else f"no ({status})",
                f"{flight:.1f} of {2 * SLOTS + 1} ({flight / (2 * SLOTS + 1):.0%})",
                f"{statistics.mean(local):.2f}" if local else "-",
                fmt(follow, " s"),
                f"{min(linking)}-{max(linking)}" if linking else "-",
                f"{time.time() - start:.1f} s",
            ]
        )
        say(f"distcc, {name}: {rows[-1]}")
    return rows


def load_scenario(
    children: Children,
    tmp: Path,
    kept: Path,
    job: Path,
    kind: str,
    target: int,
    jobs: int,
    threads: int,
    duty: float,
) -> list[list[str]]:
    rows: list[list[str]] = []
    for name in (f"bcrun --policy adaptive --load {target}", f"make -j{target}"):
        work = tmp / f"{kind}-{len(rows)}"
        work.mkdir()
        names = [f"j{i}" for i in range(jobs)]
        (work / "Makefile").write_text(
            f"all: {' '.join(names)}\n"
            + "".join(f"{n}:\n\t@{job} 1.5 {threads} {duty}\n" for n in names)
        )
        trace = work / "trace.jsonl"
        make = ["make", "-C", str(work)]
        if name.startswith("bcrun"):
            runner = Bcrun(work)
            argv = runner.argv("--policy", "adaptive", "--load", str(target),
                               "--trace", str(trace), *make)  # fmt: skip
            env = runner.env
        else:
            argv, env = [*make, f"-j{target}"], dict(os.environ)
        start = time.monotonic()
        with Sampler(runnable_threads(job.name), 0.05) as sampler:
            build = children.start(argv, env=env, stdout=subprocess.DEVNULL)
            status = build.wait(300)
        wall = time.monotonic() - start
        if name.startswith("bcrun"):
            keep(trace, None, kept_as(kept, kind.replace(" ", "-")))
        samples = [n for t, n in sampler.stop()]
        # The middle of the build: its start and its tail are not steady.
        middle = samples[len(samples) // 5 : -len(samples) // 5]
        load = statistics.mean(middle)
        counts = [t["jobs"] for t in read_trace(trace)]
        rows.append(
            [
                kind,
                name,
                "yes" if status == 0 else f"no ({status})",
                f"{load:.2f} ({load / target:.0%} of {target})",
                f"{statistics.median(counts):g}" if counts else "-",
                f"{wall:.1f} s",
            ]
        )
        say(f"{kind}, {name}: {rows[-1]}")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default="distcc,sleeping,threads")
    add_keep_trace(parser, "bcrun-jobcost-trace.jsonl")
    args = parser.parse_args()
    chosen = args.scenarios.split(",")
    with (
        exits_cleanly() as children,
        tempfile.TemporaryDirectory(prefix="bcrun-jobcost-") as name,
    ):
        tmp = Path(name)
        job = compile_c(JOB, tmp / "costjob", "-pthread")
        if "distcc" in chosen:
            missing = [p for p in ("distcc", "distccd", "taskset") if not which(p)]
            if missing or len(os.sched_getaffinity(0)) < 2:
                print(f"distcc: not run ({', '.join(missing) or 'one CPU'} missing)")
            else:
                rows = distcc_scenario(children, tmp, burner(tmp), args.keep_trace)
                print(
                    table(
                        [
                            "variant",
                            "completed",
                            "compiles in flight (both hosts)",
                            "local runnable (target 1)",
                            "count <= 5 after a host stops",
                            "count while linking",
                            "wall",
                        ],
                        rows,
                    )
                )
                print()
        rows: list[list[str]] = []
        if "sleeping" in chosen:
            rows += load_scenario(
                children, tmp, args.keep_trace, job, "sleeping", 4, 60, 1, 0.5
            )
        if "threads" in chosen:
            rows += load_scenario(
                children, tmp, args.keep_trace, job, "4 threads", 8, 24, 4, 1.0
            )
        if rows:
            print(
                table(
                    [
                        "jobs",
                        "variant",
                        "completed",
                        "runnable threads, mean",
                        "bcrun's count, median",
                        "wall",
                    ],
                    rows,
                )
            )
    return 0


if __name__ == "__main__":
    run(main)
