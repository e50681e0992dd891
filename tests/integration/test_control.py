"""Finding and controlling running builds from another terminal."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.helpers import wait_until


def test_no_build_running(bcrun):
    result = bcrun.run("jobs", "3")
    assert (result.returncode, result.stderr) == (
        125,
        "bcrun: no bcrun of yours is running\n",
    )
    result = bcrun.run("status")
    assert (result.returncode, result.stdout) == (0, "no bcrun of yours is running\n")
    assert json.loads(bcrun.run("status", "--json").stdout) == []


def test_several_builds_need_a_pid(bcrun):
    first_argv, first = bcrun.client("--until", "5")
    second_argv, second = bcrun.client("--until", "5")
    one = bcrun.start("-j", "1", *first_argv)
    two = bcrun.start("-j", "2", *second_argv)
    first.wait_for(1)
    second.wait_for(2)
    wait_until(lambda: len(bcrun.instance_dirs()) == 2, what="two instances")
    result = bcrun.run("jobs", "4")
    assert result.returncode == 125
    assert "2 builds are running" in result.stderr and "--pid" in result.stderr
    assert f"pid {one.pid}" in result.stderr and f"pid {two.pid}" in result.stderr

    table = bcrun.run("status").stdout.splitlines()
    assert table[0].split()[:5] == ["PID", "JOBS", "MODE", "VIA", "CLIENTS"]
    rows = {int(line.split()[0]): line.split() for line in table[1:]}
    assert rows[one.pid][1:5] == ["1", "auto", "none", "1"]
    assert rows[two.pid][1:5] == ["2", "auto", "none", "1"]
    statuses = json.loads(bcrun.run("status", "--json").stdout)
    assert {s["pid"] for s in statuses} == {one.pid, two.pid}
    for s in statuses:
        assert not re.search(r"\d-[0-9a-f]{32}", json.dumps(s))  # no token
        assert s["policy"] == "fixed"

    assert bcrun.run("jobs", "4", "--pid", str(two.pid)).returncode == 0
    second.wait_for(4)
    assert first.counts() == [1]
    assert bcrun.run("status", "--pid", str(two.pid), "--json").returncode == 0
    result = bcrun.run("pause", "--pid", "1")
    assert (result.returncode, result.stderr) == (
        125,
        "bcrun: no bcrun of yours is running with pid 1\n",
    )
    for pid in (one.pid, two.pid):
        assert bcrun.run("jobs", "5", "--pid", str(pid)).returncode == 0
    assert one.wait(10) == 0 and two.wait(10) == 0


def test_tokens_never_show_in_status_or_argv(bcrun):
    argv, log = bcrun.client("--until", "5")
    proc = bcrun.start(*argv)
    wait_until(lambda: log.counts(), what="first count")
    wait_until(lambda: bcrun.instance_dirs(), what="instance")
    (directory,) = bcrun.instance_dirs()
    record = json.loads((directory / "instance.json").read_text())
    secret = record["control_token"].split("-")[1]
    outputs = bcrun.run("status").stdout + bcrun.run("status", "--json").stdout
    assert secret not in outputs
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
    assert secret not in cmdline
    assert bcrun.run("jobs", "5").returncode == 0
    assert proc.wait(10) == 0
