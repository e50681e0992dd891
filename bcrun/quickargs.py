"""``bcrun [OPTIONS] COMMAND...`` read without click.

This is the command line in front of every build, and importing click
costs more than the rest of bcrun's start-up together.  So the common case
is read here, by the rules click applies to cli.run's options and to the
defaults of config.toml and BCRUN_* (bcrun.config); anything else (a
subcommand, --help, shell completion, an option or value this reader does
not know to be right) returns None, and cli.py, which stays the definition
of the command line, reads it and says any error.  tests/unit/
test_quickargs.py checks that the two read the same.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bcrun.config import config_path, parse_flag, read_config
from bcrun.errors import BcrunError
from bcrun.protocol import COUNT_MAX
from bcrun.start import RunRequest
from bcrun.units import parse_duration, parse_size

#: bcrun.policies.POLICIES, by name (importing it imports the sampler).
POLICY_NAMES = ("fixed", "adaptive", "memory", "presence", "schedule")

#: First words that are not ``run``'s: cli.py reads those.
NOT_RUN = frozenset(
    {"jobs", "pause", "resume", "status", "plot", "serve", "--help", "-h", "--version"}
)

#: The characters of the numbers read here (no regular expression: each
#: costs its compilation at start-up).
_DIGITS = frozenset("0123456789")


class _Unsure(Exception):
    """Not known to read as click would: cli.py reads the command line."""


def _count(text: str) -> int:
    if not 0 < len(text) <= 10 or not _DIGITS.issuperset(text):
        raise _Unsure
    if int(text) > COUNT_MAX:
        raise _Unsure
    return int(text)


def _nice(text: str) -> int:
    digits = text.removeprefix("-")
    if not 0 < len(digits) <= 3 or not _DIGITS.issuperset(digits):
        raise _Unsure
    if not -20 <= int(text) <= 19:
        raise _Unsure
    return int(text)


def _decimal(low: float, high: float) -> Callable[[str], float]:
    def convert(text: str) -> float:
        whole, _, fraction = text.partition(".")
        if not whole + fraction or len(text) > 25:
            raise _Unsure
        if not _DIGITS.issuperset(whole + fraction):
            raise _Unsure
        if not low <= float(text) <= high:
            raise _Unsure
        return float(text)

    return convert


def _policies(text: str) -> tuple[str, ...]:
    names = [name.strip() for name in text.split(",")]
    if not all(name in POLICY_NAMES for name in names):
        raise _Unsure
    return tuple(dict.fromkeys(names))


def _via(text: str) -> str:
    if text not in ("auto", "protocol", "jobserver"):
        raise _Unsure
    return text


def _trace(text: str) -> Path:
    # click.Path(dir_okay=False) refuses a directory.
    if not text or os.path.isdir(text):
        raise _Unsure
    return Path(text)


def _schedule(text: str) -> Any:
    from bcrun.schedule import parse_schedule  # only with a schedule

    return parse_schedule(text)


def _checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except BcrunError:
            raise _Unsure from None

    return convert


#: cli.run's options: long name -> (parameter, converter; None for a flag).
OPTIONS: dict[str, tuple[str, Callable[[str], Any] | None]] = {
    "jobs": ("jobs", _count),
    "policy": ("policies", _policies),
    "min-jobs": ("min_jobs", _count),
    "max-jobs": ("max_jobs", _count),
    "load": ("load", _decimal(0.1, COUNT_MAX)),
    "mem-reserve": ("mem_reserve", _checked(parse_size)),
    "freeze": ("freeze", None),
    "active-jobs": ("active_jobs", _count),
    "idle-after": ("idle_after", _checked(parse_duration)),
    "schedule": ("schedule", _checked(_schedule)),
    "nice": ("nice", _nice),
    "trace": ("trace", _trace),
    "tick": ("tick", _decimal(0.05, 60)),
    "via": ("via", _via),
    "explain": ("explain", None),
    "verbose": ("verbose", None),
}
SHORT = {"-j": "jobs", "-p": "policy", "-v": "verbose"}
#: Options whose value only the command line gives (bcrun.config).
NOT_SETTINGS = frozenset({"explain"})


def quick_request(
    args: Sequence[str], environ: Mapping[str, str] = os.environ
) -> RunRequest | None:
    """The run *args* ask for, or None for cli.py to read them."""
    if not args or args[0] in NOT_RUN or "_BCRUN_COMPLETE" in environ:
        return None
    words = list(args[1:] if args[0] == "run" else args)
    try:
        values = _defaults(environ)
        command = _options(words, values)
    except _Unsure:
        return None
    max_jobs, min_jobs = values.get("max_jobs"), values.get("min_jobs", 0)
    if not command or (max_jobs is not None and max_jobs < min_jobs):
        return None
    if "schedule" in values.get("policies", ()) and not values.get("schedule"):
        return None
    return RunRequest(command, **values)


def _options(words: list[str], values: dict[str, Any]) -> list[str]:
    """Read the options off *words* into *values*; return the command."""
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            return words[i + 1 :]
        if not word.startswith("-") or word == "-":
            return words[i:]
        given: str | None = None
        if word.startswith("--"):
            name, equals, rest = word[2:].partition("=")
            if equals:
                given = rest
        elif word[:2] in SHORT:
            name = SHORT[word[:2]]
            if len(word) > 2:
                given = word[2:]
        else:
            raise _Unsure
        if name not in OPTIONS:
            raise _Unsure
        parameter, convert = OPTIONS[name]
        if convert is None:
            if given is not None:
                raise _Unsure  # a flag with a value, or short flags run together
            values[parameter] = True
        else:
            if given is None:
                i += 1
                if i == len(words):
                    raise _Unsure
                given = words[i]
            values[parameter] = convert(given)
        i += 1
    return []


def _defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    """The defaults of config.toml and BCRUN_* variables, as
    bcrun.config.settings_defaults() reads them."""
    values: dict[str, Any] = {}
    path = config_path(environ)
    if os.path.exists(path):
        try:
            settings = read_config(path)
        except BcrunError:
            raise _Unsure from None
        for key, value in settings.items():
            name = key.replace("_", "-")
            if name not in OPTIONS or name in NOT_SETTINGS:
                raise _Unsure
            values[OPTIONS[name][0]] = _setting(name, value)
    for name in OPTIONS:
        variable = "BCRUN_" + name.upper().replace("-", "_")
        if variable in environ and name not in NOT_SETTINGS:
            values[OPTIONS[name][0]] = _setting(name, environ[variable])
    return values


def _setting(name: str, value: Any) -> Any:
    convert = OPTIONS[name][1]
    if convert is None:
        try:
            return parse_flag(value, name)
        except BcrunError:
            raise _Unsure from None
    if isinstance(value, bool | dict | list):
        raise _Unsure
    return convert(str(value))
