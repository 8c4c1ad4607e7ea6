"""write_layout round trips, verified from outside with sfdisk --json and byte comparison."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess

import pytest

from recovery.apply.table import partition_path, render_script, write_layout
from recovery.errors import DiskError
from recovery.model.layout import Layout
from recovery.probe.bootarea import read_boot_areas
from recovery.probe.table import read_layout
from tests.diskimages import (LINUX_FS, MiB, PartSpec, make_disk, mbr_logical_parts, pattern, windows_gpt_parts)


def sfdisk_json(path) -> dict:
    out = subprocess.run(["sfdisk", "--json", str(path)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["partitiontable"]


def identities(dump: dict) -> tuple:
    """What must survive a restore, as sfdisk prints it (node names stripped to numbers)."""
    device = dump["device"]
    parts = tuple((p["node"][len(device):].lstrip("p"), p["start"], p["size"], p["type"], p.get("uuid"),
                   p.get("name"), p.get("attrs"), p.get("bootable", False)) for p in dump["partitions"])
    return dump["label"], dump["id"], dump.get("firstlba"), parts


def read_at(path, offset, length) -> bytes:
    with open(path, "rb") as f:
        return os.pread(f.fileno(), length, offset)


def grown(layout: Layout, size: int) -> Layout:
    """What the planner hands over for a bigger target: new disk size, usable area to the end."""
    last = size // layout.sector_size - 34 if layout.table == "gpt" else None
    return dataclasses.replace(layout, disk_size=size, last_lba=last)


def assert_boot_areas_equal(src, dst, areas):
    assert len(areas) == 2, "the fixture should have boot code and a gap"
    for offset, data in areas:
        assert read_at(dst, offset, len(data)) == data
        assert read_at(dst, offset, len(data)) == read_at(src, offset, len(data))


def test_gpt_round_trip_onto_larger_image(tmp_path):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    layout = make_disk(src, 64 * MiB, "gpt", windows_gpt_parts())
    areas = read_boot_areas(str(src), layout)
    dst.write_bytes(b"")                               # the image grows to the planned size
    write_layout(str(dst), grown(layout, 128 * MiB), areas)

    assert dst.stat().st_size == 128 * MiB
    before, after = sfdisk_json(src), sfdisk_json(dst)
    assert identities(after) == identities(before)
    assert after["lastlba"] == 128 * MiB // 512 - 34
    # the backup header sits in the target's last sector, pointing back at LBA 1
    assert read_at(dst, 128 * MiB - 512, 8) == b"EFI PART"
    assert_boot_areas_equal(src, dst, areas)
    check = subprocess.run(["sfdisk", "--verify", str(dst)], capture_output=True, text=True)
    assert check.returncode == 0 and "backup" not in check.stderr.lower(), check.stderr


def test_mbr_logicals_round_trip_onto_larger_image(tmp_path):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    layout = make_disk(src, 64 * MiB, "dos", mbr_logical_parts())
    areas = read_boot_areas(str(src), layout)
    write_layout(str(dst), grown(layout, 96 * MiB), areas)
    assert identities(sfdisk_json(dst)) == identities(sfdisk_json(src))
    assert read_layout(str(dst)).partitions == layout.partitions
    assert_boot_areas_equal(src, dst, areas)
    # the disk signature and partition entries (440..512) are the table's, not the boot area's
    assert read_at(dst, 440, 72) == read_at(src, 440, 72)


def test_write_replaces_an_older_table_and_clears_the_gap(tmp_path):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    layout = make_disk(src, 64 * MiB, "gpt", windows_gpt_parts(), boot_code=False)
    make_disk(dst, 64 * MiB, "dos", mbr_logical_parts())   # foreign table, boot code and gap bytes
    write_layout(str(dst), layout, read_boot_areas(str(src), layout))
    assert identities(sfdisk_json(dst)) == identities(sfdisk_json(src))
    assert read_at(dst, 0, 440) == bytes(440)
    assert read_at(dst, 34 * 512, MiB - 34 * 512) == bytes(MiB - 34 * 512)


def test_4kn_image_round_trip(tmp_path):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    layout = make_disk(src, 64 * MiB, "gpt", windows_gpt_parts(), sector_size=4096)
    areas = read_boot_areas(str(src), layout)
    write_layout(str(dst), grown(layout, 96 * MiB), areas)
    got = read_layout(str(dst))
    assert got.sector_size == 4096 and got.disk_id == layout.disk_id
    assert got.partitions == layout.partitions
    assert read_at(dst, 96 * MiB - 4096, 8) == b"EFI PART"
    assert_boot_areas_equal(src, dst, areas)
    # onto a file already larger than planned: the backup still goes to the very end
    bigger = tmp_path / "bigger.img"
    bigger.write_bytes(b"")
    os.truncate(bigger, 128 * MiB)
    write_layout(str(bigger), layout, areas)
    assert read_at(bigger, 128 * MiB - 4096, 8) == b"EFI PART"
    assert read_layout(str(bigger)).partitions == layout.partitions


def test_names_with_quotes_survive(tmp_path):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    layout = make_disk(src, 16 * MiB, "gpt", [PartSpec(4 * MiB, LINUX_FS)])
    layout = layout.with_partitions([dataclasses.replace(layout.partitions[0], name='say "hi", ok')])
    write_layout(str(dst), layout, [])
    assert sfdisk_json(dst)["partitions"][0]["name"] == 'say "hi", ok'


def test_no_table_wipes_the_old_one(tmp_path):
    dst = tmp_path / "dst.img"
    make_disk(dst, 32 * MiB, "gpt", windows_gpt_parts(data_size=4 * MiB))
    write_layout(str(dst), Layout(table="none", sector_size=512, disk_size=32 * MiB), [])
    assert read_layout(str(dst)).table == "none"
    assert read_at(dst, 32 * MiB - 512, 8) != b"EFI PART"


def test_script_is_logged_and_carries_identities(tmp_path, caplog):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    layout = make_disk(src, 64 * MiB, "gpt", windows_gpt_parts())
    script = render_script(layout, str(dst))
    assert f"label-id: {layout.disk_id}" in script and "first-lba: 2048" in script
    assert 'attrs="RequiredPartition GUID:63"' in script
    with caplog.at_level("INFO", logger="recovery.apply.table"):
        write_layout(str(dst), layout, [])
    assert layout.partitions[2].uuid in caplog.text


def test_render_drops_last_lba_that_does_not_fit():
    layout = Layout(table="gpt", sector_size=512, disk_size=32 * MiB, first_lba=2048, last_lba=10**9)
    assert "last-lba" not in render_script(layout, "/tmp/x.img")


def test_partition_path_names():
    assert partition_path("/dev/sdb", 1) == "/dev/sdb1"
    assert partition_path("/dev/nvme0n1", 2) == "/dev/nvme0n1p2"
    assert partition_path("/dev/loop3", 1) == "/dev/loop3p1"
    assert partition_path("/dev/mmcblk0", 5) == "/dev/mmcblk0p5"
    assert partition_path("/srv/images/disk.img", 1) is None


def test_image_path_has_no_partition_nodes(tmp_path):
    img = tmp_path / "x.img"
    make_disk(img, 8 * MiB, "none", [])
    assert partition_path(str(img), 1) is None


# ---- block devices (loop) ----

@pytest.mark.loop
def test_gpt_onto_loop_device(tmp_path, loops):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    layout = make_disk(src, 64 * MiB, "gpt", windows_gpt_parts())
    areas = read_boot_areas(str(src), layout)
    make_disk(dst, 128 * MiB, "dos", mbr_logical_parts())    # old table with 6 partitions
    dev = loops.attach(dst)
    assert os.path.exists(partition_path(dev, 7))
    write_layout(dev, grown(layout, 128 * MiB), areas)
    assert identities(sfdisk_json(dev)) == identities(sfdisk_json(src))
    for part in layout.partitions:
        node = partition_path(dev, part.number)
        assert os.path.exists(node)
        with open(f"/sys/class/block/{os.path.basename(node)}/start") as f:
            assert int(f.read()) * 512 == part.start
    assert not os.path.exists(partition_path(dev, 7)), "stale partition node left behind"
    assert_boot_areas_equal(src, dev, areas)


@pytest.mark.loop
def test_4kn_onto_loop_device(tmp_path, loops):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    layout = make_disk(src, 64 * MiB, "gpt", windows_gpt_parts(), sector_size=4096)
    areas = read_boot_areas(str(src), layout)
    dst.write_bytes(b"")
    os.truncate(dst, 64 * MiB)
    dev = loops.attach(dst, sector_size=4096)
    write_layout(dev, layout, areas)
    dump = sfdisk_json(dev)
    assert dump["sectorsize"] == 4096 and dump["id"] == layout.disk_id
    assert [(p["start"] * 4096, p["size"] * 4096, p["type"], p["uuid"], p.get("name"), p.get("attrs"))
            for p in dump["partitions"]] == \
           [(p.start, p.size, p.type, p.uuid, p.name, p.attrs) for p in layout.partitions]
    assert os.path.exists(partition_path(dev, 4))
    assert_boot_areas_equal(src, dev, areas)


@pytest.mark.loop
def test_sector_size_mismatch_is_refused(tmp_path, loops):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    layout = make_disk(src, 32 * MiB, "gpt", windows_gpt_parts(data_size=4 * MiB))
    make_disk(dst, 32 * MiB, "none", [])
    dev = loops.attach(dst, sector_size=4096)
    with pytest.raises(DiskError, match="4096-byte sectors"):
        write_layout(dev, layout, [])


@pytest.mark.loop
def test_small_target_and_partition_target_are_refused(tmp_path, loops):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    layout = make_disk(src, 64 * MiB, "gpt", windows_gpt_parts())
    make_disk(dst, 32 * MiB, "gpt", [PartSpec(4 * MiB, LINUX_FS)])
    dev = loops.attach(dst)
    with pytest.raises(DiskError, match="needs"):
        write_layout(dev, layout, [])
    with pytest.raises(DiskError, match=f"is a partition; give the whole disk {dev}$"):
        write_layout(partition_path(dev, 1), layout, [])


def test_pattern_is_recognisable():
    assert pattern(b"a", 64) != pattern(b"b", 64) and pattern(b"a", 64) == pattern(b"a", 64)


@pytest.mark.loop
def test_no_table_on_a_loop_device_removes_the_partitions(tmp_path, loops):
    dst = tmp_path / "dst.img"
    make_disk(dst, 32 * MiB, "dos", mbr_logical_parts()[:2])
    dev = loops.attach(dst)
    assert os.path.exists(partition_path(dev, 2))
    write_layout(dev, Layout(table="none", sector_size=512, disk_size=32 * MiB), [])
    assert read_layout(dev).table == "none"
    assert not os.path.exists(partition_path(dev, 1))


def test_mbr_with_4096_byte_sectors_in_an_image_is_refused(tmp_path):
    layout = Layout(table="dos", sector_size=4096, disk_size=32 * MiB)
    with pytest.raises(DiskError, match="losetup -b 4096"):
        write_layout(str(tmp_path / "x.img"), layout, [])
