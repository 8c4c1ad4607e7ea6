"""Location tables at their edges (recovery/repo/locations.py): the 56-byte entry, a place as
the manifest gives it, tables cut in pieces, and how a reader of one snapshot treats places
that are missing, malformed, too large or stale (it falls back to the index, saying why).
Blobs are stored in a real repository folder; no disk image is needed."""

from __future__ import annotations

import os

import pytest

from recovery.errors import DamageError
from recovery.repo import locations as L
from recovery.repo.format import KIND_DATA, NO_DATA, blob_id
from recovery.repo.index import Location
from recovery.repo.locations import (
    LOCATION,
    NOWHERE,
    LocationCheck,
    SnapshotBlobs,
    decode_location,
    encode_location,
    location_from_json,
    location_json,
    location_pieces,
    record_locations,
)
from recovery.repo.manifest import BootArea, Manifest, PartitionImage
from recovery.repo.repository import Repository
from recovery.model.layout import Layout

PACK = "ab" * 32


def test_an_entry_is_56_bytes_in_the_documented_order():
    loc = Location(PACK, 1 << 40, 70000, 80000, 1, 2)
    entry = encode_location(loc)
    assert LOCATION.size == 56 and NOWHERE == bytes(56)
    assert entry == (bytes.fromhex(PACK) + (1 << 40).to_bytes(8, "little") + (70000).to_bytes(4, "little")
                     + (80000).to_bytes(4, "little") + bytes([1, 2]) + bytes(6))
    assert decode_location(entry) == loc and decode_location(NOWHERE) is None
    assert L.PIECE_WINDOWS == 16384 and L.MAX_STORED == 1 << 30


def test_a_place_in_the_manifest_is_taken_only_when_well_formed():
    loc = Location(PACK, 8, 10, 20, 1, 0)
    assert location_json(loc) == [PACK, 8, 10, 20, 1, 0]
    assert location_from_json([PACK, 8, 10, 20, 1, 0]) == loc
    assert location_from_json([PACK, 0, 0, 0, 0, 0]) == Location(PACK, 0, 0, 0, 0, 0)
    for bad in [None, 5, "x", [PACK, 8, 10, 20, 1], [PACK, 8, 10, 20, 1, 0, 0], ["ab" * 31, 8, 10, 20, 1, 0],
                ["ab" * 33, 8, 10, 20, 1, 0], ["zz" * 32, 8, 10, 20, 1, 0], [5, 8, 10, 20, 1, 0],
                [PACK, -1, 10, 20, 1, 0], [PACK, 8, -1, 20, 1, 0], [PACK, 8, 10, -1, 1, 0],
                [PACK, "8", 10, 20, 1, 0], [PACK, 8, 10, 20, "one", 0]]:
        assert location_from_json(bad) is None, bad


@pytest.fixture
def repo(tmp_path):
    r = Repository.init(tmp_path / "r")
    yield r
    r.close()


def _store(repo, blobs):
    ids = []
    with repo.writer() as session:
        for raw in blobs:
            bid = blob_id(raw)
            stored, codec = session.compressor.compress(raw)
            session.add(bid, stored, len(raw), KIND_DATA, codec)
            ids.append(bid)
    repo.reload_index()
    return ids


def test_a_table_is_cut_in_pieces_with_nowhere_for_empty_windows(repo, monkeypatch):
    ids = _store(repo, [os.urandom(3000) for _ in range(4)])
    table = ids[0] + NO_DATA + ids[1] + ids[2] + ids[3]
    monkeypatch.setattr(L, "PIECE_WINDOWS", 2)
    pieces = location_pieces(table, repo.index)
    enc = [encode_location(repo.index.get(i)) for i in ids]
    assert pieces == [enc[0] + NOWHERE, enc[1] + enc[2], enc[3]]
    assert location_pieces(b"", repo.index) == []
    monkeypatch.setattr(L, "PIECE_WINDOWS", 5)
    assert location_pieces(table, repo.index) == [enc[0] + NOWHERE + enc[1] + enc[2] + enc[3]]
    unknown = blob_id(b"never stored")
    with pytest.raises(DamageError) as err:
        location_pieces(ids[0] + unknown, repo.index)
    assert str(err.value) == f"chunk {unknown.hex()[:16]} is not in the index after the backup's flush"


def _manifest(locations, parts=()):
    return Manifest("pc", "2026-12-01T00:00:00Z", "t", 4096, {}, Layout("none", 512, 1 << 20), [], list(parts),
                    locations=locations)


def test_a_reader_keeps_only_well_formed_parts_of_the_record(repo):
    reader = SnapshotBlobs(repo, _manifest(None))
    assert reader.fell_back == "the snapshot records no locations" and reader.direct_reads == 0
    reader = SnapshotBlobs(repo, _manifest({}))
    assert reader.fell_back == "the snapshot records no locations"
    reader = SnapshotBlobs(repo, _manifest({"blobs": {"aa": [1]}, "partitions": {
        "1": ["x"], "2": "no list", "three": ["y"], "4": ["z", 5], "5": []}}))
    assert reader.fell_back is None
    assert reader._meta == {"aa": [1]} and reader._tables == {1: ["x"], 5: []}
    reader = SnapshotBlobs(repo, _manifest({"blobs": ["not a dict"], "partitions": ["not a dict"]}))
    assert reader._meta == {} and reader._tables == {} and reader.fell_back is None


def test_meta_blobs_are_read_at_their_place_and_a_bad_place_falls_back(repo):
    ids = _store(repo, [b"meta one " * 100, b"meta two " * 100])
    one, two = (i.hex() for i in ids)
    good = location_json(repo.index.get(ids[0]))
    reader = SnapshotBlobs(repo, _manifest({"blobs": {one: good}}))
    assert reader.meta(one) == b"meta one " * 100 and reader.direct_reads == 1 and reader.fell_back is None
    assert reader.meta(two) == b"meta two " * 100 and reader.direct_reads == 1      # no place: the index
    assert reader.fell_back is None
    # a malformed place: the index, and the reason kept
    reader = SnapshotBlobs(repo, _manifest({"blobs": {one: ["bad"]}}))
    assert reader.meta(one) == b"meta one " * 100 and reader.direct_reads == 0
    assert reader.fell_back == f"the manifest's place of meta blob {one[:16]} is malformed"
    # a place claiming more than MAX_STORED is not read
    huge = good[:2] + [L.MAX_STORED + 1] + good[3:]
    reader = SnapshotBlobs(repo, _manifest({"blobs": {one: huge}}))
    assert reader.meta(one) == b"meta one " * 100 and reader.direct_reads == 0
    assert reader.fell_back == f"a recorded place of blob {one[:16]} is {L.MAX_STORED + 1} bytes long"
    # at the bound it is read: the compressed frame ends where it ends, the pack's end cuts
    # the read short, and the hash check passes
    exact = good[:2] + [L.MAX_STORED] + good[3:]
    reader = SnapshotBlobs(repo, _manifest({"blobs": {one: exact}}))
    assert reader.meta(one) == b"meta one " * 100 and reader.fell_back is None and reader.direct_reads == 1
    # a place that holds another blob: stale, then every read goes through the index
    wrong = location_json(repo.index.get(ids[1]))
    reader = SnapshotBlobs(repo, _manifest({"blobs": {one: wrong, two: location_json(repo.index.get(ids[1]))}}))
    assert reader.meta(one) == b"meta one " * 100 and reader.fell_back is not None
    first = reader.fell_back
    assert reader.meta(two) == b"meta two " * 100 and reader.direct_reads == 0 and reader.fell_back == first
    assert reader.chunk_table(PartitionImage(1, 0, 1, "ext4", None, None, 4096, True, 0, chunks=[one, two])) == (
        b"meta one " * 100 + b"meta two " * 100)
    assert reader.ranges(PartitionImage(1, 0, 1, "ext4", None, None, 4096, True, 0, ranges=[two])) == b"meta two " * 100


def test_chunks_are_read_through_their_table_or_the_index_saying_why(repo, monkeypatch):
    monkeypatch.setattr(L, "PIECE_WINDOWS", 2)
    data = [os.urandom(2000) for _ in range(3)]
    ids = _store(repo, data)
    table = ids[0] + NO_DATA + ids[2]
    pieces = location_pieces(table, repo.index)
    with repo.writer() as session:
        piece_ids = [session.add_meta(p) for p in pieces]
    repo.reload_index()
    reader = SnapshotBlobs(repo, _manifest({"blobs": {}, "partitions": {"1": piece_ids}}))
    assert reader.chunk(1, 0, ids[0]) == data[0] and reader.chunk(1, 2, ids[2]) == data[2]
    assert reader.direct_reads == 2 and reader.fell_back is None
    assert reader._pieces[(1, 0)] == pieces[0]                      # each piece read once
    # the empty window has no place: the index is asked (and then used from there on)
    reader = SnapshotBlobs(repo, _manifest({"blobs": {}, "partitions": {"1": piece_ids}}))
    assert reader.chunk(1, 1, ids[1]) == data[1]
    assert reader.fell_back == "partition 1's location table has no place for window 1"
    # a window past the table's pieces, and a partition without a table
    reader = SnapshotBlobs(repo, _manifest({"blobs": {}, "partitions": {"1": piece_ids[:1]}}))
    assert reader.chunk(1, 2, ids[2]) == data[2] and reader.fell_back == "partition 1 has no location table"
    reader = SnapshotBlobs(repo, _manifest({"blobs": {}, "partitions": {"1": piece_ids}}))
    assert reader.chunk(2, 0, ids[0]) == data[0] and reader.fell_back == "partition 2 has no location table"
    # a piece of the wrong length, and one that cannot be read
    with repo.writer() as session:
        odd = session.add_meta(pieces[0] + b"x")
    repo.reload_index()
    reader = SnapshotBlobs(repo, _manifest({"blobs": {}, "partitions": {"1": [odd]}}))
    assert reader.chunk(1, 0, ids[0]) == data[0]
    assert reader.fell_back == "a piece of partition 1's location table has a wrong length"
    missing = blob_id(b"no such piece").hex()
    reader = SnapshotBlobs(repo, _manifest({"blobs": {}, "partitions": {"1": [missing]}}))
    assert reader.chunk(1, 0, ids[0]) == data[0]
    assert reader.fell_back.startswith("a piece of partition 1's location table is unreadable (")
    # a piece shorter than the window's entry
    reader = SnapshotBlobs(repo, _manifest({"blobs": {}, "partitions": {"1": [piece_ids[1]]}}))
    assert reader.chunk(1, 1, ids[1]) == data[1]
    assert reader.fell_back == "partition 1's location table has no place for window 1"
