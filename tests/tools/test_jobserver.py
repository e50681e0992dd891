"""Stock tools obey bcrun through a jobserver bcrun owns (issue 4).

The tools are unpatched: the system's GNU make 4.3 (a pipe), GNU make 4.4.1
and ninja 1.13.2 built from Debian's sources (a fifo).  Their own -j is on
the command line, as users write it: bcrun takes it off.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from bcrun.control import choose_instance, send_command
from tests.helpers import Bcrun, wait_until
from tests.tools.buildtools import pypi_ninja
from tests.tools.conftest import Tool, get_tool
from tests.tools.jobs import AT_ONCE_S, make_project
from tests.tools.test_scenarios import GRACE_S, start

STOCK = ["make-4.3", "gmake-4.4.1", "ninja-1.13.2", "ninja-pypi"]


@pytest.fixture(params=STOCK)
def stock(request: pytest.FixtureRequest) -> Tool:
    if request.param == "make-4.3":
        path = shutil.which("make")
        if path is None:
            pytest.skip("no system make")
        return Tool("gmake", Path(path))
    if request.param == "ninja-pypi":
        return Tool("ninja", pypi_ninja())
    name = request.param.split("-")[0]
    return get_tool(name, patched=False)


def test_explained_as_a_jobserver(bcrun: Bcrun, stock: Tool, tmp_path: Path) -> None:
    result = bcrun.run("--explain", *stock.argv(tmp_path, 8))
    assert result.returncode == 0, result.stderr
    version = subprocess.run(
        [str(stock.program), "--version"], capture_output=True, text=True
    ).stdout
    kitware = "kitware" in version
    make_44 = stock.makes and not version.startswith("GNU Make 4.3")
    style = "fifo" if (stock.name == "ninja" and not kitware) or make_44 else "pipe"
    assert f"a jobserver ({style})" in result.stdout
    assert "took -j 8 off the command line" in result.stdout


def test_starts_at_the_count_and_grows_at_once(
    bcrun: Bcrun, stock: Tool, tmp_path: Path
) -> None:
    project = tmp_path / "p"
    log = make_project(project, jobs=12, seconds=1.0, spread=True)
    proc, instance = start(bcrun, 2, stock, project, log, jobs=8)
    wait_until(lambda: log.started() >= 2, what="2 jobs")
    time.sleep(0.3)
    assert log.max_running() == 2
    before = time.time()
    send_command(instance, "1:4")
    wait_until(lambda: log.running_at(time.time()) >= 4, timeout=8, what="4 jobs")
    reached = log.time_running_reached(4, before)
    assert reached is not None
    if stock.name != "ninja":
        assert reached - before < AT_ONCE_S, reached - before
    # ninja asks the jobserver for tokens only as its jobs end: it grows then.
    assert proc.wait(60) == 0
    assert log.finished() == 12
    assert bcrun.leftovers() == []  # the fifo went with the directory


def test_shrinks_with_at_most_one_job_above_the_count(
    bcrun: Bcrun, stock: Tool, tmp_path: Path
) -> None:
    # ninja's fifo is one pipe it gives tokens back into and takes them from,
    # re-taking a token microseconds after giving it: bcrun stops it in its
    # write() while tokens are owed (bcrun.reclaim).
    project = tmp_path / "p"
    # Jobs end at different times, as in a real build: when several end at
    # once, the client re-takes their tokens before any owner can.
    log = make_project(project, jobs=10, seconds=0.5, spread=True)
    proc, instance = start(bcrun, 4, stock, project, log, jobs=8)
    wait_until(lambda: log.running_at(time.time()) >= 4, what="4 jobs")
    time.sleep(0.2)
    decreased = time.time()
    send_command(instance, "1:1")
    assert proc.wait(60) == 0
    assert log.finished() == 10
    late = log.starts_while_at_or_above(1, decreased + GRACE_S)
    assert len(late) <= 1, [(j.name, round(j.start - decreased, 3)) for j in late]


def test_recursive_make_is_bounded_in_all(
    bcrun: Bcrun, stock: Tool, tmp_path: Path
) -> None:
    if not stock.makes:
        pytest.skip("ninja has no sub-makes")
    project = tmp_path / "p"
    log = make_project(project, jobs=4, seconds=0.4, recursive=3)
    proc, _ = start(bcrun, 3, stock, project, log, jobs=8)
    assert proc.wait(60) == 0
    assert log.finished() == 12
    assert log.max_running() == 3


def test_tokens_lost_with_a_killed_sub_make_are_restored(
    bcrun: Bcrun, stock: Tool, tmp_path: Path
) -> None:
    if not stock.makes:
        pytest.skip("ninja has no sub-makes")
    project = tmp_path / "p"
    log = make_project(project, jobs=30, seconds=1.0, recursive=2)
    proc, _ = start(bcrun, 6, stock, project, log, jobs=8)
    wait_until(lambda: log.running_at(time.time()) >= 6, what="6 jobs")
    victim = next(
        p
        for p in psutil.Process(proc.pid).children(recursive=True)
        if p.name() == "make" and "sub1" in " ".join(p.cmdline())
    )
    victim.kill()  # SIGKILL: the tokens it held are never given back
    killed = time.time()
    assert proc.wait(60) != 0  # sub1 failed
    # Once the loss has lasted three checks (some 2.3 s), and sub1's orphaned
    # jobs are done, sub0 alone runs the whole count.
    assert log.max_running(since=killed + 3.0) == 6


def test_a_client_between_token_and_job_is_not_taken_for_a_loss(
    bcrun: Bcrun, stock: Tool, tmp_path: Path
) -> None:
    """With jobs this short, make holds a token without a job a quarter of
    the time: a check must not take that for a token lost with a client,
    and put one more in (which ran such a build above its count)."""
    if not stock.makes:
        pytest.skip("ninja holds no token between taking it and forking")
    names = [f"t{i}" for i in range(8000)]
    (tmp_path / "Makefile").write_text(
        f"all: {' '.join(names)}\n"
        + "".join(f"{name}:\n\t@true\n" for name in names)
        + f".PHONY: all {' '.join(names)}\n"
    )
    argv = stock.argv(tmp_path, 2)
    result = bcrun.run("-v", *argv, "-s", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "restored" not in result.stderr


def test_upstream_ninja_under_make_4_4_joins_its_fifo(
    bcrun: Bcrun, tmp_path: Path
) -> None:
    """make 4.4 gets a fifo, which upstream ninja run from one of its recipes
    joins (ninja ignores pipes): the whole build runs at the count, where
    ninja alone would run one job per CPU and two more."""
    make = get_tool("gmake", patched=False)
    ninja = get_tool("ninja", patched=False)
    project = tmp_path / "p"
    # Longer than bcrun takes to restore a token it thinks lost: the tokens
    # ninja's jobs hold are held, not lost.
    log = make_project(project, jobs=16, seconds=0.6)
    top = tmp_path / "top"
    top.mkdir()
    (top / "Makefile").write_text(f"all:\n\t+{ninja.program} -C {project}\n")
    env = dict(bcrun.env, JOBLOG=str(log.path))
    result = bcrun.run("-v", "-j", "2", str(make.program), "-C", str(top), env=env)
    assert result.returncode == 0, result.stderr
    assert log.finished() == 16
    assert log.max_running() == 2
    assert "restored" not in result.stderr


@pytest.mark.parametrize("generator", ["Unix Makefiles", "Ninja"])
def test_cmake_build_with_either_generator(
    bcrun: Bcrun, tmp_path: Path, generator: str
) -> None:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    project = tmp_path / "p"
    log = make_project(project, jobs=6, seconds=0.4)
    targets = "\n".join(
        f"add_custom_target(j{i} ALL COMMAND sh {project / 'job.sh'} j{i} 0.4)"
        for i in range(6)
    )
    (project / "CMakeLists.txt").write_text(
        f"cmake_minimum_required(VERSION 3.16)\nproject(p NONE)\n{targets}\n"
    )
    configure = [
        cmake,
        "-S",
        str(project),
        "-B",
        str(project / "build"),
        "-G",
        generator,
    ]
    if generator == "Ninja":
        configure.append(f"-DCMAKE_MAKE_PROGRAM={pypi_ninja()}")
    subprocess.run(configure, check=True, capture_output=True, timeout=120)
    env = dict(bcrun.env, JOBLOG=str(log.path), CMAKE_BUILD_PARALLEL_LEVEL="8")
    build = ["cmake", "--build", str(project / "build"), "-j", "8"]
    explained = bcrun.run("--explain", *build, env=env)
    assert "a jobserver" in explained.stdout, explained.stdout + explained.stderr
    # -v: what bcrun takes off a command is said only when asked.
    result = bcrun.run("-v", "-j", "2", *build, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "removed CMAKE_BUILD_PARALLEL_LEVEL" in result.stderr
    assert "took -j 8 off the command line" in result.stderr
    assert log.finished() == 6
    assert log.max_running() == 2


def test_cargo_joins_the_jobserver(bcrun: Bcrun, tmp_path: Path) -> None:
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("cargo is not installed")
    project = tmp_path / "w"
    log = make_project(project, jobs=0, seconds=0)
    crates = [f"c{i}" for i in range(4)]
    (project / "Cargo.toml").write_text(
        '[workspace]\nresolver = "2"\nmembers = ['
        + ", ".join(f'"{c}"' for c in crates)
        + "]\n"
    )
    for crate in crates:
        (project / crate / "src").mkdir(parents=True)
        (project / crate / "Cargo.toml").write_text(
            f'[package]\nname = "{crate}"\nversion = "0.1.0"\nedition = "2021"\n'
        )
        (project / crate / "src" / "lib.rs").write_text("")
        # A build script is a job: it runs on a token, and logs like the others.
        (project / crate / "build.rs").write_text(
            'fn main() { std::process::Command::new("sh")'
            f'.args([std::env::var("JOBSCRIPT").unwrap().as_str(), "{crate}", "1.0"])'
            ".status().unwrap(); }\n"
        )
    env = dict(
        bcrun.env,
        JOBLOG=str(log.path),
        JOBSCRIPT=str(project / "job.sh"),
        CARGO_TARGET_DIR=str(tmp_path / "target"),
    )
    explained = bcrun.run("--explain", "cargo", "build", env=env)
    assert "cargo: a jobserver (pipe)" in explained.stdout
    result = bcrun.run(
        "-j",
        "1",
        "cargo",
        "build",
        "--offline",
        "-q",
        cwd=project,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert log.finished() == 4
    assert log.max_running() == 1  # cargo alone would run one per CPU


def test_pause_leaves_one_job_per_client_and_says_so(
    bcrun: Bcrun, stock: Tool, tmp_path: Path
) -> None:
    project = tmp_path / "p"
    log = make_project(project, jobs=6, seconds=0.4, spread=True)
    env = dict(bcrun.env, JOBLOG=str(log.path))
    proc = bcrun.start(
        "-j", "3", *stock.argv(project, 8), env=env, stderr=subprocess.PIPE
    )
    wait_until(lambda: log.started() >= 3, what="3 jobs")
    instance = choose_instance(proc.pid)
    paused = time.time()
    send_command(instance, "1:0")
    time.sleep(1.5)
    # The top-level make's own slot is the floor: one job at a time.
    assert log.max_running(since=paused + 0.9) == 1
    status = json.loads(send_command(instance, "status")[0])
    assert (status["floor"], status["tokens"]) == (1, 0)
    send_command(instance, "1:4")
    assert proc.wait(60) == 0
    assert log.finished() == 6
    assert proc.stderr is not None
    assert "may run 1 job(s) at a count of 0" in proc.stderr.read()
