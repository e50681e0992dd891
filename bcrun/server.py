"""The protocol server: listeners, authentication, broadcasting counts.

One :class:`Hub` serves the wrapper's single build and ``bcrun serve``'s many
alike.  It owns every task it starts: the hub is an async context manager
whose task group holds one task per connection, and leaving it closes the
listeners and ends every connection.

A peer's first line is its token.  A build token (``N-SECRET``, N >= 1) makes
the connection one of build N's: it gets the build's count at once, then every
change.  The control token (number 0) makes it a control connection that sends
commands (see :mod:`bcrun.commands`).  Anything else is closed without a word.
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bcrun.commands import Command, Quit, parse_command
from bcrun.errors import BcrunError, ControlError, ProtocolError
from bcrun.listener import Greeted, bind_unix, wrap
from bcrun.protocol import (
    LINE_MAX,
    InetAddress,
    LineDecoder,
    Token,
    format_count,
    format_line,
    token_number,
)

READ_SIZE = 4096
#: What a connection's reader holds before it stops reading (asyncio's own).
STREAM_LIMIT = 2**16


@dataclass(frozen=True)
class Limits:
    """What an unauthenticated or misbehaving peer may cost the server."""

    line_max: int = LINE_MAX
    token_timeout_s: float = 5.0
    #: Connections that have not yet sent a token; past this, the oldest is
    #: cut once the connections that came with it have been read (trim_delay_s)
    #: or at once past pending_hard_max.
    max_pending: int = 256
    trim_delay_s: float = 0.05
    pending_hard_max: int = 1024
    #: Unread output we keep for a peer before we drop it.
    write_buffer_max: int = 64 * 1024
    backlog: int = 1024


class Controller(Protocol):
    """Who carries out control commands: the wrapper or ``bcrun serve``."""

    def execute(self, command: Command) -> list[str]:
        """Carry *command* out and return its output lines.

        Raises ControlError when it cannot be done.
        """
        ...


@dataclass(eq=False)
class Build:
    """One build as the server sees it: its token, count and connections."""

    token: Token
    count: int | None = None
    connections: set[asyncio.StreamWriter] = field(default_factory=set)
    #: ``bcrun serve`` forgets a build once its last connection has closed.
    forget_when_idle: bool = False

    @property
    def number(self) -> int:
        return self.token.number


class _PeerClosed(Exception):
    pass


class Hub:
    """The builds one server knows, their connections, and the listeners."""

    def __init__(
        self,
        limits: Limits | None = None,
        control_token: Token | None = None,
        controller: Controller | None = None,
        debug: Callable[[str], None] | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.control_token = control_token
        self.controller = controller
        self.builds: dict[int, Build] = {}
        self.control_connections: set[asyncio.StreamWriter] = set()
        self._debug = debug
        self._servers: list[asyncio.Server] = []
        self._unix_paths: list[tuple[Path, int]] = []
        self._tasks: asyncio.TaskGroup | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        # Insertion-ordered, so the oldest pending connection is first.
        self._pending: dict[asyncio.Task[None], None] = {}
        self._trimming = False

    # -- life cycle --------------------------------------------------------

    async def __aenter__(self) -> Hub:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        assert self._tasks is not None
        await self._tasks.__aexit__(None, None, None)

    def close(self) -> None:
        """Stop listening and end every connection."""
        for server in self._servers:
            server.close()
        self._servers.clear()
        for path, inode in self._unix_paths:
            # Only the socket we made: a later server may have replaced it.
            with contextlib.suppress(OSError):
                if os.lstat(path).st_ino == inode:
                    os.unlink(path)
        self._unix_paths.clear()
        for task in self._handlers:
            task.cancel()

    # -- builds ------------------------------------------------------------

    def add_build(self, token: Token, forget_when_idle: bool = False) -> Build:
        build = Build(token, forget_when_idle=forget_when_idle)
        self.builds[token.number] = build
        return build

    def set_count(self, build: Build, count: int) -> None:
        """Make *count* the build's count and send it to its connections."""
        build.count = count
        line = format_count(count)
        for writer in list(build.connections):
            self._send(writer, line)

    # -- listeners ---------------------------------------------------------

    async def listen_unix(self, path: Path, mode: int = 0o600) -> str:
        """Listen on a unix socket at *path*; return the address to give out."""
        await self.serve_unix(bind_unix(path, mode, self.limits.backlog), path)
        return os.fspath(path)

    async def serve_unix(self, listener: _socket.socket, path: Path) -> None:
        """Serve *listener*, a unix socket already listening at *path*
        (bcrun.listener.bind_unix), which :meth:`close` removes."""
        sock = wrap(listener)
        self._unix_paths.append((path, os.lstat(path).st_ino))
        self._servers.append(
            await asyncio.start_unix_server(
                self._accept, sock=sock, backlog=self.limits.backlog, limit=STREAM_LIMIT
            )
        )

    async def adopt(self, greeted: Greeted) -> None:
        """Serve a connection accepted before the hub existed
        (bcrun.listener.Greeter), with what it has sent so far, as if it had
        just come; a build connection that was sent its build's count is not
        sent it again."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
        if greeted.data:
            reader.feed_data(greeted.data)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        sock = wrap(greeted.sock)
        try:
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock)
        except OSError:
            sock.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        self._accept(reader, writer, sent=greeted.sent)

    async def listen_inet(self, address: InetAddress) -> list[str]:
        """Listen on TCP; loopback unless *address* names a host.

        Every address the host resolves to is bound; with port 0 they share
        the port the first one was given.  Returns the addresses bound.
        """
        host = address.host or "localhost"
        try:
            infos = socket.getaddrinfo(
                host, address.service, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except socket.gaierror as err:
            raise BcrunError(f"cannot resolve {address}: {err.strerror}") from err
        bound: list[str] = []
        port: int | None = None
        for family, type_, proto, _, sockaddr in dict.fromkeys(infos):
            if port is not None:
                sockaddr = (sockaddr[0], port, *sockaddr[2:])
            sock = socket.socket(family, type_, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(sockaddr)
                sock.listen(self.limits.backlog)
            except OSError as err:
                sock.close()
                if not bound:
                    raise BcrunError(
                        f"cannot listen on {address}: {err.strerror}"
                    ) from err
                continue
            name = sock.getsockname()
            port = name[1]
            bound.append(str(InetAddress(name[0], str(port))))
            self._servers.append(
                await asyncio.start_server(
                    self._accept, sock=sock, backlog=self.limits.backlog
                )
            )
        return bound

    # -- connections -------------------------------------------------------

    def _accept(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        sent: int | None = None,
    ) -> None:
        assert self._tasks is not None
        task = self._tasks.create_task(self._handle(reader, writer, sent))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        self._pending[task] = None
        # Connections accepted together have not been read yet: cutting one
        # now could cut a build client whose token is waiting.  Read them
        # first, then cut what still waits past the limit.
        if len(self._pending) > self.limits.pending_hard_max:
            self._cut_oldest(self.limits.pending_hard_max)
        elif len(self._pending) > self.limits.max_pending and not self._trimming:
            self._trimming = True
            asyncio.get_running_loop().call_later(self.limits.trim_delay_s, self._trim)

    def _trim(self) -> None:
        self._trimming = False
        self._cut_oldest(self.limits.max_pending)

    def _cut_oldest(self, keep: int) -> None:
        """Cut the oldest connections waiting for their token, down to *keep*."""
        while len(self._pending) > keep:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            oldest.cancel()

    async def _handle(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        sent: int | None = None,
    ) -> None:
        task = asyncio.current_task()
        decoder = LineDecoder(self.limits.line_max)
        try:
            try:
                async with asyncio.timeout(self.limits.token_timeout_s):
                    lines = await _read_lines(reader, decoder)
            finally:
                self._pending.pop(task, None)  # type: ignore[arg-type]
            token, rest = lines[0], lines[1:]
            if self.control_token and self.control_token.matches(token):
                await self._serve_control(reader, writer, decoder, rest)
                return
            build = self._find_build(token)
            if build is None:
                self._log(f"{_peer(writer)}: unknown token, closed")
                return
            await self._serve_build(build, reader, writer, sent)
        except (ProtocolError, TimeoutError, OSError, _PeerClosed) as err:
            self._log(f"{_peer(writer)}: {type(err).__name__} {err}")
        except Exception as err:
            # A bug here must cost one connection, never the build's control.
            print(f"bcrun: internal error on {_peer(writer)}: {err!r}", file=sys.stderr)
        finally:
            writer.transport.abort()

    def _find_build(self, line: str) -> Build | None:
        number = token_number(line)
        build = self.builds.get(number) if number else None
        if build is None or not build.token.matches(line):
            return None
        return build

    async def _serve_build(
        self,
        build: Build,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        sent: int | None = None,
    ) -> None:
        build.connections.add(writer)
        self._log(f"{_peer(writer)}: build {build.number} connected")
        try:
            if build.count is not None and build.count != sent:
                self._send(writer, format_count(build.count))
            # Build programs send nothing after the token: read only to see EOF.
            while await reader.read(READ_SIZE):
                pass
        finally:
            build.connections.discard(writer)
            if build.forget_when_idle and not build.connections:
                self.builds.pop(build.number, None)
                self._log(f"build {build.number} forgotten")

    async def _serve_control(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: LineDecoder,
        lines: list[str],
    ) -> None:
        self.control_connections.add(writer)
        try:
            while True:
                for line in lines:
                    command, reply = self.run_command(line)
                    writer.write(b"".join(format_line(text) for text in reply))
                    async with asyncio.timeout(self.limits.token_timeout_s):
                        await writer.drain()
                    if isinstance(command, Quit):
                        return
                lines = await _read_lines(reader, decoder)
        finally:
            self.control_connections.discard(writer)

    def run_command(self, line: str) -> tuple[Command | None, list[str]]:
        """Parse and carry out one control line; the reply ends ``ok`` or
        ``error: ...``."""
        try:
            command = parse_command(line)
            if self.controller is None:
                raise ControlError("no controller")
            return command, [*self.controller.execute(command), "ok"]
        except ControlError as err:
            return None, [f"error: {err}"]

    def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if writer.is_closing():
            return
        writer.write(data)
        # A peer that does not read is cut off rather than buffered for.
        if writer.transport.get_write_buffer_size() > self.limits.write_buffer_max:
            self._log(f"{_peer(writer)}: not reading, closed")
            writer.transport.abort()

    def _log(self, message: str) -> None:
        if self._debug is not None:
            self._debug(message)


async def _read_lines(reader: asyncio.StreamReader, decoder: LineDecoder) -> list[str]:
    """The next complete lines from *reader*; raises _PeerClosed at EOF."""
    while True:
        data = await reader.read(READ_SIZE)
        if not data:
            raise _PeerClosed("closed")
        lines = decoder.feed(data)
        if lines:
            return lines


def _peer(writer: asyncio.StreamWriter) -> str:
    sock = writer.get_extra_info("socket")
    name = writer.get_extra_info("peername")
    fd = sock.fileno() if sock is not None else -1
    return f"fd {fd}" + (f" {name}" if name else "")


def describe_connections(hub: Hub) -> list[str]:
    """Human lines for ``dump``: each build, then its connections."""
    lines = []
    for number, build in sorted(hub.builds.items()):
        count = "-" if build.count is None else str(build.count)
        lines.append(
            f"builder {number}: jobs {count}, {len(build.connections)} connection(s)"
        )
        lines.extend(f"  {_peer(writer)}" for writer in build.connections)
    lines.append(f"control connections: {len(hub.control_connections)}")
    return lines
