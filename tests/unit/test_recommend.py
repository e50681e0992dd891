"""The variables that carry a recommended count to the tools that read one."""

from __future__ import annotations

from bcrun.recommend import export_lines


def test_each_variable_a_tool_reads():
    assert export_lines(4, {}, shell=False) == [
        "MAKEFLAGS=-j4",
        "CARGO_BUILD_JOBS=4",
        "CMAKE_BUILD_PARALLEL_LEVEL=4",
        "CTEST_PARALLEL_LEVEL=4",
        "SAMUFLAGS=-j4",
        "DEB_BUILD_OPTIONS=parallel=4",
    ]


def test_what_else_the_variables_hold_is_kept():
    environ = {
        "MAKEFLAGS": "k -j8 --jobserver-auth=3,4 --no-print-directory -- CC=clang",
        "SAMUFLAGS": "-j 2 -k 3",
        "DEB_BUILD_OPTIONS": "nocheck parallel=9 noopt",
    }
    lines = dict(line.split("=", 1) for line in export_lines(2, environ, shell=False))
    # Variables after "--" stay last: MAKEFLAGS takes options before them.
    assert lines["MAKEFLAGS"] == "k --no-print-directory -j2 -- CC=clang"
    assert lines["DEB_BUILD_OPTIONS"] == "nocheck noopt parallel=2"
    assert lines["SAMUFLAGS"] == "-k 3 -j2"


def test_for_a_shell_each_line_exports_a_quoted_value():
    lines = export_lines(3, {"DEB_BUILD_OPTIONS": "nocheck"}, shell=True)
    assert lines[0] == "export MAKEFLAGS=-j3"
    assert lines[-1] == "export DEB_BUILD_OPTIONS='nocheck parallel=3'"
