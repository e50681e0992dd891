"""The idle-time sources of the presence policy: real terminals, real (or
missing) loginctl, and recorded loginctl output for what this machine
cannot show."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bcrun.presence import (
    REFRESH_S,
    IdleSources,
    LogindReading,
    local_display,
    parse_properties,
    session_ids,
    session_reading,
    terminal_path,
    utmp_terminals,
)

# ``loginctl show-session 2 c1 3 -p Id -p Type -p Remote -p State -p IdleHint
# -p IdleSinceHint`` (systemd 252): a Wayland session active since 09:00, a
# greeter that never set a hint, an ssh login.
SHOWN = """\
Id=2
Type=wayland
Remote=no
State=active
IdleHint=no
IdleSinceHint=1700038800000000

Id=c1
Type=x11
Remote=no
State=online
IdleHint=no
IdleSinceHint=0

Id=3
Type=tty
Remote=yes
State=active
IdleHint=no
IdleSinceHint=1700040000000000
"""

LISTED = """\
     2 1000 alice seat0 tty2
    c1  120 gdm   seat0 tty1
     3 1000 alice
"""


def only_terminals(*paths: str) -> IdleSources:
    return IdleSources(list(paths), loginctl=None, display=None)


@pytest.fixture
def pty() -> Iterator[tuple[int, int, str]]:
    """A real pseudo-terminal: master fd, slave fd, slave device path, its
    times set 100 s back (the kernel moves a tty's atime only in 8 s steps,
    so a fresh pty would not show a new read)."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    past = time.time() - 100
    os.utime(path, (past, past))
    yield master, slave, path
    for fd in (master, slave):
        with contextlib.suppress(OSError):
            os.close(fd)


def test_a_terminal_idles_until_its_input_is_read(pty):
    master, slave, path = pty
    sources = only_terminals(path)
    assert sources.sources == ["tty"]
    assert sources.idle_seconds(time.time()) == pytest.approx(100, abs=2)
    # Typing reaches the master; it is input only once read on the slave.
    os.write(master, b"make\n")
    assert sources.idle_seconds(time.time()) == pytest.approx(100, abs=2)
    assert os.read(slave, 100) == b"make\n"
    assert sources.idle_seconds(time.time()) < 2
    assert sources.sources == ["tty"]


def test_output_to_a_terminal_is_not_input(pty):
    master, slave, path = pty
    sources = only_terminals(path)
    os.write(slave, b"[12/345] CXX foo.o\r\n")
    assert os.read(master, 100)
    assert sources.idle_seconds(time.time()) == pytest.approx(100, abs=2)
    assert os.stat(path).st_mtime > time.time() - 2


def test_idle_time_grows_with_the_clock(pty):
    _, _, path = pty
    sources = only_terminals(path)
    now = time.time()
    first = sources.idle_seconds(now)
    later = sources.idle_seconds(now + 30)
    assert first is not None and later is not None
    assert later - first == pytest.approx(30)
    # A clock that went back gives 0, never a negative idle time.
    assert sources.idle_seconds(now - 1000) == 0.0


def test_the_most_recent_terminal_wins(pty):
    master, slave = os.openpty()
    try:
        other = os.ttyname(slave)
        past = time.time() - 40
        os.utime(other, (past, past))
        sources = only_terminals(pty[2], other)
        assert sources.idle_seconds(time.time()) == pytest.approx(40, abs=2)
    finally:
        os.close(master)
        os.close(slave)


def test_a_terminal_that_goes_away_is_dropped(pty):
    master, slave, path = pty
    sources = only_terminals(path, "/nonexistent/pts/9")
    assert sources.sources == ["tty"]
    assert sources.idle_seconds(time.time()) == pytest.approx(100, abs=2)
    os.close(master)
    os.close(slave)
    assert not os.path.exists(path)
    assert sources.idle_seconds(time.time()) is None
    assert sources.sources == []


def test_no_source_gives_none():
    sources = IdleSources([], loginctl=None, display=None)
    assert sources.sources == []
    assert sources.idle_seconds(time.time()) is None
    assert sources.sources == []
    sources.close()
    assert sources.idle_seconds(time.time()) is None


def test_closed_on_leaving_a_with_block(pty):
    with only_terminals(pty[2]) as sources:
        assert sources.sources == ["tty"]
    assert sources.sources == []
    assert sources.idle_seconds(time.time()) is None


@pytest.mark.parametrize("loginctl", ["/nonexistent/loginctl", "false"])
def test_a_missing_or_failing_loginctl_is_dropped_silently(loginctl):
    sources = IdleSources([], loginctl=loginctl, display=None)
    assert sources.sources == []
    assert sources.idle_seconds(time.time()) is None


def loginctl_works() -> bool:
    if shutil.which("loginctl") is None:
        return False
    done = subprocess.run(
        ["loginctl", "list-sessions", "--no-legend", "--no-pager"],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def test_this_machines_sources_never_raise(pty):
    sources = IdleSources()
    idle = sources.idle_seconds(time.time())
    assert set(sources.sources) <= {"tty", "logind", "x11"}
    assert (idle is None) == (sources.sources == [])
    if not loginctl_works():
        assert "logind" not in sources.sources
    if not os.environ.get("DISPLAY"):
        assert "x11" not in sources.sources
    if not utmp_terminals():
        assert "tty" not in sources.sources
    sources.close()
    assert sources.sources == []


def test_utmp_terminals_are_character_devices():
    for path in utmp_terminals(include_remote=True):
        assert path.startswith("/dev/")
        assert os.path.exists(path)


def test_terminal_paths():
    assert terminal_path("pts/3") == "/dev/pts/3"
    assert terminal_path("tty2") == "/dev/tty2"
    assert terminal_path("/dev/tty1") == "/dev/tty1"
    assert terminal_path(":0") is None
    assert terminal_path("../etc/passwd") is None


def test_only_local_x_displays_are_read():
    assert local_display({"DISPLAY": ":0"}) == ":0"
    assert local_display({"DISPLAY": ":1.0"}) == ":1.0"
    assert local_display({"DISPLAY": "unix:0"}) == "unix:0"
    assert local_display({"DISPLAY": "localhost:10.0"}) is None
    assert local_display({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"}) is None
    assert local_display({}) is None


def test_loginctl_output_is_parsed():
    assert session_ids(LISTED) == ["2", "c1", "3"]
    assert session_ids("") == []
    blocks = parse_properties(SHOWN)
    assert [b["Id"] for b in blocks] == ["2", "c1", "3"]
    assert blocks[0]["IdleSinceHint"] == "1700038800000000"


@pytest.mark.parametrize(
    ("props", "reading"),
    [
        # A tty session's IdleSinceHint is its tty's atime, idle or not.
        ({"Type": "tty", "IdleHint": "no"}, LogindReading(1700000000.0, False)),
        ({"Type": "tty", "IdleHint": "yes"}, LogindReading(1700000000.0, False)),
        # A graphical session idle since then; one active, since unknown.
        ({"Type": "x11", "IdleHint": "yes"}, LogindReading(1700000000.0, False)),
        ({"Type": "wayland", "IdleHint": "no"}, LogindReading(None, True)),
        # Remote, closing, never hinted, other kinds: no say.
        ({"Type": "tty", "Remote": "yes"}, LogindReading(None, False)),
        ({"Type": "x11", "State": "closing"}, LogindReading(None, False)),
        ({"Type": "x11", "IdleSinceHint": "0"}, LogindReading(None, False)),
        ({"Type": "unspecified"}, LogindReading(None, False)),
        ({"Type": "tty", "IdleSinceHint": "n/a"}, LogindReading(None, False)),
    ],
)
def test_what_a_logind_session_tells(props, reading):
    full = {"Remote": "no", "State": "active", "IdleSinceHint": "1700000000000000"}
    assert session_reading(full | props) == reading


def stand_in_loginctl(tmp_path: Path, shown: str, listed: str = LISTED) -> Path:
    """An executable answering like loginctl with recorded output, logging
    its calls; it fails once ``fail`` exists next to it."""
    (tmp_path / "listed").write_text(listed)
    (tmp_path / "shown").write_text(shown)
    script = tmp_path / "loginctl"
    script.write_text(
        f"""#!/bin/sh
echo "$*" >> {tmp_path}/calls
[ -e {tmp_path}/fail ] && exit 1
case "$1" in
list-sessions) cat {tmp_path}/listed ;;
show-session) cat {tmp_path}/shown ;;
*) exit 1 ;;
esac
"""
    )
    script.chmod(0o755)
    return script


def calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "calls").read_text().splitlines()


def test_logind_is_asked_at_most_every_refresh_period(tmp_path):
    tty_since = time.time() - 100
    shown = SHOWN.replace("Remote=yes", "Remote=no").replace(
        "1700040000000000", str(int(tty_since * 1e6))
    )
    sources = IdleSources([], loginctl=str(stand_in_loginctl(tmp_path, shown)))
    assert sources.sources == ["logind"]
    assert calls(tmp_path) == [
        "list-sessions --no-legend --no-pager",
        "show-session 2 c1 3 -p Id -p Type -p Remote -p State -p IdleHint"
        " -p IdleSinceHint --no-pager",
    ]
    # The tty session's atime is 100 s old, but the Wayland session is active.
    now = time.time()
    assert sources.idle_seconds(now) == 0.0
    ticks = int(REFRESH_S / 0.5)
    for tick in range(1, 3 * ticks + 1):
        sources.idle_seconds(now + tick * 0.5)
    # One query at construction, then one per REFRESH_S of (simulated) time.
    assert len(calls(tmp_path)) == 2 * 4


def test_a_local_tty_session_gives_its_atime(tmp_path):
    tty_since = time.time() - 100
    shown = (
        SHOWN.replace("Remote=yes", "Remote=no")
        .replace("1700040000000000", str(int(tty_since * 1e6)))
        .replace("Type=wayland", "Type=web")
    )
    sources = IdleSources([], loginctl=str(stand_in_loginctl(tmp_path, shown)))
    now = time.time()
    assert sources.idle_seconds(now) == pytest.approx(now - tty_since)
    assert sources.idle_seconds(now + 2) == pytest.approx(now + 2 - tty_since)
    assert sources.sources == ["logind"]


def test_an_active_graphical_session_means_idle_zero(tmp_path):
    sources = IdleSources([], loginctl=str(stand_in_loginctl(tmp_path, SHOWN)))
    # The tty session is remote and the greeter never hinted: only the
    # Wayland session speaks, and it says "active".
    assert sources.idle_seconds(time.time()) == 0.0
    assert sources.sources == ["logind"]


def test_logind_failing_later_is_dropped_for_good(tmp_path):
    sources = IdleSources([], loginctl=str(stand_in_loginctl(tmp_path, SHOWN)))
    now = time.time()
    assert sources.idle_seconds(now) == 0.0
    (tmp_path / "fail").touch()
    assert sources.idle_seconds(now + REFRESH_S) is None
    assert sources.sources == []
    asked = len(calls(tmp_path))
    (tmp_path / "fail").unlink()
    assert sources.idle_seconds(now + 3 * REFRESH_S) is None
    assert len(calls(tmp_path)) == asked


def test_no_sessions_is_no_answer_but_keeps_asking(tmp_path):
    script = stand_in_loginctl(tmp_path, "", listed="")
    sources = IdleSources([], loginctl=str(script))
    now = time.time()
    assert sources.idle_seconds(now) is None
    assert sources.sources == []
    (tmp_path / "listed").write_text(LISTED)
    (tmp_path / "shown").write_text(SHOWN)
    assert sources.idle_seconds(now + REFRESH_S) == 0.0
    assert sources.sources == ["logind"]


def test_a_reading_is_cheap(pty):
    _, _, path = pty
    sources = IdleSources([path], loginctl=None, display=None)
    calls_n = 2000
    start = time.process_time()
    now = time.time()
    for tick in range(calls_n):
        sources.idle_seconds(now + tick * 0.5)
    per_call = (time.process_time() - start) / calls_n
    assert per_call < 200e-6, f"{per_call * 1e6:.0f} us per call"
