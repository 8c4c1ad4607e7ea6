"""Restore: plan (shown to the person first), then apply onto a disk or disk-image file.

    plan = plan_restore(repo, "latest", "/dev/sdb", layout_mode="grow")   # reads only
    plan = plan_source(open_source("pc.vhdx"), "/dev/sdb")               # any recovery.sources Source
    print("\\n".join(plan.lines()))                                       # or plan.to_json()
    result = apply_restore(plan, on_event=sink, cancel=token)             # runs plan.actions

`recovery.jobs.RestoreJob` wraps the two for the CLI, the TUI and the live boot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from recovery.events import CancelToken, EventSink, Meter, ignore
from recovery.restore.actions import RestoreRun
from recovery.restore.plan import LAYOUT_MODES, RestorePlan, plan_restore, plan_source
from recovery.restore.target import check_target, target_refusal
from recovery.units import human_size


@dataclass
class RestoreResult:
    snapshot: str
    target: str
    bytes_written: int
    seconds: float
    bytes_skipped: int = 0          # resumed: already on the target and intact
    warnings: list[str] = field(default_factory=list)
    partial: bool = False           # salvage: damaged ranges were written as zeros
    damaged: dict[int, dict] = field(default_factory=dict)   # partition -> files, metadata, ranges

    @property
    def status(self) -> str:
        return "partial" if self.partial else "ok"

    def to_json(self) -> dict:
        return {"status": self.status, **self.__dict__}

    origin: str = ""                # what was restored, in words ("snapshot 1a2b3c4d", "VHDX image pc.vhdx")

    def lines(self) -> list[str]:
        out = [f"restored {self.origin or 'snapshot ' + self.snapshot[:8]} onto {self.target}: "
               f"{human_size(self.bytes_written)} written in {self.seconds:.1f} s"
               + (f", {human_size(self.bytes_skipped)} already there from the interrupted restore (kept)"
                  if self.bytes_skipped else "")]
        if self.partial:
            out.append("PARTIAL: the source is damaged; damaged ranges were written as zeros"
                       if self.origin and not self.origin.startswith("snapshot")
                       else "PARTIAL: the snapshot is damaged; damaged ranges were written as zeros")
            for number, hit in sorted(self.damaged.items()):
                where = "whole-disk filesystem" if number == 0 else f"partition {number}"
                for m in hit.get("metadata", []):
                    out.append(f"  {where}: damaged filesystem metadata: {m}")
                for f in hit.get("files", []):
                    out.append(f"  {where}: damaged file {f}")
                if hit.get("unknown"):
                    out.append(f"  {where}: {len(hit['unknown'])} damaged range(s) not attributed to a file")
        out += [f"note: {w}" for w in self.warnings]
        return out


def apply_restore(plan: RestorePlan, *, on_event: EventSink | None = None,
                  cancel: CancelToken | None = None) -> RestoreResult:
    """Run the plan's actions in order. The first that fails stops the restore with its plain
    error; the disk then still carries its "incomplete restore" mark, and running the same
    restore again resumes."""
    sink = on_event or ignore
    cancel = cancel or CancelToken()
    started = time.monotonic()
    source = plan.origin
    with source.reading("restore"):        # a prune waits until the restore has read everything
        source.refresh()
        run = RestoreRun(source=source, target=plan.target.path, after=plan.after, sink=sink, cancel=cancel,
                         meter=Meter("restore", plan.bytes_to_write, sink), resume=plan.resume,
                         salvage=plan.salvage)
        for action in plan.actions:
            cancel.check()
            action.run(run)
        run.meter.finish()
    return RestoreResult(plan.snapshot, plan.target.path, run.written, round(time.monotonic() - started, 3),
                         bytes_skipped=run.skipped, warnings=run.notes, partial=bool(run.damage or run.unreadable),
                         damaged=run.hits, origin=source.title())


__all__ = ["LAYOUT_MODES", "RestorePlan", "RestoreResult", "apply_restore", "check_target", "plan_restore", "plan_source",
           "target_refusal"]
