"""The X11 idle source against a real X server (Xvfb), started on a display
number of its own choosing; skipped where Xvfb or libXss is missing."""

from __future__ import annotations

import ctypes
import os
import select
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bcrun.presence import IdleSources, load_x11

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def xvfb() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A fresh Xvfb: its display name and process."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    if load_x11() is None:
        pytest.skip("libX11.so.6 or libXss.so.1 is missing (apt-get install libxss1)")
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), "-nolisten", "tcp", "-noreset"],
        pass_fds=[write_end],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 20)
        number = os.read(read_end, 32).decode().strip() if ready else ""
        if not number.isdigit():
            pytest.fail(f"Xvfb did not report its display (exit {server.poll()})")
        yield f":{number}", server
    finally:
        os.close(read_end)
        server.terminate()
        server.wait(10)


def reset_idle(display: str) -> None:
    """What the server counts as input: XResetScreenSaver, from a client of
    its own."""
    x11 = ctypes.CDLL("libX11.so.6")
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XResetScreenSaver.argtypes = [ctypes.c_void_p]
    x11.XSync.argtypes = [ctypes.c_void_p, ctypes.c_int]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    connection = x11.XOpenDisplay(display.encode())
    assert connection
    x11.XResetScreenSaver(connection)
    x11.XSync(connection, 0)
    x11.XCloseDisplay(connection)


def test_x11_idle_time_follows_the_server(xvfb):
    display, _ = xvfb
    sources = IdleSources([], loginctl=None, display=display)
    assert sources.sources == ["x11"]
    first = sources.idle_seconds(time.time())
    assert first is not None and first < 30
    time.sleep(1.2)
    later = sources.idle_seconds(time.time())
    assert later is not None and later >= first + 1
    reset_idle(display)
    reset = sources.idle_seconds(time.time())
    assert reset is not None and reset < 0.5
    sources.close()
    assert sources.sources == []
    assert sources.idle_seconds(time.time()) is None


def test_display_comes_from_the_environment(xvfb, monkeypatch):
    display, _ = xvfb
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", display)
    with_x = IdleSources([], loginctl=None)
    assert with_x.sources == ["x11"]
    with_x.close()
    # Xwayland sees only its own clients' input: not a source.
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert IdleSources([], loginctl=None).sources == []
    monkeypatch.delenv("WAYLAND_DISPLAY")
    # A display forwarded by ssh is someone else's machine.
    monkeypatch.setenv("DISPLAY", "localhost" + display)
    assert IdleSources([], loginctl=None).sources == []


def test_a_lost_display_is_dropped_not_fatal(xvfb):
    """Xlib exits a process whose display goes away unless told otherwise:
    run the reading in a child and check that it lives on, quietly."""
    display, server = xvfb
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import os, signal, time
                from bcrun.presence import IdleSources
                sources = IdleSources([], loginctl=None, display={display!r})
                print(sources.sources, sources.idle_seconds(time.time()) is not None)
                os.kill({server.pid}, signal.SIGKILL)
                time.sleep(0.5)
                print(sources.idle_seconds(time.time()), sources.sources)
                sources.close()
                print("alive")
                """
            ),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (child.returncode, child.stderr) == (0, "")
    assert child.stdout.splitlines() == ["['x11'] True", "None []", "alive"]


def test_x11_and_an_active_logind_session(xvfb, tmp_path):
    """A graphical session that logind calls active, without a since: the
    X11 reading, which measures it, wins over "idle 0"."""
    display, _ = xvfb
    script = tmp_path / "loginctl"
    script.write_text(
        textwrap.dedent(
            """\
            #!/bin/sh
            case "$1" in
            list-sessions) echo "2 1000 alice seat0 tty2" ;;
            show-session) printf '%s\\n' Id=2 Type=x11 Remote=no State=active \\
                IdleHint=no IdleSinceHint=1700000000000000 ;;
            esac
            """
        )
    )
    script.chmod(0o755)
    sources = IdleSources([], loginctl=str(script), display=display)
    time.sleep(1.2)
    idle = sources.idle_seconds(time.time())
    assert idle is not None and idle >= 1
    assert sources.sources == ["x11"]
    sources.close()
    without_x = IdleSources([], loginctl=str(script), display=None)
    assert without_x.idle_seconds(time.time()) == 0.0
    assert without_x.sources == ["logind"]
