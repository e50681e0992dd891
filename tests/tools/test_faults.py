"""Faults during a real build: bcrun killed (SIGKILL) in every control mode,
a sub-make killed, a job that ignores SIGTERM, a closing terminal (SIGHUP).

test_scenarios.test_bcrun_killed_mid_build_leaves_the_build_running already
checks that a patched tool's orphaned build runs all its jobs at the count;
here the orphan's exit status is checked too (the tests run bcrun under a
subreaper, see REAPER, so that the orphaned tool can be waited for), and that
the next bcrun removes what the killed one left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import Bcrun, wait_until
from tests.tools.conftest import Tool
from tests.tools.jobs import JobLog, make_project
from tests.tools.test_jobserver import stock  # noqa: F401  (a fixture)


def build_pid(parent: int, project: Path) -> int:
    """The build tool, bcrun's child (not a --version probe of detect's)."""
    found: list[int] = []

    def look() -> bool:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(parent).children():
                cmdline = child.cmdline()
                # A child forked but not yet executed still shows bcrun's
                # own command line (the --version probe, the guardian).
                if str(project) in cmdline and "bcrun" not in cmdline:
                    found.append(child.pid)
        return bool(found)

    wait_until(look, what="the build tool to start")
    return found[0]


#: Runs argv[2:] as a subreaper: every orphaned descendant becomes its child,
#: and it waits for all of them, then writes {pid: waitstatus_to_exitcode}
#: as JSON to argv[1].  Prints the pid of its child first.
REAPER = """\
import ctypes, json, os, subprocess, sys
PR_SET_CHILD_SUBREAPER = 36
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0):
    sys.exit("reaper: prctl failed")
child = subprocess.Popen(sys.argv[2:])
print(child.pid, flush=True)
statuses = {}
while True:
    try:
        pid, status = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    statuses[pid] = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as f:
    json.dump(statuses, f)
"""


class Reaped:
    """bcrun started under REAPER."""

    def __init__(self, bcrun: Bcrun, env: dict[str, str], *args: str) -> None:
        self.out = bcrun.tmp_path / "reaped.json"
        self.reaper = subprocess.Popen(
            [sys.executable, "-c", REAPER, str(self.out), *bcrun.argv(*args)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        bcrun.procs.append(self.reaper)
        assert self.reaper.stdout is not None
        self.pid = int(self.reaper.stdout.readline())

    def statuses(self, timeout: float = 25) -> dict[int, int]:
        """Once every descendant has ended: how each ended."""
        try:
            self.reaper.wait(timeout)
        except subprocess.TimeoutExpired:
            left = psutil.Process(self.reaper.pid).children(recursive=True)
            raise AssertionError(
                f"still running after {timeout} s: "
                + "; ".join(" ".join(p.cmdline()) for p in left)
            ) from None
        return {int(k): v for k, v in json.loads(self.out.read_text()).items()}


def _kill_bcrun_mid_build(bcrun: Bcrun, tool: Tool, tmp_path: Path) -> None:
    project = tmp_path / "p"
    log = make_project(project, jobs=6, seconds=0.5, spread=True)
    env = dict(bcrun.env, JOBLOG=str(log.path))
    run = Reaped(bcrun, env, "-j", "2", *tool.argv(project, 8))
    tool_process = build_pid(run.pid, project)
    wait_until(lambda: log.started() >= 2, what="2 jobs")
    os.kill(run.pid, signal.SIGKILL)
    statuses = run.statuses()
    assert statuses[run.pid] == -signal.SIGKILL
    assert statuses[tool_process] == 0, statuses
    assert log.finished() == 6
    # Only the build's processes and bcrun's: every one ended well.
    assert [s for pid, s in statuses.items() if pid != run.pid and s != 0] == []
    # What the killed bcrun left (its directory, the jobserver fifo) is
    # removed by the next bcrun, whatever its command.
    assert bcrun.leftovers() != []
    result = bcrun.run("status")
    assert "Traceback" not in result.stderr
    assert bcrun.leftovers() == []


def test_bcrun_killed_under_a_patched_tool(bcrun: Bcrun, tool: Tool, tmp_path: Path):
    _kill_bcrun_mid_build(bcrun, tool, tmp_path)


def test_bcrun_killed_under_a_stock_tool(  # jobserver mode
    bcrun: Bcrun,
    stock: Tool,  # noqa: F811
    tmp_path: Path,
):
    # With pipes, the guardian passes tokens given back on to the build.
    _kill_bcrun_mid_build(bcrun, stock, tmp_path)


@pytest.mark.parametrize("kind", ["patched", "stock"])
def test_a_killed_sub_make_fails_the_build_as_make_would(bcrun, tmp_path, kind):
    from tests.tools.conftest import get_tool

    if kind == "patched":
        make = get_tool("gmake", patched=True)
    else:
        make = get_tool("gmake", patched=False)
    project = tmp_path / "p"
    log = make_project(project, jobs=4, seconds=0.6, recursive=2)
    env = dict(bcrun.env, JOBLOG=str(log.path))
    run = Reaped(bcrun, env, "-j", "4", *make.argv(project, 8))
    top = build_pid(run.pid, project)
    wait_until(lambda: log.started() >= 2, what="2 jobs")
    victim = next(
        p
        for p in psutil.Process(top).children(recursive=True)
        if "sub1" in " ".join(p.cmdline()) and p.name() == "make"
    )
    victim.kill()
    statuses = run.statuses()
    # make reports the killed sub-make and exits 2; bcrun exits the same.
    assert statuses[run.pid] == 2
    # Nothing outlived bcrun but the killed sub-make's orphaned jobs, which
    # ended on their own (the reaper waited for everything).
    assert bcrun.leftovers() == []


#: A job that ignores SIGTERM and SIGHUP, then logs and works.
STUBBORN = """\
all: slow quick
slow:
\t@sh -c 'trap "" TERM HUP; sh {job} slow 2'
quick:
\t@sh {job} quick 0.3
\t@sh {job} later 3
.PHONY: all slow quick
"""


def _stubborn_build(
    bcrun: Bcrun, tmp_path: Path, patched: bool = True, **popen
) -> tuple:
    from tests.tools.conftest import get_tool

    make = get_tool("gmake", patched=patched)
    project = tmp_path / "p"
    log = make_project(project, jobs=0, seconds=0)
    (project / "Makefile").write_text(STUBBORN.format(job=project / "job.sh"))
    env = dict(bcrun.env, JOBLOG=str(log.path))
    proc = bcrun.start(
        "-j", "2", *make.argv(project, 2), env=env, stderr=subprocess.PIPE, **popen
    )
    wait_until(lambda: {"slow", "later"} <= _names(log), what="the jobs")
    return proc, log


def make_raced(code: int, stderr: str) -> bool:
    """GNU make's own race: a fatal signal's handler, reaping, finds a child
    already reaped, and make stops with 2.  make alone did so 2 times in 25
    on a loaded machine: bcrun then returns what make gives."""
    return code == 2 and "wait: No child processes" in stderr


def _names(log: JobLog) -> set[str]:
    return {i.name for i in log.intervals()}


def _ended(log: JobLog) -> set[str]:
    return {
        line.split()[1]
        for line in log.path.read_text().splitlines()
        if line.startswith("end ")
    }


def test_sigterm_waits_for_a_job_that_ignores_it(bcrun, tmp_path):
    """SIGTERM to bcrun goes to make, which passes it to its jobs: the one
    that ignores it runs on, make waits for it, then make dies of SIGTERM,
    and bcrun with it, its directory removed."""
    proc, log = _stubborn_build(bcrun, tmp_path)
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.8)
    assert proc.poll() is None, "bcrun ended before the build"
    assert "later" not in _ended(log)  # killed by make's SIGTERM
    code = proc.wait(20)
    if make_raced(code, proc.stderr.read()):
        return
    assert code == -signal.SIGTERM
    assert "slow" in _ended(log)
    slow = next(i for i in log.intervals() if i.name == "slow")
    assert slow.end > sent + 0.5
    assert [i for i in log.intervals() if i.start > sent] == []
    assert bcrun.leftovers() == []


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
@pytest.mark.parametrize("via", ["protocol", "jobserver"])
def test_a_signal_to_the_process_group_ends_the_build_as_without_bcrun(
    bcrun, tmp_path, sig, via
):
    """The shell of a closing terminal sends SIGHUP to the job's process
    group (timeout(1) sends SIGTERM so): bcrun and make get it together.
    GNU make then stops catching it and waits for its jobs; a second copy
    passed on by bcrun would kill it at once, and the job that ignores the
    signal would outlive the build.  bcrun sees that make got it and passes
    nothing on: make waits for that job, then dies of the signal, and so does
    bcrun, with no job started after the signal and its directory removed."""
    proc, log = _stubborn_build(
        bcrun, tmp_path, patched=via == "protocol", start_new_session=True
    )
    sent = time.time()
    os.killpg(proc.pid, sig)
    code = proc.wait(20)
    stderr = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in stderr
    assert bcrun.leftovers() == []
    if make_raced(code, stderr):
        return
    assert code == -sig, stderr
    assert "slow" in _ended(log), "make did not wait for the job ignoring it"
    assert "later" not in _ended(log)
    assert [i for i in log.intervals() if i.start > sent] == []


def test_a_second_sigterm_to_bcrun_ends_make_at_once(bcrun, tmp_path):
    """After the process group's SIGTERM, make waits for the job ignoring
    it; a user who insists (kill PID) gets what make alone would do: it
    dies at once."""
    proc, log = _stubborn_build(bcrun, tmp_path, start_new_session=True)
    os.killpg(proc.pid, signal.SIGTERM)
    time.sleep(0.4)
    assert proc.poll() is None, "make did not wait for the job ignoring it"
    insisted = time.time()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == -signal.SIGTERM
    assert time.time() - insisted < 1.0
    assert "slow" not in _ended(log)
    wait_until(lambda: "slow" in _ended(log), what="the orphaned job to end")
    assert bcrun.leftovers() == []


def test_sighup_to_bcrun_alone_is_passed_to_make(bcrun, tmp_path):
    """SIGHUP to bcrun only (kill -HUP PID): make gets it, lets its running
    jobs end (GNU make signals its jobs only on SIGTERM), starts no more,
    then dies of SIGHUP; so does bcrun."""
    proc, log = _stubborn_build(bcrun, tmp_path)
    sent = time.time()
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(20) == -signal.SIGHUP
    assert [i for i in log.intervals() if i.start > sent] == []
    assert {"slow", "later"} <= _ended(log)
    assert bcrun.leftovers() == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_bcrun_alone_reaches_a_make_busy_starting_jobs(
    bcrun, tmp_path, sig
):
    """GNU make blocks these signals for a moment around each job it starts:
    with jobs of `true`, often.  bcrun must not take that for the build
    having the signal already: it passes it on, and make ends (of the
    signal, or with status 2 when it caught it while a job was starting:
    seen once in CI for SIGHUP), where before it ran on to the end."""
    names = [f"t{i}" for i in range(40000)]
    (tmp_path / "Makefile").write_text(
        f"all: {' '.join(names)}\n"
        + "".join(f"{name}:\n\t@true\n" for name in names)
        + f".PHONY: all {' '.join(names)}\n"
    )
    for attempt in range(5):
        proc = bcrun.start("make", "-s", "-j2", "-C", str(tmp_path))
        time.sleep(1.0 + attempt * 0.137)
        proc.send_signal(sig)
        assert proc.wait(10) in (-sig, 2)
    assert bcrun.leftovers() == []
