"""A saved disk mounted read-only: each partition as an image file, each filesystem Lifeboat
can read mounted beneath it.

    MOUNTPOINT/p1.img    the saved partition's bytes (FUSE, served from this process)
    MOUNTPOINT/p1/       its filesystem, mounted read-only from p1.img with the real driver
    MOUNTPOINT/p4.img    a partition whose filesystem cannot be read: the image only (a note says so)

The image files are a FUSE filesystem (mfusepy, as the shrink's view) whose reads go to the
partition's PartitionData; the filesystems are mounted from them through recovery.host.mounts
(ext2/3/4 with noload, NTFS through ntfs-3g, exFAT through the FUSE driver where the kernel
has none, FAT through fusefat where the kernel has no vfat), so journals are never replayed
and nothing is ever written. A damaged chunk reads as an I/O error (EIO) for the file it lies
under; the rest reads on.

The view is unmounted (filesystems first, then the images) when the `with` ends, on Ctrl-C,
or by `lifeboat umount`. A process killed outright leaves a FUSE mount whose server is gone
("transport endpoint is not connected"): clean_stale(), called before every new view, finds
those by their source name and detaches them and whatever was mounted beneath them.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from pathlib import Path

from recovery.apply.shrink import _import_mfusepy
from recovery.browse.saved import SavedDisk, browsable, entry_name, fs_name
from recovery.errors import DamageError, DiskError, LifeboatError, RefusedError
from recovery.host import loops, mounts, tools
from recovery.probe.mounts import current_mounts
from recovery.sources.base import PartitionData, SourcePartition
from recovery.storage.base import UnreachableError, storage_failure

log = logging.getLogger("recovery.browse.view")

FSNAME = "lifeboat-browse"      # the source every view's FUSE mount shows in /proc/self/mountinfo
MOUNT_TIMEOUT = 15.0
TEMP_PREFIX = "lifeboat-browse-"


# ----------------------------------------------------------------------------- stale mounts


def _alive(path: str) -> bool:
    try:
        os.statvfs(path)          # asks the server (a stat may be answered from the cache)
        return True
    except OSError as exc:
        return exc.errno not in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO)


def _below(path: str) -> list[str]:
    """Mount points strictly beneath `path`, deepest first."""
    prefix = path.rstrip("/") + "/"
    return sorted({m.target for m in current_mounts() if m.target.startswith(prefix)},
                  key=len, reverse=True)


def _detach(path: str) -> None:
    """Unmount `path`; lazily when something still holds it (a shell inside it)."""
    if tools.quiet(["umount", path]) != 0 and os.path.ismount(path):
        if tools.quiet(["umount", "-l", path]) != 0:
            tools.quiet(["fusermount3", "-uz", path])


def views() -> list[str]:
    """Mount points of every browse view on this machine (live or left by a killed process)."""
    return [m.target for m in current_mounts() if m.source == FSNAME]


def clean_stale() -> list[str]:
    """Detach views whose server process is gone, with what was mounted beneath them; the
    mount points cleaned."""
    cleaned = []
    for target in views():
        if _alive(target):
            continue
        log.warning("cleaning up a browse view left by a process that ended: %s", target)
        for sub in _below(target):
            _detach(sub)
        _detach(target)
        if os.path.basename(target).startswith(TEMP_PREFIX):
            mounts.remove_mountpoint(target)
        cleaned.append(target)
    return cleaned


def unmount_view(where: str | Path) -> None:
    """`lifeboat umount`: take down a view (its filesystems first). Refuses anything else."""
    path = os.path.realpath(where)
    if path not in views():
        raise RefusedError(f"{where} is not a mounted Lifeboat snapshot")
    for sub in _below(path):
        _detach(sub)
    _detach(path)
    if path in views():
        raise DiskError(f"cannot unmount {where}: it is still in use")


def check_mountpoint(where: Path) -> None:
    """Plain refusals for a place a view cannot go (RefusedError, exit 4)."""
    if where.exists() and not where.is_dir():
        raise RefusedError(f"{where} is not a folder")
    if not where.exists():
        if not where.parent.is_dir():
            raise RefusedError(f"{where} does not exist and neither does the folder it would be made in")
        return
    if os.path.ismount(where) or str(where) in views():
        raise RefusedError(f"{where} is busy: something is already mounted there")
    try:
        if any(os.scandir(where)):
            raise RefusedError(f"{where} is not empty: mount a snapshot on an empty folder")
    except PermissionError:
        raise RefusedError(f"{where} cannot be read") from None


def fuse_unavailable() -> str | None:
    from recovery.apply.shrink import fuse_unavailable as why

    return why()


# ----------------------------------------------------------------------------- the view


class SnapshotView:
    """Mount `disk` at `where` for the duration of a `with` (or until close()).

    only: the partition numbers to mount filesystems of (default every browsable one);
    filesystems=False: the image files alone. After entering, `mounted` maps partition
    numbers to their filesystem's folder and `notes` says, in plain lines, what is image-only.
    """

    def __init__(self, disk: SavedDisk, where: str | Path, *, only: set[int] | None = None,
                 filesystems: bool = True):
        self.disk = disk
        self.where = Path(os.path.abspath(where))
        self.only = only
        self.filesystems = filesystems
        # "/p2.img" -> (partition, its reader once something reads it: a chunk table costs 32
        # bytes per MiB of partition, so the ones nobody opens are never loaded)
        self.readers: dict[str, tuple[SourcePartition, PartitionData | None]] = {}
        self._open_lock = threading.Lock()
        self.mounted: dict[int, Path] = {}
        self.notes: list[str] = []
        self.damage: list[str] = []       # damaged reads seen (plain lines, at most a few)
        # Set when the repository itself stopped answering reads (its drive pulled out or
        # failing: an I/O error from the storage, not a chunk that fails its hash).
        self.repository_lost: str | None = None
        self.started = time.time_ns()
        self._made = False
        self._thread: threading.Thread | None = None
        self._mount_error: BaseException | None = None

    # -- the image files -----------------------------------------------------------------
    def _serve(self) -> None:
        try:
            mfusepy = _import_mfusepy()
            opts = {"ro": True, "fsname": FSNAME, "subtype": "lifeboat", "kernel_cache": True}
            if mfusepy.fuse_version_major == 3:
                opts.update(max_threads=4, max_idle_threads=4)
            if os.geteuid() == 0:
                opts["allow_other"] = True
            mfusepy.FUSE(_ops(self), str(self.where), foreground=True, nothreads=False, **opts)
        except BaseException as exc:      # reported by start() when the mount never appeared
            self._mount_error = exc

    def reader(self, name: str) -> PartitionData:
        part, reader = self.readers[name]
        if reader is None:
            with self._open_lock:
                part, reader = self.readers[name]
                if reader is None:
                    reader = self.disk.reader(part.number)
                    self.readers[name] = (part, reader)
        return reader

    def read(self, name: str, length: int, offset: int) -> bytes:
        try:
            reader = self.reader(name)
            return reader.read(offset, length)
        except UnreachableError as exc:        # a network repository's server went away
            if self.repository_lost is None:
                self.repository_lost = exc.message
            raise DamageError(exc.message) from exc
        except DamageError as exc:
            if self.repository_lost is None:
                self.repository_lost = storage_failure(exc)
            if len(self.damage) < 20:
                self.damage.append(exc.message)
            log.warning("%s", exc.message)
            raise

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> "SnapshotView":
        why = fuse_unavailable()
        if why:
            raise RefusedError(f"cannot mount the snapshot: {why}")
        clean_stale()
        check_mountpoint(self.where)
        if not self.where.exists():
            self.where.mkdir()
            self._made = True
        for part in self.disk.partitions:
            self.readers[f"/{entry_name(part)}.img"] = (part, None)
        cwd = os.getcwd()
        atexit.register(self.close)      # a program that ends without closing still unmounts
        self._thread = threading.Thread(target=self._serve, name="lifeboat-browse-fuse", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not os.path.ismount(self.where):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RefusedError(f"cannot mount the snapshot at {self.where} "
                                   f"({self._mount_error or 'it did not appear in time'})")
            time.sleep(0.02)
        os.listdir(self.where)      # served once: libfuse has moved the process to /; go back
        os.chdir(cwd)
        try:
            if self.filesystems:
                self._mount_filesystems()
        except BaseException:
            self.close()
            raise
        return self

    def _mount_filesystems(self) -> None:
        for part in self.disk.partitions:
            if self.only is not None and part.number not in self.only:
                continue
            name = entry_name(part)
            if not browsable(part):
                self.notes.append(f"{name}.img: {fs_name(part.fs) if part.fs else 'no filesystem Lifeboat knows'}"
                                  f" cannot be browsed; the partition is offered as an image file only")
                continue
            if os.geteuid() != 0:
                self.notes.append(f"{name}.img: mounting its {fs_name(part.fs)} filesystem needs root; "
                                  f"the partition is offered as an image file only")
                continue
            folder = self.where / name
            try:
                _mount_image(str(self.where / f"{name}.img"), folder, part.fs)
            except LifeboatError as exc:
                self.notes.append(f"{name}.img: its {fs_name(part.fs)} filesystem cannot be mounted "
                                  f"({exc.message}); the partition is offered as an image file only")
                continue
            self.mounted[part.number] = folder

    def wait(self) -> None:
        """Serve until the view is unmounted from outside (`lifeboat umount`)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def close(self) -> None:
        atexit.unregister(self.close)
        for number in sorted(self.mounted, reverse=True):
            for sub in _below(str(self.mounted[number])) + [str(self.mounted[number])]:
                if os.path.ismount(sub):
                    _detach(sub)
        self.mounted.clear()
        if self._thread is not None and str(self.where) in views():     # ours, not another's
            for sub in _below(str(self.where)):
                _detach(sub)
            _detach(str(self.where))
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._made:
            mounts.remove_mountpoint(self.where)
            self._made = False

    def __enter__(self) -> "SnapshotView":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _mount_image(image: str, folder: Path, fs: str) -> None:
    """Mount the filesystem in a partition image read-only. exfat-fuse (where the kernel has
    no exFAT) takes only block devices: it gets a read-only loop device, detached at once so
    that the kernel frees it when the filesystem is unmounted (or the view is cleaned up)."""
    try:
        mounts.mount(image, folder, fs, writable=False)
        return
    except LifeboatError:
        if fs != "exfat":
            raise
    device = loops.attach(image, read_only=True)
    try:
        mounts.mount(device, folder, fs, writable=False)
    finally:
        loops.detach(device)          # in use: the kernel only marks it to go when unmounted


def temporary_view(disk: SavedDisk, only: set[int] | None = None) -> SnapshotView:
    """A view in a fresh private folder (for `ls`, `get` and the TUI); the folder goes with it."""
    where = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    os.rmdir(where)           # the view makes it again, and removes it when it closes
    return SnapshotView(disk, where, only=only)


def _ops(view: SnapshotView):
    mfusepy = _import_mfusepy()

    class Ops(mfusepy.Operations):
        use_ns = True

        def __init__(self):
            self.dirs = {f"/{entry_name(p)}" for p, _ in view.readers.values() if browsable(p)}

        def _times(self):
            t = view.started
            return {"st_mtime": t, "st_ctime": t, "st_atime": t, "st_uid": 0, "st_gid": 0}

        def getattr(self, path, fh=None):
            if path == "/" or path in self.dirs:
                return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2, **self._times()}
            entry = view.readers.get(path)
            if entry is None:
                raise mfusepy.FuseOSError(errno.ENOENT)
            size = entry[0].size
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": size,
                    "st_blocks": (size + 511) // 512, **self._times()}

        def readdir(self, path, fh):
            if path == "/":
                return [".", ".."] + sorted([n[1:] for n in view.readers] + [d[1:] for d in self.dirs])
            if path in self.dirs:
                return [".", ".."]
            raise mfusepy.FuseOSError(errno.ENOTDIR)

        def open(self, path, flags):
            if path not in view.readers:
                raise mfusepy.FuseOSError(errno.ENOENT)
            if flags & (os.O_WRONLY | os.O_RDWR):
                raise mfusepy.FuseOSError(errno.EROFS)
            return 0

        def read(self, path, length, offset, fh):
            try:
                return view.read(path, length, offset)
            except DamageError:
                raise mfusepy.FuseOSError(errno.EIO) from None
            except KeyError:
                raise mfusepy.FuseOSError(errno.ENOENT) from None

        def statfs(self, path):
            return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 0, "f_bfree": 0, "f_bavail": 0,
                    "f_namemax": 255}

    return Ops()
