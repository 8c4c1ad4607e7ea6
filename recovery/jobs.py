"""One job layer for every long operation: plan → confirm → run → typed result (or typed refusal).

    outcome = run_job(RestoreJob(repo, "latest", "/dev/sdb"), confirm=ask, on_event=sink, cancel=token)

A job's `plan()` only reads and may raise a refusal (RefusedError, DamageError, ...). Plans
that destroy something name what the person must type to confirm (`confirm_name`); run_job
asks `confirm(plan)` for those and raises Cancelled — nothing written — when it says no.
`run(plan, on_event, cancel)` does the work and returns the job's result; events are
recovery.events types, cancel a CancelToken checked between chunks. The CLI, the TUI and the
live boot all call jobs through here, so each rule lives once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Protocol

from recovery.errors import Cancelled
from recovery.events import CancelToken, EventSink, ignore


class Job(Protocol):
    kind: str

    def plan(self) -> Any: ...

    def confirm_name(self, plan) -> str | None: ...

    def run(self, plan, on_event: EventSink, cancel: CancelToken) -> Any: ...


@dataclass
class Outcome:
    plan: Any
    result: Any = None      # None for a dry run


def run_job(job: Job, *, confirm: Callable[[Any], bool] | None = None, on_event: EventSink | None = None,
            cancel: CancelToken | None = None, dry_run: bool = False,
            display: Callable[[], ContextManager[EventSink]] | None = None, plan: Any = None) -> Outcome:
    """`display`, when given, is entered only around the run and yields the event sink (a
    terminal's progress bars must not draw over the confirmation question). `plan`: one the
    caller already made with job.plan() (to act on a refusal first), not made again."""
    plan = job.plan() if plan is None else plan
    if dry_run:
        return Outcome(plan)
    if job.confirm_name(plan) is not None and (confirm is None or not confirm(plan)):
        raise Cancelled("nothing was written: it was not confirmed")
    cancel = cancel or CancelToken()
    if display is None:
        return Outcome(plan, job.run(plan, on_event or ignore, cancel))
    with display() as sink:
        return Outcome(plan, job.run(plan, sink, cancel))


@dataclass
class RestoreJob:
    """A snapshot of `repo` ("latest" or an id), or any opened `source` (recovery.sources:
    a foreign image), onto `target`."""
    repo: Any
    snapshot: str
    target: str
    name: str | None = None
    layout: str = "grow"
    salvage: bool = False
    source: Any = None
    kind = "restore"

    def plan(self):
        from recovery.restore import plan_restore, plan_source

        if self.source is not None:
            return plan_source(self.source, self.target, layout_mode=self.layout, salvage=self.salvage)
        return plan_restore(self.repo, self.snapshot, self.target, name=self.name, layout_mode=self.layout,
                            salvage=self.salvage)

    def confirm_name(self, plan) -> str | None:
        return plan.target.name

    def run(self, plan, on_event, cancel):
        from recovery.restore import apply_restore

        return apply_restore(plan, on_event=on_event, cancel=cancel)


@dataclass
class BackupPlan:
    source: str
    repository: str
    name: str | None

    def lines(self) -> list[str]:
        return [f"Back up {self.source} into {self.repository}" + (f" as {self.name}" if self.name else "")]

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class BackupJob:
    source: str
    repo: Any
    name: str | None = None
    verify: bool = True
    zstd_level: int = 3
    threads: int | None = None
    kind = "backup"

    def plan(self) -> BackupPlan:
        return BackupPlan(self.source, self.repo.location, self.name)

    def confirm_name(self, plan) -> None:
        return None     # a backup destroys nothing

    def run(self, plan, on_event, cancel):
        from recovery.backup import backup

        return backup(self.source, self.repo, self.name, verify=self.verify, on_event=on_event, cancel=cancel,
                      zstd_level=self.zstd_level, threads=self.threads)


@dataclass
class ImportJob:
    """An opened foreign image (recovery.sources) stored as a snapshot of `repo`."""
    source: Any
    repo: Any
    name: str | None = None
    verify: bool = True
    kind = "import"

    def plan(self) -> BackupPlan:
        return BackupPlan(f"the {self.source.kind} {self.source.location}", self.repo.location, self.name)

    def confirm_name(self, plan) -> None:
        return None     # an import destroys nothing

    def run(self, plan, on_event, cancel):
        from recovery.importer import import_source

        return import_source(self.source, self.repo, self.name, verify=self.verify, on_event=on_event,
                             cancel=cancel)


@dataclass
class VerifyJob:
    repo: Any
    snapshot_ids: list[str] | None = None
    repair: bool = False          # write objects repaired from their parity back to storage
    kind = "verify"

    def plan(self) -> list[str] | None:
        return self.snapshot_ids

    def confirm_name(self, plan) -> None:
        return None

    def run(self, plan, on_event, cancel):
        from recovery.verify import verify

        return verify(self.repo, plan, on_event=on_event, cancel=cancel, repair=self.repair)


@dataclass
class WriteUsbJob:
    image: str
    device: str
    data: str | None = None
    force: bool = False
    override_confirmed: bool = False
    disk: Any = None          # the stick as the caller already described it (DiskInfo), if it did
    kind = "write-usb"

    def plan(self):
        from recovery.usbstick import plan_stick

        return plan_stick(self.image, self.device, data=self.data, force=self.force, disk=self.disk)

    def confirm_name(self, plan) -> str:
        return plan.name

    def run(self, plan, on_event, cancel):
        from recovery.usbstick import write_stick

        return write_stick(plan, on_event=on_event, cancel=cancel, override_confirmed=self.override_confirmed)
