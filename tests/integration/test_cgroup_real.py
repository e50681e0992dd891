"""bcrun.cgroup in real cgroups with a CPU quota: the limit it reads, on
the process's own cgroup and on a parent, and the throttling it counts.

Needs root and a writable cpu controller (v1 or v2); skips saying why
otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, QuotaCgroup, cpu_quota_cgroup

#: Run inside the cgroup: what the readers see there.
READ = """
import json, os
from bcrun import cgroup
groups = cgroup.own_cgroups()
limit = cgroup.read_cpu_limit(groups, len(os.sched_getaffinity(0)))
print(json.dumps({"cpus": limit.cpus, "source": limit.source, "cgroup": str(groups.cpu.path)}))
"""

#: Run inside the cgroup: its accounting around two busy loops for 1 s.
THROTTLE = """
import json, os, subprocess, time
from bcrun import cgroup
groups = cgroup.own_cgroups()
limit = cgroup.read_cpu_limit(groups, len(os.sched_getaffinity(0)))
before, start = cgroup.read_cpu_stat(groups, limit), time.monotonic()
loops = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(2)]
try:
    time.sleep(1.0)
finally:
    for loop in loops:
        loop.kill()
        loop.wait(10)
after, elapsed = cgroup.read_cpu_stat(groups, limit), time.monotonic() - start
print(json.dumps({"before": before, "after": after, "elapsed": elapsed}))
"""


def run_inside(group: QuotaCgroup, code: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [*group.prefix, sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def needs_more_cpus_than(cpus: float) -> None:
    # With no more CPUs than the quota the affinity is named, rightly.
    if len(os.sched_getaffinity(0)) <= cpus:
        pytest.skip(f"needs more than {cpus:g} CPUs to tell a quota of {cpus:g}")


def source(group: QuotaCgroup, cpus: float) -> str:
    kind = "cpu.max" if group.version == 2 else "cfs quota"
    return f"{kind} of {group.quota_dir}: {cpus:g} CPU{'' if cpus == 1 else 's'}"


@pytest.mark.parametrize("cpus", [1.0, 1.5])
def test_the_quota_of_the_process_s_own_cgroup(cpus):
    needs_more_cpus_than(cpus)
    with cpu_quota_cgroup(cpus) as group:
        seen = run_inside(group, READ)
    assert seen["cgroup"] == str(group.dirs[0])
    assert seen["cpus"] == cpus
    assert seen["source"] == source(group, cpus)


def test_a_quota_on_the_parent_binds_a_child_without_one():
    needs_more_cpus_than(1.5)
    with cpu_quota_cgroup(1.5, nested=True) as group:
        seen = run_inside(group, READ)
    assert seen["cgroup"] == str(group.dirs[0])
    assert group.dirs[0].parent == group.quota_dir
    assert seen["cpus"] == 1.5
    assert seen["source"] == source(group, 1.5)


def test_two_busy_loops_in_half_a_cpu_are_throttled():
    with cpu_quota_cgroup(0.5) as group:
        seen = run_inside(group, THROTTLE)
    before, after = seen["before"], seen["after"]
    assert None not in (before[0], after[0]), "no usage read"
    usage_s, periods, throttled, throttled_s = (
        new - old for new, old in zip(after, before, strict=True)
    )
    assert periods >= 5, seen
    assert throttled >= 3, seen
    assert throttled_s > 0.1, seen
    # Half a CPU at most, and a period's worth more for the edges.
    assert 0.1 < usage_s <= 0.5 * seen["elapsed"] + 0.1, seen
