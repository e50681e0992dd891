from __future__ import annotations

import json
import math
import sys

import pytest

from bcrun.errors import BcrunError
from bcrun.plot import NEEDS_MATPLOTLIB, plot, read_trace

GIB = 1024**3


def synthetic_ticks(count=120):
    """A 2-minute build: jobs ramp up, a load spike cuts them, memory dips."""
    ticks = []
    for i in range(count):
        external = 6.0 if 40 <= i < 70 else 0.5
        jobs = 4 if 40 <= i < 70 else min(8, 2 + i // 5)
        ticks.append(
            {
                "time": 1_700_000_000.0 + i,
                "elapsed_s": float(i),
                "jobs": jobs,
                "cap": jobs if i % 30 else jobs + 1,
                "mode": "paused" if 100 <= i < 105 else "auto",
                "reason": "load",
                "policy": "adaptive",
                "running": max(0, jobs - i % 3),
                "runnable": jobs + external,
                "external_load": external,
                "load1": 0.8 * (jobs + external),
                "target_load": 8.0,
                "mem_available_bytes": int((10 - 4 * math.sin(i / 20) ** 2) * GIB),
                "mem_total_bytes": 16 * GIB,
                "mem_reserve_bytes": 2 * GIB,
                "psi_cpu_some": 0.1,
                "psi_memory_some": 0.0,
                "psi_io_some": 0.02,
                "idle_s": None if i % 7 else 3.0,
                "unknown_key": [1, 2],
            }
        )
    return ticks


@pytest.fixture
def trace(tmp_path):
    path = tmp_path / "build.trace"
    lines = [json.dumps(tick) for tick in synthetic_ticks()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_png(trace, tmp_path):
    output = tmp_path / "build.png"
    plot(trace, output)
    data = output.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000


def test_svg_names_every_series(trace, tmp_path):
    output = tmp_path / "build.svg"
    plot(trace, output)
    svg = output.read_text()
    assert svg.lstrip().startswith("<?xml")
    for label in (
        "running",
        "jobs in force",
        "cap",
        "runnable",
        "external load",
        "load1",
        "target",
        "available",
        "reserve",
        "bcrun trace: build.trace",
    ):
        assert f"<!-- {label} -->" in svg, label


def test_missing_and_null_keys(tmp_path):
    path = tmp_path / "sparse.trace"
    path.write_text(
        '{"time": 100.0, "jobs": 2}\n'
        "\n"
        '{"time": 101.5, "jobs": null, "running": 1}\n'
        '{"elapsed_s": 3, "jobs": 3, "load1": "high"}\n'
        '{"mode": "auto"}\n'
    )
    output = tmp_path / "sparse.pdf"
    plot(path, output)
    assert output.read_bytes().startswith(b"%PDF")


def test_malformed_line_names_its_number(trace, tmp_path):
    lines = trace.read_text().splitlines()
    lines[4] = "{not json"
    trace.write_text("\n".join(lines) + "\n")
    with pytest.raises(BcrunError, match=r"build\.trace:5: not a JSON object$"):
        plot(trace, tmp_path / "out.png")


def test_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "t"
    path.write_text('{"jobs": 1, "elapsed_s": 0}\n[1, 2]\n')
    with pytest.raises(BcrunError, match=r"t:2: not a JSON object"):
        read_trace(path)


def test_unfinished_last_line_is_skipped(tmp_path):
    path = tmp_path / "t"
    path.write_text('{"jobs": 1, "elapsed_s": 0}\n{"jobs": 2, "ela')
    assert read_trace(path) == [{"jobs": 1, "elapsed_s": 0}]


@pytest.mark.parametrize("text", ["", "\n\n", '{"jobs": 4}\n'])
def test_no_ticks(tmp_path, text):
    path = tmp_path / "empty.trace"
    path.write_text(text)
    with pytest.raises(BcrunError, match=r"empty\.trace: no ticks to plot"):
        plot(path, tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()


def test_unreadable_trace(tmp_path):
    with pytest.raises(BcrunError, match=r"^cannot read .*nope: No such file"):
        plot(tmp_path / "nope", tmp_path / "out.png")


def test_unknown_format(trace, tmp_path):
    with pytest.raises(BcrunError, match=r"^cannot write .*out\.xyz: "):
        plot(trace, tmp_path / "out.xyz")


def test_unwritable_output(trace, tmp_path):
    with pytest.raises(BcrunError, match=r"^cannot write .*out\.png: "):
        plot(trace, tmp_path / "no-such-dir" / "out.png")


def test_output_is_not_the_trace(tmp_path):
    path = tmp_path / "build.png"
    path.write_text('{"elapsed_s": 0, "jobs": 1}\n')
    with pytest.raises(BcrunError, match="would overwrite the trace"):
        plot(path, path)
    assert path.read_text() == '{"elapsed_s": 0, "jobs": 1}\n'


def test_without_matplotlib(trace, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(BcrunError) as caught:
        plot(trace, tmp_path / "out.png")
    assert str(caught.value) == NEEDS_MATPLOTLIB
    assert str(caught.value) == (
        "bcrun plot needs matplotlib: pip install 'bcrun[plot]'"
    )
