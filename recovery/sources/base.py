"""What restore, verify, import and browsing need from anything that holds a saved disk.

A *source* is one saved disk: a Lifeboat snapshot in a repository, or an image another tool
made (a Clonezilla folder, a partclone file, a VHDX, a raw dd image). It gives

    source.layout                   the saved disk's partition table (recovery.model.layout)
    source.partitions               what each partition holds (SourcePartition)
    source.boot_areas()             [(disk offset, bytes)]: MBR code, GRUB's gap, ...
    source.reader(number)           random access to one partition's bytes (PartitionData)
    source.extents(number)          the partition's used bytes in disk order, for writing
    source.prove(on_progress)       every piece read and checked before a target is touched

so a restore plans and writes from any of them the same way. Partition number 0 is a disk
with no partition table (a whole-disk filesystem), as in Layout.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

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


class Source(ABC):
    kind: str                   # what it is, for people: "Lifeboat snapshot", "Clonezilla image", ...
    id: str                     # stable identity: a snapshot id, or a digest of the image's files
    name: str                   # the computer or image name
    created: str                # ISO 8601 date the disk was saved
    layout: Layout
    partitions: list[SourcePartition]

    def partition(self, number: int) -> SourcePartition:
        return next(p for p in self.partitions if p.number == number)

    @abstractmethod
    def boot_areas(self) -> list[tuple[int, bytes]]:
        """(disk offset, bytes) of what lies outside the partitions and must be restored:
        the MBR's boot code, the gap GRUB uses, hidden data Clonezilla saved after the MBR."""

    @abstractmethod
    def reader(self, number: int) -> PartitionData:
        """Random access to partition `number` (browsing, shrinking, salvage)."""

    def extents(self, number: int) -> Iterator[tuple[int, bytes]]:
        """(offset in the partition, bytes) covering its used ranges in ascending order: the
        sequential path a restore writes from. Sources that stream (partclone, compressed
        raw) or decode in parallel (a repository) override it."""
        reader = self.reader(number)
        for offset, length in reader.used_ranges():
            end = offset + length
            while offset < end:
                n = min(EXTENT_BYTES, end - offset)
                yield offset, reader.read(offset, n)
                offset += n

    @abstractmethod
    def prove(self, on_progress: Callable[[int, int], None] | None = None) -> list[Damage]:
        """Read and check every piece a restore needs (hashes, checksums, completeness),
        reporting (done, total) bytes; the damage found, empty when the source is intact."""

    def describe(self) -> list[str]:
        """Plain lines for `lifeboat inspect`: what it is, its disk and partitions."""
        return [f"{self.kind} {self.name}, saved {self.created}"]

    def close(self) -> None:
        """Let go of files, mounts and helper processes the source opened."""

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
