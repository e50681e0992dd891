"""The job-count state and the policy seam, fed recorded metrics."""

from __future__ import annotations

import pytest

from bcrun.governor import Governor
from bcrun.metrics import Metrics
from bcrun.policies import POLICIES, Decision, Policy, combine
from bcrun.protocol import COUNT_MAX
from bcrun.settings import Settings

IDLE = Metrics(cpus=8, mem_total_bytes=16 << 30, mem_available_bytes=12 << 30)


def capped(n: int) -> Policy:
    return Policy(f"cap{n}", lambda m, prev, s: Decision(n, f"cap {n}"), True)


def test_fixed_gives_the_jobs_setting():
    governor = Governor([POLICIES["fixed"]], Settings(jobs=6))
    governor.decide(IDLE)
    assert (governor.count, governor.mode) == (6, "auto")
    assert "-j 6" in governor.reason
    assert not governor.needs_metrics


def test_pin_pause_resume_auto():
    governor = Governor([POLICIES["fixed"]], Settings(jobs=4))
    governor.decide(IDLE)
    governor.pin(9)
    assert (governor.count, governor.mode) == (9, "pinned")
    governor.pause()
    assert (governor.count, governor.mode) == (0, "paused")
    governor.resume()
    assert governor.count == 9
    governor.pause()
    governor.pin(2)  # a count given while paused ends the pause
    assert (governor.count, governor.mode) == (2, "pinned")
    governor.unpin()
    assert (governor.count, governor.mode) == (4, "auto")


def test_step_pins_one_more_or_fewer_and_never_below_zero():
    governor = Governor([POLICIES["fixed"]], Settings(jobs=1))
    governor.decide(IDLE)
    governor.step(+1)
    assert (governor.count, governor.mode) == (2, "pinned")
    for _ in range(4):
        governor.step(-1)
    assert governor.count == 0
    governor.pin(COUNT_MAX)
    governor.step(+1)
    assert governor.count == COUNT_MAX


def test_smallest_cap_wins_and_names_its_policy():
    decision, caps = combine(
        [capped(5), capped(2), capped(7)], IDLE, {}, Settings(jobs=4)
    )
    assert decision == Decision(2, "cap 2")
    assert caps == {"cap5": 5, "cap2": 2, "cap7": 7}


def test_each_policy_starts_from_its_own_previous_cap():
    seen = {}

    def remember(name: str) -> Policy:
        def decide(metrics: Metrics, previous: int, settings: Settings) -> Decision:
            seen[name] = previous
            return Decision(previous + 1, name)

        return Policy(name, decide, True)

    governor = Governor([remember("a"), remember("b")], Settings(jobs=3))
    governor.decide(IDLE)
    assert seen == {"a": 3, "b": 3}
    governor.decide(IDLE)
    # Each sees its own last cap, not the combined count.
    assert seen == {"a": 4, "b": 4}
    assert governor.count == 5


@pytest.mark.parametrize(
    ("cap", "settings", "expected"),
    [
        (1, Settings(jobs=4, min_jobs=2), 2),
        (9, Settings(jobs=4, max_jobs=3), 3),
        (0, Settings(jobs=4, min_jobs=0), 0),
    ],
)
def test_min_and_max_jobs_bound_the_result(cap, settings, expected):
    decision, _ = combine([capped(cap)], IDLE, {}, settings)
    assert decision.jobs == expected
    if expected != cap:
        assert "jobs" in decision.reason


def test_a_policy_that_needs_metrics_makes_the_governor_tick():
    assert Governor([capped(1)], Settings(jobs=1)).needs_metrics


def test_a_step_that_changes_nothing_keeps_a_pause():
    governor = Governor([POLICIES["fixed"]], Settings(jobs=3))
    governor.pause()
    governor.step(-1)
    assert governor.mode == "paused"
    governor.resume()
    assert governor.count == 3
    governor.pause()
    governor.step(+1)  # one more than the 0 in force
    assert (governor.count, governor.mode) == (1, "pinned")


def test_the_count_before_any_decision_is_bounded():
    governor = Governor([POLICIES["fixed"]], Settings(jobs=8, max_jobs=4))
    assert governor.count == 4
