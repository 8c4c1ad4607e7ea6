"""A restore plan's steps as typed actions. Each says what it will do (a sentence for a person,
a dict for --json) and does it; dry-run, the TUI, the live console and apply all walk the same
list, in this order:

    ProveSnapshot      every chunk read, decoded and hashed before the first byte is written
    PrepareTarget      old table signatures wiped, the disk marked "incomplete restore of ..."
    WritePartition N   the used bytes of partition N at its (possibly moved) place
    ShrinkFilesystem N the filesystem made to fit a smaller partition (relocating what lay beyond)
    ResizeFilesystem N the filesystem grown to its larger partition; swap re-created
    WriteTable         table, identities and boot areas (or a whole-disk filesystem's first bytes):
                       last, so an interrupted restore never looks like a working disk
    SetBootEntry       a UEFI boot entry when the firmware has none for the disk

Actions never name the target's path: the plan's heading does, so front ends show it as they
like without editing sentences.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from recovery.chunking import used_windows, window_length
from recovery.diskio import INCOMPLETE, Disk
from recovery.errors import DamageError, DiskError
from recovery.events import CancelToken, EventSink, Meter, Warning_
from recovery.fs import merge_ranges
from recovery.model.layout import Layout, PartitionEntry
from recovery.repo.format import ID_SIZE, blob_id
from recovery.repo.manifest import Manifest, PartitionImage
from recovery.repo.repository import Repository
from recovery.units import human_size
from recovery.workers import ordered_map

from recovery.probe import restore_mark as marker

log = logging.getLogger(__name__)

MiB = 1024 * 1024
WIPE_HEAD = MiB          # the start of the disk: MBR, GPT header and entries, the boot gap
WIPE_TAIL = MiB          # the end: an old backup GPT
WHOLE_DISK_HEAD = 64 * 1024   # a whole-disk filesystem's boot sector and superblocks, written last
FLUSH_EVERY = 64 * MiB        # the drive starts writing behind the restore after this much


@dataclass
class RestoreRun:
    """What the actions share while they run."""

    repo: Repository
    manifest: Manifest
    target: str
    after: Layout
    tables: dict[int, tuple[list, bytes]]     # partition -> (used ranges, chunk table)
    sink: EventSink
    cancel: CancelToken
    meter: Meter
    resume: bool = False
    salvage: bool = False
    bad: set[bytes] = field(default_factory=set)          # chunks proven damaged (salvage writes zeros)
    damaged: dict[int, list[tuple[int, int]]] = field(default_factory=dict)   # partition -> byte ranges zeroed
    unreadable: set[int] = field(default_factory=set)    # partitions whose chunk list is lost
    hits: dict[int, dict] = field(default_factory=dict)   # partition -> files and metadata hit by damage
    written: int = 0
    skipped: int = 0
    notes: list[str] = field(default_factory=list)

    def note(self, text: str | None) -> None:
        if text:
            self.notes.append(text)
            self.sink(Warning_(text))

    def entry(self, number: int) -> PartitionEntry:
        """Where partition `number` goes (number 0: a whole-disk filesystem, which the plan
        lists too)."""
        for p in self.after.partitions:
            if p.number == number:
                return p
        raise DamageError(f"the plan has no partition {number}")

    def part(self, number: int) -> PartitionImage:
        return next(p for p in self.manifest.partitions if p.number == number)


class Action:
    kind = "action"

    def describe(self) -> str:
        raise NotImplementedError

    def fields(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def to_json(self) -> dict:
        return {"action": self.kind, **self.fields(), "text": self.describe()}

    def run(self, ctx: RestoreRun) -> None:
        raise NotImplementedError


def part_words(number: int, fs: str | None, label: str | None) -> str:
    if number == 0:
        return f"The whole-disk filesystem ({fs or 'unknown'})"
    bits = [b for b in (fs, f"“{label}”" if label else None) if b]
    return f"Partition {number}" + (f" ({', '.join(bits)})" if bits else "")


# ----------------------------------------------------------------------------- proof


@dataclass
class ProveSnapshot(Action):
    chunks: int
    stored_bytes: int
    kind = "prove"

    def describe(self) -> str:
        return (f"Read and check all {self.chunks} pieces of the snapshot ({human_size(self.stored_bytes)} "
                "stored) before anything is written")

    def run(self, ctx: RestoreRun) -> None:
        from recovery.verify import prove_blobs

        bad = prove_blobs(ctx.repo, needed_blobs(ctx.manifest, ctx.tables), on_event=ctx.sink, cancel=ctx.cancel)
        if not bad and not ctx.unreadable:
            return
        if not ctx.salvage:
            raise DamageError(damage_message(ctx, bad) + "; nothing was written to the target. "
                              "`lifeboat restore --salvage` writes everything that is readable")
        ctx.bad = bad
        ctx.note(damage_message(ctx, bad) + "; salvaging: damaged ranges are written as zeros")


def needed_blobs(manifest: Manifest, tables: dict) -> set[bytes]:
    """Every chunk a restore of `manifest` reads: its partitions' data and its boot areas."""
    from recovery.verify import table_ids

    wanted = {bytes.fromhex(a.blob) for a in manifest.boot_areas}
    for _, table in tables.values():
        wanted.update(bid for _, bid in table_ids(table))
    return wanted


def damage_message(ctx: RestoreRun, bad: set[bytes]) -> str:
    """Snapshot, partition and byte range of the first damage, and how much more there is."""
    where = []
    cs = ctx.manifest.chunk_size
    for number in sorted(ctx.unreadable):
        where.append(f"partition {number}: its chunk list")
    for part in ctx.manifest.partitions:
        if part.number not in ctx.tables:
            continue
        table = ctx.tables[part.number][1]
        windows = [w for w in range(len(table) // ID_SIZE) if table[w * ID_SIZE : (w + 1) * ID_SIZE] in bad]
        if windows:
            first = windows[0] * cs
            more = f" and {len(windows) - 1} more MiB-window(s)" if len(windows) > 1 else ""
            name = "the whole-disk filesystem" if part.number == 0 else f"partition {part.number}"
            where.append(f"{name}, bytes {first}-{first + cs - 1}{more}")
    if any(bytes.fromhex(a.blob) in bad for a in ctx.manifest.boot_areas):
        where.append("the boot areas")
    return f"snapshot {ctx.manifest.id[:8]} is damaged: " + "; ".join(where or ["chunks"])


# ----------------------------------------------------------------------------- preparing the disk


@dataclass
class PrepareTarget(Action):
    name: str
    created: str
    resume: bool
    kind = "prepare"

    def describe(self) -> str:
        if self.resume:
            return (f"Resume the incomplete restore on the disk: what is already written and intact is "
                    f"checked and kept; it stays marked “incomplete restore of {self.name}” until the end")
        return (f"Wipe the old partition table and mark the disk “incomplete restore of {self.name}” "
                "until the restore has finished")

    def run(self, ctx: RestoreRun) -> None:
        from recovery.repo.repository import now_iso

        mark = marker.IncompleteRestore(ctx.manifest.id, ctx.manifest.name, ctx.manifest.created, now_iso(),
                                        str(ctx.repo.config.get("id", "")))
        with Disk(ctx.target, writable=True) as disk:
            size = disk.size
            head = min(WIPE_HEAD, size)
            disk.write(bytes(head), 0, "wiping the old partition table")
            tail = max(size - WIPE_TAIL, head)
            if tail < size:
                disk.write(bytes(size - tail), tail, "wiping the old backup partition table")
            disk.write(marker.encode(mark), 0, "marking the restore as incomplete")
            disk.sync()
        _forget_partitions(ctx.target)


def _forget_partitions(target: str) -> None:
    """The kernel still shows the old partitions: let it drop them, so nothing mounts a stale one."""
    if not target.startswith("/dev/"):
        return
    from recovery.apply.table import reread_partitions

    try:
        reread_partitions(target, Layout(table="none", sector_size=512, disk_size=0))
    except DiskError as exc:
        log.info("the kernel kept the old partitions of %s (%s)", target, exc.message)


# ----------------------------------------------------------------------------- data


@dataclass
class WritePartition(Action):
    number: int
    fs: str | None
    label: str | None
    start: int
    size: int
    used_bytes: int
    source_start: int
    source_size: int
    kind = "write-partition"

    def describe(self) -> str:
        s = f"{part_words(self.number, self.fs, self.label)}: write {human_size(self.used_bytes)} of data"
        if self.number:
            s += f" at {human_size(self.start)}"
            if self.start != self.source_start:
                s += f" (moved from {human_size(self.source_start)})"
        if self.size < self.source_size:
            s += f", all that lies below its new end of {human_size(self.size)}"
        return s

    def run(self, ctx: RestoreRun) -> None:
        if self.number in ctx.unreadable:
            ctx.damaged[self.number] = [(0, self.source_size)]
            return
        limit = min(self.size, self.source_size)
        head = WHOLE_DISK_HEAD if self.number == 0 else 0     # written last, by WriteTable
        ctx.meter.partition = self.number
        with Disk(ctx.target, writable=True) as disk:
            write_windows(ctx, disk, self.number, self.start, lambda off, n: _clip(off, n, head, limit))
            disk.sync()


def _clip(off: int, n: int, low: int, high: int) -> tuple[int, int] | None:
    a, b = max(off, low), min(off + n, high)
    return (a, b - a) if b > a else None


_zero_lock = threading.Lock()


def write_windows(ctx: RestoreRun, disk: Disk, number: int, base: int, clip) -> None:
    """Write the used bytes of partition `number` that `clip(off, n)` keeps, at `base` on the
    disk. Resuming, a window whose bytes on the disk already hash to its chunk id is skipped;
    salvaging, a damaged chunk's bytes are written as zeros and remembered."""
    part = ctx.part(number)
    ranges, table = ctx.tables[number]
    cs = ctx.manifest.chunk_size

    def put(item):
        w, subs = item
        at = w * cs
        kept = [c for off, n in subs if (c := clip(at + off, n))]
        if not kept:
            return 0, 0
        whole = sum(n for _, n in kept) == sum(n for _, n in subs)
        bid = bytes(table[w * ID_SIZE : (w + 1) * ID_SIZE])
        if ctx.resume and whole and _already_there(disk, base, at, subs, window_length(w, part.size, cs), bid):
            return 0, sum(n for _, n in kept)
        if bid in ctx.bad:
            with _zero_lock:
                ctx.damaged.setdefault(number, []).extend(kept)
            for off, n in kept:
                disk.write(bytes(n), base + off, f"partition {number}")
            return sum(n for _, n in kept), 0
        try:
            raw = memoryview(ctx.repo.read_blob(bid))
        except DamageError as exc:   # proven a moment ago: the repository's drive is failing now
            raise DamageError(f"partition {number}: the chunk at byte {at} cannot be read any more "
                              f"({exc.message}); {INCOMPLETE}") from exc
        for off, n in kept:
            disk.write(raw[off - at : off - at + n], base + off, f"partition {number}")
        return sum(n for _, n in kept), 0

    since_flush = 0
    for wrote, skipped in ordered_map(put, used_windows(ranges, part.size, cs), ctx.cancel):
        ctx.written += wrote
        ctx.skipped += skipped
        ctx.meter.add(wrote + skipped)
        since_flush += wrote
        if since_flush >= FLUSH_EVERY:
            disk.flush_behind()
            since_flush = 0


def _already_there(disk: Disk, base: int, at: int, subs, length: int, bid: bytes) -> bool:
    buf = bytearray(length)
    view = memoryview(buf)
    try:
        for off, n in subs:
            disk.read_into(view[off : off + n], base + at + off, "checking what is already written")
    except DiskError:
        return False
    return blob_id(buf) == bid


# ----------------------------------------------------------------------------- filesystems


@dataclass
class ShrinkFilesystem(Action):
    number: int
    fs: str | None
    old_size: int
    new_size: int
    kind = "shrink-filesystem"

    def describe(self) -> str:
        return (f"{part_words(self.number, self.fs, None)}: shrink the filesystem from {human_size(self.old_size)} "
                f"to {human_size(self.new_size)} ({human_size(self.old_size - self.new_size)} less), moving the "
                "data that lay beyond the new end")

    def run(self, ctx: RestoreRun) -> None:
        from recovery.apply.shrink import shrink_filesystem
        from recovery.repo.reader import PartitionReader

        reader = PartitionReader(ctx.repo, ctx.part(self.number), ctx.manifest.chunk_size)
        ctx.meter.partition = self.number
        ctx.note(shrink_filesystem(ctx.target, ctx.entry(self.number), self.fs, self.old_size, reader.read,
                                   cancel=ctx.cancel))


@dataclass
class ResizeFilesystem(Action):
    number: int
    fs: str | None
    old_size: int
    new_size: int
    uuid: str | None
    label: str | None
    kind = "resize-filesystem"

    def describe(self) -> str:
        what = part_words(self.number, self.fs, None)
        if (self.fs or "").lower() == "swap":
            return f"{what}: re-create the swap over {human_size(self.new_size)} with the same UUID and label"
        return f"{what}: grow the filesystem from {human_size(self.old_size)} to {human_size(self.new_size)}"

    def run(self, ctx: RestoreRun) -> None:
        from recovery.apply.resize import grow_filesystem

        ctx.note(grow_filesystem(ctx.target, ctx.entry(self.number), self.fs, self.old_size, self.uuid,
                                 self.label, table_written=False))


# ----------------------------------------------------------------------------- finishing


@dataclass
class WriteTable(Action):
    table: str
    disk_size: int
    partitions: int
    boot_areas: int
    kind = "write-table"

    def describe(self) -> str:
        if self.table == "none":
            return ("Write the first bytes of the filesystem last, which ends the “incomplete restore” "
                    "mark: the disk is usable only once everything else is in place")
        name = {"gpt": "a GPT", "dos": "an MBR"}.get(self.table, self.table)
        backup = " (its backup copy at the end of the disk)" if self.table == "gpt" else ""
        boot = " and the boot code" if self.boot_areas else ""
        return (f"Write {name} partition table for the {human_size(self.disk_size)} disk{backup}{boot}, "
                "keeping the original disk and partition IDs; this comes last, so the disk is usable only "
                "once everything else is in place")

    def run(self, ctx: RestoreRun) -> None:
        if self.table == "none":
            with Disk(ctx.target, writable=True) as disk:
                write_windows(ctx, disk, 0, 0, lambda off, n: _clip(off, n, 0, WHOLE_DISK_HEAD))
                if marker.decode(disk.read(0, marker.SECTOR)):
                    disk.write(bytes(marker.SECTOR), 0, "ending the restore mark")   # sector 0 held no data
                disk.sync()
            return
        from recovery.apply.table import write_layout

        boot = []
        for area in ctx.manifest.boot_areas:
            bid = bytes.fromhex(area.blob)
            if bid in ctx.bad:
                ctx.note("the saved boot code is damaged: the disk may need its boot loader re-installed")
                continue
            boot.append((area.offset, ctx.repo.read_blob(bid)))
        if not any(off == 0 for off, _ in boot):
            boot.append((0, bytes(440)))     # no saved boot code: never leave the restore mark in it
        write_layout(ctx.target, ctx.after, boot)


@dataclass
class SetBootEntry(Action):
    kind = "boot-entry"

    def describe(self) -> str:
        return "Add a UEFI boot entry for the restored disk when the firmware has none"

    def run(self, ctx: RestoreRun) -> None:
        from recovery.apply.efiboot import ensure_boot_entry

        ctx.note(ensure_boot_entry(ctx.target, ctx.after))


# ----------------------------------------------------------------------------- salvage


@dataclass
class NameDamagedFiles(Action):
    kind = "name-damaged-files"

    def describe(self) -> str:
        return "If any piece turns out damaged: write zeros in its place and list the files it hit"

    def run(self, ctx: RestoreRun) -> None:
        from recovery.salvage import files_hit

        for number, ranges in sorted(ctx.damaged.items()):
            part = ctx.part(number)
            entry = ctx.entry(number)
            if number in ctx.unreadable:
                ctx.hits[number] = {"files": [], "metadata": ["the partition's chunk list is damaged: none of it "
                                                             "could be restored"],
                                  "unknown": [{"offset": 0, "length": part.size}]}
                continue
            merged = list(merge_ranges(ranges, part.size))
            ctx.hits[number] = files_hit(ctx.target, entry.start, min(entry.size, part.size), part.fs,
                                         merged).to_json()
            ctx.hits[number]["ranges"] = [list(r) for r in merged]
