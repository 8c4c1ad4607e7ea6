"""Parity sidecars at their edges (recovery/repo/parity.py): reading an object from a drive that
fails to read some of its sectors (what can be read is kept, the rest comes back as zeros for
the parity to repair), the bounds a sidecar's header must keep to be believed, and a header copy
that checks out but belongs to another sidecar."""

from __future__ import annotations

import random

import pytest

from recovery.errors import DamageError
from recovery.repo.parity import (HEADER_SIZE, READ_STEP, SMALL_OBJECT, SMALL_SECTOR, TABLE_BLOCK, Geometry, make_parity, read_sidecar,
                                  read_tolerant, repair, repair_object, sidecar_matches, write_protected)
from recovery.storage.base import StorageError, UnreachableError
from recovery.storage.local import LocalStorage
from tests.unit.test_parity import forged


def obj(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


class BadSectors(LocalStorage):
    """A folder on a drive whose reads fail wherever they touch bytes [start, end) of an object
    under `under`: a read of a whole file fails, a read of a piece fails when the piece reaches
    into the bad bytes (as a failing drive answers EIO). `error` is what the failing read raises."""

    def __init__(self, root, under: str, start: int, end: int, error=None):
        super().__init__(root)
        self.under, self.start, self.end = under, start, end
        self.error = error or (lambda name: StorageError(f"cannot read {name}: Input/output error"))
        self.reads: list[tuple[int, int | None]] = []

    def read(self, name, offset=0, length=None):
        if name.startswith(self.under):
            self.reads.append((offset, length))
            size = super().size(name)
            stop = size if length is None else min(offset + length, size)
            if offset < self.end and stop > self.start:
                raise self.error(name)
        return super().read(name, offset, length)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "tmp").mkdir()
    return tmp_path


def zeroed(data: bytes, start: int, end: int) -> bytes:
    """`data` as read_tolerant gives it back: the 512-byte sectors touching [start, end) zeros."""
    first, last = start // SMALL_SECTOR * SMALL_SECTOR, -(-end // SMALL_SECTOR) * SMALL_SECTOR
    return data[:first] + bytes(min(last, len(data)) - first) + data[last:]


@pytest.mark.parametrize("start,end", [
    (READ_STEP - 100, READ_STEP + 700),          # across the edge of two 64 KiB steps
    (1000, 1001),                                # one byte, inside the first sector of a step
    (150_000 - 300, 150_000),                    # the object's last, short sector
])
def test_a_drive_failing_some_sectors_gives_back_the_rest_and_zeros(folder, start, end):
    data = obj(150_000, 1)
    plain = LocalStorage(folder)
    write_protected(plain, "packs/x", data, parity=True)
    storage = BadSectors(folder, "packs/x", start, end)
    got = read_tolerant(storage, "packs/x")
    assert got == zeroed(data, start, end)
    # Whole, then 64 KiB steps, then 512-byte sectors only inside the steps that failed.
    failed_steps = {at for at in range(0, len(data), READ_STEP) if at < end and min(at + READ_STEP, len(data)) > start}
    assert storage.reads[0] == (0, None)
    assert [r for r in storage.reads if r[1] == READ_STEP] == [(at, READ_STEP) for at in range(0, len(data), READ_STEP)]
    sectors = [r for r in storage.reads if r[1] == SMALL_SECTOR]
    assert sectors == [(sub, SMALL_SECTOR) for at in sorted(failed_steps)
                       for sub in range(at, min(at + READ_STEP, len(data)), SMALL_SECTOR)]
    # What the drive could not read, the parity gives back.
    fixed = repair_object(storage, "packs/x", "pack x")
    assert fixed.repaired and fixed.data == data and fixed.damaged


def test_a_failed_read_that_is_not_the_drive_is_not_turned_into_zeros(folder):
    data = obj(20_000, 2)
    write_protected(LocalStorage(folder), "packs/x", data, parity=True)
    gone = BadSectors(folder, "packs/x", 0, len(data), error=lambda name: UnreachableError("the server went away"))
    with pytest.raises(UnreachableError):
        read_tolerant(gone, "packs/x")

    class GoneAfterWholeRead(BadSectors):
        def read(self, name, offset=0, length=None):
            if length is not None and length < READ_STEP:
                raise UnreachableError("the server went away")
            return super().read(name, offset, length)

    with pytest.raises(UnreachableError):                # while reading sector by sector
        read_tolerant(GoneAfterWholeRead(folder, "packs/x", 100, 200), "packs/x")
    # An OSError (a drive mounted without a storage's own error) is a bad sector like any.
    raw = BadSectors(folder, "packs/x", 100, 200, error=lambda name: OSError(5, "Input/output error"))
    assert read_tolerant(raw, "packs/x") == zeroed(data, 100, 200)


def test_a_sidecar_that_cannot_be_read_or_is_missing_is_said_so(folder):
    data = obj(20_000, 3)
    write_protected(LocalStorage(folder), "packs/x", data, parity=True)

    class NoSize(BadSectors):
        def size(self, name):
            raise StorageError(f"cannot read {name}: Input/output error")

    with pytest.raises(DamageError) as err:
        read_sidecar(NoSize(folder, "packs/x.par", 0, 1), "packs/x", "pack x")
    assert str(err.value) == "the parity of pack x cannot be read (cannot read packs/x.par: Input/output error)"
    with pytest.raises(UnreachableError):
        read_sidecar(BadSectors(folder, "packs/x.par", 0, 1, error=lambda n: UnreachableError("away")),
                     "packs/x", "pack x")
    with pytest.raises(DamageError, match="^pack y has no parity to repair it from$"):
        read_sidecar(LocalStorage(folder), "packs/y", "pack y")


@pytest.mark.parametrize("sector,max_k,share,believed", [
    (64, 1, 1, True), (63, 244, 45, False),
    (512, 249, 200, True), (512, 250, 45, False), (512, 244, 201, False), (512, 244, 0, False),
])
def test_a_header_is_believed_only_within_its_bounds(sector, max_k, share, believed):
    data = obj(3000, 4)
    side = make_parity(data, geometry=Geometry(len(data), sector, max_k, share))
    assert sidecar_matches(side, data) is believed
    if not believed:
        with pytest.raises(DamageError, match="its header is unreadable"):
            repair(data, side, "x")


def test_a_header_without_data_sectors_per_word_is_not_believed():
    data = obj(3000, 5)
    side = make_parity(data)
    assert not sidecar_matches(forged(side, [0, len(side) - HEADER_SIZE], max_k=0), data)


def test_a_first_header_of_another_sidecar_is_passed_over_for_the_second(folder):
    data, other = obj(3000, 6), obj(100_000, 6)          # their sidecar is larger
    side, theirs = make_parity(data), make_parity(other)
    mixed = theirs[:HEADER_SIZE] + side[HEADER_SIZE:]    # checks out, but sized for another sidecar
    assert len(theirs) != len(side)
    assert sidecar_matches(mixed, data)
    assert repair(data, mixed, "x").data == data


def test_an_intact_object_has_nothing_damaged_or_lost():
    data = obj(3000, 7)
    got = repair(data, make_parity(data), "x")
    assert (got.damaged, got.lost, got.parity_damaged, got.repaired) == ([], [], 0, True)


def test_parity_sectors_are_the_share_per_thousand_rounded_up():
    # m = max(2, ceil(k * share / 1000)), whatever share the header gives: 91 * 22 = 2002.
    geo = Geometry(91 * 512, 512, 244, 22)
    assert (geo.k, geo.m) == (91, 3)


def test_scattered_odds_at_their_bounds():
    geo = Geometry.for_length(5000)                     # 10 sectors, one word, m = 2
    assert geo.scattered_odds(0) == 1.0 and geo.scattered_odds(10) == 0.0
    for damaged in (-1, 11):
        with pytest.raises(ValueError) as err:
            geo.scattered_odds(damaged)
        assert str(err.value) == "damaged sectors must be between 0 and the object's sectors"


def test_a_first_header_copy_out_of_bounds_is_passed_over_for_the_second():
    data = obj(3000, 8)
    side = make_parity(data)
    assert sidecar_matches(forged(side, [0], sector=32), data)


def test_a_truncated_object_counts_its_missing_sectors_even_when_they_were_zeros():
    data = obj(3000, 9) + bytes(1024)                   # 8 sectors of 512; the last two hold zeros
    side = make_parity(data)
    got = repair(data[:7 * 512], side, "x")             # the last sector cut off
    assert got.data == data and got.damaged == [7] and got.lost == [] and got.repaired


def test_a_table_block_lost_in_both_copies_loses_only_its_own_checksums():
    data = obj(SMALL_OBJECT, 10)                        # 512 data + 24 parity sums in 5 blocks
    side = bytearray(make_parity(data))
    geo = Geometry.for_length(len(data))
    assert geo.table_blocks == 5
    second = HEADER_SIZE + geo.table_blocks * TABLE_BLOCK + geo.parity_sectors * geo.sector_size
    for at in (HEADER_SIZE, second):                    # block 3: data sectors 378-503 only
        side[at + 3 * TABLE_BLOCK + 5] ^= 1
    got = repair(data, bytes(side), "x")                # intact data: its digest still matches
    assert got.damaged == [] and got.parity_damaged == 0
    got = repair(data[:-1] + bytes([data[-1] ^ 1]), bytes(side), "x")
    assert got.damaged == [*range(378, 504), 511] and got.parity_damaged == 0
