"""What one job of the build costs: the ladder and its mean on recorded
looks, and the runnable time of real processes that work and sleep in turns."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from bcrun import proc
from bcrun.buildtree import Job
from bcrun.jobcost import JobCost, RunnableTime, cost_step


def followed(looks: Sequence[tuple[int, int]]) -> list[float | None]:
    """The told cost after each (runnable tasks, jobs) look."""
    cost = JobCost()
    told = []
    for tasks, jobs in looks:
        cost.look(tasks, jobs)
        told.append(cost.told())
    return told


def test_a_cost_above_one_job_is_told_sooner_than_one_below():
    """Jobs of 4 threads overload the machine while the count waits; jobs
    that sleep only leave it idle a moment longer."""
    assert followed([(8, 2)] * 5) == [None, 4.0, 4.0, 4.0, 4.0]
    assert followed([(1, 2)] * 5) == [None] * 3 + [0.5, 0.5]
    assert followed([(2, 2)] * 3) == [None] * 3


def test_a_link_phase_after_remote_compiles_is_followed_within_five_looks():
    """A rise is weighed at once (and the ladder's margin keeps it from
    the last step for a few looks): 8 waiting compiles, then links."""
    told = followed([(1, 8)] * 20 + [(6, 6)] * 5)
    assert told[19] == 0.125
    assert told[20] >= 0.5
    assert told[-1] == 1.0


def test_a_job_s_cost_stays_on_its_step_through_noise():
    assert cost_step(1.05, 1.0) == 1.0
    assert cost_step(0.88, 1.0) == 1.0  # the midpoint to 3/4 is 0.87
    assert cost_step(0.78, 1.0) == 0.75
    assert cost_step(0.3, 1.0) == 0.25
    assert cost_step(3.9, 1.0) == 4.0
    assert cost_step(0.8, 0.75) == 0.75  # and back only past the margin
    noise = random.Random(7)
    step = 1.0
    steps = set()
    for _ in range(1000):
        step = cost_step(noise.uniform(0.9, 1.15), step)
        steps.add(step)
    assert steps == {1.0}


#: argv[1]: an absolute time.monotonic() to start at; then busy for the first
#: half of every 100 ms and asleep for the rest, until 30 s have passed.
IN_STEP = """
import sys, time
start = float(sys.argv[1])
time.sleep(max(start - time.monotonic(), 0))
while time.monotonic() < start + 30:
    phase = (time.monotonic() - start) % 0.1
    if phase < 0.05:
        continue
    time.sleep(0.1 - phase)
"""


def jobs_of(pids: Sequence[int]) -> tuple[tuple[Job, ...], dict[int, proc.ProcStat]]:
    """The processes *pids* as jobs of one process each, read at once."""
    read = (proc.read_stat(pid) for pid in pids)
    processes = {stat.pid: stat for stat in read if stat is not None}
    jobs = tuple(
        Job(pid, processes[pid].start_s, (pid,), 0, processes[pid].state == "R")
        for pid in pids
        if pid in processes
    )
    return jobs, processes


def look(runnable: RunnableTime, pids: Sequence[int]) -> tuple[float, float] | None:
    """*runnable*'s look at the processes *pids*, each a job, now."""
    boot_now = time.clock_gettime(time.CLOCK_BOOTTIME)
    return runnable.look(boot_now, *jobs_of(pids))


#: A process busy until killed.
BUSY = "while True: pass"


def test_jobs_that_work_half_their_time_in_step_with_the_looks_cost_half():
    """Three jobs busy for the first 50 ms of every 100 ms, looked at every
    0.5 s at 20 ms into a period: each look sees them all running, the
    runnable time between looks shows half of it."""
    start = time.monotonic() + 0.5
    children = [
        subprocess.Popen([sys.executable, "-c", IN_STEP, str(start)]) for _ in range(3)
    ]
    try:
        pids = [child.pid for child in children]
        measured, seen_running = [], []
        runnable = RunnableTime()
        for look in range(6):
            time.sleep(max(start + 0.5 + 0.5 * look + 0.02 - time.monotonic(), 0))
            boot_now = time.clock_gettime(time.CLOCK_BOOTTIME)
            jobs, processes = jobs_of(pids)
            seen_running.append(sum(job.runnable for job in jobs))
            mean = runnable.look(boot_now, jobs, processes)
            if mean is not None:
                measured.append(mean[0] / mean[1])
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert len(measured) == 5
    # A look at a moment: nearly all three running each time.
    assert sum(seen_running) / len(seen_running) >= 2.2
    # Half, and more on a busy machine: a job woken to work waits for a CPU.
    assert 0.35 <= sum(measured) / len(measured) <= 0.8, measured


def test_a_job_born_between_two_looks_counts_for_the_time_it_lived():
    runnable = RunnableTime()
    assert look(runnable, []) is None
    time.sleep(0.3)
    child = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        time.sleep(0.3)
        tasks, jobs_seen = look(runnable, [child.pid]) or (0.0, 0.0)
    finally:
        child.kill()
        child.wait()
    # Half of the interval, runnable all along: half a job, half a task.
    assert 0.3 <= jobs_seen <= 0.7
    assert 0.8 <= tasks / jobs_seen <= 1.2


def test_a_child_reaped_between_two_looks_is_not_counted_twice():
    """A compiler driver's cc1: busy for 0.7 s, then reaped by the job's
    shell, whose count takes its CPU time; the job's runnable time, over
    looks every 0.2 s, is the child's, with no spike at the reaping."""
    busy = (
        "import time\nend = time.monotonic() + 0.7\nwhile time.monotonic() < end: pass"
    )
    child = subprocess.Popen(["sh", "-c", f"{sys.executable} -c '{busy}'; sleep 5"])
    runnable = RunnableTime()
    looks: list[float] = []  # runnable threads, mean over each interval
    total = 0.0
    before = None
    try:
        for _ in range(10):
            processes = proc.read_processes()
            kids = [p for p in processes if processes[p].ppid == child.pid]
            job = Job(child.pid, processes[child.pid].start_s, (child.pid, *kids), 0, 0)
            boot_now = time.clock_gettime(time.CLOCK_BOOTTIME)
            mean = runnable.look(boot_now, (job,), processes)
            if mean is not None and before is not None:
                looks.append(mean[0])
                total += mean[0] * (boot_now - before)
            before = boot_now
            time.sleep(0.2)
    finally:
        child.kill()
        child.wait()
    # A look may lose its interval to a process that ended while it read.
    assert len(looks) >= 7
    assert 0.45 <= total <= 1.0, looks
    assert max(looks) <= 1.3, looks


#: A process busy all along, with a second thread busy for argv[1] seconds
#: (the two share Python's lock: one runnable thread in all).
THREADED = """
import sys, threading, time
def spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
threading.Thread(target=spin, args=(float(sys.argv[1]),)).start()
spin(30)
"""


def test_a_thread_that_ends_between_two_looks_takes_nothing_back():
    """Counted by thread: the runnable time of a thread that ended is not
    taken back from its process's growth."""
    child = subprocess.Popen([sys.executable, "-c", THREADED, "0.6"])
    runnable = RunnableTime()
    looks: list[float] = []
    try:
        deadline = time.monotonic() + 10
        while (stat := proc.read_stat(child.pid)) is None or stat.threads < 2:
            assert time.monotonic() < deadline, "the busy thread never started"
            time.sleep(0.01)
        for _ in range(5):
            mean = look(runnable, [child.pid])
            if mean is not None:
                looks.append(mean[0] / mean[1])
            time.sleep(0.25)
    finally:
        child.kill()
        child.wait()
    # About one runnable thread at every look, the one where the second
    # thread ended too (summed by process, its end took its whole time back).
    assert len(looks) == 4
    assert min(looks) >= 0.5, looks


NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")


def spawn_as(pid: int) -> subprocess.Popen[bytes] | None:
    """A busy process on *pid*, freed a moment ago, or None if another
    process took it first."""
    for _ in range(50):
        NS_LAST_PID.write_text(str(pid - 1))
        child = subprocess.Popen([sys.executable, "-c", BUSY])
        if child.pid == pid:
            return child
        child.kill()
        child.wait()
    return None


def test_a_job_on_a_reused_pid_counts_from_its_own_start():
    """Job A ends and job B starts on A's pid between two looks (a kernel
    that wraps its pids fast): B's runnable time is its own, not its own
    less A's."""
    try:
        NS_LAST_PID.write_text(NS_LAST_PID.read_text())
    except OSError as error:
        pytest.skip(f"a pid cannot be chosen here ({NS_LAST_PID}: {error})")
    first = subprocess.Popen([sys.executable, "-c", BUSY])
    runnable = RunnableTime()
    second = None
    try:
        time.sleep(0.2)
        look(runnable, [first.pid])
        time.sleep(0.6)  # A runs up 0.8 s
        first.kill()
        first.wait()
        second = spawn_as(first.pid)
        if second is None:
            pytest.skip(f"pid {first.pid} was taken by another process 50 times")
        time.sleep(0.3)
        tasks, jobs_seen = look(runnable, [second.pid]) or (0.0, 0.0)
    finally:
        for child in (first, second):
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()
    # B lived about a third of the interval, runnable all along (counted as
    # B less A, it reads 0).
    assert 0.15 <= jobs_seen <= 0.6, jobs_seen
    assert tasks / jobs_seen >= 0.6, (tasks, jobs_seen)


def test_runnable_time_of_a_busy_and_a_sleeping_process():
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    asleep = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(0.2)

        def runnable_s() -> list[float]:
            return [
                sum((proc.read_runnable_s(p.pid) or {}).values())
                for p in (busy, asleep)
            ]

        start, before = time.monotonic(), runnable_s()
        time.sleep(0.5)
        after, elapsed = runnable_s(), time.monotonic() - start
    finally:
        for child in (busy, asleep):
            child.kill()
            child.wait()
    # Runnable all along (running or waiting for a CPU on a busy machine;
    # the kernel adds a wait to the count when it ends).
    assert 0.6 * elapsed <= after[0] - before[0] <= 1.3 * elapsed
    assert after[1] - before[1] < 0.01
    assert proc.read_runnable_s(busy.pid) is None
