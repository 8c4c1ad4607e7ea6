"""The GPT on-disk structures, parsed and built in pure Python.

sfdisk (util-linux 2.38, Debian 12) and libparted both assume 512-byte sectors in an image
file, so a 4Kn GPT inside a plain file is read and written here instead. The same parser also
tells where the primary entry array ends, which bounds the boot-loader gap.
"""

from __future__ import annotations

import struct
import uuid as uuidlib
import zlib
from dataclasses import dataclass
from typing import Callable

from recovery.errors import DiskError
from recovery.model.layout import Layout, PartitionEntry

SIGNATURE = b"EFI PART"
REVISION = 0x00010000
HEADER_SIZE = 92
ENTRY_SIZE = 128
ENTRY_COUNT = 128
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
_ENTRY = struct.Struct("<16s16sQQQ72s")

# sfdisk's names for the low attribute bits; bits 48..63 are written "GUID:n".
_ATTR_NAMES = {0: "RequiredPartition", 1: "NoBlockIOProtocol", 2: "LegacyBIOSBootable"}
_ATTR_BITS = {name.lower(): bit for bit, name in _ATTR_NAMES.items()}

Reader = Callable[[int, int], bytes]


@dataclass(frozen=True)
class GptHeader:
    current_lba: int
    backup_lba: int
    first_lba: int
    last_lba: int
    disk_guid: str
    entries_lba: int
    entry_count: int
    entry_size: int
    entries_crc: int

    def entries_bytes(self) -> int:
        return self.entry_count * self.entry_size

    def entries_end(self, sector_size: int) -> int:
        """Byte offset just past this header's entry array."""
        return self.entries_lba * sector_size + self.entries_bytes()


def guid_from_disk(raw: bytes) -> str:
    return str(uuidlib.UUID(bytes_le=raw)).upper()


def guid_to_disk(text: str) -> bytes:
    return uuidlib.UUID(text).bytes_le


def parse_header(sector: bytes) -> GptHeader | None:
    """The header in one sector, or None when the signature or the CRC is wrong."""
    if len(sector) < HEADER_SIZE or sector[:8] != SIGNATURE:
        return None
    (_sig, _rev, size, crc, _res, current, backup, first, last, guid,
     entries_lba, count, esize, ecrc) = _HEADER.unpack_from(sector)
    if size < HEADER_SIZE or size > len(sector):
        return None
    check = bytearray(sector[:size])
    check[16:20] = b"\0\0\0\0"
    if zlib.crc32(check) != crc or esize < ENTRY_SIZE or count == 0 or count > 4096:
        return None
    return GptHeader(current, backup, first, last, guid_from_disk(guid), entries_lba, count, esize, ecrc)


def parse_attrs(text: str | None) -> int:
    """sfdisk's attribute syntax ("RequiredPartition GUID:60,63", "RequiredPartition,50") to bits."""
    bits = 0
    for token in (text or "").replace(",", " ").split():
        token = token.strip()
        if token.upper().startswith("GUID:"):
            token = token[5:]
        if token.lower() in _ATTR_BITS:
            bits |= 1 << _ATTR_BITS[token.lower()]
        elif token.isdigit() and int(token) < 64:
            bits |= 1 << int(token)
        elif token:
            raise DiskError(f"unknown GPT attribute {token!r} in {text!r}")
    return bits


def format_attrs(bits: int) -> str | None:
    """Bits to sfdisk's syntax, exactly as `sfdisk --json` prints them (None when no bit is set).

    Bits 3..47 are reserved by the UEFI spec and sfdisk neither prints nor accepts them.
    """
    words = [_ATTR_NAMES[b] for b in sorted(_ATTR_NAMES) if bits >> b & 1]
    high = [str(b) for b in range(48, 64) if bits >> b & 1]
    if high:
        words.append("GUID:" + ",".join(high))
    return " ".join(words) or None


def read_entries(read: Reader, header: GptHeader, sector_size: int) -> list[PartitionEntry] | None:
    """The used entries of a header's array, or None when the array fails its CRC."""
    raw = read(header.entries_lba * sector_size, header.entries_bytes())
    if len(raw) != header.entries_bytes() or zlib.crc32(raw) != header.entries_crc:
        return None
    parts = []
    for index in range(header.entry_count):
        entry = raw[index * header.entry_size: index * header.entry_size + ENTRY_SIZE]
        type_raw, uniq, first, last, attrs, name_raw = _ENTRY.unpack(entry)
        if type_raw == bytes(16):
            continue
        name = name_raw.decode("utf-16-le", errors="replace").split("\0", 1)[0]
        parts.append(PartitionEntry(
            number=index + 1,
            start=first * sector_size,
            size=(last - first + 1) * sector_size,
            type=guid_from_disk(type_raw),
            uuid=guid_from_disk(uniq),
            name=name or None,
            attrs=format_attrs(attrs),
        ))
    return parts


def read_gpt(read: Reader, sector_size: int, disk_size: int) -> Layout | None:
    """The layout from the primary GPT, or from the backup when the primary is damaged.

    None when neither header is there at all; DiskError when one is there but unusable.
    """
    last_sector = disk_size // sector_size - 1
    candidates = [1]
    primary = parse_header(read(sector_size, sector_size))
    if primary is not None and primary.backup_lba <= last_sector:
        candidates.append(primary.backup_lba)
    candidates.append(last_sector)
    seen_signature = False
    for lba in candidates:
        sector = read(lba * sector_size, sector_size)
        seen_signature |= sector[:8] == SIGNATURE
        header = parse_header(sector)
        if header is None or header.current_lba != lba:
            continue
        entries = read_entries(read, header, sector_size)
        if entries is None:
            continue
        return Layout(
            table="gpt", sector_size=sector_size, disk_size=disk_size, disk_id=header.disk_guid,
            first_lba=header.first_lba, last_lba=header.last_lba, partitions=tuple(entries))
    if seen_signature:
        raise DiskError("the GPT partition table is damaged (both headers fail their checksums)")
    return None


def primary_header(read: Reader, sector_size: int) -> GptHeader | None:
    return parse_header(read(sector_size, sector_size))


def _protective_mbr(sector_size: int, disk_sectors: int) -> bytes:
    mbr = bytearray(512)
    size = min(disk_sectors - 1, 0xFFFFFFFF)
    # One partition of type 0xEE covering the disk; CHS fields as the spec suggests.
    mbr[446:462] = struct.pack("<B3sB3sII", 0, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff", 1, size)
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr) + bytes(sector_size - 512)


def build_gpt(layout: Layout) -> list[tuple[int, bytes]]:
    """The byte regions of a complete GPT for `layout`: protective MBR, primary header and
    entries, backup entries and header (at the very end of layout.disk_size)."""
    ss = layout.sector_size
    disk_sectors = layout.disk_size // ss
    entries_sectors = -(-ENTRY_COUNT * ENTRY_SIZE // ss)
    backup_lba = disk_sectors - 1
    backup_entries_lba = backup_lba - entries_sectors
    lowest_first = 2 + entries_sectors
    highest_last = backup_entries_lba - 1
    first_lba = layout.first_lba if layout.first_lba and layout.first_lba >= lowest_first else lowest_first
    last_lba = layout.last_lba if layout.last_lba and layout.last_lba <= highest_last else highest_last

    array = bytearray(ENTRY_COUNT * ENTRY_SIZE)
    for part in layout.partitions:
        if not 1 <= part.number <= ENTRY_COUNT:
            raise DiskError(f"GPT partition number {part.number} is out of range")
        if part.start % ss or part.size % ss:
            raise DiskError(f"partition {part.number} is not aligned to {ss}-byte sectors")
        first = part.start // ss
        last = first + part.size // ss - 1
        if first < first_lba or last > last_lba:
            raise DiskError(f"partition {part.number} does not fit inside the disk's usable area")
        name = (part.name or "").encode("utf-16-le")[:72]
        _ENTRY.pack_into(array, (part.number - 1) * ENTRY_SIZE, guid_to_disk(part.type),
                         guid_to_disk(part.uuid or str(uuidlib.uuid4())), first, last,
                         parse_attrs(part.attrs), name.ljust(72, b"\0"))
    array = bytes(array)
    disk_guid = guid_to_disk(layout.disk_id or str(uuidlib.uuid4()))

    def header(current: int, other: int, entries_lba: int) -> bytes:
        fields = [SIGNATURE, REVISION, HEADER_SIZE, 0, 0, current, other, first_lba, last_lba,
                  disk_guid, entries_lba, ENTRY_COUNT, ENTRY_SIZE, zlib.crc32(array)]
        fields[3] = zlib.crc32(_HEADER.pack(*fields))
        return _HEADER.pack(*fields).ljust(ss, b"\0")

    padded = array.ljust(entries_sectors * ss, b"\0")
    return [
        (0, _protective_mbr(ss, disk_sectors)),
        (ss, header(1, backup_lba, 2)),
        (2 * ss, padded),
        (backup_entries_lba * ss, padded),
        (backup_lba * ss, header(backup_lba, 1, backup_entries_lba)),
    ]
