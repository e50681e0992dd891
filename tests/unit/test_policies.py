"""Each policy against synthetic metric series: no sleeping, no machine."""

from __future__ import annotations

import itertools
import json
import math
import random
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bcrun.buildtree import Job
from bcrun.governor import Governor
from bcrun.metrics import (
    LONG_WINDOW_S,
    PEAK_WINDOW_S,
    PEER_WINDOW_S,
    Metrics,
    PeerBuild,
)
from bcrun.policies import POLICIES, targets
from bcrun.policies.adaptive import (
    ROTATE_S,
    WAITING_LIMIT,
    Share,
    adaptive,
    share,
)
from bcrun.policies.memory import freeze_step, memory
from bcrun.policies.presence import presence
from bcrun.policies.schedule import schedule
from bcrun.schedule import parse_schedule
from bcrun.settings import Settings
from bcrun.units import parse_size

GIB = 1 << 30
MIB = 1 << 20


def run_series(
    policy_name: str, series: Iterable[Metrics], settings: Settings
) -> list[int]:
    """The counts a governor with one policy sends, tick by tick."""
    governor = Governor([POLICIES[policy_name]], settings)
    counts = []
    for metrics in series:
        governor.decide(metrics)
        counts.append(governor.count)
    return counts


def load(external: float, cpus: int = 8) -> Metrics:
    return Metrics(cpus=cpus, external_load=external)


def loads(*externals: float, cpus: int = 8) -> list[Metrics]:
    """A series of ticks 0.5 s apart, with the peak the sampler would keep
    (the highest of the last PEAK_WINDOW_S)."""
    window = int(PEAK_WINDOW_S / 0.5)
    long = int(LONG_WINDOW_S / 0.5)
    return [
        Metrics(
            cpus=cpus,
            external_load=external,
            external_load_peak=max(externals[max(i - window, 0) : i + 1]),
            external_load_peak_long=max(externals[max(i - long, 0) : i + 1]),
        )
        for i, external in enumerate(externals)
    ]


# -- adaptive ------------------------------------------------------------------


def test_adaptive_takes_the_whole_machine_when_idle():
    counts = run_series("adaptive", loads(*[0.0] * 6), Settings(jobs=8))
    assert counts[-1] == 8


def test_adaptive_takes_the_whole_machine_despite_background_noise():
    noise = random.Random(3)
    background = [noise.uniform(0.0, 0.4) for _ in range(40)]
    counts = run_series("adaptive", loads(*background), Settings(jobs=8))
    assert counts[5:] == [8] * 35


def test_adaptive_gives_way_to_a_step_of_external_load_within_a_tick():
    settings = Settings(jobs=8)
    counts = run_series("adaptive", loads(*[0.0] * 4, *[3.0] * 4), settings)
    assert counts[3] == 8
    assert counts[4] == 5  # the first tick that sees the load


def test_adaptive_grows_back_at_once_after_a_calm_of_one_look():
    counts = run_series("adaptive", loads(*[7.0] * 3, *[0.0] * 6), Settings(jobs=8))
    assert counts[2] == 1
    # The peak of the last PEAK_WINDOW_S still holds it at the first calm look.
    assert counts[3] == 1
    assert counts[4:] == [8] * 5


def test_adaptive_does_not_flap_on_noise():
    noise = random.Random(5)
    series = loads(*[2.5 + noise.uniform(-0.4, 0.4) for _ in range(200)])
    counts = run_series("adaptive", series, Settings(jobs=8))
    changes = sum(a != b for a, b in itertools.pairwise(counts[5:]))
    assert changes <= 2, counts
    assert counts[-1] in (5, 6)


def test_adaptive_never_starves_the_build():
    counts = run_series("adaptive", [load(50.0)] * 5, Settings(jobs=8))
    assert counts == [1] * 5


def test_adaptive_target_is_the_load_setting():
    decision = adaptive(load(1.0), 8, Settings(jobs=8, load=4.0))
    assert decision.jobs == 3  # half a job of the external load is noise
    assert decision.reason.startswith("adaptive: ")
    assert "target 4 (--load 4)" in decision.reason
    assert adaptive(load(0.5), 8, Settings(jobs=8, load=4.0)).jobs == 4


def test_adaptive_target_is_the_cpu_capacity_a_fraction_kept():
    """A quota of 1.5 CPUs: a target of 1.5, one job (a second would only be
    throttled); the reason says where the target came from."""
    source = "cpu.max of /sys/fs/cgroup/ci.slice: 1.5 CPUs"
    metrics = Metrics(cpus=2, cpu_capacity=1.5, cpu_capacity_source=source)
    decision = adaptive(metrics, 2, Settings(jobs=2))
    assert decision.jobs == 1
    assert f"target 1.5 ({source})" in decision.reason
    assert adaptive(replace(metrics, cpu_capacity=4.0), 1, Settings(jobs=2)).jobs == 4


def test_adaptive_takes_a_job_off_while_the_quota_throttles_and_holds_after():
    running = tuple(job(pid, 0) for pid in range(4))
    throttled = Metrics(
        cpus=8,
        cpu_capacity=4.0,
        jobs=running,
        cpu_throttled=1.2,
        cpu_throttled_peak=1.2,
    )
    decision = adaptive(throttled, 4, Settings(jobs=4))
    assert decision.jobs == 3
    assert "throttled 1.2 CPU by the quota" in decision.reason
    # Still throttled while the four jobs run: not one fewer each tick.
    assert adaptive(throttled, 3, Settings(jobs=4)).jobs == 3
    after = replace(throttled, cpu_throttled=0.0, jobs=running[:3])
    assert adaptive(after, 3, Settings(jobs=4)).jobs == 3
    calm = replace(after, cpu_throttled_peak=0.0)
    assert adaptive(calm, 3, Settings(jobs=4)).jobs == 4


# -- adaptive: sharing the target between builds --------------------------------


def peer(pid: int, load: float, start: float = 0.0, age: float = 60.0) -> PeerBuild:
    return PeerBuild(pid=pid, start_s=start, age_s=age, load=load)


def test_builds_split_the_target_evenly():
    peers = (peer(2, 8.0),)
    assert share(8.0, peers, (0.0, 1), 0.0) == Share(4, 2)
    assert share(32.0, (peer(2, 30), peer(3, 30)), (0.0, 1), 0.0).jobs == 11
    assert share(32.0, (peer(2, 30), peer(3, 30)), (0.0, 4), 0.0).jobs == 10


@given(
    room=st.floats(1.0, 64.0),
    n=st.integers(1, 6),
    loads=st.lists(st.floats(0.0, 64.0), min_size=6, max_size=6),
    time_s=st.floats(0.0, 1e6),
)
def test_builds_that_see_the_same_machine_agree_on_a_split_of_the_room(
    room: float, n: int, loads: list[float], time_s: float
):
    """Each build computes its part alone.  When all want more, the parts
    add up to the room in whole jobs; whatever the others use, no build's
    part is below an even split."""
    builds = [peer(pid, load, start=pid * 0.5) for pid, load in enumerate(loads[:n])]
    parts = {}
    for me in builds:
        others = tuple(b for b in builds if b is not me)
        parts[me.pid] = share(room, others, me.key, time_s).jobs
    assert all(part >= math.floor(room / n) for part in parts.values())
    if all(b.load > room / n - 1 for b in builds):
        assert sum(parts.values()) == math.floor(room + 1e-9)


def test_a_build_that_cannot_use_its_share_leaves_it_and_gets_it_back():
    linking = peer(2, 1.0)  # a serial link: one job
    assert share(8.0, (linking,), (0.0, 1), 0.0).jobs == 7
    compiling = peer(2, 6.0)
    assert share(8.0, (compiling,), (0.0, 1), 0.0).jobs == 4


def test_a_peer_a_job_under_a_high_level_is_at_its_part_not_light():
    """32 between 2: a peer at 15 (a moment ago the room was 31, or it is
    waiting out its +1) is not leaving a job unused; a serial link is."""
    assert share(32.0, (peer(2, 15.0),), (0.0, 1), 0.0).jobs == 16
    assert share(32.0, (peer(2, 13.0),), (0.0, 1), 0.0).jobs == 19
    assert share(32.0, (peer(2, 1.0),), (0.0, 1), 0.0).jobs == 31
    assert share(8.0, (peer(2, 3.0),), (0.0, 1), 0.0).jobs == 5


def test_a_new_build_gets_its_share_before_it_has_used_it():
    starting = peer(2, 0.0, start=100.0, age=0.5)
    assert share(8.0, (starting,), (0.0, 1), 0.0).jobs == 4


def test_a_peer_never_costs_more_than_its_load_as_external_load_would():
    """A process named bcrun with no build (bcrun serve, a fake) costs
    nothing; one with a load costs at most that load."""
    assert share(8.0, (peer(2, 0.0), peer(3, 0.0)), (0.0, 1), 0.0).jobs == 8
    for load in (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 20.0):
        part = share(8.0, (peer(2, load),), (0.0, 1), 0.0).jobs
        assert part >= min(math.floor(8.0 - load), 4)


def test_an_uneven_split_turns_so_that_time_means_come_out_even():
    """8 between 3 builds: 3, 3 and 2 at a time, in turns of ROTATE_S."""
    keys = [(0.0, 1), (0.0, 2), (0.0, 3)]
    means = []
    for key in keys:
        others = tuple(peer(pid, 3.0) for _, pid in keys if (0.0, pid) != key)
        parts = [share(8.0, others, key, t * ROTATE_S).jobs for t in range(3)]
        means.append(sum(parts) / 3)
        assert sorted(parts) == [2, 3, 3]
    assert means == [8 / 3] * 3


def simulate(
    builds: int,
    target: float,
    seconds: float,
    external: Callable[[float], float] = lambda t: 0.0,
    job_s: float = 0.8,
    tick_s: float = 0.5,
    starts: Sequence[float] = (),
    ends: Sequence[float] = (),
    peer_noise: float = 0.0,
    external_noise: float = 0.0,
) -> list[list[tuple[float, int, int]]]:
    """Builds of jobs that each last *job_s*, one governor each, ticking a
    little out of step; each sees the others' running jobs as their load,
    and *external* as it would be seen (a load lasting at least two looks).
    Builds start at *starts* and end at *ends*.  Each look at a peer sees
    it a job or two short with probability *peer_noise* (its tool is slow
    to start the next job on a loaded machine), and each look at the
    external load sees up to 0.8 more with probability *external_noise*
    (a build's looks differ from its peers').  Returns each build's (time, count,
    running) per tick."""
    settings = Settings(jobs=2, load=target)
    governors = [Governor([POLICIES["adaptive"]], settings) for _ in range(builds)]
    starts = list(starts) or [0.0] * builds
    ends = list(ends) or [math.inf] * builds
    running: list[list[float]] = [[] for _ in range(builds)]  # end times
    history: list[list[tuple[float, int, int]]] = [[] for _ in range(builds)]
    seen_builds: list[list[tuple[float, int]]] = [[] for _ in range(builds)]
    seen_loads: dict[tuple[int, int], list[tuple[float, float]]] = {}
    noisy = random.Random(1)
    step = tick_s / builds
    t = 0.0

    def live(o: int, at: float) -> bool:
        return starts[o] <= at < ends[o]

    while t < seconds:
        for b, governor in enumerate(governors):
            phase = t + b * step
            if not live(b, phase):
                running[b] = []
                continue
            running[b] = [end for end in running[b] if end > phase]

            def seen(t: float) -> float:
                return min(external(t), external(t - tick_s))

            def short() -> int:
                return noisy.choice((1, 2)) if noisy.random() < peer_noise else 0

            peers = []
            for o in range(builds):
                if o == b or not live(o, phase):
                    continue
                # As the sampler sees a peer: the more of two looks, and
                # the most of the last PEER_WINDOW_S and LONG_WINDOW_S.
                looks = seen_loads.setdefault((b, o), [])
                looks.append((phase, float(max(len(running[o]) - short(), 0))))

                def most(span_s: float, looks=looks, now=phase) -> float:
                    return max(v for at, v in looks if at > now - span_s)

                peers.append(
                    PeerBuild(
                        pid=o + 1,
                        start_s=starts[o],
                        age_s=phase - starts[o],
                        load=max(v for _, v in looks[-2:]),
                        load_recent=most(PEER_WINDOW_S),
                        load_peak=most(LONG_WINDOW_S),
                    )
                )
            seen_builds[b].append((phase, len(peers) + 1))
            external_now = seen(phase)
            if noisy.random() < external_noise:
                external_now += 0.8 * noisy.random()
            governor.decide(
                Metrics(
                    time_s=phase,
                    cpus=2,
                    external_load=external_now,
                    external_load_peak=max(external_now, seen(phase - tick_s)),
                    external_load_peak_long=max(
                        external_now,
                        *(seen(phase - k * tick_s) for k in range(int(5 / tick_s) + 1)),
                    ),
                    builds_peak_long=max(
                        n for at, n in seen_builds[b] if at >= phase - 5.0
                    ),
                    peers=tuple(peers),
                    own_key=(starts[b], b + 1),
                )
            )
            # The build starts jobs up to its count at once (make does).
            while len(running[b]) < governor.count:
                running[b].append(phase + job_s)
            history[b].append((phase, governor.count, len(running[b])))
        t += tick_s
    return history


def changes_per_minute(history: list[tuple[float, int, int]]) -> float:
    counts = [count for _, count, _ in history]
    changes = sum(a != b for a, b in itertools.pairwise(counts))
    return changes / (history[-1][0] - history[0][0]) * 60


@pytest.mark.parametrize(
    ("builds", "target"), [(2, 8), (3, 8), (4, 8), (2, 32), (3, 32)]
)
def test_simulated_builds_share_fairly_fill_the_target_and_stay_calm(builds, target):
    history = simulate(builds, target, seconds=60.0)
    means = [statistics.mean(r for _, _, r in h[4:]) for h in history]
    assert min(means) >= 0.8 * max(means), means
    assert sum(means) >= 0.9 * target, means
    assert all(changes_per_minute(h) <= 6 for h in history)


@pytest.mark.parametrize(("builds", "target"), [(2, 8), (3, 8), (2, 32), (3, 32)])
def test_simulated_builds_stay_calm_when_their_looks_differ(builds, target):
    """Each look at a peer sees it a job or two short now and then (its
    make, starved of CPU, slow to start the next job), as with 32 burners
    on 2 CPUs, and the builds' looks at the external load differ a little:
    no +1/-1 blips."""
    history = simulate(
        builds, target, seconds=60.0, peer_noise=0.3, external_noise=0.02
    )
    means = [statistics.mean(r for _, _, r in h[4:]) for h in history]
    assert min(means) >= 0.8 * max(means), means
    assert sum(means) >= 0.9 * target, means
    rates = [changes_per_minute(h) for h in history]
    assert max(rates) <= 6, rates


def test_when_a_build_ends_the_others_take_its_share_without_overshoot():
    """3 builds at 32, one ends: the two left go from 10 or 11 to 16 each,
    and neither takes the other's part while it grows (no 22 then 16)."""
    history = simulate(3, 32, seconds=30.0, ends=[math.inf, math.inf, 15.0])
    for h in history[:2]:
        after = [count for t, count, _ in h if t >= 15.0]
        assert max(after) == 16, after
        assert after[-1] == 16
        assert all(count == 16 for t, count, _ in h if t >= 17.0)


def test_simulated_builds_give_way_to_external_load_and_take_it_back():
    def burners(t: float) -> float:
        return 4.0 if 10.0 <= t < 20.0 else 0.0

    history = simulate(2, 8, seconds=30.0, external=burners)
    for h in history:
        down = next(t for t, count, _ in h if t >= 10.0 and count <= 2)
        back = next(t for t, count, _ in h if t >= 20.0 and count >= 4)
        assert down - 10.0 <= 1.0
        assert back - 20.0 <= 1.5
        assert changes_per_minute(h) <= 6


def test_simulated_builds_do_not_chase_bursts():
    def bursts(t: float) -> float:
        return 6.0 if t % 2.0 < 0.3 else 0.0

    history = simulate(2, 8, seconds=60.0, external=bursts)
    assert all(changes_per_minute(h) <= 2 for h in history)


def test_a_late_build_gets_its_share_and_the_first_gives_it_back():
    history = simulate(2, 8, seconds=20.0, starts=[0.0, 5.0])
    first, second = history
    assert all(c == 8 for t, c, _ in first if 3.0 < t < 5.0)
    assert all(c == 4 for t, c, _ in first if t > 6.0)
    assert all(c == 4 for t, c, _ in second if t > 6.0)


# -- memory ----------------------------------------------------------------------


def job(pid: int, rss: int, start: float = 0.0) -> Job:
    return Job(pid=pid, start_s=start, pids=(pid,), rss_bytes=rss, runnable=1)


def mem(
    available: int, jobs: tuple[Job, ...] = (), peak: int | None = None, **kw: float
) -> Metrics:
    return Metrics(
        cpus=8,
        mem_total_bytes=16 * GIB,
        mem_available_bytes=available,
        jobs=jobs,
        job_rss_peak_bytes=peak,
        **kw,  # type: ignore[arg-type]
    )


def test_memory_lets_as_many_jobs_start_as_fit_above_the_reserve():
    settings = Settings(jobs=8, mem_reserve=parse_size("2G"))
    running = tuple(job(i, 1 * GIB) for i in range(2))
    decision = memory(mem(5 * GIB, running, peak=1 * GIB), 8, settings)
    assert decision.jobs == 2 + 3
    assert "3 more fit" in decision.reason


def test_memory_counts_what_running_jobs_will_still_take():
    settings = Settings(jobs=8, mem_reserve=parse_size("2G"))
    # Two jobs just started: small now, but jobs of this build reach 1G.
    running = tuple(job(i, 100 * MIB) for i in range(2))
    decision = memory(mem(5 * GIB, running, peak=1 * GIB), 8, settings)
    assert decision.jobs == 2 + 1


def test_memory_below_the_reserve_sheds_jobs_and_says_so():
    settings = Settings(jobs=8, mem_reserve=parse_size("2G"))
    running = tuple(job(i, 1 * GIB) for i in range(4))
    decision = memory(mem(int(1.1 * GIB), running, peak=GIB), 8, settings)
    assert decision.jobs == 3
    assert decision.reason == "memory 1.1G available < 2.0G reserve"


def test_memory_never_goes_below_one_job():
    settings = Settings(jobs=8, mem_reserve=parse_size("50%"))
    decision = memory(mem(0, (job(1, 8 * GIB),), peak=8 * GIB), 8, settings)
    assert decision.jobs == 1


def test_memory_pressure_holds_then_sheds_before_the_reserve_is_reached():
    settings = Settings(jobs=8, mem_reserve=parse_size("1G"))
    running = tuple(job(i, 256 * MIB) for i in range(3))
    near = int(1.8 * GIB)  # less than twice the reserve left
    calm = memory(mem(near, running, 256 * MIB, psi_memory_some=0.0), 3, settings)
    held = memory(mem(near, running, 256 * MIB, psi_memory_some=0.08), 3, settings)
    shed = memory(mem(near, running, 256 * MIB, psi_memory_some=0.40), 3, settings)
    assert (calm.jobs, held.jobs, shed.jobs) == (6, 3, 2)
    assert "PSI" in shed.reason


def test_without_psi_swapping_holds_the_count_near_the_reserve():
    settings = Settings(jobs=8, mem_reserve=parse_size("1G"))
    running = tuple(job(i, 256 * MIB) for i in range(3))
    near = int(1.8 * GIB)
    calm = memory(mem(near, running, 256 * MIB, swap_pages_s=10.0), 3, settings)
    held = memory(mem(near, running, 256 * MIB, swap_pages_s=500.0), 3, settings)
    shed = memory(mem(near, running, 256 * MIB, swap_pages_s=5000.0), 3, settings)
    assert (calm.jobs, held.jobs, shed.jobs) == (6, 3, 2)
    assert "swapping" in shed.reason


def test_memory_pressure_elsewhere_does_not_hold_a_build_with_room():
    # PSI is system-wide: a thrashing cgroup elsewhere raises it too.
    settings = Settings(jobs=8, mem_reserve=parse_size("1G"))
    running = tuple(job(i, 256 * MIB) for i in range(3))
    roomy = memory(mem(12 * GIB, running, 256 * MIB, psi_memory_some=0.6), 3, settings)
    assert roomy.jobs == 8


def test_memory_running_out_over_a_series():
    settings = Settings(jobs=8, mem_reserve=parse_size("2G"))
    series = []
    for tick in range(12):
        running = tuple(job(i, GIB) for i in range(min(tick, 6)))
        # Something else eats a gigabyte per tick.
        series.append(mem(max(12 - tick, 0) * GIB - len(running) * GIB, running, GIB))
    counts = run_series("memory", series, settings)
    assert counts[0] == 8
    assert counts[-1] == 1
    assert all(b <= a or b <= 2 for a, b in itertools.pairwise(counts[6:]))


def test_memory_default_reserve_is_ten_percent_at_most_4g():
    small = Metrics(mem_total_bytes=4 * GIB, mem_available_bytes=4 * GIB)
    large = Metrics(mem_total_bytes=128 * GIB, mem_available_bytes=4 * GIB)
    settings = Settings(jobs=4)
    policies = [POLICIES["memory"]]
    assert targets(policies, small, settings)["mem_reserve_bytes"] == int(0.4 * GIB)
    assert targets(policies, large, settings)["mem_reserve_bytes"] == 4 * GIB


def test_memory_in_a_cgroup_uses_the_cgroup_s_memory():
    # Inside a 4G cgroup on a 64G host the sampler reports the cgroup's
    # figures; the policy must decide by them (10% of 4G reserve).
    metrics = Metrics(
        cpus=8,
        mem_total_bytes=4 * GIB,
        mem_limit_bytes=4 * GIB,
        mem_available_bytes=1 * GIB,
        jobs=(job(1, GIB), job(2, GIB), job(3, GIB)),
        job_rss_peak_bytes=GIB,
    )
    assert memory(metrics, 8, Settings(jobs=8)).jobs == 3


def test_freeze_stops_the_youngest_when_critical_and_continues_the_oldest_later():
    settings = Settings(jobs=4, mem_reserve=parse_size("2G"))
    running = (
        job(10, GIB, start=1.0),
        job(11, GIB, start=3.0),
        job(12, GIB, start=2.0),
    )
    critical = mem(int(0.5 * GIB), running, GIB)
    step = freeze_step(critical, [], settings)
    assert step.stop == 11 and step.resume is None
    step = freeze_step(critical, [11], settings)
    assert step.stop == 12
    # One job always runs.
    assert freeze_step(critical, [11, 12], settings).stop is None
    recovered = mem(4 * GIB, running, GIB)
    step = freeze_step(recovered, [11, 12], settings)
    assert (step.stop, step.resume) == (None, 12)
    assert freeze_step(mem(int(2.5 * GIB), running, GIB), [11], settings).resume is None


# -- presence ----------------------------------------------------------------------


def test_presence_backs_off_while_the_user_types_and_takes_all_when_away():
    settings = Settings(jobs=8, idle_after_s=300)
    idle = [0, 5, 100, 299, 300, 1000, 2, 50]
    counts = run_series(
        "presence", [Metrics(cpus=8, idle_s=float(s)) for s in idle], settings
    )
    assert counts == [4, 4, 4, 4, 8, 8, 4, 4]


def test_presence_active_jobs_setting_and_pause():
    metrics = Metrics(cpus=8, idle_s=1.0)
    assert presence(metrics, 8, Settings(jobs=8, active_jobs=2)).jobs == 2
    assert presence(metrics, 8, Settings(jobs=8, active_jobs=0)).jobs == 0
    assert presence(Metrics(cpus=1, idle_s=1.0), 1, Settings(jobs=1)).jobs == 1


def test_presence_without_a_source_sets_no_cap():
    decision = presence(Metrics(cpus=8, idle_s=None), 8, Settings(jobs=8))
    assert decision.jobs == 8
    assert "no source" in decision.reason


# -- schedule ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weekday", "minute", "expected"),
    [
        (0, 9 * 60, 2),  # Monday 9:00
        (4, 18 * 60 - 1, 2),  # Friday 17:59
        (4, 18 * 60, 8),  # Friday 18:00: no rule
        (5, 11 * 60, 0),  # Saturday 11:00: paused
        (6, 3 * 60, 1),  # Sunday 3:00: night rule from Saturday 23:00
        (2, 3 * 60, 1),  # Wednesday 3:00: Tuesday's night
    ],
)
def test_schedule_caps_by_day_and_hour(weekday, minute, expected):
    rules = parse_schedule("mon-fri 9:00-18:00 2; sat,sun 10-12 pause; 23:00-6:00 1")
    metrics = Metrics(weekday=weekday, minute_of_day=minute)
    assert schedule(metrics, 8, Settings(jobs=8, schedule=rules)).jobs == expected


def test_schedule_max_is_the_jobs_setting():
    rules = parse_schedule("max")
    assert schedule(Metrics(), 8, Settings(jobs=6, schedule=rules)).jobs == 6


# -- combining ------------------------------------------------------------------------


def test_the_smallest_cap_wins_and_its_reason_names_its_policy():
    settings = Settings(jobs=8, mem_reserve=parse_size("2G"), idle_after_s=60)
    governor = Governor(
        [POLICIES["adaptive"], POLICIES["memory"], POLICIES["presence"]], settings
    )
    busy_user = Metrics(
        cpus=8, idle_s=3.0, mem_total_bytes=16 * GIB, mem_available_bytes=12 * GIB
    )
    governor.decide(busy_user)
    assert governor.count == 4
    assert governor.reason.startswith("presence: ")
    short = Metrics(
        cpus=8,
        idle_s=999.0,
        mem_total_bytes=16 * GIB,
        mem_available_bytes=GIB,
        jobs=(job(1, GIB),),
    )
    governor.decide(short)
    assert governor.count == 1
    assert governor.reason.startswith("memory ")


def test_min_and_max_jobs_bound_every_policy():
    settings = Settings(jobs=8, min_jobs=2, max_jobs=6)
    assert run_series("adaptive", [load(20.0)] * 3, settings)[-1] == 2
    assert run_series("adaptive", loads(*[0.0] * 6), settings)[-1] == 6


RECORDED = Path(__file__).parent / "data" / "adaptive-burners.jsonl"


def test_adaptive_replays_a_recorded_build_under_a_competing_load():
    """A trace bcrun recorded (bench/adaptive.py, 2 CPUs): two CPU burners
    ran from about 4 s to 20 s.  Replayed through the policy, the count
    drops within a second of the load and comes back within 1.5 s of its end."""
    ticks = [json.loads(line) for line in RECORDED.read_text().splitlines()]
    series = [
        Metrics(
            cpus=2,
            external_load=t["external_load"],
            external_load_peak=t["external_load_peak"],
        )
        for t in ticks
    ]
    counts = run_series("adaptive", series, Settings(jobs=2))
    loaded = next(t["elapsed_s"] for t in ticks if t["external_load"] > 1.0)
    dropped = next(t["elapsed_s"] for t, c in zip(ticks, counts, strict=True) if c == 1)
    assert dropped - loaded < 1.0
    calm = max(t["elapsed_s"] for t in ticks if t["external_load_peak"] > 1.0)
    assert counts[-1] == 2
    back = next(
        t["elapsed_s"]
        for t, c in zip(ticks, counts, strict=True)
        if t["elapsed_s"] > calm and c == 2
    )
    assert back - calm < 1.5


# -- adaptive: what a job costs ---------------------------------------------------


def test_jobs_that_wait_run_above_the_target_until_their_load_meets_it():
    half = Metrics(cpus=8, job_cost=0.5)
    assert adaptive(half, 8, Settings(jobs=8)).jobs == 16
    assert "a job makes 0.5 of load" in adaptive(half, 8, Settings(jobs=8)).reason
    # Jobs that only sleep: at most WAITING_LIMIT times the share.
    asleep = Metrics(cpus=8, job_cost=1 / 8)
    assert adaptive(asleep, 8, Settings(jobs=8)).jobs == 8 * WAITING_LIMIT


def test_multithreaded_jobs_run_as_many_as_their_threads_fit():
    assert adaptive(Metrics(cpus=8, job_cost=4.0), 8, Settings(jobs=8)).jobs == 2
    assert adaptive(Metrics(cpus=8, job_cost=8.0), 8, Settings(jobs=8)).jobs == 1


def test_with_remote_hosts_the_count_is_their_slots_plus_the_local_room():
    source = "distcc (DISTCC_HOSTS): 2 of 2 hosts, 8 remote slots"
    compiling = Metrics(cpus=2, job_cost=0.125, remote_slots=8, remote_source=source)
    decision = adaptive(compiling, 2, Settings(jobs=2))
    assert decision.jobs == 10
    assert source in decision.reason
    # A host leaves: its slots go.
    assert adaptive(replace(compiling, remote_slots=4), 10, Settings(jobs=2)).jobs == 6
    # Linking: local jobs of a whole CPU each, the local room only.
    linking = replace(compiling, job_cost=1.0)
    assert adaptive(linking, 10, Settings(jobs=2)).jobs == 2
    # The build's first looks, before a job's cost is known: the slots at
    # once, not a ramp from the local room.
    starting = replace(compiling, job_cost=None)
    assert adaptive(starting, 2, Settings(jobs=2)).jobs == 10


def test_growth_of_one_job_is_made_at_once_when_a_load_has_ended():
    """Two builds at 3 each under a load of 2: when it ends, each grows by
    one job within two looks, not after the 5 s a small step waits for."""
    externals = [2.0] * 12 + [0.0] * 4
    series = [
        replace(m, peers=(peer(2, 3.0),), own_key=(0.0, 1)) for m in loads(*externals)
    ]
    counts = run_series("adaptive", series, Settings(jobs=8))
    assert counts[11] == 3
    assert counts[13] == 4


def test_growth_of_one_job_near_a_threshold_waits_for_the_long_calm():
    noise = [1.4, 1.6] * 20
    series = [
        replace(m, peers=(peer(2, 3.0),), own_key=(0.0, 1)) for m in loads(*noise)
    ]
    counts = run_series("adaptive", series, Settings(jobs=8))
    changes = sum(a != b for a, b in itertools.pairwise(counts[2:]))
    assert changes <= 1, counts
