"""A distributed build with the real distcc: two distccd servers on loopback
stand in for remote hosts, pinned to one CPU, and the build (bcrun, make,
the distcc clients) to the other, so that the servers' compilers are not
the build's local load.  One server is stopped mid-build.  Skips, saying
why, where distcc or two CPUs are missing."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Bcrun, read_trace, wait_until
from tests.integration.test_sharing import burner

pytestmark = [
    pytest.mark.skipif(
        not all(shutil.which(p) for p in ("distcc", "distccd", "gcc", "make", "cc")),
        reason="distcc, distccd, gcc or make is not installed (apt-get install distcc)",
    ),
    pytest.mark.skipif(
        len(os.sched_getaffinity(0)) < 2,
        reason="needs two CPUs: one for the build, one for the 'remote' servers",
    ),
]

#: Slots of each server, as distcc's host list gives them.
SLOTS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def distccd(cpu: int, directory: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A distccd on loopback, pinned to *cpu*, in the foreground of a
    process group of its own (ended with it)."""
    port = free_port()
    server = subprocess.Popen(
        ["taskset", "-c", str(cpu), "distccd", "--no-detach", "--daemon",
         "--allow", "127.0.0.1", "--listen", "127.0.0.1", "--port", str(port),
         "--jobs", str(SLOTS), "--log-stderr"],
        # As root, distccd becomes the distcc user: it logs to our file.
        stderr=(directory / f"distccd-{port}.log").open("wb"),
        # The distcc user cannot enter the test's own TMPDIR.
        env={**os.environ, "TMPDIR": "/tmp"},
        process_group=0,
    )  # fmt: skip
    try:
        wait_until(lambda: listening(port), 10, f"distccd on port {port}")
        yield port, server
    finally:
        stop(server)


def listening(port: int) -> bool:
    """Whether something answers on *port* of loopback."""
    with (
        contextlib.suppress(OSError),
        socket.create_connection(("127.0.0.1", port), 0.2),
    ):
        return True
    return False


def stop(server: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait(10)


def c_project(directory: Path, files: int, links: int, program: Path) -> None:
    """*files* C files compiled with distcc, then *links* local jobs of a
    whole CPU for two seconds each (the link phase)."""
    directory.mkdir()
    for index in range(files):
        body = []
        for f in range(40):
            body.append(
                f"double f{index}_{f}(const double *a, int n, int k) {{\n"
                f"  double s = {f}.0;\n"
                "  for (int j = 0; j < n; j++) {\n"
                f"    switch ((int)(a[j] * {f + 3}) % 5) {{\n"
                f"    case 0: s += a[j] * {f}; break;\n"
                "    case 1: for (int q = 0; q < k; q++) s += q * a[(j + q) % n]; break;\n"
                "    default: s = s * 0.5 + a[j];\n"
                "    }\n  }\n  return s;\n}"
            )
        (directory / f"u{index:03d}.c").write_text("\n".join(body) + "\n")
    links_names = " ".join(f"link{i}" for i in range(links))
    (directory / "Makefile").write_text(
        "OBJS := $(patsubst %.c,%.o,$(sort $(wildcard *.c)))\n"
        f"all: {links_names}\n"
        f"{links_names}: $(OBJS)\n"
        f"\t@{program} 2.0 links.log\n"
        "%.o: %.c\n"
        "\t@$(CC) -O2 -c $< -o $@\n"
    )


def test_a_distcc_build_runs_the_remote_slots_follows_a_host_leaving_and_links_locally(
    bcrun: Bcrun, tmp_path: Path
) -> None:
    program = burner(tmp_path)
    project = tmp_path / "p"
    c_project(project, files=48, links=6, program=program)
    trace = tmp_path / "trace.jsonl"
    with distccd(1, tmp_path) as (port1, _), distccd(1, tmp_path) as (port2, second):
        bcrun.env["DISTCC_HOSTS"] = (
            f"127.0.0.1:{port1}/{SLOTS} 127.0.0.1:{port2}/{SLOTS}"
        )
        # distcc needs its directory to exist, or it compiles locally.
        (tmp_path / "distcc").mkdir()
        bcrun.env["DISTCC_DIR"] = str(tmp_path / "distcc")
        build = subprocess.Popen(
            ["taskset", "-c", "0",
             *bcrun.argv("--policy", "adaptive", "--trace", str(trace),
                         "make", "-C", str(project), "CC=distcc gcc")],
            env=bcrun.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_until(
            lambda: any(t["jobs"] >= 2 * SLOTS for t in read_trace(trace)),
            30,
            "the count to reach the remote slots",
        )
        time.sleep(2.0)
        stop(second)
        stopped = time.time()
        out, err = build.communicate(timeout=240)
    assert build.returncode == 0, err
    seen = read_trace(trace)
    before = [t for t in seen if t["time"] < stopped]
    after = [t for t in seen if t["time"] >= stopped]
    # The local room is the one CPU the build is given; the remote slots
    # come on top, at what a distcc job costs here.
    assert max(t["jobs"] for t in before) == 2 * SLOTS + 1
    assert before[-1]["remote_slots"] == 2 * SLOTS
    assert "distcc (DISTCC_HOSTS): 2 of 2 hosts, 8 remote slots" in before[-1]["reason"]
    # The stopped host's slots go within 10 s, and the count with them.
    gone = next(t for t in after if t["remote_slots"] == SLOTS)
    assert gone["time"] - stopped < 10.0
    followed = next(t for t in after if t["jobs"] <= SLOTS + 1)
    assert followed["time"] - stopped < 10.0
    # Linking: local jobs of a whole CPU each, the local room only.
    linking = [t for t in after if t["job_cost"] is not None and t["job_cost"] >= 1]
    assert linking, "a link phase was seen"
    assert linking[-1]["jobs"] == 1
    assert all(obj.exists() for obj in project.glob("u*.c")), out
    assert len((project / "links.log").read_text().splitlines()) == 6
