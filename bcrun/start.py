"""``bcrun COMMAND``, up to the moment the build runs.

bcrun is put in front of every build, so the build must start as soon as
Python has: everything up to the build's exec imports only what it uses
(no click, psutil, asyncio or sampler), and the rest (the event loop, the
hub, the policies and the sampler) is imported while the build starts:

1. plan how the command obeys (bcrun.detect); a command that runs no job,
   or asks for a serial build, is simply executed, as it is;
2. work out the first count (bcrun.startcount);
3. make the runtime directory, bind the socket, fill the jobserver;
4. record the signals that come meanwhile, start the build, and answer its
   connections with the first count (bcrun.listener.Greeter);
5. hand all that to bcrun.wrapper, which serves the build until it ends.

Everything made here is removed when the build ends, whatever the exit
path; before the build runs, a failure undoes what was made.
"""

from __future__ import annotations

import _socket
import contextlib
import importlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from bcrun.cgroup import CpuLimit
from bcrun.detect import NOT_FOUND, Plan, plan
from bcrun.errors import ConfigError, LaunchError
from bcrun.instances import InstanceDir
from bcrun.jobserver import JobserverPool
from bcrun.launcher import (
    RELAYED,
    EarlySignals,
    ExitStatus,
    Process,
    exec_as_is,
    spawn,
)
from bcrun.listener import Greeter, bind_unix
from bcrun.protocol import Token
from bcrun.startcount import cpu_capacity, default_jobs, start_count
from bcrun.units import Size

if TYPE_CHECKING:
    from bcrun.schedule import Schedule

#: Status for bcrun's own errors, as nice(1) and env(1) use it.
EXIT_ERROR = 125

#: Seconds bcrun waits, before it imports the rest, for a patched tool to
#: ask for its first count, and how often it looks whether the build ended.
FIRST_ANSWER_S = 0.05
FIRST_ANSWER_STEP_S = 0.002

#: What serving a build imports, in steps of a millisecond or two (the
#: event loop is most of it); bcrun.wrapper imports whatever is left.
SERVING_MODULES = (
    "selectors",
    "socket",
    "logging",
    "concurrent.futures",
    "ssl",
    "inspect",
    "asyncio.coroutines",
    "asyncio.events",
    "asyncio.base_events",
    "asyncio",
    "dataclasses",
    "json",
    "subprocess",
    "bcrun.server",
    "bcrun.buildtree",
    "bcrun.metrics",
    "bcrun.policies",
    "bcrun.wrapper",
)


class RunRequest(NamedTuple):
    """``bcrun [OPTIONS] COMMAND``: the options of cli.run, by the names of
    its parameters, and the policies by name."""

    command: list[str]
    jobs: int | None = None
    policies: tuple[str, ...] = ("fixed",)
    min_jobs: int = 0
    max_jobs: int | None = None
    load: float | None = None
    mem_reserve: Size | None = None
    freeze: bool = False
    active_jobs: int | None = None
    idle_after: float = 300.0
    schedule: Schedule = ()
    nice: int | None = None
    trace: Path | None = None
    tick: float = 0.5
    via: str = "auto"
    explain: bool = False
    verbose: bool = False


class Started:
    """A build that runs, and what bcrun made for it, for bcrun.wrapper.
    (A plain class: a named tuple's is ten times slower to make.)"""

    def __init__(
        self,
        control: Plan,
        process: Process,
        instance: InstanceDir,
        listener: _socket.socket,
        greeter: Greeter,
        pool: JobserverPool | None,
        signals: EarlySignals,
        reserve: DescriptorReserve,
        env: dict[str, str],
        tokens: tuple[Token, Token],
        first_count: int,
    ) -> None:
        self.control = control
        self.process = process
        self.instance = instance
        self.listener = listener
        self.greeter = greeter
        self.pool = pool
        self.signals = signals
        #: Descriptors kept for the event loop, to be released as it starts.
        self.reserve = reserve
        #: The build's environment.
        self.env = env
        self.control_token, self.build_token = tokens
        #: The count the build started at.
        self.first_count = first_count


def run(request: RunRequest) -> ExitStatus | int:
    """Run the build *request* asks for; return how it ended (or 0 after
    --explain)."""
    control = plan(request.command, os.environ, request.via, request.jobs is not None)
    if request.explain:
        print(control.explain())
        for notice in control.notices:
            print(notice)
        if control.via == "direct":
            return 0  # no count: the command runs in bcrun's place
        print(explain_count(control.jobs, request, cpu_capacity()))
        from bcrun.remote import engine_of  # --explain only: not a start-up

        engine = engine_of(request.command, os.environ)
        if engine is not None:
            print(explain_remote(engine, request.policies))
        return 0
    if control.via == "direct":
        if request.verbose:
            print(f"bcrun: {control.explain()}", file=sys.stderr)
        exec_as_is(control.argv, os.environ)
    with contextlib.ExitStack() as stack:
        trace = None
        if request.trace is not None:
            try:
                trace = stack.enter_context(open(request.trace, "w", encoding="utf-8"))
            except OSError as err:
                raise ConfigError(f"--trace {request.trace}: {err.strerror}") from err
        if request.verbose:
            # Said only when asked: behind `alias make='bcrun make'`, the
            # output is the tool's own.
            for notice in control.notices:
                print(f"bcrun: {notice}", file=sys.stderr)
            if control.via == "none" and control.reason != NOT_FOUND:
                print(
                    f"bcrun: {control.tool} is neither a patched tool nor a "
                    f"jobserver client bcrun knows ({control.reason}): only what "
                    "in it reads BUILDSOCKET obeys",
                    file=sys.stderr,
                )
        # bcrun's -j, else a -jN bcrun took off the tool's command line (what
        # the user meant), else the CPUs; bcrun.wrapper checks the last with
        # the sampler's own reading.
        jobs = request.jobs
        if jobs is None:
            jobs = control.jobs or default_jobs(cpu_capacity())
        count = start_count(
            jobs,
            request.policies,
            min_jobs=request.min_jobs,
            max_jobs=request.max_jobs,
            mem_reserve=request.mem_reserve,
            active_jobs=request.active_jobs,
            schedule=request.schedule,
        )
        started = stack.enter_context(start_build(control, count, request.nice))
        if control.via == "protocol":
            # A patched tool asks for its count as it starts, and waits for
            # it: let it have the CPU, and the greeter the GIL, until then.
            deadline = time.monotonic() + FIRST_ANSWER_S
            while not started.greeter.answered.wait(FIRST_ANSWER_STEP_S):
                if time.monotonic() > deadline or started.process.poll() is not None:
                    break
        # The build runs: now the event loop, the hub, the policies, in
        # steps, between which a build shorter than bcrun's start (``make``
        # in an up-to-date tree) is seen to have ended: nothing is left to
        # serve then, and bcrun ends at once, as the build did.
        for module in SERVING_MODULES:
            returncode = started.process.poll()
            if returncode is not None:
                return ExitStatus.from_returncode(returncode)
            importlib.import_module(module)
        from bcrun.wrapper import serve_build

        return serve_build(started, request, trace)


@contextlib.contextmanager
def start_build(control: Plan, count: int, nice: int | None) -> Iterator[Started]:
    """Start *control*'s build at *count* jobs: its runtime directory, its
    listening socket, its jobserver filled, its process; yield it running.
    Leaving removes all but the process."""
    control_token, build_token = Token.new(0), Token.new(1)
    with contextlib.ExitStack() as stack:
        instance = stack.enter_context(InstanceDir(control.argv, control_token))
        for reason in instance.passed_over:
            print(f"bcrun: warning: {reason}", file=sys.stderr)
        listener = bind_unix(instance.socket)
        stack.callback(listener.close)
        env = dict(os.environ)
        for name in control.unset:
            env.pop(name, None)
        pool = None
        if control.via == "jobserver":
            assert control.style is not None
            # Clients bcrun cannot name (cargo's) cannot be braked.
            pool = JobserverPool(
                control.style, instance.path, routed=not control.clients
            )
            stack.callback(pool.close)
            pool.resize(count)
            flags = f"{control.makeflags or ''} --jobserver-auth={pool.auth}"
            env["MAKEFLAGS"] = flags.strip()
        env["BUILDSOCKET"] = os.fspath(instance.socket)
        env["BUILDTOKEN"] = str(build_token)
        greeter = Greeter(listener, build_token, count, control_token)
        stack.callback(greeter.close)
        reserve = stack.enter_context(DescriptorReserve(LOOP_DESCRIPTORS))
        if nice is not None:
            from bcrun.priority import autogroup_niced

            # The session's autogroup is bcrun's too: niced before the build.
            failed = stack.enter_context(autogroup_niced(os.getpid(), nice))
            if failed:
                print(f"bcrun: warning: {failed}", file=sys.stderr)
        signals = stack.enter_context(EarlySignals(RELAYED))
        process = spawn(control.argv, env, pool.pass_fds if pool else (), nice)
        instance.note_build(process.pid)
        greeter.start()
        yield Started(
            control,
            process,
            instance,
            listener,
            greeter,
            pool,
            signals,
            reserve,
            env,
            (control_token, build_token),
            count,
        )


def explain_remote(engine: str, policies: Sequence[str]) -> str:
    """What --explain says of a distributed compiler the build uses."""
    from bcrun.remote import read_remote

    remote = read_remote(engine, os.environ)
    said = remote.source if remote else f"{engine}: no remote capacity found"
    if "adaptive" not in policies:
        return f"{said}; only --policy adaptive follows it"
    return (
        f"{said}; adaptive: up to those slots plus the local room, as many jobs "
        "as keep the local runnable load at the target, at what a job of this "
        "build costs here (learned while it runs); hosts re-read every 3 s"
    )


def explain_count(taken: int | None, request: RunRequest, capacity: CpuLimit) -> str:
    """What --explain says of the count: where -j comes from, and the
    adaptive target."""
    if request.jobs is not None:
        said = f"-j {request.jobs} (bcrun's -j)"
    elif taken:  # -j0: no count (ninja: unlimited); the CPUs are used
        said = f"-j {taken} (the tool's own -j)"
    else:
        said = f"-j {default_jobs(capacity)} ({capacity.source})"
    if "adaptive" in request.policies:
        target = (
            f"--load {request.load:g}" if request.load is not None else capacity.source
        )
        said += f"; adaptive target: {target}, shared with other bcrun builds"
    return f"count: {said}"


#: Descriptors the event loop takes once the build runs: an epoll, its
#: self-pipe (two), a pidfd for the build.
LOOP_DESCRIPTORS = 4


class DescriptorReserve:
    """*count* descriptors taken before the build starts and released for
    the event loop once it has: at a low RLIMIT_NOFILE bcrun fails in one
    line before the build starts, not with a traceback after."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.fds: list[int] = []

    def __enter__(self) -> DescriptorReserve:
        try:
            for _ in range(self.count):
                self.fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        except OSError as err:
            self.release()
            raise LaunchError(f"cannot start: {err.strerror}", EXIT_ERROR) from err
        return self

    def release(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()

    def __exit__(self, *exc_info: object) -> None:
        self.release()
