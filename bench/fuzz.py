"""A long fuzz run against a real ``bcrun serve -t``, both sides of its socket.

    python3 -m bench.fuzz [--inputs N] [--seed S] [--check-every K]

Each input is one connection over the unix socket: a build client (a token
line right or wrong, cut anywhere, then garbage) or a control connection
(the control token, then commands mixed with garbage), half-closed after
sending.  A wrong token must get nothing, a right one its count; a control
connection gets one reply per command.  Every K inputs a well-formed client
must still get its count, and the server's fds and RSS are sampled.

Reports inputs tried, crashes (the server died; it is restarted), hangs (no
close within 5 s), wrong answers, the largest fd count and RSS, and time.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.test_fuzz import converse as converse_in_test  # noqa: E402
from tests.integration.test_fuzz import first_line  # noqa: E402

LINE_MAX = 256
ENDINGS = [b"\r\n", b"\n", b"\r", b"\n\n", b"\r\r\n", b""]
COMMANDS = ["dump", "status", "help", "?", "quit", " dump ", "1:pause", "1:resume"]
COMMANDS += ["1:auto", "1:", ":3", "1:-1", "1:2147483648", "0:1", "9:2", "1:3"]


class Server:
    def __init__(self, path: str) -> None:
        self.path = path
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bcrun", "serve", "-t", path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("bcrun serve did not start")
            if line.startswith("control token: "):
                self.control = line.split(": ", 1)[1].strip()
            if line.startswith("test mode"):
                break
        assert self.command("1:3") == "builder 1: jobs 3"
        self.token = self.command("new")
        assert self.command("2:7") == "builder 2: jobs 7"
        self.holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.holder.connect(path)
        self.holder.sendall(self.token.encode() + b"\n")

    def command(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            return False
        got = converse(self.path, [b"1-\r\n"])
        return got == b"3\r\n"

    def stop(self) -> None:
        self.holder.close()
        self.proc.kill()
        self.proc.wait(5)


class Hang(Exception):
    pass


def converse(path: str, pieces: list[bytes]) -> bytes:
    """The suite's conversation, a hang counted instead of failing."""
    try:
        return converse_in_test(path, pieces, pause=False)
    except AssertionError as err:
        raise Hang(str(err)) from None


def cut(rng: random.Random, data: bytes) -> list[bytes]:
    points = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(4)))
    points = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


def junk(rng: random.Random, limit: int) -> bytes:
    return rng.randbytes(rng.randrange(limit))


def token_variant(rng: random.Random, server: Server) -> str:
    good = rng.choice(["1-", server.token])
    kind = rng.randrange(7)
    if kind == 0:
        return good
    if kind == 1:
        return good[: rng.randrange(len(good) + 1)]
    if kind == 2:
        i = rng.randrange(len(server.token))
        c = "0" if server.token[i] != "0" else "1"
        return server.token[:i] + c + server.token[i + 1 :]
    if kind == 3:
        return good + "f" * rng.randrange(1, 400)
    if kind == 4:
        return junk(rng, 300).decode("latin-1")
    if kind == 5:
        return rng.choice([" 1-", "1- ", "01-", "1-0", server.token.upper()])
    return server.control[:-1] + "x"


def build_input(rng: random.Random, server: Server) -> str | None:
    """One build-side input; a description of what went wrong, or None."""
    data = token_variant(rng, server).encode("latin-1") + rng.choice(ENDINGS)
    data += junk(rng, rng.choice([50, 300, 5000]))
    got = converse(server.path, cut(rng, data))
    counts = {"1-": b"3\r\n", server.token: b"7\r\n"}
    line = first_line(data)
    if line in counts:
        if got not in (counts[line], b""):
            return f"right token got {got!r}"
        overlong = re.search(rb"[^\r\n]{%d}" % (LINE_MAX + 1), data)
        if got == b"" and not overlong:
            return f"right token {line!r} got nothing"
    elif got:
        return f"wrong token {line!r} got {got!r}"
    return None


def control_input(rng: random.Random, server: Server) -> str | None:
    lines = []
    for _ in range(rng.randrange(10)):
        kind = rng.randrange(4)
        if kind == 0:
            lines.append(rng.choice(COMMANDS))
        elif kind == 1:
            lines.append(f"{rng.choice([0, 1, 3, 9])}:{rng.randrange(2**31)}")
        elif kind == 2:
            lines.append(junk(rng, 40).decode("latin-1"))
        else:
            lines.append("x" * rng.randrange(200, 320))
    ends = [rng.choice(ENDINGS[:5]) for _ in lines]
    body = b"".join(t.encode("latin-1") + e for t, e in zip(lines, ends, strict=True))
    data = server.control.encode() + rng.choice(ENDINGS[:5]) + body
    got = converse(server.path, cut(rng, data))
    if server.command("1:3") != "builder 1: jobs 3":  # undo what it set
        return "standard input stopped answering"
    replies = [r for r in re.split(rb"\r\n", got) if r]
    if replies and not (replies[-1] == b"ok" or replies[-1].startswith(b"error: ")):
        return f"reply not ended by ok/error: {replies[-3:]!r}"
    if not re.search(rb"[^\r\n]{%d}" % (LINE_MAX + 1), body):
        sent = [p for p in re.split(rb"\r\n|\r|\n", body) if p]
        if b"quit" in [p.strip() for p in sent]:
            sent = sent[: [p.strip() for p in sent].index(b"quit") + 1]
        ends_ = sum(1 for r in replies if r == b"ok" or r.startswith(b"error: "))
        if ends_ != len(sent):
            return f"{len(sent)} commands, {ends_} replies"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--check-every", type=int, default=500, metavar="K")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fuzz.sock")
        server = Server(path)
        time.sleep(0.2)
        baseline = max_fds = server.fds()
        max_rss = server.rss_kib()
        crashes = hangs = wrong = 0
        examples: list[str] = []
        start = time.monotonic()
        for i in range(1, args.inputs + 1):
            side = build_input if i % 2 else control_input
            try:
                problem = side(rng, server)
            except Hang:
                hangs += 1
                problem = None
            except (ConnectionRefusedError, FileNotFoundError):
                problem = "connection refused"
            if problem:
                wrong += 1
                if len(examples) < 5:
                    examples.append(problem)
            if i % args.check_every == 0 or i == args.inputs:
                max_fds = max(max_fds, server.fds())
                max_rss = max(max_rss, server.rss_kib())
                if not server.alive():
                    crashes += 1
                    server.stop()
                    server = Server(path)
        deadline = time.monotonic() + 5
        while server.fds() != baseline and time.monotonic() < deadline:
            time.sleep(0.05)
        elapsed = time.monotonic() - start
        final_fds = server.fds()
        server.stop()
    print(f"inputs tried:  {args.inputs} (seed {args.seed})")
    print(f"crashes:       {crashes}")
    print(f"hangs:         {hangs}")
    print(f"wrong answers: {wrong}")
    for example in examples:
        print(f"  {example}")
    print(f"fds:           baseline {baseline}, max {max_fds}, at end {final_fds}")
    print(f"max RSS:       {max_rss} KiB")
    print(f"time:          {elapsed:.1f} s ({args.inputs / elapsed:.0f} inputs/s)")
    return 1 if crashes or hangs or wrong or final_fds != baseline else 0


if __name__ == "__main__":
    sys.exit(main())
