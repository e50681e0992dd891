"""The owner of a GNU make jobserver, for stock tools that obey one.

GNU make (4.3: a pipe; 4.4 and later: a fifo too), ninja >= 1.13 (a fifo)
and cargo take a token from the jobserver before each job beyond their
first, and give it back when the job ends.  bcrun owns the pool: it puts
``count - 1`` tokens in (the top-level client runs one job without a token),
adds tokens at once when the count grows, and takes tokens back as they are
returned when it shrinks.

A client re-takes a token it gives back some 10-30 µs later, before any
reader of bcrun's can (a shrink from 4 to 1 used to start about 5 jobs above
the count).  So while tokens are owed, bcrun brakes the clients, found by
name under the build's root (:meth:`JobserverPool.watch`, bcrun.reclaim):
the kernel stops a client inside each write() into the pipe or fifo (O_ASYNC
with SIGSTOP as the signal), a thread of bcrun's polling it takes the token,
then continues the clients.  The shrink is then exact for single-threaded
clients (make, ninja).  With no token owed, the thread sleeps, no client is
ever stopped, and tokens go from client to client without bcrun: the build
runs as fast as under a plain ``make -jN``.

cargo's clients are threads that may sit in read() when a token comes back,
which no brake beats, and bcrun does not know their names: cargo gets two
pipes instead (*routed*), one to take tokens from and one to give them back
into, which only bcrun reads, and bcrun passes each returned token on unless
it is owed.  That is exact too, at the price of a thread's round trip per
token (about 0.25 ms, nothing beside a compile).

Nothing here can take back the slot each running client holds for its first
job: the pool's floor is the number of running clients (a pause leaves one
job per client running).

A pool is made, and given its first tokens, before the build starts; what
keeps it exact (the taker thread, the brake, the guardian) starts with
:meth:`JobserverPool.start` once the build runs, so that their imports are
not on the way to the build's start.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from bcrun.guardian import Guardian
    from bcrun.reclaim import ClientBrake

Style = Literal["fifo", "pipe"]

TOKEN = b"+"

#: Seconds between two looks for stopped clients to continue while tokens
#: are owed, should one have stopped with no token seen (taken by another).
RELEASE_S = 0.1
#: The same just after a token was taken: the client that gave it may have
#: stopped only after bcrun looked.
STOPPING_S = 0.001


class JobserverPool:
    """A jobserver of one build: create, resize, start, close.  Thread-safe.

    Entering it starts it; before :meth:`start`, :meth:`resize` may only
    grow it (a shrink starts it).
    """

    def __init__(self, style: Style, directory: Path, *, routed: bool = False) -> None:
        if routed and style != "pipe":
            raise ValueError("only a pipe pool can be routed")
        self.style = style
        self.routed = routed
        self.path = directory / "jobserver"
        self._lock = threading.Condition()
        #: Tokens the build has: in the pool or held by its clients.
        self._circulating = 0
        #: Tokens to take back as they come.
        self._deficit = 0
        self._closing = False
        self.read_fd = self.write_fd = self._drain_fd = self._wake_fd = -1
        #: What the brake opens its descriptions of.
        self._brake_path = self.path
        self._guardian: Guardian | None = None
        self._brake: ClientBrake | None = None
        self._taker: threading.Thread | None = None
        if routed:
            self._open_routed()
        else:
            self._open_braked()

    def start(self) -> None:
        """Start the guardian, the brake and the thread that takes tokens
        back (once; the build may run by now)."""
        with self._lock:
            if self._taker is not None or self._closing:
                return
            from bcrun.guardian import Guardian
            from bcrun.reclaim import ClientBrake

            if self.routed:
                # Should bcrun be killed, tokens given back must still reach
                # the build, or its next one dies of SIGPIPE.
                self._guardian = Guardian(forward=(self._taker_fd, self._pool_fd))
            else:
                self._guardian = Guardian()
            # A routed pool's brake is never engaged.
            self._brake = ClientBrake(self._brake_path, self._guardian)
            self._taker = threading.Thread(
                target=self._route if self.routed else self._reclaim,
                name="jobserver-taker",
                daemon=True,
            )
            self._taker.start()

    def _open_braked(self) -> None:
        """A fifo, or one pipe, with a description of bcrun's own per
        client for the brake."""
        if self.style == "fifo":
            os.mkfifo(self.path, 0o600)
            path = self.path
        else:
            self.read_fd, self.write_fd = os.pipe2(0)
            # Opening a pipe through /proc gives a new description of it, as
            # a fifo's open() does.
            path = Path(f"/proc/{os.getpid()}/fd/{self.read_fd}")
        # Kept open read-write for the build's life: make 4.4.1 opening a
        # fifo that has no writer would block forever.
        self._pool_fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self._taker_fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        # Wakes the taker's poll() on close().
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._brake_path = path

    def _open_routed(self) -> None:
        """Two pipes: clients take tokens from the first and give them back
        into the second, which only bcrun reads."""
        self.read_fd, self._pool_fd = os.pipe()
        self._taker_fd, self.write_fd = os.pipe()
        os.set_inheritable(self.read_fd, True)
        os.set_inheritable(self.write_fd, True)
        # Our own description of the clients' end, for taking back the tokens
        # that lie unused in it.
        self._drain_fd = os.open(
            f"/proc/self/fd/{self.read_fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
        )

    # -- what the build is given -------------------------------------------

    @property
    def auth(self) -> str:
        """The ``--jobserver-auth`` value clients find in MAKEFLAGS."""
        if self.style == "fifo":
            return f"fifo:{self.path}"
        return f"{self.read_fd},{self.write_fd}"

    @property
    def pass_fds(self) -> tuple[int, ...]:
        """Descriptors the build must inherit (a pipe's two ends)."""
        return (self.read_fd, self.write_fd) if self.style == "pipe" else ()

    def watch(self, root: int, clients: frozenset[str]) -> None:
        """Brake the processes named in *clients* under the build's *root*
        while tokens are owed (a routed pool needs no brake)."""
        if not self.routed:
            self.start()
            with self._lock:
                assert self._brake is not None
                self._brake.watch(root, clients)

    # -- the count ---------------------------------------------------------

    @property
    def tokens(self) -> int:
        """Tokens the build has now (in the pool or taken by its clients)."""
        with self._lock:
            return self._circulating

    def resize(self, count: int) -> None:
        """Give the build ``count - 1`` tokens: at once if that is more,
        as they are returned if that is fewer."""
        target = max(count - 1, 0)
        with self._lock:
            if target >= self._circulating:
                self._deficit = 0
                # Before the write, which would stop the clients.
                if self._brake is not None:
                    self._brake.disengage()
                self._put(target - self._circulating)
                return
            self.start()
            assert self._brake is not None
            self._deficit = self._circulating - target
            if self.routed:
                self._drain()
            else:
                self._brake.engage()
            self._lock.notify_all()

    def _drain(self) -> None:
        """Take back, at once, surplus tokens no client has taken yet."""
        try:
            data = os.read(self._drain_fd, self._deficit)
        except BlockingIOError:
            return
        self._deficit -= len(data)
        self._circulating -= len(data)

    def available(self) -> int:
        """Tokens lying in the pool now (FIONREAD)."""
        fd = self.read_fd if self.routed else self._pool_fd
        import struct
        import termios  # not on the way to the build's start

        raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
        return int(struct.unpack("i", raw)[0])

    def missing(self, jobs_holding: int) -> int:
        """Tokens neither in the pool nor held by the build's running jobs.

        The build holds ``tokens - available()`` tokens; more than its jobs
        can hold died with a client killed before it could give them back
        (SIGKILL; a make 4.4.1 sub-make on SIGINT), or are in a client's hands
        between taking a token and starting its job: only the first lasts.
        0 while shrinking, when tokens are meant to be missing.
        """
        with self._lock:
            if self._deficit:
                return 0
            return max(self._circulating - self.available() - jobs_holding, 0)

    def restore(self, n: int) -> None:
        """Put back *n* tokens lost with a client, unless shrinking now."""
        with self._lock:
            if n > 0 and not self._deficit:
                os.write(self._pool_fd, TOKEN * n)

    def _put(self, n: int) -> None:
        if n > 0:
            os.write(self._pool_fd, TOKEN * n)
            self._circulating += n

    def _route(self) -> None:
        """Pass returned tokens on to the clients, keeping those owed (the
        routed pool)."""
        while True:
            try:
                data = os.read(self._taker_fd, 4096)
            except OSError:
                return
            with self._lock:
                if self._closing or not data:
                    return
                taken = min(len(data), self._deficit)
                self._deficit -= taken
                self._circulating -= taken
                # The rest goes on to the clients.
                if len(data) > taken:
                    os.write(self._pool_fd, data[taken:])

    def _reclaim(self) -> None:
        """Take owed tokens as they are returned, the clients braked
        meanwhile."""
        poller = select.poll()
        poller.register(self._taker_fd, select.POLLIN)
        poller.register(self._wake_fd, select.POLLIN)
        timeout = RELEASE_S
        assert self._brake is not None
        while True:
            with self._lock:
                while not self._deficit and not self._closing:
                    self._lock.wait()
                if self._closing:
                    return
            if self._brake.scan_due():
                found = self._brake.find_clients()
                with self._lock:
                    if self._deficit and not self._closing:
                        self._brake.update(found)
            poller.poll(timeout * 1000)
            with self._lock:
                if self._closing:
                    return
                stopped = self._brake.stopped()
                taken = self._take()
                self._brake.release(stopped)
            # The client that gave a token may stop only now: soon again.
            timeout = STOPPING_S if taken else RELEASE_S

    def _take(self) -> int:
        """Take what is owed of the tokens in the pool (under the lock);
        return how many."""
        taken = 0
        if self._deficit:
            with contextlib.suppress(BlockingIOError):
                taken = len(os.read(self._taker_fd, self._deficit))
            self._deficit -= taken
            self._circulating -= taken
        if not self._deficit and self._brake is not None:
            self._brake.disengage()
        return taken

    # -- life cycle --------------------------------------------------------

    def close(self) -> None:
        """Stop taking tokens, close every descriptor, remove the fifo."""
        with self._lock:
            self._closing = True
            if self._brake is not None:
                self._brake.close()
            if self._guardian is not None:
                self._guardian.close()
            self._lock.notify_all()
        # Wake the taker: a read() parked on an empty pipe, or the poll();
        # the build is over.
        with contextlib.suppress(OSError):
            if self.routed:
                os.write(self.write_fd, TOKEN)
            else:
                os.eventfd_write(self._wake_fd, 1)
        if self._taker is not None:
            self._taker.join(timeout=1.0)
        fds = {
            self._pool_fd,
            self._taker_fd,
            self._drain_fd,
            self._wake_fd,
            self.read_fd,
            self.write_fd,
        }
        for fd in fds - {-1}:
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.style == "fifo":
            try:
                if stat.S_ISFIFO(os.lstat(self.path).st_mode):
                    os.unlink(self.path)
            except OSError:
                pass

    def __enter__(self) -> JobserverPool:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
