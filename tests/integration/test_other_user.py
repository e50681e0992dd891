"""Another user of the machine can neither reach nor see your builds.

The test runs bcrun as root and plays the other user as ``nobody``
(uid 65534).  The runtime parent is made traversable by everyone, so that
only bcrun's own protections (a 0700 directory, a 0600 instance file, the
token) stand between that user and the build.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, Bcrun, wait_until

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to act as a second user (nobody)"
)

TOKEN = re.compile(r"[0-9]+-[0-9a-f]{32}")


@pytest.fixture
def other() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' to act as a second user")


@pytest.fixture(scope="module")
def other_python() -> Iterator[tuple[str, Path]]:
    """A Python the other user may run, and a directory it may import bcrun
    and its dependencies from (ours live under root's home)."""
    python = next(
        (p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if Path(p).exists()),
        None,
    )
    if python is None:
        pytest.skip("no system python3 the second user may run")
    import click
    import psutil

    with tempfile.TemporaryDirectory(prefix="bcrun-other-") as directory:
        path = Path(directory)
        path.chmod(0o755)
        for package in (Path(click.__file__).parent, Path(psutil.__file__).parent):
            shutil.copytree(package, path / package.name)
        shutil.copytree(ROOT / "bcrun", path / "bcrun")
        for item in path.rglob("*"):
            item.chmod(0o755 if item.is_dir() else 0o644)
        yield python, path


@pytest.fixture
def shared_runtime(bcrun: Bcrun) -> Iterator[Path]:
    """A runtime parent every user can traverse, as /run/user/UID is not."""
    with tempfile.TemporaryDirectory(prefix="bcrun-shared-") as directory:
        path = Path(directory)
        path.chmod(0o755)
        bcrun.env["XDG_RUNTIME_DIR"] = str(path)
        bcrun.xdg = path
        yield path


def as_other(
    user: pwd.struct_passwd,
    python: tuple[str, Path],
    args: list[str],
    env: dict[str, str],
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` (or a command, when ARGS starts with one) as *user*."""
    argv = args if args[0] in ("cat", "ls") else [python[0], *args]
    return subprocess.run(
        argv,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        env=env | {"HOME": "/nonexistent", "PYTHONPATH": str(python[1])},
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )


def test_another_user_cannot_connect_read_change_or_see_a_build(
    bcrun: Bcrun,
    shared_runtime: Path,
    other: pwd.struct_passwd,
    other_python: tuple[str, Path],
) -> None:
    argv, log = bcrun.client("--until", "7")
    build = bcrun.start(
        "-j", "3", *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    log.wait_for(3)
    wait_until(lambda: bcrun.instance_dirs(), what="the instance")
    (instance,) = bcrun.instance_dirs()
    sock = instance / "sock"
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({str(sock)!r})\n"
        "except OSError as e:\n"
        "    print('refused', e.errno); sys.exit(0)\n"
        "print('connected')\n"
    )
    connect = as_other(other, other_python, ["-c", probe], bcrun.env)
    assert connect.stdout.startswith("refused"), connect
    read = as_other(
        other, other_python, ["cat", str(instance / "instance.json")], bcrun.env
    )
    assert read.returncode != 0 and "Permission denied" in read.stderr
    listing = as_other(other, other_python, ["ls", str(instance.parent)], bcrun.env)
    assert listing.returncode != 0

    # Their own bcrun, pointed at the same runtime parent, refuses a parent
    # that is not theirs and finds nothing to control or show.
    env = dict(bcrun.env)
    env["TMPDIR"] = "/nonexistent"
    status = as_other(other, other_python, ["-m", "bcrun", "status", "--json"], env)
    assert status.returncode == 0, status.stderr
    assert status.stdout.strip() == "[]"
    change = as_other(
        other, other_python, ["-m", "bcrun", "jobs", "1", "--pid", str(build.pid)], env
    )
    assert change.returncode == 125
    assert change.stderr.count("\n") == 1 or "warning" in change.stderr
    assert log.counts() == [3], "the build was not changed"

    assert bcrun.run("jobs", "7").returncode == 0
    out, err = build.communicate(timeout=30)
    assert build.returncode == 0, err
    # Tokens never show: not in bcrun's output, not in status.
    for text in (out, err, status.stdout, status.stderr, change.stderr):
        assert not TOKEN.search(text)


def test_serve_over_tcp_is_loopback_and_drops_wrong_tokens(
    bcrun: Bcrun, other: pwd.struct_passwd, other_python: tuple[str, Path]
) -> None:
    server = bcrun.start(
        "serve", "-l", ":0", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert server.stdout is not None and server.stdin is not None
    line = server.stdout.readline()
    host, port = re.search(r"listening on (\S+):(\d+)", line).groups()  # type: ignore[union-attr]
    assert host in ("127.0.0.1", "[::1]", "localhost")
    probe = (
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {port}))\n"
        "s.sendall(b'1-' + b'0' * 32 + b'\\r\\n')\n"
        "s.settimeout(5)\n"
        "print(repr(s.recv(100)))\n"
    )
    guess = as_other(other, other_python, ["-c", probe], bcrun.env)
    assert guess.stdout.strip() == "b''", guess  # closed without a count
    server.stdin.write("quit\n")
    server.stdin.close()
    server.wait(timeout=10)
    assert not TOKEN.search(server.stderr.read() if server.stderr else "")
