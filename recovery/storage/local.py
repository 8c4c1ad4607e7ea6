"""The repository in a folder on this machine (a USB drive, an internal disk, or a network
share the kernel mounted): whole objects written under tmp/, flushed, then renamed into
place, and their folder flushed, so an object is either whole or absent."""

from __future__ import annotations

import errno
import os
import threading
import time
import uuid
from pathlib import Path

import blake3

from recovery.errors import NoSpaceError, RepositoryError
from recovery.host import direct
from recovery.host.tools import pid_alive
from recovery.storage.base import (
    READ_PIECE,
    NoPermissionError,
    ObjectInfo,
    ObjectWriter,
    SampleHasher,
    Storage,
    StorageError,
    sample_spans,
)

SCRATCH = "tmp"
FULL = ("the backup destination is full; the repository is unchanged and every earlier "
        "snapshot is intact — free some space or use a larger drive")


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # some filesystems (vfat through FUSE) cannot open a directory for fsync
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def no_space(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def no_permission(exc: OSError, where: str) -> str:
    return (f"no permission to write to {where} ({exc.strerror}): check who may write there (the "
            "folder's or the share's permissions), or choose another repository")


def write_error(exc: OSError, what: str = "write to", storage: "LocalStorage | None" = None) -> Exception:
    if no_space(exc):
        return NoSpaceError(FULL)
    if storage is not None and exc.errno in storage.refusals:
        return NoPermissionError(no_permission(exc, storage.describe()))
    return StorageError(f"cannot {what} the repository: {exc.strerror}")


def placement_problem(path) -> str | None:
    """Why a new repository at `path` (an existing folder, or a new one in an existing folder)
    would not keep backups: its filesystem is read-only, or held in memory. None when fine or
    unknown."""
    where = Path(path)
    if not where.exists():
        where = where.parent
    try:
        read_only = bool(os.statvfs(where).f_flag & os.ST_RDONLY)
    except OSError:
        return None
    if read_only:
        return f"{where} is on a read-only filesystem"
    from recovery.probe.mounts import ram_backed

    try:
        ram = ram_backed(str(where))
    except OSError:
        return None
    if ram:
        return f"{where} is in memory ({ram}): everything there is lost at power-off"
    return None


def scratch_name() -> str:
    """A scratch file's name says which writer made it, so leftovers of a dead one are known."""
    return f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex}"



class FileWriter(ObjectWriter):
    def __init__(self, storage: "LocalStorage"):
        self.storage = storage
        self.tmp_path = storage.root / SCRATCH / scratch_name()
        try:
            self._fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise write_error(exc, storage=storage) from exc

    def write(self, data) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except OSError as exc:
                self.abort()
                raise write_error(exc) from exc
            view = view[n:]

    def commit(self, name: str) -> None:
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self.abort()
            raise write_error(exc, "flush") from exc
        # Drop the cached pages so the read-back check after backup reads the medium.
        direct.drop_cache(self._fd)
        os.close(self._fd)
        self._fd = -1
        try:
            self.storage._place(self.tmp_path, name)
        except OSError as exc:
            self.abort()
            raise write_error(exc, storage=self.storage) from exc

    def abort(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                os.close(fd)
            except OSError:
                pass            # a network mount flushes at close and may fail again: the write's error stands
        try:
            self.tmp_path.unlink()
        except OSError:
            pass


class LocalStorage(Storage):
    # What a folder says when this user may read it but not write there: another owner's
    # folder, an immutable one, a read-only filesystem.
    refusals = (errno.EACCES, errno.EPERM, errno.EROFS)

    def __init__(self, root: Path):
        self.root = Path(root)
        self._fds: dict[str, int] = {}
        self._fd_lock = threading.Lock()

    def describe(self) -> str:
        return str(self.root)

    def where(self, name: str) -> str:
        return str(self.root / name)

    @property
    def local_root(self) -> Path:
        return self.root

    def list(self, prefix: str) -> list[ObjectInfo]:
        folder = self.root / prefix.rpartition("/")[0]
        out = []
        for dirpath, _, files in os.walk(folder):
            rel = os.path.relpath(dirpath, self.root)
            for f in files:
                name = f if rel == "." else f"{rel}/{f}"
                if not name.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, f))
                except OSError:
                    continue
                out.append(ObjectInfo(name, st.st_size, st.st_mtime))
        return out

    def _fd(self, name: str) -> int:
        # Packs are read many times in a row: their descriptors stay open until close().
        with self._fd_lock:
            fd = self._fds.get(name)
            if fd is None:
                fd = self._fds[name] = os.open(self.root / name, os.O_RDONLY | os.O_CLOEXEC)
            return fd

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            if length is None:
                with open(self.root / name, "rb") as f:
                    f.seek(offset)
                    return f.read()
            fd = self._fd(name)
            data = os.pread(fd, length, offset)
            # A short read inside the file is what a failing drive gives for the part it read
            # before the error: ask for the rest, so the error itself is seen (and a pack that
            # really ends early still comes back short, to fail its hash).
            while 0 < len(data) < length:
                more = os.pread(fd, length - len(data), offset + len(data))
                if not more:
                    break
                data += more
            return data
        except (FileNotFoundError, IsADirectoryError):
            raise
        except OSError as exc:
            raise StorageError(f"cannot read {self.where(name)}: {exc.strerror}") from exc

    def read_into(self, name: str, offset: int, view: memoryview) -> int:
        got = 0
        try:
            fd = self._fd(name)
            while got < len(view):
                n = os.preadv(fd, [view[got:]], offset + got)
                if n <= 0:
                    break
                got += n
        except FileNotFoundError:
            raise
        except OSError as exc:
            if got:
                return got          # what was read before the error is still usable
            raise StorageError(f"cannot read {self.where(name)}: {exc.strerror}") from exc
        return got

    def size(self, name: str) -> int:
        try:
            return os.stat(self.root / name).st_size
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageError(f"cannot read {self.where(name)}: {exc.strerror}") from exc

    def _place(self, tmp: Path, name: str) -> None:
        final = self.root / name
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        fsync_dir(final.parent)

    def write(self, name: str, data: bytes) -> None:
        writer = FileWriter(self)
        writer.write(data)
        writer.commit(name)

    atomic_create = True                 # O_EXCL

    def write_new(self, name: str, data: bytes) -> bool:
        path = self.root / name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise write_error(exc, storage=self) from exc
        try:
            os.write(fd, data)
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise write_error(exc) from exc
        os.close(fd)
        return True

    # -- the folder itself, when a repository is made or opened ------------------------
    def check_new(self, config_name: str) -> None:
        path = self.root
        if (path / config_name).exists():
            raise RepositoryError(f"{self.describe()} already holds a Lifeboat repository")
        if path.exists() and not path.is_dir():
            raise RepositoryError(f"{self.describe()} exists and is not a folder")
        if path.exists() and any(path.iterdir()):
            raise RepositoryError(f"{self.describe()} is not empty; choose an empty or new folder")
        if not path.exists():
            # Only the last folder is made: a missing parent is more often a typing mistake or
            # an unplugged drive.
            parent = path.parent
            if not parent.exists():
                raise RepositoryError(f"cannot create {path}: the folder {parent} does not exist "
                                      "(Lifeboat creates only the last folder; check the path, or create it first)")
            if not parent.is_dir():
                raise RepositoryError(f"cannot create {path}: {parent} is not a folder")

    def place_problem(self) -> str | None:
        return placement_problem(self.root)

    def make_folders(self, names) -> None:
        try:
            self.root.mkdir(exist_ok=True)
            for name in names:
                (self.root / name).mkdir(exist_ok=True)
            fsync_dir(self.root)
        except OSError as exc:
            if exc.errno in self.refusals:
                raise RepositoryError(f"cannot create a repository: {no_permission(exc, self.describe())}") from exc
            raise RepositoryError(f"cannot create a repository at {self.describe()}: {exc.strerror}") from exc

    def missing_folders(self, names) -> list[str]:
        return [name for name in names if not (self.root / name).is_dir()]

    def check_present(self, config_name: str) -> None:
        if not self.root.exists():
            raise RepositoryError(f"no repository at {self.describe()}: the folder does not exist")
        if not (self.root / config_name).exists():
            raise RepositoryError(f"{self.describe()} is not a Lifeboat repository (no {config_name})")

    def remove_folder(self, prefix: str) -> None:
        try:
            os.rmdir(self.root / prefix)
        except OSError:
            pass                    # not empty (another writer) or already gone

    def create(self) -> FileWriter:
        return FileWriter(self)

    def delete(self, name: str) -> None:
        with self._fd_lock:
            fd = self._fds.pop(name, None)
        if fd is not None:
            os.close(fd)
        try:
            (self.root / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot delete {self.where(name)}: {exc.strerror}") from exc

    def free_space(self) -> int | None:
        # Some FUSE drivers report zero blocks in all: that says nothing.
        st = os.statvfs(self.root)
        if st.f_blocks == 0:
            return None
        return st.f_bavail * st.f_frsize

    def _read_back_pieces(self, name: str, spans):
        """(offset, bytes) pieces of the spans [(offset, length or None for the rest)] of an
        object, read with O_DIRECT where the filesystem allows it (no page-cache copy, no stale
        cached page: what the medium holds), buffered elsewhere; each piece is valid until the
        next one."""
        path = str(self.root / name)
        fd = direct.open_direct(path)
        is_direct = fd is not None
        if fd is None:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        buf = direct.aligned_buffer(READ_PIECE)
        try:
            for start, length in spans:
                pos, end = start, None if length is None else start + length
                while end is None or pos < end:
                    want = READ_PIECE if end is None else min(READ_PIECE, -(-(end - pos) // 4096) * 4096)
                    try:
                        n = os.preadv(fd, [buf[:want]], pos)
                    except OSError as exc:
                        if not (is_direct and direct.refused(exc)):
                            raise
                        os.close(fd)
                        fd, is_direct = os.open(path, os.O_RDONLY | os.O_CLOEXEC), False
                        continue
                    if n <= 0:
                        break
                    n = n if end is None else min(n, end - pos)
                    yield pos, buf[:n]
                    pos += n
        finally:
            os.close(fd)
            buf.release()

    def read_back(self, name: str, size: int | None = None) -> tuple[bytes, bytes]:
        hasher = blake3.blake3()
        samples = None
        for pos, piece in self._read_back_pieces(name, [(0, None)]):
            if samples is None:
                samples = SampleHasher(sample_spans(self.size(name) if size is None else size))
            hasher.update(piece)
            samples.feed(pos, piece)
        return hasher.digest(), (samples or SampleHasher([])).digest()

    def read_back_samples(self, name: str, size: int) -> bytes:
        hasher = blake3.blake3()
        for _, piece in self._read_back_pieces(name, sample_spans(size)):
            hasher.update(piece)
        return hasher.digest()

    def scratch_clean(self, keep=None) -> None:
        """Remove scratch files of writers that are gone: made on this host by a process that
        no longer runs, or (from another host, or in an older naming) untouched for a day."""
        host = os.uname().nodename
        try:
            entries = list(os.scandir(self.root / SCRATCH))
        except OSError:
            return
        for entry in entries:
            maker, _, rest = entry.name.rpartition("-")[0].rpartition("-")
            try:
                pid = int(rest)
            except ValueError:
                pid = None
            if maker == host and pid is not None:
                stale = not pid_alive(pid)
            else:
                try:
                    stale = time.time() - entry.stat().st_mtime > 24 * 3600 or pid is None
                except OSError:
                    continue
            if stale:
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass

    def close(self) -> None:
        with self._fd_lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
