"""bcrun COMMAND with a client that behaves like a patched build tool."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import stat
import sys
import time

import pytest

from bcrun.control import choose_instance, send_command
from bcrun.protocol import LineDecoder
from tests.helpers import wait_until


def started_instance(bcrun, proc):
    wait_until(
        lambda: bcrun.instance_dirs() or proc.poll() is not None, what="instance"
    )
    return choose_instance(proc.pid)


def started_client(bcrun, count: int, *client_args: str):
    """bcrun -j COUNT running a client, once the client has its count."""
    argv, log = bcrun.client(*client_args)
    proc = bcrun.start("-j", str(count), *argv)
    log.wait_for(count)
    return proc, log, started_instance(bcrun, proc)


def test_socket_token_and_private_directory(bcrun):
    script = (
        'import os, stat, sys; s = os.environ["BUILDSOCKET"]; '
        'print(s, os.environ["BUILDTOKEN"], oct(os.stat(os.path.dirname(s)).st_mode & 0o777), '
        "stat.S_ISSOCK(os.stat(s).st_mode))"
    )
    result = bcrun.run("-j", "3", sys.executable, "-c", script)
    assert result.returncode == 0, result.stderr
    path, token, mode, is_socket = result.stdout.split()
    assert path.startswith(str(bcrun.xdg / "bcrun") + "/")
    assert re.fullmatch(r"1-[0-9a-f]{32}", token)
    assert mode == "0o700"
    assert is_socket == "True"
    assert bcrun.leftovers() == []


def test_nothing_else_in_the_environment_changes(bcrun):
    env = dict(bcrun.env, SOME_VAR="kept")
    script = "import os, json; print(json.dumps(dict(os.environ)))"
    result = bcrun.run(sys.executable, "-c", script, env=env)
    import json

    child = json.loads(result.stdout)
    assert child.pop("BUILDSOCKET") and child.pop("BUILDTOKEN")
    assert child == env


def test_count_at_once_then_every_change_within_100ms(bcrun):
    proc, log, instance = started_client(bcrun, 3, "--until", "1")
    for count in (5, 2, 0, 8):
        before = time.monotonic()
        send_command(instance, f"1:{count}")
        arrived = log.wait_for(count, after=before)
        assert arrived - before < 0.1, f"count {count} took {arrived - before:.3f} s"
    send_command(instance, "1:1")
    assert proc.wait(10) == 0
    assert log.counts() == [3, 5, 2, 0, 8, 1]


def test_jobs_pause_resume_auto_from_the_command_line(bcrun):
    argv, log = bcrun.client("--until", "9")
    proc = bcrun.start("-j", "4", *argv)
    log.wait_for(4)
    started_instance(bcrun, proc)
    steps = [
        (("jobs", "6"), "jobs 6 (pinned at 6 by the user)", 6),
        (("pause",), "jobs 0 (paused by the user)", 0),
        (("resume",), "jobs 6 (pinned at 6 by the user)", 6),
        (("jobs", "auto"), "jobs 4 (fixed at -j 4)", 4),
    ]
    for args, reply, count in steps:
        before = time.monotonic()
        result = bcrun.run(*args)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"{proc.pid}: {reply}\n"
        log.wait_for(count, after=before)
    assert bcrun.run("jobs", "9").returncode == 0
    assert proc.wait(10) == 0
    assert log.counts() == [4, 6, 0, 6, 4, 9]


def test_sigusr1_adds_a_job_and_sigusr2_takes_one(bcrun):
    argv, log = bcrun.client("--until", "7")
    proc = bcrun.start("-j", "2", *argv)
    log.wait_for(2)
    for sig, count in [(signal.SIGUSR1, 3), (signal.SIGUSR1, 4), (signal.SIGUSR2, 3)]:
        before = time.monotonic()
        proc.send_signal(sig)
        log.wait_for(count, after=before)
    started_instance(bcrun, proc)
    assert bcrun.run("jobs", "7").returncode == 0
    assert proc.wait(10) == 0
    assert log.counts() == [2, 3, 4, 3, 7]


def raw_connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.settimeout(10)
    return sock


def closed_without_a_word(sock: socket.socket) -> bool:
    return sock.recv(100) == b""


def test_wrong_tokens_are_dropped_silently(bcrun):
    proc, log, instance = started_client(bcrun, 3, "--until", "5")
    path = str(instance.socket)
    for bad in [b"1-0000\r\n", b"2-abc\n", b"garbage\n", b"0-1234\r\n", b"1\n"]:
        sock = raw_connect(path)
        sock.sendall(bad)
        assert closed_without_a_word(sock), bad
        sock.close()
    # A second client with the right token gets the count at once.
    good = raw_connect(path)
    good.sendall(os.environ.get("X", "").encode())  # nothing: a partial token
    good.close()
    send_command(instance, "1:5")
    assert proc.wait(10) == 0
    assert log.counts() == [3, 5]


def test_overlong_token_line_is_cut_at_once(bcrun):
    argv, log = bcrun.client("--until", "5")
    proc = bcrun.start(*argv)
    wait_until(lambda: log.counts(), what="first count")
    instance = started_instance(bcrun, proc)
    sock = raw_connect(str(instance.socket))
    with contextlib.suppress(BrokenPipeError):
        sock.sendall(b"1-" + b"a" * 5000)
    assert closed_without_a_word(sock)
    send_command(instance, "1:5")
    assert proc.wait(10) == 0


def test_silent_and_slow_peers_are_cut_off_without_disturbing_clients(bcrun):
    proc, log, instance = started_client(bcrun, 1, "--until", "9", "--timeout", "60")
    path = str(instance.socket)
    silent = [raw_connect(path) for _ in range(40)]
    slow = raw_connect(path)
    start = time.monotonic()
    # Changes still reach the client at once while the peers hang on.
    for count in (2, 3):
        before = time.monotonic()
        send_command(instance, f"1:{count}")
        assert log.wait_for(count, after=before) - before < 0.1
    # One byte a second never completes a token: cut off like the silent.
    for _ in range(3):
        slow.sendall(b"1")
        time.sleep(1)
    for sock in [*silent, slow]:
        assert closed_without_a_word(sock)
    elapsed = time.monotonic() - start
    assert 4.5 < elapsed < 8, elapsed
    send_command(instance, "1:9")
    assert proc.wait(10) == 0


def test_too_many_pending_peers_cut_the_oldest(bcrun):
    proc, log, instance = started_client(bcrun, 1, "--until", "9", "--timeout", "60")
    path = str(instance.socket)
    peers = [raw_connect(path) for _ in range(300)]
    # The first 44 were cut to keep 256 pending; the newest still wait.
    peers[0].settimeout(3)
    assert closed_without_a_word(peers[0])
    peers[-1].setblocking(False)
    with pytest.raises(BlockingIOError):  # still open, waiting for its token
        peers[-1].recv(1)
    before = time.monotonic()
    send_command(instance, "1:9")
    assert log.wait_for(9, after=before) - before < 0.1
    assert proc.wait(10) == 0
    for sock in peers:
        sock.close()


def test_many_clients_all_get_every_change(bcrun):
    script = f"""
import os, socket, subprocess, sys
procs = [subprocess.Popen([sys.executable, {str(bcrun.tmp_path / "c.py")!r}, str(i)]) for i in range(20)]
sys.exit(max(p.wait() for p in procs))
"""
    client = f"""
import os, socket, sys
sys.path.insert(0, {str(os.getcwd())!r})
from bcrun.protocol import LineDecoder
s = socket.socket(socket.AF_UNIX); s.connect(os.environ["BUILDSOCKET"])
s.sendall(os.environ["BUILDTOKEN"].encode() + b"\\r\\n")
d = LineDecoder(); got = []
while "7" not in got:
    data = s.recv(100)
    if not data: break
    got += d.feed(data)
open({str(bcrun.tmp_path)!r} + "/got" + sys.argv[1], "w").write(" ".join(got))
"""
    (bcrun.tmp_path / "c.py").write_text(client)
    proc = bcrun.start("-j", "2", sys.executable, "-c", script)
    instance = started_instance(bcrun, proc)
    wait_until(lambda: len(instance_clients(instance)) == 20, what="20 clients")
    send_command(instance, "1:4")
    send_command(instance, "1:7")
    assert proc.wait(20) == 0
    for i in range(20):
        assert (bcrun.tmp_path / f"got{i}").read_text() == "2 4 7"


def instance_clients(instance) -> list[int]:
    import json

    status = json.loads(send_command(instance, "status")[0])
    return list(range(status["clients"]))


def test_control_connection_commands(bcrun):
    proc, _log, instance = started_client(bcrun, 2, "--until", "3")
    sock = raw_connect(str(instance.socket))
    sock.sendall(
        f"{instance.control_token}\r\nhelp\r\ndump\nbogus\r2:5\rnew\nquit\n".encode()
    )
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    lines = LineDecoder(1 << 20).feed(data)
    assert (
        "quit         close this control connection (on standard input: stop)" in lines
    )
    assert any(line.startswith("builder 1: jobs 2, 1 connection") for line in lines)
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == [
        "error: unknown command 'bogus' (try 'help')",
        "error: no builder 2: this bcrun runs builder 1",
        "error: 'new' needs bcrun serve; this bcrun runs one build",
    ]
    assert lines[-1] == "ok"  # quit answers ok, then closes
    send_command(instance, "1:3")
    assert proc.wait(10) == 0


def test_socket_is_not_inherited_by_the_build(bcrun):
    script = "import os; print(sorted(os.listdir('/proc/self/fd')))"
    result = bcrun.run(sys.executable, "-c", script)
    assert result.stdout.strip() == "['0', '1', '2', '3']"  # 3: listdir's own


def test_runtime_parent_that_is_a_symlink_is_refused(bcrun, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (bcrun.xdg / "bcrun").symlink_to(elsewhere)
    result = bcrun.run(
        sys.executable, "-c", "import os; print(os.environ['BUILDSOCKET'])"
    )
    assert result.returncode == 0
    assert "symbolic link" in result.stderr
    assert result.stdout.startswith(str(tmp_path / "tmp" / f"bcrun-{os.geteuid()}"))
    assert stat.S_IMODE(os.stat(elsewhere).st_mode) == 0o700
    assert list(elsewhere.iterdir()) == []
