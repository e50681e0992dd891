"""Builds whose jobs log their own start and end, and what the logs say.

Concurrency is measured from the jobs themselves: every job appends
``start NAME TIME`` and ``end NAME TIME`` (wall clock, seconds) to one log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

#: "At once" for a tool starting jobs on a new count: the tool wakes on the
#: line (a polling tool would take its tick, 0.5 s or more) and spawns them;
#: the spawning of a few shells alone took 0.1 s on a busy CI machine.
AT_ONCE_S = 0.25

JOB_SCRIPT = """\
#!/bin/sh
# job.sh NAME SECONDS: log the start, work, log the end.
log=${JOBLOG:?}
echo "start $1 $(date +%s.%N)" >> "$log"
if [ -n "${JOBENV:-}" ]; then
	{
		echo "env $1 BUILDSOCKET=${BUILDSOCKET-} BUILDTOKEN=${BUILDTOKEN-}"
		for fd in /proc/$$/fd/*; do echo "fd $1 $(readlink "$fd")"; done
	} >> "$JOBENV"
fi
sleep "$2"
echo "end $1 $(date +%s.%N)" >> "$log"
"""


@dataclass(frozen=True)
class Interval:
    name: str
    start: float
    end: float


class JobLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def intervals(self, now: float | None = None) -> list[Interval]:
        """Every job seen, a running one ending at *now* (default: now)."""
        starts: dict[str, float] = {}
        ends: dict[str, float] = {}
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 3:
                continue
            kind, name, stamp = parts
            (starts if kind == "start" else ends)[name] = float(stamp)
        end_of_running = time.time() if now is None else now
        return sorted(
            (Interval(n, s, ends.get(n, end_of_running)) for n, s in starts.items()),
            key=lambda i: i.start,
        )

    def started(self) -> int:
        return len(self.intervals())

    def finished(self) -> int:
        return sum(1 for line in self._lines() if line.startswith("end "))

    def _lines(self) -> list[str]:
        try:
            return self.path.read_text().splitlines()
        except FileNotFoundError:
            return []

    def running_at(self, t: float) -> int:
        return sum(1 for i in self.intervals() if i.start <= t < i.end)

    def max_running(self, since: float = 0.0, until: float = float("inf")) -> int:
        """The most jobs that ran at once between *since* and *until*."""
        intervals = self.intervals()
        points = [i.start for i in intervals if since <= i.start <= until]
        points += [since] if since > 0 else []
        best = 0
        for t in points:
            best = max(best, sum(1 for i in intervals if i.start <= t < i.end))
        return best

    def starts_while_at_or_above(
        self, count: int, since: float, ending: float = 0.0
    ) -> list[Interval]:
        """Jobs started after *since* while *count* or more others ran.

        "Others" are jobs started before this one (in log order for starts
        in the same instant), so two jobs started together count once.  With
        *ending*, others that end within that many seconds of the start do
        not count: a sub-make may start a job on its own implicit slot while
        another sub-make's jobs, started together, are ending.  A token kept
        against a decrease still shows, as a job that runs beside the others
        for its whole length.
        """
        intervals = self.intervals()
        return [
            job
            for index, job in enumerate(intervals)
            if job.start > since
            and sum(1 for i in intervals[:index] if job.start + ending < i.end) >= count
        ]

    def time_running_reached(self, count: int, since: float) -> float | None:
        """When *count* jobs first ran at once after *since*."""
        for job in self.intervals():
            if job.start >= since and self.running_at(job.start) >= count:
                return job.start
        return None


def make_project(
    directory: Path, jobs: int, seconds: float, recursive: int = 0, spread: bool = False
) -> JobLog:
    """A build of *jobs* independent jobs of *seconds* each, as a Makefile
    (GNU and BSD make alike) and a build.ninja.  With *recursive* > 0 the
    Makefile runs that many sub-makes of *jobs* jobs each instead.  With
    *spread*, the jobs take from 1 to 2 times *seconds*, so that they end at
    different times, as in a real build.
    """
    directory.mkdir(parents=True, exist_ok=True)
    job = directory / "job.sh"
    job.write_text(JOB_SCRIPT)
    names = [f"j{i}" for i in range(jobs)]
    durations = {
        name: round(seconds * (1 + (i * 7 % 10) / 10 if spread else 1), 3)
        for i, name in enumerate(names)
    }
    if recursive:
        subs = [f"sub{i}" for i in range(recursive)]
        for sub in subs:
            _write_makefile(
                directory / sub,
                {f"{sub}-{n}": d for n, d in durations.items()},
                job,
            )
        lines = [f"all: {' '.join(subs)}", ""]
        for sub in subs:
            lines += [f"{sub}:", f"\t@$(MAKE) -C {sub}", ""]
        lines.append(f".PHONY: all {' '.join(subs)}")
        (directory / "Makefile").write_text("\n".join(lines) + "\n")
    else:
        _write_makefile(directory, durations, job)
    write_ninja(directory, durations, job)
    return JobLog(directory / "jobs.log")


def write_ninja(directory: Path, durations: dict[str, float], job: Path) -> None:
    """A build.ninja in *directory* running *job* once per name, for its time."""
    lines = ["rule job", f"  command = sh {job} $out $seconds", ""]
    for name, seconds in durations.items():
        lines += [f"build {name}: job", f"  seconds = {seconds}"]
    lines += ["", f"build all: phony {' '.join(durations)}", "default all", ""]
    (directory / "build.ninja").write_text("\n".join(lines))


def _write_makefile(directory: Path, durations: dict[str, float], job: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"all: {' '.join(durations)}", ""]
    for name, seconds in durations.items():
        lines += [f"{name}:", f"\t@sh {job} {name} {seconds}", ""]
    lines.append(f".PHONY: all {' '.join(durations)}")
    (directory / "Makefile").write_text("\n".join(lines) + "\n")
