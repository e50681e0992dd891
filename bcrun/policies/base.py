"""What every policy is: a pure function from metrics to a capped count."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from bcrun.metrics import Metrics
from bcrun.settings import Settings


class Decision(NamedTuple):
    """A policy's answer: the most jobs it allows, and why, in a few words."""

    jobs: int
    reason: str


@dataclass(frozen=True)
class Policy:
    name: str
    #: ``decide(metrics, previous_count, settings) -> Decision``; no clock, no I/O.
    decide: Callable[[Metrics, int, Settings], Decision]
    #: False for a policy that ignores metrics: no sampling, no ticking.
    needs_metrics: bool
