"""The user's settings for one wrapped build."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """What the policies are told; filled from the command line."""

    #: -j: the fixed policy's count, and the count before any policy spoke.
    jobs: int
    min_jobs: int = 0
    max_jobs: int | None = None
    #: Seconds between two samples of the machine.
    tick_s: float = 0.5
