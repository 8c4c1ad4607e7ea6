"""Restore: plan (shown to the person first), then apply onto a disk or disk-image file."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from recovery.apply.table import write_layout
from recovery.chunking import used_windows
from recovery.diskio import INCOMPLETE, Disk
from recovery.errors import DamageError, DiskError, RefusedError
from recovery.events import CancelToken, EventSink, Meter, Warning_, ignore
from recovery.model.disk import DiskInfo
from recovery.model.layout import Layout, PartitionEntry
from recovery.probe.disks import describe
from recovery.probe.mounts import is_on_disk, mounts_on_disk
from recovery.probe.table import read_layout
from recovery.repo.format import ID_SIZE, NO_DATA
from recovery.repo.manifest import Manifest
from recovery.repo.repository import Repository
from recovery.units import human_size
from recovery.verify import chunk_table, used_ranges
from recovery.workers import ordered_map

log = logging.getLogger(__name__)
LAYOUT_MODES = ("keep", "grow", "proportional")


@dataclass
class RestorePlan:
    snapshot: str
    name: str
    created: str
    target: DiskInfo
    before: Layout | None
    after: Layout
    source: Layout
    actions: list[str]
    destroyed: list[str]
    bytes_to_write: int
    layout_mode: str
    fs: dict[int, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        t = self.target
        what = t.model or ("disk-image file" if t.is_image else "disk")
        out = [
            f"Restore snapshot {self.snapshot[:8]} ({self.name}, {self.created})",
            f"onto {t.path} ({what}, {human_size(t.size)})",
            f"Layout: {self.layout_mode}; {human_size(self.bytes_to_write)} of data to write.",
        ]
        out += [f"  - {a}" for a in self.actions]
        if self.destroyed:
            out.append("Everything now on the target will be destroyed:")
            out += [f"  ! {d}" for d in self.destroyed]
        return out

    def to_json(self) -> dict:
        return {
            "snapshot": self.snapshot,
            "target": self.target.path,
            "layout_mode": self.layout_mode,
            "bytes_to_write": self.bytes_to_write,
            "before": self.before.to_json() if self.before else None,
            "after": self.after.to_json(),
            "actions": self.actions,
            "destroyed": self.destroyed,
        }


@dataclass
class RestoreResult:
    snapshot: str
    target: str
    bytes_written: int
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def check_target(target: DiskInfo, repo: Repository) -> None:
    if target.is_system:
        raise RefusedError(f"{target.path} holds the running system; choose another disk")
    if target.read_only:
        raise RefusedError(f"{target.path} is read-only")
    mounted = mounts_on_disk(target.path)
    if mounted:
        m = mounted[0]
        raise RefusedError(f"{m.source} on the target is mounted at {m.target}; unmount it first")
    if is_on_disk(str(repo.path), target.path):
        raise RefusedError(f"{target.path} holds the repository being restored from; choose another disk")
    if target.is_image and os.path.realpath(target.path).startswith(os.path.realpath(repo.path) + os.sep):
        raise RefusedError(f"{target.path} lies inside the repository; choose another target")


def _min_sizes(repo: Repository, manifest: Manifest) -> dict[int, int]:
    """The smallest size each partition can take: the end of its last used byte."""
    out = {}
    for part in manifest.partitions:
        ranges = used_ranges(repo, part)
        out[part.number] = part.size if part.whole or not ranges else max(o + n for o, n in ranges)
    return out


def _destroyed(target: DiskInfo) -> list[str]:
    out = []
    for p in target.partitions:
        bits = [p.fs or "unknown", f"'{p.label}'" if p.label else None, human_size(p.size)]
        out.append(f"partition {p.number} ({', '.join(b for b in bits if b)})")
    if not out:
        out.append(f"all data on {target.path} ({human_size(target.size)})")
    return out


def plan_restore(
    repo: Repository, snapshot_ref: str, target: str, *, name: str | None = None, layout_mode: str = "grow"
) -> RestorePlan:
    if layout_mode not in LAYOUT_MODES:
        raise RefusedError(f"unknown layout {layout_mode!r}; choose keep, grow or proportional")
    sid = repo.resolve(snapshot_ref, name)
    manifest = repo.load_manifest(sid)
    info = describe(target)
    check_target(info, repo)
    from recovery.plan.layout import describe_plan, plan_layout

    fs = {p.number: p.fs for p in manifest.partitions}
    source = manifest.layout
    if source.table == "none":
        if info.size < source.disk_size:
            raise RefusedError(
                f"{target} is too small: {human_size(info.size)}, the snapshot needs {human_size(source.disk_size)}"
            )
        after = source
        actions = [f"Write the whole-disk filesystem ({fs.get(0, 'unknown')}) as it was"]
    else:
        after = plan_layout(source, info.size, info.logical_sector, layout_mode, fs, _min_sizes(repo, manifest))
        actions = describe_plan(source, after, fs)
    try:
        before = read_layout(target)
    except DiskError:
        before = None
    return RestorePlan(
        snapshot=sid,
        name=manifest.name,
        created=manifest.created,
        target=info,
        before=before,
        after=after,
        source=source,
        actions=actions,
        destroyed=_destroyed(info),
        bytes_to_write=sum(p.used_bytes for p in manifest.partitions),
        layout_mode=layout_mode,
        fs=fs,
    )


def _target_entry(after: Layout, number: int, disk_size: int) -> PartitionEntry:
    if number == 0:
        return PartitionEntry(number=0, start=0, size=disk_size, type="")
    for p in after.partitions:
        if p.number == number:
            return p
    raise DamageError(f"the plan has no partition {number}")


def apply_restore(
    repo: Repository, plan: RestorePlan, *, on_event: EventSink | None = None, cancel: CancelToken | None = None
) -> RestoreResult:
    sink = on_event or ignore
    cancel = cancel or CancelToken()
    started = time.monotonic()
    manifest = repo.load_manifest(plan.snapshot)
    index = repo.reload_index()

    # Everything the snapshot needs must be present before the first byte is written.
    tables = {}
    for part in manifest.partitions:
        try:
            tables[part.number] = (used_ranges(repo, part), chunk_table(repo, part))
        except DamageError as exc:
            raise DamageError(f"partition {part.number} cannot be restored: {exc.message}; nothing was written") from exc
        missing = sum(
            1 for w in range(len(tables[part.number][1]) // ID_SIZE)
            if (bid := tables[part.number][1][w * ID_SIZE : (w + 1) * ID_SIZE]) != NO_DATA and bid not in index
        )
        if missing:
            raise DamageError(
                f"partition {part.number}: {missing} chunk(s) are missing from the repository; nothing was written"
            )
    boot = [(a.offset, repo.read_blob(bytes.fromhex(a.blob))) for a in manifest.boot_areas]

    warnings: list[str] = []
    meter = Meter("restore", plan.bytes_to_write, sink)
    # The table first (for a whole-disk filesystem: old tables wiped, so no stale backup GPT
    # at the end of a larger disk confuses anyone), then every used block.
    write_layout(plan.target.path, plan.after, boot)
    with Disk(plan.target.path, writable=True) as disk:
        written = 0
        for part in manifest.partitions:
            entry = _target_entry(plan.after, part.number, disk.size)
            ranges, table = tables[part.number]
            meter.partition = part.number
            written += _write_partition(repo, disk, part, entry, ranges, table, manifest.chunk_size, meter, cancel)
        disk.sync()
    meter.finish()

    if manifest.layout.table != "none":
        warnings += _follow_partitions(plan, manifest, sink)
    return RestoreResult(plan.snapshot, plan.target.path, written, round(time.monotonic() - started, 3), warnings)


def _write_partition(repo, disk, part, entry, ranges, table, chunk_size, meter, cancel) -> int:
    """Write the used bytes of one partition at its (possibly moved) place on the target."""
    base = entry.start

    def put(w, subs):
        bid = table[w * ID_SIZE : (w + 1) * ID_SIZE]
        try:
            raw = repo.read_blob(bytes(bid))
        except DamageError as exc:
            raise DamageError(
                f"partition {part.number}: the chunk at byte {w * chunk_size} is damaged ({exc.message}); "
                f"{INCOMPLETE}"
            ) from exc
        view = memoryview(raw)
        for off, n in subs:
            disk.write(view[off : off + n], base + w * chunk_size + off, f"partition {part.number}")
        return sum(n for _, n in subs)

    written = 0
    for n in ordered_map(lambda item: put(*item), used_windows(ranges, part.size, chunk_size), cancel):
        written += n
        meter.add(n)
    return written


def _follow_partitions(plan: RestorePlan, manifest: Manifest, sink) -> list[str]:
    """Grow each filesystem whose partition grew; make sure UEFI can boot the disk."""
    notes = []
    old = {p.number: p for p in manifest.partitions}
    for entry in plan.after.data_partitions():
        src = old.get(entry.number)
        if src is None or entry.size == src.size:
            continue
        from recovery.apply.resize import grow_filesystem

        note = grow_filesystem(plan.target.path, entry, src.fs, src.size, src.uuid, src.label)
        if note:
            notes.append(note)
            sink(Warning_(note))
    if not plan.target.is_image:
        from recovery.apply.efiboot import ensure_boot_entry

        note = ensure_boot_entry(plan.target.path, plan.after)
        if note:
            notes.append(note)
    return notes
