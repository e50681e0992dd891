from __future__ import annotations

import pytest

from bcrun.commands import Dump, Help, New, Quit, SetJobs, Status, parse_command
from bcrun.errors import ControlError


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("new", New()),
        ("dump", Dump()),
        ("status", Status()),
        ("help", Help()),
        ("?", Help()),
        ("quit", Quit()),
        ("  quit ", Quit()),
        ("1:5", SetJobs(1, 5)),
        ("12:0", SetJobs(12, 0)),
        ("3: 4", SetJobs(3, 4)),
        ("1:auto", SetJobs(1, "auto")),
        ("1:pause", SetJobs(1, "pause")),
        ("1:resume", SetJobs(1, "resume")),
    ],
)
def test_commands(line, command):
    assert parse_command(line) == command


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("frobnicate", "unknown command"),
        ("x:1", "bad builder number"),
        ("1:-1", "bad job count"),
        ("1:many", "bad job count"),
        ("1:99999999999", "bad job count"),
        (":", "bad builder number"),
    ],
)
def test_bad_commands(line, message):
    with pytest.raises(ControlError, match=message):
        parse_command(line)
