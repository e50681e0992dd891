"""Stopping a fifo jobserver's clients as they give a token back, so that
bcrun takes the token before they take it again.

A client of a fifo jobserver (ninja 1.13) gives a token back with write()
and takes one with a non-blocking read() some 10-30 µs later: a reader of
bcrun's, even one spinning on another CPU, loses that race more often than
not on a busy machine.  So while the pool owes tokens, bcrun has the kernel
stop the writer inside its write(): for each client it holds a description
of the fifo whose owner is the client and whose signal is SIGSTOP (F_SETOWN,
F_SETSIG), in signal-driven mode (O_ASYNC) while tokens are owed.  Every
write into the fifo then sends SIGSTOP to each client from within the write,
and a single-threaded client stops before the write returns to it, so before
it can read.  bcrun takes the token when it sees it, then continues the
clients (SIGCONT).

Closing a description of the fifo signals too, but only the last reader's or
writer's, which bcrun's own read-write description prevents.  Should bcrun
be killed in the moment a client is stopped, a guardian process it started
(bcrun.guardian) continues the clients when it sees bcrun gone.  A client
stopped by hand while tokens are owed is continued as well.  Not
thread-safe: the pool calls this under its lock, and no signal is sent and
nothing runs while no token is owed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from bcrun.buildtree import tools_under
from bcrun.guardian import Guardian
from bcrun.proc import read_processes, read_stat

#: Seconds between two looks for the build's clients while tokens are owed
#: (a new sub-make is not braked before it is seen).
SCAN_S = 0.25


@dataclass(frozen=True)
class Client:
    """A client, and the fifo description whose writes stop it when set to
    signal."""

    pid: int
    pidfd: int
    fd: int

    def signal_writes(self, on: bool) -> None:
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        flags = flags | os.O_ASYNC if on else flags & ~os.O_ASYNC
        fcntl.fcntl(self.fd, fcntl.F_SETFL, flags)

    @property
    def alive(self) -> bool:
        # poll(), not select(): the pidfd may be 1024 or more.
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        return not poller.poll(0)

    @property
    def stopped(self) -> bool:
        stat = read_stat(self.pid)
        return stat is not None and stat.state == "T"

    def resume(self) -> None:
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGCONT)

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.pidfd)


class ClientBrake:
    """Stops the build's jobserver clients at every write into the fifo,
    while engaged."""

    def __init__(self, path: Path, guardian: Guardian) -> None:
        self.path = path
        self.engaged = False
        self._root: int | None = None
        self._names: frozenset[str] = frozenset()
        self._clients: dict[int, Client] = {}
        #: Clients the guardian has been told of.
        self._protected: set[int] = set()
        self._scanned = float("-inf")
        self._guardian = guardian

    def watch(self, root: int, clients: frozenset[str]) -> None:
        """Brake the processes named in *clients* under *root*, and *root*
        if it is one of them (known at once)."""
        self._root, self._names = root, clients
        self._scanned = float("-inf")
        stat = read_stat(root)
        if stat is not None and stat.name in clients:
            self.update(self._clients.keys() | {root})

    def scan_due(self) -> bool:
        return self._root is not None and time.monotonic() - self._scanned >= SCAN_S

    def find_clients(self) -> set[int]:
        """The pids of the clients running now.  Reads /proc at some length:
        call it without the pool's lock."""
        self._scanned = time.monotonic()
        root, names = self._root, self._names
        if root is None or not names:
            return set()
        return set(tools_under(read_processes(), root, names))

    def update(self, pids: set[int]) -> None:
        """Brake the clients *pids* (braked at once if engaged), and no
        other."""
        for pid in self._clients.keys() - pids:
            self._let_go([self._clients.pop(pid)])
        for pid in pids - self._clients.keys():
            client = self._hold(pid)
            if client is not None:
                self._clients[pid] = client
                if self.engaged:
                    self._set([client])

    def engage(self) -> None:
        """Stop the clients at every write into the fifo from now on."""
        self.engaged = True
        self._scanned = float("-inf")  # look for new sub-makes at once
        self._set(list(self._clients.values()))

    def stopped(self) -> list[Client]:
        """The clients stopped now.  Any token they gave back before they
        stopped is in the fifo: take it before :meth:`release`."""
        return [client for client in self._clients.values() if client.stopped]

    def release(self, stopped: list[Client]) -> None:
        """Continue the clients of *stopped*, if still braked.

        Only clients seen stopped before the tokens were taken: a client
        stopping now has its token in the fifo still, and continuing it would
        cancel its stop.
        """
        for client in stopped:
            if self._clients.get(client.pid) is client:
                client.resume()

    def disengage(self) -> None:
        """Stop no client from now on, and continue every client."""
        if self.engaged:
            self.engaged = False
            clients = list(self._clients.values())
            for client in clients:
                with contextlib.suppress(OSError):
                    client.signal_writes(False)
            for client in clients:
                # Cancels a stop not yet taken effect too: no token is owed.
                client.resume()

    def close(self) -> None:
        self.disengage()
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def _set(self, clients: list[Client]) -> None:
        for client in clients:
            # Only a braked client can be stopped: a build that never shrinks
            # never starts the guardian.
            if client.pid not in self._protected:
                self._guardian.protect(client.pid)
                self._protected.add(client.pid)
            try:
                client.signal_writes(True)
            except OSError:
                self._let_go([self._clients.pop(client.pid)])

    def _hold(self, pid: int) -> Client | None:
        """A description of the fifo owned by *pid*, not signalling yet."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None  # gone already
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            os.close(pidfd)
            return None
        client = Client(pid, pidfd, fd)
        try:
            fcntl.fcntl(fd, fcntl.F_SETOWN, pid)
            fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGSTOP)
            # Never signal SIGIO, the default: it would kill the client.
            if fcntl.fcntl(fd, fcntl.F_GETSIG) == signal.SIGSTOP and client.alive:
                # The owner is the pid's process: it was alive after.
                return client
        except OSError:
            pass
        client.close()
        return None

    def _let_go(self, clients: list[Client]) -> None:
        # Every description stops signalling before any is closed.
        for client in clients:
            with contextlib.suppress(OSError):
                client.signal_writes(False)
        for client in clients:
            if self.engaged:
                client.resume()
            client.close()
            self._protected.discard(client.pid)
