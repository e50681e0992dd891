"""The parent sees exactly what it would have seen without bcrun."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import termios

import psutil
import pytest

from tests.helpers import wait_until

CODES = [
    0,
    1,
    2,
    3,
    42,
    100,
    124,
    125,
    126,
    127,
    128,
    129,
    130,
    137,
    143,
    200,
    254,
    255,
]


def test_exit_codes_pass_through(bcrun):
    procs = {code: bcrun.start("sh", "-c", f"exit {code}") for code in CODES}
    for code, proc in procs.items():
        assert proc.wait(30) == code
    assert bcrun.leftovers() == []


@pytest.mark.parametrize(
    "sig",
    [
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGKILL,
        signal.SIGSEGV,
        signal.SIGHUP,
        signal.SIGUSR1,
    ],
)
def test_death_by_signal_passes_through(bcrun, sig):
    result = bcrun.run("sh", "-c", f"kill -{sig.name.removeprefix('SIG')} $$")
    assert result.returncode == -sig
    assert "Traceback" not in result.stderr
    assert bcrun.leftovers() == []


def test_no_core_dump_of_bcrun_itself(bcrun, tmp_path):
    result = bcrun.run("sh", "-c", "kill -ABRT $$", cwd=tmp_path)
    assert result.returncode == -signal.SIGABRT
    assert not [p for p in os.listdir(tmp_path) if p.startswith("core")]


def test_not_found_and_not_executable(bcrun, tmp_path):
    result = bcrun.run("no-such-command-here")
    assert (result.returncode, result.stderr) == (
        127,
        "bcrun: no-such-command-here: command not found\n",
    )
    result = bcrun.run(str(tmp_path / "missing"))
    assert result.returncode == 127
    assert (
        result.stderr == f"bcrun: {tmp_path / 'missing'}: No such file or directory\n"
    )
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\nexit 0\n")
    result = bcrun.run(str(script))
    assert (result.returncode, result.stderr) == (
        126,
        f"bcrun: {script}: Permission denied\n",
    )
    result = bcrun.run(str(tmp_path))
    assert result.returncode == 126
    assert bcrun.leftovers() == []


@pytest.mark.parametrize(
    "args",
    [
        ("--bogus", "make"),
        ("-j", "x", "make"),
        ("-j", "-1", "make"),
        ("--policy", "nope", "make"),
        ("--max-jobs", "1", "--min-jobs", "2", "make"),
        (),
        ("jobs", "many"),
        ("jobs",),
        ("serve",),
    ],
)
def test_bad_input_is_one_line_and_125(bcrun, args):
    result = bcrun.run(*args)
    assert result.returncode == 125
    assert result.stderr.startswith("bcrun: ")
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""


def trap_script(tmp_path, signals):
    marker = tmp_path / "got"
    traps = "; ".join(f"trap 'echo {s} >> {marker}; exit 3' {s}" for s in signals)
    return (
        marker,
        f"{traps}; echo ready > {tmp_path / 'ready'}; while :; do sleep 0.05; done",
    )


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT]
)
def test_signals_sent_to_bcrun_reach_the_build(bcrun, tmp_path, sig):
    name = sig.name.removeprefix("SIG")
    marker, script = trap_script(tmp_path, [name])
    # No terminal here, so SIGINT and SIGQUIT cannot have reached the build
    # by themselves: bcrun passes them on too.
    proc = bcrun.start("sh", "-c", script, stdin=subprocess.DEVNULL)
    wait_until(lambda: (tmp_path / "ready").exists(), what="child ready")
    proc.send_signal(sig)
    assert proc.wait(10) == 3
    assert marker.read_text() == f"{name}\n"
    assert bcrun.leftovers() == []


def test_signals_ignored_at_start_stay_ignored_for_the_build(bcrun, tmp_path):
    script = "grep SigIgn /proc/self/status"
    plain = subprocess.run(
        ["sh", "-c", f"trap '' HUP; {sys.executable} -m bcrun sh -c '{script}'"],
        env=bcrun.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    ignored = int(plain.stdout.split()[1], 16)
    assert ignored & (1 << (signal.SIGHUP - 1))
    direct = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert not int(direct.stdout.split()[1], 16) & (1 << (signal.SIGINT - 1))
    result = bcrun.run("sh", "-c", script)
    assert not int(result.stdout.split()[1], 16) & (1 << (signal.SIGINT - 1))


def test_killed_bcrun_leaves_a_directory_the_next_one_removes(bcrun, tmp_path):
    """Once its build has ended too: a jobserver fifo in it may still be
    opened by name while the build runs."""
    argv, log = bcrun.client("--timeout", "60")
    proc = bcrun.start("-j", "2", *argv)
    log.wait_for(2)
    (stale,) = bcrun.instance_dirs()
    build = int((stale / "build").read_text().split()[0])
    proc.kill()
    proc.wait(5)
    # The build itself outlived bcrun and saw its controller go away.
    wait_until(lambda: "closed" in [e for _, e in log.events()], what="client sees EOF")
    assert bcrun.run("true").returncode == 0
    assert stale.exists(), "removed while its build still ran"
    assert "no bcrun of yours is running" in bcrun.run("status").stdout
    os.kill(build, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(build), what="the build to end")
    assert bcrun.run("true").returncode == 0
    assert not stale.exists()


def test_ctrl_c_on_a_terminal_stops_the_build_and_bcrun(bcrun, tmp_path):
    """On a real terminal the build gets the terminal's SIGINT directly, and
    bcrun dies of the same signal as the build."""
    marker = tmp_path / "got"
    # Count every SIGINT for a while, then die of one.
    script = (
        f"trap 'echo INT >> {marker}' INT; echo ready > {tmp_path / 'ready'}; "
        f"while [ ! -s {marker} ]; do sleep 0.02; done; sleep 0.3; "
        "trap - INT; kill -INT $$"
    )
    master, slave = os.openpty()

    def become_terminal_owner() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = bcrun.start(
        "sh",
        "-c",
        script,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=become_terminal_owner,
    )
    os.close(slave)
    try:
        wait_until(lambda: (tmp_path / "ready").exists(), what="child ready")
        os.write(master, b"\x03")  # the terminal's interrupt character
        assert proc.wait(10) == -signal.SIGINT
    finally:
        os.close(master)
    assert marker.read_text().startswith("INT\n")
