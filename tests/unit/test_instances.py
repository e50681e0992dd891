"""The private runtime directory: who may own it, what is stale."""

from __future__ import annotations

import fcntl
import json
import os
import pwd

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bcrun.errors import RuntimeDirError
from bcrun.instances import (
    LOCK_NAME,
    InstanceDir,
    candidate_parents,
    ensure_private_dir,
    json_string,
    read_instance,
    remove_stale,
    running_instances,
)
from bcrun.protocol import Token


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    return xdg


def test_creates_a_private_parent(tmp_path):
    path = tmp_path / "p"
    ensure_private_dir(path)
    assert (os.stat(path).st_mode & 0o777) == 0o700


def test_tightens_a_readable_parent_of_ours(tmp_path):
    path = tmp_path / "p"
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    ensure_private_dir(path)
    assert (os.stat(path).st_mode & 0o777) == 0o700


def test_refuses_a_parent_others_can_write(tmp_path):
    path = tmp_path / "p"
    path.mkdir()
    os.chmod(path, 0o777)
    with pytest.raises(RuntimeDirError, match="writable by others"):
        ensure_private_dir(path)


def test_refuses_a_symlinked_parent(tmp_path):
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(RuntimeDirError, match="symbolic link"):
        ensure_private_dir(tmp_path / "link")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a foreign-owned dir")
def test_refuses_a_parent_owned_by_someone_else(tmp_path):
    path = tmp_path / "p"
    path.mkdir(mode=0o700)
    nobody = pwd.getpwnam("nobody")
    os.chown(path, nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(RuntimeDirError, match="owned by uid"):
        ensure_private_dir(path)


def test_xdg_runtime_dir_comes_first(runtime):
    assert candidate_parents()[0] == runtime / "bcrun"


def test_instance_dir_is_published_locked_and_removed(runtime):
    token = Token.new(0)
    with InstanceDir(["make", "-k"], token) as instance:
        assert instance.path.parent == runtime / "bcrun"
        assert instance.path.name == str(os.getpid())
        assert (os.stat(instance.path).st_mode & 0o777) == 0o700
        record = read_instance(instance.path)
        assert record is not None
        assert record.argv == ("make", "-k")
        assert record.control_token == token
        assert [i.pid for i in running_instances()] == [os.getpid()]
    assert not instance.path.exists()
    assert running_instances() == []


def test_stale_directories_are_removed_and_live_ones_kept(runtime):
    parent = runtime / "bcrun"
    ensure_private_dir(parent)
    dead = parent / "999999"
    dead.mkdir()
    (dead / LOCK_NAME).touch()
    live = parent / "888888"
    live.mkdir()
    (live / LOCK_NAME).touch()
    fd = os.open(live / LOCK_NAME, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        remove_stale(parent)
        assert not dead.exists()
        assert live.exists()
    finally:
        os.close(fd)
    remove_stale(parent)
    assert not live.exists()


def test_half_made_directories_are_left_alone_while_young(runtime):
    parent = runtime / "bcrun"
    ensure_private_dir(parent)
    young = parent / ".new-abc"
    young.mkdir()
    old = parent / ".new-def"
    old.mkdir()
    os.utime(old, (0, 0))
    remove_stale(parent)
    assert young.exists()
    assert not old.exists()


@given(st.text())
def test_the_record_writes_json_as_json_does(text):
    """The record is written before the build starts, without json."""
    assert json_string(text) == json.dumps(text)


def test_a_record_of_any_argv_reads_back(runtime):
    argv = ["make", 'a "quoted" \\ word', "tab\tand\nline", "é", "\udcff", "\U0001f600"]
    token = Token.new(0)
    with InstanceDir(argv, token) as instance:
        found = read_instance(instance.path)
    assert found is not None
    assert (found.argv, found.control_token, found.pid) == (
        tuple(argv),
        token,
        os.getpid(),
    )
