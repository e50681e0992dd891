"""The light reader of ``bcrun [OPTIONS] COMMAND`` reads what click reads,
or leaves the command line to click."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bcrun.cli import run
from bcrun.config import settings_defaults
from bcrun.policies import POLICIES
from bcrun.quickargs import OPTIONS, POLICY_NAMES, SHORT, quick_request
from bcrun.start import RunRequest

#: Words a command line is made of: good and bad options and values.
WORDS = [
    *["-j", "4", "-j4", "-j0", "--jobs", "--jobs=3", "-j", "-1", "-jx", "007"],
    *["-p", "adaptive", "-padaptive", "--policy=memory,adaptive", "--policy"],
    *["fixed, memory", "nope", "adaptive,adaptive", "", "schedule"],
    *["--min-jobs", "2", "--max-jobs=1", "--max-jobs", "9"],
    *["--load", "1.5", "--load=.5", "--load=0.05", "1e3", "2."],
    *["--mem-reserve", "2G", "10%", "lots", "--freeze", "--freeze=1"],
    *["--active-jobs", "0", "--idle-after", "10m", "soon", "90"],
    *["--schedule", "mon-fri 9-17 2", "sat pause", "someday 2"],
    *["--nice", "-5", "19", "20", "+3", "--trace", "/tmp", "trace.jsonl"],
    *["--tick", "0.25", "60", "61", "--via", "jobserver", "protocol", "ssh"],
    *["--explain", "-v", "--verbose", "-vj4", "-h", "--help", "--bogus", "-", "--"],
    *["make", "-k", "all", "jobs", "run", "status"],
]


def click_request(args: list[str], environ: dict[str, str]) -> RunRequest | None:
    """What cli.run is called with, as a RunRequest; None where click, or
    run's own checks, refuse the command line."""
    if args[:1] == ["run"]:
        args = args[1:]  # as BcrunGroup reads it
    try:
        defaults = settings_defaults(run, environ)
        ctx = run.make_context("run", list(args), default_map=defaults)
    except (click.ClickException, click.exceptions.Exit):
        return None
    except Exception as err:  # a bad default: ConfigError
        if type(err).__name__ == "ConfigError":
            return None
        raise
    params = dict(ctx.params)
    policies = tuple(policy.name for policy in params.pop("policies"))
    if params["max_jobs"] is not None and params["max_jobs"] < params["min_jobs"]:
        return None
    if "schedule" in policies and not params["schedule"]:
        return None
    return RunRequest(command=list(params.pop("command")), policies=policies, **params)


def agree(args: list[str], environ: dict[str, str]) -> None:
    quick = quick_request(args, environ)
    if quick is not None:
        assert quick == click_request(args, environ), args


@settings(max_examples=600, deadline=None)
@given(words=st.lists(st.sampled_from(WORDS), max_size=6))
def test_it_reads_what_click_reads_or_leaves_it_to_click(words):
    agree([*words, "make", "-k"], {"XDG_CONFIG_HOME": "/nonexistent"})


@pytest.mark.parametrize(
    "args",
    [
        ["make"],
        ["-j", "4", "make", "-j8"],
        ["--policy", "adaptive,memory", "make"],
        ["--policy=adaptive", "-v", "--tick", "0.2", "--", "status"],
        ["run", "-j2", "ninja", "-C", "out"],
        ["--mem-reserve", "10%", "--freeze", "--trace", "t.jsonl", "make"],
        ["--schedule", "mon-fri 9:00-18:00 2; sat,sun pause", "-p", "schedule", "x"],
        ["--nice", "-20", "--load=2.5", "--via", "protocol", "make"],
    ],
)
def test_the_common_command_lines_are_read_without_click(args):
    environ = {"XDG_CONFIG_HOME": "/nonexistent"}
    quick = quick_request(args, environ)
    assert quick is not None
    assert quick == click_request(args, environ)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["jobs", "4"],
        ["status"],
        ["--help"],
        ["-h"],
        ["--version"],
        ["--help", "make"],
        ["--bogus", "make"],
        ["-j", "-1", "make"],
        ["-j"],
        ["--max-jobs", "1", "--min-jobs", "2", "make"],
        ["--policy", "schedule", "make"],
        ["-vj4", "make"],
        ["--trace", "/tmp", "make"],
    ],
)
def test_anything_else_is_left_to_click(args):
    assert quick_request(args, {"XDG_CONFIG_HOME": "/nonexistent"}) is None


def test_shell_completion_is_left_to_click():
    assert quick_request(["make"], {"_BCRUN_COMPLETE": "bash_complete"}) is None


@pytest.mark.parametrize(
    ("text", "environ"),
    [
        ('policy = "adaptive,memory"\nmem-reserve = "2G"\n', {}),
        ('idle_after = "10m"\nfreeze = true\njobs = 3\n', {"BCRUN_JOBS": "5"}),
        ("", {"BCRUN_POLICY": "presence", "BCRUN_VERBOSE": "yes"}),
        ("", {"BCRUN_FREEZE": "maybe"}),
        ("colour = 1\n", {}),
        ("jobs = [1]\n", {}),
        ("jobs = \n", {}),
        ("explain = true\n", {}),
        ("", {"BCRUN_LOAD": "0"}),
        ("", {"BCRUN_EXPLAIN": "1"}),
    ],
)
def test_defaults_from_the_file_and_the_environment_agree(tmp_path, text, environ):
    (tmp_path / "bcrun").mkdir()
    (tmp_path / "bcrun" / "config.toml").write_text(text)
    environ = {"XDG_CONFIG_HOME": str(tmp_path), **environ}
    for args in (["make"], ["-j", "2", "--policy", "fixed", "make"]):
        agree(args, environ)


def test_it_knows_every_option_of_run_and_every_policy():
    longs = {
        opt.removeprefix("--")
        for param in run.params
        if isinstance(param, click.Option)
        for opt in param.opts
        if opt.startswith("--")
    }
    shorts = {
        opt
        for param in run.params
        if isinstance(param, click.Option)
        for opt in param.opts
        if not opt.startswith("--")
    }
    assert set(OPTIONS) == longs
    assert set(SHORT) == shorts
    assert tuple(POLICIES) == POLICY_NAMES
    names = {param.name for param in run.params}
    assert {parameter for parameter, _ in OPTIONS.values()} | {"command"} == names
    assert set(RunRequest._fields) == names


def test_help_shows_the_options_of_a_build():
    from click.testing import CliRunner

    from bcrun.cli import cli

    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert result.output.startswith("Usage: bcrun [OPTIONS] [--] COMMAND [ARGS]...")
    assert "--policy" in result.output and "--recommend" not in result.output


def test_a_relative_trace_path_stays_relative():
    quick = quick_request(["--trace", "t.jsonl", "make"], {"XDG_CONFIG_HOME": "/x"})
    assert quick is not None and quick.trace == Path("t.jsonl")
