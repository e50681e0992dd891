"""Stopping a fifo jobserver's clients as they give a token back, so that
bcrun takes the token before they take it again.

A client of a fifo jobserver (ninja 1.13) gives a token back with write()
and takes one with a non-blocking read() some 10-30 µs later: a reader of
bcrun's, even one spinning on another CPU, loses that race to it more often
than not on a busy machine.  So while the pool owes tokens, bcrun has the
kernel stop the writer inside its write(): for each client it holds a
description of the fifo in signal-driven mode (O_ASYNC) whose owner is the
client and whose signal is SIGSTOP (F_SETOWN, F_SETSIG).  Every write into
the fifo then sends SIGSTOP to each client from within the write, and a
single-threaded client stops before its write returns, so before it can
read.  bcrun takes the token when it sees it, then continues the clients
(SIGCONT).

Closing any description of the fifo signals too (a client that closes it
stops the others, until bcrun's next periodic continue).  A client stopped
by hand while tokens are owed is continued as well.  The pool calls this
under its lock; nothing here runs while no token is owed.
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

import psutil

#: Seconds between two looks for the build's clients while tokens are owed.
SCAN_S = 0.5


@dataclass(frozen=True)
class _Braked:
    """A client, and the fifo description whose writes and closes stop it."""

    pid: int
    pidfd: int
    fd: int


class ClientBrake:
    """Stops the build's jobserver clients at every write into the fifo,
    while engaged.  Not thread-safe: the pool calls it under its lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._root: int | None = None
        self._clients: frozenset[str] = frozenset()
        self._braked: dict[int, _Braked] = {}
        self._scanned = float("-inf")

    def watch(self, root: int, clients: frozenset[str]) -> None:
        """Brake the processes named in *clients* under *root* (included)."""
        self._root, self._clients = root, clients
        self._scanned = float("-inf")

    @property
    def engaged(self) -> bool:
        return bool(self._braked)

    def scan_due(self) -> bool:
        return self._root is not None and time.monotonic() - self._scanned >= SCAN_S

    def find_clients(self) -> set[int]:
        """The pids of the clients running now.  Reads /proc: call it
        without the pool's lock."""
        self._scanned = time.monotonic()
        root, names = self._root, self._clients
        if root is None or not names:
            return set()
        try:
            top = psutil.Process(root)
            tree = [top, *top.children(recursive=True)]
        except psutil.Error:
            return set()
        found = set()
        for process in tree:
            with contextlib.suppress(psutil.Error):
                if process.name() in names:
                    found.add(process.pid)
        return found

    def engage(self, clients: set[int] | None) -> None:
        """Brake *clients* (None: those braked already), release the rest."""
        if clients is None:
            return
        for pid in set(self._braked) - clients:
            self._let_go([self._braked.pop(pid)])
        for pid in clients - set(self._braked):
            braked = self._brake(pid)
            if braked is not None:
                self._braked[pid] = braked

    def release(self) -> None:
        """Continue every braked client: its token, if any, is taken."""
        for braked in self._braked.values():
            _continue(braked)

    def disengage(self) -> None:
        """Stop braking, and continue every client."""
        braked, self._braked = list(self._braked.values()), {}
        self._let_go(braked)

    def _brake(self, pid: int) -> _Braked | None:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None  # gone already
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            os.close(pidfd)
            return None
        braked = _Braked(pid, pidfd, fd)
        try:
            fcntl.fcntl(fd, fcntl.F_SETOWN, pid)
            fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGSTOP)
            # The signal must be SIGSTOP before O_ASYNC is set: the default,
            # SIGIO, would kill the client.
            if fcntl.fcntl(fd, fcntl.F_GETSIG) != signal.SIGSTOP:
                raise OSError("F_SETSIG did not take")
            # The owner is the pid's process only if it was still alive.
            if not select.select([pidfd], [], [], 0)[0]:
                flags = fcntl.fcntl(fd, fcntl.F_GETFL)
                fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_ASYNC)
                return braked
        except OSError:
            pass
        self._let_go([braked])
        return None

    @staticmethod
    def _let_go(braked: list[_Braked]) -> None:
        # Every description stops signalling before any is closed: closing
        # one signals the clients of the others.
        for one in braked:
            with contextlib.suppress(OSError):
                flags = fcntl.fcntl(one.fd, fcntl.F_GETFL)
                fcntl.fcntl(one.fd, fcntl.F_SETFL, flags & ~os.O_ASYNC)
        for one in braked:
            # A continue also cancels a stop not yet taken effect.
            _continue(one)
            os.close(one.fd)
            os.close(one.pidfd)


def _continue(braked: _Braked) -> None:
    with contextlib.suppress(OSError):
        signal.pidfd_send_signal(braked.pidfd, signal.SIGCONT)
