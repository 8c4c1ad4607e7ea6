"""read_layout on real partition tables in image files (no root): checked against sfdisk's own dump."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from recovery.errors import DiskError
from recovery.probe.table import layout_from_sfdisk, read_layout
from tests.diskimages import (ESP, LINUX_FS, MiB, PartSpec, make_disk, mbr_logical_parts, plan_entries,
                              windows_gpt_parts)


def sfdisk_json(path) -> dict:
    out = subprocess.run(["sfdisk", "--json", str(path)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["partitiontable"]


def test_gpt_windows_layout_carries_every_identity(tmp_path):
    img = tmp_path / "win.img"
    layout = make_disk(img, 64 * MiB, "gpt", windows_gpt_parts())
    dump = sfdisk_json(img)
    assert layout.table == "gpt" and layout.sector_size == 512 and layout.disk_size == 64 * MiB
    assert layout.disk_id == dump["id"] and layout.disk_id == layout.disk_id.upper()
    assert (layout.first_lba, layout.last_lba) == (dump["firstlba"], dump["lastlba"])
    assert [p.number for p in layout.partitions] == [1, 2, 3, 4]
    for part, raw in zip(layout.partitions, dump["partitions"]):
        assert part.start == raw["start"] * 512 and part.size == raw["size"] * 512
        assert part.type == raw["type"] and part.uuid == raw["uuid"]
        assert part.name == raw.get("name") and part.attrs == raw.get("attrs")
        assert part.kind == "primary" and not part.bootable
    assert layout.partitions[3].attrs == "RequiredPartition GUID:63"
    assert layout.partitions[0].name == "EFI system partition"
    planned = plan_entries(64 * MiB, "gpt", windows_gpt_parts())
    assert [(p.start, p.size, p.type) for p in layout.partitions] == [(p.start, p.size, p.type) for p in planned]


def test_mbr_with_extended_and_logicals(tmp_path):
    img = tmp_path / "mbr.img"
    layout = make_disk(img, 64 * MiB, "dos", mbr_logical_parts())
    dump = sfdisk_json(img)
    assert layout.table == "dos"
    assert layout.disk_id == dump["id"] and layout.disk_id.startswith("0x") and len(layout.disk_id) == 10
    kinds = {p.number: (p.kind, p.type) for p in layout.partitions}
    assert kinds == {1: ("primary", "83"), 2: ("primary", "7"), 3: ("extended", "5"),
                     5: ("logical", "83"), 6: ("logical", "82"), 7: ("logical", "c")}
    assert [p.number for p in layout.partitions if p.bootable] == [1]
    extended = next(p for p in layout.partitions if p.kind == "extended")
    for logical in (p for p in layout.partitions if p.kind == "logical"):
        assert extended.start < logical.start and logical.end <= extended.end
    assert [p.number for p in layout.data_partitions()] == [1, 2, 5, 6, 7]
    assert layout.first_lba is None and all(p.uuid is None for p in layout.partitions)


def test_no_table(tmp_path):
    img = tmp_path / "blank.img"
    layout = make_disk(img, 16 * MiB, "none", [])
    assert layout.table == "none" and layout.partitions == () and layout.disk_size == 16 * MiB


def test_whole_disk_filesystem_reads_as_no_table(tmp_path):
    img = tmp_path / "superfloppy.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img), "16M"], check=True, capture_output=True)
    assert read_layout(str(img)).table == "none"


def test_4kn_gpt_image_file(tmp_path):
    img = tmp_path / "4kn.img"
    layout = make_disk(img, 64 * MiB, "gpt", windows_gpt_parts(), sector_size=4096)
    assert layout.sector_size == 4096 and layout.first_lba == 256
    planned = plan_entries(64 * MiB, "gpt", windows_gpt_parts())
    assert [(p.number, p.start, p.size, p.type, p.name, p.attrs) for p in layout.partitions] == \
           [(p.number, p.start, p.size, p.type, p.name, p.attrs) for p in planned]
    assert all(p.uuid for p in layout.partitions)
    # 64 MiB / 4096 = 16384 sectors: backup header in the last, 4 sectors of entries before it.
    assert layout.last_lba == 16384 - 1 - 4 - 1


def test_gpt_with_gaps_in_numbering(tmp_path):
    img = tmp_path / "gaps.img"
    make_disk(img, 32 * MiB, "gpt", [PartSpec(4 * MiB, ESP), PartSpec(4 * MiB, LINUX_FS)])
    subprocess.run(["sfdisk", "--quiet", "--delete", str(img), "1"], check=True, capture_output=True)
    layout = read_layout(str(img))
    assert [p.number for p in layout.partitions] == [2]


def _corrupt(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_gpt_with_both_headers_damaged_is_refused(tmp_path):
    img = tmp_path / "broken.img"
    make_disk(img, 32 * MiB, "gpt", [PartSpec(4 * MiB, ESP)])
    _corrupt(img, 512 + 24)                        # primary header's current-LBA field
    _corrupt(img, 32 * MiB - 512 + 24)             # backup header's
    with pytest.raises(DiskError, match="damaged"):
        read_layout(str(img))


def test_gpt_with_damaged_primary_is_refused_with_a_plain_line(tmp_path):
    img = tmp_path / "half.img"
    make_disk(img, 32 * MiB, "gpt", [PartSpec(4 * MiB, ESP)])
    _corrupt(img, 512 + 24)
    with pytest.raises(DiskError, match="damaged") as err:
        read_layout(str(img))
    assert "\n" not in str(err.value)


def test_4kn_image_with_damaged_headers(tmp_path):
    img = tmp_path / "4kn-broken.img"
    make_disk(img, 32 * MiB, "gpt", [PartSpec(4 * MiB, ESP)], sector_size=4096)
    _corrupt(img, 4096 + 24)
    # the primary still carries its signature, so the file is still seen as 4Kn; the backup rescues it
    assert read_layout(str(img)).partitions[0].type == ESP
    _corrupt(img, 32 * MiB - 4096 + 24)
    with pytest.raises(DiskError, match="damaged"):
        read_layout(str(img))


@pytest.mark.parametrize("table,parts", [("gpt", windows_gpt_parts()), ("dos", mbr_logical_parts())])
def test_truncated_image_is_refused(tmp_path, table, parts):
    img = tmp_path / "cut.img"
    make_disk(img, 64 * MiB, table, parts)
    os.truncate(img, 20 * MiB)
    with pytest.raises(DiskError, match=f"{img}.*damaged"):
        read_layout(str(img))


def test_wrong_paths_are_plain_disk_errors(tmp_path):
    with pytest.raises(DiskError, match="does not exist"):
        read_layout(str(tmp_path / "nope.img"))
    with pytest.raises(DiskError, match="is a directory"):
        read_layout(str(tmp_path))
    tiny = tmp_path / "tiny.img"
    tiny.write_bytes(b"x" * 100)
    with pytest.raises(DiskError, match="too small"):
        read_layout(str(tiny))


def test_layout_from_an_sfdisk_dump(tmp_path):
    """The dump sfdisk itself prints for an MBR with a bootable ESP, an extended and a logical
    partition (made here, not typed in)."""
    img = tmp_path / "mbr.img"
    img.write_bytes(b"")
    os.truncate(img, 8 * MiB)
    subprocess.run(["sfdisk", "--quiet", str(img)], check=True, capture_output=True, text=True,
                   input="label: dos\nlabel-id: 0xabc\nstart=2048, size=2048, type=ef, bootable\n"
                         "start=4096, size=8192, type=f\nstart=6144, size=2048, type=83\n")
    dump = sfdisk_json(img)
    assert [p["node"][-1] for p in dump["partitions"]] == ["1", "2", "5"]
    layout = layout_from_sfdisk(dump, 8 * MiB)
    assert layout.disk_id == "0x00000abc"
    assert [(p.number, p.kind, p.type, p.bootable) for p in layout.partitions] == \
           [(1, "primary", "ef", True), (2, "extended", "f", False), (5, "logical", "83", False)]
    with pytest.raises(DiskError, match="not supported"):
        layout_from_sfdisk({"label": "sun", "partitions": []}, MiB)


def test_partitions_of_a_disk_named_by_its_udev_link(tmp_path):
    """Given /dev/disk/by-id/virtio-SRC, sfdisk names the partitions the udev way,
    /dev/disk/by-id/virtio-SRC-part1 (seen in the live system): the numbers still come out."""
    img = tmp_path / "gpt.img"
    make_disk(img, 16 * MiB, "gpt", [PartSpec(4 * MiB, LINUX_FS), PartSpec(None, LINUX_FS)])
    dump = sfdisk_json(img)
    link = "/dev/disk/by-id/virtio-SRC"
    dump["device"] = link
    for number, part in enumerate(dump["partitions"], 1):
        part["node"] = f"{link}-part{number}"
    layout = layout_from_sfdisk(dump, 16 * MiB)
    assert [p.number for p in layout.partitions] == [1, 2]
    assert [p.start for p in layout.partitions] == [p.start for p in read_layout(str(img)).partitions]
    dump["partitions"][1]["node"] = f"{link}-partition"
    with pytest.raises(DiskError, match="cannot tell the partition number"):
        layout_from_sfdisk(dump, 16 * MiB)
