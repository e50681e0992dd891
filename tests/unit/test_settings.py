"""Settings as users write them: sizes, durations, schedules, the
configuration file and BCRUN_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from bcrun.cli import run
from bcrun.config import settings_defaults
from bcrun.errors import ConfigError
from bcrun.policies import POLICIES
from bcrun.schedule import parse_schedule, rule_for
from bcrun.units import Size, format_duration, format_size, parse_duration, parse_size

GIB = 1 << 30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2G", Size(bytes=2 * GIB)),
        ("512m", Size(bytes=512 << 20)),
        ("1.5GiB", Size(bytes=int(1.5 * GIB))),
        ("4096", Size(bytes=4096)),
        ("10%", Size(percent=10.0)),
    ],
)
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "2X", "-1G", "101%", "x%", "2 G B"])
def test_bad_sizes_say_what_a_size_is(text):
    with pytest.raises(ConfigError, match=r"size|percentage"):
        parse_size(text)


def test_size_of_a_total_and_its_short_form():
    assert Size(percent=10).of(20 * GIB) == 2 * GIB
    assert format_size(int(1.1 * GIB)) == "1.1G"
    assert format_size(512 << 20) == "512M"
    assert format_size(12) == "12B"


def test_durations():
    assert [parse_duration(t) for t in ("300", "90s", "5m", "1h", "500ms")] == [
        300,
        90,
        300,
        3600,
        0.5,
    ]
    assert format_duration(200) == "3m20s"
    with pytest.raises(ConfigError, match="duration"):
        parse_duration("soon")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mon-fri 9-18 lots", "not a job count"),
        ("someday 2", "not a day"),
        ("mon 25:00-26:00 2", "not a time range"),
        ("9:70-10 2", "not a time range"),
    ],
)
def test_bad_schedules_name_the_rule(text, message):
    with pytest.raises(ConfigError, match=message) as caught:
        parse_schedule(text)
    assert text.split()[0] in str(caught.value)


def test_schedule_rules_first_match_wins_and_wrapping_day_ranges():
    rules = parse_schedule("fri-mon 1; daily max")
    assert rule_for(rules, 6, 0).jobs == 1  # Sunday
    assert rule_for(rules, 2, 0).jobs is None  # Wednesday: 'daily max'


def config(tmp_path: Path, text: str) -> dict[str, str]:
    (tmp_path / "bcrun").mkdir()
    (tmp_path / "bcrun" / "config.toml").write_text(text)
    return {"XDG_CONFIG_HOME": str(tmp_path)}


def test_the_file_gives_defaults_and_the_environment_overrides_it(tmp_path):
    env = config(
        tmp_path,
        'policy = "adaptive,memory"\nmem-reserve = "2G"\nidle_after = "10m"\n'
        "freeze = true\njobs = 3\n",
    )
    env["BCRUN_JOBS"] = "5"
    env["BCRUN_SCHEDULE"] = "mon-fri 9-17 1"
    defaults = settings_defaults(run, env)
    assert [p.name for p in defaults["policies"]] == ["adaptive", "memory"]
    assert defaults["policies"][0] is POLICIES["adaptive"]
    assert defaults["mem_reserve"] == Size(bytes=2 * GIB)
    assert defaults["idle_after"] == 600
    assert defaults["freeze"] is True
    assert defaults["jobs"] == 5
    assert defaults["schedule"][0].jobs == 1


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("jobs = -3\n", {}, "config.toml: jobs: "),
        ('policy = "fast"\n', {}, "config.toml: policy: .*unknown policy 'fast'"),
        ("colour = 1\n", {}, "unknown setting 'colour'"),
        ("jobs = [1]\n", {}, "not a single value"),
        ("jobs = \n", {}, "config.toml: "),
        (
            "",
            {"BCRUN_MEM_RESERVE": "lots"},
            "BCRUN_MEM_RESERVE: .*'lots' is not a size",
        ),
        ("", {"BCRUN_FREEZE": "maybe"}, "BCRUN_FREEZE: 'maybe' is not true or false"),
        ("", {"BCRUN_LOAD": "0"}, "BCRUN_LOAD: "),
    ],
)
def test_a_bad_value_names_where_it_came_from(tmp_path, text, environ, message):
    env = config(tmp_path, text) | environ
    with pytest.raises(ConfigError, match=message) as caught:
        settings_defaults(run, env)
    assert "\n" not in str(caught.value)


def test_no_file_no_variables_no_defaults(tmp_path):
    assert settings_defaults(run, {"XDG_CONFIG_HOME": str(tmp_path)}) == {}
