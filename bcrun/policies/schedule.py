"""``schedule``: caps by time of day and day of the week (``--schedule``)."""

from __future__ import annotations

from bcrun.metrics import Metrics
from bcrun.policies.base import Decision
from bcrun.schedule import rule_for
from bcrun.settings import Settings


def schedule(metrics: Metrics, previous: int, settings: Settings) -> Decision:
    rule = rule_for(settings.schedule, metrics.weekday, metrics.minute_of_day)
    if rule is None:
        return Decision(settings.jobs, "schedule: no rule now")
    if rule.jobs is None:
        return Decision(settings.jobs, f"schedule: {rule.text!r}")
    return Decision(rule.jobs, f"schedule: {rule.text!r}")
