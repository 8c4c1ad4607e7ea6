"""What an ext3/4 journal left unrecovered will write when it is replayed.

    replayed_blocks(read, block_size, journal_inode) -> {home block: content}

A filesystem that was not unmounted cleanly (power cut, crash, a PC that stopped booting)
carries the "needs recovery" flag: its last transactions are committed to the journal but
not yet written to their home blocks. In ordered mode a new file's data is already in place,
while the block bitmap that marks it used is, until replay, only in the journal. A used-block
map read from the home bitmaps alone would leave that data out, and the restored filesystem,
replayed on its first mount or by e2fsck, would hold files whose blocks are zeros.

This module walks the journal the way replay does (jbd2's scan pass): from the journal
superblock's start block and sequence number, descriptor blocks name the home block of each
logged block that follows them, and a transaction counts once its commit block is found.
Revoke records and checksums are not consulted, so the result can only hold more than replay
writes, never less: the caller unions it with what the home blocks say, and a map made from it
keeps every block the replayed filesystem uses.

The journal is the file of inode s_journal_inum (8), mapped by extents (ext4) or by direct
and indirect blocks (ext3). JournalError says, in plain words, why a journal cannot be
followed (fast commits, an external journal device, damage); the caller then keeps the whole
filesystem rather than guess.
"""

from __future__ import annotations

import bisect
import struct

from recovery.fs import FsMapError, Reader

JBD2_MAGIC = 0xC03B3998
DESCRIPTOR, COMMIT, SUPERBLOCK_V1, SUPERBLOCK_V2, REVOKE = 1, 2, 3, 4, 5

FEATURE_INCOMPAT_64BIT = 0x2
FEATURE_INCOMPAT_CSUM_V2 = 0x8
FEATURE_INCOMPAT_CSUM_V3 = 0x10
FEATURE_INCOMPAT_FAST_COMMIT = 0x20

TAG_ESCAPE = 0x1
TAG_SAME_UUID = 0x2
TAG_LAST = 0x8

INODE_FLAG_EXTENTS = 0x80000
EXTENT_MAGIC = 0xF30A
MAX_EXTENT_DEPTH = 5
# mke2fs makes journals of at most 10,240,000 blocks; a larger size is damage, and following
# its block map would read without end.
MAX_JOURNAL_BLOCKS = 10_240_000
MAX_MAP_BLOCKS = 65536               # extent-tree or indirect blocks read to map the journal


class JournalError(FsMapError):
    """The journal cannot be followed; the message says why."""


def replayed_blocks(read: Reader, block_size: int, journal_inode: bytes,
                    wanted: set[int] | None = None) -> dict[int, bytes]:
    """Home block -> the last committed copy of it in the journal (what replay writes there),
    for the home blocks in `wanted` (all when None: a journal can be a gigabyte, so the caller
    names the few it needs). Empty when the journal holds nothing to replay."""
    try:
        return _replayed_blocks(read, block_size, journal_inode, wanted)
    except (struct.error, IndexError, ValueError) as exc:     # fields that contradict each other
        raise JournalError(f"the journal is damaged ({exc})") from exc


def _replayed_blocks(read: Reader, block_size: int, journal_inode: bytes,
                     wanted: set[int] | None) -> dict[int, bytes]:
    blocks = _FileMap(read, block_size, journal_inode)
    sb = blocks.read(0)
    magic, kind = struct.unpack_from(">II", sb, 0)
    if magic != JBD2_MAGIC or kind not in (SUPERBLOCK_V1, SUPERBLOCK_V2):
        raise JournalError("the journal's superblock is damaged")
    jbs, maxlen, first, sequence, start = struct.unpack_from(">IIIII", sb, 0xC)
    if jbs != block_size or not 0 < first < maxlen or maxlen > blocks.length:
        raise JournalError("the journal's superblock is damaged (its geometry does not fit its file)")
    if start == 0:
        return {}
    if not first <= start < maxlen:
        raise JournalError("the journal's superblock is damaged (its log start lies outside the log)")
    incompat = struct.unpack_from(">I", sb, 0x28)[0] if kind == SUPERBLOCK_V2 else 0
    if incompat & FEATURE_INCOMPAT_FAST_COMMIT:
        raise JournalError("the journal holds fast commits, which Lifeboat does not follow")
    tag_bytes, tail = _tag_layout(incompat)

    def advance(n: int) -> int:          # the log is circular: after its last block, its first
        return first if n + 1 >= maxlen else n + 1

    replay: dict[int, bytes] = {}
    pending: list[tuple[int, bytes]] = []
    at = start
    # A log longer than the journal would be a loop in damaged metadata: stop there.
    for _ in range(maxlen):
        head = blocks.read(at)
        magic, kind, seq = struct.unpack_from(">III", head, 0)
        if magic != JBD2_MAGIC or seq != sequence:
            break
        at = advance(at)
        if kind == DESCRIPTOR:
            for home, escaped in _tags(head, tag_bytes, tail, incompat):
                if wanted is None or home in wanted:
                    data = blocks.read(at)
                    if escaped:
                        data = struct.pack(">I", JBD2_MAGIC) + data[4:]
                    pending.append((home, data))
                at = advance(at)
        elif kind == COMMIT:
            replay.update(pending)
            pending = []
            sequence = (sequence + 1) & 0xFFFFFFFF
        elif kind != REVOKE:
            break
    return replay


def _tag_layout(incompat: int) -> tuple[int, int]:
    """(bytes per descriptor tag, bytes of checksum tail at the end of a descriptor block)."""
    csum = incompat & (FEATURE_INCOMPAT_CSUM_V2 | FEATURE_INCOMPAT_CSUM_V3)
    tail = 4 if csum else 0
    if incompat & FEATURE_INCOMPAT_CSUM_V3:
        return 16, tail
    size = 12 + (2 if incompat & FEATURE_INCOMPAT_CSUM_V2 else 0)
    return (size if incompat & FEATURE_INCOMPAT_64BIT else size - 4), tail


def _tags(block: bytes, tag_bytes: int, tail: int, incompat: int):
    """(home block, escaped) for each tag of a descriptor block, in log order."""
    csum3 = incompat & FEATURE_INCOMPAT_CSUM_V3
    wide = incompat & FEATURE_INCOMPAT_64BIT
    off, end = 12, len(block) - tail
    while off + tag_bytes <= end:
        low = struct.unpack_from(">I", block, off)[0]
        flags = struct.unpack_from(">I" if csum3 else ">H", block, off + 4 if csum3 else off + 6)[0]
        high = struct.unpack_from(">I", block, off + 8)[0] if wide else 0
        yield low | high << 32, bool(flags & TAG_ESCAPE)
        off += tag_bytes + (0 if flags & TAG_SAME_UUID else 16)
        if flags & TAG_LAST:
            return


class _FileMap:
    """The journal file's blocks, found through its inode's extents or block map."""

    def __init__(self, read: Reader, block_size: int, inode: bytes):
        self.read_fs, self.bs = read, block_size
        self.length = (struct.unpack_from("<I", inode, 0x4)[0]
                       | struct.unpack_from("<I", inode, 0x6C)[0] << 32) // block_size
        if not 0 < self.length <= MAX_JOURNAL_BLOCKS:
            raise JournalError(f"the journal's inode is damaged (a size of {self.length} blocks)")
        self.map_reads = 0
        i_block = inode[0x28:0x28 + 60]
        runs: list[tuple[int, int, int]] = []        # (file block, disk block, count)
        if struct.unpack_from("<I", inode, 0x20)[0] & INODE_FLAG_EXTENTS:
            self._extents(i_block, MAX_EXTENT_DEPTH, runs)
        else:
            self._block_map(i_block, runs)
        runs.sort()
        self.starts = [r[0] for r in runs]
        self.runs = runs

    def read(self, n: int) -> bytes:
        i = bisect.bisect_right(self.starts, n) - 1
        if i < 0 or n >= self.runs[i][0] + self.runs[i][2]:
            raise JournalError(f"the journal file has no block {n} (its block map is damaged)")
        file_block, disk, _count = self.runs[i]
        data = self.read_fs((disk + n - file_block) * self.bs, self.bs)
        if len(data) != self.bs:
            raise JournalError("the journal lies past the end of the partition")
        return data

    def _fs_block(self, n: int) -> bytes:
        self.map_reads += 1
        if self.map_reads > MAX_MAP_BLOCKS:
            raise JournalError("the journal's block map is damaged (it never ends)")
        data = self.read_fs(n * self.bs, self.bs)
        if len(data) != self.bs:
            raise JournalError("the journal's block map points past the end of the partition")
        return data

    def _extents(self, node: bytes, depth_left: int, runs: list) -> None:
        magic, entries, _max, depth = struct.unpack_from("<HHHH", node, 0)
        if magic != EXTENT_MAGIC or depth_left < 0 or 12 + entries * 12 > len(node):
            raise JournalError("the journal's extent tree is damaged")
        for k in range(entries):
            off = 12 + 12 * k
            if depth == 0:
                file_block, length, hi, lo = struct.unpack_from("<IHHI", node, off)
                runs.append((file_block, lo | hi << 32, length if length <= 32768 else length - 32768))
            else:
                _file_block, lo, hi = struct.unpack_from("<IIH", node, off)
                self._extents(self._fs_block(lo | hi << 32), depth_left - 1, runs)

    def _block_map(self, i_block: bytes, runs: list) -> None:
        pointers = struct.unpack_from("<15I", i_block, 0)
        per = self.bs // 4
        next_file_block = [0]

        def add(block: int) -> None:
            n = next_file_block[0]
            if runs and runs[-1][0] + runs[-1][2] == n and runs[-1][1] + runs[-1][2] == block:
                runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
            elif block:
                runs.append((n, block, 1))
            next_file_block[0] = n + 1

        def walk(block: int, level: int) -> None:
            if next_file_block[0] >= self.length:
                return
            if level == 0:
                add(block)
                return
            if block == 0:        # a hole: its whole subtree maps nothing
                next_file_block[0] += per ** level
                return
            for child in struct.unpack_from(f"<{per}I", self._fs_block(block), 0):
                walk(child, level - 1)

        for p in pointers[:12]:
            walk(p, 0)
        for level, p in enumerate(pointers[12:], start=1):
            walk(p, level)
