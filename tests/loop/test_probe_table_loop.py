"""read_layout on block devices: the kernel's sector size, and a 4Kn disk seen both ways."""

from __future__ import annotations

import os
import subprocess

import pytest

from recovery.errors import DiskError
from recovery.probe.table import read_layout
from tests.diskimages import MiB, make_disk, mbr_logical_parts, windows_gpt_parts

pytestmark = pytest.mark.loop


def test_loop_device_reads_like_its_image(tmp_path, loops):
    img = tmp_path / "mbr.img"
    from_file = make_disk(img, 64 * MiB, "dos", mbr_logical_parts())
    dev = loops.attach(img)
    assert read_layout(dev) == from_file


def test_4kn_written_by_sfdisk_on_a_loop_device_reads_from_the_file(tmp_path, loops):
    """sfdisk writes a real 4Kn GPT through `losetup -b 4096`; our file reader must see the same."""
    img = tmp_path / "4kn.img"
    img.write_bytes(b"")
    os.truncate(img, 64 * MiB)
    dev = loops.attach(img, sector_size=4096)
    script = ("label: gpt\nunit: sectors\n\n"
              "size=2048, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"EFI\", attrs=\"GUID:63\"\n"
              "size=4096, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"root\"\n")
    subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", dev], input=script, text=True,
                   check=True, capture_output=True)
    on_device = read_layout(dev)
    assert on_device.sector_size == 4096 and on_device.partitions[0].start == 256 * 4096
    assert on_device.partitions[1].size == 4096 * 4096 and on_device.partitions[0].attrs == "GUID:63"
    assert read_layout(str(img)) == on_device


def test_4kn_made_in_a_file_reads_through_a_4096_loop(tmp_path, loops):
    img = tmp_path / "4kn.img"
    from_file = make_disk(img, 64 * MiB, "gpt", windows_gpt_parts(), sector_size=4096)
    dev = loops.attach(img, sector_size=4096)
    assert read_layout(dev) == from_file
    # the same bytes behind a 512-byte loop hold no valid table for that sector size
    dev512 = loops.attach(img)
    with pytest.raises(DiskError, match="damaged"):
        read_layout(dev512)


def test_partition_of_a_loop_device_is_refused(tmp_path, loops):
    img = tmp_path / "gpt.img"
    make_disk(img, 64 * MiB, "gpt", windows_gpt_parts())
    dev = loops.attach(img)
    with pytest.raises(DiskError, match=f"^{dev}p2 is a partition; give the whole disk {dev}$"):
        read_layout(f"{dev}p2")
