"""Signatures of what Lifeboat images whole: encrypted volumes, volume-manager members and
filesystems without a used-block map here. Cheap checks on a few header bytes only."""

from __future__ import annotations

import struct
import uuid as uuidlib

from recovery.fs import Reader

# kind (as blkid names it) -> why the partition is copied block for block.
REASONS = {
    "crypto_LUKS": "LUKS-encrypted",
    "BitLocker": "BitLocker-encrypted",
    "LVM2_member": "an LVM physical volume",
    "linux_raid_member": "a Linux RAID member",
    "exfat": "exFAT (no used-block map for it yet)",
    "xfs": "XFS (no used-block map for it yet)",
    "btrfs": "btrfs (no used-block map for it yet)",
    "ReFS": "ReFS (no used-block map for it yet)",
}


def _text(raw: bytes) -> str | None:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace").strip() or None


def _uuid(raw: bytes) -> str | None:
    return str(uuidlib.UUID(bytes=raw)) if len(raw) == 16 and any(raw) else None


def _luks(read: Reader):
    head = read(0, 512)
    if head[:6] != b"LUKS\xba\xbe":
        return None
    version = struct.unpack_from(">H", head, 6)[0]
    label = _text(head[24:72]) if version == 2 else None
    return "crypto_LUKS", label, _text(head[168:208])


def _bitlocker(read: Reader):
    return ("BitLocker", None, None) if read(3, 8) == b"-FVE-FS-" else None


def _exfat(read: Reader):
    head = read(0, 512)
    if head[3:11] != b"EXFAT   ":
        return None
    serial = struct.unpack_from("<I", head, 0x64)[0]
    return "exfat", None, f"{serial >> 16:04X}-{serial & 0xFFFF:04X}"


def _refs(read: Reader):
    return ("ReFS", None, None) if read(3, 4) == b"ReFS" else None


def _xfs(read: Reader):
    head = read(0, 512)
    if head[:4] != b"XFSB":
        return None
    return "xfs", _text(head[108:120]), _uuid(head[32:48])


def _btrfs(read: Reader):
    sb = read(0x10000, 0x1000)
    if sb[0x40:0x48] != b"_BHRfS_M":
        return None
    return "btrfs", _text(sb[0x12B:0x22B]), _uuid(sb[0x20:0x30])


def _lvm(read: Reader):
    first = read(0, 4 * 512)
    for sector in range(4):
        label = first[sector * 512:(sector + 1) * 512]
        if label[:8] == b"LABELONE" and label[24:32] == b"LVM2 001":
            raw = label[32:64].decode("ascii", "replace")
            parts = (raw[0:6], raw[6:10], raw[10:14], raw[14:18], raw[18:22], raw[22:26], raw[26:32])
            return "LVM2_member", None, "-".join(parts)
    return None


def _md(read: Reader):
    for offset in (0, 4096):
        head = read(offset, 64)
        if len(head) >= 32 and struct.unpack_from("<I", head, 0)[0] == 0xA92B4EFC:
            return "linux_raid_member", _text(head[32:64]), _uuid(head[16:32])
    return None


# Headers that own byte 0 are checked before the known filesystems; the ones further in,
# which a later mkfs may leave behind, after them.
EARLY = (_luks, _bitlocker, _exfat, _refs, _xfs)
LATE = (_md, _lvm, _btrfs)
