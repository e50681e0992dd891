"""How long since someone last gave input at this machine.

The ``presence`` policy backs off while a user is active here.  This module
gives it one reading, :meth:`IdleSources.idle_seconds`: the seconds since the
latest input any source saw, or None when no source can tell.  Sources:

``tty``
    Local terminals, from utmp (:func:`psutil.users`) or a given list.  A
    read of input from a terminal sets its device's atime (output sets only
    the mtime); Linux moves that atime only when it leaves its 8-second
    bucket (``tty_update_time``), so this idle time lags by up to 8 s.
``logind``
    systemd-logind's idle hints of local sessions, through ``loginctl``.
    Spawning it costs a few milliseconds, so it runs at most every
    :data:`REFRESH_S` and its answer is kept in between.
``x11``
    The MIT-SCREEN-SAVER idle time of the local X display in ``$DISPLAY``,
    through libX11 and libXss with ctypes.

A source that is missing (a container without utmp entries, logind or X)
or breaks is dropped for good without a word: nothing here raises on
missing data.
"""

from __future__ import annotations

import ctypes
import os
import re
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psutil

#: utmp and loginctl are read again at most this often, in seconds.
REFRESH_S = 5.0
#: A loginctl that has not answered by then is given up.
LOGINCTL_TIMEOUT_S = 2.0

GRAPHICAL_TYPES = frozenset({"x11", "wayland", "mir"})
SESSION_ID = re.compile(r"[A-Za-z0-9_-]+")
LOGIND_PROPERTIES = ("Id", "Type", "Remote", "State", "IdleHint", "IdleSinceHint")


# Terminals ------------------------------------------------------------------


def terminal_path(name: str) -> str | None:
    """The device of a utmp terminal name (``pts/3`` -> ``/dev/pts/3``), or
    None for a name that is not under /dev (an X display such as ``:0``)."""
    path = os.path.normpath(os.path.join("/dev", name))
    return path if path.startswith("/dev/") and ":" not in name else None


def is_local_host(host: str) -> bool:
    """Whether a utmp host field means a login at this machine: none (a
    console) or an X display (``:0``, a terminal emulator's entry)."""
    return host == "" or host.startswith(":")


def terminal_atime(path: str) -> float | None:
    """The atime of a terminal device, None if it is not a character device
    or cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_atime if stat.S_ISCHR(st.st_mode) else None


def utmp_terminals(include_remote: bool = False) -> list[str]:
    """The devices of the terminals of the logged-in users (local ones only,
    unless include_remote), in utmp order, without duplicates."""
    try:
        users = psutil.users()
    except (OSError, psutil.Error):
        return []
    paths: list[str] = []
    for user in users:
        if not user.terminal:
            continue
        if not include_remote and not is_local_host(user.host or ""):
            continue
        path = terminal_path(user.terminal)
        if path and path not in paths and terminal_atime(path) is not None:
            paths.append(path)
    return paths


# logind ---------------------------------------------------------------------


@dataclass(frozen=True)
class LogindReading:
    """What logind says of the local sessions, kept between queries."""

    #: Epoch seconds of the latest known activity: a tty session's atime,
    #: or when a graphical session went idle.  None: no session tells.
    active_at: float | None
    #: A graphical session reports its user active (IdleHint=no) but not
    #: since when: idle time 0, unless the X11 source measures it.
    graphical_active: bool


def run_loginctl(loginctl: str, args: Sequence[str]) -> tuple[int, str] | None:
    """loginctl's exit status and output, None if it cannot run."""
    try:
        done = subprocess.run(
            [loginctl, *args, "--no-pager"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=LOGINCTL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return None
    return done.returncode, done.stdout


def session_ids(listing: str) -> list[str]:
    """The session ids in ``loginctl list-sessions --no-legend`` output."""
    ids: list[str] = []
    for line in listing.splitlines():
        fields = line.split()
        if fields and SESSION_ID.fullmatch(fields[0]):
            ids.append(fields[0])
    return ids


def parse_properties(text: str) -> list[dict[str, str]]:
    """The ``Key=value`` blocks of ``loginctl show-session``, one per
    session (blank lines part them)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            current[key.strip()] = value.strip()
        elif not line.strip() and current:
            blocks.append(current)
            current = {}
    if current:
        blocks.append(current)
    return blocks


def session_reading(props: dict[str, str]) -> LogindReading:
    """What one session's properties tell of its user's activity.

    Only local (Remote=no), open tty and graphical sessions count.  For a tty
    session IdleSinceHint is the tty's atime; for a graphical one it is when
    IdleHint last changed, 0 if the desktop never set it (it cannot tell)."""
    kind = props.get("Type", "")
    if props.get("Remote") != "no" or props.get("State") == "closing":
        return LogindReading(None, False)
    if kind != "tty" and kind not in GRAPHICAL_TYPES:
        return LogindReading(None, False)
    try:
        since_us = int(props.get("IdleSinceHint", "0"))
    except ValueError:
        return LogindReading(None, False)
    if since_us <= 0:
        return LogindReading(None, False)
    if kind == "tty" or props.get("IdleHint") == "yes":
        return LogindReading(since_us / 1e6, False)
    return LogindReading(None, True)


def merge_readings(readings: Sequence[LogindReading]) -> LogindReading:
    """The latest activity and any graphical activity of many sessions."""
    times = [r.active_at for r in readings if r.active_at is not None]
    return LogindReading(
        max(times) if times else None, any(r.graphical_active for r in readings)
    )


def logind_idle(reading: LogindReading, now: float, measured: bool) -> float | None:
    """The idle time a logind reading gives at ``now``; an active graphical
    session counts as 0 unless its display's idle time is ``measured``."""
    idle = [] if reading.active_at is None else [max(0.0, now - reading.active_at)]
    if reading.graphical_active and not measured:
        idle.append(0.0)
    return min(idle) if idle else None


def query_logind(loginctl: str) -> LogindReading | None:
    """The local sessions' activity now, None if loginctl is missing or
    fails (no systemd, no bus): the caller then drops this source."""
    listed = run_loginctl(loginctl, ["list-sessions", "--no-legend"])
    if listed is None or listed[0] != 0:
        return None
    ids = session_ids(listed[1])
    if not ids:
        return LogindReading(None, False)
    args = ["show-session", *ids]
    for name in LOGIND_PROPERTIES:
        args += ["-p", name]
    shown = run_loginctl(loginctl, args)
    if shown is None:
        return None
    # A session that ended since the listing fails alone: keep the others.
    blocks = parse_properties(shown[1])
    if shown[0] != 0 and not blocks:
        return None
    return merge_readings([session_reading(b) for b in blocks])


# X11 ------------------------------------------------------------------------


class XScreenSaverInfo(ctypes.Structure):
    _fields_ = (
        ("window", ctypes.c_ulong),
        ("state", ctypes.c_int),
        ("kind", ctypes.c_int),
        ("til_or_since", ctypes.c_ulong),
        ("idle", ctypes.c_ulong),
        ("eventMask", ctypes.c_ulong),
    )


def _quiet_io_error(display: int | None) -> int:
    return 0


def _quiet_io_exit(display: int | None, data: int | None) -> None:
    return None


def _quiet_error(display: int | None, event: int | None) -> int:
    return 0


# Xlib exits the process on a lost connection unless both the global I/O
# error handler and the display's exit handler (libX11 1.7+) return; and on a
# protocol error unless the error handler does.  They live as long as the
# process, since Xlib may call them at any time after they are set.
IO_ERROR_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(_quiet_io_error)
IO_EXIT_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(
    _quiet_io_exit
)
ERROR_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(
    _quiet_error
)


def local_display(environ: Mapping[str, str]) -> str | None:
    """The X display to read, from the environment: only a display of this
    machine (``:0``, ``unix:0``; not ``localhost:10`` forwarded by ssh), and
    none in a Wayland session, where Xwayland sees only its own clients'
    input."""
    display = environ.get("DISPLAY", "")
    if not display or environ.get("WAYLAND_DISPLAY"):
        return None
    host = display.rpartition(":")[0]
    return display if host in ("", "unix") else None


def load_x11() -> tuple[ctypes.CDLL, ctypes.CDLL] | None:
    """libX11 and libXss with the prototypes used here, None if either is
    missing or too old to survive a lost display (XSetIOErrorExitHandler)."""
    try:
        x11 = ctypes.CDLL("libX11.so.6")
        xss = ctypes.CDLL("libXss.so.1")
        x11.XSetIOErrorExitHandler.restype = None
    except (OSError, AttributeError):
        return None
    void_p = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XOpenDisplay.restype = void_p
    x11.XCloseDisplay.argtypes = [void_p]
    x11.XDefaultRootWindow.argtypes = [void_p]
    x11.XDefaultRootWindow.restype = ctypes.c_ulong
    x11.XFree.argtypes = [void_p]
    x11.XSetIOErrorHandler.argtypes = [void_p]
    x11.XSetIOErrorHandler.restype = void_p
    x11.XSetIOErrorExitHandler.argtypes = [void_p, void_p, void_p]
    x11.XSetErrorHandler.argtypes = [void_p]
    x11.XSetErrorHandler.restype = void_p
    int_p = ctypes.POINTER(ctypes.c_int)
    xss.XScreenSaverQueryExtension.argtypes = [void_p, int_p, int_p]
    xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(XScreenSaverInfo)
    xss.XScreenSaverQueryInfo.argtypes = [
        void_p,
        ctypes.c_ulong,
        ctypes.POINTER(XScreenSaverInfo),
    ]
    return x11, xss


class X11Idle:
    """One connection to an X display with the screen-saver extension."""

    def __init__(self, x11: ctypes.CDLL, xss: ctypes.CDLL, display: int) -> None:
        self._x11 = x11
        self._xss = xss
        self._display: int | None = display
        self._root = x11.XDefaultRootWindow(display)
        self._info = xss.XScreenSaverAllocInfo()

    @classmethod
    def open(cls, name: str) -> X11Idle | None:
        """Connect to display ``name``, None if the libraries, the display or
        its MIT-SCREEN-SAVER extension are missing."""
        libs = load_x11()
        if libs is None:
            return None
        x11, xss = libs
        x11.XSetIOErrorHandler(IO_ERROR_HANDLER)
        x11.XSetErrorHandler(ERROR_HANDLER)
        display = x11.XOpenDisplay(name.encode())
        if not display:
            return None
        x11.XSetIOErrorExitHandler(display, IO_EXIT_HANDLER, None)
        event_base, error_base = ctypes.c_int(), ctypes.c_int()
        if not xss.XScreenSaverQueryExtension(
            display, ctypes.byref(event_base), ctypes.byref(error_base)
        ):
            x11.XCloseDisplay(display)
            return None
        source = cls(x11, xss, display)
        if not source._info:
            source.close()
            return None
        return source

    def idle_seconds(self) -> float | None:
        """The display's idle time, None (and closed) once it is lost."""
        if self._display is None:
            return None
        if not self._xss.XScreenSaverQueryInfo(self._display, self._root, self._info):
            self.close()
            return None
        return float(self._info.contents.idle) / 1000.0

    def close(self) -> None:
        if self._display is None:
            return
        if self._info:
            self._x11.XFree(self._info)
        self._x11.XCloseDisplay(self._display)
        self._display = None


# All of them ----------------------------------------------------------------


class IdleSources:
    """The idle-time sources of this machine, set up once per build.

    terminals: the terminal devices to watch; None (the default) finds the
    local users' terminals in utmp every :data:`REFRESH_S` (with
    include_remote, ssh logins' too).  loginctl: the command to ask
    systemd-logind with, None for no logind source.  display: the X display
    to read; "" (the default) takes ``$DISPLAY`` if it is local, None for no
    X11 source.
    """

    def __init__(
        self,
        terminals: Sequence[str] | None = None,
        *,
        include_remote: bool = False,
        loginctl: str | None = "loginctl",
        display: str | None = "",
    ) -> None:
        self._fixed_terminals = None if terminals is None else list(terminals)
        self._include_remote = include_remote
        self._terminals: list[str] = []
        self._terminals_at = float("-inf")
        self._loginctl = loginctl
        self._logind = LogindReading(None, False)
        self._logind_at = float("-inf")
        if display == "":
            display = local_display(os.environ)
        self._x11 = X11Idle.open(display) if display else None
        self._answered: list[str] = []
        self.idle_seconds(time.time())

    def __enter__(self) -> IdleSources:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def sources(self) -> list[str]:
        """The sources that answered the last reading (the constructor takes
        one), among "tty", "logind" and "x11"."""
        return list(self._answered)

    def idle_seconds(self, now: float) -> float | None:
        """Seconds since the latest input any source saw (``now`` is
        :func:`time.time`), None if none can tell."""
        self._refresh(now)
        readings: dict[str, float] = {}
        tty = self._tty_idle(now)
        if tty is not None:
            readings["tty"] = tty
        x11 = self._x11.idle_seconds() if self._x11 is not None else None
        if x11 is not None:
            readings["x11"] = x11
        logind = logind_idle(self._logind, now, measured=x11 is not None)
        if logind is not None:
            readings["logind"] = logind
        self._answered = [name for name in ("tty", "logind", "x11") if name in readings]
        return min(readings.values()) if readings else None

    def close(self) -> None:
        """Let go of the X display; the sources are gone after this."""
        if self._x11 is not None:
            self._x11.close()
            self._x11 = None
        self._loginctl = None
        self._fixed_terminals = []
        self._terminals = []
        self._logind = LogindReading(None, False)
        self._answered = []

    def _refresh(self, now: float) -> None:
        """Re-read utmp and logind if REFRESH_S has passed (or the clock
        went back)."""
        if not 0 <= now - self._terminals_at < REFRESH_S:
            self._terminals_at = now
            if self._fixed_terminals is not None:
                self._terminals = list(self._fixed_terminals)
            else:
                self._terminals = utmp_terminals(self._include_remote)
        if self._loginctl is not None and not 0 <= now - self._logind_at < REFRESH_S:
            self._logind_at = now
            reading = query_logind(self._loginctl)
            if reading is None:
                self._loginctl = None
                reading = LogindReading(None, False)
            self._logind = reading

    def _tty_idle(self, now: float) -> float | None:
        """Idle time of the most recently read terminal; terminals that
        cannot be stat'ed are left out until the next refresh."""
        atimes: list[float] = []
        for path in list(self._terminals):
            atime = terminal_atime(path)
            if atime is None:
                self._terminals.remove(path)
            else:
                atimes.append(atime)
        return max(0.0, now - max(atimes)) if atimes else None
