"""The real tools, built once and cached; see buildtools.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.tools.buildtools import TOOLS, Unavailable, build_tool

PATCHED = ["gmake", "ninja", "samurai", "bmake"]


@dataclass(frozen=True)
class Tool:
    name: str
    program: Path

    def argv(self, directory: Path, jobs: int | None, *extra: str) -> list[str]:
        """Run the build in *directory* with -j *jobs* (None: no -j)."""
        args = [str(self.program), "-C", str(directory)]
        if jobs is not None:
            args += ["-j", str(jobs)]
        if self.name == "bmake":
            # No system mk files needed for these Makefiles.
            args.append("-r")
        return [*args, *extra]

    @property
    def makes(self) -> bool:
        return self.name in ("gmake", "bmake")


_built: dict[tuple[str, bool], Tool | str] = {}


def get_tool(name: str, patched: bool) -> Tool:
    key = (name, patched)
    if key not in _built:
        try:
            _built[key] = Tool(name, build_tool(name, patched))
        except Unavailable as why:
            _built[key] = str(why)
    found = _built[key]
    if isinstance(found, str):
        pytest.skip(found)
    return found


@pytest.fixture(params=PATCHED)
def tool(request: pytest.FixtureRequest) -> Tool:
    """Each patched tool in turn."""
    return get_tool(request.param, patched=True)


@pytest.fixture(params=["gmake", "bmake"])
def patched_make(request: pytest.FixtureRequest) -> Tool:
    """Each patched make in turn: the tools whose builds run sub-makes."""
    return get_tool(request.param, patched=True)


@pytest.fixture
def stock_tool() -> Callable[[str], Tool]:
    return lambda name: get_tool(name, patched=False)


__all__ = ["TOOLS", "Tool"]
