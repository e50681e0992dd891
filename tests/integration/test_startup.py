"""bcrun starts the build before it imports what serving it takes: its
start-up is Python's, not that of asyncio, click, psutil or its policies."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import Bcrun

#: Modules whose import is most of bcrun's old start-up; none may be
#: loaded when the build is started.
HEAVY = {
    "asyncio",
    "click",
    "psutil",
    "dataclasses",
    "json",
    "socket",
    "subprocess",
    "tomllib",
    "bcrun.cli",
    "bcrun.metrics",
    "bcrun.policies",
    "bcrun.server",
    "bcrun.wrapper",
    "bcrun.settings",
    "bcrun.governor",
}

#: Runs bcrun's entry point, writing the modules loaded as the build is
#: started to argv[1].
SPY = """
import sys
import bcrun.launcher as launcher
spawn = launcher.spawn
def spy(*args, **kwargs):
    with open(sys.argv[1], "w") as out:
        out.write("\\n".join(sorted(sys.modules)))
    return spawn(*args, **kwargs)
launcher.spawn = spy
from bcrun.main import main
main(sys.argv[2:])
"""

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    where = tmp_path / "p"
    where.mkdir()
    (where / "Makefile").write_text("all:\n\t@date +%s.%N\n")
    return where


@pytest.mark.parametrize("policy", ["fixed", "adaptive,memory"])
@pytest.mark.parametrize("via", ["jobserver", "protocol"])
def test_nothing_heavy_is_loaded_when_the_build_starts(
    bcrun: Bcrun, project: Path, policy: str, via: str
) -> None:
    loaded = project / "loaded"
    argv = [sys.executable, "-c", SPY, str(loaded), "--policy", policy]
    argv += ["--via", via, "make", "-s", "-C", str(project)]
    # Twice: the first run learns what make is (bcrun.detect.ProgramFacts).
    for _ in range(2):
        result = subprocess.run(
            argv, env=bcrun.env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
    modules = set(loaded.read_text().split())
    assert "bcrun.start" in modules
    assert not modules & HEAVY, sorted(modules & HEAVY)


def first_instruction_s(argv: list[str], env: dict[str, str]) -> float:
    started = time.time()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    return float(out.stdout.split()[0]) - started


def test_the_build_starts_soon_after_python_does(bcrun: Bcrun, project: Path) -> None:
    """A generous bound (the work is some 15 ms; before, 100 ms of imports
    came first): a loaded CI machine must not fail it."""
    env = dict(bcrun.env, PYTHONPYCACHEPREFIX=str(project / "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    python = [sys.executable, "-c", "import time; print(repr(time.time()))"]
    build = bcrun.argv("make", "-s", "-C", str(project))
    for argv in (python, build, build):  # bytecode compiled, make's facts known
        first_instruction_s(argv, env)
    excess = [
        first_instruction_s(build, env) - first_instruction_s(python, env)
        for _ in range(7)
    ]
    assert statistics.median(excess) < 0.060, excess


def test_a_build_shorter_than_bcruns_start_does_not_wait_for_it(
    bcrun: Bcrun, project: Path
) -> None:
    """bcrun ends with the build, without importing its event loop first
    (a no-op make): some tens of milliseconds less than serving it would
    take, and a generous bound here too."""
    env = dict(bcrun.env, PYTHONPYCACHEPREFIX=str(project / "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)

    def wall(argv: list[str]) -> float:
        started = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, timeout=60, check=True)
        return time.perf_counter() - started

    python = [sys.executable, "-c", "pass"]
    build = bcrun.argv("true")
    for argv in (python, build, build):
        wall(argv)
    excess = [wall(build) - wall(python) for _ in range(7)]
    assert statistics.median(excess) < 0.080, excess
