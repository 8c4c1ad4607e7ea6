"""Restore planning: a source (a snapshot, a foreign image) and a target disk become a
RestorePlan, shown before anything is written. Pure reading: the source's layout and used-block
maps, the target's table and its restore mark."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from recovery.probe.restore_mark import IncompleteRestore, read_mark
from recovery.errors import DiskError, RefusedError
from recovery.model.disk import DiskInfo
from recovery.model.layout import Layout, PartitionEntry
from recovery.plan.layout import fs_family
from recovery.probe.disks import describe
from recovery.probe.table import read_layout
from recovery.repo.repository import Repository
from recovery.restore.actions import (
    Action, NameDamagedFiles, PrepareTarget, ProveSource, ResizeFilesystem, SetBootEntry, ShrinkFilesystem, WritePartition,
    WriteTable, part_words,
)
from recovery.sources.base import Source
from recovery.sources.snapshot import SnapshotSource
from recovery.restore.target import check_target
from recovery.units import human_size

log = logging.getLogger(__name__)
LAYOUT_MODES = ("keep", "grow", "proportional")
SHRINKS_BY_RELOCATING = ("ext", "ntfs")


@dataclass
class RestorePlan:
    snapshot: str                  # the source's id (a snapshot id, or a foreign image's digest)
    name: str
    created: str
    target: DiskInfo
    before: Layout | None
    after: Layout
    source: Layout
    layout_mode: str
    layout_changes: list[str]      # what happens to the table and each partition, in words
    actions: list[Action]          # what apply does, in order
    destroyed: list[str]
    bytes_to_write: int
    resume: bool = False
    salvage: bool = False
    fs: dict[int, str] = field(default_factory=dict)
    # What planning opened and read (a snapshot's chunk tables), handed to apply.
    origin: Source | None = field(default=None, repr=False)

    @property
    def heading(self) -> str:
        o = self.origin
        if o is None or isinstance(o, SnapshotSource):
            return f"Restore snapshot {self.snapshot[:8]} ({self.name}, {self.created})"
        return f"Restore the {o.kind} {o.location} ({self.name}, {self.created})"

    def lines(self) -> list[str]:
        t = self.target
        what = t.model or ("disk-image file" if t.is_image else "disk")
        out = [
            self.heading,
            f"onto {t.path} ({what}, {human_size(t.size)})",
            f"Layout: {self.layout_mode}; {human_size(self.bytes_to_write)} of data to write.",
        ]
        out += [f"  * {c}" for c in self.layout_changes]
        out.append("Steps:")
        out += [f"  {i}. {a.describe()}" for i, a in enumerate(self.actions, 1)]
        if self.destroyed:
            out.append("Everything now on the target will be destroyed:")
            out += [f"  ! {d}" for d in self.destroyed]
        return out

    def to_json(self) -> dict:
        o = self.origin
        return {
            "snapshot": self.snapshot,
            "name": self.name,
            "created": self.created,
            "from": None if o is None else {"kind": o.kind, "location": o.location},
            "target": self.target.path,
            "layout_mode": self.layout_mode,
            "bytes_to_write": self.bytes_to_write,
            "resume": self.resume,
            "salvage": self.salvage,
            "before": self.before.to_json() if self.before else None,
            "after": self.after.to_json(),
            "layout_changes": self.layout_changes,
            "actions": [a.to_json() for a in self.actions],
            "destroyed": self.destroyed,
        }


def _min_sizes(source: Source, must_shrink: bool) -> dict[int, int]:
    """The smallest size each partition can take: what its filesystem can shrink to (ext, NTFS,
    asked only when the target is smaller), else the end of its last used byte."""
    out = {}
    for part in source.partitions:
        if part.whole or part.number in source.unreadable:
            out[part.number] = part.size
            continue
        reader = source.reader(part.number)
        out[part.number] = max((o + n for o, n in reader.used_ranges()), default=0)
        if must_shrink and fs_family(part.fs) in SHRINKS_BY_RELOCATING:
            from recovery.apply.shrink import min_size

            out[part.number] = min(min_size(part.fs, reader.read, part.size, part.used_bytes), part.size)
    return out


def _destroyed(target: DiskInfo, mark: IncompleteRestore | None) -> list[str]:
    if mark is not None:
        return [f"an {mark.describe()} (started {mark.started})"]
    out = []
    for p in target.partitions:
        bits = [p.fs or "unknown", f"'{p.label}'" if p.label else None, human_size(p.size)]
        out.append(f"partition {p.number} ({', '.join(b for b in bits if b)})")
    return out or [f"all data on the disk ({human_size(target.size)})"]


def plan_restore(repo: Repository, snapshot_ref: str, target: str, *, name: str | None = None,
                 layout_mode: str = "grow", salvage: bool = False) -> RestorePlan:
    """A snapshot of `repo` ("latest" or an id) onto `target`."""
    if layout_mode not in LAYOUT_MODES:
        raise RefusedError(f"unknown layout {layout_mode!r}; choose keep, grow or proportional")
    # A snapshot named by id is looked up first; "latest" needs the target's serial to know
    # which computer is being restored.
    sid = None if snapshot_ref == "latest" else repo.resolve(snapshot_ref, name)
    info = describe(target)
    check_target(info, str(repo.local_path) if repo.local_path else None)
    sid = sid or repo.resolve(snapshot_ref, name, serial=info.serial)
    source = SnapshotSource(repo, repo.load_manifest(sid), salvage=salvage)
    return plan_source(source, target, layout_mode=layout_mode, salvage=salvage, info=info)


def plan_source(source: Source, target: str, *, layout_mode: str = "grow", salvage: bool = False,
                info: DiskInfo | None = None) -> RestorePlan:
    """Any source (a snapshot, a foreign image) onto `target`: reads only."""
    if layout_mode not in LAYOUT_MODES:
        raise RefusedError(f"unknown layout {layout_mode!r}; choose keep, grow or proportional")
    if info is None:
        info = describe(target)
        check_target(info, source.on_disk())
    fs = {p.number: p.fs for p in source.partitions}
    saved = source.layout

    from recovery.plan.layout import describe_plan, plan_layout, usable_area

    if saved.table == "none":
        must_shrink = info.size < saved.disk_size
    else:
        usable_end = usable_area(saved.table, info.size, info.logical_sector)[0]
        must_shrink = usable_end < max((p.end for p in saved.partitions), default=0)
    min_sizes = _min_sizes(source, must_shrink)
    planned = saved
    if saved.table == "none":
        # The saved layout of a whole-disk filesystem lists no partition: plan its one
        # filesystem (number 0) so it can grow or shrink with the disk.
        whole = source.partition(0)
        planned = replace(saved, partitions=(PartitionEntry(number=0, start=0, size=whole.size, type=""),))
    after = plan_layout(planned, info.size, info.logical_sector, layout_mode, fs, min_sizes)
    changes = [] if saved.table == "none" else describe_plan(planned, after, fs)
    if saved.table == "none" and after.partitions[0].size != planned.partitions[0].size:
        old, new = planned.partitions[0].size, after.partitions[0].size
        verb = "grows" if new > old else "shrinks"
        changes.append(f"The whole-disk filesystem {verb} from {human_size(old)} to {human_size(new)}.")
    try:
        before = read_layout(target)
    except DiskError:
        before = None
    mark = read_mark(target)
    resume = mark is not None and mark.snapshot == source.id
    return RestorePlan(
        snapshot=source.id, name=source.name, created=source.created, target=info, before=before, after=after,
        source=saved, layout_mode=layout_mode, layout_changes=changes,
        actions=build_actions(source, after, info, resume, salvage),
        destroyed=_destroyed(info, mark), bytes_to_write=sum(p.used_bytes for p in source.partitions),
        resume=resume, salvage=salvage, fs=fs, origin=source)


def build_actions(source: Source, after: Layout, target: DiskInfo, resume: bool,
                  salvage: bool = False) -> list[Action]:
    pieces, stored = source.proof_size()
    what = "snapshot" if isinstance(source, SnapshotSource) else source.kind
    actions: list[Action] = [ProveSource(what, pieces, stored),
                             PrepareTarget(source.name, source.created, resume)]
    placed = {p.number: p for p in after.partitions}
    follow: list[Action] = []
    for part in source.partitions:
        start, size = placed[part.number].start, placed[part.number].size
        actions.append(WritePartition(part.number, part.fs, part.label, start, size, part.used_bytes,
                                      part.start, part.size))
        if size < part.size and fs_family(part.fs) in SHRINKS_BY_RELOCATING:
            follow.insert(0, ShrinkFilesystem(part.number, part.fs, part.size, size))
        elif size != part.size:
            follow.append(ResizeFilesystem(part.number, part.fs, part.size, size, part.uuid, part.label))
    if salvage:
        actions.append(NameDamagedFiles())
    table = WriteTable(after.table, after.disk_size, len(after.partitions), source.boot_area_count())
    # A whole-disk filesystem's first bytes (its superblock) come last of the data; only
    # then can its tools resize it.
    actions += [table] + follow if after.table == "none" else follow + [table]
    if after.table != "none" and not target.is_image:
        actions.append(SetBootEntry())
    return actions


__all__ = ["RestorePlan", "plan_restore", "plan_source", "part_words"]
