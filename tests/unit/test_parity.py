"""Parity sidecars on their own: the guaranteed bounds hold at the bound and fail just past it,
for objects of many sizes, with seeded random damage; the sidecar's own damage is survived."""

from __future__ import annotations

import random

import pytest

from recovery.errors import DamageError
from recovery.repo.parity import (HEADER, HEADER_SIZE, SMALL_OBJECT, _check, TABLE_BLOCK, Geometry, make_parity, parity_name,
                                  read_tolerant, repair, repair_object, sidecar_matches, write_protected)
from recovery.storage.local import LocalStorage

SIZES = [1, 511, 512, 5000, 25_564, 262_144, 300_000, 3_000_000, 9_000_001]
SEEDS = [1, 2, 3]


def obj(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("seed", SEEDS)
def test_one_run_at_the_bound_is_repaired_anywhere(size, seed):
    data = obj(size, seed)
    side = make_parity(data)
    geo = Geometry.for_length(size)
    assert geo.guaranteed_run >= size // 100 + 1            # more than 1 % of any object
    rng = random.Random(seed)
    run = min(geo.guaranteed_run, size)
    for at in {0, size - run, rng.randrange(size - run + 1)}:
        damaged = bytearray(data)
        damaged[at : at + run] = rng.randbytes(run)
        got = repair(damaged, side, "x")
        assert got.repaired and got.data == data


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("seed", SEEDS)
def test_scattered_sectors_up_to_the_bound_and_one_past_it(size, seed):
    data = obj(size, seed)
    side = make_parity(data)
    geo = Geometry.for_length(size)
    rng = random.Random(seed)
    j = rng.randrange(geo.words)
    column = [i for i in range(j, geo.sectors, geo.words)]
    s = geo.sector_size
    for count, ok in ((min(geo.guaranteed_sectors, len(column)), True), (geo.guaranteed_sectors + 1, False)):
        if count > len(column):
            continue                       # the object has fewer sectors than that
        damaged = bytearray(data)
        hit = rng.sample(column, count)
        for i in hit:                      # one flipped bit per sector is enough to lose it
            at = i * s + rng.randrange(min(s, size - i * s))
            damaged[at] ^= 1 << rng.randrange(8)
        got = repair(damaged, side, "x")
        assert sorted(got.damaged) == sorted(hit)
        if ok:
            assert got.repaired and got.data == data
        else:
            assert sorted(got.lost) == sorted(hit) and not got.repaired


def test_random_bit_flips_in_many_columns_are_repaired():
    data = obj(9_000_001, 7)
    side = make_parity(data)
    geo = Geometry.for_length(len(data))
    rng = random.Random(7)
    damaged = bytearray(data)
    # One flip in each of several columns, up to m per column: far more than m in all.
    for j in range(geo.words):
        for i in rng.sample(range(j, geo.sectors, geo.words), geo.m):
            damaged[i * geo.sector_size + rng.randrange(geo.sector_size)] ^= 0x80
    got = repair(damaged, side, "x")
    assert len(got.damaged) == geo.m * geo.words and got.repaired and got.data == data


def test_damage_to_the_sidecar_itself():
    data = obj(3_000_000, 4)
    side = make_parity(data)
    # One table copy, one header copy and a few parity sectors gone: still repairs.
    broken = bytearray(side)
    broken[:HEADER_SIZE + 3 * TABLE_BLOCK] = bytes(HEADER_SIZE + 3 * TABLE_BLOCK)
    broken[HEADER_SIZE + Geometry.for_length(len(data)).table_blocks * TABLE_BLOCK + 10] ^= 1
    damaged = bytearray(data)
    damaged[1000:1100] = bytes(100)
    got = repair(damaged, bytes(broken), "x")
    assert got.repaired and got.data == data and got.parity_damaged == 1
    # Both headers gone: a plain error, nothing pretended.
    broken[-HEADER_SIZE:] = bytes(HEADER_SIZE)
    with pytest.raises(DamageError, match="parity of x is damaged"):
        repair(damaged, bytes(broken), "x")


def test_a_truncated_object_is_repaired_within_the_bound_and_not_beyond():
    data = obj(3_000_000, 5)
    side = make_parity(data)
    geo = Geometry.for_length(len(data))
    short = data[: len(data) - geo.guaranteed_run + geo.sector_size]
    got = repair(short, side, "x")
    assert got.repaired and got.data == data
    got = repair(data[: len(data) // 2], side, "x")
    assert not got.repaired


def test_overhead_of_a_full_pack_is_under_5_percent():
    geo = Geometry.for_length(64 * 1024 * 1024)
    assert geo.sidecar_size / geo.length < 0.048
    assert (geo.words, geo.k, geo.m) == (68, 241, 11)
    assert geo.k + geo.m <= 255


def word_loads(geo: Geometry, hit) -> list[int]:
    loads = [0] * geo.words
    for i in hit:
        loads[i % geo.words] += 1
    return loads


def test_scattered_odds_are_exact():
    # Small enough to count every choice of damaged sectors one by one.
    geo = Geometry(12 * 512 - 100, 512, max_k=4, permille=500)       # 12 sectors, 3 words of 4, m = 2
    assert (geo.sectors, geo.words, geo.k, geo.m) == (12, 3, 4, 2)
    from itertools import combinations
    for d in range(0, 8):
        within = sum(1 for hit in combinations(range(12), d) if max(word_loads(geo, hit)) <= geo.m)
        total = sum(1 for _ in combinations(range(12), d))
        assert geo.scattered_odds(d) == pytest.approx(within / total, abs=1e-12)
    with pytest.raises(ValueError):
        geo.scattered_odds(13)


def test_one_percent_scattered_over_a_full_pack_and_the_earlier_layout():
    pack = 64 * 1024 * 1024
    geo = Geometry.for_length(pack)
    one_percent = -(-geo.sectors // 100)
    assert geo.scattered_odds(one_percent) > 0.9996              # 3.9e-4 lost: docs/FORMAT.md
    earlier = Geometry(pack, 4096, max_k=200, permille=40)       # LBPARIT2's k = 200, 4 %
    assert earlier.m == 8 and 0.984 < earlier.scattered_odds(one_percent) < 0.985
    # The exact figure against sampling: 20,000 random choices of 1 % of the sectors; the
    # count of choices some word cannot repair stays within a few standard deviations.
    rng = random.Random(2026)
    for g, want in ((geo, geo.scattered_odds(one_percent)), (earlier, earlier.scattered_odds(one_percent))):
        trials = 20_000
        lost = sum(1 for _ in range(trials)
                   if max(word_loads(g, rng.sample(range(g.sectors), one_percent))) > g.m)
        expected = trials * (1 - want)
        assert abs(lost - expected) <= 5 * (expected + 1) ** 0.5


@pytest.mark.parametrize("seed", range(40))
def test_one_percent_of_sectors_scattered_is_repaired_exactly_when_the_words_allow(seed):
    """Each seed damages a random 1 % of an 8 MiB object's sectors (one flipped bit in each):
    repair gives the object back exactly when no code word lost more than m sectors, and
    says which sectors stay lost otherwise (over 40 seeds, at odds 0.999997 each, all are repaired)."""
    size = 8 * 1024 * 1024
    data = obj(size, 99)
    side = SIDE_8M.setdefault(size, make_parity(data))
    geo = Geometry.for_length(size)
    rng = random.Random(seed)
    hit = rng.sample(range(geo.sectors), -(-geo.sectors // 100))
    damaged = bytearray(data)
    for i in hit:
        damaged[i * geo.sector_size + rng.randrange(geo.sector_size)] ^= 1 << rng.randrange(8)
    got = repair(damaged, side, "x")
    assert sorted(got.damaged) == sorted(hit)
    if max(word_loads(geo, hit)) <= geo.m:
        assert got.repaired and got.data == data
    else:
        assert not got.repaired and got.lost


SIDE_8M: dict[int, bytes] = {}


def test_a_sidecar_of_the_first_layout_still_repairs():
    """Format 2 repositories written before LBPARIT3 hold LBPARIT2 sidecars (k <= 200, parity
    in percent): they still read and repair."""
    import blake3
    from recovery.repo.parity import HEADER, PARITY_MAGIC, PARITY_MAGIC_V2, parse_sidecar

    data = obj(3_000_000, 5)
    old = Geometry(len(data), 4096, max_k=200, permille=40)
    side = bytearray(make_parity(data, geometry=old))
    head = HEADER.unpack(bytes(side[: HEADER.size]))
    assert head[0] == PARITY_MAGIC and head[4] == 40
    v2 = HEADER.pack(PARITY_MAGIC_V2, *head[1:4], 4, *head[5:])
    v2 += blake3.blake3(v2).digest(length=8)
    side[: HEADER_SIZE] = v2
    side[len(side) - HEADER_SIZE :] = v2
    assert parse_sidecar(bytes(side), "x").geometry == old
    damaged = bytearray(data)
    damaged[100_000 : 100_000 + old.guaranteed_run] = bytes(old.guaranteed_run)
    got = repair(damaged, bytes(side), "x")
    assert got.repaired and got.data == data



def test_geometry_at_the_small_object_edge_and_the_sidecar_as_sized():
    small, large = Geometry.for_length(SMALL_OBJECT), Geometry.for_length(SMALL_OBJECT + 1)
    assert (small.sector_size, large.sector_size) == (512, 4096)
    assert (small.sectors, small.words, small.k, small.m) == (512, 3, 171, 8)
    assert small.guaranteed_sectors == small.m and small.parity_sectors == 24
    assert small.table_blocks == 5                          # 536 checksums, 126 a block
    for size in (1, 5000, SMALL_OBJECT, SMALL_OBJECT + 1):
        assert len(make_parity(obj(size, 1))) == Geometry.for_length(size).sidecar_size
    assert Geometry.for_length(0).sectors == 1


def test_sidecar_matches_only_its_own_object():
    data = obj(5000, 2)
    side = make_parity(data)
    assert sidecar_matches(side, data)
    assert not sidecar_matches(side, data[:-1] + bytes([data[-1] ^ 1]))
    assert not sidecar_matches(side, data + b"x")
    assert not sidecar_matches(bytes(len(side)), data)
    assert sidecar_matches(bytes(HEADER_SIZE) + side[HEADER_SIZE:], data)   # the other header copy


def test_objects_in_storage_written_with_parity_and_repaired_from_it(tmp_path):
    storage = LocalStorage(tmp_path)
    (tmp_path / "tmp").mkdir()
    data = obj(20_000, 3)
    write_protected(storage, "a/obj", data, parity=True)
    write_protected(storage, "a/plain", data, parity=False)
    assert parity_name("a/obj") == "a/obj.par" and (tmp_path / "a/obj.par").read_bytes() == make_parity(data)
    assert (tmp_path / "a/obj").read_bytes() == data and not (tmp_path / "a/plain.par").exists()
    damaged = bytearray(data)
    damaged[600:700] = bytes(100)                           # within sector 1 of 512 bytes
    (tmp_path / "a/obj").write_bytes(damaged)
    got = repair_object(storage, "a/obj", "the object")
    assert got.repaired and got.data == data and got.damaged == [1] and got.lost == []
    assert got.parity_damaged == 0
    got = repair_object(storage, "a/obj", "the object", data=data)   # bytes already read, intact
    assert got.data == data and got.damaged == [] and got.repaired
    with pytest.raises(DamageError, match="^the plain one has no parity to repair it from$"):
        repair_object(storage, "a/plain", "the plain one")
    assert read_tolerant(storage, "a/missing") == b""
    storage.close()


def test_a_sidecar_with_a_damaged_parity_sector_reports_it_on_intact_data():
    data = obj(5000, 4)
    side = bytearray(make_parity(data))
    geo = Geometry.for_length(len(data))
    side[HEADER_SIZE + geo.table_blocks * TABLE_BLOCK + 3] ^= 1
    got = repair(data, bytes(side), "x")
    assert got.data == data and got.parity_damaged == 1 and got.damaged == [] and got.repaired


def forged(side: bytes, copies, **fields) -> bytes:
    """The sidecar with header fields changed and each header's check made again: a header that
    checks out but says something else than the object's own."""
    out = bytearray(side)
    names = ("magic", "length", "sector", "max_k", "pct", "n", "w", "k", "m", "tb", "digest")
    for at in copies:
        values = dict(zip(names, HEADER.unpack_from(out, at)))
        values.update(fields)
        header = HEADER.pack(*(values[n] for n in names))
        out[at : at + HEADER_SIZE] = header + _check(header)
    return bytes(out)


def test_either_header_copy_serves_and_a_wrong_one_is_passed_over():
    data = obj(5000, 6)
    side = make_parity(data)
    last = len(side) - HEADER_SIZE
    assert sidecar_matches(side[:last] + bytes(HEADER_SIZE), data)          # the first copy alone
    flipped = bytearray(side)
    flipped[HEADER.size - 1] ^= 1                                           # the first digest, unchecked
    assert sidecar_matches(bytes(flipped), data)
    assert sidecar_matches(forged(side, [0], magic=b"LBPARIT1"), data)
    assert sidecar_matches(forged(side, [0], n=11), data)
    with pytest.raises(DamageError) as refused:
        repair(data, forged(side, [0, last], magic=b"LBPARIT1"), "x")
    assert str(refused.value) == "the parity of x is damaged (its header is unreadable)"


def test_sectors_that_all_check_but_a_whole_that_does_not_are_all_lost():
    data = obj(5000, 7)
    side = make_parity(data)
    lying = forged(side, [0, len(side) - HEADER_SIZE], digest=bytes(32))
    got = repair(data, lying, "x")
    assert got.lost == list(range(10)) and not got.repaired and got.damaged == []
    assert repair(data, side, "x").parity_damaged == 0


def test_losses_in_several_code_words_are_all_listed():
    data = obj(SMALL_OBJECT, 8)                      # 512 sectors in 3 code words
    side = make_parity(data)
    geo = Geometry.for_length(len(data))
    damaged = bytearray(data)
    hit = []
    for j in (0, 1):                                 # m + 1 sectors in each of two columns
        for i in range(j, (geo.m + 1) * geo.words, geo.words):
            damaged[i * geo.sector_size] ^= 1
            hit.append(i)
    got = repair(damaged, side, "x")
    assert got.lost == sorted(hit) and got.damaged == sorted(hit)


def test_the_geometry_and_sizes_docs_format_gives():
    # FORMAT.md: max k 244, m = max(2, ceil(45k / 1000)), an 84-byte header (its check 8 bytes),
    # 512-byte table blocks, a run of (m * W - 1) * S + 1 bytes guaranteed.
    assert Geometry.for_length(244 * 512).words == 1 and Geometry.for_length(245 * 512).words == 2
    assert Geometry.for_length(512).m == 2                    # ceil(45 / 1000) = 1: the floor of 2
    assert Geometry.for_length(101 * 512).m == 5              # ceil(4545 / 1000)
    assert HEADER_SIZE == 84 and TABLE_BLOCK == 512
    assert len(make_parity(obj(5000, 9))) == 2 * 84 + 2 * 512 + 2 * 512   # 10 sectors, m = 2
    assert Geometry.for_length(SMALL_OBJECT).guaranteed_run == (8 * 3 - 1) * 512 + 1
