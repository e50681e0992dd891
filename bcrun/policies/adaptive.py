"""``adaptive``: keep the machine's runnable load at or under a target.

The build gets the target (``--load``, default the CPUs) minus the load
that is not the build's.  Unlike ``make -l``, which gates on the one-minute
load average and counts the build's own jobs as someone else's, this sees
the external load within a tick or two and gives it room at once.

The count is the room rounded to the nearest job (half a job over the
target is tolerated: the machine's own noise should not cost a CPU).  It
drops as soon as the smoothed external load calls for it, but grows only
when the room has been there for the last few seconds (the peak of the
external load over PEAK_WINDOW_S), by at most a quarter of the target per
tick, so that noise and short spikes do not make it flap.  It never goes
below one job, so the build is never starved; ``bcrun pause`` is for that.
"""

from __future__ import annotations

import math

from bcrun.metrics import Metrics
from bcrun.policies.base import Decision
from bcrun.settings import Settings

#: Load over the target tolerated before a job is taken off.
TOLERANCE = 0.5


def target_load(metrics: Metrics, settings: Settings) -> float:
    return settings.load if settings.load is not None else float(metrics.cpus)


def adaptive(metrics: Metrics, previous: int, settings: Settings) -> Decision:
    target = target_load(metrics, settings)
    now = metrics.external_load
    calm = max(now, metrics.external_load_peak or now)
    count = previous
    if target - now < previous - TOLERANCE:
        count = math.floor(target - now + TOLERANCE)
    elif target - calm >= previous + 1 - TOLERANCE:
        step = max(1, math.ceil(target / 4))
        count = min(math.floor(target - calm + TOLERANCE), previous + step)
    count = max(count, 1)
    return Decision(count, f"adaptive: external load {now:.1f}, target {target:g}")
