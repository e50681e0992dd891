"""Starting the build, passing signals on, and ending the way it ended.

bcrun must be invisible to the shell that started it: the build keeps its
standard streams and process group (so the terminal's Ctrl-C reaches it
directly), and bcrun exits with the build's status, or dies of the same
signal (see ``exit_like``).

The build is started before bcrun's event loop exists (the loop's imports
are most of bcrun's start-up): :func:`spawn` is synchronous, signals that
come meanwhile are recorded by :class:`EarlySignals`, and
:class:`SignalRelay` acts on them once the loop runs.  Nothing here imports
asyncio.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, Protocol

from bcrun.errors import LaunchError
from bcrun.proc import read_signal_masks

if TYPE_CHECKING:
    import asyncio

#: Signals passed on to the build when bcrun receives them, unless the
#: build got them too (sent to the process group).
FORWARDED = (signal.SIGTERM, signal.SIGHUP)
#: Seconds after the build starts at which bcrun notes which signals it
#: catches: by then a tool has set its handlers.
NOTE_HANDLERS_S = (0.1, 1.0)

#: Signals a terminal sends to its whole foreground process group, the build
#: included: passed on only when they cannot have come from the terminal.
TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGQUIT)

#: Every signal a relay may handle: the wrapper's SIGUSR1 and SIGUSR2 too.
RELAYED = (*FORWARDED, *TERMINAL_SIGNALS, signal.SIGUSR1, signal.SIGUSR2)


class ExitStatus(NamedTuple):
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


#: Signals Python ignores from its start, which a program it starts must
#: get at their default actions (as subprocess's restore_signals does).
RESTORED = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, name)
)


class Process(Protocol):
    """A started build: a :class:`Spawned`, or a subprocess.Popen."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None:
        """The returncode once ended (negative: the signal that killed it),
        reaping it; else None."""
        ...

    def wait(self) -> int: ...


class Spawned:
    """A process started by posix_spawn: its pid, reaped by :meth:`poll` or
    :meth:`wait`, and only there."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        while self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def spawn(
    argv: list[str],
    env: Mapping[str, str],
    pass_fds: tuple[int, ...] = (),
    nice: int | None = None,
) -> Process:
    """Start *argv* with bcrun's standard streams, process group and
    inherited descriptors (those the build would have had without bcrun, and
    *pass_fds*), at the nice value *nice* if given.

    Raises LaunchError with status 127 when the command is not found and 126
    when it cannot be run, as a shell would.
    """
    raising = nice is not None and nice < os.getpriority(os.PRIO_PROCESS, 0)
    if raising and os.geteuid() != 0:
        raise LaunchError(f"--nice {nice}: only root may raise a priority", 125)
    try:
        # The build inherits what bcrun inherited, as it would have without
        # bcrun (an enclosing make's jobserver too), and *pass_fds*; what
        # bcrun opened itself is close-on-exec.
        for fd in pass_fds:
            os.set_inheritable(fd, True)
        if nice is None:
            # posix_spawn: no subprocess module to import before the build.
            return Spawned(os.posix_spawnp(argv[0], argv, env, setsigdef=RESTORED))
        return _spawn_niced(argv, env, nice)
    except OSError as err:
        raise _not_started(argv, err) from err


def _spawn_niced(argv: list[str], env: Mapping[str, str], nice: int) -> Process:
    """Start *argv* at nice value *nice*, set in the child before it runs
    the command (posix_spawn cannot)."""
    import subprocess

    from bcrun.priority import set_own_nice

    try:
        return subprocess.Popen(
            argv,
            env=dict(env),
            close_fds=False,
            preexec_fn=partial(set_own_nice, nice),
        )
    except subprocess.SubprocessError as err:
        # Only our preexec function can fail this way.
        raise LaunchError(f"--nice {nice}: cannot set the priority", 125) from err


def exec_as_is(argv: list[str], env: Mapping[str, str]) -> NoReturn:
    """Become *argv*, unchanged: for a command bcrun has nothing to control
    (``make -n``, ``make -j1``), whose status, signals and output are then
    the command's own with nothing in between.

    Raises LaunchError as :func:`spawn` does when it cannot be run.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    for sig in RESTORED:
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as err:
        for sig in RESTORED:
            signal.signal(sig, signal.SIG_IGN)
        raise _not_started(argv, err) from err


def _not_started(argv: list[str], err: OSError) -> LaunchError:
    """The error of a command that could not be started, as a shell says it."""
    if isinstance(err, FileNotFoundError):
        if "/" in argv[0]:
            return LaunchError(f"{argv[0]}: No such file or directory", 127)
        return LaunchError(f"{argv[0]}: command not found", 127)
    if err.errno in (errno.EMFILE, errno.ENFILE):
        # bcrun's own lack (its pipes to the child), not the command's.
        return LaunchError(f"cannot start {argv[0]}: {err.strerror}", 125)
    return LaunchError(f"{argv[0]}: {err.strerror or err}", 126)


async def wait_exit(proc: Process, loop: asyncio.AbstractEventLoop) -> int:
    """Wait for *proc* to end without blocking *loop*; return its
    returncode (negative: the signal that killed it).

    A pidfd (Linux 5.3) tells the loop when it has ended; without one, a
    thread waits.  Either way the process is reaped through *proc*, which
    then knows its returncode and never reaps it again.
    """
    done: asyncio.Future[int] = loop.create_future()
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = -1
    if pidfd >= 0:

        def ended() -> None:
            code = proc.poll()
            if code is not None and not done.done():
                done.set_result(code)

        loop.add_reader(pidfd, ended)
        try:
            ended()  # it may have ended before the reader was added
            return await done
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
    import threading  # only without pidfds

    def finish(code: int) -> None:
        if not done.done():
            done.set_result(code)

    def wait() -> None:
        loop.call_soon_threadsafe(finish, proc.wait())

    threading.Thread(target=wait, name="build-waiter", daemon=True).start()
    return await done


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


class EarlySignals:
    """Record *signals* from just before the build starts until
    :class:`SignalRelay` takes them over with the event loop, which does
    not exist yet: none of them may kill bcrun, or be lost to the build,
    meanwhile.  Signals ignored when bcrun started stay ignored."""

    def __init__(self, signals: Iterable[int]) -> None:
        self.signals = tuple(signals)
        #: Those that were ignored when bcrun started.
        self.ignored: set[int] = set()
        #: Those received, in order.
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> EarlySignals:
        for sig in self.signals:
            handler = signal.getsignal(sig)
            if handler == signal.SIG_IGN:
                self.ignored.add(sig)
                continue
            if handler is not None:
                self._previous[sig] = handler
            signal.signal(sig, self._record)
        return self

    def _record(self, sig: int, frame: object) -> None:
        self.received.append(sig)

    def __exit__(self, *exc_info: object) -> None:
        # Those the relay did not take over (the build could not start).
        for sig, handler in self._previous.items():
            if signal.getsignal(sig) == self._record:
                signal.signal(sig, handler)


class SignalRelay:
    """Pass bcrun's signals on to the build while it runs.

    Signals ignored when bcrun started are left ignored, so the build
    inherits that (``nohup bcrun make`` ignores SIGHUP as ``nohup make``
    would).  *handlers* maps extra signals (SIGUSR1, SIGUSR2) to callbacks;
    *on_ending* runs on each signal that may end the build, before the build
    gets it (to continue stopped jobs, which could not end otherwise).
    Signals *early* recorded before the relay existed are acted on once the
    build is attached.
    """

    def __init__(
        self,
        handlers: Mapping[signal.Signals, Callable[[], None]] | None = None,
        on_ending: Callable[[], None] | None = None,
        early: EarlySignals | None = None,
    ) -> None:
        self.handlers = dict(handlers or {})
        self.on_ending = on_ending
        self.early = early
        self.pid = 0
        #: Signals that came before the build was started, passed on then.
        self._early: list[int] = []
        self._installed: dict[int, Callable[[int], None]] = {}
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
        if self.early is not None and self.early.received:
            # The build may have got these too (sent to the process group):
            # what it catches tells, as for any signal (_build_got).
            self._note_handlers()
            for sig in self.early.received:
                if sig in self._installed:
                    self._installed[sig](sig)
            self.early.received.clear()
        loop = _running_loop()
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
        loop = _running_loop()
        wanted: dict[signal.Signals, Callable[[int], None]] = dict.fromkeys(
            self.handlers, self._call
        )
        wanted.update(dict.fromkeys(FORWARDED, self._forward))
        wanted.update(dict.fromkeys(TERMINAL_SIGNALS, self._forward_unless_terminal))
        for sig, callback in wanted.items():
            if self._ignored(sig):
                continue
            loop.add_signal_handler(sig, callback, sig)
            self._installed[sig] = callback
        return self

    def _ignored(self, sig: int) -> bool:
        """Whether *sig* was ignored when bcrun started."""
        if self.early is not None:
            return sig in self.early.ignored
        return signal.getsignal(sig) == signal.SIG_IGN

    def __exit__(self, *exc_info: object) -> None:
        loop = _running_loop()
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


def _running_loop() -> asyncio.AbstractEventLoop:
    import asyncio  # loaded by now: the relay comes with the event loop

    return asyncio.get_running_loop()


def exit_like(status: ExitStatus) -> NoReturn:
    """End this process the way the build ended: same code, or same signal."""
    sys.stdout.flush()
    sys.stderr.flush()
    if status.signal:
        sig = status.signal
        # The build's core dump, if any, is the one the user wants, not ours.
        with contextlib.suppress(OSError, ValueError):
            import resource

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
