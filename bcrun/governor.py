"""The job count of one wrapped build: the policies' choice, unless the user
pinned a count or paused the build.  Pure state, no I/O: the wrapper feeds it
metrics and user commands and sends whatever :attr:`Governor.count` becomes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from bcrun.metrics import Metrics
from bcrun.policies import Decision, Policy, bound, combine
from bcrun.protocol import COUNT_MAX
from bcrun.settings import Settings

Mode = Literal["auto", "pinned", "paused"]


class Governor:
    def __init__(self, policies: Sequence[Policy], settings: Settings) -> None:
        self.policies = list(policies)
        self.settings = settings
        #: The policies' last decision; until the first, -j within the bounds.
        self.policy_count, self.policy_reason = bound(
            Decision(settings.jobs, f"-j {settings.jobs}"), settings
        )
        #: Each policy's last cap, which it starts from next time.
        self.previous: dict[str, int] = {}
        #: Set by ``bcrun jobs N``; None lets the policies decide.
        self.pinned: int | None = None
        self.paused = False

    @property
    def needs_metrics(self) -> bool:
        return any(policy.needs_metrics for policy in self.policies)

    @property
    def count(self) -> int:
        """The count the build should run now."""
        if self.paused:
            return 0
        if self.pinned is not None:
            return self.pinned
        return self.policy_count

    @property
    def mode(self) -> Mode:
        if self.paused:
            return "paused"
        return "pinned" if self.pinned is not None else "auto"

    @property
    def reason(self) -> str:
        if self.paused:
            return "paused by the user"
        if self.pinned is not None:
            return f"pinned at {self.pinned} by the user"
        return self.policy_reason

    def decide(self, metrics: Metrics) -> None:
        """Let the policies choose from a new sample of the machine."""
        decision, self.previous = combine(
            self.policies, metrics, self.previous, self.settings
        )
        self.policy_count, self.policy_reason = decision

    def pin(self, count: int) -> None:
        """``bcrun jobs N``: this count until ``jobs auto``; ends a pause."""
        self.pinned = min(max(count, 0), COUNT_MAX)
        self.paused = False

    def unpin(self) -> None:
        """``bcrun jobs auto``: back to the policies; ends a pause."""
        self.pinned = None
        self.paused = False

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def step(self, delta: int) -> None:
        """SIGUSR1/SIGUSR2: one job more or fewer than now, pinned.

        A step that changes nothing (one fewer than 0) leaves the state
        alone, so a pause stays a pause that ``resume`` ends.
        """
        count = min(max(self.count + delta, 0), COUNT_MAX)
        if count != self.count:
            self.pin(count)
