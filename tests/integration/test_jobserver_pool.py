"""The jobserver pool on real pipes and fifos."""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import psutil
import pytest

from bcrun.jobserver import JobserverPool
from tests.helpers import wait_until


def available(pool: JobserverPool) -> int:
    fd = (
        os.open(pool.path, os.O_RDONLY | os.O_NONBLOCK)
        if pool.style == "fifo"
        else pool.read_fd
    )
    try:
        raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
        return int(struct.unpack("i", raw)[0])
    finally:
        if pool.style == "fifo":
            os.close(fd)


POOLS = [("fifo", False), ("pipe", False), ("pipe", True)]


@pytest.mark.parametrize(("style", "routed"), POOLS)
def test_resize_puts_and_takes_back_tokens(tmp_path, style, routed):
    with JobserverPool(style, tmp_path, routed=routed) as pool:
        pool.resize(5)
        assert (pool.tokens, available(pool)) == (4, 4)
        pool.resize(2)  # the surplus lies in the pool: taken back at once
        wait_until(lambda: available(pool) == 1, timeout=2, what="tokens taken")
        assert pool.tokens == 1
        pool.resize(0)
        wait_until(lambda: pool.tokens == 0, timeout=2, what="pool emptied")
        assert available(pool) == 0
        pool.resize(3)
        assert (pool.tokens, available(pool)) == (2, 2)
        if style == "fifo":
            assert pool.auth == f"fifo:{tmp_path / 'jobserver'}"
        else:
            assert pool.auth == f"{pool.read_fd},{pool.write_fd}"
    assert not (tmp_path / "jobserver").exists()


@pytest.mark.parametrize("routed", [False, True])
def test_a_token_held_by_a_client_is_taken_when_returned(tmp_path, routed):
    with JobserverPool("pipe", tmp_path, routed=routed) as pool:
        pool.resize(3)
        token = os.read(pool.read_fd, 1)  # a client takes one
        pool.resize(1)
        wait_until(lambda: pool.tokens == 1, timeout=2, what="the free one")
        os.write(pool.write_fd, token)  # the client gives it back
        wait_until(lambda: pool.tokens == 0, timeout=2, what="the returned one")
        assert available(pool) == 0


#: A fifo client as quick as ninja: it gives each token back and at once tries
#: to take one, then says how many it took again.
QUICK_CLIENT = """
import fcntl, os, sys, time
if sys.argv[1].startswith("fifo:"):
    r = os.open(sys.argv[1][5:], os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(sys.argv[1][5:], os.O_WRONLY | os.O_NONBLOCK)
else:
    r, w = map(int, sys.argv[1].split(","))
    fcntl.fcntl(r, fcntl.F_SETFL, os.O_NONBLOCK)
held = 0
while held < 3:
    try:
        held += len(os.read(r, 3 - held))
    except BlockingIOError:
        time.sleep(0.001)
print("held", flush=True)
sys.stdin.readline()
retaken = 0
for _ in range(12):
    if not held:
        break
    time.sleep(0.02)  # a job runs
    os.write(w, b"+")
    try:
        os.read(r, 1)
        retaken += 1
    except BlockingIOError:
        held -= 1
print(retaken, held, flush=True)
sys.stdin.readline()
"""


def stopped(pid: int) -> bool:
    return psutil.Process(pid).status() == psutil.STATUS_STOPPED


@pytest.mark.parametrize("style", ["fifo", "pipe"])
def test_a_client_that_retakes_its_token_at_once_is_beaten(tmp_path, style):
    fds = set(os.listdir("/proc/self/fd"))
    with (
        JobserverPool(style, tmp_path) as pool,
        subprocess.Popen(
            [sys.executable, "-c", QUICK_CLIENT, pool.auth],
            pass_fds=pool.pass_fds,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as client,
    ):
        assert client.stdin is not None and client.stdout is not None
        try:
            pool.resize(4)
            assert client.stdout.readline() == "held\n"
            pool.watch(client.pid, frozenset({psutil.Process(client.pid).name()}))
            pool.resize(1)
            # Only the last reader or writer closing would stop it.
            if style == "fifo":
                os.close(os.open(pool.path, os.O_RDONLY | os.O_NONBLOCK))
            time.sleep(0.05)
            assert not stopped(client.pid)
            client.stdin.write("go\n")
            client.stdin.flush()
            assert client.stdout.readline() == "0 0\n"  # none taken again
            assert pool.tokens == 0
            # Growing again lets the fifo be: writing into it stops no one.
            pool.resize(3)
            assert pool.tokens == 2
            for _ in range(20):
                assert not stopped(client.pid)
                time.sleep(0.005)
            client.stdin.write("end\n")
            client.stdin.flush()
            assert client.wait(5) == 0
        finally:
            client.kill()
    assert not [t for t in threading.enumerate() if t.name == "jobserver-taker"]
    assert set(os.listdir("/proc/self/fd")) == fds


def state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


@pytest.mark.parametrize("how", ["closed", "killed"])
def test_the_guardian_continues_braked_clients_when_bcrun_is_killed(how):
    """A client stopped at the moment bcrun is killed is continued: the
    build never hangs on a stopped ninja.  On a clean end bcrun continues
    its clients itself, and the guardian just ends."""
    client = subprocess.Popen(["sleep", "30"])
    owner_code = (
        "import sys, time\n"
        "from bcrun.guardian import Guardian\n"
        "g = Guardian()\n"
        f"g.protect({client.pid})\n"
        "if sys.argv[1] == 'closed':\n"
        "    g.close()\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    try:
        os.kill(client.pid, signal.SIGSTOP)
        wait_until(lambda: state(client.pid) == "T", timeout=2, what="stopped")
        owner = subprocess.Popen(
            [sys.executable, "-c", owner_code, how],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert owner.stdout is not None
        assert owner.stdout.readline() == "ready\n"
        if how == "killed":
            owner.kill()
            wait_until(lambda: state(client.pid) != "T", timeout=5, what="continued")
        owner.kill()
        owner.wait()
        # The guardian is gone too: nothing of bcrun's is left running.
        wait_until(
            lambda: (
                not [
                    p
                    for p in psutil.process_iter(["cmdline"])
                    if "GUARDIAN" in " ".join(p.info["cmdline"] or [])
                    or "SIGCONT" in " ".join(p.info["cmdline"] or [])
                ]
            ),
            timeout=5,
            what="the guardian to end",
        )
        if how == "closed":
            assert state(client.pid) == "T", "a clean end leaves it to bcrun"
    finally:
        client.kill()
        client.wait()
