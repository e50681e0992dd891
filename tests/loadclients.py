"""Load for tests/integration/test_load.py and bench/load.py.

Run as a program, it is one of two clients that open many connections
themselves with selectors (one process, not one per connection):

``loadclients.py many --connections N --log PATH [--until C]``
    The build: N connections to $BUILDSOCKET, each sending $BUILDTOKEN and
    reading counts.  Appends to --log ``ready T`` once every connection has
    its first count, then ``all SEQ COUNT FIRST LAST`` when every connection
    has received its SEQ-th count (FIRST and LAST the first and last
    receive times, from time.monotonic()), and ``lost K`` if the server
    closed K of them.  Exits when every connection has --until.

``loadclients.py hostile --socket PATH --total N --seconds S``
    N connections opened at an even rate over S seconds, in turn: silent;
    one byte a second; garbage (an HTTP request, random bytes, an overlong
    line); a wrong token; connect and close at once.  It holds what it may
    until the server closes it, at most --hold seconds after the last, and
    prints a JSON summary on stdout.

Both raise RLIMIT_NOFILE as far as they need; when they cannot, they say
so (``skip REASON`` in the log, or on stdout) and exit 3.

Imported, it gives the scenario drivers that start the real bcrun and these
clients: :func:`fanout` and :func:`flood`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import selectors
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bcrun.errors import ProtocolError
from bcrun.protocol import LineDecoder, parse_count

SKIP_EXIT = 3
PROGRAM = Path(__file__).resolve()


# -- the client programs -------------------------------------------------------


def raise_nofile(need: int) -> str | None:
    """Raise the soft RLIMIT_NOFILE to at least *need*; why not, or None."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    if hard != resource.RLIM_INFINITY and hard < need:
        return f"RLIMIT_NOFILE hard limit {hard} < {need} needed"
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    except (ValueError, OSError) as err:
        return f"cannot raise RLIMIT_NOFILE to {need}: {err}"
    return None


def connect_unix(path: str, deadline: float) -> tuple[socket.socket, int]:
    """A non-blocking connection to *path*, and how often the backlog was
    full (a unix socket says EAGAIN then, rather than waiting)."""
    full = 0
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
            return sock, full
        except BlockingIOError:
            sock.close()
            full += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.001)


def run_many(args: argparse.Namespace) -> int:
    n = args.connections
    log = open(args.log, "a", buffering=1)  # noqa: SIM115 - lives as long as we do
    why = raise_nofile(n + 64)
    if why:
        log.write(f"skip {why}\n")
        return SKIP_EXIT
    path = os.environ["BUILDSOCKET"]
    token = (os.environ["BUILDTOKEN"] + "\r\n").encode()
    deadline = time.monotonic() + args.timeout
    sel = selectors.DefaultSelector()
    # (seq, count) -> [connections that got it, first time, last time]
    tally: dict[tuple[int, int], list[float]] = {}
    lost = finished = opened = answered = 0
    window = args.window or n
    while time.monotonic() < deadline and finished + lost < n:
        # At most --window connections wait for their first count at once.
        while opened < n and opened - answered - lost < window:
            sock, _full = connect_unix(path, deadline)
            sock.send(token)
            sel.register(sock, selectors.EVENT_READ, [LineDecoder(), 0])
            opened += 1
        for key, _ in sel.select(timeout=0.5):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            now = time.monotonic()
            if not data:
                sel.unregister(sock)
                sock.close()
                lost += 1
                log.write(f"lost {lost}\n")
                continue
            state = key.data
            for line in state[0].feed(data):
                count = parse_count(line)
                entry = tally.setdefault((state[1], count), [0, now, now])
                entry[0] += 1
                entry[2] = now
                answered += state[1] == 0
                if entry[0] == n:
                    if state[1] == 0:
                        log.write(f"ready {now}\n")
                    log.write(f"all {state[1]} {count} {entry[1]} {entry[2]}\n")
                state[1] += 1
                if count == args.until:
                    finished += 1
    return 0 if lost == 0 and finished == n else 1


HOSTILE_KINDS = ("silent", "trickle", "garbage", "wrong-token", "drop")


def _garbage(i: int) -> bytes:
    choices = [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        os.urandom(64) + b"\n",
        b"A" * 1000,  # longer than a token line may be, no end
        b"\x00\xff\r\n" * 8,
        b"1-\r\n",
    ]
    return choices[i % len(choices)]


def _wrong_token(i: int) -> bytes:
    choices = [
        "1-" + secrets.token_hex(16),  # the build's number, a wrong secret
        "0-" + secrets.token_hex(16),  # a wrong control token
        "2-" + secrets.token_hex(16),  # a build there is not
        "1-" + secrets.token_hex(16).upper(),
    ]
    return (choices[i % len(choices)] + "\r\n").encode()


def run_hostile(args: argparse.Namespace) -> int:
    # It holds what bcrun has not closed: a few hundred (bcrun cuts all but
    # 256 waiting ones), with room for bursts.
    why = raise_nofile(min(args.total, 4096) + 64)
    if why:
        print(json.dumps({"skip": why}), flush=True)
        return SKIP_EXIT
    sel = selectors.DefaultSelector()
    trickle: dict[socket.socket, float] = {}
    summary = {
        "tried": 0,
        "connected": 0,
        "backlog_full": 0,
        "connect_errors": 0,
        "closed_by_server": 0,
        "closed_by_us": 0,
        "max_open": 0,
    }
    kinds = dict.fromkeys(HOSTILE_KINDS, 0)
    start = time.monotonic()
    last_open = start + args.seconds
    retry_at = 0.0

    def close(sock: socket.socket) -> None:
        sel.unregister(sock)
        trickle.pop(sock, None)
        sock.close()

    i = 0
    while True:
        now = time.monotonic()
        due = min(args.total, int((now - start) / args.seconds * args.total) + 1)
        while i < due and now >= retry_at:
            kind = HOSTILE_KINDS[i % len(HOSTILE_KINDS)]
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.connect(args.socket)
            except BlockingIOError:
                sock.close()
                summary["backlog_full"] += 1
                retry_at = now + 0.002
                break
            except OSError:
                sock.close()
                summary["connect_errors"] += 1
                summary["tried"] += 1
                i += 1
                continue
            summary["tried"] += 1
            summary["connected"] += 1
            kinds[kind] += 1
            i += 1
            if kind == "drop":
                sock.close()
                summary["closed_by_us"] += 1
                continue
            try:
                if kind == "garbage":
                    sock.send(_garbage(i))
                elif kind == "wrong-token":
                    sock.send(_wrong_token(i))
            except OSError:
                pass
            sel.register(sock, selectors.EVENT_READ)
            if kind == "trickle":
                trickle[sock] = now + 1.0
        open_now = len(sel.get_map())
        summary["max_open"] = max(summary["max_open"], open_now)
        if i >= args.total and (open_now == 0 or now > last_open + args.hold):
            break
        for sock, when in list(trickle.items()):
            if when <= now:
                try:
                    sock.send(b"1")
                    trickle[sock] = when + 1.0
                except OSError:
                    close(sock)
                    summary["closed_by_server"] += 1
        for key, _ in sel.select(timeout=0.002):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                close(sock)
                summary["closed_by_server"] += 1
    for key in list(sel.get_map().values()):
        sock = key.fileobj
        assert isinstance(sock, socket.socket)
        close(sock)
        summary["closed_by_us"] += 1
    summary["kinds"] = kinds
    summary["seconds"] = round(time.monotonic() - start, 2)
    print(json.dumps(summary), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    many = sub.add_parser("many")
    many.add_argument("--connections", type=int, required=True)
    many.add_argument("--log", required=True)
    many.add_argument("--until", type=int, default=None)
    many.add_argument("--window", type=int, default=0)
    many.add_argument("--timeout", type=float, default=120.0)
    hostile = sub.add_parser("hostile")
    hostile.add_argument("--socket", required=True)
    hostile.add_argument("--total", type=int, required=True)
    hostile.add_argument("--seconds", type=float, required=True)
    hostile.add_argument("--hold", type=float, default=6.0)
    args = parser.parse_args()
    try:
        return run_many(args) if args.mode == "many" else run_hostile(args)
    except ProtocolError as err:
        print(f"loadclients: {err}", file=sys.stderr)
        return 1


# -- the scenario drivers --------------------------------------------------------


class Skip(Exception):
    """The scenario cannot run here; the message says why."""


@dataclass
class FanoutResult:
    clients: int
    #: Per change: (count, first delay, last delay) in seconds from just
    #: before the command was sent to the clients' own receive times.
    changes: list[tuple[int, float, float]] = field(default_factory=list)
    connect_s: float = 0.0


def _instance(bcrun, proc):  # type: ignore[no-untyped-def]
    from bcrun.control import choose_instance
    from tests.helpers import wait_until

    wait_until(
        lambda: bcrun.instance_dirs() or proc.poll() is not None, what="instance"
    )
    return choose_instance(proc.pid)


def _many_events(log: Path) -> list[list[str]]:
    try:
        return [line.split() for line in log.read_text().splitlines()]
    except FileNotFoundError:
        return []


def fanout(
    bcrun, clients: int, counts: list[int], window: int = 128, timeout: float = 20.0
):  # type: ignore[no-untyped-def]
    """bcrun -j 3 running one process with *clients* connections; set each
    of *counts* in turn (the bytes ``bcrun jobs N`` sends) and time it.

    The clients connect *window* at a time (0: all at once), so as to stay
    under bcrun's 256 connections waiting for their token."""
    from bcrun.control import send_command
    from tests.helpers import wait_until

    why = raise_nofile(clients + 256)  # bcrun inherits it
    if why:
        raise Skip(why)
    log = bcrun.tmp_path / "many.log"
    until = max(counts) + 1
    argv = [sys.executable, str(PROGRAM), "many", "--connections", str(clients)]
    argv += ["--log", str(log), "--until", str(until), "--timeout", "120"]
    argv += ["--window", str(window)]
    started = time.monotonic()
    proc = bcrun.start("--via", "protocol", "-j", "3", *argv)

    def ready() -> bool:
        events = _many_events(log)
        if any(e[0] == "skip" for e in events):
            raise Skip(" ".join(next(e for e in events if e[0] == "skip")[1:]))
        lost = [e for e in events if e[0] == "lost"]
        if lost:
            raise AssertionError(f"bcrun closed {len(lost)} of {clients} clients")
        return any(e[0] == "ready" for e in events) or proc.poll() is not None

    wait_until(ready, timeout, f"{clients} clients to get their first count")
    assert proc.poll() is None, f"bcrun ended early: {proc.returncode}"
    result = FanoutResult(clients, connect_s=time.monotonic() - started)
    instance = _instance(bcrun, proc)
    for seq, count in enumerate(counts, start=1):
        before = time.monotonic()
        send_command(instance, f"1:{count}")

        def arrived(seq: int = seq) -> list[str] | None:
            for e in _many_events(log):
                if e[0] == "all" and int(e[1]) == seq:
                    return e
                if e[0] == "lost":
                    raise AssertionError(f"bcrun closed clients: {e}")
            return None

        wait_until(arrived, timeout, f"every client to get {count}")
        event = arrived()
        assert event is not None and int(event[2]) == count, event
        result.changes.append(
            (count, float(event[3]) - before, float(event[4]) - before)
        )
    send_command(instance, f"1:{until}")
    assert proc.wait(timeout) == 0
    return result


class Sampler(threading.Thread):
    """Peak open descriptors and VmRSS of a process, sampled every 5 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_fds = 0
        self.peak_rss_kib = 0
        self.samples = 0
        self._halt = threading.Event()

    def sample(self) -> tuple[int, int]:
        fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        rss = 0
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        return fds, rss

    def run(self) -> None:
        while not self._halt.wait(0.005):
            try:
                fds, rss = self.sample()
            except OSError:
                return
            self.peak_fds = max(self.peak_fds, fds)
            self.peak_rss_kib = max(self.peak_rss_kib, rss)
            self.samples += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


@dataclass
class FloodResult:
    hostile: dict[str, object]
    base_fds: int
    base_rss_kib: int
    peak_fds: int
    peak_rss_kib: int
    #: (count, delay in seconds to the build's own client)
    delays: list[tuple[int, float]]
    control_errors: list[str]
    stderr: str


def flood(bcrun, total: int, seconds: float, interval: float = 0.4):  # type: ignore[no-untyped-def]
    """bcrun -j 3 running tests/buildclient.py; *total* hostile connections
    over *seconds* from another process, and a count change every
    *interval* seconds meanwhile."""
    from bcrun.control import send_command
    from bcrun.errors import ControlError

    why = raise_nofile(2048)  # bcrun inherits it; it should need < 1300
    if why:
        raise Skip(why)
    argv, log = bcrun.client("--until", "999", "--timeout", str(seconds + 60))
    stderr_path = bcrun.tmp_path / "bcrun.stderr"
    with open(stderr_path, "w") as stderr:
        proc = bcrun.start("--via", "protocol", "-j", "3", *argv, stderr=stderr)
    log.wait_for(3)
    instance = _instance(bcrun, proc)
    sampler = Sampler(proc.pid)
    base_fds, base_rss = sampler.sample()
    sampler.start()
    hostile = subprocess.Popen(
        [
            *(sys.executable, str(PROGRAM), "hostile"),
            *("--socket", str(instance.socket)),
            *("--total", str(total), "--seconds", str(seconds)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    bcrun.procs.append(hostile)
    delays: list[tuple[int, float]] = []
    errors: list[str] = []
    count = 3
    try:
        time.sleep(interval)
        while hostile.poll() is None:
            count = 4 + (count + 3) % 11
            before = time.monotonic()
            try:
                send_command(instance, f"1:{count}")
            except ControlError as err:
                errors.append(f"{time.monotonic() - before:.3f} s: {err}")
                time.sleep(interval)
                continue
            arrived = log.wait_for(count, after=before, timeout=10)
            delays.append((count, arrived - before))
            time.sleep(interval)
        out, _ = hostile.communicate(timeout=30)
    finally:
        sampler.stop()
    summary = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    if "skip" in summary:
        raise Skip(str(summary["skip"]))
    send_command(instance, "1:999")
    assert proc.wait(20) == 0
    return FloodResult(
        summary,
        base_fds,
        base_rss,
        sampler.peak_fds,
        sampler.peak_rss_kib,
        delays,
        errors,
        stderr_path.read_text(),
    )


if __name__ == "__main__":
    sys.exit(main())
