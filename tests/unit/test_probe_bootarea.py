"""Boot areas: MBR boot code and the post-table gap, recognisable bytes in, the same bytes out."""

from __future__ import annotations

import os

from recovery.probe.bootarea import GAP_CAP, gap_range, read_boot_areas
from recovery.probe.table import read_layout
from tests.diskimages import (BOOT_CODE_SEED, ESP, GAP_FILL, GAP_SEED, LINUX_FS, MiB, PartSpec, make_disk,
                              mbr_logical_parts, pattern, windows_gpt_parts)


def test_gpt_boot_code_and_gap(tmp_path):
    img = tmp_path / "gpt.img"
    layout = make_disk(img, 64 * MiB, "gpt", windows_gpt_parts())
    areas = read_boot_areas(str(img), layout)
    assert areas == [(0, pattern(BOOT_CODE_SEED, 440)), (34 * 512, pattern(GAP_SEED, GAP_FILL))]


def test_mbr_gap_starts_at_sector_one(tmp_path):
    img = tmp_path / "mbr.img"
    layout = make_disk(img, 64 * MiB, "dos", mbr_logical_parts())
    areas = read_boot_areas(str(img), layout)
    assert areas == [(0, pattern(BOOT_CODE_SEED, 440)), (512, pattern(GAP_SEED, GAP_FILL))]


def test_4kn_gap_starts_after_the_entry_array(tmp_path):
    img = tmp_path / "4kn.img"
    layout = make_disk(img, 64 * MiB, "gpt", windows_gpt_parts(), sector_size=4096)
    areas = read_boot_areas(str(img), layout)
    assert [(off, len(data)) for off, data in areas] == [(0, 440), (6 * 4096, GAP_FILL)]


def test_clean_disk_has_only_the_zero_boot_code(tmp_path):
    img = tmp_path / "clean.img"
    layout = make_disk(img, 16 * MiB, "gpt", [PartSpec(4 * MiB, LINUX_FS)], boot_code=False)
    assert read_boot_areas(str(img), layout) == [(0, bytes(440))]


def test_no_table_has_no_boot_areas(tmp_path):
    img = tmp_path / "none.img"
    layout = make_disk(img, 16 * MiB, "none", [])
    assert read_boot_areas(str(img), layout) == []


def test_zero_tail_is_dropped_in_whole_sectors(tmp_path):
    img = tmp_path / "tail.img"
    layout = make_disk(img, 16 * MiB, "dos", [PartSpec(4 * MiB, "83")], boot_code=False)
    fd = os.open(img, os.O_WRONLY)
    os.pwrite(fd, b"\x01", 4000)                   # a single byte in sector 7
    os.close(fd)
    areas = read_boot_areas(str(img), layout)
    assert [(off, len(data)) for off, data in areas] == [(0, 440), (512, 7 * 512)]
    assert areas[1][1][4000 - 512] == 1


def test_gap_is_capped(tmp_path):
    img = tmp_path / "wide.img"
    make_disk(img, 80 * MiB, "gpt", [PartSpec(40 * MiB, ESP), PartSpec(None, LINUX_FS)], boot_code=False)
    # move partition 1 to start at 40 MiB, leaving a 40 MiB gap full of bytes
    import subprocess
    subprocess.run(["sfdisk", "--quiet", str(img)], input="label: gpt\nstart=81920, size=20480, type=L\n",
                   text=True, check=True, capture_output=True)
    with open(img, "r+b") as f:
        f.seek(17408)
        f.write(b"\xAA" * (40 * MiB - 17408))
    layout = read_layout(str(img))
    start, end = gap_range(layout)
    assert (start, end) == (17408, 17408 + GAP_CAP)
    areas = read_boot_areas(str(img), layout)
    assert len(areas[1][1]) == GAP_CAP and set(areas[1][1]) == {0xAA}
