"""What restore, verify, import and browsing need from anything that holds a saved disk.

A *source* is one saved disk: a Lifeboat snapshot in a repository, or an image another tool
made (a Clonezilla folder, a partclone file, a VHDX, a raw dd image). It gives

    source.layout                   the saved disk's partition table (recovery.model.layout)
    source.partitions               what each partition holds (SourcePartition)
    source.boot_areas()             [(disk offset, bytes)]: MBR code, GRUB's gap, ...
    source.reader(number)           random access to one partition's bytes (PartitionData)
    source.extents(number)          the partition's used bytes in disk order, for writing
    source.prove(on_progress)       every piece read and checked before a target is touched
    source.pieces(number)           extents() as pieces a restore fetches and writes in parallel

so a restore plans and writes from any of them the same way. Partition number 0 is a disk
with no partition table (a whole-disk filesystem), as in Layout.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import nullcontext
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import ContextManager, Protocol

from recovery.events import CancelToken, EventSink, Meter
from recovery.model.layout import Layout

EXTENT_BYTES = 4 * 1024 * 1024     # the default extents() piece: big reads, bounded memory


class PartitionData(Protocol):
    """One partition's bytes as they were saved. Unused ranges read as zeros.
    Safe to call from several threads at once (a FUSE server, a browser's workers)."""

    size: int

    def read(self, offset: int, length: int) -> bytes:
        """`length` bytes at `offset` (fewer only past the end); raises DamageError for
        bytes the source holds but cannot give back intact."""

    def used_ranges(self) -> list[tuple[int, int]]:
        """(offset, length) of every byte the filesystem uses, sorted; everything else is
        free space. A partition imaged whole reports one range covering all of it."""


def used_steps(data: PartitionData) -> Iterator[tuple[int, int]]:
    """(offset, length) covering `data`'s used ranges in order, no step longer than
    EXTENT_BYTES: reads big enough to be fast, small enough to bound memory."""
    for offset, length in data.used_ranges():
        end = offset + length
        while offset < end:
            n = min(EXTENT_BYTES, end - offset)
            yield offset, n
            offset += n


@dataclass(frozen=True)
class SourcePartition:
    number: int                 # as in the source's Layout; 0 = whole disk without a table
    start: int                  # byte offset on the saved disk
    size: int                   # bytes
    fs: str                     # as recovery.fs names it: "ext4", "vfat", "ntfs", "swap", ... or ""
    label: str | None
    uuid: str | None            # the filesystem's UUID / serial, as recovery.fs reports it
    used_bytes: int             # bytes a restore writes for it
    whole: bool                 # no used-block map: every byte is copied


@dataclass(frozen=True)
class Damage:
    """A piece of a source that cannot be read back intact."""
    partition: int | None       # None: not inside one partition (the table, a boot area)
    offset: int                 # byte range inside the partition (or on the disk)
    length: int
    why: str                    # plain words naming the piece: "piece sda2.ext4-ptcl-img.zst.ab is missing"


@dataclass(frozen=True)
class Piece:
    """A stretch of a partition a restore writes as one unit, fetched in a worker thread.
    `subs` are the used ranges inside it (relative to `offset`); `fetch()` gives `length`
    bytes whose unused ranges are zero. `digest`, when the source knows it without reading
    (a snapshot's chunk id), lets a resumed restore check the target without fetching;
    `damaged` pieces (salvage) are written as zeros. `present` is what a source that was
    given an `on_target` check found before fetching anything: True when the piece is on the
    target already (nothing of it was read), False when not; None when it did not check."""
    offset: int
    length: int
    subs: tuple[tuple[int, int], ...]
    fetch: Callable[[], bytes]
    digest: bytes | None = None
    damaged: bool = False
    digest_of: Callable[[bytes], bytes] | None = None   # how `digest` is computed from the bytes
    present: bool | None = None


class Source(ABC):
    kind: str                   # what it is, for people: "Lifeboat snapshot", "Clonezilla image", ...
    id: str                     # stable identity: a snapshot id, or a digest of the image's files
    name: str                   # the computer or image name
    created: str                # ISO 8601 date the disk was saved
    layout: Layout
    partitions: list[SourcePartition]
    repository_id: str = ""     # the repository it lives in, if any (a restore mark names it)
    location: str = ""          # the file or folder it is read from (a restore must not write there)
    tool: str = ""              # the program that made it, when known ("Clonezilla 3.1.2", "qemu-img")
    salvageable: bool = False   # its pieces() mark damaged pieces, so a restore can write the rest
    unreadable: frozenset[int] = frozenset()   # partitions nothing of which can be read (salvage)
    fetchers: int | None = None  # pieces a restore fetches at once; None: one per core (a network
                                 # repository wants more in flight, to hide its round trips)

    def partition(self, number: int) -> SourcePartition:
        return next(p for p in self.partitions if p.number == number)

    @abstractmethod
    def boot_areas(self) -> list[tuple[int, bytes]]:
        """(disk offset, bytes) of what lies outside the partitions and must be restored:
        the MBR's boot code, the gap GRUB uses, hidden data Clonezilla saved after the MBR."""

    def boot_area_count(self) -> int:
        """How many boot areas boot_areas() gives (a plan counts them without reading them)."""
        return len(self.boot_areas())

    @abstractmethod
    def reader(self, number: int) -> PartitionData:
        """Random access to partition `number` (browsing, shrinking, salvage)."""

    def extents(self, number: int) -> Iterator[tuple[int, bytes]]:
        """(offset in the partition, bytes) covering its used ranges in ascending order: the
        sequential path a restore writes from. Sources that stream (partclone, compressed
        raw) or decode in parallel (a repository) override it."""
        reader = self.reader(number)
        for offset, n in used_steps(reader):
            yield offset, reader.read(offset, n)

    def pieces(self, number: int, on_target: Callable[[Piece], bool] | None = None) -> Iterator[Piece]:
        """extents() as pieces for a restore to write; sources that can fetch pieces in
        parallel or name their digests (a repository) override it. `on_target(piece)` (a
        resumed restore: the piece is on the target already) lets a source that reads ahead
        leave those pieces out of its reads; others ignore it, their fetch() being lazy."""
        for offset, data in self.extents(number):
            yield Piece(offset, len(data), ((0, len(data)),), lambda data=data: data)

    def proof_size(self) -> tuple[int | None, int]:
        """(pieces, bytes) prove() reads, for the plan's words; pieces None when the source
        is not made of countable pieces."""
        return None, sum(p.used_bytes for p in self.partitions)

    def title(self) -> str:
        """How messages name it: "snapshot 1a2b3c4d", "VHDX image pc.vhdx"."""
        return f"{self.kind} {self.name}"

    @abstractmethod
    def prove(self, on_progress: Callable[[int, int], None] | None = None) -> list[Damage]:
        """Read and check every piece a restore needs (hashes, checksums, completeness),
        reporting (done, total) bytes; the damage found, empty when the source is intact."""

    def prove_events(self, sink: EventSink, cancel: CancelToken) -> list[Damage]:
        """prove() reporting "proof" Progress events to `sink`, stopped by `cancel` (checked at
        each progress report). A source that proves on every core overrides it."""
        meter: Meter | None = None

        def progress(done: int, total: int) -> None:
            nonlocal meter
            cancel.check()
            if meter is None:
                meter = Meter("proof", total, sink)
                meter.add(0, force=True)
            meter.add(done - meter.done)

        found = self.prove(progress)
        if meter is not None:
            meter.finish()
        return found

    def on_disk(self) -> str | None:
        """The file or folder on this machine it is read from, which a restore must not write
        over: its location, unless it says otherwise (a network repository has none here)."""
        return self.location or None

    def to_json(self) -> dict:
        """What `lifeboat inspect --json` shows of it."""
        return {
            "kind": self.kind, "location": self.location, "name": self.name, "created": self.created,
            "id": self.id, "tool": self.tool or None, "layout": self.layout.to_json(),
            "partitions": [asdict(p) for p in self.partitions],
        }

    def describe(self) -> list[str]:
        """Plain lines for `lifeboat inspect`: what it is, its disk and partitions."""
        return [f"{self.kind} {self.name}, saved {self.created}"]

    def refresh(self) -> None:
        """Re-read what may have changed since planning (a repository's index)."""

    def reading(self, purpose: str) -> ContextManager:
        """Held while the data is read (`purpose`: "restore", "verify"): what the source needs
        so that nothing it reads is deleted meanwhile (a repository's shared lock)."""
        return nullcontext()

    def close(self) -> None:
        """Let go of files, mounts and helper processes the source opened."""

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
