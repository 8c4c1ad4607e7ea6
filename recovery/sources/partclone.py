"""partclone images: the header, the used-block bitmap and the block data, checked as read.

Two image formats are in use (see docs/FORMAT.md, "partclone images"):

    0001  header of 4160 bytes; one byte per block in the bitmap, then "BiTmAgIc"; after every
          used block a 4-byte CRC computed by partclone's old, faulty CRC (it hashes the
          block's first byte block-size times, chained from block to block). Images made by
          some old 64-bit builds store each CRC in 8 bytes; the reader tells which from the
          second block.
    0002  header of 110 bytes with its own CRC32; the bitmap one bit per block (least
          significant first) followed by its CRC32; the used blocks in order with a checksum
          after every `blocks_per_checksum` blocks and after a last, shorter group, restarted
          after each checksum when `reseed` is set. partclone -a0 writes no checksums.

The CRC is the usual reflected CRC-32 (polynomial 0xEDB88320) seeded with 0xFFFFFFFF but
without the final inversion, so it is `~zlib.crc32(data, ~seed)`.

Random access: an uncompressed image is read in place, each used block found from the bitmap
(the n-th used block lies at a fixed place, checksums included), its checksum group checked on
every read. A compressed image cannot be sought in, so its first random read decodes it once
into a sparse file the partition's size (only used blocks written) in a spool folder; the
sequential path (extents) never needs that and decodes straight from the compressed stream.
"""

from __future__ import annotations

import bisect
import io
import os
import re
import struct
import tempfile
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from recovery.errors import DamageError
from recovery.fs import bitmap as fsbitmap
from recovery.fs import identify
from recovery.sources import compressed
from recovery.sources.base import EXTENT_BYTES, Damage, Source, SourcePartition
from recovery.model.layout import Layout, PartitionEntry

MAGIC = b"partclone-image"
BIT_MAGIC = b"BiTmAgIc"
V1_HEADER = struct.Struct("<15s15s4s2s iQQQ 4096s")        # head, fs_info, options
V2_HEADER = struct.Struct("<16s14s4sH 16sQQQQI IHHHHIBB I")  # head, fs_info, options, crc
CSM_NONE, CSM_CRC32, CSM_XXH64, CSM_XXH128, CSM_CRC32_0001 = 0x00, 0x20, 0x30, 0x31, 0xFF
BM_NONE, BM_BIT, BM_BYTE = 0x00, 0x01, 0x08
MAX_BLOCK_SIZE = 64 * 1024 * 1024
_MASK = 0xFFFFFFFF

# partclone's file system names -> recovery.fs names (blkid's).
FS_NAMES = {"EXTFS": "ext4", "EXT2": "ext2", "EXT3": "ext3", "EXT4": "ext4", "FAT": "vfat",
            "FAT12": "vfat", "FAT16": "vfat", "FAT32": "vfat", "NTFS": "ntfs", "EXFAT": "exfat",
            "BTRFS": "btrfs", "XFS": "xfs", "HFS Plus": "hfsplus", "REISERFS": "reiserfs",
            "JFS": "jfs", "F2FS": "f2fs", "MINIX": "minix", "NILFS": "nilfs2", "UFS": "ufs",
            "VMFS": "vmfs", "APFS": "apfs", "raw": "", "BTRFS ": "btrfs"}


def crc_update(seed: int, data) -> int:
    """partclone's CRC-32 step: reflected, no final inversion."""
    return ~zlib.crc32(data, ~seed & _MASK) & _MASK


def crc_0001(seed: int, block) -> int:
    """The 0001 format's CRC: the block's first byte, block-size times (a bug kept for reading)."""
    return crc_update(seed, bytes((block[0],)) * len(block))


@dataclass(frozen=True)
class Header:
    version: int                # 1 or 2
    fs: str                     # as partclone names it: "EXT4", "NTFS", "FAT32", "raw", ...
    made_by: str                # partclone version ("" for 0001 images)
    block_size: int
    device_size: int            # bytes of the partition it was made from
    total_blocks: int
    used_blocks: int            # as the bitmap counts them
    checksum_mode: int
    checksum_size: int
    blocks_per_checksum: int
    reseed: bool
    bitmap_mode: int

    @property
    def checksums(self) -> bool:
        return self.checksum_mode != CSM_NONE and self.blocks_per_checksum > 0


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("ascii", "replace").strip()


def read_header(stream: compressed.Stream) -> tuple[Header, list[tuple[int, int]]]:
    """Parse the header and the bitmap at the start of `stream`, leaving it at the first
    block; (header, runs of used blocks as (first block, count))."""
    name = stream.name
    first = stream.read(V2_HEADER.size)
    if not first.startswith(MAGIC):
        raise DamageError(f"{name} is not a partclone image (no partclone header)")
    version_text = first[30:34]
    if version_text == b"0001":
        rest = stream.read_exact(V1_HEADER.size - len(first), "partclone header")
        head = V1_HEADER.unpack(first + rest)
        fs, block_size, device_size, total, _used = _text(head[1]), head[4], head[5], head[6], head[7]
        header_args = dict(version=1, fs=fs, made_by="", checksum_mode=CSM_CRC32_0001,
                           checksum_size=4, blocks_per_checksum=1, reseed=False, bitmap_mode=BM_BYTE)
    elif first[16 + 14:16 + 14 + 4] == b"0002":
        if len(first) != V2_HEADER.size:
            raise DamageError(f"{stream.where} ends early (partclone header): the image is cut short")
        v = V2_HEADER.unpack(first)
        if crc_update(_MASK, first[:-4]) != v[-1]:
            raise DamageError(f"{stream.where}: the partclone header fails its checksum (the image is damaged)")
        if v[3] != 0xC0DE:
            raise DamageError(f"{name} was made on a big-endian machine; such images are not supported")
        fs, device_size, total, _sb_used, _used, block_size = _text(v[4]), v[5], v[6], v[7], v[8], v[9]
        _feature_size, _image_version, _cpu_bits, cs_mode, cs_size, bpc, reseed, bm_mode = v[10:18]
        header_args = dict(version=2, fs=fs, made_by=_text(v[1]), checksum_mode=cs_mode,
                           checksum_size=cs_size, blocks_per_checksum=bpc if cs_mode != CSM_NONE else 0,
                           reseed=bool(reseed), bitmap_mode=bm_mode)
        expected_size = {CSM_NONE: 0, CSM_CRC32: 4, CSM_XXH64: 8, CSM_XXH128: 16}.get(cs_mode)
        if expected_size is None or expected_size != cs_size or (cs_mode != CSM_NONE and bpc == 0):
            raise DamageError(f"{stream.where}: the partclone header names an unknown checksum "
                              f"({cs_mode:#x}, {cs_size} bytes, every {bpc} blocks)")
    else:
        raise DamageError(f"{name}: partclone image format {version_text.decode('ascii', 'replace')!r} "
                          "is not supported (only 0001 and 0002)")
    if not 0 < block_size <= MAX_BLOCK_SIZE or total * block_size > device_size:
        raise DamageError(f"{name}: the partclone header is inconsistent (block size {block_size}, "
                          f"{total} blocks, device {device_size} bytes)")
    runs = _read_bitmap(stream, header_args["version"], header_args["bitmap_mode"], total)
    used = sum(count for _, count in runs)
    return Header(block_size=block_size, device_size=device_size, total_blocks=total,
                  used_blocks=used, **header_args), runs


def _read_bitmap(stream: compressed.Stream, version: int, mode: int, total: int) -> list[tuple[int, int]]:
    if mode == BM_NONE:
        return [(0, total)] if total else []
    if mode == BM_BIT:
        bits = stream.read_exact((total + 7) // 8, "partclone bitmap")
        runs = fsbitmap.set_bit_runs(bits, total)
    elif mode == BM_BYTE:
        # One byte per block, 1 = used (anything else is free, as partclone reads it).
        per_block = stream.read_exact(total, "partclone bitmap")
        runs = [(m.start(), m.end() - m.start()) for m in re.finditer(rb"\x01+", per_block)]
        bits = _runs_to_bits(runs, total) if version != 1 else b""
    else:
        raise DamageError(f"{stream.where}: unknown partclone bitmap kind {mode:#x}")
    if version == 1:
        if stream.read_exact(len(BIT_MAGIC), "partclone bitmap") != BIT_MAGIC:
            raise DamageError(f"{stream.where}: the partclone bitmap's end mark is missing (the image is damaged)")
    else:
        # Format 0002 checksums the bitmap as bits, whichever way it is stored.
        stored = struct.unpack("<I", stream.read_exact(4, "partclone bitmap checksum"))[0]
        if crc_update(_MASK, bits) != stored:
            raise DamageError(f"{stream.where}: the partclone bitmap fails its checksum (the image is damaged)")
    return runs


def _runs_to_bits(runs: list[tuple[int, int]], total: int) -> bytes:
    """Runs of used blocks -> a bitmap, least significant bit first."""
    out = bytearray((total + 7) // 8)
    for first, count in runs:
        end = first + count
        while first < end and first % 8:
            out[first // 8] |= 1 << (first % 8)
            first += 1
        whole = (end - first) // 8
        out[first // 8:first // 8 + whole] = b"\xff" * whole
        first += whole * 8
        while first < end:
            out[first // 8] |= 1 << (first % 8)
            first += 1
    return bytes(out)


class BlockMap:
    """Where each used block lies in the image's data: the n-th used block is the n-th block
    in the stream (checksums in between)."""

    def __init__(self, runs: list[tuple[int, int]]):
        self.runs = runs
        self.firsts = [first for first, _ in runs]
        self.ordinals = []
        n = 0
        for _, count in runs:
            self.ordinals.append(n)
            n += count

    def ordinal(self, block: int) -> int | None:
        """The place of `block` among the used blocks, or None when it is free."""
        i = bisect.bisect_right(self.firsts, block) - 1
        if i < 0:
            return None
        first, count = self.runs[i]
        return self.ordinals[i] + block - first if block < first + count else None


class PartcloneImage:
    """One partclone image file (whole or in pieces, compressed or not)."""

    def __init__(self, path: str):
        self.path = path
        with compressed.Stream(path) as stream:
            self.header, self.runs = read_header(stream)
            self.data_offset = stream.position
            self.compression = stream.compression
            self.pieces = stream.paths
        self.name = compressed.image_name(path)
        self.map = BlockMap(self.runs)
        self.crc_stride = self._crc_stride()
        self.tail = self._ntfs_backup_boot_sector()

    @property
    def size(self) -> int:
        return self.header.device_size

    @property
    def fs(self) -> str:
        return FS_NAMES.get(self.header.fs, self.header.fs.lower())

    @property
    def used_bytes(self) -> int:
        return sum(length for _, length in self.used_ranges())

    def used_ranges(self) -> list[tuple[int, int]]:
        bs = self.header.block_size
        ranges = [(first * bs, min(count * bs, self.size - first * bs)) for first, count in self.runs]
        if self.tail:
            ranges.append((self.tail[0], len(self.tail[1])))
        return ranges

    def _ntfs_backup_boot_sector(self) -> tuple[int, bytes] | None:
        """NTFS keeps a copy of its boot sector in the sector after the volume, outside every
        cluster, so partclone's image leaves it out and a restore from it would leave whatever
        the target held there. It is by definition the boot sector again: give it back as
        (offset, bytes), taken from cluster 0 of the image."""
        h = self.header
        if h.fs != "NTFS" or not self.runs or self.runs[0][0] != 0:
            return None
        with compressed.Stream(self.path) as stream:
            stream.read_exact(self.data_offset, "partclone header")
            boot = stream.read(min(h.block_size, 4096))
        if len(boot) < 512 or boot[3:11] != b"NTFS    ":
            return None
        sector = struct.unpack_from("<H", boot, 0x0B)[0]
        sectors = struct.unpack_from("<Q", boot, 0x28)[0]
        at = sectors * sector
        if sector not in (512, 1024, 2048, 4096) or len(boot) < sector:
            return None
        if at < h.total_blocks * h.block_size or at + sector > h.device_size:
            return None
        return at, boot[:sector]

    def _crc_stride(self) -> int:
        """Bytes stored after each checksum group: the checksum, or 8 for 0001 images from the
        64-bit bug (told from the second used block: only one reading makes its CRC match)."""
        h = self.header
        if h.version != 1 or h.used_blocks < 2:
            return h.checksum_size
        bs = h.block_size
        with compressed.Stream(self.path) as stream:
            stream.read_exact(self.data_offset, "partclone header")
            head = stream.read(2 * bs + 16)
        if len(head) < 2 * bs + 8:
            return 4
        crc1 = crc_0001(_MASK, head[:bs])
        if struct.unpack_from("<I", head, bs)[0] != crc1:
            return 4                # damaged: let the reading say so at the first block
        for stride in (4, 8):
            block2 = head[bs + stride:2 * bs + stride]
            stored = head[2 * bs + stride:2 * bs + stride + 4]
            if len(stored) == 4 and struct.unpack("<I", stored)[0] == crc_0001(crc1, block2):
                return stride
        return 4

    # -- the sequential path ---------------------------------------------------------------

    def groups(self, stream: compressed.Stream) -> Iterator[memoryview]:
        """The used blocks' bytes in order, as checked groups (each a whole number of blocks)."""
        h = self.header
        bs, left = h.block_size, h.used_blocks
        per = h.blocks_per_checksum if h.checksums else max(1, EXTENT_BYTES // bs)
        if h.checksums and per * bs < EXTENT_BYTES // 4:
            batch = max(1, EXTENT_BYTES // (per * bs))   # small groups (0001: one block) read together
        else:
            batch = 1
        stride = self.crc_stride if h.checksums else 0
        seed = _MASK
        checkable = h.checksum_mode in (CSM_CRC32, CSM_CRC32_0001)
        done = 0
        while left:
            groups_here = min(batch, -(-left // per))
            blocks_here = min(left, groups_here * per)
            full, tail = divmod(blocks_here, per)
            nbytes = blocks_here * bs + (full + (1 if tail else 0)) * stride
            raw = memoryview(stream.read_exact(nbytes, "partclone data"))
            if not h.checksums:
                yield raw
            else:
                out = bytearray() if groups_here > 1 else None
                pos = 0
                for g in range(full + (1 if tail else 0)):
                    n = per if g < full else tail
                    data = raw[pos:pos + n * bs]
                    stored = raw[pos + n * bs:pos + n * bs + h.checksum_size]
                    pos += n * bs + stride
                    if checkable:
                        if h.checksum_mode == CSM_CRC32:
                            crc = crc_update(seed, data)
                        else:
                            crc = seed
                            for b in range(n):
                                crc = crc_0001(crc, data[b * bs:(b + 1) * bs])
                        if crc != struct.unpack("<I", stored)[0]:
                            first_bad = done + g * per
                            raise DamageError(f"{stream.where}: partclone checksum mismatch at used block "
                                              f"{first_bad} (the image is damaged)")
                        seed = _MASK if h.reseed else crc
                    if out is None:
                        yield data
                    else:
                        out += data
                if out is not None:
                    yield memoryview(out)
            left -= blocks_here
            done += blocks_here

    def extents(self, piece: int = EXTENT_BYTES,
                on_progress: Callable[[int], None] | None = None) -> Iterator[tuple[int, bytes]]:
        """(offset in the partition, bytes) of every used range, in order, checked."""
        bs = self.header.block_size
        runs = iter(self.runs)
        run_left = 0
        pending_offset, pending, pending_bytes = 0, [], 0      # slices of one extent to come
        with compressed.Stream(self.path) as stream:
            stream.read_exact(self.data_offset, "partclone header")
            for group in self.groups(stream):
                pos = 0
                while pos < len(group):
                    if run_left == 0:
                        if pending:
                            yield pending_offset, self._joined(pending_offset, pending)
                            pending, pending_bytes = [], 0
                        run_first, run_left = next(runs)
                        pending_offset = run_first * bs
                    take = min(run_left, (len(group) - pos) // bs, max(1, (piece - pending_bytes) // bs))
                    pending.append(group[pos:pos + take * bs])
                    pending_bytes += take * bs
                    pos += take * bs
                    run_left -= take
                    if pending_bytes >= piece:
                        yield pending_offset, self._joined(pending_offset, pending)
                        pending_offset += pending_bytes
                        pending, pending_bytes = [], 0
                if on_progress:
                    on_progress(stream.compressed_done)
            if pending:
                yield pending_offset, self._joined(pending_offset, pending)
            if self.tail:
                yield self.tail

    def _joined(self, offset: int, pieces: list) -> bytes:
        data = pieces[0].tobytes() if len(pieces) == 1 else b"".join(pieces)
        # The last block may run past the device's end when the device is not a whole number of blocks.
        return data if offset + len(data) <= self.size else data[:max(0, self.size - offset)]

    def compressed_size(self) -> int:
        return sum(os.path.getsize(p) for p in self.pieces)

    def missing_fat_clusters(self) -> int:
        """Bytes a FAT file system in the image uses (per its own FAT, read from the image)
        that partclone's bitmap leaves out: partclone's FAT12 map misses clusters, and a
        restore from such an image cannot give those files back."""
        if self.fs != "vfat":
            return 0
        from recovery.fs import FsMapError, fat

        def head_of(end: int) -> bytes:
            """The image's first `end` bytes (free blocks as zeros)."""
            head = bytearray(min(end, self.size))
            for offset, data in self.extents(piece=1 << 20):
                if offset >= len(head):
                    break
                head[offset:offset + len(data)] = data[:len(head) - offset]
            return bytes(head)

        try:
            head = head_of(1 << 20)
            bpb = fat._bpb(lambda off, n: head[off:off + n])
            if bpb is None:
                return 0
            metadata_end = bpb.data_start * bpb.bytes_per_sector
            if metadata_end > len(head):
                head = head_of(metadata_end)
            # Reads past the metadata (a FAT32 root directory, for its label) see zeros: only
            # the FAT decides the used map.
            info = fat.probe(lambda off, n: head[off:off + n].ljust(max(0, min(n, self.size - off)), b"\0"),
                             self.size)
        except (FsMapError, DamageError, ValueError, IndexError, struct.error):
            return 0    # damage is the checksums' to report; a damaged FAT is not judged here
        if info is None:
            return 0
        volume_end = (bpb.data_start + bpb.cluster_count * bpb.sectors_per_cluster) * bpb.bytes_per_sector
        have = self.used_ranges()
        missing = 0
        for off, n in info.used:
            end = min(off + n, volume_end)
            pos = off
            for a, m in have:
                if pos >= end or a >= end:
                    break
                if a + m <= pos:
                    continue
                if a > pos:
                    missing += a - pos
                pos = a + m
            if pos < end:
                missing += end - pos
        return missing

    def prove(self, on_progress: Callable[[int, int], None] | None = None,
              partition: int | None = None) -> list[Damage]:
        """Decode everything and check every checksum; the damage found."""
        total = self.compressed_size()
        try:
            for _ in self.extents(on_progress=(lambda done: on_progress(done, total)) if on_progress else None):
                pass
        except DamageError as exc:
            return [Damage(partition, 0, self.size, exc.message)]
        return self.map_damage(partition)

    def map_damage(self, partition: int | None) -> list[Damage]:
        """The image is intact but partclone left out blocks its file system uses."""
        missing = self.missing_fat_clusters()
        if not missing:
            return []
        return [Damage(partition, 0, self.size,
                       f"{self.name} leaves out {missing} bytes its {self.header.fs} file system uses "
                       "(partclone's map of it is faulty): files there cannot be restored whole")]

    # -- random access ----------------------------------------------------------------------

    def reader(self, spool_dir: str | None = None) -> "ImageData | SpooledData":
        if self.compression == "none" and len(self.pieces) == 1:
            return ImageData(self)
        return SpooledData(self, spool_dir)


class ImageData:
    """Random access to an uncompressed, unsplit image, in place."""

    CACHE_GROUPS = 8

    def __init__(self, image: PartcloneImage):
        self.image = image
        self.size = image.size
        self._fd = os.open(image.pieces[0], os.O_RDONLY)
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    def used_ranges(self) -> list[tuple[int, int]]:
        return self.image.used_ranges()

    def _group(self, g: int) -> bytes:
        """Checksum group `g`'s blocks, checked (without checksums: a run of blocks)."""
        with self._lock:
            if g in self._cache:
                self._cache.move_to_end(g)
                return self._cache[g]
        h, img = self.image.header, self.image
        bs = h.block_size
        per = h.blocks_per_checksum if h.checksums else 256
        stride = img.crc_stride if h.checksums else 0
        n = min(per, h.used_blocks - g * per)
        at = img.data_offset + g * (per * bs + stride)
        raw = os.pread(self._fd, n * bs + (h.checksum_size if h.checksums else 0), at)
        if len(raw) < n * bs + (h.checksum_size if h.checksums else 0):
            raise DamageError(f"{img.name} ends early (partclone data): the image is cut short")
        data = raw[:n * bs]
        if h.checksums and h.checksum_mode in (CSM_CRC32, CSM_CRC32_0001):
            seed = _MASK
            if not h.reseed and g > 0:
                seed = struct.unpack("<I", os.pread(self._fd, 4, at - stride))[0]
            if h.checksum_mode == CSM_CRC32:
                crc = crc_update(seed, data)
            else:
                crc = seed
                for b in range(n):
                    crc = crc_0001(crc, data[b * bs:(b + 1) * bs])
            if crc != struct.unpack_from("<I", raw, n * bs)[0]:
                raise DamageError(f"{img.name}: partclone checksum mismatch at used block {g * per} "
                                  "(the image is damaged)")
        with self._lock:
            self._cache[g] = data
            while len(self._cache) > self.CACHE_GROUPS:
                self._cache.popitem(last=False)
        return data

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        h = self.image.header
        bs = h.block_size
        per = h.blocks_per_checksum if h.checksums else 256
        out = bytearray(length)
        pos = 0
        while pos < length:
            block, inside = divmod(offset + pos, bs)
            n = min(bs - inside, length - pos)
            ordinal = self.image.map.ordinal(block)
            if ordinal is not None:
                g, k = divmod(ordinal, per)
                data = self._group(g)
                out[pos:pos + n] = data[k * bs + inside:k * bs + inside + n]
            pos += n
        tail = self.image.tail
        if tail and tail[0] < offset + length and offset < tail[0] + len(tail[1]):
            lo, hi = max(offset, tail[0]), min(offset + length, tail[0] + len(tail[1]))
            out[lo - offset:hi - offset] = tail[1][lo - tail[0]:hi - tail[0]]
        return bytes(out)

    def close(self) -> None:
        os.close(self._fd)


class SpooledData:
    """Random access to a compressed or split image: decoded once, on the first read, into a
    sparse file in `spool_dir` (only the used blocks take space)."""

    def __init__(self, image: PartcloneImage, spool_dir: str | None):
        self.image = image
        self.size = image.size
        self.spool_dir = spool_dir
        self._lock = threading.Lock()
        self._fd: int | None = None

    def used_ranges(self) -> list[tuple[int, int]]:
        return self.image.used_ranges()

    def _spool(self) -> int:
        with self._lock:
            if self._fd is None:
                handle = tempfile.TemporaryFile(prefix="partclone-", dir=self.spool_dir)
                fd = os.dup(handle.fileno())
                handle.close()
                try:
                    os.ftruncate(fd, self.size)
                    for offset, data in self.image.extents():
                        os.pwrite(fd, data, offset)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
            return self._fd

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        return os.pread(self._spool(), length, offset)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def identify_head(image: PartcloneImage, head_bytes: int = 1024 * 1024) -> tuple[str, str | None, str | None] | None:
    """(fs, label, uuid) from the first `head_bytes` of the partition (the used ones decoded
    from the stream; nothing else read): enough for ext's superblock and FAT's and NTFS's boot
    sectors."""
    head = bytearray(min(head_bytes, image.size))
    try:
        for offset, data in image.extents(piece=256 * 1024):
            if offset >= len(head):
                break
            head[offset:offset + len(data)] = data[:len(head) - offset]
    except DamageError:
        return None             # prove() reports it; a listing still shows the image

    def read(offset: int, length: int) -> bytes:
        return bytes(head[offset:offset + length]) + bytes(max(0, length - max(0, len(head) - offset)))
    try:
        return identify(read, image.size)
    except Exception:  # noqa: BLE001 - a label is a nicety; the image is checked elsewhere
        return None


class PartcloneSource(Source):
    """A bare partclone image: one filesystem with no partition table, so partition number 0
    (as a whole-disk filesystem is); a restore writes it into a partition or disk."""

    kind = "partclone image"

    def __init__(self, path: str, spool_dir: str | None = None):
        self.image = PartcloneImage(path)
        self.spool_dir = spool_dir
        st = os.stat(self.image.pieces[0])
        import datetime as _dt
        self.created = _dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.name = self.image.name
        self.location = os.path.abspath(path)       # a restore must not write where it is read from
        self.id = "partclone:" + _digest_of_files(self.image.pieces)
        found = identify_head(self.image) or (self.image.fs, None, None)
        self.layout = Layout(table="none", sector_size=512, disk_size=self.image.size,
                             partitions=(PartitionEntry(number=0, start=0, size=self.image.size, type=""),))
        self.partitions = [SourcePartition(
            number=0, start=0, size=self.image.size, fs=found[0] or self.image.fs,
            label=found[1], uuid=found[2], used_bytes=self.image.used_bytes,
            whole=self.image.header.bitmap_mode == BM_NONE)]
        self._readers: list = []

    def boot_areas(self) -> list[tuple[int, bytes]]:
        return []

    def reader(self, number: int):
        if number != 0:
            raise KeyError(number)
        data = self.image.reader(self.spool_dir)
        self._readers.append(data)
        return data

    def extents(self, number: int) -> Iterator[tuple[int, bytes]]:
        if number != 0:
            raise KeyError(number)
        return self.image.extents()

    def prove(self, on_progress: Callable[[int, int], None] | None = None) -> list[Damage]:
        return self.image.prove(on_progress, partition=0)

    def describe(self) -> list[str]:
        h = self.image.header
        p = self.partitions[0]
        return [f"partclone image {self.name} (format {h.version:04d}, {self.image.compression}"
                f"{', %d pieces' % len(self.image.pieces) if len(self.image.pieces) > 1 else ''})",
                f"{p.fs or 'raw'} filesystem{' ' + repr(p.label) if p.label else ''}, "
                f"{p.size} bytes, {p.used_bytes} bytes used"]

    def close(self) -> None:
        for data in self._readers:
            data.close()
        self._readers.clear()


def _digest_of_files(paths: list[str]) -> str:
    """A short, stable identity for image files: names, sizes and their first and last MiB."""
    import hashlib
    h = hashlib.sha256()
    for p in paths:
        size = os.path.getsize(p)
        h.update(f"{os.path.basename(p)}:{size}\n".encode())
        with io.open(p, "rb") as f:
            h.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(size - (1 << 20))
                h.update(f.read())
    return h.hexdigest()[:16]


def open(path: str, spool_dir: str | None = None) -> PartcloneSource | None:  # noqa: A001 - the sources' common entry
    """The partclone image at `path` (whole, compressed or in pieces) as a Source; None when
    it is not one; DamageError when it is but its header or bitmap is damaged."""
    if os.path.isdir(path):
        return None
    try:
        with compressed.Stream(path) as stream:
            start = stream.read(len(MAGIC))
    except DamageError:
        # A damaged compressed stream or missing piece: only ours if the name says partclone.
        if "ptcl" in os.path.basename(path) or "partclone" in os.path.basename(path):
            raise
        return None
    except Exception:  # noqa: BLE001 - unreadable or not a file: not ours
        return None
    if start != MAGIC:
        return None
    return PartcloneSource(path, spool_dir)
