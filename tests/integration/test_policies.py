"""Policies on this machine: real builds (the system's stock make, driven
through its jobserver), a real competing load started and stopped by the
test, and bcrun's own trace of what it decided."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from bcrun.metrics import PEAK_WINDOW_S, SCAN_PERSIST_S
from bcrun.priority import autogroup_nice
from tests.helpers import Bcrun, read_trace, wait_until
from tests.tools.jobs import make_project

pytestmark = pytest.mark.skipif(
    shutil.which("make") is None, reason="no make on this machine"
)

BURN = "while True: pass"


def first_tick(trace: Path, since: float, test) -> dict | None:
    return next((t for t in read_trace(trace) if t["time"] >= since and test(t)), None)


def traced_make(
    bcrun: Bcrun,
    tmp_path: Path,
    *options: str,
    jobs: int,
    seconds: float = 0.5,
    parallel: int,
) -> tuple[subprocess.Popen[str], Path]:
    """``bcrun OPTIONS --trace FILE make -jPARALLEL`` on a project of *jobs*
    jobs of *seconds* each; the build, and its trace."""
    project = tmp_path / "p"
    bcrun.env["JOBLOG"] = str(make_project(project, jobs=jobs, seconds=seconds).path)
    trace = tmp_path / "trace.jsonl"
    build = bcrun.start(
        *options, "--trace", str(trace), "make", f"-j{parallel}", "-C", str(project),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    return build, trace


@contextmanager
def burners(n: int) -> Iterator[float]:
    """*n* processes burning CPU; yields when they started (wall clock)."""
    procs = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(n)]
    try:
        yield time.time()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_adaptive_gives_way_to_a_competing_load_and_takes_the_machine_back(
    bcrun: Bcrun, tmp_path: Path
) -> None:
    build, trace = traced_make(
        bcrun, tmp_path, "-v", "--policy", "adaptive", "--load", "3",
        "--tick", "0.25", jobs=40, parallel=3,
    )  # fmt: skip
    wait_until(lambda: first_tick(trace, 0, lambda t: t["jobs"] >= 2), 10, "a start")
    with burners(3) as started:
        down = None
        wait_until(
            lambda: first_tick(trace, started, lambda t: t["jobs"] == 1),
            5,
            "the cap to drop",
        )
        down = first_tick(trace, started, lambda t: t["jobs"] == 1)
        time.sleep(1.0)
        during = [t["jobs"] for t in read_trace(trace) if t["time"] > down["time"]]
    stopped = time.time()
    wait_until(
        lambda: first_tick(trace, stopped, lambda t: t["jobs"] >= 2),
        5,
        "the cap to rise",
    )
    up = first_tick(trace, stopped, lambda t: t["jobs"] >= 2)
    _, stderr = build.communicate(timeout=60)
    assert build.returncode == 0, stderr
    assert down["time"] - started < 2.0, "reacted within 2 s of the load"
    # Growth waits for PEAK_WINDOW_S of calm, and the smoothed load to fall.
    assert up["time"] - stopped < PEAK_WINDOW_S + 2.0
    assert max(during) <= 1, "no flapping back up while the load lasts"
    assert "adaptive: external load" in down["reason"]
    assert "-> 1 jobs: adaptive: external load" in stderr


def test_looks_keep_their_beat_and_a_new_load_is_looked_at_again_sooner(
    bcrun: Bcrun, tmp_path: Path
) -> None:
    """A look every 0.5 s from one's start to the next (a slow look does not
    stretch the beat); a look that sees a new load is followed by one
    SCAN_PERSIST_S later, which confirms it: the count drops within 1 s."""
    build, trace = traced_make(
        bcrun, tmp_path, "--policy", "adaptive", "--load", "3", jobs=300, parallel=3
    )
    wait_until(lambda: len(read_trace(trace)) >= 8, 10, "eight looks")
    with burners(3) as started:
        wait_until(
            lambda: first_tick(trace, started, lambda t: t["jobs"] == 1),
            5,
            "the cap to drop",
        )
    _, stderr = build.communicate(timeout=60)
    assert build.returncode == 0, stderr
    ticks = read_trace(trace)
    seen = next(
        i
        for i, t in enumerate(ticks)
        if t["time"] >= started and t["external_load"] >= 2.5
    )
    gaps = [b["elapsed_s"] - a["elapsed_s"] for a, b in itertools.pairwise(ticks)]
    calm = [gap for gap, t in zip(gaps, ticks[1:], strict=True) if t["time"] < started]
    # 0.5 s, or 0.4 s after a look that saw a load come (a busy machine's).
    assert 0.38 <= statistics.median(calm) <= 0.56, calm
    assert gaps[seen - 1] <= SCAN_PERSIST_S + 0.07, gaps[seen - 3 : seen + 1]
    assert ticks[seen]["time"] - started < 1.0


def test_memory_backs_off_while_another_process_holds_memory(
    bcrun: Bcrun, tmp_path: Path
) -> None:
    # A reserve just under what is available now: 2G taken by someone else
    # puts the machine below it.
    reserve = psutil.virtual_memory().available - (1 << 30)
    build, trace = traced_make(
        bcrun, tmp_path, "--policy", "memory", "--mem-reserve", str(reserve),
        "--tick", "0.25", jobs=40, seconds=0.4, parallel=4,
    )  # fmt: skip
    wait_until(lambda: first_tick(trace, 0, lambda t: t["jobs"] == 4), 10, "a start")
    hog = subprocess.Popen(
        [sys.executable, "-c", "x = bytearray(2 << 30); import time; time.sleep(60)"]
    )
    try:
        started = time.time()
        wait_until(
            lambda: first_tick(trace, started, lambda t: t["jobs"] == 1), 10, "back-off"
        )
        short = first_tick(trace, started, lambda t: t["jobs"] == 1)
    finally:
        hog.kill()
        hog.wait()
    freed = time.time()
    wait_until(
        lambda: first_tick(trace, freed, lambda t: t["jobs"] == 4), 10, "recovery"
    )
    _, stderr = build.communicate(timeout=60)
    assert build.returncode == 0, stderr
    assert short["reason"].startswith("memory ") and "< " in short["reason"]
    assert short["mem_available_bytes"] < short["mem_reserve_bytes"]


def job_states(project: Path) -> dict[int, str]:
    """The state of every running job.sh of *project*."""
    found = {}
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if any(str(project) in arg for arg in cmdline) and "sleep" not in cmdline:
            found[process.pid] = process.info["status"]
    return found


def test_freeze_stops_jobs_and_no_job_is_left_stopped_when_the_build_ends(
    bcrun: Bcrun, tmp_path: Path
) -> None:
    project = tmp_path / "p"
    bcrun.env["JOBLOG"] = str(make_project(project, jobs=3, seconds=15).path)
    errors = tmp_path / "stderr"
    # A reserve no machine has: memory is critical at once.
    with errors.open("w") as stderr:
        build = bcrun.start(
            "--freeze", "--mem-reserve", "100T", "--tick", "0.2",
            "make", "-j3", "-C", str(project),
            stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    stopped = lambda: [pid for pid, s in job_states(project).items() if s == "stopped"]  # noqa: E731
    wait_until(lambda: len(stopped()) == 2, 10, "two jobs stopped")
    time.sleep(0.5)
    assert len(stopped()) == 2, "one job always runs"
    build.send_signal(signal.SIGTERM)
    # make passes SIGTERM on to its jobs: they must have been continued.
    build.wait(timeout=10)
    assert build.returncode == -signal.SIGTERM, errors.read_text()
    assert "stopped" in errors.read_text()
    wait_until(lambda: not job_states(project), 5, "every job to end")


def test_nice_lowers_the_build_and_its_autogroup_and_restores_the_autogroup(
    bcrun: Bcrun,
) -> None:
    # Some kernels show an empty autogroup file even with autogroups on;
    # bcrun leaves the autogroup alone there, and so does this check.
    before = autogroup_nice(os.getpid())
    result = bcrun.run(
        "--nice", "7", "sh", "-c",
        "ps -o ni= -p $$; cat /proc/$$/autogroup 2>/dev/null || echo none",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    nice, autogroup = result.stdout.split("\n")[:2]
    assert nice.strip() == "7"
    if before is not None and before < 7:
        assert autogroup.endswith("nice 7")
        assert autogroup_nice(os.getpid()) == before
    else:
        print("no readable autogroup here: only the process nice value was checked")


def test_raising_priority_is_refused_in_one_line_unless_root(bcrun: Bcrun) -> None:
    if os.geteuid() == 0:
        result = bcrun.run("--nice", "-3", "sh", "-c", "ps -o ni= -p $$")
        assert result.stdout.strip() == "-3"
        return
    result = bcrun.run("--nice", "-3", "true")
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1 and "--nice -3" in result.stderr


def test_trace_status_and_plot_of_a_real_build(bcrun: Bcrun, tmp_path: Path) -> None:
    build, trace = traced_make(
        bcrun, tmp_path, "--policy", "adaptive,memory", "--tick", "0.2",
        jobs=6, parallel=2,
    )  # fmt: skip
    wait_until(lambda: len(read_trace(trace)) >= 2, 10, "ticks")
    status = bcrun.run("status")
    _, stderr = build.communicate(timeout=60)
    assert build.returncode == 0, stderr
    assert "adaptive: external load" in status.stdout
    assert "available" in status.stdout and "job(s) running" in status.stdout
    lines = read_trace(trace)
    assert max(t["running"] for t in lines) >= 1
    assert all(t["policy"] == "adaptive,memory" for t in lines)
    assert {"target_load", "mem_reserve_bytes", "mem_available_bytes"} <= set(lines[-1])
    picture = tmp_path / "trace.png"
    plotted = bcrun.run("plot", str(trace), "-o", str(picture))
    assert plotted.returncode == 0, plotted.stderr
    assert picture.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("environ", "args", "message"),
    [
        ({"BCRUN_JOBS": "abc"}, [], "BCRUN_JOBS: "),
        ({}, ["--policy", "schedule"], "needs --schedule"),
        ({}, ["--mem-reserve", "lots"], "'lots' is not a size"),
        ({}, ["--trace", "/nonexistent/dir/t"], "--trace /nonexistent/dir/t: "),
    ],
)
def test_bad_settings_are_one_line_errors(
    bcrun: Bcrun, environ: dict[str, str], args: list[str], message: str
) -> None:
    result = bcrun.run(*args, "true", env=bcrun.env | environ)
    assert result.returncode == 125
    assert message in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_jobs_frozen_when_bcrun_is_killed_are_continued(
    bcrun: Bcrun, tmp_path: Path
) -> None:
    project = tmp_path / "p"
    bcrun.env["JOBLOG"] = str(make_project(project, jobs=3, seconds=15).path)
    build = bcrun.start(
        "--freeze", "--mem-reserve", "100T", "--tick", "0.2",
        "make", "-j3", "-C", str(project),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    stopped = lambda: [pid for pid, s in job_states(project).items() if s == "stopped"]  # noqa: E731
    try:
        wait_until(lambda: len(stopped()) == 2, 10, "two jobs stopped")
        build.kill()  # no clean-up of bcrun's own can run
        build.wait()
        wait_until(lambda: not stopped(), 5, "the guardian to continue them")
    finally:
        for process in psutil.process_iter(["cmdline"]):
            if any(str(project) in arg for arg in process.info["cmdline"] or []):
                with contextlib.suppress(psutil.Error):
                    process.kill()
