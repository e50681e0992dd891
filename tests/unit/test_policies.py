"""Each policy against synthetic metric series: no sleeping, no machine."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterable
from pathlib import Path

import pytest

from bcrun.buildtree import Job
from bcrun.governor import Governor
from bcrun.metrics import PEAK_WINDOW_S, Metrics
from bcrun.policies import POLICIES, targets
from bcrun.policies.adaptive import adaptive
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
    return [
        Metrics(
            cpus=cpus,
            external_load=external,
            external_load_peak=max(externals[max(i - window, 0) : i + 1]),
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


def test_adaptive_grows_back_in_bounded_steps_after_the_load_leaves():
    counts = run_series("adaptive", loads(*[7.0] * 3, *[0.0] * 16), Settings(jobs=8))
    assert counts[2] == 1
    # Growth waits for a calm of PEAK_WINDOW_S, then goes a quarter of the
    # target per tick.
    calm = int(PEAK_WINDOW_S / 0.5)
    assert counts[2 + calm] == 1
    rises = [b - a for a, b in itertools.pairwise(counts[2:])]
    assert max(rises) <= 2
    assert counts[-1] == 8


def test_adaptive_does_not_flap_on_noise():
    noise = random.Random(5)
    series = loads(*[2.5 + noise.uniform(-0.4, 0.4) for _ in range(200)])
    counts = run_series("adaptive", series, Settings(jobs=8))
    changes = sum(a != b for a, b in itertools.pairwise(counts[5:]))
    assert changes <= 2, counts
    assert counts[-1] in (5, 6)


def test_adaptive_rides_out_a_spike_of_one_tick_briefly():
    series = loads(*[0.0] * 4, 6.0, *[0.0] * 14)
    counts = run_series("adaptive", series, Settings(jobs=8))
    assert counts[4] == 2
    assert counts[-1] == 8


def test_adaptive_never_starves_the_build():
    counts = run_series("adaptive", [load(50.0)] * 5, Settings(jobs=8))
    assert counts == [1] * 5


def test_adaptive_target_is_the_load_setting():
    decision = adaptive(load(1.0), 8, Settings(jobs=8, load=4.0))
    assert decision.jobs == 3
    assert decision.reason.startswith("adaptive: ")
    assert "target 4" in decision.reason


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
    ran from about 4 s to 20 s.  Replayed through the policy, it gives the
    counts bcrun sent, drops within 2 s of the load and comes back after it."""
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
    assert counts == [t["jobs"] for t in ticks]
    loaded = next(t["elapsed_s"] for t in ticks if t["external_load"] > 0.5)
    dropped = next(t["elapsed_s"] for t, c in zip(ticks, counts, strict=True) if c == 1)
    assert dropped - loaded < 2.0
    calm = max(t["elapsed_s"] for t in ticks if t["external_load"] > 1.0)
    assert counts[-1] == 2
    back = next(
        t["elapsed_s"]
        for t, c in zip(ticks, counts, strict=True)
        if t["elapsed_s"] > calm and c == 2
    )
    assert back - calm < PEAK_WINDOW_S + 2
