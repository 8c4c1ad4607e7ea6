"""Parity sidecars on their own: the guaranteed bounds hold at the bound and fail just past it,
for objects of many sizes, with seeded random damage; the sidecar's own damage is survived."""

from __future__ import annotations

import random

import pytest

from recovery.errors import DamageError
from recovery.repo.parity import HEADER_SIZE, TABLE_BLOCK, Geometry, make_parity, repair

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
    assert geo.sidecar_size / geo.length < 0.045
    assert (geo.words, geo.k, geo.m) == (82, 200, 8)
