"""ext2/3/4 used-block map: superblock, group descriptors, block bitmaps.

Every group's metadata (superblock and descriptor backups, reserved GDT blocks, bitmaps,
inode tables) is counted as used whatever the bitmaps say, so a group whose bitmap was
never initialised (BLOCK_UNINIT) costs only its metadata and nothing is lost.

A filesystem whose journal still needs recovery (the machine stopped without unmounting it)
also counts what the bitmaps in its journal mark used (recovery/fs/jbd2.py): the files written
just before the stop are used only there until the journal is replayed. When that journal
cannot be followed, the whole filesystem is kept.
"""

from __future__ import annotations

import struct
import uuid as uuidlib

from recovery.fs import FsInfo, FsMapError, Reader, jbd2, merge_ranges, tail_after
from recovery.fs.bitmap import set_bit_runs

SUPERBLOCK_OFFSET = 1024
MAGIC = 0xEF53

COMPAT_HAS_JOURNAL = 0x4
COMPAT_SPARSE_SUPER2 = 0x200
INCOMPAT_FILETYPE = 0x2
INCOMPAT_RECOVER = 0x4
INCOMPAT_JOURNAL_DEV = 0x8
INCOMPAT_META_BG = 0x10
INCOMPAT_64BIT = 0x80
INCOMPAT_MMP = 0x100
RO_COMPAT_SPARSE_SUPER = 0x1
RO_COMPAT_LARGE_FILE = 0x2
RO_COMPAT_BTREE_DIR = 0x4
RO_COMPAT_GDT_CSUM = 0x10
RO_COMPAT_BIGALLOC = 0x200
RO_COMPAT_METADATA_CSUM = 0x400

BG_BLOCK_UNINIT = 0x2

# Largest single read when fetching neighbouring bitmap blocks together.
MAX_READ = 4 * 1024 * 1024


def _u16(buf: bytes, off: int) -> int:
    return struct.unpack_from("<H", buf, off)[0]


def _u32(buf: bytes, off: int) -> int:
    return struct.unpack_from("<I", buf, off)[0]


def _kind(sb: bytes) -> str:
    """ext2, ext3 or ext4, decided on feature flags the way blkid does."""
    compat, incompat, ro_compat = _u32(sb, 0x5C), _u32(sb, 0x60), _u32(sb, 0x64)
    ext3_incompat = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG
    ext3_ro = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR
    if incompat & ~ext3_incompat or ro_compat & ~ext3_ro:
        return "ext4"
    return "ext3" if compat & COMPAT_HAS_JOURNAL else "ext2"


def _label_uuid(sb: bytes) -> tuple[str | None, str | None]:
    label = sb[0x78:0x88].split(b"\0", 1)[0].decode("utf-8", "replace") or None
    raw = sb[0x68:0x78]
    return label, (str(uuidlib.UUID(bytes=raw)) if any(raw) else None)


def _superblock(read: Reader) -> bytes | None:
    sb = read(SUPERBLOCK_OFFSET, 1024)
    if len(sb) < 1024 or _u16(sb, 0x38) != MAGIC:
        return None
    return sb


def identify(read: Reader, size: int) -> tuple[str, str | None, str | None] | None:
    sb = _superblock(read)
    if sb is None:
        return None
    if _u32(sb, 0x60) & INCOMPAT_JOURNAL_DEV:
        return ("jbd", *_label_uuid(sb))
    return (_kind(sb), *_label_uuid(sb))


class _Geometry:
    """The numbers the map needs, read from the superblock and checked for sanity."""

    def __init__(self, sb: bytes, size: int):
        kind = _kind(sb)
        self.compat, self.incompat, self.ro_compat = _u32(sb, 0x5C), _u32(sb, 0x60), _u32(sb, 0x64)
        if self.incompat & INCOMPAT_JOURNAL_DEV:
            raise FsMapError("an external ext4 journal device, not a filesystem")
        log_block = _u32(sb, 0x18)
        if log_block > 6:
            raise FsMapError(f"{kind} superblock is damaged (block size field {log_block})")
        self.block_size = 1024 << log_block
        self.is_64bit = bool(self.incompat & INCOMPAT_64BIT)
        self.blocks_count = _u32(sb, 0x4) | ((_u32(sb, 0x150) << 32) if self.is_64bit else 0)
        self.first_data_block = _u32(sb, 0x14)
        self.blocks_per_group = _u32(sb, 0x20)
        self.inodes_per_group = _u32(sb, 0x28)
        rev_level = _u32(sb, 0x4C)
        self.inode_size = _u16(sb, 0x58) if rev_level >= 1 else 128
        self.reserved_gdt = _u16(sb, 0xCE)
        self.first_meta_bg = _u32(sb, 0x104)
        self.backup_bgs = (_u32(sb, 0x24C), _u32(sb, 0x250))
        self.mmp_block = struct.unpack_from("<Q", sb, 0x168)[0]
        if self.ro_compat & RO_COMPAT_BIGALLOC:
            log_cluster = _u32(sb, 0x1C)
            if not log_block <= log_cluster <= 20:
                raise FsMapError(f"{kind} superblock is damaged (cluster size field {log_cluster})")
            self.cluster_ratio = 1 << (log_cluster - log_block)
            self.clusters_per_group = _u32(sb, 0x24)
            if self.blocks_per_group != self.clusters_per_group * self.cluster_ratio:
                raise FsMapError(f"{kind} superblock is damaged (blocks and clusters per group disagree)")
        else:
            self.cluster_ratio = 1
            self.clusters_per_group = self.blocks_per_group
        self.desc_size = _u16(sb, 0xFE) if self.is_64bit else 32

        damaged = f"{kind} superblock is damaged"
        if self.blocks_count == 0 or self.first_data_block > 1 or self.first_data_block >= self.blocks_count:
            raise FsMapError(f"{damaged} (block count {self.blocks_count})")
        if not 0 < self.clusters_per_group <= 8 * self.block_size:
            raise FsMapError(f"{damaged} (blocks per group {self.blocks_per_group})")
        if self.inodes_per_group == 0 or self.inode_size < 128 or self.inode_size > self.block_size \
                or self.inode_size & (self.inode_size - 1):
            raise FsMapError(f"{damaged} (inode geometry)")
        if self.desc_size < 32 or self.desc_size > self.block_size or self.desc_size & (self.desc_size - 1) \
                or (self.is_64bit and self.desc_size < 64):
            raise FsMapError(f"{damaged} (group descriptor size {self.desc_size})")
        if self.blocks_count * self.block_size > size:
            raise FsMapError(
                f"{kind} is larger than its partition ({self.blocks_count * self.block_size} bytes "
                f"in {size}); the partition looks truncated")

        self.group_count = -(-(self.blocks_count - self.first_data_block) // self.blocks_per_group)
        self.descs_per_block = self.block_size // self.desc_size
        self.gdt_blocks = -(-self.group_count // self.descs_per_block)
        self.meta_bg = bool(self.incompat & INCOMPAT_META_BG)
        # Descriptor blocks kept right after each superblock copy (the rest live in meta groups).
        self.gdt_after_super = min(self.gdt_blocks, self.first_meta_bg) if self.meta_bg else self.gdt_blocks
        self.inode_table_blocks = -(-self.inodes_per_group * self.inode_size // self.block_size)
        self.csum_groups = bool(self.ro_compat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM))
        if self.reserved_gdt > self.block_size // 4:
            raise FsMapError(f"{damaged} (reserved GDT blocks {self.reserved_gdt})")

    def group_start(self, group: int) -> int:
        return self.first_data_block + group * self.blocks_per_group

    def has_super(self, group: int) -> bool:
        if group == 0:
            return True
        if self.compat & COMPAT_SPARSE_SUPER2:
            return group in self.backup_bgs
        if not self.ro_compat & RO_COMPAT_SPARSE_SUPER:
            return True
        return sparse_super_group(group)

    @property
    def superblock_block(self) -> int:
        """The primary superblock sits at byte 1024 whatever first_data_block says (bigalloc)."""
        return SUPERBLOCK_OFFSET // self.block_size

    def meta_group_block(self, group: int) -> int:
        """Where a meta_bg descriptor block sits inside `group`."""
        block = self.group_start(group) + (1 if self.has_super(group) else 0)
        if group == 0 and self.block_size == 1024 and self.first_data_block == 0:
            block += 1   # 1 KiB blocks with bigalloc: block 0 is the boot block, block 1 the superblock
        return block

    def gdt_block(self, index: int) -> int:
        """Where descriptor block `index` lives (meta_bg moves the later ones into their groups)."""
        if self.meta_bg and index >= self.first_meta_bg:
            return self.meta_group_block(index * self.descs_per_block)
        return self.superblock_block + 1 + index


def _read_exact(read: Reader, offset: int, length: int, what: str) -> bytes:
    data = read(offset, length)
    if len(data) != length:
        raise FsMapError(f"ext metadata is damaged ({what} lies past the end of the partition)")
    return data


def _descriptors(read: Reader, geo: _Geometry) -> list[tuple[int, int, int, int]]:
    """(block bitmap, inode bitmap, inode table, flags) for every group."""
    bs = geo.block_size
    blocks: list[bytes] = []
    if geo.gdt_after_super:
        start = geo.gdt_block(0)
        blocks.append(_read_exact(read, start * bs, geo.gdt_after_super * bs, "the group descriptor table"))
    for index in range(geo.gdt_after_super, geo.gdt_blocks):
        blocks.append(_read_exact(read, geo.gdt_block(index) * bs, bs, "a meta_bg descriptor block"))
    table = b"".join(blocks)
    per = geo.desc_size
    out = []
    for group in range(geo.group_count):
        d = table[group * per: (group + 1) * per]
        block_bitmap, inode_bitmap, inode_table = struct.unpack_from("<III", d, 0)
        flags = _u16(d, 0x12)
        if per >= 64:
            hi = struct.unpack_from("<III", d, 0x20)
            block_bitmap |= hi[0] << 32
            inode_bitmap |= hi[1] << 32
            inode_table |= hi[2] << 32
        if block_bitmap >= geo.blocks_count or inode_bitmap >= geo.blocks_count \
                or inode_table + geo.inode_table_blocks > geo.blocks_count \
                or min(block_bitmap, inode_bitmap, inode_table) < geo.first_data_block:
            raise FsMapError(f"ext metadata is damaged (group {group}'s descriptor points outside the filesystem)")
        out.append((block_bitmap, inode_bitmap, inode_table, flags))
    return out


def _metadata_blocks(geo: _Geometry, descs) -> list[tuple[int, int]]:
    """(first block, count) of every superblock copy, descriptor block, bitmap and inode table."""
    runs: list[tuple[int, int]] = []
    for group in range(geo.group_count):
        if geo.has_super(group):
            first = geo.superblock_block if group == 0 else geo.group_start(group)
            # Groups of the meta groups from first_meta_bg on keep no copy of the table that follows
            # the primary superblock (a filesystem resized to meta_bg while mounted has both kinds).
            old_table = not geo.meta_bg or group // geo.descs_per_block < geo.first_meta_bg
            runs.append((first, 1 + (geo.gdt_after_super if old_table else 0) + geo.reserved_gdt))
    for index in range(geo.gdt_after_super, geo.gdt_blocks):
        first_group = index * geo.descs_per_block
        for group in (first_group, first_group + 1, first_group + geo.descs_per_block - 1):
            if group < geo.group_count:
                runs.append((geo.meta_group_block(group), 1))
    for block_bitmap, inode_bitmap, inode_table, _flags in descs:
        runs.append((block_bitmap, 1))
        runs.append((inode_bitmap, 1))
        runs.append((inode_table, geo.inode_table_blocks))
    if geo.incompat & INCOMPAT_MMP and geo.first_data_block <= geo.mmp_block < geo.blocks_count:
        runs.append((geo.mmp_block, 1))
    return runs


def _bitmap_ranges(read: Reader, geo: _Geometry, descs, replay: dict[int, bytes] | None = None) -> list[tuple[int, int]]:
    """Byte ranges the initialised block bitmaps mark used, and those their copies in `replay`
    (home block -> what journal replay writes there) mark used; uninitialised groups with no
    copy in the journal add nothing here."""
    bs = geo.block_size
    cluster = bs * geo.cluster_ratio
    total_clusters = -(-(geo.blocks_count - geo.first_data_block) // geo.cluster_ratio)
    ranges: list[tuple[int, int]] = []
    replay = replay or {}

    def mark(bits: bytes, group: int) -> None:
        first_cluster = group * geo.clusters_per_group
        nbits = min(geo.clusters_per_group, total_clusters - first_cluster)
        base = geo.first_data_block * bs + first_cluster * cluster
        for start, count in set_bit_runs(bits, nbits):
            ranges.append((base + start * cluster, count * cluster))

    wanted: list[tuple[int, int]] = []   # (bitmap block, group)
    for group, (block_bitmap, _ib, _it, flags) in enumerate(descs):
        if block_bitmap in replay:
            mark(replay[block_bitmap], group)
        if geo.csum_groups and flags & BG_BLOCK_UNINIT:
            if geo.cluster_ratio > 1:
                # Not worth modelling for bigalloc: keep the whole group.
                start = geo.group_start(group) * bs
                ranges.append((start, geo.blocks_per_group * bs))
            continue
        wanted.append((block_bitmap, group))
    wanted.sort()
    i = 0
    while i < len(wanted):
        # Bitmaps often sit side by side (flex_bg): fetch a row of them in one read.
        j = i + 1
        while j < len(wanted) and wanted[j][0] == wanted[j - 1][0] + 1 and (j - i) * bs < MAX_READ:
            j += 1
        first = wanted[i][0]
        data = _read_exact(read, first * bs, (j - i) * bs, "a block bitmap")
        for k in range(i, j):
            block, group = wanted[k]
            mark(data[(block - first) * bs: (block - first + 1) * bs], group)
        i = j
    return ranges


def probe(read: Reader, size: int) -> FsInfo | None:
    sb = _superblock(read)
    if sb is None:
        return None
    kind = _kind(sb)
    label, fs_uuid = _label_uuid(sb)
    geo = _Geometry(sb, size)
    descs = _descriptors(read, geo)
    bs = geo.block_size

    ranges = [(start * bs, count * bs) for start, count in _metadata_blocks(geo, descs)]
    warnings: list[str] = []
    replay: dict[int, bytes] = {}
    if geo.incompat & INCOMPAT_RECOVER:
        try:
            replay = jbd2.replayed_blocks(read, bs, _journal_inode(read, geo, descs, sb),
                                          wanted={d[0] for d in descs})     # the block bitmaps
        except FsMapError as exc:
            warnings.append(f"{kind}'s journal needs recovery and cannot be followed ({exc}); "
                            "the whole filesystem is kept")
            ranges.append((0, geo.blocks_count * bs))
    ranges += _bitmap_ranges(read, geo, descs, replay)
    # The boot block and superblock are outside the bitmap when blocks are 1 KiB.
    ranges.append((0, max(2048, bs)))
    # Whatever follows the filesystem inside the partition is not ours to judge: keep it.
    tail, tail_warnings = tail_after(kind, geo.blocks_count * bs, size)
    ranges += tail
    warnings += tail_warnings

    state = _u16(sb, 0x3A)
    if geo.incompat & INCOMPAT_RECOVER or not state & 1:
        warnings.append(f"{kind} was not unmounted cleanly (its journal needs recovery); "
                        "the image holds it as it was left")
    if state & 2:
        warnings.append(f"{kind} has recorded errors; check it with e2fsck after restoring")
    return FsInfo(fs=kind, label=label, uuid=fs_uuid, block_size=bs,
                  used=merge_ranges(ranges, size), warnings=tuple(warnings))


def _journal_inode(read: Reader, geo: _Geometry, descs, sb: bytes) -> bytes:
    """The journal's inode (s_journal_inum), from its group's inode table."""
    ino = _u32(sb, 0xE0)
    if not geo.compat & COMPAT_HAS_JOURNAL:
        raise jbd2.JournalError("the filesystem has no journal")
    if ino == 0:
        raise jbd2.JournalError("it is kept on another device")
    group, index = divmod(ino - 1, geo.inodes_per_group)
    if group >= len(descs):
        raise jbd2.JournalError("the superblock names a journal inode that does not exist")
    offset = descs[group][2] * geo.block_size + index * geo.inode_size
    return _read_exact(read, offset, geo.inode_size, "the journal's inode")


def sparse_super_group(group: int) -> bool:
    """With sparse_super, groups 0, 1 and the powers of 3, 5 and 7 keep superblock copies."""
    if group < 2:
        return True
    for base in (3, 5, 7):
        power = base
        while power < group:
            power *= base
        if power == group:
            return True
    return False
