"""``adaptive``: keep the machine's runnable load at or under a target, and
share it fairly with the other bcrun builds running here.

The target is ``--load``, else the CPU capacity this build really has: the
smallest of its affinity, its cgroups' cpusets and CPU quotas up the whole
chain, a fraction kept (a quota of 1.5 CPUs is a target of 1.5).

*Room* is the target less the load that is no bcrun build's (a plain
``make -j8``, a browser), half a job of which is forgiven as noise.  The
room is split between this build and the other bcrun builds the process
table shows (any user's: /proc/PID/stat is public, so no rendezvous, no
file another user could write): a build that leaves a whole job of its
share unused (a serial link, a configure step; :func:`light_margin`) keeps
what it uses, and the rest is divided evenly between the others, the
remainder going to the oldest builds in turn (:data:`ROTATE_S`), so that
time-mean shares come out even.  A peer is judged against the leanest
split of the last seconds (the most builds, the least room), so that one
held down a moment ago is not taken for light while it grows.  Every build computes the same split from the same process table, so
they agree without talking.  A peer never costs this build more than
treating its load as external would; a new one (:data:`YOUNG_S`) gets its
share before it has had time to use it.

Calm and fast: the count drops at once when the room calls for it (the
sampler shows a load only once it has lasted two looks SCAN_PERSIST_S
apart, so a short burst is never seen), and grows by two jobs or more as soon as the room has been
there for the last look too (:attr:`Metrics.external_load_peak`): a load
that ended, a peer that finished or went down to a serial step; so does any
growth a load ending (a fall of LOAD_ENDED from the last seconds' peak)
allows.  Other growth by a single job, which noise could undo (a load near
a threshold, a peer between two jobs), waits until the room has been there
for 5 s.  Throttling by a CPU quota counts as overload: one job fewer,
and no growth while it lasts.  The count never goes below one job;
``bcrun pause`` is for that.

Shares are runnable load, not jobs: the count is the share over what one
job of this build makes (:attr:`Metrics.job_cost`), so jobs that wait run
more (at most :data:`WAITING_LIMIT` times the share, or the share plus a
distributed compiler's remote slots) and multithreaded ones fewer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import NamedTuple

from bcrun.metrics import Metrics, PeerBuild
from bcrun.policies.base import Decision
from bcrun.settings import Settings

#: External load forgiven as the machine's own noise.
TOLERANCE = 0.5

#: A peer younger than this is taken to use its whole share: it is starting.
YOUNG_S = 2.0

#: Seconds between turns of who gets the remainder of an uneven split.
ROTATE_S = 10.0

#: Below this ratio of an uneven split's shares, the remainder rotates.
ROTATE_BELOW = 0.9

#: A fall of the external load, from the last seconds' peak, that is a
#: load ending, not noise: any growth it allows is made at once.
LOAD_ENDED = 1.5

#: CPU-seconds a second held back by the quota that mean overload.
THROTTLED = 0.5

#: Without remote hosts, a build of jobs that wait runs at most this many
#: times its share of jobs (jobs that only sleep would never load it).
WAITING_LIMIT = 4


def count_for(jobs: int, metrics: Metrics) -> int:
    """The job count that makes *jobs* jobs' worth of runnable load, at
    what a job of this build costs; jobs that wait run at most as many as
    the remote hosts' slots and the local share together.  Before the cost
    is known, a build with remote hosts runs that many at once (distcc's
    own advice): a compile costs little locally, and a cost found higher
    brings the count down at the next look."""
    if metrics.job_cost is None and metrics.remote_slots:
        return jobs + metrics.remote_slots
    cost = metrics.job_cost or 1.0
    count = math.floor(jobs / cost + 1e-9)
    if cost < 1:
        if metrics.remote_slots is not None:
            count = min(count, jobs + metrics.remote_slots)
        else:
            count = min(count, jobs * WAITING_LIMIT)
    return count


def target_load(metrics: Metrics, settings: Settings) -> float:
    if settings.load is not None:
        return settings.load
    return metrics.cpu_capacity or float(metrics.cpus)


def target_source(metrics: Metrics, settings: Settings) -> str:
    """Where the target came from, for reasons and ``bcrun status``."""
    if settings.load is not None:
        return f"--load {settings.load:g}"
    return metrics.cpu_capacity_source or f"{metrics.cpus} CPUs"


class Share(NamedTuple):
    """This build's part of the room, and how many builds split it."""

    jobs: int
    builds: int


def share(
    room: float,
    peers: Sequence[PeerBuild],
    own_key: tuple[float, int],
    time_s: float,
    lean_room: float | None = None,
    lean_builds: int | None = None,
) -> Share:
    """Water-fill *room* between this build (which always wants more) and
    *peers*: from the lightest up, a peer that leaves part of the level the
    rest would get unused (:func:`light_margin`) keeps what it uses; the
    others split what is left in whole jobs, the remainder going to the
    oldest (by *own_key* and each peer's :attr:`~PeerBuild.key`), in turns
    when it matters.

    Peers are judged by the level of the last few seconds' leanest moment:
    *lean_room*, the least room, shared by *lean_builds*, the most builds.
    A peer that a load or another build held down a moment ago has not yet
    had the time to use more, and is not light."""
    builds = len(peers) + 1
    light = sorted((p for p in peers if p.age_s >= YOUNG_S), key=lambda p: p.load)
    judged = room if lean_room is None else min(room, lean_room)
    sharing = max(builds, lean_builds or 0)
    kept = 0.0
    keeping = 0
    for peer in light:
        level = (judged - kept) / (sharing - keeping)
        if peer.load > level - light_margin(level):
            break
        kept += whole_jobs(peer.load)
        keeping += 1
    wanting = [p for p in peers if p.age_s < YOUNG_S] + light[keeping:]
    keys = sorted([own_key, *(p.key for p in wanting)])
    total = max(math.floor(room - kept + 1e-9), 0)
    base, extra = divmod(total, len(keys))
    rank = keys.index(own_key)
    if extra and base / (base + 1) < ROTATE_BELOW:
        rank = (rank - int(time_s // ROTATE_S)) % len(keys)
    return Share(base + (rank < extra), builds)


def light_margin(level: float) -> float:
    """What a peer must leave unused of *level* to be light: a whole job,
    or an eighth of a high level.  Builds see the room a job apart at times
    (their looks differ), and a peer one job under an uneven split's level
    is only at its part of it, not light."""
    return max(1.0, level / 8)


def whole_jobs(load: float) -> int:
    """A load in whole jobs, a quarter of a job over one forgiven as noise."""
    return max(math.ceil(load - 0.25), 0)


def big_step(target: float) -> int:
    """Growth worth making at once: two jobs, or a quarter of a small
    target; a smaller one waits for the long calm, or noise would flap it."""
    return 2 if target >= 8 else 1


def adaptive(metrics: Metrics, previous: int, settings: Settings) -> Decision:
    target = target_load(metrics, settings)
    now = metrics.external_load
    calm = max(now, metrics.external_load_peak or now)
    long_calm = max(calm, metrics.external_load_peak_long or calm)

    def room(external: float) -> float:
        return target - max(external - TOLERANCE, 0.0)

    def part(external: float, peers: Sequence[PeerBuild]) -> Share:
        return share(
            room(external),
            peers,
            metrics.own_key,
            metrics.time_s,
            lean_room=room(long_calm),
            lean_builds=metrics.builds_peak_long,
        )

    # Growth judges peers by their heaviest use of the last seconds: a dip
    # while a peer's tool is slow to start its next job is not room.
    recent = [replace(p, load=max(p.load, p.load_recent)) for p in metrics.peers]
    heaviest = [replace(p, load=max(p.load, p.load_peak)) for p in recent]
    drop, grow = part(now, metrics.peers), part(calm, recent)
    lowest, highest = count_for(drop.jobs, metrics), count_for(grow.jobs, metrics)
    # After a load ended, growth of any size is made at once, but judging
    # peers by their heaviest use: a peer's dip then is not room either.
    ended = count_for(part(calm, heaviest).jobs, metrics)
    count = previous
    if lowest < previous:
        count = lowest
    elif highest >= previous + big_step(target):
        count = highest
    elif ended > previous and long_calm - calm >= LOAD_ENDED:
        count = ended
    else:
        # Small growth only if the leanest moment of the last seconds (the
        # most external load, each peer's heaviest use) allowed it too.
        count = max(previous, count_for(part(long_calm, heaviest).jobs, metrics))
    reason = (
        f"adaptive: external load {now:.1f}, target {target:g} "
        f"({target_source(metrics, settings)})"
    )
    if drop.builds > 1:
        reason += f", shared by {drop.builds} builds"
    if metrics.job_cost is not None and metrics.job_cost != 1:
        reason += f", a job makes {metrics.job_cost:g} of load"
    if metrics.remote_source:
        reason += f", {metrics.remote_source}"
    throttled = metrics.cpu_throttled
    if throttled is not None and throttled >= THROTTLED:
        # One job fewer than run now; not one more each tick it lasts:
        # the running jobs end when they end.
        count = min(count, previous, max(metrics.jobs_running - 1, 1))
        reason += f", throttled {throttled:.1f} CPU by the quota"
    elif (metrics.cpu_throttled_peak or 0.0) >= THROTTLED:
        count = min(count, previous)
    return Decision(max(count, 1), reason)
