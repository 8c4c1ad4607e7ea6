"""A restore plan's steps as typed actions. Each says what it will do (a sentence for a person,
a dict for --json) and does it; dry-run, the TUI, the live console and apply all walk the same
list, in this order:

    ProveSource        every piece of the source (a snapshot's chunks) read and checked before
                       the first byte is written
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

from recovery.diskio import INCOMPLETE, Disk
from recovery.errors import DamageError, DiskError
from recovery.events import CancelToken, EventSink, Meter, Warning_
from recovery.fs import merge_ranges
from recovery.model.layout import Layout, PartitionEntry
from recovery.repo.format import blob_id
from recovery.sources.base import Damage as SourceDamage, Piece, Source
from recovery.storage.base import UnreachableError
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

    source: Source
    target: str
    after: Layout
    sink: EventSink
    cancel: CancelToken
    meter: Meter
    resume: bool = False
    salvage: bool = False
    damage: list[SourceDamage] = field(default_factory=list)   # what the proof found (salvage goes on)
    damaged: dict[int, list[tuple[int, int]]] = field(default_factory=dict)   # partition -> byte ranges zeroed
    hits: dict[int, dict] = field(default_factory=dict)   # partition -> files and metadata hit by damage
    written: int = 0
    skipped: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def unreadable(self) -> frozenset[int]:
        """Partitions nothing of which could be read (salvage writes none of them)."""
        return self.source.unreadable

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
class ProveSource(Action):
    what: str              # "snapshot", "VHDX image", ...
    pieces: int | None     # how many pieces prove() reads, when the source counts them
    stored_bytes: int
    kind = "prove"

    def describe(self) -> str:
        if self.pieces is not None:
            return (f"Read and check all {self.pieces} pieces of the {self.what} ({human_size(self.stored_bytes)} "
                    "stored) before anything is written")
        return (f"Read and check the {self.what} ({human_size(self.stored_bytes)}) before anything is written")

    def run(self, ctx: RestoreRun) -> None:
        found = ctx.source.prove_events(ctx.sink, ctx.cancel)
        if not found:
            return
        words = damage_message(ctx.source, found)
        if not ctx.source.salvageable:
            raise DamageError(words + "; nothing was written to the target")
        if not ctx.salvage:
            raise DamageError(words + "; nothing was written to the target. "
                              "`lifeboat restore --salvage` writes everything that is readable")
        ctx.damage = found
        ctx.note(words + "; salvaging: damaged ranges are written as zeros")


def damage_message(source: Source, found: list[SourceDamage]) -> str:
    """The source and where its damage sits, in words: "snapshot 1a2b3c4d is damaged: partition 2, ..."."""
    return f"{source.title()} is damaged: " + "; ".join([d.why for d in found] or ["pieces"])


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

        src = ctx.source
        mark = marker.IncompleteRestore(src.id, src.name, src.created, now_iso(), src.repository_id)
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
    disk, piece by piece on a thread pool (the source's pieces: a snapshot's chunk windows).
    Resuming, a piece whose bytes are already on the disk is skipped (checked against its digest
    when the source knows one, else against the piece's bytes); salvaging, a damaged piece is
    written as zeros and remembered."""

    def kept_of(piece: Piece) -> tuple[list, bool]:
        """The ranges of the piece this partition keeps, and whether that is all of them."""
        kept = [c for off, n in piece.subs if (c := clip(piece.offset + off, n))]
        return kept, sum(n for _, n in kept) == sum(n for _, n in piece.subs)

    def on_target(piece: Piece) -> bool:
        """Resuming: the piece is on the disk already, checked against its digest before
        anything of it is fetched."""
        kept, whole = kept_of(piece)
        return bool(kept) and whole and piece.digest is not None and \
            _already_there(disk, base, piece.offset, piece.subs, piece.length, piece.digest,
                           piece.digest_of or blob_id)

    def put(piece: Piece):
        at, subs = piece.offset, piece.subs
        kept, whole = kept_of(piece)
        if not kept:
            return 0, 0
        # A source that read ahead checked the piece already (and fetched nothing of it when
        # it is there); otherwise the check is made here, still before fetching.
        if piece.present or (ctx.resume and piece.present is None and on_target(piece)):
            return 0, sum(n for _, n in kept)
        if piece.damaged:
            with _zero_lock:
                ctx.damaged.setdefault(number, []).extend(kept)
            for off, n in kept:
                disk.write(bytes(n), base + off, f"partition {number}")
            return sum(n for _, n in kept), 0
        try:
            raw = memoryview(piece.fetch())
        except DamageError as exc:   # proven a moment ago: the source's drive is failing now
            raise DamageError(f"{exc.message}; {INCOMPLETE}") from exc
        except UnreachableError as exc:   # the repository's server went away mid-write
            raise UnreachableError(f"{exc.head}; {INCOMPLETE} once the server is back", exc.head) from exc
        if ctx.resume and whole and piece.digest is None and _same_there(disk, base, at, subs, raw):
            return 0, sum(n for _, n in kept)
        for off, n in kept:
            disk.write(raw[off - at : off - at + n], base + off, f"partition {number}")
        return sum(n for _, n in kept), 0

    since_flush = 0
    for wrote, skipped in ordered_map(put, ctx.source.pieces(number, on_target if ctx.resume else None), ctx.cancel,
                                         cores=ctx.source.fetchers):
        ctx.written += wrote
        ctx.skipped += skipped
        ctx.meter.add(wrote + skipped)
        since_flush += wrote
        if since_flush >= FLUSH_EVERY:
            disk.flush_behind()
            since_flush = 0


def _already_there(disk: Disk, base: int, at: int, subs, length: int, bid: bytes, digest_of) -> bool:
    """The piece is on the disk already: its bytes there hash to its id, by the source's own
    id function (an encrypted repository's ids are keyed)."""
    buf = bytearray(length)
    view = memoryview(buf)
    try:
        for off, n in subs:
            disk.read_into(view[off : off + n], base + at + off, "checking what is already written")
    except DiskError:
        return False
    return digest_of(buf) == bid


def _same_there(disk: Disk, base: int, at: int, subs, raw: memoryview) -> bool:
    """The piece's used bytes are on the disk already (a source without digests: compared by
    the hash of what is there and of what would be written)."""
    for off, n in subs:
        buf = bytearray(n)
        try:
            disk.read_into(memoryview(buf), base + at + off, "checking what is already written")
        except DiskError:
            return False
        if blob_id(buf) != blob_id(raw[off : off + n]):
            return False
    return True


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

        reader = ctx.source.reader(self.number)
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

        if any(d.partition is None for d in ctx.damage):
            ctx.note("the saved boot code is damaged: the disk may need its boot loader re-installed")
        boot = ctx.source.boot_areas()      # without the pieces proven damaged
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
            part = ctx.source.partition(number)
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
