"""The command line: every option lives here, and nothing else does.

``bcrun [OPTIONS] [--] COMMAND [ARGS]...`` runs a build (the ``run``
subcommand, implied when the first word is not a subcommand's name);
``bcrun jobs|pause|resume|status`` control running builds; ``bcrun serve``
is the multi-build server.  The common case of ``run`` is read without
click by bcrun.quickargs, which must read it as this module does.

Exit status: the build's own; 125 for bcrun's errors, 126 when COMMAND cannot
be run, 127 when it is not found (as nice(1) and env(1) do).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
from click.shell_completion import CompletionItem

from bcrun import __version__
from bcrun.commands import JobsValue, parse_jobs_value
from bcrun.config import settings_defaults
from bcrun.control import choose_instance, query_status, send_command
from bcrun.errors import BcrunError, ControlError
from bcrun.instances import running_instances
from bcrun.launcher import ExitStatus
from bcrun.main import fail, finish
from bcrun.plot import plot as plot_trace
from bcrun.policies import POLICIES, Policy
from bcrun.protocol import COUNT_MAX
from bcrun.recommend import export_lines
from bcrun.recommend import recommend as recommended
from bcrun.schedule import Schedule, parse_schedule
from bcrun.start import RunRequest
from bcrun.start import run as run_build
from bcrun.units import (
    Size,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)


class PolicyList(click.ParamType):  # type: ignore[type-arg]
    """``--policy a,b``: names of policies, combined by the smallest cap."""

    name = "POLICY[,POLICY...]"

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        given, _, last = incomplete.rpartition(",")
        head = f"{given}," if given else ""
        return [
            CompletionItem(head + name)
            for name in POLICIES
            if name.startswith(last) and name not in given.split(",")
        ]

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> list[Policy]:
        if isinstance(value, list):
            return value
        names = [name.strip() for name in str(value).split(",")]
        unknown = [name for name in names if name not in POLICIES]
        if unknown or not names:
            self.fail(
                f"unknown policy {unknown[0] if unknown else value!r} "
                f"(choose from {', '.join(POLICIES)})",
                param,
                ctx,
            )
        return [POLICIES[name] for name in dict.fromkeys(names)]


class JobsParam(click.ParamType):  # type: ignore[type-arg]
    """A job count, or ``auto``."""

    name = "N|auto"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> JobsValue:
        if value in ("pause", "resume"):
            self.fail(f"use 'bcrun {value}' to {value}", param, ctx)
        try:
            return parse_jobs_value(str(value))
        except BcrunError as err:
            self.fail(str(err), param, ctx)


COUNT = click.IntRange(0, COUNT_MAX)


class SizeParam(click.ParamType):  # type: ignore[type-arg]
    name = "SIZE"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Size:
        if isinstance(value, Size):
            return value
        try:
            return parse_size(str(value))
        except BcrunError as err:
            self.fail(str(err), param, ctx)


class DurationParam(click.ParamType):  # type: ignore[type-arg]
    name = "DURATION"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except BcrunError as err:
            self.fail(str(err), param, ctx)


class ScheduleParam(click.ParamType):  # type: ignore[type-arg]
    name = "RULES"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Schedule:
        if isinstance(value, tuple):
            return value
        try:
            return parse_schedule(str(value))
        except BcrunError as err:
            self.fail(str(err), param, ctx)


class BcrunGroup(click.Group):
    """Runs ``run`` when the first argument names no subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.resilient_parsing and not args:
            # Completing the first word: a subcommand, or a command to run
            # (shell_complete).
            return super().parse_args(ctx, args)
        if not args or args[0] not in {*self.commands, "--help", "-h", "--version"}:
            args = ["run", *args]
        if args[0] == "run" and not ctx.resilient_parsing:
            # The configuration file and BCRUN_* variables: run's defaults.
            ctx.default_map = {"run": settings_defaults(self.commands["run"])}
        return super().parse_args(ctx, args)

    def shell_complete(
        self, ctx: click.Context, incomplete: str
    ) -> list[CompletionItem]:
        """The first word: a subcommand, a command to run, or an option of
        either the group or a build."""
        items = super().shell_complete(ctx, incomplete)
        if incomplete.startswith("-"):
            run_command = self.commands["run"]
            items += run_command.shell_complete(
                click.Context(run_command, parent=ctx, resilient_parsing=True),
                incomplete,
            )
            return items
        return items + _complete_program(incomplete)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage("bcrun", "[OPTIONS] [--] COMMAND [ARGS]...")
        formatter.write_usage("bcrun", "SUBCOMMAND [ARGS]...", prefix="   or: ")

    def format_options(
        self, ctx: click.Context, formatter: click.HelpFormatter
    ) -> None:
        # The options of a build first: they are what 'bcrun [OPTIONS]' means.
        self.commands["run"].format_options(ctx, formatter)
        self.format_commands(ctx, formatter)


class RunCommand(click.Command):
    """``run``: past COMMAND, every word is COMMAND's."""

    def shell_complete(
        self, ctx: click.Context, incomplete: str
    ) -> list[CompletionItem]:
        if ctx.params.get("command"):
            return [CompletionItem(incomplete, type="file")]
        return super().shell_complete(ctx, incomplete)


def _complete_program(incomplete: str) -> list[CompletionItem]:
    """The programs in PATH whose names start with *incomplete*; a path is
    the shell's to complete."""
    if "/" in incomplete:
        return [CompletionItem(incomplete, type="file")]
    found = set()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        try:
            names = os.listdir(directory or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith(incomplete) and os.access(
                os.path.join(directory or ".", name), os.X_OK
            ):
                found.add(name)
    return [CompletionItem(name) for name in sorted(found)]


def _complete_command(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """COMMAND: a program; after it, its own arguments (files)."""
    if ctx.params.get("command"):
        return [CompletionItem(incomplete, type="file")]
    return _complete_program(incomplete)


@click.group(
    cls=BcrunGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Defaults for the options come from ~/.config/bcrun/config.toml "
    '(long names: policy = "adaptive") and BCRUN_* variables '
    "(BCRUN_POLICY=adaptive).  'bcrun SUBCOMMAND --help' tells more of each.  "
    "See bcrun(1).",
)
@click.version_option(__version__, prog_name="bcrun", hidden=True)
def cli() -> None:
    """Run a build whose number of parallel jobs can change while it runs.

    bcrun starts COMMAND with BUILDSOCKET and BUILDTOKEN in its environment
    and serves the build-control protocol on that socket, sending the build
    the job count its policy chooses, or the one you set with 'bcrun jobs'.
    """


@cli.command(
    cls=RunCommand,
    context_settings={"allow_interspersed_args": False},
    short_help="Run COMMAND under control (the default subcommand).",
)
@click.option(
    "-j",
    "--jobs",
    type=COUNT,
    default=None,
    metavar="N",
    help="The job count: the fixed policy's, and the most the other policies "
    "give [default: COMMAND's own -jN (or MAKEFLAGS'), else the CPUs bcrun "
    "may use].",
)
@click.option(
    "-p",
    "--policy",
    "policies",
    type=PolicyList(),
    default="fixed",
    show_default=True,
    help=f"Policies to combine, the smallest cap winning: {', '.join(POLICIES)}.",
)
@click.option("--min-jobs", type=COUNT, default=0, metavar="N", help="Never fewer.")
@click.option("--max-jobs", type=COUNT, default=None, metavar="N", help="Never more.")
@click.option(
    "--load",
    type=click.FloatRange(0.1, COUNT_MAX),
    default=None,
    metavar="LOAD",
    help="adaptive: the runnable tasks to keep the machine at [default: its CPUs].",
)
@click.option(
    "--mem-reserve",
    type=SizeParam(),
    default=None,
    help="memory: what to keep available, like 2G or 10% [default: 10%, at most 4G].",
)
@click.option(
    "--freeze",
    is_flag=True,
    help="memory: stop the youngest jobs when memory is critically short "
    "(under half the reserve), continue them when it recovers.",
)
@click.option(
    "--active-jobs",
    type=COUNT,
    default=None,
    metavar="N",
    help="presence: jobs while you use this machine; 0 pauses "
    "[default: half the CPUs, at least 1].",
)
@click.option(
    "--idle-after",
    type=DurationParam(),
    default="5m",
    show_default=True,
    help="presence: no input for this long means you are away.",
)
@click.option(
    "--schedule",
    type=ScheduleParam(),
    default="",
    help="schedule: caps by time, like 'mon-fri 9:00-18:00 2; sat,sun pause'.",
)
@click.option(
    "--nice",
    type=click.IntRange(-20, 19),
    default=None,
    metavar="N",
    help="Run the build at nice value N, and its terminal session's autogroup too.",
)
@click.option(
    "--trace",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="Write one JSON line per tick to FILE (see 'bcrun plot').",
)
@click.option(
    "--tick",
    type=click.FloatRange(0.05, 60),
    default=0.5,
    show_default=True,
    metavar="SECONDS",
    help="How often policies sample the machine (and 0.4 s after a look that saw a new load).",
)
@click.option(
    "--via",
    type=click.Choice(["auto", "protocol", "jobserver"]),
    default="auto",
    show_default=True,
    help="How the build obeys: a patched tool's protocol, or a jobserver "
    "(stock GNU make, ninja >= 1.13, cargo).",
)
@click.option(
    "--explain", is_flag=True, help="Say how COMMAND would be controlled, and exit."
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Say how COMMAND is controlled, and each change and why.",
)
@click.argument(
    "command",
    nargs=-1,
    required=True,
    type=click.UNPROCESSED,
    shell_complete=_complete_command,
)
def run(
    jobs: int | None,
    policies: list[Policy],
    min_jobs: int,
    max_jobs: int | None,
    load: float | None,
    mem_reserve: Size | None,
    freeze: bool,
    active_jobs: int | None,
    idle_after: float,
    schedule: Schedule,
    nice: int | None,
    trace: Path | None,
    tick: float,
    via: str,
    explain: bool,
    verbose: bool,
    command: Sequence[str],
) -> ExitStatus | int:
    """Run COMMAND with BUILDSOCKET and BUILDTOKEN set and control its jobs.

    Options after COMMAND belong to COMMAND: 'bcrun -j 4 make -k' gives -k
    to make.  Use '--' before a COMMAND named like a subcommand.
    """
    if max_jobs is not None and max_jobs < min_jobs:
        raise click.BadParameter(
            f"{max_jobs} is below --min-jobs {min_jobs}", param_hint="--max-jobs"
        )
    if "schedule" in {policy.name for policy in policies} and not schedule:
        raise click.BadParameter(
            "the schedule policy needs --schedule RULES", param_hint="--policy"
        )
    return run_build(
        RunRequest(
            command=list(command),
            jobs=jobs,
            policies=tuple(policy.name for policy in policies),
            min_jobs=min_jobs,
            max_jobs=max_jobs,
            load=load,
            mem_reserve=mem_reserve,
            freeze=freeze,
            active_jobs=active_jobs,
            idle_after=idle_after,
            schedule=schedule,
            nice=nice,
            trace=trace,
            tick=tick,
            via=via,
            explain=explain,
            verbose=verbose,
        )
    )


pid_option = click.option(
    "--pid", type=int, default=None, help="The bcrun to control, when several run."
)


@cli.command()
@click.argument("value", type=JobsParam(), required=False, metavar="N|auto")
@pid_option
@click.option(
    "--recommend",
    is_flag=True,
    help="Print the count bcrun would start a build at here and now: the CPUs "
    "this process may use (cgroup quotas too), at most what fits in memory.",
)
@click.option(
    "--export",
    type=click.Choice(["sh", "env"]),
    is_flag=False,
    flag_value="sh",
    default=None,
    help="With --recommend: print the variables that carry the count to "
    "make, cargo, cmake, ctest, samurai and Debian builds, as 'export "
    "NAME=VALUE' for sh, or NAME=VALUE lines for an env file (=env).",
)
@click.option(
    "--job-memory",
    type=SizeParam(),
    default=None,
    help="With --recommend: what one job of the build takes at most "
    "[default: the memory policy's 512M].",
)
@click.option(
    "--mem-reserve",
    type=SizeParam(),
    default=None,
    help="With --recommend: the memory to leave available [default: 10%, at most 4G].",
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="With --recommend: say where the count comes from.",
)
@click.pass_context
def jobs(
    ctx: click.Context,
    value: JobsValue | None,
    pid: int | None,
    recommend: bool,
    export: str | None,
    job_memory: Size | None,
    mem_reserve: Size | None,
    verbose: bool,
) -> None:
    """Set a running build's job count: N pins it, 'auto' hands it back
    to the policy.  With --recommend, print the count for a build bcrun
    does not run."""
    if not recommend:
        alone = (("--export", export), ("--job-memory", job_memory))
        for name, given in (*alone, ("--mem-reserve", mem_reserve)):
            if given is not None:
                raise click.UsageError(f"{name} goes with --recommend")
        if value is None:
            raise click.MissingParameter(ctx=ctx, param=ctx.command.params[0])
        _command(pid, f"1:{value}")
        return
    if value is not None or pid is not None:
        raise click.UsageError("--recommend takes no count and no --pid")
    if job_memory is not None and job_memory.bytes is None:
        raise click.BadParameter("a size, not a percentage", param_hint="--job-memory")
    if mem_reserve is None:
        # The memory policy's reserve as the build's settings give it.
        mem_reserve = settings_defaults(run).get("mem_reserve")
    count, reason = recommended(
        job_memory.bytes if job_memory is not None else None, mem_reserve
    )
    if verbose:
        jobs = "job" if count == 1 else "jobs"
        click.echo(f"bcrun: {count} {jobs}: {reason}", err=True)
    if export is None:
        click.echo(count)
        return
    for line in export_lines(count, os.environ, shell=export == "sh"):
        click.echo(line)


@cli.command()
@pid_option
def pause(pid: int | None) -> None:
    """Start no new job until 'bcrun resume' (running jobs finish)."""
    _command(pid, "1:pause")


@cli.command()
@pid_option
def resume(pid: int | None) -> None:
    """Undo 'bcrun pause'."""
    _command(pid, "1:resume")


def _command(pid: int | None, command: str) -> None:
    instance = choose_instance(pid)
    for line in send_command(instance, command):
        click.echo(f"{instance.pid}: {line}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@pid_option
def status(as_json: bool, pid: int | None) -> None:
    """Show your running builds: jobs, mode, policy and why."""
    instances = [choose_instance(pid)] if pid is not None else running_instances()
    statuses = []
    for instance in instances:
        try:
            statuses.append(query_status(instance))
        except BcrunError as err:
            click.echo(f"bcrun: {err}", err=True)
    if as_json:
        click.echo(json.dumps(statuses, indent=2))
        return
    if not statuses and instances:
        raise ControlError("no running bcrun answered")
    if not statuses:
        click.echo("no bcrun of yours is running")
        return
    rows = [("PID", "JOBS", "MODE", "VIA", "CLIENTS", "UPTIME", "COMMAND", "WHY")]
    for s in statuses:
        rows.append(
            (
                str(s["pid"]),
                str(s["jobs"]),
                s["mode"],
                s["via"],
                str(s["clients"]),
                format_duration(time.time() - s["started"]),
                " ".join(s["argv"])[:40],
                s["reason"],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row, status in zip(rows, [None, *statuses], strict=True):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]))
        if status is not None and status.get("metrics"):
            click.echo(f"  {describe_metrics(status['metrics'])}")


def describe_metrics(metrics: dict[str, Any]) -> str:
    """One line of the figures behind a build's count."""
    parts = [
        f"{metrics['running']} job(s) running",
        f"load {metrics['runnable']:.1f} ({metrics['external_load']:.1f} external)",
        f"{format_size(metrics['mem_available_bytes'])} of "
        f"{format_size(metrics['mem_total_bytes'])} available",
    ]
    pressure = [
        f"{name} {metrics[key]:.0%}"
        for name, key in (
            ("cpu", "psi_cpu_some"),
            ("memory", "psi_memory_some"),
            ("io", "psi_io_some"),
        )
        if metrics.get(key) is not None
    ]
    if pressure:
        parts.append("pressure " + " ".join(pressure))
    if metrics.get("cpu_capacity_source"):
        parts.append(f"CPUs: {metrics['cpu_capacity_source']}")
    if metrics.get("mem_limit_source"):
        parts.append(f"memory: {metrics['mem_limit_source']}")
    if metrics.get("idle_s") is not None:
        parts.append(f"user idle {format_duration(metrics['idle_s'])}")
    return ", ".join(parts)


@cli.command(name="plot")
@click.argument("trace", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The picture to write; its suffix picks the format: png, svg, pdf "
    "[default: TRACE with suffix .png].",
)
def plot_command(trace: Path, output: Path | None) -> None:
    """Draw a --trace file: jobs, load and memory over the build's time
    (needs matplotlib: pip install 'bcrun[plot]')."""
    plot_trace(trace, output or trace.with_suffix(".png"))


@cli.command(name="serve")
@click.option("-d", "--debug", is_flag=True, help="Log connections to stderr.")
@click.option(
    "-l",
    "long_tokens",
    is_flag=True,
    help="'new' prints BUILDSOCKET=... BUILDTOKEN=...",
)
@click.option(
    "-t",
    "test_mode",
    is_flag=True,
    help="Test mode: builder 1 exists at once with token '1-'; unix sockets 0666.",
)
@click.option("-u", "user", metavar="USER", help="Become USER once listening.")
@click.argument("addresses", nargs=-1, required=True, metavar="ADDRESS...")
def serve_command(
    debug: bool,
    long_tokens: bool,
    test_mode: bool,
    user: str | None,
    addresses: Sequence[str],
) -> None:
    """Serve many builds on ADDRESS... (a path, HOST:PORT, [V6]:PORT or
    :PORT; TCP is loopback unless a host is given; port 0 picks one).

    Commands come on standard input and from connections that send the
    control token printed at start: new, N:JOBS, N:pause, N:resume, dump,
    status, help, quit.
    """
    import asyncio

    from bcrun.serve import serve  # only this command needs it: start-up

    asyncio.run(serve(addresses, debug, long_tokens, test_mode, user))


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the command line with click, exit as the build or bcrun says
    (bcrun.main reads the common case without click)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args, prog_name="bcrun", standalone_mode=False)
    except BcrunError as err:
        fail(err)
    except click.UsageError as err:
        fail(f"{err.format_message()} (try 'bcrun --help')")
    except click.ClickException as err:
        fail(err.format_message())
    except (click.Abort, KeyboardInterrupt):
        sys.exit(130)
    finish(result)
