"""The rules plan_layout rests on, each value pinned: which partitions have a role (and so keep
their size), which filesystem names are one family, which partitions can be resized, and the
usable area of a GPT, MBR or table-less target in whole sectors."""

from __future__ import annotations

import pytest

from recovery.model.layout import PartitionEntry as P
from recovery.plan.layout import fs_family, resizable, role, usable_area

MiB = 1024 * 1024
GiB = 1024 * MiB


def part(type_: str, kind: str = "primary") -> P:
    return P(1, MiB, 100 * MiB, type_, kind=kind)


@pytest.mark.parametrize("type_,expected", [
    ("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EFI system"),
    ("c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "EFI system"),      # GUIDs compare in upper case
    ("ef", "EFI system"),                                         # MBR id as sfdisk writes it
    ("E3C9E316-0B5C-4DB8-817D-F92DF00215AE", "Microsoft reserved"),
    ("21686148-6449-6E6F-744E-656564454649", "BIOS boot"),
    ("DE94BBA4-06D1-4D40-A16A-BFD50179D6AC", "recovery"),
    ("27", "recovery"),
    ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", None),               # Linux filesystem
    ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", None),               # Windows basic data
    ("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", None),               # Linux swap: no role, resizable
    ("82", None),
    ("83", None),
    ("", None),
])
def test_role_of_each_partition_type(type_, expected):
    assert role(part(type_)) == expected


def test_an_extended_partition_is_extended_whatever_its_type():
    assert role(part("f", kind="extended")) == "extended"
    assert role(part("5", kind="extended")) == "extended"
    assert role(part("f", kind="logical")) is None


@pytest.mark.parametrize("name,family", [
    ("ext2", "ext"), ("ext3", "ext"), ("EXT4", "ext"), ("ntfs", "ntfs"), ("NTFS", "ntfs"),
    ("vfat", "fat"), ("fat", "fat"), ("fat12", "fat"), ("fat16", "fat"), ("fat32", "fat"), ("msdos", "fat"),
    ("swap", "swap"), ("xfs", None), ("btrfs", None), ("exfat", None), ("", None), (None, None),
])
def test_fs_family(name, family):
    assert fs_family(name) == family


def test_what_can_be_resized():
    data = part("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
    assert resizable(data, "ext4") and resizable(data, "ntfs") and resizable(data, "swap")
    assert not resizable(data, "xfs") and not resizable(data, None)
    assert not resizable(data, "vfat")                        # FAT only when asked
    assert resizable(data, "vfat", fat_resizable=True)
    # A partition with a role keeps its size whatever its filesystem.
    assert not resizable(part("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"), "vfat", fat_resizable=True)
    assert not resizable(part("DE94BBA4-06D1-4D40-A16A-BFD50179D6AC"), "ntfs")
    assert not resizable(part("5", kind="extended"), "ext4")


def test_usable_area_of_a_gpt_target_leaves_room_for_the_backup_table():
    # 512-byte sectors: 32 sectors of entries, the backup header in the last one.
    assert usable_area("gpt", GiB, 512) == ((GiB // 512 - 34 + 1) * 512, 34, GiB // 512 - 34)
    # 4096-byte sectors: 4 sectors of entries.
    assert usable_area("gpt", GiB, 4096) == ((GiB // 4096 - 6 + 1) * 4096, 6, GiB // 4096 - 6)
    end, first, last = usable_area("gpt", GiB + 1000, 512)   # a size not a whole number of sectors
    sectors = GiB // 512 + 1                                  # the partial sector at the end is unusable
    assert (end, first, last) == ((sectors - 34 + 1) * 512, 34, sectors - 34)
    assert all(type(v) is int for v in (end, first, last))


def test_usable_area_of_mbr_and_tableless_targets():
    assert usable_area("dos", GiB, 512) == (GiB, None, None)
    assert usable_area("dos", 3 * 1024 * GiB, 512) == (2 ** 32 * 512, None, None)   # MBR ends at 2 TiB
    assert usable_area("none", GiB + 100, 512) == (GiB, None, None)
    assert type(usable_area("none", GiB + 100, 512)[0]) is int
