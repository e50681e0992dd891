"""The user's settings for one wrapped build."""

from __future__ import annotations

from dataclasses import dataclass

from bcrun.schedule import Schedule
from bcrun.units import Size


@dataclass(frozen=True)
class Settings:
    """What the policies are told; filled from the command line, the
    environment and the configuration file."""

    #: -j: the fixed policy's count, the count before any policy spoke, and
    #: what the other policies give when nothing holds the build back.
    jobs: int
    min_jobs: int = 0
    max_jobs: int | None = None
    #: Seconds between two samples of the machine.
    tick_s: float = 0.5
    #: adaptive: runnable tasks to keep the machine at; None: its CPUs.
    load: float | None = None
    #: memory: what to leave free; None: 10% of the memory, at most 4G.
    mem_reserve: Size | None = None
    #: memory: stop the youngest jobs when memory is critically short.
    freeze: bool = False
    #: presence: jobs while the user is active; None: half the CPUs.
    active_jobs: int | None = None
    #: presence: seconds without input after which the user is away.
    idle_after_s: float = 300.0
    schedule: Schedule = ()
