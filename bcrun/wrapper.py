"""``bcrun COMMAND``: run one build and serve its control in this process.

Who owns what: :func:`run_build` owns the instance directory, the hub (which
owns the listener and every connection) and a task group holding the policy
ticker.  Each lives exactly as long as the build: when the child exits, the
ticker is cancelled, the hub closes every connection, and the directory with
its socket is removed, whatever the exit path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from bcrun.commands import HELP, Command, Dump, Help, New, Quit, SetJobs, Status
from bcrun.detect import Plan
from bcrun.errors import BcrunError, ControlError
from bcrun.governor import Governor
from bcrun.instances import InstanceDir
from bcrun.jobserver import JobserverPool
from bcrun.launcher import ExitStatus, SignalRelay, spawn
from bcrun.metrics import jobserver_use, sample
from bcrun.policies import Policy
from bcrun.protocol import Token
from bcrun.server import Build, Hub, describe_connections
from bcrun.settings import Settings

#: Seconds between two checks for jobserver tokens lost with a killed client.
TOKEN_CHECK_S = 0.5

#: The wrapper serves one build, always number 1.
BUILD_NUMBER = 1


class Wrapper:
    """The state of one wrapped build, and the commands that change it."""

    def __init__(
        self, control: Plan, governor: Governor, verbose: bool = False
    ) -> None:
        self.control = control
        #: The jobserver the build draws from, when it is driven through one.
        self.pool: JobserverPool | None = None
        #: Jobs the build runs whatever the count: one per running client.
        self.floor = 1
        self.governor = governor
        self.verbose = verbose
        self.started = time.time()
        self.hub = Hub(control_token=Token.new(0), controller=self)
        self.build: Build = self.hub.add_build(Token.new(BUILD_NUMBER))
        self._warned = False

    @property
    def argv(self) -> list[str]:
        return self.control.argv

    # -- the count ---------------------------------------------------------

    def apply(self) -> None:
        """Send the governor's count if it changed."""
        old, new = self.build.count, self.governor.count
        if old == new:
            return
        if self.verbose and old is not None:
            print(
                f"bcrun: {old} -> {new} jobs: {self.governor.reason}", file=sys.stderr
            )
        self.hub.set_count(self.build, new)
        if self.pool is not None:
            self.pool.resize(new)

    def step(self, delta: int) -> None:
        self.governor.step(delta)
        self.apply()

    def update(self) -> None:
        """Sample the machine, let the policies decide, send any change.

        A failed sample keeps the count in force: the build must never
        suffer for a metric bcrun could not read.
        """
        try:
            self.governor.decide(sample())
        except BcrunError as err:
            # Only worth a word when a policy needed what could not be read.
            if self.governor.needs_metrics and not self._warned:
                print(f"bcrun: {err}; keeping the job count", file=sys.stderr)
                self._warned = True
        self.apply()

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(self.governor.settings.tick_s)
            self.update()

    async def supervise(self, child: asyncio.subprocess.Process) -> int:
        """Tick the policies, and mind the jobserver's tokens, while *child*
        runs; return its returncode."""
        async with asyncio.TaskGroup() as tasks:
            helpers = []
            if self.governor.needs_metrics:
                helpers.append(tasks.create_task(self.tick()))
            if self.pool is not None and self.control.clients:
                helpers.append(tasks.create_task(self.mind_tokens(child.pid)))
            returncode = await child.wait()
            for helper in helpers:
                helper.cancel()
        return returncode

    async def mind_tokens(self, root: int) -> None:
        """Give back the tokens that died with a killed client, so the build
        does not go on below its count."""
        assert self.pool is not None
        reported = None
        while True:
            await asyncio.sleep(TOKEN_CHECK_S)
            use = jobserver_use(root, self.control.clients)
            self.floor = use.clients
            lost = self.pool.reconcile(use.holding)
            if lost and self.verbose:
                print(
                    f"bcrun: restored {lost} jobserver token(s) lost by a killed client",
                    file=sys.stderr,
                )
            count = self.governor.count
            if use.clients > count and reported != (count, use.clients):
                print(
                    f"bcrun: the build may run {use.clients} job(s) at a count of "
                    f"{count}: each of its {use.clients} running make/ninja "
                    "processes keeps one job slot (the jobserver floor)",
                    file=sys.stderr,
                )
                reported = (count, use.clients)

    # -- control commands --------------------------------------------------

    def execute(self, command: Command) -> list[str]:
        if isinstance(command, SetJobs):
            self._set_jobs(command)
            return [self._summary()]
        if isinstance(command, Status):
            return [json.dumps(self.status())]
        if isinstance(command, Dump):
            return [self._summary(), *describe_connections(self.hub)]
        if isinstance(command, Help):
            return HELP
        if isinstance(command, Quit):
            return []
        assert isinstance(command, New)
        raise ControlError("'new' needs bcrun serve; this bcrun runs one build")

    def _set_jobs(self, command: SetJobs) -> None:
        if command.build != BUILD_NUMBER:
            raise ControlError(f"no builder {command.build}: this bcrun runs builder 1")
        match command.value:
            case "auto":
                self.governor.unpin()
            case "pause":
                self.governor.pause()
            case "resume":
                self.governor.resume()
            case int(count):
                self.governor.pin(count)
        self.apply()

    def _summary(self) -> str:
        return f"jobs {self.governor.count} ({self.governor.reason})"

    def status(self) -> dict[str, Any]:
        """What ``bcrun status`` shows of this build (never the tokens)."""
        return {
            "pid": os.getpid(),
            "argv": self.argv,
            "started": self.started,
            "jobs": self.governor.count,
            "mode": self.governor.mode,
            "policy": ",".join(p.name for p in self.governor.policies),
            "reason": self.governor.reason,
            "clients": len(self.build.connections),
            "via": self.control.via,
            "tool": self.control.tool,
            "tokens": None if self.pool is None else self.pool.tokens,
            "floor": None if self.pool is None else self.floor,
        }


async def run_build(
    control: Plan,
    policies: Sequence[Policy],
    settings: Settings,
    verbose: bool = False,
) -> ExitStatus:
    """Run the planned command under control until it ends; return how it
    ended."""
    wrapper = Wrapper(control, Governor(policies, settings), verbose)
    assert wrapper.hub.control_token is not None
    with (
        InstanceDir(wrapper.argv, wrapper.hub.control_token) as instance,
        contextlib.ExitStack() as cleanup,
    ):
        for reason in instance.passed_over:
            print(f"bcrun: warning: {reason}", file=sys.stderr)
        env = dict(os.environ)
        for name in control.unset:
            env.pop(name, None)
        if control.via == "jobserver":
            assert control.style is not None
            wrapper.pool = cleanup.enter_context(
                JobserverPool(control.style, instance.path)
            )
            flags = f"{control.makeflags or ''} --jobserver-auth={wrapper.pool.auth}"
            env["MAKEFLAGS"] = flags.strip()
        async with wrapper.hub:
            socket_path = await wrapper.hub.listen_unix(instance.socket)
            # The first count exists before the build can ask for it.
            wrapper.update()
            env["BUILDSOCKET"] = socket_path
            env["BUILDTOKEN"] = str(wrapper.build.token)
            handlers = {
                signal.SIGUSR1: lambda: wrapper.step(+1),
                signal.SIGUSR2: lambda: wrapper.step(-1),
            }
            with SignalRelay(handlers) as relay:
                pass_fds = wrapper.pool.pass_fds if wrapper.pool else ()
                child = await spawn(wrapper.argv, env, pass_fds)
                relay.attach(child.pid)
                returncode = await wrapper.supervise(child)
    return ExitStatus.from_returncode(returncode)
