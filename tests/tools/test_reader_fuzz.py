"""Each patched tool's count reader, fed generated streams by a controller
made here: valid counts and garbage, cut at random points.

Whatever arrives, the tool must neither crash, hang nor spin, and the build
must finish with exit 0.  A tool that meets a protocol error closes the
connection and carries on (patches/*/NOTES.md).  Seeded, so a failure
replays: the seed is in the test id.
"""

from __future__ import annotations

import itertools
import random
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.tools.jobs import make_project
from tests.tools.test_scenarios import children_cpu

SEEDS = list(range(1, 9))
JOBS = 6


def valid(rng: random.Random) -> bytes:
    count = rng.choice([0, 1, 2, 3, 4, 8, 2**31 - 1, rng.randrange(0, 100)])
    return str(count).encode() + rng.choice([b"\r\n", b"\n", b"\r", b"\r\n\r\n"])


def garbage(rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    if kind == 1:
        return b"9" * rng.randrange(60, 300) + b"\n"  # overlong or huge
    if kind == 2:
        return rng.choice([b"-1", b"+3", b" 3", b"3 ", b"0x10", b"1e3", b"\0"]) + b"\n"
    if kind == 3:
        return b"x" * rng.randrange(1, 5000)  # no line end at all
    if kind == 4:
        return b"4294967297\r\n" + b"99999999999999999999\r\n"
    return str(rng.randrange(10)).encode() + bytes([rng.randrange(256)]) + b"\r\n"


def stream(rng: random.Random) -> bytes:
    parts = [valid(rng) for _ in range(rng.randrange(1, 6))]
    for _ in range(rng.randrange(0, 3)):
        parts.insert(rng.randrange(len(parts) + 1), garbage(rng))
    # A positive count last, unless garbage already ended the conversation.
    return b"".join(parts) + rng.choice([b"", b"2\r\n", b"\r\n\r"])


def pieces(rng: random.Random, data: bytes) -> list[bytes]:
    cuts = sorted(rng.sample(range(len(data) + 1), min(len(data), rng.randrange(8))))
    points = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


class Controller(threading.Thread):
    """Accepts the tool, reads its token, sends *chunks*, then hangs up."""

    def __init__(self, path: Path, chunks: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(4)
        self.listener.settimeout(20)
        self.chunks = chunks
        self.token = b""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(10)
                while not self.token.endswith(b"\n"):
                    byte = conn.recv(1)
                    if not byte:
                        return
                    self.token += byte
                try:
                    for chunk in self.chunks:
                        conn.sendall(chunk)
                        time.sleep(0.02)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the tool rejected the stream and hung up
                time.sleep(0.2)
        except BaseException as err:
            self.error = err
        finally:
            self.listener.close()


@pytest.mark.parametrize("seed", SEEDS)
def test_generated_streams_are_survived(tool, tmp_path, seed):
    rng = random.Random(f"{tool.name}-{seed}")
    data = stream(rng)
    project = tmp_path / "p"
    log = make_project(project, jobs=JOBS, seconds=0.1)
    controller = Controller(project / "controller.sock", pieces(rng, data))
    controller.start()
    env = {
        "PATH": "/usr/bin:/bin",
        "JOBLOG": str(log.path),
        "BUILDSOCKET": str(project / "controller.sock"),
        "BUILDTOKEN": "1-abc",
    }
    before = children_cpu()
    build = subprocess.Popen(
        tool.argv(project, 3), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _out, err = build.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        build.kill()
        _out, err = build.communicate()
        pytest.fail(f"{tool.name} hung on {data!r}: {err[-500:]!r}")
    controller.join(15)
    assert controller.error is None, controller.error
    assert controller.token == b"1-abc\r\n"
    assert build.returncode == 0, (data, err[-1000:])
    assert log.finished() == JOBS, data
    used = children_cpu() - before
    assert used < 2.0, f"{tool.name} used {used:.2f} s CPU on {data!r}"
