"""A snapshot manifest's JSON as docs/FORMAT.md gives it: the exact keys, a round trip, the
optional location tables, the blob ids it names, and the packed used ranges (pure, no disks)."""

from __future__ import annotations

import json

from recovery.model.layout import Layout, PartitionEntry
from recovery.repo.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    BootArea,
    Manifest,
    PartitionImage,
    decode_ranges,
    encode_ranges,
)


def _manifest(locations=None) -> Manifest:
    layout = Layout("gpt", 512, 1 << 30, "DISK-GUID", 34, 2097118,
                    (PartitionEntry(1, 1 << 20, 1 << 28, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "P-GUID", "root"),))
    part = PartitionImage(1, 1 << 20, 1 << 28, "ext4", "root", "fs-uuid", 4096, False, 12345,
                          warnings=["w"], ranges=["aa" * 32], chunks=["bb" * 32, "cc" * 32], windows=7)
    return Manifest("pc", "2026-11-30T19:05:00Z", "lifeboat 1", 4 << 20, {"model": "disk"}, layout,
                    [BootArea(0, 1 << 20, "dd" * 32)], [part], {"stored": 9}, id="", locations=locations)


def test_manifest_json_has_exactly_the_documented_fields_and_round_trips():
    m = _manifest()
    data = m.to_json()
    assert (MANIFEST_FORMAT, MANIFEST_VERSION) == ("lifeboat-snapshot", 1)
    assert list(data) == ["format", "version", "name", "created", "tool", "chunk_size", "source",
                          "layout", "boot_areas", "partitions", "stats"]
    assert data["format"] == "lifeboat-snapshot" and data["version"] == 1
    assert data["boot_areas"] == [{"offset": 0, "size": 1 << 20, "blob": "dd" * 32}]
    assert data["partitions"][0] == {
        "number": 1, "start": 1 << 20, "size": 1 << 28, "fs": "ext4", "label": "root", "uuid": "fs-uuid",
        "block_size": 4096, "whole": False, "used_bytes": 12345, "warnings": ["w"], "ranges": ["aa" * 32],
        "chunks": ["bb" * 32, "cc" * 32], "windows": 7}
    back = Manifest.from_json(json.loads(json.dumps(data)), "1a2b")
    assert back.id == "1a2b"
    back.id = ""
    assert back == m
    assert back.locations is None and back.stats == {"stored": 9}


def test_a_manifest_without_stats_reads_as_empty_stats_and_a_new_one_has_no_locations():
    data = _manifest().to_json()
    del data["stats"]
    m = Manifest.from_json(data, "x")
    assert m.stats == {} and m.locations is None
    bare = PartitionImage(1, 0, 1, "ext4", None, None, 4096, True, 0)
    assert (bare.warnings, bare.ranges, bare.chunks, bare.windows) == ([], [], [], 0)
    made = Manifest("pc", "now", "t", 4096, {}, Layout("none", 512, 4096), [], [bare])
    assert (made.stats, made.id, made.locations) == ({}, "", None)
    assert "locations" not in made.to_json() and made.to_json()["stats"] == {}


def test_locations_are_kept_only_when_present_and_their_pieces_are_named():
    locations = {"blobs": {"aa" * 32: ["ee" * 32, 0, 10, 10, 1, 0]},
                 "partitions": {"1": ["11" * 32, "22" * 32], "2": "not a list", "3": [5, "33" * 32]}}
    m = _manifest(locations)
    data = m.to_json()
    assert data["locations"] == locations and list(data)[-1] == "locations"
    assert Manifest.from_json(data, "x").locations == locations
    assert m.location_blob_ids() == ["11" * 32, "22" * 32, "33" * 32]
    assert m.all_blob_ids() == {"dd" * 32, "aa" * 32, "bb" * 32, "cc" * 32, "11" * 32, "22" * 32, "33" * 32}
    assert _manifest().all_blob_ids() == {"dd" * 32, "aa" * 32, "bb" * 32, "cc" * 32}
    # a forged or odd locations object names nothing rather than failing
    assert _manifest({"partitions": ["11" * 32]}).location_blob_ids() == []
    assert _manifest(["partitions"]).location_blob_ids() == []
    assert _manifest({}).location_blob_ids() == []


def test_used_ranges_pack_as_little_endian_u64_pairs():
    ranges = [(0, 4096), (1 << 33, 1 << 20)]
    packed = encode_ranges(ranges)
    assert packed == (b"\x00" * 8 + (4096).to_bytes(8, "little")
                      + (1 << 33).to_bytes(8, "little") + (1 << 20).to_bytes(8, "little"))
    assert decode_ranges(packed) == ranges
    assert encode_ranges([]) == b"" and decode_ranges(b"") == []
