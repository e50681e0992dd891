"""``bcrun serve``: the multi-build server for orchestrators.

It speaks the same protocol through the same :class:`~bcrun.server.Hub` as
the wrapper, with many builds created by ``new`` and counts set by ``N:JOBS``
on standard input or on control connections.  It runs until ``quit`` on
standard input, SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import pwd
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from bcrun.commands import HELP, Command, Dump, Help, New, Quit, SetJobs, Status
from bcrun.errors import BcrunError, ControlError
from bcrun.protocol import Token, UnixAddress, parse_address
from bcrun.server import Build, Hub, describe_connections

#: Builders made by ``new`` that have had no connection yet, at most: each
#: is kept until its build connects, so a control peer could otherwise grow
#: the server without end.
MAX_UNCONNECTED = 4096


class ServeController:
    """Carries out control commands for ``bcrun serve``."""

    def __init__(self, hub: Hub, long_tokens: bool) -> None:
        self.hub = hub
        self.long_tokens = long_tokens
        self.socket_address = ""
        self._next_number = 1
        #: Builds paused with N:pause, and the count N:resume gives back.
        self._paused_from: dict[int, int] = {}
        self.stopped = asyncio.Event()

    def new_build(self, token: Token | None = None) -> Build:
        """A builder made by ``new``: forgotten once its last connection
        closes.  The -t builder, given its *token*, stays."""
        if token is None:
            waiting = sum(
                1
                for build in self.hub.builds.values()
                if build.forget_when_idle and not build.connections
            )
            if waiting >= MAX_UNCONNECTED:
                raise ControlError(
                    f"{waiting} builders have had no connection yet: "
                    "start their builds before making more"
                )
        number = self._next_number
        self._next_number += 1
        if token is not None:
            return self.hub.add_build(token)
        return self.hub.add_build(Token.new(number), forget_when_idle=True)

    def execute(self, command: Command) -> list[str]:
        if isinstance(command, New):
            token = str(self.new_build().token)
            if self.long_tokens:
                return [
                    f"BUILDSOCKET={shlex.quote(self.socket_address)} BUILDTOKEN={token}"
                ]
            return [token]
        if isinstance(command, SetJobs):
            return [self._set_jobs(command)]
        if isinstance(command, Status):
            return [json.dumps(self.status())]
        if isinstance(command, Dump):
            return describe_connections(self.hub)
        if isinstance(command, Help):
            return HELP
        assert isinstance(command, Quit)
        return []

    def _set_jobs(self, command: SetJobs) -> str:
        build = self.hub.builds.get(command.build)
        if build is None:
            raise ControlError(f"no builder {command.build}")
        match command.value:
            case "auto":
                raise ControlError("bcrun serve has no policies: give a count")
            case "pause":
                if build.count is None:
                    raise ControlError(
                        f"builder {build.number} has no count to pause yet"
                    )
                self._paused_from.setdefault(build.number, build.count)
                self.hub.set_count(build, 0)
            case "resume":
                if build.number not in self._paused_from:
                    raise ControlError(f"builder {build.number} is not paused")
                self.hub.set_count(build, self._paused_from.pop(build.number))
            case int(count):
                self._paused_from.pop(build.number, None)
                self.hub.set_count(build, count)
        return f"builder {build.number}: jobs {build.count}"

    def run_stdin_line(self, line: str) -> None:
        """A command typed on standard input: its output without ``ok``."""
        if not line.strip():
            return
        command, reply = self.hub.run_command(line)
        for text in reply:
            if text != "ok":
                print(text, flush=True)
        if isinstance(command, Quit):
            self.stopped.set()

    def status(self) -> dict[str, object]:
        return {
            "pid": os.getpid(),
            "builds": [
                {
                    "number": build.number,
                    "jobs": build.count,
                    "clients": len(build.connections),
                }
                for build in sorted(self.hub.builds.values(), key=lambda b: b.number)
            ],
            "control_clients": len(self.hub.control_connections),
        }


def drop_privileges(user: str, sockets: Sequence[Path]) -> None:
    """Become *user* once the listeners are bound (-u); the unix sockets
    become theirs so that their builds can connect."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise BcrunError(f"-u {user}: no such user") from None
    try:
        for path in sockets:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        os.setgroups([g.gr_gid for g in grp.getgrall() if user in g.gr_mem])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    except PermissionError as err:
        raise BcrunError(f"-u {user}: {err.strerror} (needs root)") from err


def _read_stdin(loop: asyncio.AbstractEventLoop, controller: ServeController) -> None:
    # A thread, because standard input may be a file, which no event loop can
    # watch; daemonic, so that a blocked read never delays the exit.  At end
    # of input the server goes on serving its connections.
    for line in sys.stdin:
        loop.call_soon_threadsafe(controller.run_stdin_line, line)


async def serve(
    addresses: Sequence[str],
    debug: bool = False,
    long_tokens: bool = False,
    test_mode: bool = False,
    user: str | None = None,
) -> None:
    """Serve until ``quit`` on standard input, SIGINT or SIGTERM."""

    def log(message: str) -> None:
        print(f"bcrun serve: {message}", file=sys.stderr, flush=True)

    hub = Hub(control_token=Token.new(0), debug=log if debug else None)
    controller = ServeController(hub, long_tokens)
    hub.controller = controller
    parsed = [parse_address(address) for address in addresses]
    async with hub:
        bound: list[str] = []
        unix_paths: list[Path] = []
        for address in parsed:
            if isinstance(address, UnixAddress):
                # Absolute, so that the BUILDSOCKET given out works anywhere.
                path = Path(os.path.abspath(address.path))
                bound.append(await hub.listen_unix(path, 0o666 if test_mode else 0o600))
                unix_paths.append(path)
            else:
                bound.extend(await hub.listen_inet(address))
        if user is not None:
            drop_privileges(user, unix_paths)
        controller.socket_address = bound[0]
        for name in bound:
            print(f"listening on {name}")
        print(f"control token: {hub.control_token}")
        if test_mode:
            controller.new_build(Token(1, ""))
            print("test mode: builder 1, token 1-")
        sys.stdout.flush()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, controller.stopped.set)
        threading.Thread(
            target=_read_stdin, args=(loop, controller), daemon=True
        ).start()
        try:
            await controller.stopped.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
