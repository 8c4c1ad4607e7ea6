"""Sizes and durations for people, and durations people set."""

from __future__ import annotations

import os


def env_seconds(name: str, default: float, least: float = 0.0) -> float:
    """A duration a person may set in the environment (NAME=seconds), at least `least`;
    `default` when it is unset or not a number."""
    try:
        return max(float(os.environ.get(name, default)), least)
    except ValueError:
        return default


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
