"""Restore planning: a snapshot and a target disk become a RestorePlan, shown before anything is
written. Pure reading: the repository's metadata, the target's table and its restore mark."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from recovery.probe.restore_mark import IncompleteRestore, read_mark
from recovery.errors import DamageError, DiskError, RefusedError
from recovery.model.disk import DiskInfo
from recovery.model.layout import Layout, PartitionEntry
from recovery.plan.layout import fs_family
from recovery.probe.disks import describe
from recovery.probe.table import read_layout
from recovery.repo.manifest import Manifest
from recovery.repo.repository import Repository
from recovery.restore.actions import (
    Action, NameDamagedFiles, PrepareTarget, ProveSnapshot, ResizeFilesystem, SetBootEntry, ShrinkFilesystem, WritePartition,
    WriteTable, needed_blobs, part_words,
)
from recovery.restore.target import check_target
from recovery.units import human_size
from recovery.verify import chunk_table, used_ranges

log = logging.getLogger(__name__)
LAYOUT_MODES = ("keep", "grow", "proportional")
SHRINKS_BY_RELOCATING = ("ext", "ntfs")


@dataclass
class RestorePlan:
    snapshot: str
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
    # What planning read from the repository, handed to apply so it is not read twice.
    manifest: Manifest | None = field(default=None, repr=False)
    tables: dict = field(default_factory=dict, repr=False)     # partition -> (used ranges, chunk table)
    unreadable: set[int] = field(default_factory=set, repr=False)

    def lines(self) -> list[str]:
        t = self.target
        what = t.model or ("disk-image file" if t.is_image else "disk")
        out = [
            f"Restore snapshot {self.snapshot[:8]} ({self.name}, {self.created})",
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
        return {
            "snapshot": self.snapshot,
            "name": self.name,
            "created": self.created,
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


def load_tables(repo: Repository, manifest: Manifest, salvage: bool) -> tuple[dict, set[int]]:
    """(partition -> (used ranges, chunk table), partitions whose chunk list is unreadable).
    Without salvage, an unreadable chunk list refuses the restore before anything is written."""
    tables, unreadable = {}, set()
    for part in manifest.partitions:
        try:
            tables[part.number] = (used_ranges(repo, part), chunk_table(repo, part))
        except DamageError as exc:
            if not salvage:
                raise DamageError(f"snapshot {manifest.id[:8]} is damaged: partition {part.number}: its chunk "
                                  f"list is unreadable ({exc.message}); nothing was written to the target") from exc
            unreadable.add(part.number)
    return tables, unreadable


def _min_sizes(repo: Repository, manifest: Manifest, tables: dict, must_shrink: bool) -> dict[int, int]:
    """The smallest size each partition can take: what its filesystem can shrink to (ext, NTFS,
    asked only when the target is smaller), else the end of its last used byte."""
    out = {}
    for part in manifest.partitions:
        ranges = tables.get(part.number, ([], b""))[0]
        last_used = max((o + n for o, n in ranges), default=0)
        out[part.number] = part.size if part.whole or part.number not in tables else last_used
        if must_shrink and not part.whole and part.number in tables and \
                fs_family(part.fs) in SHRINKS_BY_RELOCATING:
            from recovery.apply.shrink import min_size
            from recovery.repo.reader import PartitionReader

            reader = PartitionReader(repo, part, manifest.chunk_size)
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
    if layout_mode not in LAYOUT_MODES:
        raise RefusedError(f"unknown layout {layout_mode!r}; choose keep, grow or proportional")
    # A snapshot named by id is looked up first; "latest" needs the target's serial to know
    # which computer is being restored.
    sid = None if snapshot_ref == "latest" else repo.resolve(snapshot_ref, name)
    info = describe(target)
    check_target(info, str(repo.local_path) if repo.local_path else None)
    sid = sid or repo.resolve(snapshot_ref, name, serial=info.serial)
    manifest = repo.load_manifest(sid)
    tables, unreadable = load_tables(repo, manifest, salvage)
    fs = {p.number: p.fs for p in manifest.partitions}
    source = manifest.layout

    from recovery.plan.layout import describe_plan, plan_layout, usable_area

    if source.table == "none":
        must_shrink = info.size < source.disk_size
    else:
        usable_end = usable_area(source.table, info.size, info.logical_sector)[0]
        must_shrink = usable_end < max((p.end for p in source.partitions), default=0)
    min_sizes = _min_sizes(repo, manifest, tables, must_shrink)
    if source.table == "none":
        # The saved layout of a whole-disk filesystem lists no partition: plan its one
        # filesystem (number 0) so it can grow or shrink with the disk.
        whole = next(p for p in manifest.partitions if p.number == 0)
        source = replace(source, partitions=(PartitionEntry(number=0, start=0, size=whole.size, type=""),))
    after = plan_layout(source, info.size, info.logical_sector, layout_mode, fs, min_sizes)
    changes = [] if source.table == "none" else describe_plan(source, after, fs)
    if source.table == "none" and after.partitions[0].size != source.partitions[0].size:
        old, new = source.partitions[0].size, after.partitions[0].size
        verb = "grows" if new > old else "shrinks"
        changes.append(f"The whole-disk filesystem {verb} from {human_size(old)} to {human_size(new)}.")
    try:
        before = read_layout(target)
    except DiskError:
        before = None
    mark = read_mark(target)
    resume = mark is not None and mark.snapshot == sid
    return RestorePlan(
        snapshot=sid, name=manifest.name, created=manifest.created, target=info, before=before, after=after,
        source=manifest.layout, layout_mode=layout_mode, layout_changes=changes,
        actions=build_actions(repo, manifest, tables, after, info, resume, salvage),
        destroyed=_destroyed(info, mark), bytes_to_write=sum(p.used_bytes for p in manifest.partitions),
        resume=resume, salvage=salvage, fs=fs, manifest=manifest, tables=tables, unreadable=unreadable)


def build_actions(repo: Repository, manifest: Manifest, tables: dict, after: Layout, target: DiskInfo,
                  resume: bool, salvage: bool = False) -> list[Action]:
    index = repo.index
    wanted = needed_blobs(manifest, tables)
    stored = sum(loc.stored_len for bid in wanted if (loc := index.get(bid)) is not None)
    actions: list[Action] = [ProveSnapshot(len(wanted), stored),
                             PrepareTarget(manifest.name, manifest.created, resume)]
    placed = {p.number: p for p in after.partitions}
    follow: list[Action] = []
    for part in manifest.partitions:
        start, size = placed[part.number].start, placed[part.number].size
        actions.append(WritePartition(part.number, part.fs, part.label, start, size, part.used_bytes,
                                      part.start, part.size))
        if size < part.size and fs_family(part.fs) in SHRINKS_BY_RELOCATING:
            follow.insert(0, ShrinkFilesystem(part.number, part.fs, part.size, size))
        elif size != part.size:
            follow.append(ResizeFilesystem(part.number, part.fs, part.size, size, part.uuid, part.label))
    if salvage:
        actions.append(NameDamagedFiles())
    table = WriteTable(after.table, after.disk_size, len(after.partitions), len(manifest.boot_areas))
    # A whole-disk filesystem's first bytes (its superblock) come last of the data; only
    # then can its tools resize it.
    actions += [table] + follow if after.table == "none" else follow + [table]
    if after.table != "none" and not target.is_image:
        actions.append(SetBootEntry())
    return actions


__all__ = ["RestorePlan", "plan_restore", "part_words"]
