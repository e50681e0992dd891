"""A hostile environment: the runtime directory missing, unwritable, on a
full disk, too deep for a unix socket; too few file descriptors; bcrun
inside a build that a bcrun already controls.

Each either works (in the next parent, with a warning) or fails with one
line on standard error and status 125; never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Bcrun

#: Prints where the build was told to connect.
SHOW_SOCKET = ["sh", "-c", 'echo "$BUILDSOCKET"']


def _lines(stderr: str) -> list[str]:
    """bcrun's standard error without the notice that the command (sh,
    python) is no build tool bcrun knows."""
    return [line for line in stderr.splitlines() if "neither a patched" not in line]


def _check(result: subprocess.CompletedProcess[str]) -> None:
    """Worked, or failed with a one-line error and status 125."""
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode != 0:
        assert result.returncode == 125, (result.returncode, result.stderr)
        lines = _lines(result.stderr)
        assert len(lines) == 1 and lines[0].startswith("bcrun: "), result.stderr


def _fallback(bcrun: Bcrun) -> Path:
    return bcrun.tmp_path / "tmp" / f"bcrun-{os.geteuid()}"


def test_runtime_directory_missing(bcrun: Bcrun) -> None:
    env = dict(bcrun.env, XDG_RUNTIME_DIR=str(bcrun.tmp_path / "nowhere"))
    result = bcrun.run(*SHOW_SOCKET, env=env)
    _check(result)
    assert result.returncode == 0
    # Not a warning: a missing XDG_RUNTIME_DIR is not a candidate at all.
    assert _lines(result.stderr) == []
    assert result.stdout.startswith(str(_fallback(bcrun)) + "/")
    assert not (bcrun.tmp_path / "nowhere").exists()
    assert list(_fallback(bcrun).iterdir()) == []


def _uses_the_next_parent(bcrun: Bcrun, env: dict[str, str]) -> None:
    result = bcrun.run(*SHOW_SOCKET, env=env)
    _check(result)
    assert result.returncode == 0
    assert result.stdout.startswith(str(_fallback(bcrun)) + "/")
    # One warning naming the parent passed over.
    (warning,) = _lines(result.stderr)
    assert warning.startswith("bcrun: warning: " + env["XDG_RUNTIME_DIR"]), warning
    assert list(_fallback(bcrun).iterdir()) == []


def test_runtime_directory_mode_0500(bcrun: Bcrun) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into a 0500 directory: see the read-only mount test")
    locked = bcrun.tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        _uses_the_next_parent(bcrun, dict(bcrun.env, XDG_RUNTIME_DIR=str(locked)))
    finally:
        locked.chmod(0o700)


@contextlib.contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "bcrun-test", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_runtime_directory_read_only(bcrun: Bcrun) -> None:
    """What a 0500 directory is to a user, a read-only mount is to root."""
    with tmpfs(bcrun.tmp_path / "ro", "ro,size=64k,mode=0700") as ro:
        _uses_the_next_parent(bcrun, dict(bcrun.env, XDG_RUNTIME_DIR=str(ro)))


def _fill(directory: Path) -> None:
    with contextlib.suppress(OSError), open(directory / "filler", "wb") as f:
        while True:
            f.write(b"x" * 4096)
            f.flush()


@pytest.mark.parametrize("made", [False, True], ids=["parent-new", "parent-exists"])
def test_runtime_directory_on_a_full_disk(bcrun: Bcrun, made: bool) -> None:
    with tmpfs(bcrun.tmp_path / "full", "size=64k,mode=0700") as full:
        if made:
            (full / "bcrun").mkdir(mode=0o700)
        _fill(full)
        env = dict(bcrun.env, XDG_RUNTIME_DIR=str(full))
        result = bcrun.run(*SHOW_SOCKET, env=env)
        _check(result)
        # Nothing half made is left on the full disk.
        assert [p.name for p in (full / "bcrun").iterdir()] == []
        # The next parent, with a warning that says why.
        assert result.returncode == 0
        assert result.stdout.startswith(str(_fallback(bcrun)) + "/")
        (warning,) = _lines(result.stderr)
        assert warning.startswith(f"bcrun: warning: {full}/bcrun")
        assert warning.endswith("No space left on device"), warning


def test_runtime_directory_with_no_inode_left(bcrun: Bcrun) -> None:
    with tmpfs(bcrun.tmp_path / "full", "size=1m,nr_inodes=2,mode=0700") as full:
        env = dict(bcrun.env, XDG_RUNTIME_DIR=str(full))
        result = bcrun.run(*SHOW_SOCKET, env=env)
        _check(result)
        assert result.returncode == 0
        assert result.stdout.startswith(str(_fallback(bcrun)) + "/")
        (warning,) = _lines(result.stderr)
        assert warning.endswith("No space left on device"), warning


def test_paths_too_long_for_a_unix_socket(bcrun: Bcrun) -> None:
    deep = bcrun.tmp_path
    for _ in range(8):
        deep = deep / ("d" * 20)
    xdg, tmp = deep / "xdg", deep / "tmp"
    xdg.mkdir(parents=True, mode=0o700)
    tmp.mkdir()
    env = dict(bcrun.env, XDG_RUNTIME_DIR=str(xdg), TMPDIR=str(tmp))
    last = Path("/tmp") / f"bcrun-{os.geteuid()}"
    result = bcrun.run(*SHOW_SOCKET, env=env)
    _check(result)
    if result.returncode == 0:
        # The last resort, /tmp/bcrun-UID, with a warning for each deep one.
        assert result.stdout.startswith(f"{last}/"), result.stdout
        warnings = _lines(result.stderr)
        assert len(warnings) == 2, warnings
        assert all("too long a path for a unix socket" in w for w in warnings)
    else:
        assert "no usable runtime directory" in result.stderr


@pytest.mark.parametrize("limit", [5, 6, 7, 8, 9, 10, 12, 16, 32])
def test_too_few_file_descriptors(bcrun: Bcrun, limit: int, tmp_path: Path) -> None:
    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    build = [
        sys.executable,
        "-c",
        "import os, sys; sys.exit(0 if os.environ.get('BUILDSOCKET') else 3)",
    ]
    result = bcrun.run(*build, preexec_fn=low)
    _check(result)
    if result.returncode != 0:
        assert "Too many open files" in result.stderr, result.stderr
    assert bcrun.leftovers() == []


# -- nested ------------------------------------------------------------------


def _bcrun_cmd(bcrun: Bcrun) -> str:
    return " ".join([sys.executable, "-m", "bcrun"])


def _nested_project(bcrun: Bcrun, project: Path, make: str) -> Path:
    """A top Makefile with two jobs of its own and a sub-build run as
    ``bcrun make -C sub`` (a '+' line, as recursive makes are written)."""
    from tests.tools.jobs import make_project

    log = make_project(project / "sub", jobs=4, seconds=0.4)
    # The top level's jobs log into the same file.
    job = project / "sub" / "job.sh"
    (project / "Makefile").write_text(
        "all: inner top0 top1\n"
        f"inner:\n\t+@{_bcrun_cmd(bcrun)} --verbose {make} -C sub"
        " 2>inner.err; echo $$? > inner.status\n"
        f"top0:\n\t@sh {job} top0 0.4\n"
        f"top1:\n\t@sh {job} top1 0.4\n"
        ".PHONY: all inner top0 top1\n"
    )
    return log.path


@pytest.mark.parametrize("outer", ["stock-make", "patched-gmake"])
def test_bcrun_inside_a_build_bcrun_controls(
    bcrun: Bcrun, tmp_path: Path, outer: str
) -> None:
    from tests.tools.conftest import get_tool
    from tests.tools.jobs import JobLog

    if outer == "stock-make":
        found = shutil.which("make")
        if found is None:
            pytest.skip("no system make")
        make = found
    else:
        make = str(get_tool("gmake", patched=True).program)
    project = tmp_path / "p"
    log = JobLog(_nested_project(bcrun, project, make))
    outer_count = "2" if outer == "stock-make" else "1"
    env = dict(bcrun.env, JOBLOG=str(log.path))
    result = bcrun.run("-j", outer_count, make, "-C", str(project), env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    inner_err = (project / "inner.err").read_text()
    assert "Traceback" not in inner_err
    assert (project / "inner.status").read_text().strip() == "0", inner_err
    assert log.finished() == 6
    if outer == "stock-make":
        # The inner bcrun leaves the enclosing jobserver alone: its make obeys
        # the outer count, 2 in all.
        assert "enclosing make" in inner_err, inner_err
        # ... and keeps its pipe open for the inner make, which would run
        # one job at a time without it.
        assert "jobserver unavailable" not in inner_err, inner_err
        assert log.max_running() <= 2
    else:
        # The inner bcrun controls its own build (the patched make reads the
        # BUILDSOCKET the inner bcrun sets): its count is its own.
        assert "enclosing" not in inner_err, inner_err
        # ... yet the inner make still takes tokens from the outer make's own
        # jobserver (its MAKEFLAGS): the outer count, 1, bounds it too.
        assert log.max_running() == 1
    assert bcrun.leftovers() == []
    print(outer, "inner stderr:", inner_err, "max running:", log.max_running())
