"""Sizes and durations as users write them: ``2G``, ``10%``, ``5m``."""

from __future__ import annotations

import re
from typing import NamedTuple

from bcrun.errors import ConfigError

# Compiled by re on first use, not as bcrun starts.
_SIZE = r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)"
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION = r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?"
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


class Size(NamedTuple):
    """A memory size: bytes, or a percentage of the memory there is."""

    bytes: int | None = None
    percent: float | None = None

    def of(self, total: int) -> int:
        if self.percent is not None:
            return int(total * self.percent / 100)
        return self.bytes or 0


def parse_size(text: str) -> Size:
    """``512M``, ``2G``, ``1.5GiB``, ``10%``, ``4096`` (bytes)."""
    text = text.strip()
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            percent = -1
        if not 0 <= percent <= 100:
            raise ConfigError(f"{text!r} is not a percentage from 0% to 100%")
        return Size(percent=percent)
    match = re.fullmatch(_SIZE, text, re.IGNORECASE)
    if not match:
        raise ConfigError(f"{text!r} is not a size (like 512M, 2G or 10%)")
    number, unit, _ = match.groups()
    return Size(bytes=int(float(number) * _UNITS[unit.lower()]))


def format_size(size: int) -> str:
    """``1.1G``, ``512M``, ``900K``: short, for reasons and status."""
    for unit in ("T", "G", "M", "K"):
        scale = _UNITS[unit.lower()]
        if abs(size) >= scale:
            value = size / scale
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
    return f"{size}B"


def parse_duration(text: str) -> float:
    """``300``, ``90s``, ``5m``, ``1h``, ``500ms``: seconds."""
    match = re.fullmatch(_DURATION, text.strip(), re.IGNORECASE)
    if not match:
        raise ConfigError(f"{text!r} is not a duration (like 90s, 5m or 1h)")
    number, unit = match.groups()
    return float(number) * _SECONDS[(unit or "s").lower()]


def format_duration(seconds: float) -> str:
    """``4s``, ``3m20s``, ``2h05m``."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02}m"
