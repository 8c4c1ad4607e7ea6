"""plan_layout / describe_plan on the layouts PCs really have, onto larger, equal, smaller, 4Kn disks."""

from __future__ import annotations

import pytest

from recovery.errors import RefusedError
from recovery.model.layout import Layout, PartitionEntry as P
from recovery.plan.layout import MiB, describe_plan, needs_resize, plan_layout, usable_area

GiB = 1024 * MiB
TiB = 1024 * GiB
S = 512

ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
MSR = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
WINRE = "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC"
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
SWAP = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"


def gpt(disk_size, parts, first_lba=2048):
    sectors = disk_size // S
    return Layout("gpt", S, disk_size, "5D3F1E2A-0000-4000-8000-000000000001", first_lba, sectors - 34,
                  tuple(parts))


def part(n, start_mib, size, type_, **kw):
    return P(n, int(start_mib * MiB), size, type_, uuid=f"00000000-0000-4000-8000-{n:012d}", **kw)


def windows(disk=8 * GiB):
    end = usable_area("gpt", disk, S)[0]
    rec_start = _floor(end) - 600 * MiB
    return gpt(disk, [
        part(1, 1, 100 * MiB, ESP, name="EFI system partition", attrs="GUID:63"),
        part(2, 101, 16 * MiB, MSR, name="Microsoft reserved partition"),
        P(3, 117 * MiB, rec_start - 117 * MiB, DATA, uuid="00000000-0000-4000-8000-000000000003",
          name="Basic data partition"),
        P(4, rec_start, _floor(end) - rec_start, WINRE, uuid="00000000-0000-4000-8000-000000000004",
          attrs="RequiredPartition GUID:63"),
    ])


WIN_FS = {1: "vfat", 2: None, 3: "ntfs", 4: "ntfs"}


def linux_uefi(disk=4 * GiB):
    end = usable_area("gpt", disk, S)[0]
    return gpt(disk, [
        part(1, 1, 512 * MiB, ESP),
        part(2, 513, _floor(end) - 513 * MiB - 1024 * MiB - 64 * MiB, LINUX, name="root"),
        part(3, (_floor(end) - 1088 * MiB) / MiB, 1024 * MiB, SWAP),
        P(4, _floor(end) - 64 * MiB, 64 * MiB, LINUX, uuid="00000000-0000-4000-8000-000000000004"),
    ])


LINUX_FS = {1: "vfat", 2: "ext4", 3: "swap", 4: "ext4"}


def mbr_logicals(disk=10 * GiB, home=6 * GiB):
    # p1 root, p2 extended { p5 swap, p6 home }: every logical has 1 MiB before it for its EBR
    root = 2 * GiB
    return Layout("dos", S, disk, "0x1eb0a7c1", None, None, (
        P(1, MiB, root, "83", bootable=True),
        P(2, MiB + root, disk - MiB - root, "5", kind="extended"),
        P(5, 2 * MiB + root, 512 * MiB, "82", kind="logical"),
        P(6, 3 * MiB + root + 512 * MiB, home, "83", kind="logical"),
    ))


MBR_FS = {1: "ext4", 5: "swap", 6: "ext4"}


def _floor(n):
    return n // MiB * MiB


def by_number(layout):
    return {p.number: p for p in layout.partitions}


def identities(layout):
    return [(p.number, p.type, p.uuid, p.name, p.attrs, p.bootable, p.kind) for p in layout.partitions]


def assert_sane(layout):
    end = usable_area(layout.table, layout.disk_size, layout.sector_size)[0]
    parts = sorted(layout.data_partitions(), key=lambda p: p.start)
    for a, b in zip(parts, parts[1:]):
        assert a.end <= b.start, f"{a.number} overlaps {b.number}"
    for p in layout.partitions:
        assert p.start % layout.sector_size == 0 and p.size % layout.sector_size == 0
        assert p.size > 0 and p.end <= end
    for c in (p for p in layout.partitions if p.kind == "extended"):
        for q in (p for p in layout.partitions if p.kind == "logical"):
            assert c.start < q.start and q.end <= c.end


# ----------------------------------------------------------------------------- Windows-shaped GPT


def test_windows_grow_onto_twice_the_size_moves_recovery_to_the_end():
    src = windows(8 * GiB)
    out = plan_layout(src, 16 * GiB, 512, "grow", WIN_FS, {})
    old, new = by_number(src), by_number(out)
    assert_sane(out)
    assert identities(out) == identities(src)
    assert out.disk_id == src.disk_id and out.disk_size == 16 * GiB
    assert out.last_lba == 16 * GiB // S - 34 and out.first_lba == 2048
    assert new[1] == old[1] and new[2] == old[2]
    assert new[4].size == old[4].size
    end = usable_area("gpt", 16 * GiB, S)[0]
    assert 0 <= end - new[4].end < MiB
    assert new[3].start == old[3].start and new[3].end == new[4].start
    assert new[3].size - old[3].size == 8 * GiB
    assert new[4].start % MiB == 0


def test_windows_same_size_is_unchanged_in_every_mode():
    src = windows(8 * GiB)
    for mode in ("keep", "grow", "proportional"):
        out = plan_layout(src, 8 * GiB, 512, mode, WIN_FS, {})
        assert out == src, mode
        assert needs_resize(src, out) == []


def test_linux_onto_a_smaller_disk_shrinks_root_down_to_its_minimum():
    src = linux_uefi(8 * GiB)
    out = plan_layout(src, 4 * GiB, 512, "grow", LINUX_FS, {2: 2 * GiB + 12345})
    old, new = by_number(src), by_number(out)
    assert_sane(out)
    assert new[2].size >= 2 * GiB + 12345 and new[2].size < old[2].size
    assert new[4].size == old[4].size and new[4].start < old[4].start
    assert [(n, o.size, p.size) for n, o, p in needs_resize(src, out)] == [(2, old[2].size, new[2].size)]
    with pytest.raises(RefusedError, match="partition 2 \\(ext4\\) cannot shrink below 3.0 GiB"):
        plan_layout(src, 3 * GiB, 512, "grow", LINUX_FS, {2: 3 * GiB})


def test_a_partition_without_a_minimum_does_not_shrink():
    src = linux_uefi(8 * GiB)
    with pytest.raises(RefusedError, match="partition 2 \\(ext4\\) cannot shrink below 6.4 GiB"):
        plan_layout(src, 4 * GiB, 512, "grow", LINUX_FS, {})


def test_ntfs_shrinks_onto_a_smaller_disk_down_to_its_minimum():
    src = windows(8 * GiB)
    out = plan_layout(src, 6 * GiB, 512, "grow", WIN_FS, {3: 3 * GiB})
    old, new = by_number(src), by_number(out)
    assert_sane(out)
    assert identities(out) == identities(src)
    assert new[3].start == old[3].start and new[3].size == old[3].size - 2 * GiB
    assert new[4].size == old[4].size and new[4].start == old[4].start - 2 * GiB
    assert [n for n, _, _ in needs_resize(src, out)] == [3]
    lines = describe_plan(src, out, WIN_FS)
    assert (f"Partition 3 (ntfs) shrinks from {human(old[3].size)} to {human(new[3].size)} (2.0 GiB less); "
            "its filesystem is resized to match, moving data that lay beyond the new end.") in lines


def test_ntfs_too_full_for_the_smaller_disk_is_refused_with_every_need():
    src = windows(8 * GiB)
    with pytest.raises(RefusedError) as exc:
        plan_layout(src, 6 * GiB, 512, "grow", WIN_FS, {3: 7 * GiB})
    msg = str(exc.value)
    assert "too small" in msg and "\n" not in msg
    assert "partition 3 (ntfs) cannot shrink below 7.0 GiB" in msg
    assert "partition 4 (ntfs) keeps its size: 600.0 MiB" in msg
    assert "partition 1 (vfat) keeps its size: 100.0 MiB" in msg
    assert "partition 2 (Microsoft reserved) keeps its size: 16.0 MiB" in msg
    assert "with gaps and table that is at least 7.7 GiB" in msg


def test_proportional_shrinks_ntfs_and_ext_each_to_its_share():
    # a dual-boot disk: Windows and Linux side by side, onto a disk half the size
    disk = 64 * GiB
    end = usable_area("gpt", disk, S)[0]
    src = gpt(disk, [
        part(1, 1, 100 * MiB, ESP),
        part(2, 101, 40 * GiB, DATA),
        P(3, 101 * MiB + 40 * GiB, _floor(end) - 101 * MiB - 40 * GiB, LINUX, uuid="l"),
    ])
    fs = {1: "vfat", 2: "ntfs", 3: "ext4"}
    out = plan_layout(src, 32 * GiB, 512, "proportional", fs, {2: 10 * GiB, 3: 5 * GiB})
    old, new = by_number(src), by_number(out)
    assert_sane(out)
    assert new[1] == old[1]
    assert 10 * GiB <= new[2].size < old[2].size and 5 * GiB <= new[3].size < old[3].size
    ratio2, ratio3 = new[2].size / old[2].size, new[3].size / old[3].size
    assert abs(ratio2 - ratio3) < 0.01
    lines = describe_plan(src, out, fs)
    assert any(line.startswith("Partition 3 (ext4) shrinks from") and "GiB less) and moves from" in line
               and line.endswith("moving data that lay beyond the new end.") for line in lines), lines


def test_keep_refuses_a_smaller_disk_and_suggests_grow():
    src = windows(8 * GiB)
    with pytest.raises(RefusedError, match=r"partition 4 ends at 8.0 GiB .*\(try --layout grow\)"):
        plan_layout(src, 6 * GiB, 512, "keep", WIN_FS, {3: GiB})


def test_keep_on_a_larger_disk_keeps_places_and_moves_the_backup_header():
    src = windows(8 * GiB)
    out = plan_layout(src, 20 * GiB, 512, "keep", WIN_FS, {})
    assert out.partitions == src.partitions
    assert out.last_lba == 20 * GiB // S - 34
    lines = describe_plan(src, out, WIN_FS)
    assert any("stays unallocated" in line and "12.0 GiB" in line for line in lines)


def test_describe_windows_grow():
    src = windows(8 * GiB)
    out = plan_layout(src, 16 * GiB, 512, "grow", WIN_FS, {})
    lines = describe_plan(src, out, WIN_FS)
    c_old = human(by_number(src)[3].size)
    c_new = human(by_number(out)[3].size)
    assert f"Partition 3 (ntfs) grows from {c_old} to {c_new}; its filesystem is resized to match." in lines
    assert any(line.startswith("Partition 4 (ntfs, recovery) moves to the end of the disk (from 7.4 GiB")
               for line in lines), lines
    assert "Partition 1 (vfat, EFI system) stays as it is (100.0 MiB at 1.0 MiB)." in lines
    assert "Partition 2 (Microsoft reserved) stays as it is (16.0 MiB at 101.0 MiB)." in lines
    assert lines[0] == ("Write a GPT partition table for the 16.0 GiB disk (its backup copy at the end of the disk), "
                        "keeping the original disk and partition IDs.")


def human(n):
    from recovery.units import human_size
    return human_size(n)


# ----------------------------------------------------------------------------- UEFI Linux with a trailing partition


def test_linux_grow_moves_swap_and_the_small_trailing_partition():
    src = linux_uefi(4 * GiB)
    out = plan_layout(src, 8 * GiB, 512, "grow", LINUX_FS, {})
    old, new = by_number(src), by_number(out)
    assert_sane(out)
    assert new[1] == old[1]
    assert new[2].start == old[2].start and new[2].size == old[2].size + 4 * GiB
    for n in (3, 4):
        assert new[n].size == old[n].size and new[n].start == old[n].start + 4 * GiB
    assert identities(out) == identities(src)


def test_linux_grow_picks_a_large_last_partition():
    src = linux_uefi(4 * GiB)
    parts = list(src.partitions)
    # make partition 4 a large /home: it is now the one that grows
    parts[1] = P(2, 513 * MiB, GiB, LINUX, uuid="r")
    parts[2] = P(3, 513 * MiB + GiB, 256 * MiB, SWAP, uuid="s")
    parts[3] = P(4, 513 * MiB + GiB + 256 * MiB, 2 * GiB, LINUX, uuid="h")
    src = src.with_partitions(parts)
    out = plan_layout(src, 8 * GiB, 512, "grow", LINUX_FS, {})
    new = by_number(out)
    assert new[2].size == GiB and new[3].size == 256 * MiB
    assert new[4].size > 6 * GiB


def test_grow_picks_the_os_partition_not_a_trailing_tools_partition():
    # root 2 GiB, then a 1 GiB ext4 data partition: the old "quarter of the largest" rule
    # grew the trailing one; the OS partition grows and the trailing one moves to the end
    src = gpt(4 * GiB, [
        part(1, 1, 256 * MiB, ESP),
        part(2, 257, 2 * GiB, LINUX, name="root"),
        part(3, 257 + 2048, GiB, LINUX, name="tools"),
    ])
    fs = {1: "vfat", 2: "ext4", 3: "ext4"}
    for size in (8 * GiB, 3 * GiB + 512 * MiB):
        out = plan_layout(src, size, 512, "grow", fs, {2: GiB, 3: 512 * MiB})
        old, new = by_number(src), by_number(out)
        assert_sane(out)
        assert new[3].size == old[3].size
        assert 0 <= usable_area("gpt", size, S)[0] - new[3].end < MiB
        assert new[2].start == old[2].start and new[2].end == new[3].start
        assert [n for n, _, _ in needs_resize(src, out)] == [2]


def test_grow_with_a_256_mib_partition_after_root_moves_it_to_the_end():
    src = gpt(8 * GiB, [
        part(1, 1, 512 * MiB, ESP),
        part(2, 513, 7 * GiB, LINUX, name="root"),
        part(3, 513 + 7 * 1024, 256 * MiB, LINUX, name="tools"),
    ])
    fs = {1: "vfat", 2: "ext4", 3: "ext4"}
    out = plan_layout(src, 6 * GiB, 512, "grow", fs, {2: 3 * GiB, 3: 100 * MiB})
    old, new = by_number(src), by_number(out)
    assert_sane(out)
    assert new[3].size == 256 * MiB and new[3].start < old[3].start
    assert 0 <= usable_area("gpt", 6 * GiB, S)[0] - new[3].end < MiB
    assert new[2].end == new[3].start and new[2].size < old[2].size
    lines = describe_plan(src, out, fs)
    assert any(line.startswith("Partition 3 (ext4) moves to the end of the disk") for line in lines), lines


def test_grow_ties_go_to_the_later_partition():
    src = gpt(4 * GiB, [
        part(1, 1, GiB, LINUX),
        part(2, 1025, GiB, LINUX),
    ])
    out = plan_layout(src, 8 * GiB, 512, "grow", {1: "ext4", 2: "ntfs"}, {})
    new = by_number(out)
    assert new[1].size == GiB and new[2].size > 6 * GiB


def test_linux_proportional_scales_data_and_swap_but_not_the_esp():
    src = linux_uefi(4 * GiB)
    out = plan_layout(src, 8 * GiB, 512, "proportional", LINUX_FS, {})
    old, new = by_number(src), by_number(out)
    assert_sane(out)
    assert new[1] == old[1]
    for n in (2, 3, 4):
        ratio = new[n].size / old[n].size
        assert 1.9 < ratio < 2.3, (n, ratio)
        assert new[n].start % MiB == 0
    end = usable_area("gpt", 8 * GiB, S)[0]
    assert end - new[4].end < MiB
    lines = describe_plan(src, out, LINUX_FS)
    assert any(line.startswith("Partition 3 (swap) grows") and "re-created with the same UUID" in line
               for line in lines)


def test_proportional_shrink_respects_used_blocks_and_redistributes():
    src = linux_uefi(4 * GiB)
    old = by_number(src)
    # root is nearly full: it may barely shrink; swap and trailing give up the rest
    used = {2: old[2].size - 3 * MiB, 3: 4096, 4: MiB}
    out = plan_layout(src, 3 * GiB, 512, "proportional", LINUX_FS, used)
    new = by_number(out)
    assert_sane(out)
    assert new[2].size >= used[2]
    assert new[3].size < old[3].size


def test_unresizable_filesystem_keeps_its_size():
    src = linux_uefi(4 * GiB)
    out = plan_layout(src, 8 * GiB, 512, "proportional", {1: "vfat", 2: "ext4", 3: "swap", 4: "btrfs"}, {})
    assert by_number(out)[4].size == by_number(src)[4].size


def test_fat_grows_only_when_a_tool_exists():
    src = Layout("dos", S, 2 * GiB, "0x1", None, None, (P(1, MiB, GiB, "c"),))
    kept = plan_layout(src, 4 * GiB, 512, "grow", {1: "vfat"}, {})
    assert kept.partitions == src.partitions
    grown = plan_layout(src, 4 * GiB, 512, "grow", {1: "vfat"}, {}, fat_resizable=True)
    assert grown.partitions[0].size == 4 * GiB - MiB


# ----------------------------------------------------------------------------- BIOS MBR with logicals


def test_mbr_grow_last_logical_keeps_ebr_spacing():
    src = mbr_logicals(10 * GiB, home=6 * GiB)
    out = plan_layout(src, 20 * GiB, 512, "grow", MBR_FS, {})
    old, new = by_number(src), by_number(out)
    assert_sane(out)
    assert new[1] == old[1] and new[5] == old[5]
    assert new[6].start == old[6].start and new[6].size == old[6].size + 10 * GiB
    assert new[2].start == old[2].start and new[2].end == 20 * GiB
    assert out.disk_id == "0x1eb0a7c1" and new[1].bootable
    assert out.first_lba is None and out.last_lba is None


def test_mbr_grow_root_moves_the_extended_container_with_its_logicals():
    src = mbr_logicals(10 * GiB, home=GiB)
    # root the largest: it grows, the container with swap and a small home moves to the end
    parts = list(src.partitions)
    parts[0] = P(1, MiB, 8 * GiB, "83", bootable=True)
    ext_start = MiB + 8 * GiB
    parts[1] = P(2, ext_start, 10 * GiB - ext_start, "5", kind="extended")
    parts[2] = P(5, ext_start + MiB, 512 * MiB, "82", kind="logical")
    parts[3] = P(6, ext_start + 2 * MiB + 512 * MiB, 10 * GiB - (ext_start + 2 * MiB + 512 * MiB), "83", kind="logical")
    src = src.with_partitions(parts)
    out = plan_layout(src, 16 * GiB, 512, "grow", MBR_FS, {})
    old, new = by_number(src), by_number(out)
    assert_sane(out)
    assert new[1].size == old[1].size + 6 * GiB
    for n in (2, 5, 6):
        assert new[n].start - old[n].start == 6 * GiB and new[n].size == old[n].size
    assert new[5].start - new[2].start == MiB           # the first EBR's MiB
    assert new[6].start - new[5].end == MiB             # the second EBR's MiB
    assert new[2].end == 16 * GiB


def test_mbr_beyond_2_tib_uses_only_what_mbr_can_address():
    src = mbr_logicals(10 * GiB)
    out = plan_layout(src, 3 * TiB, 512, "grow", MBR_FS, {})
    assert_sane(out)
    assert max(p.end for p in out.partitions) == 2 * TiB
    assert all((p.start + p.size) // 512 <= 2 ** 32 for p in out.partitions)
    lines = describe_plan(src, out, MBR_FS)
    assert "Space beyond 2.0 TiB stays unused: an MBR partition table cannot address it." in lines


def test_mbr_on_4096_byte_sectors_addresses_16_tib():
    src = mbr_logicals(10 * GiB)
    out = plan_layout(src, 3 * TiB, 4096, "grow", MBR_FS, {})
    assert max(p.end for p in out.partitions) == 3 * TiB


# ----------------------------------------------------------------------------- 4Kn


def test_512_layout_onto_4kn_disk_is_converted():
    src = windows(8 * GiB)
    out = plan_layout(src, 16 * GiB, 4096, "grow", WIN_FS, {})
    assert out.sector_size == 4096
    assert out.first_lba == 2048 * 512 // 4096
    assert out.last_lba == 16 * GiB // 4096 - 6
    assert_sane(out)
    assert by_number(out)[1].start == MiB
    lines = describe_plan(src, out, WIN_FS)
    assert "The table is converted from 512-byte to 4096-byte sectors." in lines
    assert ("Warning: the NTFS in partition 3, 4 keeps its 512-byte sector geometry; Linux reads it, "
            "but Windows may not start from this disk.") in lines


def test_unaligned_layout_onto_4kn_disk_is_refused():
    src = Layout("dos", S, 2 * GiB, "0x2", None, None, (P(1, 63 * S, 2 * GiB - 63 * S, "83", bootable=True),))
    with pytest.raises(RefusedError, match="cannot convert the table from 512-byte to 4096-byte sectors: "
                                           "partition 1 starts at byte 32256"):
        plan_layout(src, 4 * GiB, 4096, "grow", {1: "ext4"}, {})
    # the same layout onto a 512-byte disk is fine
    out = plan_layout(src, 4 * GiB, 512, "grow", {1: "ext4"}, {})
    assert out.partitions[0].start == 63 * S and out.partitions[0].end == 4 * GiB


def test_4kn_first_lba_stays_legal_when_the_source_used_34():
    src = windows(8 * GiB)
    src = Layout(src.table, src.sector_size, src.disk_size, src.disk_id, 34, src.last_lba, src.partitions)
    out = plan_layout(src, 8 * GiB, 4096, "keep", WIN_FS, {})
    assert out.first_lba == 6


# ----------------------------------------------------------------------------- misc


def test_unknown_mode_is_refused():
    with pytest.raises(RefusedError, match="unknown layout mode 'stretch'"):
        plan_layout(windows(), 16 * GiB, 512, "stretch", WIN_FS, {})


def test_whole_disk_filesystem_grows():
    src = Layout("none", S, GiB, None, None, None, (P(0, 0, GiB, ""),))
    out = plan_layout(src, 2 * GiB, 512, "grow", {0: "ext4"}, {})
    assert out.partitions[0].size == 2 * GiB
    with pytest.raises(RefusedError, match="too small"):
        plan_layout(src, GiB // 2, 512, "grow", {0: "ext4"}, {0: GiB - 1})


def test_describe_without_before_lists_partitions():
    lines = describe_plan(None, windows(), WIN_FS)
    assert "Partition 1 (vfat, EFI system): 100.0 MiB at 1.0 MiB." in lines


@pytest.mark.parametrize("make,fs", [(linux_uefi, LINUX_FS), (mbr_logicals, MBR_FS)])
def test_linux_and_mbr_same_size_are_unchanged(make, fs):
    src = make()
    for mode in ("keep", "grow", "proportional"):
        out = plan_layout(src, src.disk_size, 512, mode, fs, {})
        assert out.partitions == src.partitions, mode
