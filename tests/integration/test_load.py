"""bcrun under load: many build clients, and a flood of hostile connections.

Real bcrun, real unix sockets; the connections come from one process each
(tests/loadclients.py), not one process per connection.
"""

from __future__ import annotations

import pytest

from tests.loadclients import Skip, fanout, flood

#: What one connection may cost bcrun, from bcrun(1) PROTOCOL, Limits: at
#: most 256 connections wait for their token (the oldest is cut when one more
#: arrives), each for at most 5 s, and no peer gets more than 64 KiB buffered.
PENDING_MAX = 256
BUFFER_MAX = 64 * 1024
#: bcrun listens with a backlog of 1024 (bcrun.server.Limits.backlog), and
#: asyncio accepts up to a backlog's worth in one wakeup before bcrun can
#: cut the oldest: that many more descriptors may be open for an instant.
BACKLOG = 1024
#: Descriptors bcrun may hold beyond its baseline during the flood: the
#: waiting ones, one accept burst, its own client and a control connection,
#: and a few of slack.  Without the 256 cap, 10,000 connections in 4 s held
#: 5 s each would be all 10,000.
FD_EXTRA_MAX = PENDING_MAX + BACKLOG + 16
#: Memory beyond its baseline: every such connection with a full buffer.
RSS_EXTRA_MAX_KIB = (PENDING_MAX + BACKLOG) * BUFFER_MAX // 1024


def run_or_skip(function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except Skip as why:
        pytest.skip(str(why))


def test_a_change_reaches_1000_clients_within_200ms(bcrun):
    result = run_or_skip(fanout, bcrun, 1000, [5, 2, 7, 1, 6, 9])
    assert [count for count, _, _ in result.changes] == [5, 2, 7, 1, 6, 9]
    for count, _first, last in result.changes:
        assert last < 0.2, f"count {count} reached the last client after {last:.3f} s"


def test_1000_clients_connecting_at_once_are_all_served(bcrun):
    run_or_skip(fanout, bcrun, 1000, [5], window=0)


def test_a_flood_of_hostile_connections_costs_little_and_delays_nothing(bcrun):
    result = run_or_skip(flood, bcrun, 10_000, 4.0)
    hostile = result.hostile
    assert hostile["tried"] == 10_000, hostile
    assert hostile["connect_errors"] == 0, hostile
    assert not result.control_errors, result.control_errors
    assert len(result.delays) >= 5, result.delays
    # Typically about 1 ms each; the bound on the worst leaves room for one
    # stall of a busy CI machine, the median's for none of the flood's cost.
    delays = sorted(delay for _, delay in result.delays)
    assert delays[len(delays) // 2] < 0.02, f"the build's client waited: {delays}"
    assert delays[-1] < 0.25, f"the build's client waited: {delays}"
    assert result.peak_fds <= result.base_fds + FD_EXTRA_MAX, (
        f"{result.peak_fds} descriptors, {result.base_fds} at the start"
    )
    assert result.peak_rss_kib <= result.base_rss_kib + RSS_EXTRA_MAX_KIB, (
        f"{result.peak_rss_kib} KiB RSS, {result.base_rss_kib} KiB at the start"
    )
    # Nothing per connection at the default verbosity (with --via protocol
    # there is no start notice either).
    assert result.stderr == "", result.stderr
