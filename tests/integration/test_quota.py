"""The adaptive policy in a real cgroup with a CPU quota: the target is the
quota, found by bcrun itself, and followed when the quota changes while the
build runs.  Skips, saying why, where no such cgroup can be made."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.helpers import Bcrun, cpu_quota_cgroup, read_trace, wait_until
from tests.integration.test_sharing import (
    burner,
    burning_project,
    intervals,
    pytestmark,  # noqa: F401  (make and cc are needed here too)
    running_mean,
)


def test_adaptive_runs_at_the_quota_and_follows_it_when_resized(
    bcrun: Bcrun, tmp_path: Path
) -> None:
    program = burner(tmp_path)
    log = burning_project(tmp_path / "p", program, jobs=24, seconds=0.5)
    trace = tmp_path / "trace.jsonl"
    with cpu_quota_cgroup(1.0, nested=True) as group:
        build = subprocess.Popen(
            [*group.prefix, *bcrun.argv("--policy", "adaptive", "--trace", str(trace),
                                        "make", "-C", str(log.parent))],
            env=bcrun.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_until(lambda: len(read_trace(trace)) >= 8, 20, "four seconds of the build")
        group.resize(2.0)
        resized = time.time()
        wait_until(
            lambda: any(
                "target 2 (" in t["reason"]
                for t in read_trace(trace)
                if t["time"] > resized
            ),
            10,
            "the target to follow the quota",
        )
        _, stderr = build.communicate(timeout=60)
    assert build.returncode == 0, stderr
    before = [t for t in read_trace(trace) if t["time"] < resized]
    assert all(t["jobs"] == 1 for t in before), [t["jobs"] for t in before]
    source = before[-1]["cpu_capacity_source"]
    assert source.startswith("cfs quota of ") or source.startswith("cpu.max of ")
    assert source.endswith(": 1 CPU"), source
    assert f"target 1 ({source})" in before[-1]["reason"]
    after = [t for t in read_trace(trace) if t["time"] > resized]
    followed = next(t for t in after if "target 2 (" in t["reason"])
    assert followed["time"] - resized < 5.0
    assert followed["cpu_capacity"] == 2.0
    # Two jobs now, unless this (busy) machine runs a whole other job's load.
    assert (
        any(t["jobs"] == 2 for t in after)
        or min(t["external_load"] for t in after) > 0.5
    )
    jobs = intervals(log)
    start = min(s for s, _ in jobs)
    assert running_mean(jobs, start, start + 3.0) <= 1.05
