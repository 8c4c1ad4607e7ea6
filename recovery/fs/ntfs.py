"""NTFS used-block map: the cluster bitmap ($Bitmap, MFT record 6), plus the boot sector and
its backup in the last sector of the partition.

Reading it means walking a little of the MFT: records carry update-sequence fixups, large
attributes are non-resident (data runs), and a fragmented file may spread its attributes over
extension records named in an $ATTRIBUTE_LIST. Also reads the label ($Volume), the dirty flag,
and whether Windows left the volume hibernated (Fast Startup): hiberfil.sys starting with
"hibr"/"wake". Nothing is ever written.
"""

from __future__ import annotations

import struct

from recovery.fs import FsInfo, FsMapError, Reader, merge_ranges, tail_after
from recovery.fs.bitmap import set_bit_runs

OEM_ID = b"NTFS    "
FIXUP_STRIDE = 512            # update sequence entries protect every 512 bytes, whatever the sector size

MFT_RECORD = 0
VOLUME_RECORD = 3
ROOT_RECORD = 5
BITMAP_RECORD = 6

ATTR_ATTRIBUTE_LIST = 0x20
ATTR_VOLUME_NAME = 0x60
ATTR_VOLUME_INFORMATION = 0x70
ATTR_DATA = 0x80
ATTR_INDEX_ROOT = 0x90
ATTR_INDEX_ALLOCATION = 0xA0
ATTR_END = 0xFFFFFFFF

VOLUME_DIRTY = 0x0001
HIBERNATION_MAGICS = (b"hibr", b"HIBR", b"wake", b"WAKE")
HIBERNATED_WARNING = ("NTFS was not shut down cleanly (Windows Fast Startup or hibernation); "
                      "the image holds the state as Windows left it")
DIRTY_WARNING = ("NTFS is marked dirty (it was not shut down cleanly); "
                 "the image holds the state as Windows left it")

# Extension records followed per attribute before the metadata counts as damaged.
MAX_EXTENSIONS = 4096


class _Damaged(FsMapError):
    def __init__(self, what: str):
        super().__init__(f"NTFS metadata is damaged ({what})")


def _u16(b: bytes, o: int) -> int:
    return struct.unpack_from("<H", b, o)[0]


def _u32(b: bytes, o: int) -> int:
    return struct.unpack_from("<I", b, o)[0]


def _u64(b: bytes, o: int) -> int:
    return struct.unpack_from("<Q", b, o)[0]


class _Boot:
    def __init__(self, boot: bytes):
        if len(boot) < 512 or boot[3:11] != OEM_ID:
            raise ValueError("not NTFS")
        self.bytes_per_sector = _u16(boot, 0x0B)
        spc = boot[0x0D]
        self.sectors_per_cluster = spc if spc <= 0x80 else 1 << (256 - spc)
        self.total_sectors = _u64(boot, 0x28)
        self.mft_lcn = _u64(boot, 0x30)
        self.mftmirr_lcn = _u64(boot, 0x38)
        per_record = struct.unpack_from("<b", boot, 0x40)[0]
        self.serial = _u64(boot, 0x48)
        bps = self.bytes_per_sector
        self.cluster = bps * self.sectors_per_cluster
        if bps not in (256, 512, 1024, 2048, 4096) or self.cluster > 2 * 1024 * 1024 \
                or self.sectors_per_cluster & (self.sectors_per_cluster - 1):
            raise _Damaged(f"boot sector geometry {bps} x {self.sectors_per_cluster}")
        self.record_size = per_record * self.cluster if per_record > 0 else 1 << -per_record
        if self.record_size < 256 or self.record_size > 65536 or self.record_size & (self.record_size - 1):
            raise _Damaged(f"MFT record size {self.record_size}")
        self.total_clusters = self.total_sectors // self.sectors_per_cluster
        if self.total_clusters == 0 or self.mft_lcn >= self.total_clusters:
            raise _Damaged("boot sector places the MFT outside the volume")


class _Attribute:
    """One attribute record: resident value or data runs [(vcn, lcn or None, count)]."""

    def __init__(self, record: bytes, off: int):
        self.type = _u32(record, off)
        length = _u32(record, off + 4)
        self.length = length
        self.non_resident = record[off + 8] != 0
        name_len, name_off = record[off + 9], _u16(record, off + 0xA)
        self.name = record[off + name_off: off + name_off + 2 * name_len].decode("utf-16-le", "replace")
        if self.non_resident:
            self.lowest_vcn = _u64(record, off + 0x10)
            runs_off = _u16(record, off + 0x20)
            self.allocated_size = _u64(record, off + 0x28)
            self.data_size = _u64(record, off + 0x30)
            self.initialized_size = _u64(record, off + 0x38)
            self.runs = _decode_runs(record[off + runs_off: off + length], self.lowest_vcn)
            self.value = b""
        else:
            value_len, value_off = _u32(record, off + 0x10), _u16(record, off + 0x14)
            self.value = record[off + value_off: off + value_off + value_len]
            if len(self.value) != value_len:
                raise _Damaged("resident attribute runs past its record")
            self.data_size = self.initialized_size = value_len
            self.runs = []


def _decode_runs(data: bytes, first_vcn: int) -> list[tuple[int, int | None, int]]:
    runs, pos, vcn, lcn = [], 0, first_vcn, 0
    while pos < len(data) and data[pos]:
        header = data[pos]
        len_size, off_size = header & 0x0F, header >> 4
        if len_size == 0 or len_size > 8 or off_size > 8 or pos + 1 + len_size + off_size > len(data):
            raise _Damaged("bad data run")
        count = int.from_bytes(data[pos + 1: pos + 1 + len_size], "little")
        if off_size:
            lcn += int.from_bytes(data[pos + 1 + len_size: pos + 1 + len_size + off_size], "little", signed=True)
            runs.append((vcn, lcn, count))
        else:
            runs.append((vcn, None, count))   # sparse
        vcn += count
        pos += 1 + len_size + off_size
    return runs


def _fixup(buf: bytearray, magic: bytes, what: str) -> bytearray:
    """Apply the update sequence array in place (the last two bytes of every 512 are stand-ins)."""
    if buf[:4] != magic:
        raise _Damaged(f"{what} has no {magic.decode()} signature")
    usa_off, usa_count = _u16(buf, 4), _u16(buf, 6)
    if usa_count == 0 or (usa_count - 1) * FIXUP_STRIDE > len(buf) or usa_off + 2 * usa_count > len(buf):
        raise _Damaged(f"{what} has a bad update sequence")
    usn = bytes(buf[usa_off: usa_off + 2])
    for i in range(1, usa_count):
        end = i * FIXUP_STRIDE
        if buf[end - 2: end] != usn:
            raise _Damaged(f"{what} is torn (update sequence mismatch)")
        buf[end - 2: end] = buf[usa_off + 2 * i: usa_off + 2 * i + 2]
    return buf


class _Volume:
    def __init__(self, read: Reader, size: int):
        self.read = read
        self.size = size
        self.boot = _Boot(read(0, 512))
        b = self.boot
        if b.total_sectors * b.bytes_per_sector > size:
            raise FsMapError(f"NTFS is larger than its partition ({b.total_sectors * b.bytes_per_sector} "
                             f"bytes in {size}); the partition looks truncated")
        # Bootstrap: record 0 sits at the start of the MFT; its $DATA says where the rest is.
        first = self._read_exact(b.mft_lcn * b.cluster, b.record_size, "MFT record 0")
        base = bytes(_fixup(bytearray(first), b"FILE", "MFT record 0"))
        # The runs in record 0 itself cover the start of the MFT, where any extension
        # records of $MFT live; with them the full run list can be gathered.
        own = [a for a in self.attributes(base, MFT_RECORD) if a.type == ATTR_DATA and not a.name and a.non_resident]
        if not own:
            raise _Damaged("MFT record 0 has no data runs")
        self.mft_runs = sorted(r for a in own for r in a.runs)
        self.mft_runs = self._runs_of(MFT_RECORD, ATTR_DATA, "", base_record=base)

    def _read_exact(self, offset: int, length: int, what: str) -> bytes:
        data = self.read(offset, length)
        if len(data) != length:
            raise _Damaged(f"{what} lies past the end of the partition")
        return data

    def read_runs(self, runs, offset: int, length: int, what: str) -> bytes:
        """Bytes [offset, offset+length) of a non-resident stream; sparse runs read as zeros."""
        cluster = self.boot.cluster
        out = bytearray()
        pos, end = offset, offset + length
        for vcn, lcn, count in runs:
            run_start, run_end = vcn * cluster, (vcn + count) * cluster
            if run_end <= pos or run_start >= end:
                continue
            a, z = max(pos, run_start), min(end, run_end)
            if a > pos:
                raise _Damaged(f"{what} has a gap in its data runs")
            if lcn is None:
                out += bytes(z - a)
            else:
                if lcn < 0 or lcn + count > self.boot.total_clusters:
                    raise _Damaged(f"{what} points outside the volume")
                out += self._read_exact(lcn * cluster + (a - run_start), z - a, what)
            pos = z
            if pos >= end:
                break
        if pos < end:
            raise _Damaged(f"{what} is shorter than its data runs claim")
        return bytes(out)

    def record(self, number: int) -> bytes:
        size = self.boot.record_size
        raw = self.read_runs(self.mft_runs, number * size, size, f"MFT record {number}")
        return bytes(_fixup(bytearray(raw), b"FILE", f"MFT record {number}"))

    @staticmethod
    def attributes(record: bytes, number: int) -> list[_Attribute]:
        off, used = _u16(record, 0x14), _u32(record, 0x18)
        used = min(used, len(record))
        attrs = []
        while off + 8 <= used:
            kind = _u32(record, off)
            if kind == ATTR_END:
                return attrs
            length = _u32(record, off + 4)
            # A resident header is 0x18 bytes, a non-resident one 0x40: _Attribute reads its fields
            # there, so a shorter attribute would take them from the next one or past the record.
            if length < 0x18 or off + length > used or (record[off + 8] and length < 0x40):
                raise _Damaged(f"MFT record {number} has a bad attribute")
            attrs.append(_Attribute(record, off))
            off += length
        raise _Damaged(f"MFT record {number} has no end marker")

    def _extension_records(self, base: bytes, number: int, kind: int, name: str) -> list[int]:
        """Records other than the base that the $ATTRIBUTE_LIST names for (kind, name)."""
        for attr in self.attributes(base, number):
            if attr.type != ATTR_ATTRIBUTE_LIST:
                continue
            value = attr.value if not attr.non_resident else \
                self.read_runs(attr.runs, 0, attr.data_size, f"record {number}'s attribute list")
            found, pos = [], 0
            while pos + 0x1A <= len(value):
                entry_len = _u16(value, pos + 4)
                if entry_len < 0x1A:
                    raise _Damaged(f"record {number}'s attribute list")
                name_len, name_off = value[pos + 6], value[pos + 7]
                entry_name = value[pos + name_off: pos + name_off + 2 * name_len].decode("utf-16-le", "replace")
                ref = _u64(value, pos + 0x10) & 0xFFFFFFFFFFFF
                if _u32(value, pos) == kind and entry_name == name and ref != number and ref not in found:
                    found.append(ref)
                pos += entry_len
            if len(found) > MAX_EXTENSIONS:
                raise _Damaged(f"record {number}'s attribute list is too long")
            return found
        return []

    def find(self, number: int, kind: int, name: str = "", base_record: bytes | None = None) -> list[_Attribute]:
        """Every piece of attribute (kind, name) of file `number`, extension records included."""
        base = base_record if base_record is not None else self.record(number)
        if not _u16(base, 0x16) & 1:
            raise _Damaged(f"MFT record {number} is not in use")
        pieces = [a for a in self.attributes(base, number) if a.type == kind and a.name == name]
        for ext in self._extension_records(base, number, kind, name):
            pieces += [a for a in self.attributes(self.record(ext), ext) if a.type == kind and a.name == name]
        return pieces

    def _runs_of(self, number: int, kind: int, name: str, base_record: bytes | None = None):
        pieces = [p for p in self.find(number, kind, name, base_record) if p.non_resident]
        if not pieces:
            raise _Damaged(f"MFT record {number} has no non-resident data")
        return sorted(r for p in pieces for r in p.runs)

    def stream(self, number: int, kind: int = ATTR_DATA, name: str = "", limit: int | None = None,
               what: str = "") -> tuple[bytes, int, int]:
        """(bytes, data size, initialized size) of an attribute's value, read up to `limit` bytes."""
        pieces = self.find(number, kind, name)
        if not pieces:
            raise _Damaged(f"MFT record {number} lacks attribute 0x{kind:X}")
        first = min(pieces, key=lambda p: getattr(p, "lowest_vcn", 0))
        if not first.non_resident:
            value = first.value
            return value[:limit] if limit is not None else value, len(value), len(value)
        runs = sorted(r for p in pieces if p.non_resident for r in p.runs)
        size = first.data_size if limit is None else min(limit, first.data_size)
        return self.read_runs(runs, 0, size, what or f"record {number}"), first.data_size, first.initialized_size

    # ------------------------------------------------------------ what the map needs

    def used_ranges(self) -> tuple[list[tuple[int, int]], list[str]]:
        b = self.boot
        needed = -(-b.total_clusters // 8)
        bitmap, data_size, initialized = self.stream(BITMAP_RECORD, what="$Bitmap")
        if data_size < needed or len(bitmap) < needed:
            raise _Damaged(f"$Bitmap holds {data_size} bytes, the volume needs {needed}")
        if initialized < needed:
            # Never-written bitmap bytes read as zero; count them as used rather than trust that.
            bitmap = bitmap[:initialized] + b"\xff" * (needed - initialized)
        ranges = [(start * b.cluster, count * b.cluster) for start, count in set_bit_runs(bitmap, b.total_clusters)]
        ranges.append((0, b.cluster))            # $Boot (already in the bitmap, but never optional)
        # Sectors after the last whole cluster: the backup boot sector and any partition slack.
        tail, warnings = tail_after("NTFS", b.total_clusters * b.cluster, self.size)
        return ranges + tail, warnings

    def label_and_flags(self) -> tuple[str | None, int]:
        label, flags = None, 0
        for attr in self.attributes(self.record(VOLUME_RECORD), VOLUME_RECORD):
            if attr.type == ATTR_VOLUME_NAME and not attr.non_resident:
                label = attr.value.decode("utf-16-le", "replace") or None
            elif attr.type == ATTR_VOLUME_INFORMATION and not attr.non_resident and len(attr.value) >= 12:
                flags = _u16(attr.value, 0xA)
        return label, flags

    def _root_entries(self):
        """(file reference, name) of each entry in the root directory's index."""
        return self.dir_entries(ROOT_RECORD, "root directory")

    def dir_entries(self, number: int, what: str):
        """(file reference, name) of each entry in a directory's filename index."""
        index_block = 4096
        for attr in self.find(number, ATTR_INDEX_ROOT, "$I30"):
            if not attr.non_resident:
                # Index root header (16 bytes) and node header (16): anything shorter is damage,
                # reported as such so probe's "only the hibernation check is lost" holds.
                if len(attr.value) < 0x20:
                    raise _Damaged(f"{what} index root is too short")
                index_block = _u32(attr.value, 8) or index_block
                yield from _index_entries(attr.value, 0x10)
        pieces = [a for a in self.find(number, ATTR_INDEX_ALLOCATION, "$I30") if a.non_resident]
        if not pieces:
            return
        if index_block < 512 or index_block > 65536:
            raise _Damaged(f"{what} index block size")
        first = min(pieces, key=lambda p: p.lowest_vcn)
        runs = sorted(r for p in pieces for r in p.runs)
        total = min(first.data_size, 64 * 1024 * 1024)
        data = self.read_runs(runs, 0, total - total % index_block, f"{what} index")
        for pos in range(0, len(data), index_block):
            block = bytearray(data[pos: pos + index_block])
            if block[:4] != b"INDX":
                continue
            try:
                _fixup(block, b"INDX", f"{what} index block")
            except FsMapError:
                continue
            yield from _index_entries(bytes(block), 0x18)

    def child(self, number: int, name: str, what: str) -> int | None:
        """The MFT record number of the entry `name` (any case) in directory `number`."""
        want = name.casefold()
        for ref, entry in self.dir_entries(number, what):
            if entry.casefold() == want:
                return ref & 0xFFFFFFFFFFFF
        return None

    def hibernated(self) -> bool:
        for ref, name in self._root_entries():
            if name.lower() == "hiberfil.sys":
                head, _size, _init = self.stream(ref & 0xFFFFFFFFFFFF, limit=4, what="hiberfil.sys")
                return head[:4] in HIBERNATION_MAGICS
        return False


def _index_entries(buf: bytes, node_header: int):
    """Entries of one index node: node header at `node_header`, entries after its offset."""
    first, total = _u32(buf, node_header), _u32(buf, node_header + 4)
    pos, end = node_header + first, min(node_header + total, len(buf))
    while pos + 0x10 <= end:
        ref, length, key_len, flags = struct.unpack_from("<QHHI", buf, pos)
        if flags & 0x2 or length < 0x10:
            return
        if key_len >= 0x42 and pos + 0x10 + 0x42 <= end:
            key = pos + 0x10
            name_len = buf[key + 0x40]
            name = buf[key + 0x42: key + 0x42 + 2 * name_len].decode("utf-16-le", "replace")
            yield ref, name
        pos += length


def _boot(read: Reader) -> _Boot | None:
    head = read(0, 512)
    if len(head) < 512 or head[3:11] != OEM_ID:
        return None
    return _Boot(head)


def boot_sector_size(read: Reader) -> int | None:
    """The volume's size in bytes (its backup boot sector follows) when sector 0 is an NTFS
    boot sector with sane geometry, else None."""
    try:
        boot = _boot(read)
    except FsMapError:
        return None
    return None if boot is None else boot.total_sectors * boot.bytes_per_sector


def identify(read: Reader, size: int) -> tuple[str, str | None, str | None] | None:
    try:
        boot = _boot(read)
    except FsMapError:
        return ("ntfs", None, None)
    if boot is None:
        return None
    label = None
    try:
        label, _flags = _Volume(read, max(size, boot.total_sectors * boot.bytes_per_sector)).label_and_flags()
    except (FsMapError, struct.error, ValueError, IndexError):
        pass
    return "ntfs", label, f"{boot.serial:016X}"


def holds_windows(read: Reader, size: int) -> bool:
    """Whether the volume holds Windows/System32 (an installed Windows). Reads the boot
    sector, the start of the MFT and two directory indexes; False when any of it is not NTFS
    or cannot be read."""
    try:
        if _boot(read) is None:
            return False
        volume = _Volume(read, size)
        windows = volume.child(ROOT_RECORD, "Windows", "root directory")
        return windows is not None and volume.child(windows, "System32", "Windows directory") is not None
    except (FsMapError, struct.error, ValueError, IndexError):
        return False


def probe(read: Reader, size: int) -> FsInfo | None:
    if _boot(read) is None:
        return None
    volume = _Volume(read, size)
    label, flags = volume.label_and_flags()
    used, warnings = volume.used_ranges()
    try:
        hibernated = volume.hibernated()
    except FsMapError:
        hibernated = False   # a damaged root index does not spoil the map; only this check is lost
    if hibernated:
        warnings.append(HIBERNATED_WARNING)
    elif flags & VOLUME_DIRTY:
        warnings.append(DIRTY_WARNING)
    return FsInfo(fs="ntfs", label=label, uuid=f"{volume.boot.serial:016X}", block_size=volume.boot.cluster,
                  used=merge_ranges(used, size), warnings=tuple(warnings))
