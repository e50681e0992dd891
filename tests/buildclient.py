"""A stand-in for a patched build tool, for the protocol tests.

It connects to $BUILDSOCKET, sends $BUILDTOKEN, and appends one line
``TIME COUNT`` to --log for every count it receives (TIME from
time.monotonic(), comparable across processes on one machine).  It exits with
--exit-code when it receives --until, when the controller closes the
connection, or after --timeout seconds.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bcrun.protocol import InetAddress, LineDecoder, parse_address, parse_count


def connect(value: str) -> socket.socket:
    address = parse_address(value)
    if isinstance(address, InetAddress):
        return socket.create_connection((address.host or "localhost", address.service))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(address.path)
    return sock


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    parser.add_argument("--until", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--exit-code", type=int, default=0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    with open(args.log, "a", buffering=1) as log:
        sock = connect(os.environ["BUILDSOCKET"])
        sock.sendall(os.environ["BUILDTOKEN"].encode() + b"\r\n")
        log.write(f"{time.monotonic()} connected\n")
        decoder = LineDecoder()
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = sock.recv(4096)
            except TimeoutError:
                break
            if not data:
                log.write(f"{time.monotonic()} closed\n")
                break
            for line in decoder.feed(data):
                count = parse_count(line)
                log.write(f"{time.monotonic()} {count}\n")
                if count == args.until:
                    return args.exit_code
    return args.exit_code


if __name__ == "__main__":
    sys.exit(main())
