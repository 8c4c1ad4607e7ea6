"""Words and numbers for people: sizes, rates, durations, dates. Pure functions, no I/O."""

from __future__ import annotations

from datetime import datetime

from recovery.units import human_duration, human_size

def size(n: int | float | None) -> str:
    return "?" if n is None else human_size(n)


def rate(bytes_per_second: float) -> str:
    return f"{size(bytes_per_second)}/s"


def duration(seconds: float | None) -> str:
    return "--" if seconds is None else human_duration(seconds)


def when(iso: str | None) -> str:
    """An ISO 8601 time as 'YYYY-MM-DD HH:MM' in local time."""
    if not iso:
        return "never"
    try:
        t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    if t.tzinfo is not None:
        t = t.astimezone()
    return t.strftime("%Y-%m-%d %H:%M")


def percent(part: int | None, whole: int | None) -> str:
    if part is None or not whole:
        return ""
    return f"{100 * part / whole:.0f}%"
