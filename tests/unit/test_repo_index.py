"""The in-memory index: every blob found where its first pack put it, however it was added
(index files, packs added one by one, both), and nothing found that was never added."""

from __future__ import annotations

import random

import blake3
import pytest

import recovery.repo.index as index_module
from recovery.errors import DamageError
from recovery.repo.format import KIND_DATA, BlobEntry, blob_id
from recovery.repo.index import Index, encode_index_file, index_file_packs, write_index_file
from recovery.repo.packs import PackWriter
from recovery.repo.parity import HEADER_SIZE, TABLE_BLOCK
from recovery.repo.sealing import Sealer
from recovery.storage.local import LocalStorage


def entries(rng: random.Random, count: int, prefix: bytes = b"") -> list[BlobEntry]:
    return [BlobEntry(prefix + rng.randbytes(32 - len(prefix)), rng.randrange(1 << 40), rng.randrange(1 << 32),
                      rng.randrange(1 << 32), rng.randrange(2), rng.randrange(2)) for _ in range(count)]


def test_lookups_across_index_files_and_single_packs(monkeypatch):
    monkeypatch.setattr(index_module, "_PENDING_MAX", 100)    # packs added one by one form runs too
    rng = random.Random(7)
    index, expected, added = Index(), {}, []

    def remember(pack_id, es):
        added.append((pack_id, es))
        for e in es:
            expected.setdefault(e.id, (pack_id, e))

    shared = bytes(5)                  # ids agreeing in their first 5 bytes (the sorted key's part)
    for f in range(4):
        packs = [(rng.randbytes(32).hex(), entries(rng, rng.randrange(0, 70))) for _ in range(25)]
        packs[1][1].extend(entries(rng, 3, shared))
        if added:                                  # a blob already indexed, stored again
            packs[0][1].append(BlobEntry(added[0][1][0].id, 1, 2, 3, 0, 0))
        name, body = encode_index_file(packs)
        index._add_index_file(index_file_packs(name, body))
        for p in packs:
            remember(*p)
        for _ in range(6):
            pack = (rng.randbytes(32).hex(), entries(rng, 30) + entries(rng, 1, shared) + [added[1][1][0]])
            index.add_pack(*pack)
            remember(*pack)

    assert len(index) == len(expected)
    assert sorted(index.packs) == sorted({p for p, _ in added})
    for bid, (pack_id, e) in expected.items():
        assert bid in index
        assert index.get(bid) == index_module.Location(pack_id, e.offset, e.stored_len, e.raw_len, e.kind, e.codec)
    for _ in range(500):
        assert index.get(rng.randbytes(32)) is None
    assert index.get(shared + rng.randbytes(27)) is None and (shared + bytes(27)) not in index
    assert all(index.has_pack(p) for p, _ in added) and not index.has_pack(rng.randbytes(32).hex())


def test_damaged_index_file_is_refused():
    rng = random.Random(3)
    name, body = encode_index_file([(rng.randbytes(32).hex(), entries(rng, 5))])
    index_file_packs(name, body)
    for bad in (body[:-1], body[:20] + bytes([body[20] ^ 1]) + body[21:], b"LBINDEX\x01" + bytes(31)):
        with pytest.raises(DamageError, match="is damaged"):
            index_file_packs(name, bad)


def test_packs_added_one_by_one_stay_in_few_runs(monkeypatch):
    monkeypatch.setattr(index_module, "_PENDING_MAX", 50)
    rng = random.Random(11)
    index, added = Index(), []
    for _ in range(2000):
        pack = (rng.randbytes(32).hex(), entries(rng, 10))
        index.add_pack(*pack)
        added.append(pack)
    # 20,000 blobs sorted 50 at a time: merged as they come, a handful of runs, not 400.
    assert len(index._runs) <= 12
    assert [r[0] for r in index._runs] == sorted(r[0] for r in index._runs)
    for pack_id, es in added[::7]:
        for e in es:
            assert index.get(e.id).pack_id == pack_id


def test_a_blob_sorted_from_an_index_file_keeps_its_place_when_one_pack_stores_it_again():
    rng = random.Random(5)
    first, again = entries(rng, 2), entries(rng, 1)
    again.append(BlobEntry(first[0].id, 7, 11, 13, 1, 0))
    a, b = "a" * 64, "b" * 64
    index = Index()
    assert len(index) == 0 and index.pack_totals() == {}
    index._add_index_file(index_file_packs(*encode_index_file([(a, first)])))
    index.add_pack(b, again)                                  # one pack: its ids wait in _pending
    assert index.get(first[0].id).pack_id == a
    assert index.get(again[0].id).pack_id == b
    assert len(index) == 3
    assert index.pack_totals() == {a: (2, first[0].stored_len + first[1].stored_len),
                                   b: (2, again[0].stored_len + 11)}
    assert index.problems == []


def test_opening_reads_index_files_then_the_footers_of_unindexed_packs(tmp_path):
    storage = LocalStorage(tmp_path)
    (tmp_path / "tmp").mkdir()
    rng = random.Random(9)
    indexed = PackWriter(storage)
    for _ in range(3):
        raw = rng.randbytes(100)
        indexed.add(blob_id(raw), raw, len(raw), KIND_DATA, 0)
    indexed_id, indexed_entries = indexed.finish()
    write_index_file(storage, [(indexed_id, indexed_entries)])
    loose = PackWriter(storage)                               # a killed backup's last pack
    raw = rng.randbytes(50)
    loose.add(blob_id(raw), raw, len(raw), KIND_DATA, 0)
    loose_id, loose_entries = loose.finish()
    storage.close()

    index = Index.load(tmp_path)
    assert index.problems == []
    assert sorted(index.packs) == sorted([indexed_id, loose_id])
    for pack_id, es in ((indexed_id, indexed_entries), (loose_id, loose_entries)):
        for e in es:
            assert index.get(e.id) == index_module.Location(pack_id, e.offset, e.stored_len, e.raw_len,
                                                            e.kind, e.codec)


def packed(storage, rng, count, parity=False):
    writer = PackWriter(storage, parity=parity)
    for _ in range(count):
        raw = rng.randbytes(100)
        writer.add(blob_id(raw), raw, len(raw), KIND_DATA, 0)
    return writer.finish()


def assert_finds(index, packs):
    for pack_id, es in packs:
        for e in es:
            assert index.get(e.id) == index_module.Location(pack_id, e.offset, e.stored_len, e.raw_len,
                                                            e.kind, e.codec)


def test_opening_with_parity_sidecars_beside_index_files_and_a_repaired_one(tmp_path):
    storage = LocalStorage(tmp_path)
    (tmp_path / "tmp").mkdir()
    rng = random.Random(21)
    packs = [packed(storage, rng, 3, parity=True) for _ in range(4)]
    named = {write_index_file(storage, [p], parity=True): p[0] for p in packs}
    names = sorted(named)
    assert sorted(o.name for o in storage.list("index/")) == sorted(names + [n + ".par" for n in names])
    last = tmp_path / "packs" / named[names[-1]][:2] / f"{named[names[-1]]}.pack"
    last.write_bytes(last.read_bytes()[:-10] + bytes(10))       # found through its index file only
    damaged = bytearray((tmp_path / names[0]).read_bytes())   # the sidecar lists right after it
    damaged[40:60] = bytes(20)
    (tmp_path / names[0]).write_bytes(damaged)
    index = Index.load(storage)
    assert index.problems == [] and sorted(index.packs) == sorted(p for p, _ in packs)
    assert_finds(index, packs)

    sidecar = bytearray((tmp_path / (names[0] + ".par")).read_bytes())
    parity_at = HEADER_SIZE + TABLE_BLOCK                        # one sector, two parity sectors
    sidecar[parity_at + 10] ^= 1
    sidecar[parity_at + 512 + 10] ^= 1                           # both lost: now past repair
    (tmp_path / (names[0] + ".par")).write_bytes(sidecar)
    index = Index.load(storage)
    assert index.problems == [f"index file {names[0][len('index/'):]} is damaged beyond what its parity repairs"]
    assert_finds(index, packs)                                   # its pack's footer was read instead
    storage.close()


def test_opening_again_takes_index_files_and_footers_from_the_cache(tmp_path):
    from recovery.repo.cache import IndexCache

    (tmp_path / "repo" / "tmp").mkdir(parents=True)
    storage = LocalStorage(tmp_path / "repo")
    rng = random.Random(22)
    indexed, loose = packed(storage, rng, 3), packed(storage, rng, 2)
    name = write_index_file(storage, [indexed])
    cache = IndexCache(tmp_path / "cache")
    first = Index.load(storage, cache)
    assert first.problems == []
    # The repository's copies change under the cache (same sizes): the cached ones are used.
    for path in (tmp_path / "repo" / name, tmp_path / "repo" / "packs" / loose[0][:2] / f"{loose[0]}.pack"):
        data = bytearray(path.read_bytes())
        data[-40:] = bytes(40)
        path.write_bytes(data)
    again = Index.load(storage, cache)
    assert again.problems == [] and sorted(again.packs) == sorted([indexed[0], loose[0]])
    assert_finds(again, [indexed, loose])
    storage.close()


def test_a_pack_named_by_two_index_files_is_one_pack():
    rng = random.Random(23)
    a, b = ("a" * 64, entries(rng, 2)), ("b" * 64, entries(rng, 1))
    index = Index()
    index._add_index_file(index_file_packs(*encode_index_file([a])))
    index._add_index_file(index_file_packs(*encode_index_file([a, b])))
    assert index.packs == ["a" * 64, "b" * 64]
    assert index.pack_totals() == {"a" * 64: (2, sum(e.stored_len for e in a[1])),
                                   "b" * 64: (1, b[1][0].stored_len)}
    assert_finds(index, [a, b])


def test_index_file_names_edges_and_exact_refusals():
    rng = random.Random(24)
    name, body = encode_index_file([])
    assert name == f"index/{body[-32:].hex()}.idx" and body[-32:] == blake3.blake3(body[:-32]).digest()
    assert len(body) == len(b"LBINDEX\x01") + 32 and index_file_packs(name, body) == []
    name, body = encode_index_file([("c" * 64, [])])          # a pack with no entry ends the body
    assert [(p, bytes(r)) for p, r in index_file_packs(name, body)] == [("c" * 64, b"")]
    label = name.rpartition("/")[2]
    pack = ("d" * 64, entries(rng, 2))
    _, good = encode_index_file([pack])
    cut_body = good[:-32 - 10]                                    # an entry cut short, hash redone
    cut = cut_body + blake3.blake3(cut_body).digest()
    header_only = good[:8 + 20]                                   # a pack header cut short
    header_only += blake3.blake3(header_only).digest()
    for data in (good[:-1], cut, header_only, b"not an index file" + bytes(40)):
        with pytest.raises(DamageError) as refused:
            index_file_packs(name, data)
        assert str(refused.value) == f"index file {label} is damaged"
    sealer = Sealer(bytes(32))
    sealed_name, sealed = encode_index_file([pack], sealer)
    sealed_label = sealed_name.rpartition("/")[2]
    for data, key, message in (
        (good, sealer, f"index file {label} is not sealed, unlike its repository"),
        (sealed, None, f"index file {sealed_label} is sealed, unlike its repository"),
    ):
        with pytest.raises(DamageError) as refused:
            index_file_packs(sealed_name if key is None else name, data, key)
        assert str(refused.value) == message
    with pytest.raises(DamageError) as refused:
        index_file_packs(name, sealed, sealer)
    assert str(refused.value) == f"index file {label} holds another index file's content"
    with pytest.raises(DamageError) as refused:
        index_file_packs(sealed_name, sealed, Sealer(bytes(range(32))))
    assert str(refused.value) == f"index file {sealed_label} is forged or altered (it fails authentication)"


def test_an_index_file_is_written_without_parity_unless_asked(tmp_path):
    storage = LocalStorage(tmp_path)
    (tmp_path / "tmp").mkdir()
    name = write_index_file(storage, [("e" * 64, entries(random.Random(25), 1))])
    assert [o.name for o in storage.list("index/")] == [name]
    storage.close()
