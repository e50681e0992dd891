#!/usr/bin/env python3
"""runjobs: run shell commands in parallel, as many at once as a build-control
controller allows.  A small build program that obeys the protocol, for the
demo and as a model for authors of patches: connect once, send the token,
wait a bounded time for the first count, make the control socket part of the
blocking wait, treat 0 as pause, and carry on when the controller goes away.

    runjobs.py [-j N] FILE      one shell command per line of FILE
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import subprocess
import sys
import time


def connect() -> socket.socket | None:
    address, token = os.environ.get("BUILDSOCKET"), os.environ.get("BUILDTOKEN")
    if not address or not token:
        return None
    try:
        if address[0] in "/." or ":" not in address:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(address)
        else:
            host, _, port = address.rpartition(":")
            sock = socket.create_connection((host.strip("[]") or "localhost", port), 5)
        sock.sendall(token.encode() + b"\r\n")
        return sock
    except OSError as err:
        print(f"runjobs: no controller at {address}: {err}", file=sys.stderr)
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("file")
    args = parser.parse_args()
    with open(args.file) as f:
        todo = [line.strip() for line in f if line.strip() and not line.startswith("#")]

    given = limit = args.jobs
    selector = selectors.DefaultSelector()
    wakeup_r, wakeup_w = os.pipe()
    os.set_blocking(wakeup_w, False)
    signal.set_wakeup_fd(wakeup_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector.register(wakeup_r, selectors.EVENT_READ)
    control = connect()
    pending = b""
    if control is not None:
        selector.register(control, selectors.EVENT_READ)
    # Start nothing before the first count (one second at most).
    first_deadline = time.monotonic() + 1.0 if control is not None else 0.0

    running: dict[int, subprocess.Popen[bytes]] = {}
    failed = 0
    while todo or running:
        waiting_first = control is not None and time.monotonic() < first_deadline
        while todo and len(running) < limit and not waiting_first:
            proc = subprocess.Popen(todo.pop(0), shell=True)
            running[proc.pid] = proc
            print(
                f"runjobs: started, {len(running)} running, limit {limit}", flush=True
            )
        timeout = max(0.0, first_deadline - time.monotonic()) if waiting_first else None
        for key, _ in selector.select(timeout):
            if key.fileobj == wakeup_r:
                os.read(wakeup_r, 512)
            else:
                try:
                    data = control.recv(512) if control else b""
                except OSError:
                    data = b""
                lines = (pending + data).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                *complete, pending = lines.split(b"\n")
                bad = [c for c in complete if c and not c.isdigit()]
                if not data or bad or len(pending) > 64:
                    # Controller gone or talking nonsense: carry on without it.
                    selector.unregister(control)
                    control.close()
                    control = None
                    limit = limit or given
                    first_deadline = 0.0
                    continue
                for line in filter(None, complete):
                    print(f"runjobs: limit {limit} -> {int(line)}", flush=True)
                    limit = int(line)
                    first_deadline = 0.0
        for pid, proc in list(running.items()):
            if proc.poll() is not None:
                failed += proc.returncode != 0
                del running[pid]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
