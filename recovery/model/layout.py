"""A disk's partition layout as observed (immutable), in bytes, plus the identities booting needs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class PartitionEntry:
    number: int                 # 1-based as the kernel names it; 0 = the whole disk (no table)
    start: int                  # byte offset on the disk
    size: int                   # bytes
    type: str                   # GPT type GUID (upper case) or MBR id as hex ("83", "7", "ef")
    uuid: str | None = None     # GPT partition GUID (upper case); None on MBR
    name: str | None = None     # GPT partition name
    attrs: str | None = None    # GPT attribute bits in sfdisk's syntax, e.g. "RequiredPartition GUID:63"
    bootable: bool = False      # MBR active flag
    kind: str = "primary"       # "primary", "extended", "logical"

    @property
    def end(self) -> int:
        return self.start + self.size

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "PartitionEntry":
        return cls(**data)


@dataclass(frozen=True)
class Layout:
    table: str                  # "gpt", "dos" or "none"
    sector_size: int            # logical sector size in bytes
    disk_size: int              # bytes
    disk_id: str | None = None  # GPT disk GUID or MBR signature ("0x1234abcd")
    first_lba: int | None = None  # GPT usable area, in sectors of sector_size
    last_lba: int | None = None
    partitions: tuple[PartitionEntry, ...] = field(default_factory=tuple)

    def data_partitions(self) -> tuple[PartitionEntry, ...]:
        """Partitions that hold data (an MBR extended container holds only EBRs)."""
        return tuple(p for p in self.partitions if p.kind != "extended")

    def with_partitions(self, parts) -> "Layout":
        return replace(self, partitions=tuple(parts))

    def to_json(self) -> dict:
        d = asdict(self)
        d["partitions"] = [p.to_json() for p in self.partitions]
        return d

    @classmethod
    def from_json(cls, data: dict) -> "Layout":
        data = dict(data)
        parts = tuple(PartitionEntry.from_json(p) for p in data.pop("partitions", []))
        return cls(partitions=parts, **data)
