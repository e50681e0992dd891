"""``--nice``: a lower CPU priority for the build, one that works on Linux
desktops.

With autogroups (``kernel.sched_autogroup_enabled``, on by default on
desktops), the scheduler first shares the CPUs between sessions and only
then between the processes of a session by their nice values: a build at
nice 19 in a terminal still takes as much as a whole other session.  So
bcrun sets the nice value of the build's processes *and* of its autogroup
(the terminal session bcrun runs in), and puts the autogroup's value back
when the build ends.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

AUTOGROUP_ENABLED = Path("/proc/sys/kernel/sched_autogroup_enabled")


def set_own_nice(nice: int) -> None:
    """Run in the build's process before it executes (preexec)."""
    os.setpriority(os.PRIO_PROCESS, 0, nice)


def autogroup_nice(pid: int) -> int | None:
    """The nice value of *pid*'s autogroup; None without autogroups."""
    try:
        if AUTOGROUP_ENABLED.read_text().strip() != "1":
            return None
        # "/autogroup-451 nice 0"
        return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def autogroup_niced(pid: int, nice: int) -> Iterator[str | None]:
    """Give *pid*'s autogroup the nice value *nice* for the block; yields
    why it could not, or None."""
    before = autogroup_nice(pid)
    if before is None or before >= nice:
        yield None
        return
    path = Path(f"/proc/{pid}/autogroup")
    try:
        path.write_text(str(nice))
    except OSError as err:
        yield f"cannot lower the session's autogroup priority: {err.strerror}"
        return
    try:
        yield None
    finally:
        # The build is over; bcrun's own process is in the same autogroup.
        with contextlib.suppress(OSError):
            Path("/proc/self/autogroup").write_text(str(before))
