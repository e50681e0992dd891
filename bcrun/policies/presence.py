"""``presence``: give the machine back while its user is at it.

While input was seen within ``--idle-after`` (default 5 minutes), the build
runs at most ``--active-jobs`` (default half the CPUs, at least one; 0
pauses it); once the user is away, the whole -j count.  Input is read from
local terminals, logind's idle hint and the X11 screen saver
(:mod:`bcrun.presence`); with none of them, this policy sets no cap.
"""

from __future__ import annotations

from bcrun.metrics import Metrics
from bcrun.policies.base import Decision
from bcrun.settings import Settings
from bcrun.units import format_duration


def active_jobs(metrics: Metrics, settings: Settings) -> int:
    if settings.active_jobs is not None:
        return settings.active_jobs
    return max(1, metrics.cpus // 2)


def presence(metrics: Metrics, previous: int, settings: Settings) -> Decision:
    idle = metrics.idle_s
    if idle is None:
        return Decision(settings.jobs, "presence: no source of user input here")
    if idle < settings.idle_after_s:
        return Decision(
            active_jobs(metrics, settings),
            f"presence: input {format_duration(idle)} ago",
        )
    return Decision(settings.jobs, f"presence: no input for {format_duration(idle)}")
