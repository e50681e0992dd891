"""The jobserver pool on real pipes and fifos."""

from __future__ import annotations

import fcntl
import os
import struct
import termios

import pytest

from bcrun.jobserver import JobserverPool
from tests.helpers import wait_until


def available(pool: JobserverPool) -> int:
    fd = (
        os.open(pool.path, os.O_RDONLY | os.O_NONBLOCK)
        if pool.style == "fifo"
        else pool.read_fd
    )
    try:
        raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
        return int(struct.unpack("i", raw)[0])
    finally:
        if pool.style == "fifo":
            os.close(fd)


@pytest.mark.parametrize("style", ["fifo", "pipe"])
def test_resize_puts_and_takes_back_tokens(tmp_path, style):
    with JobserverPool(style, tmp_path) as pool:
        pool.resize(5)
        assert (pool.tokens, available(pool)) == (4, 4)
        pool.resize(2)  # the surplus lies in the pool: taken back at once
        wait_until(lambda: available(pool) == 1, timeout=2, what="tokens taken")
        assert pool.tokens == 1
        pool.resize(0)
        wait_until(lambda: pool.tokens == 0, timeout=2, what="pool emptied")
        assert available(pool) == 0
        pool.resize(3)
        assert (pool.tokens, available(pool)) == (2, 2)
        if style == "fifo":
            assert pool.auth == f"fifo:{tmp_path / 'jobserver'}"
        else:
            assert pool.auth == f"{pool.read_fd},{pool.write_fd}"
    assert not (tmp_path / "jobserver").exists()


def test_a_token_held_by_a_client_is_taken_when_returned(tmp_path):
    with JobserverPool("pipe", tmp_path) as pool:
        pool.resize(3)
        token = os.read(pool.read_fd, 1)  # a client takes one
        pool.resize(1)
        wait_until(lambda: pool.tokens == 1, timeout=2, what="the free one")
        os.write(pool.write_fd, token)  # the client gives it back
        wait_until(lambda: pool.tokens == 0, timeout=2, what="the returned one")
        assert available(pool) == 0
