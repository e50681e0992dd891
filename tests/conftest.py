from __future__ import annotations

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
