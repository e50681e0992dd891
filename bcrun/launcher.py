"""Starting the build, passing signals on, and ending the way it ended.

bcrun must be invisible to the shell that started it: the build keeps its
standard streams and process group (so the terminal's Ctrl-C reaches it
directly), and bcrun exits with the build's status, or dies of the same
signal (see ``exit_like``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import NoReturn

from bcrun.errors import LaunchError
from bcrun.priority import set_own_nice
from bcrun.proc import read_signal_masks

#: Signals passed on to the build when bcrun receives them, unless the
#: build got them too (sent to the process group).
FORWARDED = (signal.SIGTERM, signal.SIGHUP)
#: Seconds after the build starts at which bcrun notes which signals it
#: catches: by then a tool has set its handlers.
NOTE_HANDLERS_S = (0.1, 1.0)

#: Signals a terminal sends to its whole foreground process group, the build
#: included: passed on only when they cannot have come from the terminal.
TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGQUIT)


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended: an exit code, or the signal that killed it."""

    code: int = 0
    signal: int = 0

    @classmethod
    def from_returncode(cls, returncode: int) -> ExitStatus:
        """Decode asyncio's returncode, negative for death by a signal."""
        if returncode < 0:
            return cls(signal=-returncode)
        return cls(code=returncode)

    @property
    def shell_code(self) -> int:
        """What ``$?`` shows: the code, or 128 + the signal number."""
        return 128 + self.signal if self.signal else self.code

    def describe(self) -> str:
        if self.signal:
            return f"terminated by {signal_name(self.signal)}"
        return f"exited with status {self.code}"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


async def spawn(
    argv: list[str],
    env: Mapping[str, str],
    pass_fds: tuple[int, ...] = (),
    nice: int | None = None,
) -> asyncio.subprocess.Process:
    """Start *argv* with bcrun's standard streams and process group, at
    the nice value *nice* if given.

    Raises LaunchError with status 127 when the command is not found and 126
    when it cannot be run, as a shell would.
    """
    raising = nice is not None and nice < os.getpriority(os.PRIO_PROCESS, 0)
    if raising and os.geteuid() != 0:
        raise LaunchError(f"--nice {nice}: only root may raise a priority", 125)
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            pass_fds=tuple(dict.fromkeys((*pass_fds, *_jobserver_fds(env)))),
            preexec_fn=None if nice is None else partial(set_own_nice, nice),
        )
    except subprocess.SubprocessError as err:
        # Only our preexec function can fail this way.
        raise LaunchError(f"--nice {nice}: cannot set the priority", 125) from err
    except FileNotFoundError as err:
        if "/" in argv[0]:
            raise LaunchError(f"{argv[0]}: No such file or directory", 127) from err
        raise LaunchError(f"{argv[0]}: command not found", 127) from err
    except OSError as err:
        if err.errno in (errno.EMFILE, errno.ENFILE):
            # bcrun's own lack (its pipes to the child), not the command's.
            raise LaunchError(f"cannot start {argv[0]}: {err.strerror}", 125) from err
        raise LaunchError(f"{argv[0]}: {err.strerror or err}", 126) from err


def _jobserver_fds(env: Mapping[str, str]) -> tuple[int, ...]:
    """The pipe of the jobserver MAKEFLAGS names, when bcrun has it open:
    an enclosing make's (``+bcrun make`` in a Makefile), which the build must
    inherit to obey it, as bcrun leaves it alone (bcrun.detect)."""
    found = re.findall(
        r"--jobserver-(?:auth|fds)=(\d+),(\d+)", env.get("MAKEFLAGS", "")
    )
    if not found:
        return ()
    fds = tuple(int(fd) for fd in found[-1])
    for fd in fds:
        try:
            os.fstat(fd)
        except OSError:
            return ()
    return fds


def _from_terminal() -> bool:
    """Whether our process group is a terminal's foreground group, in which
    case a SIGINT or SIGQUIT reached the build without our help."""
    for fd in (0, 1, 2):
        try:
            if os.tcgetpgrp(fd) == os.getpgrp():
                return True
        except OSError:
            continue
    return False


class SignalRelay:
    """Pass bcrun's signals on to the build while it runs.

    Signals ignored when bcrun started are left ignored, so the build
    inherits that (``nohup bcrun make`` ignores SIGHUP as ``nohup make``
    would).  *handlers* maps extra signals (SIGUSR1, SIGUSR2) to callbacks;
    *on_ending* runs on each signal that may end the build, before the build
    gets it (to continue stopped jobs, which could not end otherwise).
    """

    def __init__(
        self,
        handlers: Mapping[signal.Signals, Callable[[], None]] | None = None,
        on_ending: Callable[[], None] | None = None,
    ) -> None:
        self.handlers = dict(handlers or {})
        self.on_ending = on_ending
        self.pid = 0
        #: Signals that came before the build was started, passed on then.
        self._early: list[int] = []
        self._installed: list[int] = []
        #: Signals the build was seen to catch, and those it was then seen to
        #: have stopped catching.
        self._caught = 0
        self._reset: set[int] = set()

    def attach(self, pid: int) -> None:
        """The build has started as *pid*: signals go to it from now on."""
        self.pid = pid
        for sig in self._early:
            self._forward(sig)
        self._early.clear()
        loop = asyncio.get_running_loop()
        for delay in NOTE_HANDLERS_S:
            loop.call_later(delay, self._note_handlers)

    def _note_handlers(self) -> None:
        masks = read_signal_masks(self.pid) if self.pid else None
        if masks is not None:
            self._caught |= masks.caught

    def _build_got(self, sig: int) -> bool:
        """Whether the build's process got *sig* itself (a signal to the
        process group): pending still, or handled by a tool that then
        stopped catching it, as GNU make does.  Passing a second copy on
        would kill make at once, where it waits for its jobs after the first.
        (Blocked alone says nothing: make blocks these signals for a moment
        around each job it starts.)"""
        masks = read_signal_masks(self.pid)
        if masks is None:
            return False
        if masks.has(masks.pending, sig):
            return True
        if sig in self._reset or not masks.has(self._caught, sig):
            return False
        if masks.has(masks.caught, sig):
            return False
        # Only the first time: a later one, sent to bcrun alone, is the user
        # insisting, and kills make at once as it would without bcrun.
        self._reset.add(sig)
        return True

    def __enter__(self) -> SignalRelay:
        loop = asyncio.get_running_loop()
        wanted: dict[signal.Signals, Callable[[int], None]] = dict.fromkeys(
            self.handlers, self._call
        )
        wanted.update(dict.fromkeys(FORWARDED, self._forward))
        wanted.update(dict.fromkeys(TERMINAL_SIGNALS, self._forward_unless_terminal))
        for sig, callback in wanted.items():
            if signal.getsignal(sig) == signal.SIG_IGN:
                continue
            loop.add_signal_handler(sig, callback, sig)
            self._installed.append(sig)
        return self

    def __exit__(self, *exc_info: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)
        self._installed.clear()

    def _call(self, sig: int) -> None:
        self.handlers[signal.Signals(sig)]()

    def _forward(self, sig: int) -> None:
        if self.on_ending is not None:
            self.on_ending()
        if not self.pid:
            self._early.append(sig)
            return
        if sig in FORWARDED and self._build_got(sig):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def _forward_unless_terminal(self, sig: int) -> None:
        if not _from_terminal():
            self._forward(sig)
        elif self.on_ending is not None:
            self.on_ending()


def exit_like(status: ExitStatus) -> NoReturn:
    """End this process the way the build ended: same code, or same signal."""
    sys.stdout.flush()
    sys.stderr.flush()
    if status.signal:
        sig = status.signal
        # The build's core dump, if any, is the one the user wants, not ours.
        with contextlib.suppress(OSError, ValueError):
            _, hard = resource.getrlimit(resource.RLIMIT_CORE)
            resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
        # SIGKILL and SIGSTOP refuse a handler but can still be sent.
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        with contextlib.suppress(OSError):
            os.kill(os.getpid(), sig)
        # Still alive: a signal whose default is not to terminate.
        os._exit(status.shell_code)
    # Not sys.exit(): everything is closed and flushed by now, and the
    # interpreter's tear-down would add 15-30 ms to every build's end.
    os._exit(status.code)
