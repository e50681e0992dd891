"""The control commands, as typed on ``bcrun serve``'s standard input or sent
on a connection that presented the control token (build number 0).

Parsing only: what a command does depends on who serves it (the wrapper,
which has one build and a policy, or ``bcrun serve``, which has many).

On a control connection every reply ends with a line ``ok`` or
``error: MESSAGE``; lines before it are the command's output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bcrun.errors import ControlError, ProtocolError
from bcrun.protocol import parse_count

#: What ``N:...`` may set: a count, back to the policy, pause or resume.
JobsValue = int | Literal["auto", "pause", "resume"]


@dataclass(frozen=True)
class New:
    pass


@dataclass(frozen=True)
class SetJobs:
    build: int
    value: JobsValue


@dataclass(frozen=True)
class Dump:
    pass


@dataclass(frozen=True)
class Status:
    pass


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class Quit:
    pass


Command = New | SetJobs | Dump | Status | Help | Quit

HELP = [
    "new          create a builder and print its token",
    "N:JOBS       set builder N's job count to JOBS (0 pauses)",
    "N:auto       hand builder N back to its policy",
    "N:pause      pause builder N; N:resume undoes it",
    "dump         list builders and connections",
    "status       the state as one JSON line",
    "help, ?      this list",
    "quit         close this control connection (on standard input: stop)",
]

_WORDS: dict[str, Command] = {
    "new": New(),
    "dump": Dump(),
    "status": Status(),
    "help": Help(),
    "?": Help(),
    "quit": Quit(),
}


def parse_command(line: str) -> Command:
    """Read one command line; raise ControlError saying what is wrong."""
    text = line.strip()
    if text in _WORDS:
        return _WORDS[text]
    number, sep, value = text.partition(":")
    if not sep:
        raise ControlError(f"unknown command {text[:40]!r} (try 'help')")
    try:
        build = parse_count(number.strip())
    except ProtocolError:
        raise ControlError(f"bad builder number {number[:20]!r}") from None
    return SetJobs(build, parse_jobs_value(value.strip()))


def parse_jobs_value(value: str) -> JobsValue:
    """A job count, or ``auto``, ``pause`` or ``resume``."""
    if value in ("auto", "pause", "resume"):
        return value  # type: ignore[return-value]
    try:
        return parse_count(value)
    except ProtocolError:
        raise ControlError(
            f"bad job count {value[:20]!r}: expected an integer >= 0, "
            "auto, pause or resume"
        ) from None
