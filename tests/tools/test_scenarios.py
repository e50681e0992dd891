"""Every patched tool obeys bcrun, end to end: the scenarios of issue 3.

Each runs the real patched tool under the real bcrun (or, where the
controller itself must misbehave, under ``bcrun serve`` or a hostile
controller made here) on a build whose jobs log their own start and end.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from bcrun.control import choose_instance, send_command
from bcrun.startcount import cpu_capacity, default_jobs
from tests.helpers import Bcrun, has_ipv6_loopback, wait_until
from tests.tools.conftest import Tool, get_tool
from tests.tools.jobs import AT_ONCE_S, JobLog, make_project, write_ninja

#: Time a tool may take to act on a line that has just been sent.
GRACE_S = 0.05
# Implicit slots: see JobLog.starts_while_at_or_above.
REAPING_S = 0.03


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tool_pid(parent: int) -> int:
    """The build tool: the child of bcrun."""
    children = Path(f"/proc/{parent}/task/{parent}/children")
    wait_until(lambda: children.read_text().split(), what="the tool to start")
    return int(children.read_text().split()[0])


def build_env(bcrun: Bcrun, log: JobLog, **extra: str) -> dict[str, str]:
    return dict(bcrun.env, JOBLOG=str(log.path), **extra)


def start(
    bcrun: Bcrun, count: int, tool: Tool, project: Path, log: JobLog, jobs: int | None
):
    proc = bcrun.start(
        "-j", str(count), *tool.argv(project, jobs), env=build_env(bcrun, log)
    )
    wait_until(lambda: bcrun.instance_dirs(), what="bcrun to start")
    return proc, choose_instance(proc.pid)


def test_starts_at_the_count(bcrun, tool, tmp_path):
    project = tmp_path / "p"
    log = make_project(project, jobs=6, seconds=0.4)
    proc, _ = start(bcrun, 2, tool, project, log, jobs=8)
    assert proc.wait(60) == 0
    assert log.finished() == 6
    assert log.max_running() == 2


def test_an_increase_takes_effect_at_once_while_long_jobs_run(bcrun, tool, tmp_path):
    project = tmp_path / "p"
    log = make_project(project, jobs=5, seconds=3)
    proc, instance = start(bcrun, 1, tool, project, log, jobs=8)
    wait_until(lambda: log.started() >= 1, what="the first job")
    time.sleep(0.3)
    assert log.started() == 1
    before = time.time()
    send_command(instance, "1:4")
    wait_until(lambda: log.running_at(time.time()) >= 4, timeout=5, what="4 jobs")
    reached = log.time_running_reached(4, before)
    assert reached is not None
    assert reached - before < AT_ONCE_S, f"took {reached - before:.3f} s"
    send_command(instance, "1:8")
    assert proc.wait(60) == 0


def test_a_decrease_starts_nothing_at_or_above_the_new_count(bcrun, tool, tmp_path):
    project = tmp_path / "p"
    log = make_project(project, jobs=10, seconds=0.5)
    proc, instance = start(bcrun, 4, tool, project, log, jobs=8)
    wait_until(lambda: log.running_at(time.time()) >= 4, what="4 jobs")
    decreased = time.time()
    send_command(instance, "1:1")
    assert proc.wait(60) == 0
    assert log.finished() == 10
    assert log.starts_while_at_or_above(1, decreased + GRACE_S) == []


def test_a_count_above_the_starting_j_is_obeyed(bcrun, tool, tmp_path):
    project = tmp_path / "p"
    log = make_project(project, jobs=8, seconds=1)
    proc, instance = start(bcrun, 3, tool, project, log, jobs=1)
    wait_until(lambda: log.running_at(time.time()) >= 3, what="3 jobs at -j1")
    before = time.time()
    send_command(instance, "1:6")
    wait_until(lambda: log.running_at(time.time()) >= 6, timeout=5, what="6 jobs")
    reached = log.time_running_reached(6, before)
    assert reached is not None
    assert reached - before < AT_ONCE_S, f"took {reached - before:.3f} s"
    assert proc.wait(60) == 0
    assert log.finished() == 8
    assert log.max_running() == 6


def test_the_tool_s_own_j_is_the_count_it_starts_at(bcrun, tool, tmp_path):
    """``bcrun TOOL -jN``: N, not the CPUs, as ``TOOL -jN`` alone."""
    own = default_jobs(cpu_capacity()) + 2
    project = tmp_path / "p"
    log = make_project(project, jobs=own + 2, seconds=0.5)
    proc = bcrun.start(*tool.argv(project, own), env=build_env(bcrun, log))
    assert proc.wait(60) == 0
    assert log.finished() == own + 2
    assert log.max_running() == own


def test_a_serial_build_runs_as_it_is(bcrun, tool, tmp_path):
    """``bcrun TOOL -j1`` (behind an alias, ``make -j1``): one job at a
    time, as asked, with no controller; bcrun -v says so."""
    project = tmp_path / "p"
    log = make_project(project, jobs=4, seconds=0.2)
    seen = tmp_path / "env.log"
    result = bcrun.run(
        "-v",
        *tool.argv(project, 1),
        env=build_env(bcrun, log, JOBENV=str(seen)),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "run as it is: -j 1 asks for a serial build" in result.stderr
    assert log.finished() == 4
    assert log.max_running() == 1
    assert "env j0 BUILDSOCKET= BUILDTOKEN=\n" in seen.read_text()


def test_without_j_the_count_is_obeyed(bcrun, tool, tmp_path):
    """``bcrun TOOL``, no -j: the tool follows bcrun jobs and bcrun pause
    all the same (BSD make leaves its compat mode for it)."""
    project = tmp_path / "p"
    log = make_project(project, jobs=9, seconds=0.5)
    proc, _ = start(bcrun, 2, tool, project, log, jobs=None)
    wait_until(lambda: log.running_at(time.time()) >= 2, what="2 jobs")
    assert bcrun.run("pause").returncode == 0
    paused = time.time()
    time.sleep(0.8)  # the running jobs end
    assert [j for j in log.intervals() if j.start > paused + GRACE_S] == []
    before = time.time()
    assert bcrun.run("jobs", "5").returncode == 0
    wait_until(lambda: log.running_at(time.time()) >= 5, timeout=5, what="5 jobs")
    assert proc.wait(60) == 0
    assert log.finished() == 9
    assert log.max_running(until=paused) == 2
    assert log.max_running(since=before) == 5


def test_zero_pauses_without_spinning_and_resumes(bcrun, tool, tmp_path):
    project = tmp_path / "p"
    log = make_project(project, jobs=6, seconds=0.5)
    proc, instance = start(bcrun, 2, tool, project, log, jobs=4)
    wait_until(lambda: log.started() >= 1, what="the first job")
    pid = tool_pid(proc.pid)
    paused = time.time()
    send_command(instance, "1:pause")
    time.sleep(0.8)  # running jobs finish and are reaped
    started, cpu = log.started(), cpu_seconds(pid)
    time.sleep(1.5)
    assert log.started() == started, "a job started during the pause"
    assert log.running_at(time.time()) == 0, "jobs were not reaped"
    assert [j for j in log.intervals() if j.start > paused + GRACE_S] == []
    assert cpu_seconds(pid) - cpu < 0.05, "the tool spins while paused"
    send_command(instance, "1:resume")
    assert proc.wait(60) == 0
    assert log.finished() == 6


def test_ctrl_c_stops_a_paused_build_promptly(bcrun, tool, tmp_path):
    project = tmp_path / "p"
    log = make_project(project, jobs=6, seconds=0.3)
    # A session of its own, as a terminal gives: SIGINT goes to the group.
    proc = bcrun.start(
        "-j",
        "0",
        *tool.argv(project, 4),
        env=build_env(bcrun, log),
        start_new_session=True,
    )
    tool_pid(proc.pid)
    time.sleep(0.5)
    assert log.started() == 0
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    returncode = proc.wait(10)
    assert time.monotonic() - sent < 2
    assert returncode != 0
    assert log.started() == 0


@dataclass
class Served:
    """A ``bcrun serve`` with one builder, talked to on its standard input."""

    proc: subprocess.Popen[str]
    address: str
    token: str

    def command(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def clients(self) -> int:
        return int(json.loads(self.command("status"))["builds"][0]["clients"])


@contextmanager
def served(bcrun: Bcrun, address: str) -> Iterator[Served]:
    proc = bcrun.start("serve", address, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    lines = [proc.stdout.readline().strip()]
    while not lines[-1].startswith("control token"):
        lines.append(proc.stdout.readline().strip())
    server = Served(proc, lines[0].removeprefix("listening on "), "")
    server = Served(proc, server.address, server.command("new"))
    try:
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


@pytest.mark.parametrize("family", ["unix", "tcp", "tcp6"])
def test_controller_going_away_during_a_pause_gives_back_the_command_line_count(
    bcrun, tool, tmp_path, family
):
    if family == "tcp6" and not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    address = {"unix": str(tmp_path / "s"), "tcp": "127.0.0.1:0", "tcp6": "[::1]:0"}[
        family
    ]
    project = tmp_path / "p"
    log = make_project(project, jobs=6, seconds=0.4)
    with served(bcrun, address) as server:
        assert server.command("1:0") == "builder 1: jobs 0"
        env = build_env(bcrun, log, BUILDSOCKET=server.address, BUILDTOKEN=server.token)
        build = subprocess.Popen(tool.argv(project, 3), env=env)
        try:
            wait_until(lambda: server.clients() == 1, what="the tool to connect")
            time.sleep(0.5)
            assert log.started() == 0
            server.proc.kill()  # the controller dies while the build is paused
            killed = time.time()
            assert build.wait(30) == 0
        finally:
            if build.poll() is None:
                build.kill()
    assert log.finished() == 6
    assert log.max_running(since=killed) == 3


def test_bcrun_killed_mid_build_leaves_the_build_running(bcrun, tool, tmp_path):
    project = tmp_path / "p"
    log = make_project(project, jobs=6, seconds=0.5)
    proc, _ = start(bcrun, 2, tool, project, log, jobs=2)
    pid = tool_pid(proc.pid)
    wait_until(lambda: log.started() >= 1, what="the first job")
    proc.kill()
    proc.wait(5)
    wait_until(lambda: _gone(pid), timeout=30, what="the orphaned build to end")
    assert log.finished() == 6
    assert log.max_running() == 2


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


class HostileController:
    """A controller that sends what it is told, byte by byte if asked, and
    notes when the tool hangs up."""

    def __init__(self, path: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(4)
        self.path = path
        self.conn: socket.socket | None = None
        self.token = b""
        self.closed_by_tool = threading.Event()

    def accept(self) -> None:
        self.listener.settimeout(10)
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(10)
        while not self.token.endswith(b"\n"):
            self.token += self.conn.recv(1)
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        assert self.conn is not None
        try:
            self.conn.settimeout(None)
            while self.conn.recv(100):
                pass
        except OSError:
            pass
        self.closed_by_tool.set()

    def send(self, *chunks: bytes, pause: float = 0.01) -> None:
        assert self.conn is not None
        for chunk in chunks:
            self.conn.sendall(chunk)
            time.sleep(pause)


def under_hostile_controller(
    tool: Tool, project: Path, log: JobLog, jobs: int
) -> tuple[HostileController, subprocess.Popen[bytes]]:
    """Start the build with a HostileController as its controller."""
    controller = HostileController(project / "controller.sock")
    env = dict(os.environ, JOBLOG=str(log.path))
    env.update(BUILDSOCKET=str(controller.path), BUILDTOKEN="1-abc")
    return controller, subprocess.Popen(tool.argv(project, jobs), env=env)


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


@pytest.mark.parametrize(
    "garbage",
    [b"abc\r\n", b"3 \r\n", b"-1\n", b"9" * 100 + b"\n", b"\x00\xff\r\n", b"x" * 5000],
    ids=["letters", "trailing-space", "negative", "overlong", "binary", "no-newline"],
)
def test_garbage_is_survived_and_valid_counts_obeyed(tool, tmp_path, garbage):
    project = tmp_path / "p"
    log = make_project(project, jobs=8, seconds=0.4)
    controller, build = under_hostile_controller(tool, project, log, jobs=4)
    try:
        controller.accept()
        assert controller.token == b"1-abc\r\n"
        # Empty lines, a \r\n split across reads, a count split at every byte.
        controller.send(b"\r\n", b"\r", b"\n", b"\n", *byte_by_byte(b"2\r\n"))
        wait_until(lambda: log.running_at(time.time()) >= 2, what="2 jobs")
        before = children_cpu()
        controller.send(garbage)
        # A bad line, or a line too long to be a count, ends the connection.
        assert controller.closed_by_tool.wait(5), "the tool kept a bad controller"
        assert build.wait(30) == 0
        assert children_cpu() - before < 0.5, "the tool spun on garbage"
    finally:
        if build.poll() is None:
            build.kill()
    assert log.finished() == 8
    assert log.max_running() == 2


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children and theirs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_huge_counts_are_survived(tool, tmp_path):
    project = tmp_path / "p"
    log = make_project(project, jobs=4, seconds=0.3)
    controller, build = under_hostile_controller(tool, project, log, jobs=2)
    try:
        controller.accept()
        controller.send(b"99999999999999999999999\r\n", b"4294967297\r\n", b"1\r\n")
        assert build.wait(30) == 0
    finally:
        if build.poll() is None:
            build.kill()
    assert log.finished() == 4


def test_a_controller_not_bcrun_takes_the_tool_from_j1_to_12_and_back(tool, tmp_path):
    """A minimal controller of the tests' own, not bcrun's server."""
    project = tmp_path / "p"
    log = make_project(project, jobs=22, seconds=0.4)
    controller, build = under_hostile_controller(tool, project, log, jobs=1)
    try:
        controller.accept()
        controller.send(b"1\r\n")
        wait_until(lambda: log.started() >= 1, what="the first job")
        raised = time.time()
        controller.send(b"12\r\n")
        wait_until(lambda: log.running_at(time.time()) >= 12, timeout=5, what="12")
        down = time.time()
        controller.send(b"4\r\n")
        wait_until(lambda: log.started() >= 16, timeout=10, what="16 jobs")
        serial = time.time()
        controller.send(b"1\r\n")
        assert build.wait(30) == 0
    finally:
        if build.poll() is None:
            build.kill()
    assert log.finished() == 22
    assert log.max_running(until=raised) == 1
    assert log.max_running() == 12
    late = [
        j for j in log.starts_while_at_or_above(4, down + GRACE_S) if j.start < serial
    ]
    late += log.starts_while_at_or_above(1, serial + GRACE_S)
    assert late == [], [(j.name, round(j.start - down, 3)) for j in late]


def test_jobs_see_the_variables_unchanged_and_no_socket(bcrun, tool, tmp_path):
    project = tmp_path / "p"
    log = make_project(project, jobs=2, seconds=0.1)
    seen = tmp_path / "env.log"
    proc = bcrun.start(
        "-j",
        "2",
        *tool.argv(project, 2),
        env=build_env(bcrun, log, JOBENV=str(seen)),
    )
    assert proc.wait(60) == 0
    lines = seen.read_text().splitlines()
    envs = {line.split(" ", 2)[2] for line in lines if line.startswith("env ")}
    (value,) = envs
    assert value.startswith(f"BUILDSOCKET={bcrun.xdg}/bcrun/")
    assert value.endswith("/sock BUILDTOKEN=1-" + value.rsplit("-", 1)[1])
    assert len(value.rsplit("-", 1)[1]) == 32
    fds = [line for line in lines if line.startswith("fd ")]
    assert fds and not [line for line in fds if "socket:" in line], fds


def test_recursive_makes_run_the_count_in_all(bcrun, patched_make, tmp_path):
    project = tmp_path / "p"
    log = make_project(project, jobs=4, seconds=0.4, recursive=2)
    proc, instance = start(bcrun, 3, patched_make, project, log, jobs=8)
    wait_until(lambda: log.started() >= 3, what="3 jobs")
    assert log.max_running() <= 3
    send_command(instance, "1:2")
    decreased = time.time()
    assert proc.wait(60) == 0
    assert log.finished() == 8
    assert log.max_running() == 3
    late = log.starts_while_at_or_above(2, decreased + GRACE_S, REAPING_S)
    assert late == [], [(j.name, round(j.start - decreased, 3)) for j in late]


@pytest.mark.parametrize("jobs", [1, None], ids=["j1", "no-j"])
def test_recursive_makes_run_a_count_above_the_starting_j_in_all(
    bcrun, patched_make, tmp_path, jobs
):
    project = tmp_path / "p"
    log = make_project(project, jobs=4, seconds=0.5, recursive=2)
    proc, instance = start(bcrun, 4, patched_make, project, log, jobs=jobs)
    wait_until(lambda: log.running_at(time.time()) >= 4, what="4 jobs")
    send_command(instance, "1:2")
    decreased = time.time()
    assert proc.wait(60) == 0
    assert log.finished() == 8
    assert log.max_running() == 4
    late = log.starts_while_at_or_above(2, decreased + GRACE_S, REAPING_S)
    assert late == [], [(j.name, round(j.start - decreased, 3)) for j in late]


@pytest.mark.parametrize("jobs", [2, None], ids=["j2", "no-j"])
def test_bsd_make_tells_its_jobs_the_count_in_force(bcrun, tmp_path, jobs):
    """.MAKE.JOBS, upstream's -j, is the count once one has come: a job
    started after a change sees the new count."""
    bmake = get_tool("bmake", patched=True)
    project, seen, gate = tmp_path / "p", tmp_path / "seen", tmp_path / "gate"
    project.mkdir()
    (project / "Makefile").write_text(
        "all: second\n"
        f"first:\n\t@echo ${{.MAKE.JOBS}} >> {seen}; "
        f"while [ ! -e {gate} ]; do sleep 0.02; done\n"
        f"second: first\n\t@echo ${{.MAKE.JOBS}} >> {seen}\n"
    )
    proc = bcrun.start("-j", "5", *bmake.argv(project, jobs))
    wait_until(seen.exists, what="the first job")
    assert bcrun.run("jobs", "7").returncode == 0
    time.sleep(GRACE_S)
    gate.touch()
    assert proc.wait(30) == 0
    assert seen.read_text().split() == ["5", "7"]


def test_a_make_that_calls_ninja_runs_the_count_in_all(bcrun, tmp_path):
    make = get_tool("gmake", patched=True)
    ninja = get_tool("ninja", patched=True)
    project = tmp_path / "p"
    log = make_project(project, jobs=4, seconds=0.4)
    # Two ninja builds of the same jobs, side by side under one make; ninja
    # joins make's jobserver (fifo) as well as the controller.
    for sub in ("a", "b"):
        (project / sub).mkdir()
        durations = {f"{sub}{i}": 0.4 for i in range(4)}
        write_ninja(project / sub, durations, project / "job.sh")
    (project / "Makefile").write_text(
        f"all: a b\na b:\n\t+@{ninja.program} -C $@ --quiet\n.PHONY: all a b\n"
    )
    proc, instance = start(bcrun, 3, make, project, log, jobs=8)
    wait_until(lambda: log.started() >= 2, what="the first jobs")
    send_command(instance, "1:2")
    decreased = time.time()
    assert proc.wait(60) == 0
    assert log.finished() == 8
    assert log.max_running() <= 3
    # Each ninja holds one implicit slot: 2 is as low as two ninjas go.
    late = log.starts_while_at_or_above(2, decreased + GRACE_S, REAPING_S)
    assert late == [], [(j.name, round(j.start - decreased, 3)) for j in late]
