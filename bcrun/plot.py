"""``bcrun plot``: draw a ``--trace`` file as a picture.

A trace holds one JSON object per policy tick; any key may be missing or
null, and unknown keys are ignored.  The picture has three panels over the
build's elapsed time: job counts, load, and memory.  matplotlib is optional
(``pip install 'bcrun[plot]'``) and is imported only when a plot is drawn.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bcrun.errors import BcrunError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

GIB = 1024**3
NEEDS_MATPLOTLIB = "bcrun plot needs matplotlib: pip install 'bcrun[plot]'"

Tick = dict[str, Any]


def plot(trace: Path, output: Path) -> None:
    """Draw the trace TRACE into OUTPUT, in the format OUTPUT's suffix names."""
    if output.resolve() == trace.resolve():
        raise BcrunError(f"{output}: would overwrite the trace")
    ticks = read_trace(trace)
    x = elapsed(ticks)
    if not any(math.isfinite(t) for t in x):
        raise BcrunError(f"{trace}: no ticks to plot")
    try:
        # The package first: a cached submodule would hide its absence.
        importlib.import_module("matplotlib")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise BcrunError(NEEDS_MATPLOTLIB) from None

    figure = Figure(figsize=(10, 8), layout="constrained")
    FigureCanvasAgg(figure)  # no display needed, and no pyplot global state
    jobs_axes, load_axes, memory_axes = figure.subplots(3, 1, sharex=True)
    figure.suptitle(f"bcrun trace: {trace.name}")

    draw(jobs_axes, x, ticks, "running", "running", step=True)
    draw(jobs_axes, x, ticks, "jobs", "jobs in force", step=True, width=3)
    draw(jobs_axes, x, ticks, "cap", "cap", step=True, dashed=True)
    finish(jobs_axes, "jobs")

    draw(load_axes, x, ticks, "runnable", "runnable")
    draw(load_axes, x, ticks, "external_load", "external load")
    draw(load_axes, x, ticks, "load1", "load1")
    draw(load_axes, x, ticks, "target_load", "target", dashed=True)
    finish(load_axes, "load (tasks)")

    draw(memory_axes, x, ticks, "mem_available_bytes", "available", scale=1 / GIB)
    draw(
        memory_axes,
        x,
        ticks,
        "mem_reserve_bytes",
        "reserve",
        scale=1 / GIB,
        dashed=True,
    )
    finish(memory_axes, "memory (GiB)")
    memory_axes.set_xlabel("elapsed (s)")

    try:
        figure.savefig(output)
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise BcrunError(f"cannot write {output}: {reason}") from None


def read_trace(trace: Path) -> list[Tick]:
    """The ticks of TRACE, one JSON object a line; blank lines are skipped.

    An unfinished last line (no newline: the build is still writing) is
    skipped too, so that a running build's trace can be plotted.
    """
    try:
        text = trace.read_text(encoding="utf-8")
    except OSError as err:
        raise BcrunError(f"cannot read {trace}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise BcrunError(f"cannot read {trace}: not UTF-8 text") from None
    lines = text.split("\n")
    ticks = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            tick = json.loads(line)
        except ValueError:
            tick = None
        if not isinstance(tick, dict):
            if number == len(lines):
                break
            raise BcrunError(f"{trace}:{number}: not a JSON object")
        ticks.append(tick)
    return ticks


def elapsed(ticks: list[Tick]) -> list[float]:
    """Each tick's seconds since the build started, from ``elapsed_s`` or
    else ``time``; NaN where a tick has neither."""
    times = [number(tick, "time") for tick in ticks]
    start = min((t for t in times if math.isfinite(t)), default=math.nan)
    seconds = [number(tick, "elapsed_s") for tick in ticks]
    return [
        s if math.isfinite(s) else t - start
        for s, t in zip(seconds, times, strict=True)
    ]


def number(tick: Tick, key: str, scale: float = 1.0) -> float:
    """``tick[key]`` times SCALE, or NaN (a gap in the line) if it is no number."""
    value = tick.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value) * scale


def draw(
    axes: Axes,
    x: list[float],
    ticks: list[Tick],
    key: str,
    label: str,
    *,
    scale: float = 1.0,
    step: bool = False,
    dashed: bool = False,
    width: float = 1.5,
) -> None:
    """Draw ``tick[key]`` over X, unless no tick has it."""
    y = [number(tick, key, scale) for tick in ticks]
    if not any(math.isfinite(value) for value in y):
        return
    axes.plot(
        x,
        y,
        label=label,
        drawstyle="steps-post" if step else "default",
        linestyle="--" if dashed else "-",
        linewidth=width,
    )


def finish(axes: Axes, ylabel: str) -> None:
    """Label AXES, start it at zero, and put its legend beside it."""
    axes.set_ylabel(ylabel)
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    if axes.get_lines():
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
