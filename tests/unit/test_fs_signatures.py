"""Signatures read from a partition's first bytes (recovery/fs/swap.py, recovery/fs/foreign.py):
every page size and magic a swap area may carry, its label and UUID (checked against blkid on
a real mkswap image), and the names, labels and UUIDs of what is imaged whole. The headers are
built in memory at their documented offsets: these modules only read bytes."""

from __future__ import annotations

import subprocess
import uuid as uuidlib

import pytest

from recovery.fs import FsMapError, identify, probe_partition, swap
from tests import fsimages

MiB = fsimages.MiB


def reader(buf: bytes):
    return lambda offset, length: bytes(buf[offset : offset + length])


def swap_area(page: int, magic: bytes = b"SWAPSPACE2", label: bytes = b"", raw_uuid: bytes = bytes(16),
              size: int = 256 * 1024) -> bytes:
    buf = bytearray(size)
    buf[page - 10 : page - 10 + len(magic)] = magic
    buf[1024 + 12 : 1024 + 28] = raw_uuid
    buf[1024 + 28 : 1024 + 28 + len(label)] = label
    return bytes(buf)


@pytest.mark.parametrize("page", [4096, 8192, 16384, 32768, 65536])
def test_swap_is_found_at_every_page_size_and_keeps_that_page(page):
    raw = uuidlib.uuid4().bytes
    area = swap_area(page, label=b"pagey", raw_uuid=raw)
    info = swap.probe(reader(area), len(area))
    assert (info.fs, info.label, info.uuid, info.block_size, info.used) == (
        "swap", "pagey", str(uuidlib.UUID(bytes=raw)), page, ((0, page),))
    assert identify(reader(area), len(area)) == ("swap", "pagey", str(uuidlib.UUID(bytes=raw)))


def test_an_old_swap_area_has_no_label_or_uuid_and_a_full_label_no_end():
    old = swap_area(4096, b"SWAP-SPACE", label=b"ignored", raw_uuid=b"\x01" * 16)
    assert swap.identify(reader(old), len(old)) == ("swap", None, None)
    assert swap.probe(reader(old), len(old)).used == ((0, 4096),)
    full = swap_area(4096, label=b"sixteen-letters!\xff")            # 16 bytes, no NUL, then more
    assert swap.identify(reader(full), len(full)) == ("swap", "sixteen-letters!", None)
    odd = swap_area(4096, label=b"caf\xe9")                           # not UTF-8
    assert swap.identify(reader(odd), len(odd)) == ("swap", "caf\ufffd", None)
    # A partition smaller than the page: its map ends where the partition does.
    small = swap_area(4096, size=4096)
    assert swap.probe(reader(small), 3000).used == ((0, 3000),)


@pytest.mark.parametrize("magic,at_end", [(b"S1SUSPEND", False), (b"S2SUSPEND", False), (b"ULSUSPEND", False),
                                          (b"LINHIB0001", False), (b"S1SUSPEND", True)])
def test_a_hibernation_image_is_refused_whatever_its_magic(magic, at_end):
    area = bytearray(swap_area(8192, b""))
    at = 8192 - len(magic) if at_end else 8192 - 10
    area[at : at + len(magic)] = magic
    with pytest.raises(FsMapError) as err:
        swap.probe(reader(bytes(area)), len(area))
    assert str(err.value) == "swap holds a Linux hibernation image"
    info = probe_partition(reader(bytes(area)), len(area))
    assert info.whole and info.warnings == ("swap holds a Linux hibernation image; imaged whole (every block copied)",)


def test_a_real_mkswap_label_and_uuid_match_blkid(tmp_path):
    image = fsimages.make_swap(tmp_path / "s.img", 4 * MiB, label="x" * 16)
    data = image.read_bytes()[:8192]
    blkid = subprocess.run(["blkid", "-o", "export", str(image)], capture_output=True, text=True).stdout
    fields = dict(line.split("=", 1) for line in blkid.split())
    assert swap.identify(reader(data), 4 * MiB) == ("swap", fields["LABEL"], fields["UUID"])


U = uuidlib.UUID("0123abcd-4567-89ef-0123-456789abcdef")


def at(size: int, *fields: tuple[int, bytes]) -> bytes:
    buf = bytearray(size)
    for offset, value in fields:
        buf[offset : offset + len(value)] = value
    return bytes(buf)


def padded(text: bytes, n: int) -> bytes:
    return text + bytes(n - len(text))


SIGNATURES = [
    # (what blkid would call it, the header, its label and uuid as read, the reason it is imaged whole)
    ("crypto_LUKS", at(4096, (0, b"LUKS\xba\xbe\x00\x01"), (24, padded(b"not read in v1", 48)),
                       (168, padded(str(U).encode(), 40))), None, str(U), "LUKS-encrypted"),
    ("crypto_LUKS", at(4096, (0, b"LUKS\xba\xbe\x00\x02"), (24, padded(b"vault", 48)),
                       (168, padded(str(U).encode(), 40))), "vault", str(U), "LUKS-encrypted"),
    ("BitLocker", at(4096, (0, b"\xebR\x90-FVE-FS-")), None, None, "BitLocker-encrypted"),
    ("exfat", at(4096, (0, b"\xebv\x90EXFAT   "), (0x64, (0x1A2B3C4D).to_bytes(4, "little"))),
     None, "1A2B-3C4D", "exFAT (no used-block map for it yet)"),
    ("ReFS", at(4096, (3, b"ReFS")), None, None, "ReFS (no used-block map for it yet)"),
    ("xfs", at(4096, (0, b"XFSB"), (32, U.bytes), (108, padded(b"twelve-chars", 12))), "twelve-chars", str(U),
     "XFS (no used-block map for it yet)"),
    ("xfs", at(4096, (0, b"XFSB"), (108, padded(b" spaced ", 12))), "spaced", None,
     "XFS (no used-block map for it yet)"),
    ("btrfs", at(0x11000, (0x10040, b"_BHRfS_M"), (0x10020, U.bytes), (0x1012B, padded(b"pool", 256))),
     "pool", str(U), "btrfs (no used-block map for it yet)"),
    ("LVM2_member", at(4096, (3 * 512, b"LABELONE"), (3 * 512 + 24, b"LVM2 001"),
                       (3 * 512 + 32, b"abcdefghijklmnopqrstuvwxyz012345")),
     None, "abcdef-ghij-klmn-opqr-stuv-wxyz-012345", "an LVM physical volume"),
    ("linux_raid_member", at(8192, (4096, (0xA92B4EFC).to_bytes(4, "little")), (4096 + 16, U.bytes),
                             (4096 + 32, padded(b"host:0", 32))), "host:0", str(U), "a Linux RAID member"),
    ("linux_raid_member", at(8192, (0, (0xA92B4EFC).to_bytes(4, "little"))), None, None, "a Linux RAID member"),
]


@pytest.mark.parametrize("kind,header,label,uuid,reason", SIGNATURES)
def test_what_is_imaged_whole_is_named_with_its_label_and_uuid(kind, header, label, uuid, reason):
    assert identify(reader(header), len(header)) == (kind, label, uuid)
    info = probe_partition(reader(header), len(header))
    assert (info.fs, info.label, info.uuid, info.whole, info.used) == (kind, label, uuid, True, ((0, len(header)),))
    assert info.warnings == (f"{reason}; imaged whole (every block copied)",)


def test_near_misses_are_not_taken_for_a_signature():
    lvm_wrong_type = at(4096, (512, b"LABELONE"), (512 + 24, b"LVM1 001"))
    lvm_too_far = at(8192, (4 * 512, b"LABELONE"), (4 * 512 + 24, b"LVM2 001"))
    md_elsewhere = at(16384, (8192, (0xA92B4EFC).to_bytes(4, "little")))
    luks_almost = at(4096, (0, b"LUKS\xba\xbf"))
    for content in (lvm_wrong_type, lvm_too_far, md_elsewhere, luks_almost):
        assert identify(reader(content), len(content)) is None
        assert probe_partition(reader(content), len(content)).fs == "unknown"


FULL = [
    # Fields filled to their last byte, the next byte not zero: a label or UUID ends with its field.
    ("crypto_LUKS", at(4096, (0, b"LUKS\xba\xbe\x00\x02"), (24, b"L" * 48 + b"!"), (168, b"u" * 40 + b"!")),
     "L" * 48, "u" * 40),
    ("xfs", at(4096, (0, b"XFSB"), (108, b"x" * 12 + b"!")), "x" * 12, None),
    ("btrfs", at(0x11000, (0x10040, b"_BHRfS_M"), (0x1012B, b"b" * 256 + b"!")), "b" * 256, None),
    ("linux_raid_member", at(4096, (0, (0xA92B4EFC).to_bytes(4, "little")), (32, b"m" * 32 + b"!")), "m" * 32, None),
    ("LVM2_member", at(4096, (0, b"LABELONE"), (24, b"LVM2 001"), (32, b"0123456789abcdefghijklmnopqrstuv!")),
     None, "012345-6789-abcd-efgh-ijkl-mnop-qrstuv"),
    ("LVM2_member", at(4096, (0, b"LABELONE"), (24, b"LVM2 001"), (32, b"\xff" * 32)),
     None, "\ufffd" * 6 + "-" + "-".join(["\ufffd" * 4] * 5) + "-" + "\ufffd" * 6),
]


@pytest.mark.parametrize("kind,header,label,uuid", FULL)
def test_a_field_filled_to_its_end_stops_there(kind, header, label, uuid):
    assert identify(reader(header), len(header)) == (kind, label, uuid)


def test_a_raid_member_as_short_as_its_magic_and_uuid_is_still_named():
    member = at(32, (0, (0xA92B4EFC).to_bytes(4, "little")), (16, U.bytes))
    assert identify(reader(member), len(member)) == ("linux_raid_member", None, str(U))
