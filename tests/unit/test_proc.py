"""The /proc readers on recorded files, and the build tree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from bcrun import proc
from bcrun.buildtree import build_use
from bcrun.metrics import Sampler
from bcrun.proc import ProcStat

PAGE = proc.PAGE_SIZE
HZ = proc.CLOCK_TICKS


def test_loadavg_field_four_is_the_tasks_running_now():
    load = proc.parse_loadavg("0.06 0.21 0.25 3/79 17596\n")
    assert load == proc.LoadAvg(0.06, 0.21, 0.25, 3)


def test_cpu_busy_leaves_out_idle_and_iowait():
    text = f"cpu  {HZ} 0 {HZ} {50 * HZ} {7 * HZ} 0 0 0 0 0\ncpu0 1 2 3 4\n"
    assert proc.parse_cpu_busy_s(text) == pytest.approx(2.0)


def test_pressure_totals_with_and_without_a_full_line():
    text = (
        "some avg10=1.00 avg60=0.27 avg300=1.00 total=621199827\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=12\n"
    )
    assert proc.parse_pressure(text) == proc.Pressure(621199827, 12)
    assert proc.parse_pressure(text.splitlines()[0]) == proc.Pressure(621199827, 0)


def test_meminfo_available_and_its_fallback_on_old_kernels():
    text = "MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 600 kB\nCached: 200 kB\n"
    assert proc.parse_meminfo(text) == proc.Memory(1000 * 1024, 600 * 1024)
    old = "MemTotal: 1000 kB\nMemFree: 100 kB\nCached: 200 kB\n"
    assert proc.parse_meminfo(old).available_bytes == 300 * 1024


def test_stat_line_with_a_name_holding_spaces_and_parentheses():
    fields = ["S", "1"] + ["0"] * 9 + [str(HZ), str(HZ), str(HZ), "0"]
    fields += ["0", "0", "3", "0"]  # ... num_threads (field 20) ...
    fields += [str(7 * HZ), "0", "25"] + ["0"] * 20
    text = "42 (cc1 (x) y) " + " ".join(fields)
    stat = proc.parse_stat(text)
    assert stat == ProcStat(
        42,
        1,
        "cc1 (x) y",
        "S",
        3.0,
        7.0,
        25 * PAGE,
        threads=3,
        processor=0,
        children_cpu_s=1.0,
    )


def test_runnable_threads_of_a_real_process_with_busy_threads():
    code = (
        "import threading, time\n"
        "def spin():\n    while True: pass\n"
        "for _ in range(3): threading.Thread(target=spin, daemon=True).start()\n"
        "print('started', flush=True)\n"
        "time.sleep(30)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"started\n"
        # The main thread is asleep by then (busy, it was seen runnable too).
        time.sleep(0.3)
        seen = 0
        deadline = time.monotonic() + 10
        while seen < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = proc.runnable_threads(child.pid) or 0
        # Some of the three spinners are runnable (they share the GIL, so
        # not always all three).
        assert 1 <= seen <= 3
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert proc.runnable_threads(child.pid) is None


def test_the_real_stat_of_this_process():
    processes = proc.read_processes()
    me = processes[os.getpid()]
    assert me.ppid == os.getppid()
    assert me.rss_bytes > 1 << 20
    assert me.state == "R"


# -- the build tree ----------------------------------------------------------------


def p(pid: int, ppid: int, name: str, state: str = "S", rss: int = 1) -> ProcStat:
    return ProcStat(pid, ppid, name, state, 1.0, float(pid), rss)


def test_jobs_are_what_build_tools_start_and_shells_of_sub_makes_are_not():
    processes = {
        1: p(1, 0, "init"),
        10: p(10, 1, "make"),
        11: p(11, 10, "sh"),  # runs a sub-make: not a job
        12: p(12, 11, "make"),
        13: p(13, 12, "sh", rss=2),  # a job: sh -c 'cc ...'
        14: p(14, 13, "cc1", "R", rss=100),
        15: p(15, 10, "cc1", "R", rss=50),  # a job
        16: p(16, 1, "firefox", "R"),  # not the build's
    }
    use = build_use(processes, 10)
    assert sorted(job.pid for job in use.jobs) == [13, 15]
    job13 = next(job for job in use.jobs if job.pid == 13)
    assert (job13.rss_bytes, job13.runnable, set(job13.pids)) == (102, 1, {13, 14})
    assert use.tools == 2
    assert use.runnable == 2
    assert use.cpu_s == 6.0


def test_without_a_build_tool_the_root_s_children_are_the_jobs():
    processes = {5: p(5, 1, "python3"), 6: p(6, 5, "sleep"), 7: p(7, 5, "sh")}
    assert sorted(job.pid for job in build_use(processes, 5).jobs) == [6, 7]
    assert build_use(processes, 99).jobs == ()


def test_the_sampler_sees_a_real_build_burning_cpu():
    # This process plays the build tool; a shell loop is its job.
    me = proc.read_processes()[os.getpid()].name
    with subprocess.Popen(["sh", "-c", "while :; do :; done"]) as child:
        # Killed whatever happens: Popen's exit waits for it.
        try:
            sampler = Sampler(root=os.getpid(), tools=frozenset({me}))
            sampler.sample()
            time.sleep(1.0)
            metrics = sampler.sample()
        finally:
            child.kill()
    assert metrics.build_cpu is not None and metrics.build_cpu > 0.5
    assert any(job.pid == child.pid for job in metrics.jobs)
    # A running job may still grow: only a finished one gives the size.
    assert metrics.job_rss_peak_bytes is None
    assert sampler.sample().job_rss_peak_bytes == max(
        job.rss_bytes for job in metrics.jobs if job.pid == child.pid
    )
    assert metrics.mem_available_bytes > 0
    assert 0 <= metrics.weekday <= 6


#: GNU make 4.3 just after a SIGHUP to its process group: its handler has
#: set SIGHUP back to the default (SigCgt lost bit 0), and a SIGTERM waits.
MAKE_STATUS = """\
Name:\tmake
State:\tS (sleeping)
SigQ:\t2/96365
SigPnd:\t0000000000000000
ShdPnd:\t0000000000004000
SigBlk:\t0000000000000000
SigIgn:\t0000000000000000
SigCgt:\t0000000000014802
"""


def test_signal_masks_of_a_status_file() -> None:
    masks = proc.parse_signal_masks(MAKE_STATUS)
    assert masks.has(masks.pending, signal.SIGTERM)
    assert not masks.has(masks.pending, signal.SIGHUP)
    assert not masks.has(masks.caught, signal.SIGHUP)
    assert masks.has(masks.caught, signal.SIGINT)
    assert masks.has(masks.caught, signal.SIGCHLD)
    assert proc.read_signal_masks(os.getpid()) is not None
    assert proc.read_signal_masks(2**22 + 1) is None


def test_the_sampler_sees_other_bcrun_builds_as_peers_and_nothing_else():
    """A process named bcrun with a child (a build) is a peer; one without
    (bcrun status, bcrun serve) is not."""
    name = "import sys; open('/proc/self/comm', 'w').write('bcrun'); "
    with_build = subprocess.Popen(
        [
            sys.executable,
            "-c",
            name + "import subprocess; subprocess.run(['sleep', '30'])",
        ]
    )
    without = subprocess.Popen(
        [sys.executable, "-c", name + "import time; time.sleep(30)"]
    )
    try:
        sampler = Sampler()
        deadline = time.monotonic() + 10
        peers: set[int] = set()
        while peers != {with_build.pid} and time.monotonic() < deadline:
            time.sleep(0.05)
            peers = {peer.pid for peer in sampler.sample().peers}
        assert peers == {with_build.pid}
    finally:
        for child in (with_build, without):
            child.kill()
            child.wait()
