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


# ----------------------------------------------------------------------------- plan_layout's refusals, word for word
from recovery.errors import RefusedError                              # noqa: E402
from recovery.model.layout import Layout                              # noqa: E402
from recovery.plan.layout import describe_plan, plan_layout           # noqa: E402

LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


def whole_disk(size=100 * MiB):
    """A disk with no table: one filesystem from byte 0 (entry number 0)."""
    return Layout("none", 512, size, partitions=(P(0, 0, size, ""),))


def test_unknown_mode_and_unsupported_sector_sizes_are_refused_in_words():
    with pytest.raises(RefusedError) as e:
        plan_layout(whole_disk(), GiB, 512, "sideways", {0: "ext4"}, {})
    assert e.value.message == "unknown layout mode 'sideways': use keep, grow or proportional"
    for sector in (512, 1024, 2048, 4096):
        assert plan_layout(whole_disk(), GiB, sector, "keep", {0: "ext4"}, {}).sector_size == sector
    with pytest.raises(RefusedError) as e:
        plan_layout(whole_disk(), GiB, 1025, "keep", {0: "ext4"}, {})
    assert e.value.message == "the target reports 1025-byte sectors, which Lifeboat does not support"


def test_a_whole_disk_filesystem_keeps_or_fills_the_target():
    src = whole_disk(100 * MiB)
    kept = plan_layout(src, GiB, 512, "keep", {0: "ext4"}, {})
    assert kept.partitions == (P(0, 0, 100 * MiB, ""),) and kept.disk_size == GiB
    grown = plan_layout(src, GiB, 512, "grow", {0: "ext4"}, {})
    assert grown.partitions == (P(0, 0, GiB, ""),)
    # A filesystem that cannot resize keeps its size in every mode.
    assert plan_layout(src, GiB, 512, "grow", {0: "xfs"}, {}).partitions == (P(0, 0, 100 * MiB, ""),)
    # Onto a smaller disk it shrinks to the target when its data fits, never below min_size.
    assert plan_layout(src, 60 * MiB, 512, "grow", {0: "ext4"}, {0: 40 * MiB}).partitions == (P(0, 0, 60 * MiB, ""),)
    assert plan_layout(src, 40 * MiB, 512, "grow", {0: "ext4"}, {0: 40 * MiB}).partitions == (P(0, 0, 40 * MiB, ""),)
    with pytest.raises(RefusedError) as e:
        plan_layout(src, 39 * MiB, 512, "grow", {0: "ext4"}, {0: 40 * MiB})
    assert e.value.message == "the target disk (39.0 MiB) is too small: the saved disk needs 40.0 MiB"
    with pytest.raises(RefusedError) as e:
        plan_layout(src, 60 * MiB, 512, "keep", {0: "ext4"}, {0: 40 * MiB})
    # Kept as it is, the filesystem needs its whole size, not what it could shrink to.
    assert e.value.message == "the target disk (60.0 MiB) is too small: the saved disk needs 100.0 MiB"
    with pytest.raises(RefusedError) as e:
        plan_layout(src, 60 * MiB, 512, "grow", {0: "xfs"}, {0: 40 * MiB})
    assert e.value.message == "the target disk (60.0 MiB) is too small: the saved disk needs 100.0 MiB"
    with pytest.raises(RefusedError) as e:
        plan_layout(whole_disk(100 * MiB + 512), GiB, 4096, "keep", {0: "ext4"}, {})
    assert e.value.message == "the saved disk's size is not a multiple of the target's 4096-byte sectors"


def test_describe_plan_names_the_table_with_its_article():
    mbr = Layout("dos", 512, GiB, "0x12345678", partitions=(P(1, MiB, GiB - MiB, "83"),))
    assert describe_plan(mbr, mbr, {1: "ext4"})[0].startswith("Write an MBR partition table for the 1.0 GiB disk, ")
    gpt = Layout("gpt", 512, GiB, "5D3F1E2A-0000-4000-8000-000000000001", 2048, GiB // 512 - 34,
                 (P(1, MiB, 100 * MiB, LINUX),))
    first = describe_plan(gpt, gpt, {1: "ext4"})[0]
    assert first.startswith("Write a GPT partition table for the 1.0 GiB disk (its backup copy at the end of the disk), ")
    assert describe_plan(None, whole_disk(), {0: "ext4"})[0] != first


def test_describe_plan_says_what_stays_unallocated_from_one_mib_on():
    def lines(free):
        end = usable_area("gpt", GiB, 512)[0]
        layout = Layout("gpt", 512, GiB, "5D3F1E2A-0000-4000-8000-000000000001", 2048, GiB // 512 - 34,
                        (P(1, MiB, end - MiB - free, LINUX),))
        return describe_plan(layout, layout, {1: "ext4"})
    assert lines(MiB)[-1] == "1.0 MiB at the end of the disk stays unallocated."
    assert not lines(MiB - 4096)[-1].endswith("stays unallocated.")


def test_describe_plan_warns_that_an_mbr_cannot_reach_past_2_tib():
    big = 3 * 1024 * GiB
    mbr = Layout("dos", 512, big, "0x12345678", partitions=(P(1, MiB, GiB, "83"),))
    assert describe_plan(mbr, mbr, {1: "ext4"})[-1] == \
        "Space beyond 2.0 TiB stays unused: an MBR partition table cannot address it."
    exact = Layout("dos", 512, 2 ** 32 * 512, "0x12345678", partitions=(P(1, MiB, GiB, "83"),))
    assert not describe_plan(exact, exact, {1: "ext4"})[-1].startswith("Space beyond")


ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


def two_partition_gpt():
    """ESP 1-101 MiB, ext4 101-901 MiB on a 1 GiB GPT disk."""
    return Layout("gpt", 512, GiB, "5D3F1E2A-0000-4000-8000-000000000001", 2048, GiB // 512 - 34,
                  (P(1, MiB, 100 * MiB, ESP), P(2, 101 * MiB, 800 * MiB, LINUX)))


def refusal(*args) -> str:
    with pytest.raises(RefusedError) as e:
        plan_layout(*args)
    return e.value.message


def test_too_small_for_keep_names_the_partition_that_overruns_and_suggests_grow():
    src = two_partition_gpt()
    assert refusal(src, 512 * MiB, 512, "keep", {1: "vfat", 2: "ext4"}, {}) == (
        "the target disk (512.0 MiB) is too small: partition 2 ends at 901.0 MiB but the disk's GPT usable "
        "space ends at 512.0 MiB (try --layout grow)")
    mbr = Layout("dos", 512, GiB, "0x12345678", partitions=(P(1, MiB, 800 * MiB, "83"),))
    assert refusal(mbr, 512 * MiB, 512, "keep", {1: "ext4"}, {}) == (
        "the target disk (512.0 MiB) is too small: partition 1 ends at 801.0 MiB but the disk's usable "
        "space ends at 512.0 MiB (try --layout grow)")
    # Nothing can shrink (xfs): no hint, since grow cannot help either.
    assert refusal(src, 512 * MiB, 512, "grow", {1: "vfat", 2: "xfs"}, {}) == (
        "the target disk (512.0 MiB) is too small: partition 2 ends at 901.0 MiB but the disk's GPT usable "
        "space ends at 512.0 MiB")


@pytest.mark.parametrize("mode", ["grow", "proportional"])
def test_too_small_to_shrink_lists_every_partitions_need_and_the_total(mode):
    # 1 MiB gap + 100 MiB ESP kept + 600 MiB ext4 minimum, plus the backup GPT (17 KiB).
    assert refusal(two_partition_gpt(), 512 * MiB, 512, mode, {1: "vfat", 2: "ext4"}, {2: 600 * MiB}) == (
        "the target disk (512.0 MiB) is too small: partition 1 (vfat) keeps its size: 100.0 MiB; "
        "partition 2 (ext4) cannot shrink below 600.0 MiB; with gaps and table that is at least 701.0 MiB")
    no_fs = refusal(two_partition_gpt(), 512 * MiB, 512, mode, {1: None, 2: "ext4"}, {2: 600 * MiB})
    assert no_fs.startswith("the target disk (512.0 MiB) is too small: partition 1 (EFI system) keeps its size: ")


def test_a_table_that_cannot_be_written_in_bigger_sectors_is_refused_in_words():
    odd_start = Layout("gpt", 512, GiB, "5D3F1E2A-0000-4000-8000-000000000001", 34, GiB // 512 - 34,
                       (P(1, MiB + 512, 100 * MiB, LINUX),))
    assert refusal(odd_start, GiB, 4096, "keep", {1: "xfs"}, {}) == (
        "cannot convert the table from 512-byte to 4096-byte sectors: partition 1 starts at byte 1049088, "
        "not a multiple of 4096")
    odd_size = Layout("gpt", 512, GiB, "5D3F1E2A-0000-4000-8000-000000000001", 34, GiB // 512 - 34,
                      (P(1, MiB, 100 * MiB + 512, LINUX),))
    assert refusal(odd_size, GiB, 4096, "keep", {1: "xfs"}, {}) == (
        "cannot convert the table from 512-byte to 4096-byte sectors: partition 1 has a size of byte 104858112, "
        "not a multiple of 4096")
