"""Each patched tool passes its own test suite with BUILDSOCKET unset.

A patch must change nothing for a user who does not use bcrun: the tool's
own tests run in the patched build tree, with the control variables removed
from the environment, and must pass as they do unpatched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.tools.buildtools import build_dir
from tests.tools.conftest import get_tool


def plain_env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("BUILDSOCKET", "BUILDTOKEN")
    }
    env.pop("MAKEFLAGS", None)
    env.pop("MFLAGS", None)
    return env


def run(
    argv: list[str], cwd: Path, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=plain_env(), capture_output=True, text=True, timeout=timeout
    )


def test_ninja_own_tests():
    gtest = Path("/usr/src/googletest")
    if not gtest.is_dir():
        pytest.skip("googletest sources missing (tests/setup installs googletest)")
    get_tool("ninja", patched=True)
    tree = build_dir("ninja", patched=True)
    configure = run(["python3", "configure.py", f"--gtest-source-dir={gtest}"], tree)
    assert configure.returncode == 0, configure.stderr
    builder = shutil.which("ninja") or str(tree / "ninja")
    build = run([builder, "ninja_test"], tree)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    result = run([str(tree / "ninja_test")], tree)
    assert result.returncode == 0, result.stdout[-3000:]
    passed = re.search(r"\[  PASSED  \] (\d+) tests", result.stdout)
    assert passed and "FAILED" not in result.stdout, result.stdout[-2000:]
    assert int(passed.group(1)) >= 403  # upstream's own, and the patch's
    # The patch's own unit tests ran too.
    assert (
        "BuildControl"
        in run([str(tree / "ninja_test"), "--gtest_list_tests"], tree).stdout
    )


def test_bmake_unit_tests():
    get_tool("bmake", patched=True)
    tree = build_dir("bmake", patched=True)
    mk = tree / "mk"
    env_args = ["env", f"MAKESYSPATH={mk}"]
    result = run(
        [*env_args, str(tree / "bmake"), "-m", str(mk), "-f", "Makefile", "test"], tree
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "All tests passed" in result.stdout + result.stderr


def make_check_results(tree: Path) -> tuple[int, int]:
    """Tests passed and failed by GNU make's ``make check``."""
    result = run(["make", "check"], tree, timeout=1200)
    output = result.stdout + result.stderr
    passed = sum(int(n) for n in re.findall(r"ok\s+\((\d+) passed\)", output))
    failed = 0
    for good, total in re.findall(r"FAILED \((\d+)/(\d+) passed\)", output):
        passed += int(good)
        failed += int(total) - int(good)
    assert passed > 500, output[-2000:]  # the suite really ran
    return passed, failed


def test_gmake_check_fails_nothing_that_stock_passes():
    get_tool("gmake", patched=True)
    get_tool("gmake", patched=False)
    patched = make_check_results(build_dir("gmake", patched=True))
    stock = make_check_results(build_dir("gmake", patched=False))
    # A few tests fail for everyone when the suite runs as root.
    assert patched == stock, f"patched (passed, failed) {patched}, stock {stock}"
