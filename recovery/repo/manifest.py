"""Snapshot manifests: the JSON that ties a layout, boot areas and chunk tables together."""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass, field

from recovery.model.layout import Layout

MANIFEST_FORMAT = "lifeboat-snapshot"
MANIFEST_VERSION = 1
RANGE = struct.Struct("<QQ")


@dataclass
class PartitionImage:
    number: int
    start: int
    size: int
    fs: str
    label: str | None
    uuid: str | None
    block_size: int
    whole: bool
    used_bytes: int
    warnings: list[str] = field(default_factory=list)
    ranges: list[str] = field(default_factory=list)   # meta blob ids (hex): packed (offset, length) u64 pairs
    chunks: list[str] = field(default_factory=list)   # meta blob ids (hex): one 32-byte id per window
    windows: int = 0                                   # number of chunk-table entries


@dataclass
class BootArea:
    offset: int
    size: int
    blob: str


@dataclass
class Manifest:
    name: str
    created: str
    tool: str
    chunk_size: int
    source: dict
    layout: Layout
    boot_areas: list[BootArea]
    partitions: list[PartitionImage]
    stats: dict = field(default_factory=dict)
    id: str = ""
    # Where its blobs lie (recovery/repo/locations.py); None in snapshots made before, and
    # left out of the JSON then, so those manifests stay byte for byte what they were.
    locations: dict | None = None

    def to_json(self) -> dict:
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "name": self.name,
            "created": self.created,
            "tool": self.tool,
            "chunk_size": self.chunk_size,
            "source": self.source,
            "layout": self.layout.to_json(),
            "boot_areas": [asdict(b) for b in self.boot_areas],
            "partitions": [asdict(p) for p in self.partitions],
            "stats": self.stats,
        } | ({"locations": self.locations} if self.locations is not None else {})

    @classmethod
    def from_json(cls, data: dict, snapshot_id: str) -> "Manifest":
        return cls(
            name=data["name"],
            created=data["created"],
            tool=data["tool"],
            chunk_size=data["chunk_size"],
            source=data["source"],
            layout=Layout.from_json(data["layout"]),
            boot_areas=[BootArea(**b) for b in data["boot_areas"]],
            partitions=[PartitionImage(**p) for p in data["partitions"]],
            stats=data.get("stats", {}),
            id=snapshot_id,
            locations=data.get("locations"),
        )

    def all_blob_ids(self) -> set[str]:
        """Meta blobs named directly by the manifest (data chunk ids live inside them)."""
        ids = {b.blob for b in self.boot_areas}
        for p in self.partitions:
            ids.update(p.ranges)
            ids.update(p.chunks)
        return ids | set(self.location_blob_ids())

    def location_blob_ids(self) -> list[str]:
        """The pieces of its location tables (meta blob ids, hex); none when it has none."""
        parts = self.locations.get("partitions") if isinstance(self.locations, dict) else None
        if not isinstance(parts, dict):
            return []
        return [i for ids in parts.values() if isinstance(ids, list) for i in ids if isinstance(i, str)]


def encode_ranges(ranges) -> bytes:
    return b"".join(RANGE.pack(off, length) for off, length in ranges)


def decode_ranges(data: bytes) -> list[tuple[int, int]]:
    return [tuple(r) for r in RANGE.iter_unpack(data)]
