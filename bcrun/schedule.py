"""Job caps by time of day and day of the week: ``--schedule``.

A schedule is rules separated by ``;``, the first that matches now wins::

    mon-fri 9:00-18:00 2; sat,sun 10-12 pause

Each rule is ``[DAYS] [HH[:MM]-HH[:MM]] VALUE``: DAYS a list of days or
ranges (``mon-fri,sun``; every day when left out), the time range local
time (overnight ranges such as ``22:00-6:00`` allowed; all day when left
out), VALUE a job count, ``pause`` (0) or ``max`` (no cap).  When no rule
matches, the schedule sets no cap.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from bcrun.errors import ConfigError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Compiled by re on first use, not as bcrun starts.
_TIME = r"(\d{1,2})(?::(\d{2}))?"


class Rule(NamedTuple):
    days: frozenset[int]
    #: Minutes after midnight: start inclusive, end exclusive.
    start: int
    end: int
    #: A job count; None for ``max``.
    jobs: int | None
    text: str

    def matches(self, weekday: int, minute: int) -> bool:
        if self.start <= self.end:
            return weekday in self.days and self.start <= minute < self.end
        # Overnight: the part after midnight belongs to the day before.
        if minute >= self.start:
            return weekday in self.days
        return minute < self.end and (weekday - 1) % 7 in self.days


Schedule = tuple[Rule, ...]


def parse_schedule(text: str) -> Schedule:
    rules = [part.strip() for part in text.split(";")]
    return tuple(_parse_rule(rule) for rule in rules if rule)


def rule_for(schedule: Schedule, weekday: int, minute: int) -> Rule | None:
    """The rule in force at *minute* after midnight of *weekday*."""
    return next((r for r in schedule if r.matches(weekday, minute)), None)


def _parse_rule(text: str) -> Rule:
    words = text.split()
    if not words:
        raise ConfigError("empty schedule rule")
    value, words = words[-1], words[:-1]
    if value == "pause":
        jobs: int | None = 0
    elif value == "max":
        jobs = None
    elif value.isdigit():
        jobs = int(value)
    else:
        raise ConfigError(
            f"schedule rule {text!r}: {value!r} is not a job count, 'pause' or 'max'"
        )
    days, start, end = frozenset(range(7)), 0, 24 * 60
    for word in words:
        if word[0].isdigit():
            start, end = _parse_hours(word, text)
        else:
            days = _parse_days(word, text)
    return Rule(days, start, end, jobs, text)


def _parse_days(word: str, rule: str) -> frozenset[int]:
    days: set[int] = set()
    for item in word.lower().split(","):
        first, _, last = item.partition("-")
        try:
            a = DAYS.index(first[:3]) if first not in ("*", "daily") else 0
            b = DAYS.index(last[:3]) if last else a
            if first in ("*", "daily"):
                b = 6
        except ValueError:
            raise ConfigError(
                f"schedule rule {rule!r}: {item!r} is not a day or range of days "
                f"({'-'.join(DAYS[:2])}...)"
            ) from None
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(b + 1)])
    return frozenset(days)


def _parse_hours(word: str, rule: str) -> tuple[int, int]:
    first, _, last = word.partition("-")
    start, end = _minute(first), _minute(last)
    if start is None or end is None:
        raise ConfigError(
            f"schedule rule {rule!r}: {word!r} is not a time range like 9:00-18:00"
        )
    return start, end


def _minute(text: str) -> int | None:
    match = re.fullmatch(_TIME, text)
    if not match:
        return None
    hours, minutes = int(match[1]), int(match[2] or 0)
    if hours > 24 or minutes > 59 or hours * 60 + minutes > 24 * 60:
        return None
    return hours * 60 + minutes
