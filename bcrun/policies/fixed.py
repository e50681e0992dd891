"""``fixed``: the count given with -j, whatever the machine does."""

from __future__ import annotations

from bcrun.metrics import Metrics
from bcrun.policies.base import Decision
from bcrun.settings import Settings


def fixed(metrics: Metrics, previous: int, settings: Settings) -> Decision:
    return Decision(settings.jobs, f"fixed at -j {settings.jobs}")
