"""Clonezilla image folders made by Clonezilla's own `ocs-sr savedisk` (tests/clonezilla_images.py),
read back as Sources: for every compression Clonezilla offers and for split pieces, each used
range's bytes equal the original disk's, the used map covers every block the filesystem uses,
the layout equals the original disk's (sfdisk --json), the folder's MD5SUMS/SHA1SUMS and
partclone's checksums pass; a missing piece, a cut piece and a changed byte each give one
plain error naming the piece."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from recovery.errors import DamageError, UsageError
from recovery.fs import pread_reader, probe_partition
from recovery.probe.table import read_layout
from recovery.sources import clonezilla
from tests import clonezilla_images as cz

pytestmark = pytest.mark.loop


def _covered(used: list[tuple[int, int]], ranges) -> bool:
    """Every (offset, length) of `ranges` lies inside the union of `used`."""
    spans = sorted(used)
    for off, length in ranges:
        end = off + length
        pos = off
        for a, n in spans:
            if a <= pos < a + n:
                pos = a + n
            if pos >= end:
                break
        if pos < end:
            return False
    return True


def _layout_identity(layout) -> tuple:
    ss = layout.sector_size
    disk_id = layout.disk_id if layout.table == "gpt" else layout.disk_id
    parts = tuple((p.start // ss, p.size // ss, p.type, p.uuid, p.name, p.attrs, p.bootable or None)
                  for p in layout.partitions)
    return layout.table, disk_id, parts


def _sfdisk_identity(table: dict) -> tuple:
    parts = tuple((p["start"], p["size"], p["type"].upper() if table["label"] == "gpt" else p["type"].lower(),
                   p.get("uuid"), p.get("name"), p.get("attrs"), p.get("bootable"))
                  for p in table["partitions"])
    return table["label"], table.get("id"), parts


def _fs_uses(fs_map, f, p) -> list[tuple[int, int]]:
    """The filesystem's used ranges. Lifeboat's NTFS map counts the whole last 4 KiB for the
    backup boot sector; NTFS uses only its clusters and that one sector after the volume."""
    if p.fs != "ntfs":
        return list(fs_map.used)
    boot = os.pread(f.fileno(), 512, p.start)
    sector = struct.unpack_from("<H", boot, 0x0B)[0]
    cluster = sector * boot[0x0D]
    volume_end = struct.unpack_from("<Q", boot, 0x28)[0] * sector
    clusters_end = volume_end // cluster * cluster
    ranges = [(o, min(n, clusters_end - o)) for o, n in fs_map.used if o < clusters_end]
    return ranges + [(volume_end, sector)]


def check_against_original(source, disk: Path) -> None:
    assert source.layout == read_layout(str(disk))
    assert _layout_identity(source.layout) == _sfdisk_identity(cz.original_sfdisk(disk))
    with open(disk, "rb") as f:
        for p in source.partitions:
            reader = source.reader(p.number)
            used = reader.used_ranges()
            written = 0
            last_end = 0
            for offset, data in source.extents(p.number):
                assert offset >= last_end, "extents out of order"
                assert os.pread(f.fileno(), len(data), p.start + offset) == data, \
                    f"partition {p.number}: bytes at {offset} differ"
                last_end = offset + len(data)
                written += len(data)
            assert written == p.used_bytes == sum(n for _, n in used)
            fs_map = probe_partition(pread_reader(f.fileno(), p.start, p.size), p.size)
            if p.fs == "swap":
                # Nothing saved but its UUID and label: the header page mkswap writes with
                # them, the same bytes as the original's (compared above).
                assert written == os.sysconf("SC_PAGE_SIZE") and used == [(0, written)]
                continue
            if p.used_bytes:
                assert _covered(used, _fs_uses(fs_map, f, p)), f"partition {p.number}: the used map misses blocks"
                # random access gives the same bytes as the disk over the first used stretches
                for off, length in used[:3]:
                    n = min(length, 1 << 20)
                    assert reader.read(off, n) == os.pread(f.fileno(), n, p.start + off)


@pytest.mark.parametrize("variant", ["zstd-split", "xz-split", "none"])
def test_linux_gpt_disk(variant, loops, tmp_path):
    """Saved whole, split into pieces in two compressions and uncompressed (the other
    compressions are read from the saves the tests below use: cz.COMPRESSION_SUFFIX)."""
    disk, folder = cz.clonezilla_image("linux", variant, loops, tmp_path)
    cz.assert_compressed(folder, variant)
    with clonezilla.open(str(folder)) as source:
        check_against_original(source, disk)
        assert source.prove() == []
        assert source.describe()[0] == f"Clonezilla image, {source.created[:10]}, 3 partitions"
        swap = [p for p in source.partitions if p.fs == "swap"]
        assert len(swap) == 1 and swap[0].uuid and swap[0].label == "lifeboat-swap"
        assert source.boot_areas()[0][0] == 0 and len(source.boot_areas()[0][1]) == 440
        if variant == "zstd-split":
            assert any(name.endswith(".ab") for name in os.listdir(folder))


def test_created_is_when_clonezilla_saved(loops, tmp_path):
    _disk, folder = cz.clonezilla_image("linux", "zstd-split", loops, tmp_path)
    with clonezilla.open(str(folder)) as source:
        log = (folder / "clonezilla-img").read_text()
        assert source.created[:10] in log and source.created[11:19] in log
        assert source.describe()[0] == f"Clonezilla image, {source.created[:10]}, 3 partitions"
    # Without the saving log, the folder's name (ocs-sr's default: date, hour, "-img") says when.
    copy = _copy(folder, tmp_path)
    (copy / "clonezilla-img").unlink()
    with clonezilla.open(str(copy)) as source:
        assert source.created == "2025-03-02T10:00:00"


def test_windows_gpt_disk(loops, tmp_path):
    disk, folder = cz.clonezilla_image("windows", "bzip2", loops, tmp_path)
    cz.assert_compressed(folder, "bzip2")
    with clonezilla.open(str(folder)) as source:
        check_against_original(source, disk)
        assert source.prove() == []
        fs = {p.number: p.fs for p in source.partitions}
        assert fs[1] == "vfat" and fs[3] == "ntfs" and fs[4] == "ntfs"


def test_mbr_disk_with_logical_partitions_and_hidden_data(loops, tmp_path):
    disk, folder = cz.clonezilla_image("mbr", "gzip", loops, tmp_path)
    cz.assert_compressed(folder, "gzip")
    with clonezilla.open(str(folder)) as source:
        check_against_original(source, disk)
        assert source.prove() == []
        assert [p.number for p in source.partitions] == [1, 5, 6]
        areas = dict(source.boot_areas())
        with open(disk, "rb") as f:
            assert areas[0] == f.read(440)
            hidden = areas[512]
            assert hidden and os.pread(f.fileno(), len(hidden), 512) == hidden


def test_saveparts_holds_only_the_chosen_partitions(loops, tmp_path):
    disk, folder = cz.clonezilla_image("linux", "saveparts-lz4", loops, tmp_path)
    cz.assert_compressed(folder, "saveparts-lz4")
    assert not (folder / "disk").exists()
    with clonezilla.open(str(folder)) as source:
        check_against_original(source, disk)
        assert source.prove() == []
        assert not source.whole_disk and source.saved == {1, 2}
        data = source.partition(3)
        assert data.fs == "ntfs" and data.used_bytes == 0 and list(source.extents(3)) == []
        assert source.describe()[0].endswith("2 partitions (saved partition by partition)")


def test_two_disks_in_one_folder(loops, tmp_path):
    linux, mbr, folder = cz.clonezilla_two_disks(loops, tmp_path)
    cz.assert_compressed(folder, "two-disks")
    names = json.loads((folder.parent / "names.json").read_text())
    assert clonezilla.disks(str(folder)) == names
    with pytest.raises(UsageError) as exc:
        clonezilla.open(str(folder))
    assert str(exc.value) == f"{folder} holds 2 disks ({names[0]}, {names[1]}); say which one"
    for name, disk in zip(names, (linux, mbr)):
        with clonezilla.open(str(folder), disk=name) as source:
            assert source.disk == name
            check_against_original(source, disk)
            assert source.prove() == []


def _copy(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    return copy


def test_missing_piece_is_named(loops, tmp_path):
    _disk, folder = cz.clonezilla_image("linux", "zstd-split", loops, tmp_path)
    copy = _copy(folder, tmp_path)
    pieces = sorted(n for n in os.listdir(copy) if n.startswith(tuple(f"{d}p2." for d in clonezilla.disks(str(copy)))))
    assert len(pieces) >= 2
    (copy / pieces[0]).unlink()
    with pytest.raises(DamageError) as exc:
        clonezilla.open(str(copy))
    assert str(exc.value) == f"piece {pieces[0]} is missing"


def test_cut_piece_is_named(loops, tmp_path):
    _disk, folder = cz.clonezilla_image("linux", "zstd-split", loops, tmp_path)
    copy = _copy(folder, tmp_path)
    for sums in ("MD5SUMS", "SHA1SUMS"):
        (copy / sums).unlink()       # so partclone's own reading must find it
    last = sorted(n for n in os.listdir(copy) if ".ext4-ptcl-img." in n)[-1]
    size = (copy / last).stat().st_size
    os.truncate(copy / last, size // 2)
    with clonezilla.open(str(copy)) as source:
        damage = source.prove()
    assert len(damage) == 1
    assert damage[0].why.startswith(f"{last} ends early")
    assert damage[0].partition == 2


def test_changed_byte_fails_the_checksums_naming_the_piece(loops, tmp_path):
    _disk, folder = cz.clonezilla_image("linux", "none", loops, tmp_path)
    copy = _copy(folder, tmp_path)
    image = next(n for n in os.listdir(copy) if ".ext4-ptcl-img." in n)
    with open(copy / image, "r+b") as f:
        f.seek(2 * 1024 * 1024)
        byte = f.read(1)
        f.seek(2 * 1024 * 1024)
        f.write(bytes([byte[0] ^ 0x55]))
    with clonezilla.open(str(copy)) as source:
        damage = source.prove()
    # MD5SUMS names it first; SHA1SUMS and partclone's own checksums add nothing more.
    assert [d.why for d in damage] == [f"{image} fails its MD5 checksum (the image is damaged)"]
    assert damage[0].partition == 2
    for sums in ("MD5SUMS", "SHA1SUMS"):
        (copy / sums).unlink()
    with clonezilla.open(str(copy)) as source:
        damage = source.prove()
    assert len(damage) == 1 and damage[0].partition == 2
    assert damage[0].why.startswith(f"{image}: partclone checksum mismatch")


def test_not_a_clonezilla_folder(tmp_path):
    (tmp_path / "x").mkdir()
    assert clonezilla.open(str(tmp_path / "x")) is None
    assert clonezilla.open(str(tmp_path)) is None
