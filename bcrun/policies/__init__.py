"""Policies: small pure functions from measured metrics to a job cap.

A policy is ``decide(metrics, previous, settings) -> Decision``: it sees one
:class:`~bcrun.metrics.Metrics` snapshot, the count in force and the user's
settings, and returns the cap it wants with a one-line reason.  Several
policies combine by taking the smallest cap (:func:`combine`).
"""

from __future__ import annotations

from collections.abc import Sequence

from bcrun.metrics import Metrics
from bcrun.policies.base import Decision, Policy
from bcrun.policies.fixed import fixed
from bcrun.settings import Settings

__all__ = ["POLICIES", "Decision", "Policy", "bound", "combine"]

POLICIES: dict[str, Policy] = {
    "fixed": Policy("fixed", fixed, needs_metrics=False),
}


def combine(
    policies: Sequence[Policy], metrics: Metrics, previous: int, settings: Settings
) -> Decision:
    """The smallest cap of *policies*, bounded by --min-jobs and --max-jobs."""
    decisions = [policy.decide(metrics, previous, settings) for policy in policies]
    return bound(min(decisions, key=lambda d: d.jobs), settings)


def bound(decision: Decision, settings: Settings) -> Decision:
    """*decision* within --min-jobs and --max-jobs, saying so if it moved."""
    jobs, reason = decision
    if settings.max_jobs is not None and jobs > settings.max_jobs:
        return Decision(settings.max_jobs, f"{reason}; --max-jobs {settings.max_jobs}")
    if jobs < settings.min_jobs:
        return Decision(settings.min_jobs, f"{reason}; --min-jobs {settings.min_jobs}")
    return Decision(jobs, reason)
