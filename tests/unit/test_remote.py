"""Remote capacity from the engines' own texts: distcc's host lists,
icecream's monitor answer, sccache's --dist-status."""

from __future__ import annotations

from pathlib import Path

import pytest

from bcrun.remote import (
    DistccHost,
    engine_of,
    icecream_scheduler,
    parse_distcc_hosts,
    parse_icecream_listcs,
    parse_sccache_dist_status,
)


def test_distcc_host_specs_with_their_slots_ports_and_options():
    text = """
    # the build farm
    --randomize --localslots=3
    localhost/2 farm1 farm2/8 10.0.0.3:3700/6,lzo
    old/5:3701 user@ssh1/3 [fe80::1]:3632/2,cpp,lzo +zeroconf
    """
    assert parse_distcc_hosts(text) == [
        DistccHost("farm1", 3632, 4),
        DistccHost("farm2", 3632, 8),
        DistccHost("10.0.0.3", 3700, 6),
        DistccHost("old", 3701, 5),
        DistccHost("ssh1", 0, 3, ssh=True),
        DistccHost("fe80::1", 3632, 2),
    ]


def test_distcc_host_list_of_only_the_local_machine_has_no_remote_slots():
    assert parse_distcc_hosts("localhost/4 --localslots=8") == []
    assert parse_distcc_hosts("") == []


def test_icecream_monitor_lists_compile_servers_and_their_job_limits():
    # As icecream 1.4's scheduler answers on its monitor port.
    text = (
        "200-ICECC 1.4.0: 96s uptime, 3 hosts, 0 jobs in queue (12 total).\n"
        "200 Use 'help' for help and 'quit' to quit.\n"
        " build1 (10.0.0.1:10245) [x86_64] speed=120.50 jobs=2/8 load=300\n"
        " build2 (10.0.0.2:10245) [x86_64] speed=200.00 jobs=0/16 load=10\n"
        " noslots (10.0.0.3:10245) [x86_64] speed=1.00 jobs=0/0 load=1000\n"
        "200 done\n"
    )
    assert parse_icecream_listcs(text) == (3, 24)


def test_icecream_scheduler_from_the_environment_else_the_daemon_s_config(
    tmp_path: Path,
) -> None:
    debian = tmp_path / "icecc.conf"
    debian.write_text(
        '# ICECC_SCHEDULER_HOST=""\n'
        'ICECC_SCHEDULER_HOST=""\n'
        'ICECC_SCHEDULER_HOST="sched.example:8765"  # the farm\n'
    )
    suse = tmp_path / "icecream"
    suse.write_text('export ICECREAM_SCHEDULER_HOST="suse-sched" ; OTHER=1\n')
    unset = tmp_path / "unset.conf"
    unset.write_text('ICECC_SCHEDULER_HOST=""\n')
    missing = tmp_path / "missing"
    configs = [
        (str(missing), "ICECC_SCHEDULER_HOST"),
        (str(unset), "ICECC_SCHEDULER_HOST"),
        (str(debian), "ICECC_SCHEDULER_HOST"),
        (str(suse), "ICECREAM_SCHEDULER_HOST"),
    ]
    assert icecream_scheduler({}, configs) == ("sched.example:8765", str(debian))
    assert icecream_scheduler({}, configs[3:]) == ("suse-sched", str(suse))
    assert icecream_scheduler({"ICECC_SCHEDULER": "a:1"}, configs) == (
        "a:1",
        "ICECC_SCHEDULER",
    )
    assert icecream_scheduler({"USE_SCHEDULER": "b"}, []) == ("b", "USE_SCHEDULER")
    # Unset, or no file: the daemons find it by broadcast, bcrun does not.
    assert icecream_scheduler({}, configs[:2]) is None


def test_sccache_dist_status_reports_the_scheduler_s_cpus():
    text = '{"SchedulerStatus":["http://sched:10600/",{"num_servers":3,"num_cpus":48,"in_progress":5}]}'
    assert parse_sccache_dist_status(text) == (3, 48)
    assert parse_sccache_dist_status('"Disabled"') is None
    with pytest.raises(ValueError):
        parse_sccache_dist_status("sccache: error: couldn't connect")


@pytest.mark.parametrize(
    ("argv", "env", "engine"),
    [
        (["make", "CC=distcc gcc"], {}, "distcc"),
        (["make"], {"CC": "distcc cc"}, "distcc"),
        (["make"], {"PATH": "/usr/lib/distcc:/usr/bin"}, "distcc"),
        (["make", "CC=icecc gcc"], {}, "icecc"),
        (["cargo", "build"], {"RUSTC_WRAPPER": "sccache"}, "sccache"),
        (["make", "-j8"], {"PATH": "/usr/bin:/usr/lib/distcc"}, None),
        (["make"], {"CC": "gcc"}, None),
    ],
)
def test_the_engine_a_build_uses_from_its_words_and_environment(argv, env, engine):
    assert engine_of(argv, env) == engine
