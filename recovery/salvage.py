"""Which files a damaged restore hit ("restore --salvage").

A salvaged partition has every readable byte written and the damaged byte ranges zeroed.
`files_hit` says, for one partition, which files and which pieces of filesystem metadata own
bytes in those ranges, so the person knows what to check or fetch from elsewhere:

- ext2/3/4: geometry, bitmaps and inode tables are read here (recovery.fs.ext), file owners
  come from debugfs (icheck: blocks -> inodes, stat: an owner's whole extent list, ncheck:
  inodes -> paths), always read-only and in catastrophic mode (-c), so zeroed bitmaps or a
  journal needing recovery are never a reason to stop.
- NTFS: one verbose ntfscluster run prints every attribute's runlist; the overlap is computed
  here. At an offset inside a disk it reads through a read-only loop device (root).
- FAT12/16/32: the directory tree and cluster chains are walked here.

Nothing is written and nothing is mounted. A tool that fails leaves what was learnt so far
plus `unknown` ranges; only a missing tool raises ToolError.
"""

from __future__ import annotations

import array
import bisect
import contextlib
import logging
import os
import re
import shutil
import stat
import struct
import sys
from dataclasses import dataclass, field

from recovery.errors import DiskError, ToolError
from recovery.host import loops, tools
from recovery.host.tools import first_line
from recovery.fs import FsMapError, Reader, merge_ranges, pread_reader

log = logging.getLogger("recovery.salvage")

NO_FS_NOTE = "no filesystem Lifeboat can read: files not named"

# debugfs reads command-file lines into an 8 KiB buffer; stay well below it.
DEBUGFS_LINE = 7900
# Blocks asked of icheck per round: every icheck line is one scan of all inodes.
ICHECK_BUDGET = 2000
# Rounds of icheck + stat before the rest of the blocks is left unattributed.
ICHECK_ROUNDS = 64


@dataclass
class Hits:
    files: list[str] = field(default_factory=list)
    metadata: list[str] = field(default_factory=list)
    unknown: list[tuple[int, int]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"files": list(self.files), "metadata": list(self.metadata),
                "unknown": [{"offset": off, "length": length} for off, length in self.unknown]}


class _Collect:
    """Accumulates findings; `done` sorts and deduplicates."""

    def __init__(self):
        self.files: set[str] = set()
        self.metadata: dict[str, None] = {}      # insertion-ordered set
        self.unknown: list[tuple[int, int]] = []

    def meta(self, what: str) -> None:
        self.metadata.setdefault(what, None)

    def done(self, size: int) -> Hits:
        return Hits(files=sorted(self.files), metadata=list(self.metadata),
                    unknown=list(merge_ranges(self.unknown, size)))


# ----------------------------------------------------------------------------- ranges

def _subtract(ranges, minus) -> list[tuple[int, int]]:
    """Sorted merged (offset, length) ranges minus other sorted merged ranges."""
    out, j = [], 0
    minus = list(minus)
    for off, length in ranges:
        pos, end = off, off + length
        while j < len(minus) and minus[j][0] + minus[j][1] <= pos:
            j += 1
        k = j
        while k < len(minus) and minus[k][0] < end:
            m_start, m_end = minus[k][0], minus[k][0] + minus[k][1]
            if m_start > pos:
                out.append((pos, m_start - pos))
            pos = max(pos, m_end)
            k += 1
        if pos < end:
            out.append((pos, end - pos))
    return out


def _intersect(ranges, other) -> list[tuple[int, int]]:
    return _subtract(ranges, _subtract(ranges, other))


class _Spans:
    """Sorted, merged ranges with a fast "does [a, b) touch any of them" test."""

    def __init__(self, ranges):
        merged = merge_ranges(ranges, 1 << 62)
        self.starts = [off for off, _ in merged]
        self.ends = [off + length for off, length in merged]

    def touches(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self.starts, end - 1) - 1
        return i >= 0 and self.ends[i] > start

    def overlap(self, start: int, end: int) -> list[tuple[int, int]]:
        out = []
        i = max(0, bisect.bisect_right(self.starts, start) - 1)
        while i < len(self.starts) and self.starts[i] < end:
            a, b = max(start, self.starts[i]), min(end, self.ends[i])
            if a < b:
                out.append((a, b - a))
            i += 1
        return out


def _unowned(result: _Collect, rest, used, trust_used: bool) -> None:
    """Damaged bytes no file or metadata claimed: in use -> unknown; free -> nothing.
    When the allocation map itself was hit (or not read) nothing can be called free."""
    result.unknown += _intersect(rest, used) if trust_used and used is not None else list(rest)


# ----------------------------------------------------------------------------- entry point

def files_hit(target: str, start: int, size: int, fs: str | None, damaged: list[tuple[int, int]]) -> Hits:
    """`target`: a whole-disk image file or block device on which a partition (already restored,
    damaged ranges zeroed) lies at byte `start`, `size` bytes long; or the partition itself with start=0.
    `damaged`: byte ranges relative to the partition start. Read-only: never writes, never mounts read-write,
    never replays a journal."""
    damaged = list(merge_ranges(damaged, size))
    if not damaged:
        return Hits()
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise DiskError(f"cannot open {target} to name the damaged files: {exc.strerror}") from exc
    try:
        read = pread_reader(fd, start, size)
        kind = _kind(fs, read, size)
        result = _Collect()
        if kind == "ext":
            _ext(result, fd, start, size, read, damaged)
        elif kind == "fat":
            _fat(result, read, size, damaged)
        elif kind == "ntfs":
            _ntfs(result, fd, start, size, read, damaged)
        else:
            result.meta(NO_FS_NOTE)
            result.unknown += damaged
        return result.done(size)
    finally:
        os.close(fd)


def _kind(fs: str | None, read: Reader, size: int) -> str | None:
    if fs is None:
        from recovery.fs import identify
        try:
            found = identify(read, size)
        except OSError as exc:
            raise DiskError(f"cannot read the restored partition: {exc.strerror}") from exc
        fs = found[0] if found else None
        if fs is None and _ext_backup_superblock(read):
            fs = "ext"      # the primary superblock was zeroed; a backup survives
    if not fs:
        return None
    fs = fs.lower()
    if fs.startswith("ext"):
        return "ext"
    if fs in ("vfat", "fat", "fat12", "fat16", "fat32", "msdos"):
        return "fat"
    if fs == "ntfs":
        return "ntfs"
    return None


def _require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolError(f"the tool {tool} is missing ({package}); install it to name the damaged files")
    return path


# ----------------------------------------------------------------------------- ext2/3/4

EXT_SPECIAL = {1: "bad blocks list", 2: "root directory", 3: "user quota", 4: "group quota",
               5: "boot loader inode", 7: "reserved group descriptor blocks (resize inode)",
               8: "journal"}
S_IFMT, S_IFDIR = 0xF000, 0x4000


class _ExtLayout:
    """Geometry, descriptors and which superblock debugfs should use (None: the primary)."""

    def __init__(self, ext, sb: bytes, geo, descs, backup: int | None):
        self.kind = ext._kind(sb)
        self.geo, self.descs, self.backup = geo, descs, backup
        self.first_ino = struct.unpack_from("<I", sb, 0x54)[0] if struct.unpack_from("<I", sb, 0x4C)[0] else 11
        self.journal_ino = struct.unpack_from("<I", sb, 0xE0)[0]


def _ext_backup_superblock(read: Reader) -> tuple[int, int] | None:
    """(block, block size) of the backup superblock at the start of group 1."""
    from recovery.fs import ext
    for log_block in range(0, 7):
        bs = 1024 << log_block
        first = (1 if bs == 1024 else 0) + 8 * bs
        sb = read(first * bs, 1024)
        if len(sb) == 1024 and struct.unpack_from("<H", sb, 0x38)[0] == ext.MAGIC \
                and struct.unpack_from("<I", sb, 0x18)[0] == log_block:
            return first, bs
    return None


def _ext_layout(read: Reader, size: int, damaged_spans: _Spans) -> _ExtLayout | None:
    from recovery.fs import ext
    sb = read(ext.SUPERBLOCK_OFFSET, 1024)
    primary_ok = len(sb) == 1024 and struct.unpack_from("<H", sb, 0x38)[0] == ext.MAGIC
    if primary_ok:
        try:
            geo = ext._Geometry(sb, size)
            # Zeroed descriptors can still look sane: trust them only when no damage touches them.
            gdt_end = (geo.gdt_block(0) + geo.gdt_after_super) * geo.block_size
            if not damaged_spans.touches(0, gdt_end):
                return _ExtLayout(ext, sb, geo, ext._descriptors(read, geo), None)
        except (FsMapError, struct.error, ValueError):
            pass
    # A backup superblock with its descriptors sits at the start of group 1.
    found = _ext_backup_superblock(read)
    if found is not None:
        first, bs = found
        backup = read(first * bs, 1024)
        try:
            geo = ext._Geometry(backup, size)
            primary_gdt = geo.gdt_block(0) * bs
            moved = (first + 1) * bs - primary_gdt

            def redirected(offset: int, length: int, _lo=primary_gdt,
                           _hi=primary_gdt + geo.gdt_after_super * bs) -> bytes:
                return read(offset + moved if _lo <= offset < _hi else offset, length)
            if geo.group_start(1) == first:
                return _ExtLayout(ext, backup, geo, ext._descriptors(redirected, geo), first)
        except (FsMapError, struct.error, ValueError):
            pass
    if primary_ok:      # no backup: the damaged primary is still better than nothing
        try:
            geo = ext._Geometry(sb, size)
            return _ExtLayout(ext, sb, geo, ext._descriptors(read, geo), None)
        except (FsMapError, struct.error, ValueError):
            pass
    return None


def _ext_metadata_runs(layout: _ExtLayout) -> list[tuple[int, int, str, int]]:
    """(first block, count, what, group) of every piece of group metadata."""
    geo, kind = layout.geo, layout.kind
    runs = []
    for group in range(geo.group_count):
        if geo.has_super(group):
            first = geo.superblock_block if group == 0 else geo.group_start(group)
            what = f"{kind} superblock and group descriptors" + ("" if group == 0 else f" (backup in group {group})")
            runs.append((first, 1 + geo.gdt_after_super + geo.reserved_gdt, what, group))
    for index in range(geo.gdt_after_super, geo.gdt_blocks):
        first_group = index * geo.descs_per_block
        for group in (first_group, first_group + 1, first_group + geo.descs_per_block - 1):
            if group < geo.group_count:
                runs.append((geo.meta_group_block(group), 1, f"{kind} group descriptors (group {group})", group))
    for group, (block_bitmap, inode_bitmap, inode_table, _flags) in enumerate(layout.descs):
        runs.append((block_bitmap, 1, f"{kind} block bitmap (group {group})", group))
        runs.append((inode_bitmap, 1, f"{kind} inode bitmap (group {group})", group))
        runs.append((inode_table, geo.inode_table_blocks, f"{kind} inode table (group {group})", group))
    runs.sort()
    return runs


def _ext(result: _Collect, fd: int, start: int, size: int, read: Reader, damaged) -> None:
    _require("debugfs", "e2fsprogs")
    spans = _Spans(damaged)
    layout = _ext_layout(read, size, spans)
    if layout is None:
        result.meta("ext superblock and its backups are unreadable: files not named")
        result.unknown += damaged
        return
    geo, kind = layout.geo, layout.kind
    bs = geo.block_size
    if layout.backup is not None:
        result.meta(f"{kind} superblock and group descriptors")   # why the backup was needed

    # 1. Group metadata, named here; inode-table hits also lose the inodes stored there.
    claimed: list[tuple[int, int]] = []
    if spans.touches(0, 1024):
        claimed.append((0, 1024))
        result.meta(f"{kind} boot sector (the first 1 KiB)")
    lost_inodes: list[int] = []
    bitmap_hit = False
    for first, count, what, group in _ext_metadata_runs(layout):
        # With 1 KiB blocks or more, the primary superblock's block also holds the boot sector.
        low = max(first * bs, 1024) if group == 0 and "superblock" in what else first * bs
        hit = spans.overlap(low, (first + count) * bs)
        if not hit:
            continue
        claimed.append((first * bs, count * bs))
        result.meta(what)
        bitmap_hit |= "block bitmap" in what
        if "inode table" in what:
            lost_inodes += _ext_lost_inodes(read, layout, group, first, hit)
    fs_end = geo.blocks_count * bs
    result.unknown += _intersect(damaged, [(fs_end, max(0, size - fs_end))])

    # 2. In-use blocks not claimed by metadata: ask debugfs who owns them.
    rest = _subtract(_subtract(damaged, merge_ranges(claimed, size)), [(fs_end, max(0, size - fs_end))])
    used = None
    try:
        from recovery.fs.ext import _bitmap_ranges
        used = merge_ranges(_bitmap_ranges(read, geo, layout.descs), size)
    except (FsMapError, struct.error, ValueError, IndexError):
        bitmap_hit = True
    if used is not None and not bitmap_hit:
        rest = _intersect(rest, used)
    pending = _block_runs(rest, bs)
    debugfs = _Debugfs(fd, start, layout.backup, bs)
    owners: dict[int, None] = {}
    unattributed: list[tuple[int, int]] = []
    try:
        for _round in range(ICHECK_ROUNDS):
            if not pending:
                break
            queries, everything = _pick(pending, ICHECK_BUDGET)
            found = debugfs.icheck(queries)
            new = []
            for block in queries:
                ino = found.get(block)
                if ino is None:
                    unattributed.append((block * bs, bs))
                elif ino not in owners:
                    owners[ino] = None
                    new.append(ino)
            pending = _remove_blocks(pending, [(b, 1) for b in queries])
            if everything or not pending:
                pending = []
                break
            # An owner's other blocks in the damage need no question of their own.
            for runs in debugfs.extents(new).values():
                pending = _remove_blocks(pending, runs)
        if pending:
            result.meta(f"{kind}: too many small files in the damage to name them all")
            unattributed += [(b * bs, n * bs) for b, n in pending]
    except _ToolFailed as exc:
        result.meta(f"{kind}: debugfs failed ({exc}): some files not named")
        unattributed += [(b * bs, n * bs) for b, n in pending]
    result.unknown += _intersect(merge_ranges(unattributed, size), damaged)

    # 3. Names.
    files = [i for i in owners if i >= layout.first_ino]
    for ino in owners:
        if ino == layout.journal_ino or ino == 8:
            result.meta("journal")
        elif ino < layout.first_ino:
            result.meta(f"{kind} {EXT_SPECIAL.get(ino, f'reserved inode {ino}')}")
    try:
        names = debugfs.ncheck(sorted(set(files) | set(lost_inodes))) if files or lost_inodes else {}
    except _ToolFailed as exc:
        result.meta(f"{kind}: debugfs ncheck failed ({exc}): files not named")
        names = {}
    for ino in files:
        paths = names.get(ino)
        if not paths:
            result.meta(f"{kind} inode {ino} (no name found)")
            continue
        if _ext_is_dir(read, layout, ino):
            for path in paths:
                result.meta(f"directory {path}")
        else:
            result.files.update(paths)
    unnamed = 0
    for ino in lost_inodes:
        paths = names.get(ino)
        if paths:
            result.files.update(paths)       # the inode is gone: the whole file is lost
        else:
            unnamed += 1
    if unnamed:
        result.meta(f"{kind}: {unnamed} files or folders lost with their inodes; their names were not found")


def _ext_inode_offset(layout: _ExtLayout, ino: int) -> int | None:
    geo = layout.geo
    group, index = divmod(ino - 1, geo.inodes_per_group)
    if group >= len(layout.descs):
        return None
    return layout.descs[group][2] * geo.block_size + index * geo.inode_size


def _ext_is_dir(read: Reader, layout: _ExtLayout, ino: int) -> bool:
    offset = _ext_inode_offset(layout, ino)
    raw = read(offset, 2) if offset is not None else b""
    return len(raw) == 2 and struct.unpack_from("<H", raw)[0] & S_IFMT == S_IFDIR


def _ext_lost_inodes(read: Reader, layout: _ExtLayout, group: int, table_block: int, hit) -> list[int]:
    """In-use inodes whose slots lie in the zeroed part of a group's inode table."""
    geo = layout.geo
    base = table_block * geo.block_size
    bitmap = read(layout.descs[group][1] * geo.block_size, geo.inodes_per_group // 8 or 1)
    flags = layout.descs[group][3]
    inode_uninit = geo.csum_groups and flags & 0x1
    out = []
    for off, length in hit:
        first = (off - base) // geo.inode_size
        last = min(geo.inodes_per_group, -(-(off + length - base) // geo.inode_size))
        for index in range(first, last):
            if inode_uninit:
                continue
            if index // 8 < len(bitmap) and not bitmap[index // 8] >> (index % 8) & 1:
                continue
            ino = group * geo.inodes_per_group + index + 1
            if ino >= layout.first_ino:
                out.append(ino)
    return out


def _block_runs(ranges, bs: int) -> list[tuple[int, int]]:
    """Byte ranges -> (first block, count) of every block they touch."""
    runs: list[list[int]] = []
    for off, length in ranges:
        a, b = off // bs, -(-(off + length) // bs)
        if runs and a <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], b)
        else:
            runs.append([a, b])
    return [(a, b - a) for a, b in runs]


def _remove_blocks(pending, runs) -> list[tuple[int, int]]:
    return _subtract(pending, merge_ranges(runs, 1 << 62))


def _pick(pending, budget: int) -> tuple[list[int], bool]:
    """Blocks to ask about this round: all when few, else spread over every run (a run inside
    one big file is then settled by that file's extent list)."""
    total = sum(n for _, n in pending)
    if total <= budget:
        return [b for first, n in pending for b in range(first, first + n)], True
    per_run = max(1, budget // len(pending))
    out: list[int] = []
    for first, n in pending:
        step = max(1, n // per_run)
        out += list(range(first, first + n, step))[:per_run]
        if len(out) >= budget:
            break
    return out, False


class _ToolFailed(Exception):
    pass


class _Debugfs:
    """debugfs runs over the open descriptor (no name quoting, an offset through ?offset=)."""

    def __init__(self, fd: int, start: int, backup: int | None, block_size: int):
        self.fd, self.start, self.backup, self.block_size = fd, start, backup, block_size

    def run(self, lines: list[str]) -> str:
        device = f"/dev/fd/{self.fd}" + (f"?offset={self.start}" if self.start else "")
        cmd = ["debugfs", "-c"]
        if self.backup is not None:
            cmd += ["-s", str(self.backup), "-b", str(self.block_size)]
        cmd += ["-f", "-", device]
        env = dict(os.environ, DEBUGFS_PAGER="__none__", PAGER="__none__", LC_ALL="C")
        log.debug("debugfs: %d commands", len(lines))
        proc = tools.run(cmd, stdin="\n".join(lines) + "\n", check=False, pass_fds=(self.fd,), env=env,
                         errors="surrogateescape")
        if "Filesystem not open" in proc.stderr or proc.returncode != 0:
            noise = ("debugfs ", "catastrophic mode")
            raise _ToolFailed(first_line("\n".join(line for line in proc.stderr.splitlines()
                                                    if not line.startswith(noise))))
        return proc.stdout

    @staticmethod
    def _lines(command: str, numbers) -> list[str]:
        lines, cur = [], command
        for n in numbers:
            item = f" {n}"
            if len(cur) + len(item) > DEBUGFS_LINE:
                lines.append(cur)
                cur = command
            cur += item
        if cur != command:
            lines.append(cur)
        return lines

    def icheck(self, blocks: list[int]) -> dict[int, int]:
        out = self.run(self._lines("icheck", blocks))
        found = {}
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                found[int(parts[0])] = int(parts[1])
        return found

    def extents(self, inodes: list[int]) -> dict[int, list[tuple[int, int]]]:
        """Every block (data, extent tree, indirect) of each inode, from `stat`."""
        if not inodes:
            return {}
        out = self.run([f"stat <{ino}>" for ino in inodes])
        runs: dict[int, list[tuple[int, int]]] = {}
        current = None
        listing = False
        for line in out.splitlines():
            head = re.match(r"Inode: (\d+)\s", line)
            if head:
                current, listing = int(head.group(1)), False
                runs.setdefault(current, [])
                continue
            if current is None:
                continue
            if line.startswith(("EXTENTS:", "BLOCKS:")):
                listing = True
                continue
            acl = re.match(r"\s*File ACL: (\d+)", line)
            if acl and int(acl.group(1)):
                runs[current].append((int(acl.group(1)), 1))
            if listing:
                for m in re.finditer(r"\([^)]*\):(\d+)(?:-(\d+))?", line):
                    a = int(m.group(1))
                    b = int(m.group(2)) if m.group(2) else a
                    runs[current].append((a, b - a + 1))
        return runs

    def ncheck(self, inodes: list[int]) -> dict[int, list[str]]:
        # ncheck stops once it found as many names as the asked inodes have links, and a zeroed
        # inode has none: each number is paired with the root directory's (which no entry
        # names, and which counts one), so it searches on until every dead inode is named.
        out = self.run(self._lines("ncheck", [f"{ino} 2" for ino in inodes]))
        names: dict[int, list[str]] = {}
        for line in out.splitlines():
            ino, sep, path = line.partition("\t")
            if sep and ino.isdigit() and path.startswith("/"):
                names.setdefault(int(ino), []).append(re.sub(r"^/+", "/", path))
        return names


# ----------------------------------------------------------------------------- NTFS

NTFS_SYSTEM_LAST = 15          # records 0-15 are the system files; 16-23 reserved


@contextlib.contextmanager
def _readonly_device(fd: int, start: int, size: int):
    """The partition as a path a tool can open: the target itself when it is the partition,
    else a read-only loop device (root) detached after; None when that is impossible."""
    if start == 0:
        yield f"/dev/fd/{fd}", (fd,)
        return
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        yield None, ()
        return
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        yield None, ()
        return
    try:
        loop = loops.attach(f"/dev/fd/{fd}", start, size, read_only=True, pass_fds=(fd,))
    except ToolError as exc:
        log.warning("losetup: %s", exc.message)
        yield None, ()
        return
    try:
        yield loop, ()
    finally:
        loops.detach(loop)


def _ntfs_cluster(read: Reader, size: int) -> tuple[int, int] | None:
    """(cluster size, MFT record size) from the boot sector or its backup in the last sector."""
    from recovery.fs import ntfs
    for offset in (0, size - 512):
        try:
            boot = ntfs._Boot(read(offset, 512))
            return boot.cluster, boot.record_size
        except (FsMapError, ValueError, struct.error):
            continue
    return None


def _ntfs(result: _Collect, fd: int, start: int, size: int, read: Reader, damaged) -> None:
    _require("ntfscluster", "ntfs-3g")
    geometry = _ntfs_cluster(read, size)
    if geometry is None:
        result.meta("NTFS boot sector and its backup are unreadable: files not named")
        result.unknown += damaged
        return
    cluster, record_size = geometry
    if damaged[0][0] < 512:
        result.meta("NTFS boot sector")
    last = (damaged[-1][0] + damaged[-1][1] - 1) // cluster
    with _readonly_device(fd, start, size) as (device, fds):
        if device is None:
            result.meta("NTFS at an offset needs root (a read-only loop device): files not named")
            result.unknown += damaged
            return
        # -v lists every non-resident attribute's runs; the match lines name the inodes. The
        # span starts at 0 so ntfscluster's "clusters aren't in use" shortcut (which trusts a
        # possibly zeroed $Bitmap) never skips the listing.
        proc = tools.run(["ntfscluster", "-f", "-v", "-c", f"0-{last}", device], check=False,
                         errors="surrogateescape", pass_fds=fds, env={"LC_ALL": "C.UTF-8"})
    runs, names, mft_runs = _parse_ntfscluster(proc.stdout)
    if proc.returncode != 0 or not runs:
        result.meta(f"NTFS could not be read (ntfscluster: {first_line(proc.stderr)}): files not named")
        result.unknown += damaged
        return

    spans = _Spans(damaged)
    claimed: list[tuple[int, int]] = []
    bitmap_hit = False
    for ino, attr_runs in runs.items():
        for attr_type, lcn, count in attr_runs:
            hit = spans.overlap(lcn * cluster, (lcn + count) * cluster)
            if not hit:
                continue
            claimed += hit
            path = names.get(ino)
            if ino == 0 and attr_type == 0x80:
                result.meta("NTFS $MFT" + _mft_records(mft_runs, cluster, record_size, hit))
            elif ino <= NTFS_SYSTEM_LAST or (path or "").startswith("/$Extend/"):
                name = (path or f"/system file {ino}").lstrip("/")
                result.meta(f"NTFS {name}" + (" (its bitmap)" if attr_type == 0xB0 else ""))
                bitmap_hit |= ino == 6
            elif path is None:
                result.meta(f"NTFS file record {ino} (no name found)")
            elif attr_type in (0xA0, 0xB0) or ino == 5:
                result.meta("root directory" if ino == 5 else f"directory {path}")
            else:
                result.files.add(path)
    rest = _subtract(damaged, merge_ranges(claimed, size))
    # The backup boot sector sits past the last cluster.
    backup = (size - 512, 512)
    if _intersect(rest, [backup]):
        result.meta("NTFS backup boot sector")
        rest = _subtract(rest, [backup])
    used = None
    if not bitmap_hit:
        try:
            from recovery.fs import ntfs
            info = ntfs.probe(read, size)
            used = info.used if info else None
        except (FsMapError, struct.error, ValueError, IndexError):
            used = None
    _unowned(result, rest, used, used is not None and not bitmap_hit)


def _parse_ntfscluster(text: str):
    """{inode: [(attribute type, lcn, count)]}, {inode: path}, $MFT's data runs [(vcn, lcn, count)]."""
    runs: dict[int, list[tuple[int, int, int]]] = {}
    names: dict[int, str] = {}
    mft: list[tuple[int, int, int]] = []
    ino, attr = None, None
    for line in text.splitlines():
        m = re.match(r"Inode: (\d+)$", line)
        if m:
            ino, attr = int(m.group(1)), None
            runs.setdefault(ino, [])
            continue
        m = re.match(r"\t\[0x([0-9A-Fa-f]+)\]$", line)
        if m:
            attr = int(m.group(1), 16)
            continue
        m = re.match(r"\t\t(\d+)\t(\d+)-(\d+) \((\d+)\)$", line)
        if m and ino is not None and attr is not None:
            vcn, lcn, count = int(m.group(1)), int(m.group(2)), int(m.group(4))
            runs[ino].append((attr, lcn, count))
            if ino == 0 and attr == 0x80:
                mft.append((vcn, lcn, count))
            continue
        m = re.match(r"Inode (\d+) (/.*)$", line)
        if m:
            # "/dir/name/$DATA" -> "/dir/name"; the root directory prints as "/."
            path = m.group(2).rsplit("/", 1)[0]
            names.setdefault(int(m.group(1)), "/" if path in ("/.", "") else path)
    return runs, names, mft


def _mft_records(mft_runs, cluster: int, record_size: int, hit) -> str:
    """" (records a-b)" for the MFT records in the damaged bytes."""
    records = []
    for off, length in hit:
        for vcn, lcn, count in mft_runs:
            a, b = max(off, lcn * cluster), min(off + length, (lcn + count) * cluster)
            if a < b:
                base = vcn * cluster - lcn * cluster
                records.append(((a + base) // record_size, (b - 1 + base) // record_size))
    if not records:
        return ""
    lo, hi = min(r[0] for r in records), max(r[1] for r in records)
    return f" (records {lo}-{hi})" if lo != hi else f" (record {lo})"


# ----------------------------------------------------------------------------- FAT

def _fat(result: _Collect, read: Reader, size: int, damaged) -> None:
    from recovery.fs import fat
    bpb = fat._bpb(read)
    if bpb is None:
        result.meta("FAT boot sector is unreadable: files not named")
        result.unknown += damaged
        return
    bps = bpb.bytes_per_sector
    spans = _Spans(damaged)
    name = bpb.name
    claimed: list[tuple[int, int]] = []

    def area(offset: int, length: int, what: str) -> bool:
        if spans.touches(offset, offset + length):
            claimed.append((offset, length))
            result.meta(what)
            return True
        return False

    area(0, bpb.reserved * bps, f"{name} boot sector and reserved sectors")
    fat_bytes = bpb.fat_size * bps
    entries = bpb.cluster_count + 2
    fat_hit = []
    for copy in range(bpb.fat_count):
        fat_hit.append(area((bpb.reserved + copy * bpb.fat_size) * bps, fat_bytes,
                            f"FAT table (copy {copy + 1})"))
    root_region = ((bpb.reserved + bpb.fat_count * bpb.fat_size) * bps, bpb.root_dir_sectors * bps)
    if bpb.root_dir_sectors:
        area(*root_region, "root directory")

    # The chains come from an undamaged FAT copy when there is one.
    table = _fat_table(read, bpb, fat_hit, entries)
    data = bpb.data_start * bps
    cb = bpb.cluster_bytes

    def cluster_ranges(chain):
        out: list[list[int]] = []
        for c in chain:
            off = data + (c - 2) * cb
            if out and out[-1][1] == off:
                out[-1][1] += cb
            else:
                out.append([off, off + cb])
        return [(a, b - a) for a, b in out]

    stack = [("", None)]        # (path, first cluster); None = the root directory
    seen_dirs: set[int] = set()
    while stack:
        path, first = stack.pop()
        if first is None:
            if bpb.is_fat32_layout:
                chain = _chain(table, bpb.root_cluster, entries)
                ranges = cluster_ranges(chain)
                raw = b"".join(read(off, n) for off, n in ranges)
                if any(spans.touches(off, off + n) for off, n in ranges):
                    claimed += ranges
                    result.meta("root directory")
            else:
                raw = read(*root_region)
        else:
            chain = _chain(table, first, entries)
            ranges = cluster_ranges(chain)
            raw = b"".join(read(off, n) for off, n in ranges)
            if any(spans.touches(off, off + n) for off, n in ranges):
                claimed += ranges
                result.meta(f"directory {path}")
        for entry_name, attr, cluster in _dir_entries(raw, bpb.is_fat32_layout):
            child = f"{path}/{entry_name}"
            if attr & 0x10:
                if 2 <= cluster < entries and cluster not in seen_dirs:
                    seen_dirs.add(cluster)
                    stack.append((child, cluster))
                continue
            if not 2 <= cluster < entries:
                continue     # empty file
            ranges = cluster_ranges(_chain(table, cluster, entries))
            if any(spans.touches(off, off + n) for off, n in ranges):
                claimed += ranges
                result.files.add(child)

    rest = _subtract(damaged, merge_ranges(claimed, size))
    # Clusters in use but reached by no name (under a damaged directory, lost chains) and the
    # sectors past the last cluster are unknown; free clusters hold nothing.
    end = data + bpb.cluster_count * cb
    in_use = [(0, data), (end, max(0, size - end))]
    fats = [(bpb.reserved + k * bpb.fat_size) * bps for k in range(bpb.fat_count)]
    for off, length in rest:
        for c in range(max(2, (off - data) // cb + 2), min(entries, -(-(off + length - data) // cb) + 2)):
            # Free only when some copy's entry for it survived and says so.
            entry = c * bpb.bits // 8
            zeroed = all(spans.touches(f + entry, f + entry + 4) for f in fats)
            if table[c] & 0x0FFFFFFF or zeroed:
                in_use.append((data + (c - 2) * cb, cb))
    _unowned(result, rest, merge_ranges(in_use, size), trust_used=True)


def _fat_table(read: Reader, bpb, fat_hit: list[bool], entries: int):
    """FAT entries as integers, from the first undamaged copy (else every copy's non-zero entries)."""
    bps = bpb.bytes_per_sector
    nbytes = -(-entries * bpb.bits // 8)

    def decode(raw: bytes):
        raw = raw.ljust(nbytes + 2, b"\0")
        if bpb.bits in (16, 32):     # compact: a large FAT32 has millions of entries
            table = array.array("H" if bpb.bits == 16 else "I")
            table.frombytes(raw[:entries * table.itemsize])
            if sys.byteorder != "little":
                table.byteswap()
            return table
        out = []
        for i in range(entries):
            pos = i * 3 // 2
            pair = raw[pos] | (raw[pos + 1] << 8)
            out.append(pair >> 4 if i & 1 else pair & 0xFFF)
        return out

    copies = [decode(read((bpb.reserved + k * bpb.fat_size) * bps, nbytes)) for k in range(bpb.fat_count)]
    for k, hit in enumerate(fat_hit):
        if not hit:
            return copies[k]
    merged = list(copies[0])
    for other in copies[1:]:
        merged = [a or b for a, b in zip(merged, other)]
    return merged


def _chain(table: list[int], first: int, entries: int) -> list[int]:
    out, c = [], first
    seen = set()
    while 2 <= c < entries and c not in seen:
        seen.add(c)
        out.append(c)
        c = table[c] & 0x0FFFFFFF     # FAT32's top four bits are reserved
    return out


def _dir_entries(raw: bytes, fat32: bool):
    """(name, attributes, first cluster) of each live entry, long names preferred."""
    long_parts: list[tuple[int, str]] = []
    checksum = None
    for pos in range(0, len(raw) - 31, 32):
        e = raw[pos:pos + 32]
        if e[0] == 0:
            break
        if e[0] == 0xE5:
            long_parts = []
            continue
        attr = e[11]
        if attr == 0x0F:
            seq = e[0]
            if seq & 0x40:
                long_parts, checksum = [], e[13]
            text = (e[1:11] + e[14:26] + e[28:32]).decode("utf-16-le", "replace")
            long_parts.append((seq & 0x1F, text.split("\0", 1)[0]))
            continue
        if attr & 0x08:
            long_parts = []
            continue
        short = e[:11]
        s = 0
        for b in short:
            s = (((s & 1) << 7) + (s >> 1) + b) & 0xFF
        if long_parts and s == checksum:
            name = "".join(text for _, text in sorted(long_parts))
        else:
            base = bytes([0xE5]) + short[1:8] if short[0] == 0x05 else short[:8]
            base_s = base.decode("cp850", "replace").rstrip()
            ext_s = short[8:11].decode("cp850", "replace").rstrip()
            if e[12] & 0x08:
                base_s = base_s.lower()
            if e[12] & 0x10:
                ext_s = ext_s.lower()
            name = base_s + ("." + ext_s if ext_s else "")
        long_parts = []
        if name in (".", ".."):
            continue
        cluster = struct.unpack_from("<H", e, 26)[0]
        if fat32:      # the high word means something else on FAT12/16
            cluster |= struct.unpack_from("<H", e, 20)[0] << 16
        yield name, attr, cluster
