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
from tests.unit.test_repo_format import store

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
    ids = store(repo, blobs)
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


def test_verify_names_wrong_places_and_counts_stale_ones_apart(repo):
    ids = _store(repo, [b"table piece " * 50, b"boot area " * 50, os.urandom(3000), os.urandom(3000)])
    meta, boot, c1, c2 = ids
    at = {bid: repo.index.get(bid) for bid in ids}
    part = PartitionImage(1, 0, 1, "ext4", None, None, 4096, True, 0, chunks=[meta.hex()])
    boots = [BootArea(0, 512, boot.hex())]

    def manifest(blobs, parts=None):
        m = _manifest({"blobs": blobs, "partitions": parts or {}}, [part])
        m.boot_areas = boots
        return m

    check = LocationCheck(repo)
    assert check.meta_problems(_manifest(None)) == []
    assert check.meta_problems(_manifest({"blobs": []})) == ["its manifest's table of places is malformed"]
    right = {meta.hex(): location_json(at[meta]), boot.hex(): location_json(at[boot])}
    assert check.meta_problems(manifest(right)) == []
    # a place of the same pack where another blob lies, and a place left out, are wrong
    swapped = {meta.hex(): location_json(at[boot]), boot.hex(): location_json(at[meta])}
    first = min(meta.hex(), boot.hex())
    assert check.meta_problems(manifest(swapped)) == [
        f"its manifest records a wrong place for 2 of its table piece(s) (first {first[:16]}); "
        "they are read through the index"]
    assert check.meta_problems(manifest({meta.hex(): location_json(at[meta])})) == [
        f"its manifest records a wrong place for 1 of its table piece(s) (first {boot.hex()[:16]}); "
        "they are read through the index"]
    # a place in a pack that is gone (a prune repacked it) is only counted
    gone = location_json(Location("cd" * 32, 8, 10, 10, 1, 0))
    assert check.stale == 0
    assert check.meta_problems(manifest({meta.hex(): gone, boot.hex(): location_json(at[boot])})) == []
    assert check.stale == 1

    chunks = c1 + NO_DATA + c2
    table = encode_location(at[c1]) + NOWHERE + encode_location(at[c2])
    with repo.writer() as session:
        good_piece = session.add_meta(table)
        swapped_piece = session.add_meta(encode_location(at[c2]) + encode_location(at[c1]) + encode_location(at[c1]))
        short_piece = session.add_meta(table[:112])
    repo.reload_index()
    check = LocationCheck(repo)
    assert check.partition_problem(_manifest(None), part, chunks) is None
    m = manifest(right, {"1": [good_piece]})
    assert check.partition_problem(m, part, chunks) is None
    with repo.writer() as session:
        halves = [session.add_meta(table[:56]), session.add_meta(table[56:])]
    repo.reload_index()
    assert check.partition_problem(manifest(right, {"1": halves}), part, chunks) is None
    assert check.partition_problem(manifest(right, {"1": "x"}), part, chunks) == (
        "its location table is missing from the manifest")
    assert check.partition_problem(manifest(right, {"2": [good_piece]}), part, chunks) == (
        "its location table is missing from the manifest")
    m = _manifest(["odd"], [part])
    assert check.partition_problem(m, part, chunks) == "its location table is missing from the manifest"
    assert check.partition_problem(manifest(right, {"1": [short_piece]}), part, chunks) == (
        "its location table has 2 entries for 3 windows")
    missing = blob_id(b"nothing").hex()
    assert check.partition_problem(manifest(right, {"1": [missing]}), part, chunks) == (
        f"its location table is unreadable: chunk {missing[:16]} is missing from the repository")
    assert check.partition_problem(manifest(right, {"1": ["not hex"]}), part, chunks).startswith(
        "its location table is unreadable: ")
    # window 0 and 2 at each other's place, window 1 (no data) given a place: all three wrong
    assert check.partition_problem(manifest(right, {"1": [swapped_piece]}), part, chunks) == (
        "its location table puts 3 chunk(s) at the wrong place (first at byte 0); they are read through the index")
    # only the last window wrong: its byte offset is named
    late = encode_location(at[c1]) + NOWHERE + encode_location(at[c1])
    with repo.writer() as session:
        late_piece = session.add_meta(late)
    repo.reload_index()
    assert check.partition_problem(manifest(right, {"1": [late_piece]}), part, chunks) == (
        "its location table puts 1 chunk(s) at the wrong place (first at byte 8192); they are read through the index")


def test_recording_stores_the_tables_and_the_place_of_every_meta_blob(repo):
    data = [os.urandom(2500) for _ in range(2)]
    with repo.writer() as session:
        ids = []
        for raw in data:
            bid = blob_id(raw)
            session.add(bid, raw, len(raw), KIND_DATA, 0)
            ids.append(bid)
        table = ids[0] + NO_DATA + ids[1]
        chunk_meta = session.add_meta(table)
        range_meta = session.add_meta(b"\x00" * 16)
        boot_meta = session.add_meta(b"boot" * 128)
        image = PartitionImage(3, 0, 1, "ext4", None, None, 4096, True, 0, ranges=[range_meta], chunks=[chunk_meta])
        rec = record_locations(repo, session, [BootArea(0, 512, boot_meta)], [image], {3: table})
        assert list(rec) == ["partitions", "blobs"] and list(rec["partitions"]) == ["3"]
        [piece] = rec["partitions"]["3"]
        assert sorted(rec["blobs"]) == list(rec["blobs"]) == sorted({chunk_meta, range_meta, boot_meta, piece})
        for hexid, place in rec["blobs"].items():
            assert location_from_json(place) == repo.index.get(bytes.fromhex(hexid))
        assert repo.read_blob(bytes.fromhex(piece)) == b"".join(
            NOWHERE if i == NO_DATA else encode_location(repo.index.get(i)) for i in (ids[0], NO_DATA, ids[1]))
        image.ranges.append(blob_id(b"never stored").hex())
        with pytest.raises(DamageError) as err:
            record_locations(repo, session, [], [image], {3: table})
        assert str(err.value) == (f"meta blob {blob_id(b'never stored').hex()[:16]} is not in the index after "
                                  "the backup's flush")


def test_verify_counts_every_stale_place_and_survives_a_pack_with_a_damaged_footer(repo, tmp_path):
    from recovery.repo.packs import pack_path

    ids = _store(repo, [b"first " * 60, b"second " * 60])
    a, b = (repo.index.get(i) for i in ids)
    part = PartitionImage(1, 0, 1, "ext4", None, None, 4096, True, 0, ranges=[ids[0].hex(), ids[1].hex()])
    check = LocationCheck(repo)
    gone = [location_json(Location(c * 32, 8, 10, 10, 1, 0)) for c in ("cd", "ef")]
    m = _manifest({"blobs": {ids[0].hex(): gone[0], ids[1].hex(): gone[1]}}, [part])
    assert check.meta_problems(m) == [] and check.stale == 2
    # the ranges of a partition are its pieces back to back
    reader = SnapshotBlobs(repo, _manifest({"blobs": {ids[0].hex(): location_json(a)}}, [part]))
    assert reader.ranges(part) == b"first " * 60 + b"second " * 60
    # a place in a pack whose footer is damaged: wrong (the pack's damage is named elsewhere)
    path = pack_path(tmp_path / "r", a.pack_id)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    moved = location_json(Location(a.pack_id, a.offset + 1, a.stored_len, a.raw_len, a.kind, a.codec))
    m = _manifest({"blobs": {ids[0].hex(): moved, ids[1].hex(): location_json(b)}}, [part])
    assert LocationCheck(repo).meta_problems(m) == [
        f"its manifest records a wrong place for 1 of its table piece(s) (first {ids[0].hex()[:16]}); "
        "they are read through the index"]
