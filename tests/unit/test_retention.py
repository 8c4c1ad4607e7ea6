"""Retention rules: calendar buckets in local time, the newest snapshot of a bucket kept, each
kept snapshot saying which rules hold it, machines judged apart, no rule refused."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from recovery.errors import UsageError
from recovery.repo.retention import DEFAULT_POLICY, Policy, judge


@dataclass
class Snap:
    id: str
    name: str
    created: str


@pytest.fixture(autouse=True)
def utc_plus_one(monkeypatch):
    """Local time one hour ahead of UTC, so buckets are visibly local."""
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    yield
    monkeypatch.delenv("TZ")
    time.tzset()


def snaps(*created, name="pc"):
    return [Snap(f"{name}{i:02d}", name, c) for i, c in enumerate(created)]


def kept(verdicts):
    return {v.id: v.reasons for v in verdicts if v.keep}


def test_no_rule_is_refused_never_removes_everything():
    with pytest.raises(UsageError, match="no retention rule"):
        judge(snaps("2026-11-29T10:00:00Z"), Policy())
    with pytest.raises(UsageError, match="--keep-daily"):
        Policy(daily=-1)


def test_keep_last_keeps_the_newest_n():
    v = judge(snaps("2026-11-01T10:00:00Z", "2026-11-02T10:00:00Z", "2026-11-03T10:00:00Z"), Policy(last=2))
    assert kept(v) == {"pc02": ["last 2"], "pc01": ["last 2"]}
    assert [x.id for x in v if not x.keep] == ["pc00"]


def test_daily_keeps_the_newest_of_each_local_day():
    # 23:30 UTC on the 28th is 00:30 on the 29th in Paris: the same local day as the 29th's.
    v = judge(snaps("2026-11-28T10:00:00Z", "2026-11-28T23:30:00Z", "2026-11-29T08:00:00Z",
                    "2026-11-29T20:00:00Z"), Policy(daily=5))
    assert kept(v) == {"pc03": ["daily 2026-11-29"], "pc00": ["daily 2026-11-28"]}


def test_daily_counts_days_that_have_snapshots():
    v = judge(snaps("2026-11-01T10:00:00Z", "2026-11-10T10:00:00Z", "2026-11-20T10:00:00Z"), Policy(daily=2))
    assert set(kept(v)) == {"pc02", "pc01"}


def test_weekly_monthly_yearly_buckets_and_several_reasons():
    v = judge(snaps("2025-06-01T10:00:00Z", "2026-10-15T10:00:00Z", "2026-11-23T10:00:00Z",
                    "2026-11-25T10:00:00Z", "2026-11-30T10:00:00Z"),
              Policy(last=1, weekly=2, monthly=3, yearly=2))
    assert kept(v) == {
        "pc04": ["last 1", "weekly 2026-W49", "monthly 2026-11", "yearly 2026"],
        "pc03": ["weekly 2026-W48"],      # the 23rd and 25th share ISO week 48: the newest wins
        "pc01": ["monthly 2026-10"],
        "pc00": ["monthly 2025-06", "yearly 2025"],
    }


def test_machines_are_judged_apart():
    both = snaps("2026-11-01T10:00:00Z", "2026-11-02T10:00:00Z", name="a") + \
        snaps("2026-11-01T11:00:00Z", name="b")
    v = judge(both, Policy(last=1))
    assert kept(v) == {"a01": ["last 1"], "b00": ["last 1"]}
    assert [x.name for x in v] == ["a", "a", "b"]


def test_default_policy_is_the_documented_one():
    assert DEFAULT_POLICY.describe() == "keep last 3, daily 7, weekly 4, monthly 12"


def test_ages_for_the_manage_screen():
    from datetime import datetime, timezone

    from tui.humanize import age

    now = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    assert age("2026-11-30T11:59:00Z", now) == "1 minute"
    assert age("2026-11-30T10:30:00Z", now) == "1 hour"
    assert age("2026-11-28T12:00:00Z", now) == "2 days"
    assert age("2026-10-01T12:00:00Z", now) == "8 weeks"
    assert age("2023-11-30T12:00:00Z", now) == "3 years"
    assert age(None, now) == "?"


def test_policy_messages_and_a_shared_policy_cannot_be_changed():
    with pytest.raises(UsageError) as refused:
        Policy(weekly=-2)
    assert str(refused.value) == "--keep-weekly must be 0 or more, not -2"
    with pytest.raises(UsageError) as refused:
        judge([], Policy())
    assert str(refused.value) == ("no retention rule given: say what to keep, e.g. --keep-last 3 "
                                  "--keep-daily 7 (nothing was removed)")
    assert Policy().describe() == "no rule"
    with pytest.raises(AttributeError):      # DEFAULT_POLICY is shared by the CLI and the TUI
        DEFAULT_POLICY.last = 0
