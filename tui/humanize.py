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


def age(iso: str | None, now: datetime | None = None) -> str:
    """How long ago: '40 minutes', '3 hours', '5 days', '7 weeks', '2 years'."""
    if not iso:
        return "?"
    try:
        t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return "?"
    now = now or datetime.now(t.tzinfo)
    minutes = max(int((now - t).total_seconds() // 60), 0)
    for unit, span in (("year", 525_600), ("week", 10_080), ("day", 1_440), ("hour", 60)):
        if minutes >= 2 * span or (unit in ("day", "hour") and minutes >= span):
            n = minutes // span
            return f"{n} {unit}{'s' if n > 1 else ''}"
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def percent(part: int | None, whole: int | None) -> str:
    if part is None or not whole:
        return ""
    return f"{100 * part / whole:.0f}%"
