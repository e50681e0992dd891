"""Policies: small pure functions from measured metrics to a job cap.

A policy is ``decide(metrics, previous, settings) -> Decision``: it sees one
:class:`~bcrun.metrics.Metrics` snapshot, its own previous cap and the
user's settings, and returns the cap it wants with a one-line reason that
starts with its name.  Several policies combine by taking the smallest cap
(:func:`combine`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bcrun.metrics import Metrics
from bcrun.policies.adaptive import adaptive, target_load
from bcrun.policies.base import Decision, Policy
from bcrun.policies.fixed import fixed
from bcrun.policies.memory import memory, reserve_bytes
from bcrun.policies.presence import presence
from bcrun.policies.schedule import schedule
from bcrun.settings import Settings

__all__ = ["POLICIES", "Decision", "Policy", "bound", "combine", "targets"]

POLICIES: dict[str, Policy] = {
    "fixed": Policy("fixed", fixed, needs_metrics=False),
    "adaptive": Policy("adaptive", adaptive, needs_metrics=True),
    "memory": Policy("memory", memory, needs_metrics=True),
    "presence": Policy("presence", presence, needs_metrics=True),
    "schedule": Policy("schedule", schedule, needs_metrics=True),
}


def combine(
    policies: Sequence[Policy],
    metrics: Metrics,
    previous: Mapping[str, int],
    settings: Settings,
) -> tuple[Decision, dict[str, int]]:
    """The smallest cap of *policies*, bounded by --min-jobs and --max-jobs,
    and each policy's own cap (its *previous* next time).  A policy not in
    *previous* starts from the -j count."""
    decisions = {
        policy.name: policy.decide(
            metrics, previous.get(policy.name, settings.jobs), settings
        )
        for policy in policies
    }
    smallest = min(decisions.values(), key=lambda d: d.jobs)
    return bound(smallest, settings), {n: d.jobs for n, d in decisions.items()}


def bound(decision: Decision, settings: Settings) -> Decision:
    """*decision* within --min-jobs and --max-jobs, saying so if it moved."""
    jobs, reason = decision
    if settings.max_jobs is not None and jobs > settings.max_jobs:
        return Decision(settings.max_jobs, f"{reason}; --max-jobs {settings.max_jobs}")
    if jobs < settings.min_jobs:
        return Decision(settings.min_jobs, f"{reason}; --min-jobs {settings.min_jobs}")
    return Decision(jobs, reason)


def targets(
    policies: Sequence[Policy], metrics: Metrics, settings: Settings
) -> dict[str, float | int]:
    """The targets the active policies steer toward, for status and traces."""
    names = {policy.name for policy in policies}
    found: dict[str, float | int] = {}
    if "adaptive" in names:
        found["target_load"] = target_load(metrics, settings)
    if "memory" in names:
        found["mem_reserve_bytes"] = reserve_bytes(metrics, settings)
    return found
