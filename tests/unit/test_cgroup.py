"""The cgroup readers on fake /sys/fs/cgroup trees made of recorded texts."""

from __future__ import annotations

from pathlib import Path

from bcrun import cgroup
from bcrun.cgroup import Cgroup, CgroupMemory, Cgroups

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
