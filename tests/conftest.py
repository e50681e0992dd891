from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Bcrun


@pytest.fixture
def bcrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bcrun]:
    """Runs ``python -m bcrun`` in a runtime directory of this test's own."""
    runner = Bcrun(tmp_path)
    # In-process control calls (bcrun.control) look where the children do.
    monkeypatch.setenv("XDG_RUNTIME_DIR", runner.env["XDG_RUNTIME_DIR"])
    monkeypatch.setenv("TMPDIR", runner.env["TMPDIR"])
    yield runner
    runner.cleanup()


def pytest_configure(config: pytest.Config) -> None:
    """Run with the default dispositions of the signals the build gets.

    A suite started in the background (``nohup``, ``&`` in a script)
    inherits SIGINT, SIGQUIT and SIGHUP ignored, and so would every bcrun
    it starts: bcrun rightly keeps them ignored for the build, and the tests
    of signal passing would test that instead.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGQUIT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
