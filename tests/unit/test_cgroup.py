"""The cgroup readers on fake /sys/fs/cgroup trees made of recorded texts."""

from __future__ import annotations

from pathlib import Path

import pytest

from bcrun import cgroup
from bcrun.cgroup import Cgroup, CgroupMemory, Cgroups, CpuLimit, CpuStat
from bcrun.proc import Pressure

GIB = 1 << 30
MIB = 1 << 20


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def mountinfo_v2(fs: Path, root: str = "/") -> str:
    """A systemd machine's /proc/self/mountinfo, cgroup v2 only, with the
    cgroup filesystem at *fs*."""
    return (
        "22 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"
        "23 28 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw\n"
        f"26 23 0:24 {root} {fs} rw,nosuid,nodev,noexec,relatime shared:4 - "
        "cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
        "28 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro\n"
    )


def mountinfo_v1(fs: Path, root: str = "/") -> str:
    """Ubuntu 18.04's hybrid layout: v1 controllers, cpu and cpuacct
    mounted together, an empty v2 hierarchy beside them."""
    return (
        f"25 23 0:22 / {fs} ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755\n"
        f"26 25 0:23 {root} {fs}/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw\n"
        f"27 25 0:24 {root} {fs}/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd\n"
        f"30 25 0:27 {root} {fs}/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct\n"
        f"31 25 0:28 {root} {fs}/cpuset rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpuset\n"
        f"32 25 0:29 {root} {fs}/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory\n"
        f"33 25 0:30 {root} {fs}/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,pids\n"
    )


#: A process in a CI job's scope, on a v1 machine.
CGROUP_V1 = """\
12:pids:/ci.slice/job.scope
11:memory:/ci.slice/job.scope
5:cpuset:/
4:cpu,cpuacct:/ci.slice/job.scope
1:name=systemd:/ci.slice/job.scope
0::/ci.slice/job.scope
"""

#: A container of a Kubernetes pod, on a v2 machine.
POD = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8e2f.slice"
CONTAINER = f"{POD}/cri-containerd-4b1c.scope"


def v2(fs: Path, path: str = CONTAINER) -> Cgroups:
    return cgroup.find_cgroups(f"0::/{path}\n", mountinfo_v2(fs))


def v1(fs: Path) -> Cgroups:
    return cgroup.find_cgroups(CGROUP_V1, mountinfo_v1(fs))


# -- finding the cgroups ----------------------------------------------------------


def test_v2_has_one_cgroup_for_every_controller(tmp_path):
    found = v2(tmp_path)
    unified = Cgroup(2, tmp_path / CONTAINER, tmp_path)
    assert found == Cgroups(
        cpu=unified, cpuacct=unified, cpuset=unified, memory=unified
    )
    assert unified.levels()[:2] == [tmp_path / CONTAINER, tmp_path / POD]
    assert unified.levels()[-1] == tmp_path
    assert len(unified.levels()) == 5


def test_v1_finds_each_controller_s_own_hierarchy_not_the_empty_v2_one(tmp_path):
    found = v1(tmp_path)
    cpu = Cgroup(
        1, tmp_path / "cpu,cpuacct/ci.slice/job.scope", tmp_path / "cpu,cpuacct"
    )
    assert found.cpu == found.cpuacct == cpu
    assert found.cpuset == Cgroup(1, tmp_path / "cpuset", tmp_path / "cpuset")
    assert found.memory == Cgroup(
        1, tmp_path / "memory/ci.slice/job.scope", tmp_path / "memory"
    )


def test_a_controller_mounted_nowhere_is_none(tmp_path):
    mountinfo = "".join(
        line for line in mountinfo_v1(tmp_path).splitlines(True) if "cpuset" not in line
    )
    found = cgroup.find_cgroups(CGROUP_V1, mountinfo)
    # Not v1: it falls back to the v2 hierarchy, which has no cpuset files.
    assert found.cpuset == Cgroup(
        2, tmp_path / "unified/ci.slice/job.scope", tmp_path / "unified"
    )
    assert cgroup.find_cgroups("", mountinfo_v1(tmp_path)) == Cgroups()
    assert cgroup.find_cgroups(CGROUP_V1, "") == Cgroups()


def test_in_a_cgroup_namespace_the_mount_shows_the_namespace_s_root(tmp_path):
    # docker run --cgroupns=private: the container's cgroup is "/" to it.
    found = cgroup.find_cgroups("0::/\n", mountinfo_v2(tmp_path))
    assert found.cpu == Cgroup(2, tmp_path, tmp_path)
    assert found.cpu.levels() == [tmp_path]
    # A process moved out of the namespace's root sees a path up from it.
    assert (
        cgroup.find_cgroups("0::/../../system.slice\n", mountinfo_v2(tmp_path))
        == Cgroups()
    )


def test_a_mounted_sub_root_shows_only_the_cgroups_below_it(tmp_path):
    # docker run --cgroupns=host on v1: the container's cgroup is bound at
    # the place of the hierarchy's root.
    mountinfo = mountinfo_v1(tmp_path, root="/docker/abc")
    text = "4:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc/x\n5:cpuset:/other\n"
    found = cgroup.find_cgroups(text, mountinfo)
    assert found.cpu == Cgroup(1, tmp_path / "cpu,cpuacct", tmp_path / "cpu,cpuacct")
    assert found.memory == Cgroup(1, tmp_path / "memory/x", tmp_path / "memory")
    assert found.cpuset is None


def test_the_first_mount_that_shows_the_cgroup_is_used(tmp_path):
    mountinfo = (
        f"40 25 0:26 /docker/abc {tmp_path}/a rw - cgroup2 cgroup2 rw\n"
        f"41 25 0:26 / {tmp_path}/b\\040c rw - cgroup2 cgroup2 rw\n"
    )
    found = cgroup.find_cgroups("0::/system.slice\n", mountinfo)
    assert found.memory == Cgroup(2, tmp_path / "b c/system.slice", tmp_path / "b c")


def test_own_cgroups_reads_this_process_s():
    found = cgroup.own_cgroups()
    for each in (found.cpu, found.cpuacct, found.cpuset, found.memory):
        assert each is None or each.path.is_relative_to(each.mount)


# -- CPU limits -------------------------------------------------------------------


def test_a_quota_on_the_pod_binds_its_container(tmp_path):
    write(tmp_path / CONTAINER / "cpu.max", "max 100000\n")
    write(tmp_path / POD / "cpu.max", "150000 100000\n")
    write(tmp_path / POD / ".." / "cpu.max", "400000 100000\n")
    write(tmp_path / "cpuset.cpus.effective", "0-7\n")
    limit = cgroup.read_cpu_limit(v2(tmp_path), affinity=8)
    assert limit == CpuLimit(
        1.5, f"cpu.max of {tmp_path / POD}: 1.5 CPUs", tmp_path / POD
    )


def test_the_leaf_s_quota_when_it_is_the_tighter(tmp_path):
    write(tmp_path / CONTAINER / "cpu.max", "50000 100000\n")
    write(tmp_path / POD / "cpu.max", "150000 100000\n")
    limit = cgroup.read_cpu_limit(v2(tmp_path), affinity=8)
    assert limit.source == f"cpu.max of {tmp_path / CONTAINER}: 0.5 CPUs"
    assert limit.quota_dir == tmp_path / CONTAINER


def test_v1_cfs_quota_minus_one_is_no_limit(tmp_path):
    cpu = tmp_path / "cpu,cpuacct"
    write(cpu / "ci.slice/job.scope/cpu.cfs_quota_us", "-1\n")
    write(cpu / "ci.slice/job.scope/cpu.cfs_period_us", "100000\n")
    write(cpu / "ci.slice/cpu.cfs_quota_us", "50000\n")
    write(cpu / "ci.slice/cpu.cfs_period_us", "50000\n")
    write(cpu / "cpu.cfs_quota_us", "-1\n")
    write(cpu / "cpu.cfs_period_us", "100000\n")
    limit = cgroup.read_cpu_limit(v1(tmp_path), affinity=4)
    assert limit == CpuLimit(
        1.0, f"cfs quota of {cpu / 'ci.slice'}: 1 CPU", cpu / "ci.slice"
    )


def test_no_quota_anywhere_leaves_the_affinity(tmp_path):
    write(tmp_path / CONTAINER / "cpu.max", "max 100000\n")
    write(tmp_path / POD / "cpu.max", "max 100000\n")
    write(tmp_path / "cpuset.cpus.effective", "0-3\n")
    assert cgroup.read_cpu_limit(v2(tmp_path), affinity=4) == CpuLimit(
        4.0, "affinity: 4 CPUs"
    )
    assert cgroup.read_cpu_limit(Cgroups(), affinity=1) == CpuLimit(
        1.0, "affinity: 1 CPU"
    )


def test_affinity_tighter_than_the_quota_wins(tmp_path):
    # taskset -c 0,1 in a 3-CPU container.
    write(tmp_path / CONTAINER / "cpu.max", "300000 100000\n")
    found = v2(tmp_path)
    limit = cgroup.read_cpu_limit(found, affinity=2)
    assert limit == CpuLimit(2.0, "affinity: 2 CPUs")
    assert cgroup.read_cpu_stat(found, limit) is None


def test_cpu_lists():
    assert cgroup.parse_cpu_list("0-3,8,10-11\n") == {0, 1, 2, 3, 8, 10, 11}
    assert cgroup.parse_cpu_list("5\n") == {5}
    assert cgroup.parse_cpu_list("\n") == set()
    with pytest.raises(ValueError):
        cgroup.parse_cpu_list("0-3,x\n")


def test_a_cpuset_tighter_than_affinity(tmp_path):
    # The affinity bcrun was given (os.cpu_count() where the mask cannot be
    # read) may name more CPUs than the cpuset allows.
    write(tmp_path / CONTAINER / "cpuset.cpus.effective", "2-3,6\n")
    write(tmp_path / POD / "cpuset.cpus.effective", "0-7\n")
    write(tmp_path / CONTAINER / "cpu.max", "400000 100000\n")
    limit = cgroup.read_cpu_limit(v2(tmp_path), affinity=8)
    assert limit == CpuLimit(3.0, f"cpuset of {tmp_path / CONTAINER}: 3 CPUs")


def test_v1_cpuset_effective_cpus_else_cpus(tmp_path):
    cpuset = tmp_path / "cpuset"
    write(cpuset / "cpuset.cpus", "0-15\n")
    found = v1(tmp_path)
    assert cgroup.read_cpu_limit(found, affinity=16).source == "affinity: 16 CPUs"
    assert (
        cgroup.read_cpu_limit(found, affinity=32).source
        == f"cpuset of {cpuset}: 16 CPUs"
    )
    write(cpuset / "cpuset.effective_cpus", "0-3\n")
    assert (
        cgroup.read_cpu_limit(found, affinity=32).source
        == f"cpuset of {cpuset}: 4 CPUs"
    )


def test_on_a_tie_the_quota_is_named_before_the_cpuset_and_the_affinity_first(tmp_path):
    write(tmp_path / CONTAINER / "cpu.max", "200000 100000\n")
    write(tmp_path / CONTAINER / "cpuset.cpus.effective", "0-1\n")
    found = v2(tmp_path)
    assert cgroup.read_cpu_limit(found, affinity=4).quota_dir == tmp_path / CONTAINER
    assert cgroup.read_cpu_limit(found, affinity=2).source == "affinity: 2 CPUs"


@pytest.mark.parametrize(
    "text",
    ["", "max\n", "garbage\n", "100000\n", "0 100000\n", "150000 0\n", "-1 100000\n"],
)
def test_cpu_max_without_a_usable_quota_is_no_limit(tmp_path, text):
    write(tmp_path / CONTAINER / "cpu.max", text)
    assert cgroup.read_cpu_limit(v2(tmp_path), affinity=8).source == "affinity: 8 CPUs"


def test_unreadable_and_missing_files_are_no_limit(tmp_path):
    # A directory where a file should be: reading it fails, even as root.
    (tmp_path / CONTAINER / "cpu.max").mkdir(parents=True)
    (tmp_path / CONTAINER / "cpuset.cpus.effective").mkdir()
    write(tmp_path / POD / "cpu.max", "150000 garbage\n")
    write(tmp_path / POD / "cpuset.cpus.effective", "0-x\n")
    cpu = tmp_path / "cpu,cpuacct/ci.slice"
    write(cpu / "cpu.cfs_quota_us", "50000\n")  # and no period
    assert cgroup.read_cpu_limit(v2(tmp_path), affinity=8) == CpuLimit(
        8.0, "affinity: 8 CPUs"
    )
    assert cgroup.read_cpu_limit(v1(tmp_path), affinity=8) == CpuLimit(
        8.0, "affinity: 8 CPUs"
    )


# -- CPU accounting -------------------------------------------------------------


CPU_STAT_V2 = """\
usage_usec 8273491
user_usec 6022310
system_usec 2251181
core_sched.force_idle_usec 0
nr_periods 4210
nr_throttled 377
throttled_usec 20512866
nr_bursts 0
burst_usec 0
"""

CPU_STAT_V1 = """\
nr_periods 4210
nr_throttled 377
throttled_time 20512866123
nr_bursts 0
burst_time 0
"""


def test_cpu_stat_of_v2():
    assert cgroup.parse_cpu_stat(CPU_STAT_V2) == CpuStat(8.273491, 4210, 377, 20.512866)


def test_cpu_stat_of_v1_has_no_usage():
    assert cgroup.parse_cpu_stat(CPU_STAT_V1) == CpuStat(None, 4210, 377, 20.512866123)


def test_v2_cpu_stat_and_pressure_of_the_level_whose_quota_binds(tmp_path):
    write(tmp_path / POD / "cpu.max", "150000 100000\n")
    write(tmp_path / POD / "cpu.stat", CPU_STAT_V2)
    write(
        tmp_path / POD / "cpu.pressure",
        "some avg10=1.00 avg60=0.27 avg300=1.00 total=621199827\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=12\n",
    )
    write(
        tmp_path / CONTAINER / "cpu.stat",
        "usage_usec 1\nnr_periods 1\nnr_throttled 1\nthrottled_usec 1\n",
    )
    write(
        tmp_path / CONTAINER / "cpu.pressure",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n",
    )
    found = v2(tmp_path)
    limit = cgroup.read_cpu_limit(found, affinity=8)
    assert cgroup.read_cpu_stat(found, limit) == CpuStat(8.273491, 4210, 377, 20.512866)
    assert cgroup.read_cpu_pressure(found, limit) == Pressure(621199827, 12)


def test_v2_without_psi_or_stat_is_none(tmp_path):
    write(tmp_path / POD / "cpu.max", "150000 100000\n")
    write(tmp_path / POD / "cpu.stat", "nr_periods many\n")
    found = v2(tmp_path)
    limit = cgroup.read_cpu_limit(found, affinity=8)
    assert limit.quota_dir == tmp_path / POD
    assert cgroup.read_cpu_stat(found, limit) is None
    assert cgroup.read_cpu_pressure(found, limit) is None


def test_v1_cpu_stat_takes_usage_from_cpuacct_mounted_with_cpu(tmp_path):
    level = tmp_path / "cpu,cpuacct/ci.slice"
    write(level / "cpu.cfs_quota_us", "100000\n")
    write(level / "cpu.cfs_period_us", "100000\n")
    write(level / "cpu.stat", CPU_STAT_V1)
    write(level / "cpuacct.usage", "8273491000\n")
    write(level / "job.scope/cpuacct.usage", "1\n")
    found = v1(tmp_path)
    limit = cgroup.read_cpu_limit(found, affinity=8)
    assert cgroup.read_cpu_stat(found, limit) == CpuStat(
        8.273491, 4210, 377, 20.512866123
    )
    assert cgroup.read_cpu_pressure(found, limit) is None


def test_v1_cpu_stat_takes_usage_from_cpuacct_mounted_apart(tmp_path):
    # This machine's layout: each controller in a hierarchy of its own.
    mountinfo = (
        f"32 31 0:29 / {tmp_path}/cpu rw,relatime - cgroup cgroup rw,cpu\n"
        f"33 31 0:30 / {tmp_path}/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    )
    write(tmp_path / "cpu/build/cpu.cfs_quota_us", "100000\n")
    write(tmp_path / "cpu/build/cpu.cfs_period_us", "100000\n")
    write(tmp_path / "cpu/build/cpu.stat", CPU_STAT_V1)
    write(tmp_path / "cpuacct/build/cpuacct.usage", "2500000000\n")
    write(tmp_path / "cpuacct/cpuacct.usage", "9500000000\n")
    found = cgroup.find_cgroups("2:cpuacct:/build/x\n1:cpu:/build/x\n", mountinfo)
    limit = cgroup.read_cpu_limit(found, affinity=2)
    assert limit.source == f"cfs quota of {tmp_path}/cpu/build: 1 CPU"
    assert cgroup.read_cpu_stat(found, limit) == CpuStat(2.5, 4210, 377, 20.512866123)
    # In another cpuacct cgroup: no usage of the quota's level to read.
    moved = cgroup.find_cgroups("2:cpuacct:/\n1:cpu:/build/x\n", mountinfo)
    assert cgroup.read_cpu_stat(moved, limit) == CpuStat(None, 4210, 377, 20.512866123)


# -- memory limits -----------------------------------------------------------------


def test_cgroup_v2_limit_counts_inactive_files_as_free_and_parents_bind(tmp_path):
    slice_ = tmp_path / "user.slice"
    write(slice_ / "memory.max", f"{4 * GIB}\n")
    write(slice_ / "memory.high", "max\n")
    write(slice_ / "memory.current", f"{3 * GIB}\n")
    write(slice_ / "memory.stat", f"anon 1\ninactive_file {GIB}\n")
    write(slice_ / "build/memory.max", "max\n")
    write(slice_ / "build/memory.current", "100\n")
    found = v2(tmp_path, "user.slice/build")
    assert cgroup.read_cgroup_memory(found) == CgroupMemory(
        4 * GIB, 2 * GIB, f"memory.max of {slice_}: 4.0G"
    )


def test_memory_high_tighter_than_memory_max(tmp_path):
    ci = tmp_path / "ci.slice"
    write(ci / "memory.max", f"{2 * GIB}\n")
    write(ci / "memory.high", f"{GIB}\n")
    write(ci / "memory.current", f"{512 * MIB}\n")
    found = v2(tmp_path, "ci.slice/job.scope")
    assert cgroup.read_cgroup_memory(found) == CgroupMemory(
        GIB, 512 * MIB, f"memory.high of {ci}: 1.0G"
    )


def test_the_smallest_limit_and_the_least_left_may_be_at_two_levels(tmp_path):
    # The pod's 8G is nearly used up by other containers; ours may take 4G.
    write(tmp_path / POD / "memory.max", f"{8 * GIB}\n")
    write(tmp_path / POD / "memory.current", f"{7 * GIB}\n")
    write(tmp_path / CONTAINER / "memory.max", f"{4 * GIB}\n")
    write(tmp_path / CONTAINER / "memory.current", f"{GIB}\n")
    memory = cgroup.read_cgroup_memory(v2(tmp_path))
    assert memory == CgroupMemory(
        4 * GIB, GIB, f"memory.max of {tmp_path / CONTAINER}: 4.0G"
    )


def test_cgroup_v1_memory_controller_and_its_no_limit_value(tmp_path):
    job = tmp_path / "memory/ci.slice/job.scope"
    write(job / "memory.limit_in_bytes", f"{GIB}\n")
    write(job / "memory.soft_limit_in_bytes", f"{MIB}\n")
    write(job / "memory.usage_in_bytes", f"{900 * MIB}\n")
    write(job / "memory.stat", f"cache 1\ntotal_inactive_file {100 * MIB}\n")
    write(job.parent / "memory.limit_in_bytes", "9223372036854771712\n")
    write(job.parent / "memory.usage_in_bytes", "1\n")
    assert cgroup.read_cgroup_memory(v1(tmp_path)) == CgroupMemory(
        GIB, 224 * MIB, f"memory.limit_in_bytes of {job}: 1.0G"
    )


def test_no_cgroup_memory_limit_is_none(tmp_path):
    assert cgroup.read_cgroup_memory(Cgroups()) is None
    write(tmp_path / "memory.stat", "anon 1\n")
    assert cgroup.read_cgroup_memory(v2(tmp_path, "")) is None


def test_unreadable_memory_files_are_no_limit(tmp_path):
    write(tmp_path / POD / "memory.max", "garbage\n")
    write(tmp_path / POD / "memory.current", f"{GIB}\n")
    (tmp_path / CONTAINER / "memory.max").mkdir(parents=True)
    write(tmp_path / CONTAINER / "memory.current", f"{GIB}\n")
    assert cgroup.read_cgroup_memory(v2(tmp_path)) is None
    # A limit with a garbled memory.stat still binds: no cache counted free.
    ci = tmp_path / "ci.slice"
    write(ci / "memory.max", f"{2 * GIB}\n")
    write(ci / "memory.current", f"{GIB}\n")
    write(ci / "memory.stat", "inactive_file lots\n")
    assert cgroup.read_cgroup_memory(v2(tmp_path, "ci.slice")) == CgroupMemory(
        2 * GIB, GIB, f"memory.max of {ci}: 2.0G"
    )
