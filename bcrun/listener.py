"""The build's socket before the event loop exists.

bcrun starts the build before it imports asyncio and its server (most of
its start-up), yet the build must find a socket that listens, and a patched
tool waits for its first count before it starts a job.  So the socket is
bound here, with plain sockets, and a :class:`Greeter` thread answers the
build's connections with the first count until the hub
(:class:`bcrun.server.Hub`) takes the socket and those connections over.

The sockets here are ``_socket``'s, which the socket module wraps: its
import (enums, selectors) would cost more than the rest of this module;
:func:`wrap` makes a socket.socket of one once the hub takes it.
"""

from __future__ import annotations

import _socket
import contextlib
import os
import select
import stat
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from bcrun.errors import BcrunError, LaunchError, ProtocolError
from bcrun.protocol import LINE_MAX, LineDecoder, Token, format_count

if TYPE_CHECKING:
    import socket

#: Connections a greeter holds, waiting for their first line, before it
#: closes the oldest of them (the hub's own hard limit, bcrun.server.Limits).
GREETED_MAX = 1024

#: How often, in seconds, the thread holding the GIL lets another run while
#: a greeter does: it must answer a build within a millisecond, not the
#: interpreter's 5 ms (sys.setswitchinterval), while bcrun imports the rest.
GREETING_SWITCH_S = 0.0005


def bind_unix(path: Path, mode: int = 0o600, backlog: int = 1024) -> _socket.socket:
    """A unix socket listening at *path*, made *mode*; a socket a dead
    server left there is replaced, a live one refused."""
    remove_dead_socket(path)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(path))
        os.chmod(path, mode)
        sock.listen(backlog)
    except OSError as err:
        sock.close()
        raise BcrunError(f"cannot listen on {path}: {err.strerror}") from err
    return sock


def remove_dead_socket(path: Path) -> None:
    """Remove a socket left at *path* by a dead server; refuse a live one."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise BcrunError(f"{path}: exists and is not a socket")
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(path))
    except ConnectionRefusedError:
        os.unlink(path)
        return
    except OSError as err:
        raise BcrunError(f"{path}: {err.strerror}") from err
    finally:
        probe.close()
    raise BcrunError(f"{path}: a server is already listening there")


def wrap(sock: _socket.socket) -> socket.socket:
    """*sock* as a socket.socket, which asyncio takes (and *sock* gives its
    descriptor up)."""
    import socket

    return socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())


class Greeted:
    """A connection the greeter accepted, for the hub to serve.  (A plain
    class: a named tuple's is ten times slower to make, at bcrun's start.)"""

    __slots__ = ("data", "sent", "sock")

    def __init__(self, sock: _socket.socket, data: bytes, sent: int | None) -> None:
        self.sock = sock
        #: What the peer sent so far (its token line, whole or in part).
        self.data = data
        #: The count it was sent, if it sent the build's token.
        self.sent = sent


class _Peer:
    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.data = bytearray()
        self.sent: int | None = None
        #: Whether its first line has come: the hub's to serve from then on.
        self.done = False


class Greeter:
    """Answer the build's connections to *listener* with *count* until
    :meth:`stop`.

    A peer whose first line is the build's *token* gets one count line; one
    whose first line is no token of *tokens* (the build's, the control
    token) is closed without a word, as the hub would; one that sends
    nothing waits, at most GREETED_MAX of them (the oldest is closed past
    that).  Draining the backlog so, a flood of connections while bcrun
    starts does not fall on the hub all at once.  :meth:`stop` hands every
    connection held over with what it sent, for the hub to serve as if it
    had just come (sending the count only if it is no longer the one sent).
    """

    def __init__(
        self,
        listener: _socket.socket,
        token: Token,
        count: int,
        control_token: Token | None = None,
        line_max: int = LINE_MAX,
    ) -> None:
        self.listener = listener
        self.token = token
        self.count = count
        self.tokens = [token] if control_token is None else [token, control_token]
        self.line_max = line_max
        self._peers: dict[int, _Peer] = {}
        #: Those whose first line has not come, oldest first.
        self._waiting: dict[int, None] = {}
        listener.setblocking(False)
        try:
            self._wake_read, self._wake_write = os.pipe()
        except OSError as err:
            raise LaunchError(f"cannot start: {err.strerror}", 125) from err
        self._thread = threading.Thread(target=self._serve, name="greeter", daemon=True)
        self._stopped = False
        self._switch = sys.getswitchinterval()
        #: Set once a build's connection has been sent its count.
        self.answered = threading.Event()

    def start(self) -> None:
        """Answer from now on (the build runs)."""
        sys.setswitchinterval(GREETING_SWITCH_S)
        self._thread.start()

    def stop(self) -> list[Greeted]:
        """Stop answering; return the connections held, oldest first."""
        if not self._stopped:
            self._stopped = True
            if self._thread.ident is not None:
                os.write(self._wake_write, b"x")
                self._thread.join()
            os.close(self._wake_read)
            os.close(self._wake_write)
            sys.setswitchinterval(self._switch)
        greeted = [Greeted(p.sock, bytes(p.data), p.sent) for p in self._peers.values()]
        self._peers.clear()
        return greeted

    def close(self) -> None:
        """Stop, and close the connections no hub took."""
        for greeted in self.stop():
            greeted.sock.close()

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self._wake_read, select.POLLIN)
        poller.register(self.listener, select.POLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == self._wake_read:
                    return
                if fd == self.listener.fileno():
                    self._accept(poller)
                    continue
                peer = self._peers[fd]
                if self._read(peer):
                    continue
                poller.unregister(fd)
                del self._waiting[fd]
                if not peer.done:
                    del self._peers[fd]
                    _close(peer.sock)

    def _accept(self, poller: select.poll) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            # What socket.socket.accept() calls (accept4, close-on-exec).
            fd, _ = self.listener._accept()  # type: ignore[attr-defined]
            sock = _socket.socket(fileno=fd)
            sock.setblocking(False)
            self._peers[sock.fileno()] = _Peer(sock)
            self._waiting[sock.fileno()] = None
            poller.register(sock, select.POLLIN)
        if len(self._waiting) > GREETED_MAX:
            oldest = next(iter(self._waiting))
            poller.unregister(oldest)
            del self._waiting[oldest]
            _close(self._peers.pop(oldest).sock)

    def _read(self, peer: _Peer) -> bool:
        """Read what *peer* sent: answer it if its first line is the build's
        token, mark it done if that line is a token; return whether more is
        to be read (False and not done: it is to be closed)."""
        try:
            data = peer.sock.recv(self.line_max + 2 - len(peer.data))
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data:
            return False
        peer.data += data
        try:
            lines = LineDecoder(self.line_max).feed(bytes(peer.data))
        except ProtocolError:
            return False
        if not lines:
            return len(peer.data) < self.line_max + 2
        if self.token.matches(lines[0]):
            line = format_count(self.count)
            with contextlib.suppress(OSError):
                if peer.sock.send(line) == len(line):
                    peer.sent = self.count
                    self.answered.set()
        peer.done = any(token.matches(lines[0]) for token in self.tokens)
        return False


def _close(sock: _socket.socket) -> None:
    """Close *sock* as the hub closes a peer: what it sent read first (as
    asyncio reads up to 256 KiB at once), so that it sees the end, not a
    reset."""
    with contextlib.suppress(OSError):
        for _ in range(4):
            if not sock.recv(1 << 16):
                break
    sock.close()
