"""The client side of live control: ``bcrun jobs``, ``pause``, ``resume`` and
``status`` find this user's running bcrun and send it a control command over
its socket, presenting the control token from its private directory.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from bcrun.errors import ControlError, ProtocolError
from bcrun.instances import Instance, running_instances
from bcrun.protocol import LineDecoder, format_line

TIMEOUT_S = 5.0


def describe(instance: Instance) -> str:
    return f"pid {instance.pid} ({' '.join(instance.argv)[:60]})"


def choose_instance(pid: int | None) -> Instance:
    """The running bcrun to control: the one with *pid*, or the only one."""
    instances = running_instances()
    if pid is not None:
        for instance in instances:
            if instance.pid == pid:
                return instance
        raise ControlError(f"no bcrun of yours is running with pid {pid}")
    if not instances:
        raise ControlError("no bcrun of yours is running")
    if len(instances) > 1:
        listing = ", ".join(describe(i) for i in instances)
        raise ControlError(
            f"{len(instances)} builds are running: {listing}; choose one with --pid"
        )
    return instances[0]


def send_command(instance: Instance, command: str) -> list[str]:
    """Send one control command; return its output lines.

    Raises ControlError with the server's message when it answers
    ``error: ...``, or when it cannot be reached in time.
    """
    decoder = LineDecoder(limit=1 << 20)
    output: list[str] = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT_S)
            _connect(sock, os.fspath(instance.socket))
            sock.sendall(
                format_line(str(instance.control_token)) + format_line(command)
            )
            while True:
                data = sock.recv(65536)
                if not data:
                    raise ControlError(f"{describe(instance)} closed the connection")
                for line in decoder.feed(data):
                    if line == "ok":
                        return output
                    if line.startswith("error: "):
                        raise ControlError(line.removeprefix("error: "))
                    output.append(line)
    except (OSError, ProtocolError) as err:
        raise ControlError(f"cannot reach {describe(instance)}: {err}") from err


def _connect(sock: socket.socket, path: str) -> None:
    """Connect, waiting while the listen queue is full: a unix socket says
    EAGAIN at once then (a flood of connections), where TCP would wait."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            sock.connect(path)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError("its socket's queue stayed full") from None
            time.sleep(0.01)


def query_status(instance: Instance) -> dict[str, Any]:
    lines = send_command(instance, "status")
    try:
        status: dict[str, Any] = json.loads(lines[0])
    except (IndexError, ValueError) as err:
        raise ControlError(f"{describe(instance)} sent a bad status") from err
    return status
