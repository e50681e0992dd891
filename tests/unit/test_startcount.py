"""The count a build starts at, worked out without the sampler or the
policies, is what they give for the same figures."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bcrun import cgroup, metrics, startcount
from bcrun.metrics import Metrics
from bcrun.policies.memory import memory
from bcrun.policies.presence import active_jobs
from bcrun.policies.schedule import schedule
from bcrun.schedule import parse_schedule
from bcrun.settings import Settings
from bcrun.startcount import (
    UNSEEN_JOB_BYTES,
    Memory,
    memory_fit,
    reserve_of,
    start_count,
)
from bcrun.units import Size

GIB = 1 << 30


def test_the_cpus_are_the_samplers():
    """One definition, shared with the sampler: what it reads each tick."""
    assert metrics.usable_cpus is startcount.usable_cpus
    sampled = cgroup.read_cpu_limit(cgroup.own_cgroups(), metrics.usable_cpus())
    assert startcount.cpu_capacity() == sampled
    counts = {
        cpus: startcount.default_jobs(sampled._replace(cpus=cpus))
        for cpus in (0.5, 1.0, 1.5, 2.0, 7.999999999, 64.0)
    }
    assert counts == {0.5: 1, 1.0: 1, 1.5: 1, 2.0: 2, 7.999999999: 8, 64.0: 64}


@given(
    total=st.integers(GIB // 4, 256 * GIB),
    share=st.floats(0.0, 1.0),
    reserve=st.one_of(
        st.none(),
        st.integers(0, 8 * GIB).map(lambda b: Size(bytes=b)),
        st.floats(0, 100).map(lambda p: Size(percent=p)),
    ),
    jobs=st.integers(1, 512),
)
def test_memorys_first_count_is_the_memory_policys(total, share, reserve, jobs):
    """With no job running yet, and no rate known (a first sample)."""
    available = int(total * share)
    settings = Settings(jobs=jobs, mem_reserve=reserve)
    decision = memory(
        Metrics(mem_total_bytes=total, mem_available_bytes=available), jobs, settings
    )
    found = Memory(total, available)
    fit = memory_fit(found, reserve_of(total, reserve), UNSEEN_JOB_BYTES, jobs)
    assert fit == decision.jobs


def test_the_schedules_rule_now_caps_the_start(monkeypatch):
    rules = parse_schedule("mon-fri 9-18 2; sat,sun pause")
    import time

    for day, hour, expected in ((0, 10, 2), (0, 20, 8), (5, 10, 0)):
        now = time.struct_time((2026, 1, 5 + day, hour, 0, 0, day, 5 + day, 0))
        monkeypatch.setattr(time, "localtime", lambda now=now: now)
        decision = schedule(
            Metrics(weekday=day, minute_of_day=hour * 60),
            8,
            Settings(jobs=8, schedule=rules),
        )
        assert decision.jobs == expected
        assert start_count(8, ("schedule",), schedule=rules) == expected


def test_presence_starts_at_the_jobs_of_a_user_at_the_keyboard():
    cpus = startcount.usable_cpus()
    settings = Settings(jobs=64)
    assert start_count(64, ("presence",)) == active_jobs(Metrics(cpus=cpus), settings)
    assert start_count(64, ("presence",), active_jobs=3) == 3


def test_the_bounds_and_the_policies_that_need_a_sample():
    assert start_count(8, ("fixed",)) == 8
    assert start_count(8, ("adaptive",)) == 8  # decided at the first tick
    assert start_count(8, ("fixed",), max_jobs=3) == 3
    assert start_count(0, ("fixed",), min_jobs=2) == 2
    assert start_count(0, ("fixed",)) == 0  # -j 0: started paused
