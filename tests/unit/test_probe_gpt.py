"""The pure-Python GPT codec, checked against sfdisk as the independent reader."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from recovery.errors import DiskError
from recovery.model.layout import Layout, PartitionEntry
from recovery.probe import gpt
from tests.diskimages import BASIC_DATA, ESP, MiB


@pytest.mark.parametrize("text,bits", [
    ("RequiredPartition", 1),
    ("GUID:63", 1 << 63),
    ("RequiredPartition GUID:63", 1 | 1 << 63),
    ("RequiredPartition NoBlockIOProtocol LegacyBIOSBootable GUID:60,62,63", 7 | 1 << 60 | 1 << 62 | 1 << 63),
])
def test_attrs_round_trip(text, bits):
    assert gpt.parse_attrs(text) == bits
    assert gpt.format_attrs(bits) == text


def test_attrs_other_spellings_and_errors():
    assert gpt.parse_attrs("RequiredPartition,50,51") == 1 | 1 << 50 | 1 << 51
    assert gpt.parse_attrs(None) == 0 and gpt.format_attrs(0) is None
    with pytest.raises(DiskError):
        gpt.parse_attrs("Hidden")


def test_built_gpt_reads_back_identically_in_sfdisk(tmp_path):
    layout = Layout(table="gpt", sector_size=512, disk_size=32 * MiB, disk_id="0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D",
                    first_lba=2048, partitions=(
                        PartitionEntry(1, 1 * MiB, 4 * MiB, ESP, uuid="11111111-2222-4333-8444-555555555555",
                                       name="EFI system partition", attrs="GUID:63"),
                        PartitionEntry(3, 5 * MiB, 8 * MiB, BASIC_DATA, uuid="66666666-7777-4888-9999-AAAAAAAAAAAA",
                                       name="Basic data ü", attrs="RequiredPartition GUID:60,63")))
    img = tmp_path / "built.img"
    with open(img, "wb") as f:
        f.truncate(layout.disk_size)
    fd = os.open(img, os.O_WRONLY)
    for offset, data in gpt.build_gpt(layout):
        os.pwrite(fd, data, offset)
    os.close(fd)
    out = subprocess.run(["sfdisk", "--json", "--verify", str(img)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    dump = json.loads(subprocess.run(["sfdisk", "--json", str(img)], capture_output=True, text=True,
                                     check=True).stdout)["partitiontable"]
    assert dump["id"] == layout.disk_id and dump["firstlba"] == 2048
    assert dump["lastlba"] == 32 * MiB // 512 - 34
    got = [(int(p["node"][len(str(img)):]), p["start"] * 512, p["size"] * 512, p["type"], p["uuid"],
            p.get("name"), p.get("attrs")) for p in dump["partitions"]]
    assert got == [(p.number, p.start, p.size, p.type, p.uuid, p.name, p.attrs) for p in layout.partitions]
    # and our own reader agrees
    with open(img, "rb") as f:
        again = gpt.read_gpt(lambda off, n: os.pread(f.fileno(), n, off), 512, layout.disk_size)
    assert again.partitions == layout.partitions and again.disk_id == layout.disk_id


def test_header_with_bad_checksum_is_rejected():
    layout = Layout(table="gpt", sector_size=512, disk_size=4 * MiB)
    header = dict(gpt.build_gpt(layout))[512]
    assert gpt.parse_header(header) is not None
    broken = bytearray(header)
    broken[40] ^= 1
    assert gpt.parse_header(bytes(broken)) is None


def test_partition_outside_usable_area_is_refused():
    layout = Layout(table="gpt", sector_size=512, disk_size=4 * MiB,
                    partitions=(PartitionEntry(1, 1 * MiB, 4 * MiB, ESP),))
    with pytest.raises(DiskError, match="does not fit"):
        gpt.build_gpt(layout)
