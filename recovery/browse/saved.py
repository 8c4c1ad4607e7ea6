"""A saved disk to browse, a Lifeboat snapshot or an image another tool made: its partitions
described as any source describes them (recovery.sources.base.SourcePartition) and a
PartitionData reader per partition. The browse code uses only this surface."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from recovery.errors import LifeboatError, NotFoundError, UsageError
from recovery.fs import ntfs
from recovery.repo.locations import SnapshotBlobs
from recovery.repo.reader import PartitionReader
from recovery.repo.repository import Repository
from recovery.sources.base import PartitionData, SourcePartition
from recovery.units import human_size

# Filesystems Lifeboat mounts read-only for browsing (through recovery.host.mounts).
BROWSABLE = {"ext2", "ext3", "ext4", "vfat", "ntfs", "exfat", "xfs", "btrfs"}
FS_NAMES = {"vfat": "FAT", "ntfs": "NTFS", "exfat": "exFAT"}


@dataclass
class SavedDisk:
    """What browsing needs of a saved disk, a Lifeboat snapshot or an image another tool made:
    id, name, date, partitions, and a reader of each."""
    id: str
    name: str
    created: str
    partitions: list[SourcePartition]
    _reader: Callable[[int], PartitionData]
    _close: Callable[[], None]
    source: dict = field(default_factory=dict)   # the saved disk as its maker described it: path, serial, model
    kind: str = "snapshot"                       # "snapshot", or what an image is ("Clonezilla image", ...)
    _letters: dict | None = None

    def title(self) -> str:
        """A few words naming it for people: "snapshot 1a2b3c4d of office-pc"."""
        if self.kind == "snapshot":
            return f"snapshot {self.id[:8]} of {self.name}"
        return f"{self.kind} {self.name}"

    def reader(self, number: int) -> PartitionData:
        return self._reader(number)

    def close(self) -> None:
        self._close()

    def drive_letters(self) -> dict[int, str]:
        """Partition number -> the letter Windows gave it, where that is known cheaply: `C:`
        for the one NTFS partition holding Windows/System32 (Windows always runs from C:). The
        other letters live in Windows' registry and are not guessed. Read once, on first ask:
        a few chunks of each NTFS partition; a partition that cannot be read gets no letter."""
        if self._letters is None:
            holding = []
            for p in self.partitions:
                if p.fs == "ntfs":
                    try:
                        if ntfs.holds_windows(self.reader(p.number).read, p.size):
                            holding.append(p.number)
                    except LifeboatError:
                        pass
            self._letters = {holding[0]: "C:"} if len(holding) == 1 else {}
        return self._letters


def open_snapshot(repo: Repository, ref: str, name: str | None = None) -> SavedDisk:
    """A snapshot of `repo` to browse; closing it closes the repository."""
    sid = repo.resolve(ref, name)
    m = repo.load_manifest(sid)
    parts = [SourcePartition(number=p.number, start=p.start, size=p.size, fs=p.fs or "", label=p.label,
                             uuid=p.uuid, used_bytes=p.used_bytes, whole=p.whole) for p in m.partitions]
    images = {p.number: p for p in m.partitions}
    # Its blobs through the places the snapshot recorded: no index file is read to browse it.
    blobs = SnapshotBlobs(repo, m)
    return SavedDisk(sid, m.name, m.created, parts,
                     lambda n: PartitionReader(repo, images[n], m.chunk_size, blobs=blobs),
                     repo.close, dict(m.source or {}))


def open_image(path: str) -> SavedDisk:
    """An image another tool made (anything `lifeboat inspect` reads) to browse, read in place."""
    from recovery.sources.open import open_source

    source = open_source(path)
    return SavedDisk(source.id, source.name, source.created, list(source.partitions), source.reader, source.close,
                     {"path": source.location}, kind=source.kind)


def browsable(part: SourcePartition) -> bool:
    return part.fs in BROWSABLE


def fs_name(fs: str) -> str:
    return FS_NAMES.get(fs, fs or "unknown")


def shown_name(part: SourcePartition, letter: str | None = None) -> str:
    """`Windows (C:)`, `Windows`, `Partition 3`: the partition's label, and its drive letter when known."""
    label = part.label or ("Whole disk" if part.number == 0 else f"Partition {part.number}")
    return f"{label} ({letter})" if letter else label


def describe(part: SourcePartition, letter: str | None = None) -> str:
    """`Windows (C:) NTFS 238.0 GiB`: what a person recognises a partition by."""
    return f"{shown_name(part, letter)} {fs_name(part.fs)} {human_size(part.size)}"


def entry_name(part: SourcePartition) -> str:
    """The name of the partition's folder in a mounted snapshot (its image adds .img)."""
    return "disk" if part.number == 0 else f"p{part.number}"


def find_partition(disk: SavedDisk, spec: str) -> SourcePartition:
    """A partition by number (`2`, `p2`) or by label (case-insensitive)."""
    s = spec.strip()
    num = s[1:] if s.lower().startswith("p") and s[1:].isdigit() else s
    for p in disk.partitions:
        if num.isdigit() and p.number == int(num):
            return p
    for p in disk.partitions:
        if p.label and p.label.lower() == s.lower():
            return p
    have = ", ".join(f"{p.number} ({p.label or fs_name(p.fs)})" for p in disk.partitions)
    raise NotFoundError(f"snapshot {disk.id[:8]} has no partition {spec!r} (it has {have})")


def split_ref(ref: str) -> tuple[str, str]:
    """`2:/Users/ann` -> ("2", "/Users/ann"); `2` -> ("2", "/")."""
    part, sep, path = ref.partition(":")
    if not part or "/" in part:
        raise UsageError(f"{ref!r}: name a partition first, as PARTITION:PATH (e.g. 2:/home)")
    return part, "/" + path.strip("/") if sep else "/"
