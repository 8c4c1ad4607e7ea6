"""Retention policies: which snapshots of each machine to keep, and why.

Snapshots are grouped by machine name and judged newest first. Each rule keeps the newest
snapshot of each of its last N calendar buckets (a day, an ISO week, a month, a year, in local
time; `last` keeps the N newest snapshots): a snapshot is kept when it is the first seen in a
bucket its rule still has room for. A snapshot kept by several rules lists each of them. The
rules only choose; deleting is `forget` (recovery/repo/prune.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from recovery.errors import UsageError

RULES = ("last", "daily", "weekly", "monthly", "yearly")


@dataclass(frozen=True)
class Policy:
    last: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0

    def __post_init__(self):
        for rule in RULES:
            if getattr(self, rule) < 0:
                raise UsageError(f"--keep-{rule} must be 0 or more, not {getattr(self, rule)}")

    @property
    def empty(self) -> bool:
        return not any(getattr(self, r) for r in RULES)

    def describe(self) -> str:
        """'keep last 3, daily 7, ...' for people."""
        parts = [f"{r} {getattr(self, r)}" for r in RULES if getattr(self, r)]
        return "keep " + ", ".join(parts) if parts else "no rule"

    def to_json(self) -> dict:
        return {r: getattr(self, r) for r in RULES}


# What a full backup destination suggests (and the TUI's "Standard" preset): a few recent
# backups, a week of days, a month of weeks, a year of months.
DEFAULT_POLICY = Policy(last=3, daily=7, weekly=4, monthly=12)


@dataclass
class Verdict:
    id: str
    name: str
    created: str
    keep: bool
    reasons: list[str] = field(default_factory=list)   # the rules that hold it ("daily 2026-11-29")

    def to_json(self) -> dict:
        return dict(self.__dict__)


def local_time(created: str) -> datetime:
    """A manifest's UTC time ("2026-11-25T16:00:00Z") in this machine's time zone."""
    return datetime.fromisoformat(created.replace("Z", "+00:00")).astimezone()


def _bucket(rule: str, when: datetime) -> str:
    if rule == "daily":
        return when.strftime("%Y-%m-%d")
    if rule == "weekly":
        year, week, _ = when.isocalendar()
        return f"{year}-W{week:02d}"
    if rule == "monthly":
        return when.strftime("%Y-%m")
    return when.strftime("%Y")


def judge(snapshots, policy: Policy) -> list[Verdict]:
    """A verdict for every snapshot (objects with id, name, created), newest first within each
    machine, machines in name order. Refuses an empty policy: no rule never means "remove all"."""
    if policy.empty:
        raise UsageError("no retention rule given: say what to keep, e.g. --keep-last 3 --keep-daily 7 "
                         "(nothing was removed)")
    by_name: dict[str, list] = {}
    for snap in snapshots:
        by_name.setdefault(snap.name, []).append(snap)
    out: list[Verdict] = []
    for name in sorted(by_name):
        group = sorted(by_name[name], key=lambda s: (s.created, s.id), reverse=True)
        room = {r: getattr(policy, r) for r in RULES}
        last_bucket: dict[str, str | None] = {r: None for r in RULES}
        for snap in group:
            verdict = Verdict(snap.id, snap.name, snap.created, False)
            when = local_time(snap.created)
            for rule in RULES:
                if room[rule] <= 0:
                    continue
                if rule == "last":
                    verdict.reasons.append(f"last {policy.last}")
                    room[rule] -= 1
                    continue
                bucket = _bucket(rule, when)
                if bucket != last_bucket[rule]:
                    last_bucket[rule] = bucket
                    verdict.reasons.append(f"{rule} {bucket}")
                    room[rule] -= 1
            verdict.keep = bool(verdict.reasons)
            out.append(verdict)
    return out
