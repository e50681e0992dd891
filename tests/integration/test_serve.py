"""bcrun serve: the original server's commands over unix and TCP sockets."""

from __future__ import annotations

import json
import os
import pwd
import queue
import socket
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from bcrun.protocol import LineDecoder, parse_address
from tests.helpers import has_ipv6_loopback, wait_until


class Server:
    def __init__(self, bcrun, *args: str, **kwargs) -> None:
        self.proc = bcrun.start(
            "serve",
            *args,
            **kwargs,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors: list[str] = []
        threading.Thread(
            target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True
        ).start()
        threading.Thread(
            target=self._pump, args=(self.proc.stderr, self.errors.append), daemon=True
        ).start()
        self.addresses: list[str] = []
        while True:
            line = self.readline()
            if line.startswith("listening on "):
                self.addresses.append(line.removeprefix("listening on "))
            if line.startswith("control token: "):
                self.control_token = line.removeprefix("control token: ")
                break

    @staticmethod
    def _pump(stream, put) -> None:
        for line in stream:
            put(line.rstrip("\n"))

    def readline(self, timeout: float = 10) -> str:
        return self.lines.get(timeout=timeout)

    def command(self, text: str, replies: int = 1) -> list[str]:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return [self.readline() for _ in range(replies)]

    def stop(self) -> int:
        self.command("quit", replies=0)
        return self.proc.wait(10)


def connect(address: str) -> socket.socket:
    parsed = parse_address(address)
    if hasattr(parsed, "path"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(parsed.path)
    else:
        sock = socket.create_connection((parsed.host, int(parsed.service)))
    sock.settimeout(10)
    return sock


class Peer:
    """A build client speaking the protocol over a raw socket."""

    def __init__(self, address: str, token: str) -> None:
        self.sock = connect(address)
        self.sock.sendall(token.encode() + b"\r\n")
        self.decoder = LineDecoder(1 << 16)
        self.pending: list[str] = []

    def line(self) -> str:
        while not self.pending:
            data = self.sock.recv(4096)
            if not data:
                return ""
            self.pending += self.decoder.feed(data)
        return self.pending.pop(0)

    def close(self) -> None:
        self.sock.close()


def test_serve_over_unix_and_tcp(bcrun, tmp_path):
    path = str(tmp_path / "serve.sock")
    addresses = [path, "127.0.0.1:0"] + (["[::1]:0"] if has_ipv6_loopback() else [])
    server = Server(bcrun, *addresses)
    assert server.addresses[0] == path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    tcp = server.addresses[1:]
    assert tcp[0].startswith("127.0.0.1:") and not tcp[0].endswith(":0")
    (token,) = server.command("new")
    assert token.startswith("1-") and len(token) == 34
    peers = [Peer(address, token) for address in server.addresses]
    assert server.command("1:4") == ["builder 1: jobs 4"]
    assert [p.line() for p in peers] == ["4"] * len(peers)
    # A late peer gets the current count at once.
    late = Peer(server.addresses[-1], token)
    assert late.line() == "4"
    assert server.command("1:pause") == ["builder 1: jobs 0"]
    assert server.command("1:resume") == ["builder 1: jobs 4"]
    assert [p.line() for p in peers] == ["0"] * len(peers)
    assert [p.line() for p in peers] == ["4"] * len(peers)
    dump = server.command("dump", replies=len(peers) + 3)
    assert dump[0] == f"builder 1: jobs 4, {len(peers) + 1} connection(s)"
    assert all(line.startswith("  fd ") for line in dump[1:-1])
    assert dump[-1] == "control connections: 0"
    # Wrong tokens are dropped without a word.
    for bad in ["1-" + "0" * 32, "2-abc", "0-" + "0" * 32, "garbage"]:
        intruder = Peer(server.addresses[0], bad)
        assert intruder.line() == ""
    (status,) = server.command("status")
    assert json.loads(status)["builds"] == [
        {"number": 1, "jobs": 4, "clients": len(peers) + 1}
    ]
    # The builder is forgotten once its last connection is gone.
    for peer in [*peers, late]:
        peer.close()
    wait_until(
        lambda: "error: no builder 1" in server.command("1:2"), what="builder forgotten"
    )
    assert server.stop() == 0
    assert not os.path.exists(path)  # its socket is removed on exit


def test_help_and_errors_on_stdin(bcrun, tmp_path):
    server = Server(bcrun, str(tmp_path / "s"))
    help_lines = server.command("help", replies=8)
    assert help_lines[0].startswith("new ")
    assert server.command("?", replies=8) == help_lines
    assert server.command("7:3") == ["error: no builder 7"]
    assert server.command("bogus") == ["error: unknown command 'bogus' (try 'help')"]
    server.command("new")
    assert server.command("1:auto") == [
        "error: bcrun serve has no policies: give a count"
    ]
    assert server.command("1:pause") == ["error: builder 1 has no count to pause yet"]
    assert server.command("1:resume") == ["error: builder 1 is not paused"]
    assert server.stop() == 0


def test_control_connection_with_the_control_token(bcrun):
    server = Server(bcrun, ":0")
    (address,) = [
        a for a in server.addresses if a.startswith("127.0.0.1:")
    ] or server.addresses[:1]
    host = parse_address(address).host
    assert host in ("127.0.0.1", "::1")  # ':port' binds loopback only
    control = Peer(address, server.control_token)
    control.sock.sendall(b"new\r\n")
    token = control.line()
    assert control.line() == "ok"
    build = Peer(address, token)
    control.sock.sendall(b"1:6\r\n")
    assert control.line() == "builder 1: jobs 6"
    assert control.line() == "ok"
    assert build.line() == "6"
    control.sock.sendall(b"9:1\nquit\n")
    assert control.line() == "error: no builder 9"
    assert control.line() == "ok"
    assert control.line() == ""  # quit closes the control connection only
    assert server.command("1:2") == ["builder 1: jobs 2"]
    assert build.line() == "2"
    server.proc.terminate()
    assert server.proc.wait(10) == 0


def test_long_tokens_test_mode_and_debug(bcrun, tmp_path):
    path = str(tmp_path / "t.sock")
    server = Server(bcrun, "-l", "-t", "-d", path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
    assert server.readline() == "test mode: builder 1, token 1-"
    peer = Peer(path, "1-")
    assert server.command("1:3") == ["builder 1: jobs 3"]
    assert peer.line() == "3"
    (line,) = server.command("new")
    assert line.startswith(f"BUILDSOCKET={path} BUILDTOKEN=2-")
    # The test builder outlives its connections.
    peer.close()
    wait_until(
        lambda: json.loads(server.command("status")[0])["builds"][0]["clients"] == 0,
        what="the connection to close",
    )
    assert server.command("1:2") == ["builder 1: jobs 2"]
    wait_until(
        lambda: any("build 1 connected" in e for e in server.errors), what="debug log"
    )
    assert server.stop() == 0


def test_relative_socket_paths_are_given_out_absolute(bcrun, tmp_path):
    server = Server(bcrun, "-l", "./rel.sock", cwd=tmp_path)
    assert server.addresses == [str(tmp_path / "rel.sock")]
    (line,) = server.command("new")
    assert line.startswith(f"BUILDSOCKET={tmp_path / 'rel.sock'} BUILDTOKEN=1-")
    assert server.stop() == 0


def test_a_live_socket_is_not_stolen(bcrun, tmp_path):
    path = str(tmp_path / "s")
    first = Server(bcrun, path)
    result = bcrun.run("serve", path, input="")
    assert result.returncode == 125
    assert result.stderr == f"bcrun: {path}: a server is already listening there\n"
    assert first.stop() == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="-u needs root to change user")
def test_drop_privileges(bcrun, tmp_path):
    os.chmod(tmp_path, 0o755)
    path = str(tmp_path / "u.sock")
    server = Server(bcrun, "-u", "nobody", path)
    nobody = pwd.getpwnam("nobody")
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == [str(nobody.pw_uid)] * 4
    assert os.stat(path).st_uid == nobody.pw_uid
    assert server.stop() == 0


def test_builders_without_a_connection_are_bounded(bcrun, tmp_path):
    """A control peer cannot grow the server without end with ``new``: past
    MAX_UNCONNECTED builders that no build has connected to, ``new`` is
    refused until one connects."""
    from bcrun.serve import MAX_UNCONNECTED

    server = Server(bcrun, str(tmp_path / "s"))
    server.proc.stdin.write("new\n" * MAX_UNCONNECTED)
    server.proc.stdin.flush()
    tokens = [server.readline() for _ in range(MAX_UNCONNECTED)]
    assert len(set(tokens)) == MAX_UNCONNECTED
    refused = server.command("new")[0]
    assert refused.startswith(f"error: {MAX_UNCONNECTED} builders have had no")
    peer = Peer(server.addresses[0], tokens[0])
    server.command("1:3")
    assert peer.line() == "3"
    assert server.command("new")[0].count("-") == 1  # a token again
    assert server.stop() == 0
