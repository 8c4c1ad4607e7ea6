"""FAT12/16/32 used-block map: reserved area, the FATs, the FAT12/16 root directory, and every
cluster whose entry is non-zero in any copy of the FAT (a disagreement between copies can
only make the map larger)."""

from __future__ import annotations

import re
import struct

from recovery.fs import FsInfo, FsMapError, Reader, merge_ranges, tail_after

# Cluster counts below these make FAT12 and FAT16 (the rule from Microsoft's specification).
FAT12_MAX_CLUSTERS = 4085
FAT16_MAX_CLUSTERS = 65525

ATTR_VOLUME_ID = 0x08
ATTR_LONG_NAME = 0x0F
NO_LABEL = "NO NAME"

_NONZERO_RUN = re.compile(rb"[^\x00]+")
# FAT32 entries are 28 bits: the top nibble of each entry's last byte is reserved.
_LOW_NIBBLE = bytes(v & 0x0F for v in range(256))


class _Bpb:
    """The BIOS parameter block, checked for sanity (a random sector rarely passes)."""

    def __init__(self, boot: bytes):
        if len(boot) < 512 or boot[3:11] in (b"NTFS    ", b"EXFAT   ") or boot[0] not in (0xEB, 0xE9):
            raise ValueError("not FAT")
        (self.bytes_per_sector, self.sectors_per_cluster, self.reserved, self.fat_count,
         self.root_entries, total16, self.media, fat_size16) = struct.unpack_from("<HBHBHHBH", boot, 11)
        total32 = struct.unpack_from("<I", boot, 0x20)[0]
        fat_size32 = struct.unpack_from("<I", boot, 0x24)[0]
        bps, spc = self.bytes_per_sector, self.sectors_per_cluster
        if bps not in (512, 1024, 2048, 4096) or spc == 0 or spc & (spc - 1) or self.reserved == 0 \
                or not 1 <= self.fat_count <= 4 or not (self.media == 0xF0 or self.media >= 0xF8):
            raise ValueError("not FAT")
        self.is_fat32_layout = fat_size16 == 0
        self.fat_size = fat_size32 if self.is_fat32_layout else fat_size16
        self.total_sectors = total16 or total32
        if self.fat_size == 0 or self.total_sectors == 0:
            raise ValueError("not FAT")
        ext = 0x40 if self.is_fat32_layout else 0x24
        self.has_ext_bpb = boot[ext + 2] in (0x28, 0x29)
        self.serial = struct.unpack_from("<I", boot, ext + 3)[0] if self.has_ext_bpb else None
        self.boot_label = boot[ext + 7: ext + 18] if boot[ext + 2] == 0x29 else b""
        self.root_cluster = struct.unpack_from("<I", boot, 0x2C)[0] if self.is_fat32_layout else 0

        self.root_dir_sectors = -(-self.root_entries * 32 // bps)
        self.data_start = self.reserved + self.fat_count * self.fat_size + self.root_dir_sectors
        self.cluster_count = max(0, (self.total_sectors - self.data_start) // spc)
        if self.cluster_count < FAT12_MAX_CLUSTERS:
            self.bits = 12
        elif self.cluster_count < FAT16_MAX_CLUSTERS:
            self.bits = 16
        else:
            self.bits = 32
        self.cluster_bytes = bps * spc

    @property
    def name(self) -> str:
        return f"FAT{self.bits}"


def _bpb(read: Reader) -> _Bpb | None:
    try:
        return _Bpb(read(0, 512))
    except (ValueError, struct.error, IndexError):
        return None


def _serial_text(serial: int | None) -> str | None:
    return None if serial is None else f"{serial >> 16:04X}-{serial & 0xFFFF:04X}"


def _label_text(raw: bytes) -> str | None:
    text = raw.decode("cp850", "replace").rstrip(" \0")
    return None if not text or text == NO_LABEL else text


def _nonzero_entries(fat: bytes, bits: int, count: int) -> bytes:
    """One byte per entry, non-zero where the entry is non-zero (done with C-speed slicing)."""
    if bits == 12:
        out = bytearray(count)
        for i in range(count):
            pos = i * 3 // 2
            pair = fat[pos] | (fat[pos + 1] << 8)
            out[i] = 1 if (pair >> 4 if i & 1 else pair & 0xFFF) else 0
        return bytes(out)
    width = bits // 8
    lanes = [fat[k:count * width:width] for k in range(width)]
    if bits == 32:
        lanes[3] = lanes[3].translate(_LOW_NIBBLE)
    merged = 0
    for lane in lanes:
        merged |= int.from_bytes(lane, "little")
    return merged.to_bytes(count, "little")


def _read_exact(read: Reader, offset: int, length: int, what: str) -> bytes:
    data = read(offset, length)
    if len(data) != length:
        raise FsMapError(f"FAT metadata is damaged ({what} lies past the end of the partition)")
    return data


def _root_label(read: Reader, bpb: _Bpb, fat: bytes) -> str | None:
    """The volume-label entry of the root directory (blkid prefers it to the boot sector's)."""
    bps = bpb.bytes_per_sector
    if bpb.is_fat32_layout:
        pieces, cluster, seen = [], bpb.root_cluster, 0
        while 2 <= cluster < bpb.cluster_count + 2 and seen < 16:
            offset = (bpb.data_start * bps) + (cluster - 2) * bpb.cluster_bytes
            pieces.append(read(offset, bpb.cluster_bytes))
            cluster = struct.unpack_from("<I", fat, cluster * 4)[0] & 0x0FFFFFFF if cluster * 4 + 4 <= len(fat) else 0
            seen += 1
        directory = b"".join(pieces)
    else:
        directory = read((bpb.reserved + bpb.fat_count * bpb.fat_size) * bps, bpb.root_entries * 32)
    for pos in range(0, len(directory) - 31, 32):
        entry = directory[pos:pos + 32]
        if entry[0] == 0:
            break
        if entry[0] == 0xE5 or entry[11] == ATTR_LONG_NAME:
            continue
        if entry[11] & ATTR_VOLUME_ID:
            return _label_text(entry[:11])
    return None


def boot_sector_size(read: Reader) -> int | None:
    """The filesystem's size in bytes when sector 0 is a sane FAT boot sector, else None."""
    bpb = _bpb(read)
    return None if bpb is None else bpb.total_sectors * bpb.bytes_per_sector


def identify(read: Reader, size: int) -> tuple[str, str | None, str | None] | None:
    bpb = _bpb(read)
    if bpb is None:
        return None
    label = None
    try:
        entries_bytes = min(bpb.fat_size * bpb.bytes_per_sector, 64 * 1024)   # enough for the root chain
        fat = read(bpb.reserved * bpb.bytes_per_sector, entries_bytes)
        label = _root_label(read, bpb, fat)
    except (struct.error, IndexError, ValueError):
        pass
    return "vfat", label or _label_text(bpb.boot_label), _serial_text(bpb.serial)


def probe(read: Reader, size: int) -> FsInfo | None:
    bpb = _bpb(read)
    if bpb is None:
        return None
    bps = bpb.bytes_per_sector
    if bpb.total_sectors * bps > size:
        raise FsMapError(f"{bpb.name} is larger than its partition ({bpb.total_sectors * bps} bytes "
                         f"in {size}); the partition looks truncated")
    if bpb.cluster_count == 0 or bpb.data_start >= bpb.total_sectors:
        raise FsMapError(f"{bpb.name} boot sector is damaged (no data area)")
    entries = bpb.cluster_count + 2
    entry_bytes = -(-entries * bpb.bits // 8)
    if entry_bytes > bpb.fat_size * bps:
        raise FsMapError(f"{bpb.name} boot sector is damaged (FAT too small for its clusters)")

    in_use = None
    first_fat = b""
    for copy in range(bpb.fat_count):
        offset = (bpb.reserved + copy * bpb.fat_size) * bps
        fat = _read_exact(read, offset, entry_bytes, f"FAT copy {copy + 1}")
        if copy == 0:
            first_fat = fat
        flags = _nonzero_entries(fat, bpb.bits, entries)
        in_use = flags if in_use is None else \
            (int.from_bytes(in_use, "little") | int.from_bytes(flags, "little")).to_bytes(entries, "little")

    data_offset = bpb.data_start * bps
    ranges = [(0, data_offset)]   # boot sector, reserved sectors, FATs, FAT12/16 root directory
    for match in _NONZERO_RUN.finditer(in_use, 2):
        ranges.append((data_offset + (match.start() - 2) * bpb.cluster_bytes,
                       (match.end() - match.start()) * bpb.cluster_bytes))
    # Sectors after the last whole cluster, and anything past the volume, are kept as they are.
    tail, warnings = tail_after(bpb.name, data_offset + bpb.cluster_count * bpb.cluster_bytes, size)
    ranges += tail

    label = _root_label(read, bpb, first_fat) or _label_text(bpb.boot_label)
    return FsInfo(fs="vfat", label=label, uuid=_serial_text(bpb.serial), block_size=bps,
                  used=merge_ranges(ranges, size), warnings=tuple(warnings))
