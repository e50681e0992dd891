"""``bcrun COMMAND``: serve one build's control in this process.

The build has been started by bcrun.start, which owns the instance
directory, the listening socket and the jobserver; :func:`run_build` owns
the hub (which takes over the listener, and the connections the greeter
answered, and owns every connection) and a task group holding the policy
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
from typing import Any, TextIO

from bcrun.buildtree import BCRUN, TOOLS
from bcrun.commands import HELP, Command, Dump, Help, New, Quit, SetJobs, Status
from bcrun.detect import Plan
from bcrun.errors import BcrunError, ControlError
from bcrun.governor import Governor
from bcrun.guardian import Guardian
from bcrun.jobserver import JobserverPool
from bcrun.launcher import ExitStatus, Process, SignalRelay, wait_exit
from bcrun.metrics import (
    SCAN_PERSIST_S,
    JobserverUse,
    Metrics,
    Sampler,
    jobserver_use,
)
from bcrun.policies import POLICIES, Policy, targets
from bcrun.policies.memory import freeze_step
from bcrun.proc import name_self
from bcrun.protocol import Token
from bcrun.remote import engine_of, read_remote
from bcrun.server import Build, Hub, describe_connections
from bcrun.settings import Settings
from bcrun.start import RunRequest, Started
from bcrun.startcount import cpu_capacity, default_jobs

#: Seconds between two checks for jobserver tokens lost with a killed client.
TOKEN_CHECK_S = 0.5
#: A client holds a token for a moment between taking it and starting a
#: job, and with short jobs it often does (a build of 20,000 `true` jobs had
#: a token "restored" that way, and ran above its count), longer on a busy
#: machine; meanwhile it is not asleep.  So tokens count as lost only when
#: missing at each of CONFIRM_LOOKS + 1 looks CONFIRM_S apart at which every
#: client sleeps, at LOSS_CHECKS checks in a row.
CONFIRM_LOOKS = 5
CONFIRM_S = 0.05
LOSS_CHECKS = 3

#: Seconds between two reads of a distributed compiler's hosts.
REMOTE_S = 3.0

#: The wrapper serves one build, always number 1.
BUILD_NUMBER = 1


class Wrapper:
    """The state of one wrapped build, and the commands that change it."""

    def __init__(
        self,
        control: Plan,
        governor: Governor,
        verbose: bool = False,
        trace: TextIO | None = None,
        tokens: tuple[Token, Token] | None = None,
    ) -> None:
        self.control = control
        #: The jobserver the build draws from, when it is driven through one.
        self.pool: JobserverPool | None = None
        #: Jobs the build runs whatever the count: one per running client.
        self.floor = 1
        self.governor = governor
        self.verbose = verbose
        self.started = time.time()
        control_token, build_token = tokens or (Token.new(0), Token.new(BUILD_NUMBER))
        self.hub = Hub(control_token=control_token, controller=self)
        self.build: Build = self.hub.add_build(build_token)
        #: Whether the first count has been decided (and said, under -v).
        self._decided = False
        self.sampler = Sampler(tools=TOOLS | control.clients)
        #: The last sample of the machine, for status and the trace.
        self.metrics: Metrics | None = None
        #: Where one JSON line per tick goes (--trace).
        self.trace = trace
        #: Jobs stopped by --freeze: pid -> the pids of the job's processes.
        self.frozen: dict[int, tuple[int, ...]] = {}
        #: Continues them should bcrun be killed while they are stopped.
        self.guardian = Guardian()
        #: Set once a signal is ending the build.
        self.ending = False
        self._warned = False

    @property
    def argv(self) -> list[str]:
        return self.control.argv

    # -- the count ---------------------------------------------------------

    def apply(self) -> None:
        """Send the governor's count if it changed (and say the first one,
        under -v, whether or not the build started at it)."""
        old, new = self.build.count, self.governor.count
        first, self._decided = not self._decided, True
        if old == new and not first:
            return
        if self.verbose:
            change = f"starting at {new}" if first else f"{old} -> {new}"
            print(f"bcrun: {change} jobs: {self.governor.reason}", file=sys.stderr)
        if old == new:
            return
        self.hub.set_count(self.build, new)
        if self.pool is not None:
            self.pool.resize(new)

    def step(self, delta: int) -> None:
        self.governor.step(delta)
        self.apply()

    @property
    def samples(self) -> bool:
        """Whether the machine is sampled each tick."""
        return (
            self.governor.needs_metrics
            or self.trace is not None
            or self.governor.settings.freeze
        )

    def update(self) -> None:
        """Sample the machine, let the policies decide, send any change.

        A failed sample keeps the count in force: the build must never
        suffer for a metric bcrun could not read.
        """
        if self.samples:
            try:
                self.metrics = self.sampler.sample()
            except BcrunError as err:
                # Only worth a word when a policy needed what could not be read.
                if self.governor.needs_metrics and not self._warned:
                    print(f"bcrun: {err}; keeping the job count", file=sys.stderr)
                    self._warned = True
            else:
                self.governor.decide(self.metrics)
        else:
            # Policies that need no metrics (fixed) decide from none.
            self.governor.decide(Metrics())
        self.apply()
        if self.metrics is not None:
            if self.governor.settings.freeze and not self.ending:
                self.freeze(self.metrics)
            if self.trace is not None:
                self.write_trace(self.metrics)

    def freeze(self, metrics: Metrics) -> None:
        """--freeze: stop or continue one job as memory requires."""
        alive = {job.pid for job in metrics.jobs}
        for pid in [pid for pid in self.frozen if pid not in alive]:
            del self.frozen[pid]
        step = freeze_step(metrics, list(self.frozen), self.governor.settings)
        if step.stop is not None:
            job = next(job for job in metrics.jobs if job.pid == step.stop)
            self.frozen[job.pid] = job.pids
            for pid in job.pids:
                self.guardian.protect(pid)
            _signal_all(job.pids, signal.SIGSTOP)
        if step.resume is not None:
            _signal_all(self.frozen.pop(step.resume), signal.SIGCONT)
        if step.reason:
            # Always said: a stopped job looks like a hung one.
            print(f"bcrun: {step.reason}", file=sys.stderr)

    def end(self) -> None:
        """The build is being ended by a signal: stop no more jobs, and
        continue the stopped ones so that they can end."""
        self.ending = True
        self.thaw()

    def thaw(self) -> None:
        """Continue every job --freeze stopped: none is left stopped."""
        for pids in self.frozen.values():
            _signal_all(pids, signal.SIGCONT)
        self.frozen.clear()

    def write_trace(self, metrics: Metrics) -> None:
        assert self.trace is not None
        line = {
            "time": round(time.time(), 3),
            "elapsed_s": round(time.time() - self.started, 3),
            "jobs": self.governor.count,
            "cap": self.governor.policy_count,
            "mode": self.governor.mode,
            "policy": self.policy_names,
            "reason": self.governor.reason,
            **metrics.summary(),
            **targets(self.governor.policies, metrics, self.governor.settings),
        }
        try:
            self.trace.write(json.dumps(line) + "\n")
            self.trace.flush()
        except OSError as err:
            print(f"bcrun: trace: {err.strerror}; tracing stops", file=sys.stderr)
            self.trace = None

    @property
    def policy_names(self) -> str:
        return ",".join(policy.name for policy in self.governor.policies)

    async def tick(self) -> None:
        """Look every tick from one look's start to the next's, so that a
        slow look (a loaded machine) does not stretch the beat; and sooner
        after a look that saw a new load, which the next one confirms."""
        loop = asyncio.get_running_loop()
        tick_s = self.governor.settings.tick_s
        start = loop.time()
        while True:
            wait = min(tick_s, SCAN_PERSIST_S) if self.sampler.unconfirmed else tick_s
            # A look longer than the tick still leaves the loop half of it.
            await asyncio.sleep(max(start + wait - loop.time(), wait / 2))
            start = loop.time()
            self.update()

    async def watch_remote(self, engine: str, env: dict[str, str]) -> None:
        """Keep the remote hosts' slots current: a host that leaves or
        joins changes the count's ceiling at the next read."""
        while True:
            self.sampler.remote = await asyncio.to_thread(read_remote, engine, env)
            await asyncio.sleep(REMOTE_S)

    async def supervise(self, child: Process, env: dict[str, str] | None = None) -> int:
        """Tick the policies, and mind the jobserver's tokens, while *child*
        runs; return its returncode."""
        self.sampler.root = child.pid
        try:
            async with asyncio.TaskGroup() as tasks:
                helpers = []
                if self.samples:
                    helpers.append(tasks.create_task(self.tick()))
                if self.pool is not None and self.control.clients:
                    helpers.append(tasks.create_task(self.mind_tokens(child.pid)))
                engine = engine_of(self.argv, env or {})
                if engine and "adaptive" in self.policy_names.split(","):
                    helpers.append(
                        tasks.create_task(self.watch_remote(engine, env or {}))
                    )
                returncode = await wait_exit(child, asyncio.get_running_loop())
                for helper in helpers:
                    helper.cancel()
        finally:
            self.thaw()
            self.guardian.close()
        return returncode

    async def mind_tokens(self, root: int) -> None:
        """Give back the tokens that died with a killed client, so the build
        does not go on below its count."""
        assert self.pool is not None
        reported = None
        streak: list[int] = []
        while True:
            await asyncio.sleep(TOKEN_CHECK_S)
            use = jobserver_use(root, self.control.clients)
            self.floor = use.clients
            missing = await self.lasting_missing(root, use)
            streak = [*streak, missing][-LOSS_CHECKS:] if missing else []
            if len(streak) == LOSS_CHECKS:
                lost = min(streak)
                self.pool.restore(lost)
                streak = []
                if self.verbose:
                    print(
                        f"bcrun: restored {lost} jobserver token(s) lost by a "
                        "killed client",
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

    async def lasting_missing(self, root: int, use: JobserverUse) -> int:
        """The tokens missing at each of a few looks in a row: a client
        holds one only for a moment between taking it and starting a job,
        and while it does it is not asleep, so a look then says nothing."""
        assert self.pool is not None
        missing: int | None = None
        looks = 0
        for attempt in range(2 * CONFIRM_LOOKS + 1):
            if attempt:
                await asyncio.sleep(CONFIRM_S)
                use = jobserver_use(root, self.control.clients)
            if not use.settled:
                continue
            seen = self.pool.missing(use.holding)
            missing = seen if missing is None else min(missing, seen)
            looks += 1
            if not missing or looks > CONFIRM_LOOKS:
                break
        return missing if missing and looks > CONFIRM_LOOKS else 0

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
            "policy": self.policy_names,
            "reason": self.governor.reason,
            "cap": self.governor.policy_count,
            "clients": len(self.build.connections),
            "via": self.control.via,
            "tool": self.control.tool,
            "tokens": None if self.pool is None else self.pool.tokens,
            "floor": None if self.pool is None else self.floor,
            "metrics": None if self.metrics is None else self.metrics.summary(),
            "frozen": sorted(self.frozen),
        }


def serve_build(
    started: Started, request: RunRequest, trace: TextIO | None = None
) -> ExitStatus:
    """Serve *started*'s control as *request* asks, until the build ends;
    return how it ended."""
    jobs = request.jobs
    if jobs is None:
        # The sampler's own reading of the CPUs, from now on (bcrun.start
        # read them the same way without importing it).
        jobs = started.control.jobs or default_jobs(cpu_capacity())
    settings = Settings(
        jobs=jobs,
        min_jobs=request.min_jobs,
        max_jobs=request.max_jobs,
        tick_s=request.tick,
        load=request.load,
        mem_reserve=request.mem_reserve,
        freeze=request.freeze,
        active_jobs=request.active_jobs,
        idle_after_s=request.idle_after,
        schedule=request.schedule,
    )
    policies = [POLICIES[name] for name in request.policies]
    started.reserve.release()
    return asyncio.run(run_build(started, policies, settings, request.verbose, trace))


async def run_build(
    started: Started,
    policies: Sequence[Policy],
    settings: Settings,
    verbose: bool = False,
    trace: TextIO | None = None,
) -> ExitStatus:
    """Serve the control of the *started* build until it ends; return how
    it ended."""
    # Builds find each other by this name, whoever runs them (python3 -m
    # bcrun is "python3" otherwise); see bcrun.policies.adaptive.
    name_self(BCRUN)
    control, child = started.control, started.process
    wrapper = Wrapper(
        control,
        Governor(policies, settings),
        verbose,
        trace,
        tokens=(started.control_token, started.build_token),
    )
    # The count the build started at, which the greeter sent and the pool
    # holds.
    wrapper.build.count = started.first_count
    with contextlib.ExitStack() as cleanup:
        if "presence" in wrapper.policy_names.split(","):
            # Imported here: ctypes and psutil are a tenth of bcrun's start-up.
            from bcrun.presence import IdleSources

            idle = cleanup.enter_context(IdleSources())
            wrapper.sampler.idle = idle.idle_seconds
        if started.pool is not None:
            wrapper.pool = started.pool
            started.pool.start()
        async with wrapper.hub:
            # The policies' first count, while the greeter still answers;
            # then the hub serves the connections so far, and the socket.
            wrapper.update()
            # Those first: they came before any still in the backlog.
            for connection in started.greeter.stop():
                await wrapper.hub.adopt(connection)
            await wrapper.hub.serve_unix(started.listener, started.instance.socket)
            handlers = {
                signal.SIGUSR1: lambda: wrapper.step(+1),
                signal.SIGUSR2: lambda: wrapper.step(-1),
            }
            relay = SignalRelay(handlers, on_ending=wrapper.end, early=started.signals)
            with relay:
                relay.attach(child.pid)
                if wrapper.pool is not None:
                    wrapper.pool.watch(child.pid, control.clients)
                returncode = await wrapper.supervise(child, started.env)
    return ExitStatus.from_returncode(returncode)


def _signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
