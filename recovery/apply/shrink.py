"""Shrinking a restored filesystem into a smaller partition, relocating what lay beyond its end.

    shrink_filesystem(target, entry, fs, old_size, read_old, cancel=None) -> note
    min_size(fs, read_old, old_size, used_bytes) -> bytes

The restore writes every used byte of the saved filesystem that lies below the new end
(``entry.size``) at its place on the target; the rest exists only in the repository. The
resize tools need the whole old filesystem in one file, so a FUSE filesystem (kernel FUSE
through mfusepy, served from a thread of this process) shows them a *virtual* one:

    /old  old_size bytes:  [0, entry.size)         read/write -> target at entry.start
                           [entry.size, old_size)  read  -> overlay, else read_old (the backup)
                                                   write -> overlay (RAM, bounded)
    /new  entry.size bytes: the target's partition bytes only (the check runs on it)

ext2/3/4: ``e2fsck -f -y`` (resize2fs wants a freshly checked filesystem; it also replays a
journal), ``resize2fs -P`` (refuse early, in plain words, when the size is below the tool's
own minimum), ``resize2fs old <size>K``, then ``e2fsck -f -n new``.
NTFS: ``ntfsresize --info --force`` (same early refusal), ``ntfsresize --force --force --size``
(no questions; it relocates clusters and marks the volume for a check by Windows), then
``ntfsfix --no-action new``. Checks are judged by exit codes.

Relocation costs no RAM in proportion to the data moved: the tools copy blocks from /old's
tail (decoded from the repository window by window through the reader's small LRU cache) to
/old's head (written straight to the target). The overlay only holds what the tools write
beyond the new end: metadata they update before moving it, and ntfsresize's reset of the
$LogFile (up to 64 MiB of one repeated pattern), so block contents are stored once each. It
is capped at OVERLAY_LIMIT; a tool that writes more fails (ENOSPC) and the restore refuses
plainly instead of exhausting the live system's memory.

FUSE details: libfuse 3 is preferred (the live system has only libfuse3-3) with the kernel's
write-back cache, which turns the tools' 4 KiB writes (ntfsresize copies cluster by cluster)
into 1 MiB requests; with libfuse 2, big_writes (128 KiB). The server runs in a thread of
this process because read_old is a Python callable; libfuse installs its SIGTERM/SIGHUP
handlers only where none is set, so Python's SIGINT handling is untouched. The mount lives
in a fresh folder under the temporary directory and is unmounted (umount, or fusermount as
a user) before returning.

Measured on this project's 2-core test VM, 4 KiB-block files spread over the partition,
files compressible as in tests/loop/test_shrink.py: ext4 32 GiB, 8.6 GiB used, shrunk to
its minimum of 10.3 GiB, 5.75 GiB moved in 19 s (300 MiB/s, including both e2fsck runs),
peak RSS of the process 90 MiB (64 MiB before the shrink), overlay 4 KiB. NTFS 32 GiB, 7.1
GiB used, shrunk to its minimum of 7.5 GiB: 6.2 GiB moved in 19.6 s (324 MiB/s), peak RSS
96 MiB (no growth during the shrink), 64 MiB written beyond the new end held in 16 KiB.
Incompressible data decodes slower (zstd, about 1 GB/s per core) but stays off the heap.

min_size runs the same tools' estimates (``resize2fs -P``, ``ntfsresize --info``) on a
read-only view of the whole saved filesystem (every read from read_old, writes to the
overlay) and adds a margin: ext 64 MiB + 2 %, NTFS 256 MiB + 2 % (ntfsresize's own manual:
the practical minimum is "used space + 20-200 MB", and Windows wants 50-100 MB free to
boot). Without FUSE (no /dev/fuse, no libfuse, not root and no fusermount) it falls back
to a conservative estimate from the used bytes alone: used + 10 % + 256 MiB (the used
bytes already count every inode table and the journal, which the real minimum does not
fully need), and shrink_filesystem refuses with one plain line.

Cancelling is honoured between steps only: killing resize2fs or ntfsresize half-way would
leave a filesystem that is neither the old nor the new one.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from typing import Callable

from recovery.errors import DiskError, LifeboatError, RefusedError, ToolError
from recovery.events import CancelToken
from recovery.model.layout import PartitionEntry
from recovery.host import mounts as host_mounts, tools
from recovery.host.tools import why
from recovery.fs.ext import sparse_super_group
from recovery.units import human_size

log = logging.getLogger("recovery.apply.shrink")

MiB = 1024 * 1024
BLOCK = 4096                        # overlay granularity
OVERLAY_LIMIT = 256 * MiB           # what the tools may write beyond the new end
MOUNT_TIMEOUT = 15.0
FUSE_CAP_WRITEBACK_CACHE = 1 << 16     # libfuse 3's fuse_common.h

ReadOld = Callable[[int, int], bytes]


def _family(fs: str | None) -> str | None:
    f = (fs or "").lower()
    if f in ("ext2", "ext3", "ext4"):
        return "ext"
    if f == "ntfs":
        return "ntfs"
    return None


def _round_up_mib(n: int) -> int:
    return -(-n // MiB) * MiB


# ----------------------------------------------------------------------------- the public API


def min_size(fs: str, read_old: ReadOld, old_size: int, used_bytes: int) -> int:
    """The smallest partition size in bytes (whole MiB) this saved filesystem can shrink to,
    for the plan. Returns old_size for filesystems that cannot shrink."""
    family = _family(fs)
    if family is None:
        return old_size
    if fuse_unavailable() is None:
        try:
            with VirtualDisk(None, 0, old_size, 0, read_old) as vd:
                tool_min = _tool_minimum(family, vd)
        except LifeboatError as exc:
            log.warning("minimum size of the saved %s not measured (%s); estimating", fs, exc)
            tool_min = None
        if tool_min is not None:
            margin = (256 * MiB if family == "ntfs" else 64 * MiB) + tool_min // 50
            return min(_round_up_mib(tool_min + margin), old_size)
    return min(_round_up_mib(used_bytes + used_bytes // 10 + 256 * MiB), old_size)


def shrink_filesystem(target: str, entry: PartitionEntry, fs: str, old_size: int,
                      read_old: ReadOld, *, cancel: CancelToken | None = None) -> str:
    """`target` is a whole-disk block device or disk-image file; the partition will live at
    entry.start with entry.size bytes (entry.size < old_size). When this is called the
    partition table is NOT yet written (the restore writes it last), and every used byte of the
    saved filesystem that lies below entry.size is already written at entry.start + offset.
    read_old(offset, length) returns the saved partition's bytes for offsets in [0, old_size).
    Make the filesystem fit in entry.size bytes (relocating what lies beyond), check it (fsck),
    and return a one-line note for the person. Raise ToolError/RefusedError with one plain line."""
    cancel = cancel or CancelToken()
    family = _family(fs)
    name = f"partition {entry.number} ({fs or 'no filesystem'})"
    if family is None:
        raise RefusedError(f"cannot shrink {name}: Lifeboat shrinks only ext2/3/4 and NTFS")
    if entry.size >= old_size:
        raise RefusedError(f"{name} is not smaller than the saved filesystem; nothing to shrink")
    why = fuse_unavailable()
    if why:
        raise RefusedError(f"cannot shrink {name} to {human_size(entry.size)}: {why}; "
                           f"restore onto a disk of at least the old size")
    cancel.check()
    try:
        fd = os.open(target, os.O_RDWR)
    except OSError as exc:
        raise DiskError(f"cannot open {target} to shrink {name}: {exc.strerror}") from exc
    try:
        with VirtualDisk(fd, entry.start, old_size, entry.size, read_old) as vd:
            if family == "ext":
                note = _shrink_ext(vd, name, entry, old_size, cancel)
            else:
                note = _shrink_ntfs(vd, name, entry, old_size, cancel)
        os.fsync(fd)
        return note
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- ext2/3/4

_NOT_USABLE = "the partition is not usable: restore onto a disk of at least the old size"


def _shrink_ext(vd: "VirtualDisk", name: str, entry: PartitionEntry, old_size: int,
                cancel: CancelToken) -> str:
    pre = vd.run(["e2fsck", "-f", "-y", vd.old_path])
    if pre.returncode >= 4:
        raise ToolError(f"e2fsck cannot repair the saved {name} before shrinking it ({why(pre)}); {_NOT_USABLE}")
    cancel.check()
    need = _tool_minimum("ext", vd)
    if need is not None and need > entry.size:
        raise RefusedError(f"{name} cannot shrink to {human_size(entry.size)}: its data needs at least "
                           f"{human_size(need)}; {_NOT_USABLE}")
    cancel.check()
    # -f: resize2fs's own estimate is rounded up to whole flex groups and refuses sizes that
    # work (see _tool_minimum); below the count above, it was refused already.
    res = vd.run(["resize2fs", "-f", vd.old_path, f"{entry.size // 1024}K"])
    if res.returncode != 0:
        raise ToolError(f"resize2fs could not shrink {name} to {human_size(entry.size)}: {why(res)}; {_NOT_USABLE}")
    post = vd.run(["e2fsck", "-f", "-n", vd.new_path])
    if post.returncode != 0:
        raise ToolError(f"after shrinking, e2fsck reports problems on {name}: {why(post)}; "
                        f"run e2fsck -f on it before using it")
    return (f"{name.capitalize()}: filesystem shrunk from {human_size(old_size)} to {human_size(entry.size)}, "
            f"data beyond the new end moved, checked clean.")


# ----------------------------------------------------------------------------- NTFS


def _shrink_ntfs(vd: "VirtualDisk", name: str, entry: PartitionEntry, old_size: int,
                 cancel: CancelToken) -> str:
    need = _tool_minimum("ntfs", vd)
    if need is not None and need > entry.size:
        raise RefusedError(f"{name} cannot shrink to {human_size(entry.size)}: its data needs at least "
                           f"{human_size(need)}; {_NOT_USABLE}")
    cancel.check()
    res = vd.run(["ntfsresize", "--force", "--force", "--no-progress-bar", "--size", str(entry.size),
                  vd.old_path])
    if res.returncode != 0:
        raise ToolError(f"ntfsresize could not shrink {name} to {human_size(entry.size)}: {why(res)}; "
                        f"{_NOT_USABLE}")
    check = vd.run(["ntfsfix", "--no-action", vd.new_path])
    if check.returncode != 0:
        raise ToolError(f"after shrinking, ntfsfix reports problems on {name}: {why(check)}; "
                        f"let Windows check the disk (chkdsk) before using it")
    return (f"{name.capitalize()}: NTFS shrunk from {human_size(old_size)} to {human_size(entry.size)}, "
            f"data beyond the new end moved; Windows checks it once at its next start.")


# ----------------------------------------------------------------------------- tool minimums

_EXT_MIN = re.compile(r"minimum size of the filesystem:\s*(\d+)", re.I)
_NTFS_MIN = re.compile(r"You might resize at (\d+) bytes", re.I)


def _tool_minimum(family: str, vd: "VirtualDisk") -> int | None:
    """The smallest size in bytes the filesystem in /old can shrink to, or None when it cannot
    be told (then the resize itself decides, or min_size estimates).

    ext: the smaller of resize2fs -P and Lifeboat's own count (_ext_minimum). resize2fs -P
    rounds up to whole flex groups (16 x 128 MiB), so a 4 GiB ext4 holding 1.1 GiB says
    1.9 GiB, while resize2fs -f shrinks it to 1.25 GiB and e2fsck finds it clean."""
    path = vd.old_path
    if family == "ext":
        res = vd.run(["resize2fs", "-P", path])
        m = _EXT_MIN.search(res.stdout or "")
        facts = _ext_facts(path, vd.run)
        if res.returncode != 0 or not m or not facts:
            return None
        tool = int(m.group(1)) * facts["Block size"]
        own = _ext_minimum(facts)
        return min(tool, own) if own else tool
    res = vd.run(["ntfsresize", "--info", "--force", "--no-progress-bar", path])
    m = _NTFS_MIN.search(res.stdout or "")
    if m:
        return int(m.group(1))
    return None


def _ext_facts(path: str, runner) -> dict | None:
    """The numeric fields of dumpe2fs -h (Block count, Free blocks, Block size, ...) and the
    feature list, or None when it cannot read the superblock."""
    res = runner(["dumpe2fs", "-h", path])
    if res.returncode != 0:
        return None
    facts: dict = {}
    for line in (res.stdout or "").splitlines():
        key, _, value = line.partition(":")
        value = value.strip()
        if key == "Filesystem features":
            facts["features"] = set(value.split())
        elif value.isdigit():
            facts[key.strip()] = int(value)
    wanted = ("Block size", "Block count", "Free blocks", "Blocks per group", "Inodes per group",
              "Inode size", "Inode count", "Free inodes", "First block")
    return facts if all(k in facts for k in wanted) else None


def _ext_minimum(f: dict) -> int | None:
    """Bytes an ext2/3/4 needs when shrunk to as few block groups as hold its data: what is
    in use now, less the per-group metadata (inode tables, bitmaps, superblock and descriptor
    copies) of the groups that go away; 2 % and 32 MiB more for the move itself."""
    bs, bpg = f["Block size"], f["Blocks per group"]
    desc = 64 if "64bit" in f.get("features", ()) else 32
    reserved_gdt = f.get("Reserved GDT blocks", 0)
    table = -(-f["Inodes per group"] * f["Inode size"] // bs)
    sparse = "sparse_super" in f.get("features", ())

    def metadata(groups: int) -> int:
        gdt = -(-groups * desc // bs)
        copies = sum(1 for g in range(groups) if not sparse or sparse_super_group(g))
        return groups * (table + 2) + copies * (1 + gdt + reserved_gdt)

    now = -(-(f["Block count"] - f["First block"]) // bpg)
    data = f["Block count"] - f["Free blocks"] - metadata(now)
    used_inodes = f["Inode count"] - f["Free inodes"]
    for groups in range(max(1, data // bpg), now + 1):
        need = data + metadata(groups)
        if groups * bpg >= need and groups * f["Inodes per group"] >= used_inodes:
            return (need + need // 50) * bs + 32 * MiB
    return None


# ----------------------------------------------------------------------------- FUSE


def fuse_unavailable() -> str | None:
    """None when a FUSE view can be mounted here, else why not (a plain phrase)."""
    if not host_mounts.fuse_ready():
        return "FUSE is not available here (no /dev/fuse)"
    if os.geteuid() != 0 and not (shutil.which("fusermount3") or shutil.which("fusermount")):
        return "shrinking a filesystem needs root (or fusermount)"
    try:
        _import_mfusepy()
    except (ImportError, OSError) as exc:
        return f"the FUSE library cannot be loaded ({exc})"
    return None


class VirtualDisk:
    """The FUSE view described in the module docstring, mounted for the duration of a `with`.
    `fd` None (min_size): no target; every byte of /old comes from read_old, and /new is absent."""

    def __init__(self, fd: int | None, base: int, old_size: int, new_size: int, read_old: ReadOld,
                 overlay_limit: int = OVERLAY_LIMIT):
        self.fd, self.base = fd, base
        self.old_size, self.new_size = old_size, new_size
        self.read_old = read_old
        # Block number -> content. Contents are interned: ntfsresize fills the whole $LogFile
        # (up to 64 MiB, often beyond the new end) with one repeated pattern before moving it.
        self.overlay: dict[int, bytes] = {}
        self._contents: dict[bytes, bytes] = {}
        self.overlay_limit = overlay_limit
        self.lock = threading.Lock()
        self.error: BaseException | None = None    # first failure inside a FUSE callback
        self.stats = {"read_target": 0, "read_old": 0, "write_target": 0, "write_overlay": 0}
        self.mountpoint = ""
        self.mounted_at = time.time_ns()    # fixed times: a changing mtime would drop the page cache
        self._thread: threading.Thread | None = None
        self._mount_error: BaseException | None = None

    @property
    def old_path(self) -> str:
        return os.path.join(self.mountpoint, "old")

    @property
    def new_path(self) -> str:
        return os.path.join(self.mountpoint, "new")

    def run(self, args: list[str]) -> tools.Result:
        """Run a tool on the view; a failure inside the view (damaged chunk, overlay full)
        is raised as itself rather than as the tool's confused message."""
        res = tools.step(args)
        if self.error is not None:
            err, self.error = self.error, None
            if isinstance(err, LifeboatError):
                raise err
            raise ToolError(f"{args[0]} failed inside Lifeboat's view of the partition: {err}; {_NOT_USABLE}")
        return res

    # -- byte routing ------------------------------------------------------------------

    def _read_tail(self, offset: int, length: int) -> bytes:
        """Bytes of /old at or beyond new_size: the overlay where written, else the backup."""
        end = min(offset + length, self.old_size)
        with self.lock:
            blocks = {b: self.overlay[b] for b in range(offset // BLOCK, (end - 1) // BLOCK + 1)
                      if b in self.overlay} if self.overlay else {}
        if not blocks:
            self.stats["read_old"] += end - offset
            return self.read_old(offset, end - offset)
        out = bytearray(self.read_old(offset, end - offset))
        for b, data in blocks.items():
            lo, hi = max(offset, b * BLOCK), min(end, (b + 1) * BLOCK)
            out[lo - offset : hi - offset] = data[lo - b * BLOCK : hi - b * BLOCK]
        return bytes(out)

    def _write_tail(self, data: bytes, offset: int) -> None:
        end = offset + len(data)
        with self.lock:
            for b in range(offset // BLOCK, (end - 1) // BLOCK + 1):
                lo, hi = max(offset, b * BLOCK), min(end, (b + 1) * BLOCK)
                if hi - lo == BLOCK:
                    blk = data[lo - offset : hi - offset]
                else:
                    old = self.overlay.get(b)
                    if old is None:
                        old = self.read_old(b * BLOCK, min(BLOCK, self.old_size - b * BLOCK)).ljust(BLOCK, b"\0")
                    blk = old[: lo - b * BLOCK] + data[lo - offset : hi - offset] + old[hi - b * BLOCK :]
                blk = self._contents.setdefault(blk, blk)
                if len(self._contents) * BLOCK > self.overlay_limit:
                    raise RefusedError(
                        f"the resize tool wrote more than {human_size(self.overlay_limit)} beyond the new "
                        f"end of the partition, more than Lifeboat keeps in memory; {_NOT_USABLE}")
                self.overlay[b] = blk
            self.stats["write_overlay"] += len(data)

    @property
    def overlay_bytes(self) -> int:
        """Memory the overlay holds (distinct block contents)."""
        return len(self._contents) * BLOCK

    def read(self, path: str, length: int, offset: int) -> bytes:
        size = self.old_size if path == "/old" else self.new_size
        end = min(offset + length, size)
        if offset >= end:
            return b""
        split = min(max(offset, self.new_size), end)
        head = b""
        if offset < split:
            try:
                head = os.pread(self.fd, split - offset, self.base + offset)
            except OSError as exc:
                raise DiskError(f"cannot read the target at byte {self.base + offset} while resizing: "
                                f"{exc.strerror}; {_NOT_USABLE}") from exc
            if len(head) < split - offset:      # a disk-image target shorter than the partition
                head = head.ljust(split - offset, b"\0")
            self.stats["read_target"] += len(head)
        if split < end:
            return head + self._read_tail(split, end - split)
        return head

    def write(self, path: str, data: bytes, offset: int) -> int:
        size = self.old_size if path == "/old" else self.new_size
        end = offset + len(data)
        if end > size:
            raise OSError(errno.ENOSPC, "beyond the end of the view")
        split = min(max(offset, self.new_size), end)
        if offset < split:
            if self.fd is None:
                raise OSError(errno.EROFS, "read-only view")
            view, at = memoryview(data)[: split - offset], offset
            try:
                while view:
                    n = os.pwrite(self.fd, view, self.base + at)
                    view, at = view[n:], at + n
            except OSError as exc:
                raise DiskError(f"cannot write the target at byte {self.base + at} while resizing: "
                                f"{exc.strerror}; {_NOT_USABLE}") from exc
            self.stats["write_target"] += split - offset
        if split < end:
            self._write_tail(data[split - offset :], split)
        return len(data)

    # -- mounting ----------------------------------------------------------------------

    def __enter__(self) -> "VirtualDisk":
        self.mountpoint = tempfile.mkdtemp(prefix="lifeboat-shrink-")
        cwd = os.getcwd()
        self._thread = threading.Thread(target=self._serve, name="lifeboat-shrink-fuse", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not os.path.ismount(self.mountpoint):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._cleanup()
                why = self._mount_error or "it did not appear in time"
                raise RefusedError(f"cannot mount the FUSE view needed to resize the filesystem ({why})")
            time.sleep(0.02)
        # libfuse moves the whole process to "/" between mounting and serving: once a request
        # has been answered it is serving, and the process's own folder can be given back.
        os.listdir(self.mountpoint)
        os.chdir(cwd)
        return self

    def __exit__(self, *exc) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        self._unmount()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            os.rmdir(self.mountpoint)
        except OSError:
            log.warning("could not remove %s", self.mountpoint)

    def _unmount(self) -> None:
        candidates = []
        if os.geteuid() == 0:
            candidates.append(["umount", self.mountpoint])
        candidates += [["fusermount3", "-u", self.mountpoint], ["fusermount", "-u", self.mountpoint]]
        for args in candidates:
            if not os.path.ismount(self.mountpoint):
                return
            if shutil.which(args[0]):
                tools.quiet(args)

    def _serve(self) -> None:
        try:
            mfusepy = _import_mfusepy()
            mfusepy.FUSE(_Ops(self), self.mountpoint, foreground=True, nothreads=False,
                         fsname="lifeboat-shrink", **_fuse_options(mfusepy.fuse_version_major))
        except BaseException as exc:   # reported by __enter__ when the mount never appeared
            self._mount_error = exc


def _import_mfusepy():
    """mfusepy, bound to libfuse 3 when it is installed (the live system has only that one;
    mfusepy would otherwise prefer libfuse 2, which cannot cache writes)."""
    import sys
    from ctypes.util import find_library

    if "mfusepy" in sys.modules:
        return sys.modules["mfusepy"]
    pinned = "FUSE_LIBRARY_PATH" in os.environ or "FUSE_LIBRARY_NAME" in os.environ
    if not pinned and find_library("fuse3"):
        os.environ["FUSE_LIBRARY_NAME"] = "fuse3"
    try:
        import mfusepy
    finally:
        if not pinned:
            os.environ.pop("FUSE_LIBRARY_NAME", None)
    return mfusepy


def _fuse_options(major: int) -> dict:
    if major == 2:
        # libfuse 2 splits writes into 4 KiB requests unless asked for big ones.
        return {"big_writes": True, "max_write": 131072}
    # Explicit thread limits: libfuse 3.14 otherwise warns on stderr (over the TUI) about its
    # default idle-thread limit of "unlimited".
    return {"max_threads": 4, "max_idle_threads": 4}


def _ops_class():
    mfusepy = _import_mfusepy()

    class Ops(mfusepy.Operations):
        use_ns = True

        def __init__(self, vd: VirtualDisk):
            self.vd = vd
            self.files = {"/old": vd.old_size}
            if vd.fd is not None:
                self.files["/new"] = vd.new_size

        def init_with_config(self, conn, config):
            # The tools write 4 KiB at a time (ntfsresize copies cluster by cluster): the
            # kernel's write-back cache gathers them into large requests, which is what makes
            # relocation fast. libfuse 3 only; libfuse 2 gets big_writes instead.
            if mfusepy.fuse_version_major == 3 and conn is not None and conn.capable & FUSE_CAP_WRITEBACK_CACHE:
                conn.want |= FUSE_CAP_WRITEBACK_CACHE

        def getattr(self, path, fh=None):
            now = self.vd.mounted_at
            if path == "/":
                return {"st_mode": stat.S_IFDIR | 0o700, "st_nlink": 2, "st_uid": os.getuid(),
                        "st_gid": os.getgid(), "st_mtime": now, "st_ctime": now, "st_atime": now}
            size = self.files.get(path)
            if size is None:
                raise mfusepy.FuseOSError(errno.ENOENT)
            return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": size,
                    "st_blocks": (size + 511) // 512, "st_uid": os.getuid(), "st_gid": os.getgid(),
                    "st_mtime": now, "st_ctime": now, "st_atime": now}

        def readdir(self, path, fh):
            return [".", ".."] + [p[1:] for p in self.files]

        def open(self, path, flags):
            if path not in self.files:
                raise mfusepy.FuseOSError(errno.ENOENT)
            return 0

        def _guard(self, fn, *args):
            """Run a callback; remember the first real failure for VirtualDisk.run to report
            (the tool itself only sees an errno)."""
            try:
                return fn(*args)
            except OSError as exc:       # asked for bytes outside the view: the tool's own mistake
                raise mfusepy.FuseOSError(exc.errno or errno.EIO) from exc
            except BaseException as exc:
                if self.vd.error is None:
                    self.vd.error = exc
                code = errno.ENOSPC if isinstance(exc, RefusedError) else errno.EIO
                raise mfusepy.FuseOSError(code) from exc

        def read(self, path, length, offset, fh):
            return self._guard(self.vd.read, path, length, offset)

        def write(self, path, data, offset, fh):
            return self._guard(self.vd.write, path, data, offset)

        def truncate(self, path, length, fh=None):
            return 0      # the size is the view's; a tool's truncate changes nothing

        def flush(self, path, fh):
            return 0

        # With the write-back cache the kernel pushes its own file times back on fsync;
        # the view has no times to keep, but refusing (ENOSYS) would fail the fsync.
        def utimens(self, path, times=None):
            return 0

        def chmod(self, path, mode):
            return 0

        def chown(self, path, uid, gid):
            return 0

        def fsync(self, path, datasync, fh):
            if self.vd.fd is not None:
                os.fsync(self.vd.fd)
            return 0

        def statfs(self, path):
            return {"f_bsize": BLOCK, "f_frsize": BLOCK, "f_blocks": 0, "f_bfree": 0, "f_bavail": 0,
                    "f_namemax": 255}

    return Ops


def _Ops(vd: VirtualDisk):
    return _ops_class()(vd)
