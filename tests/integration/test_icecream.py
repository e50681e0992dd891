"""icecream's own view, read from a real scheduler: icecc-scheduler and two
iceccd compile servers on loopback, one of which stops.  Skips, saying why,
where icecream is not installed or the test cannot run its daemons."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bcrun.remote import read_remote
from tests.helpers import Bcrun, wait_until
from tests.integration.test_distcc import free_port, listening, stop

pytestmark = [
    pytest.mark.skipif(
        not all(
            shutil.which(p) for p in ("icecc-scheduler", "iceccd", "unshare", "make")
        ),
        reason="icecream or unshare is not installed (apt-get install icecc)",
    ),
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="iceccd runs as root, each in a mount namespace of its own",
    ),
]

#: Where iceccd keeps its socket.
RUN = Path("/run/icecc")

#: Seconds a daemon may take to find its scheduler (it retries every 3 s).
JOINS_S = 20.0


def monitor_pair() -> int:
    """A port P with P + 1 free too: the scheduler's and its monitor's."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port + 1))
            return port
    raise AssertionError("no two free ports in a row")


@contextlib.contextmanager
def scheduler(net: str, logs: Path) -> Iterator[int]:
    port = monitor_pair()
    with (logs / "scheduler.log").open("wb") as log:
        process = subprocess.Popen(
            ["icecc-scheduler", "-p", str(port), "-n", net],
            stdout=subprocess.DEVNULL,
            stderr=log,
            process_group=0,
        )
    try:
        wait_until(
            lambda: listening(port + 1), 10, f"icecc-scheduler's monitor on {port + 1}"
        )
        yield port
    finally:
        stop(process)


@contextlib.contextmanager
def compile_server(
    port: int, net: str, name: str, slots: int, logs: Path
) -> Iterator[subprocess.Popen[bytes]]:
    # The daemon makes its environments' directory and gives it to its own
    # user: a new path, outside the test's tree, which that user cannot enter.
    environments = Path(tempfile.gettempdir(), f"bcrun-icecc-{os.getpid()}-{name}")
    shutil.rmtree(environments, ignore_errors=True)
    daemon = (
        f"iceccd -s 127.0.0.1:{port} -n {net} -m {slots} -p {free_port()} "
        f"-b {environments} -N {name}"
    )
    # One iceccd a machine, by its socket in /run/icecc: each of ours gets
    # a /run/icecc of its own, in a mount namespace of its own.
    RUN.mkdir(exist_ok=True)
    with (logs / f"iceccd-{name}.log").open("wb") as log:
        process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f"mount -t tmpfs -o mode=1777 bcrun-icecc {RUN} && exec {daemon}"],
            stdout=subprocess.DEVNULL,
            stderr=log,
            process_group=0,
        )  # fmt: skip
    try:
        yield process
    finally:
        stop(process)
        shutil.rmtree(environments, ignore_errors=True)


def test_icecream_hosts_come_from_its_scheduler_and_follow_one_that_leaves(
    bcrun: Bcrun, tmp_path: Path
) -> None:
    net = f"bcrun{os.getpid()}"
    with scheduler(net, tmp_path) as port:
        env = {"ICECC_SCHEDULER": f"127.0.0.1:{port}"}

        def slots() -> int:
            remote = read_remote("icecc", env)
            return remote.slots if remote is not None else -1

        with (
            compile_server(port, net, "a", 3, tmp_path),
            compile_server(port, net, "b", 2, tmp_path) as b,
        ):
            joined = time.monotonic()
            while slots() != 5:
                assert time.monotonic() - joined < JOINS_S, "the servers never joined"
                time.sleep(0.1)
            remote = read_remote("icecc", env)
            assert remote is not None
            assert (
                remote.source
                == f"icecream (ICECC_SCHEDULER: 127.0.0.1:{port}): 2 hosts, 5 slots"
            )
            project = tmp_path / "p"
            project.mkdir()
            (project / "Makefile").write_text("all:\n\t@true\n")
            bcrun.env.update(env)
            explained = bcrun.run(
                "--policy", "adaptive", "--explain", "make", "CC=icecc", "-C", str(project)
            )  # fmt: skip
            assert explained.returncode == 0, explained.stderr
            assert "2 hosts, 5 slots" in explained.stdout, explained.stdout
            stop(b)
            stopped = time.monotonic()
            while slots() != 3:
                assert time.monotonic() - stopped < 10, "a stopped server still counts"
                time.sleep(0.1)
    # No scheduler: no slots, said in one line.
    remote = read_remote("icecc", env)
    assert remote is not None and remote.slots == 0
    assert "does not answer" in remote.source
