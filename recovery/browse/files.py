"""Listing a mounted saved filesystem and copying files out of it.

    list_dir(path) -> [Entry]            folders first, then files, by name (case-insensitive)
    copy_out(sources, dest, ...) -> CopyResult

copy_out copies files and folders (recursively) into `dest`, keeping modification times and
holes (a run of zeros is skipped, not written, so sparse files stay sparse). What the
destination cannot hold is handled file by file, never by stopping:

- a name it refuses (`:` or `?` on FAT/exFAT/NTFS, a trailing dot, a reserved name like CON,
  more than 255 bytes) is renamed to one it takes and listed (old -> new);
- a file that cannot be read (a damaged chunk of the backup reads as an I/O error, or the
  repository's drive went away) is listed with the reason, its partial copy removed, and
  the rest copied on;
- symbolic links are copied as links where the destination has them, else listed as skipped;
  hard links become separate copies.

Only a full destination stops the copy (NoSpaceError), with the partial file removed. When
the repository itself stops answering (`lost()` names why: its drive was pulled out), the copy
stops after the file that failed, which is removed and listed; `stopped` says why, and what
comes after it in the walk is not attempted.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from recovery.errors import DiskError, NoSpaceError, NotFoundError
from recovery.events import CancelToken, EventSink, Meter, ignore
from recovery.probe.mounts import mount_holding

BLOCK = 1024 * 1024
_ZEROS = bytes(BLOCK)
# Filesystems that hold only Windows-legal names (fuseblk is ntfs-3g's and exfat-fuse's).
WINDOWS_NAMES = {"vfat", "msdos", "exfat", "ntfs", "ntfs3", "fuseblk", "fuse.fusefat"}
_BAD_CHARS = set('<>:"\\|?*') | {chr(c) for c in range(32)}
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str              # "dir", "file", "link", "other"
    size: int
    mtime: float
    target: str = ""       # a link's target

    def to_json(self) -> dict:
        out = {"name": self.name, "type": self.kind, "size": self.size, "mtime": self.mtime}
        if self.kind == "link":
            out["target"] = self.target
        return out


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


def entry_of(path: Path) -> Entry:
    st = os.lstat(path)
    kind = _kind(st.st_mode)
    return Entry(path.name, kind, st.st_size if kind == "file" else 0, st.st_mtime,
                 os.readlink(path) if kind == "link" else "")


def locate(root: Path, path: str, shown: str) -> Path:
    """`path` (absolute inside the filesystem mounted at `root`); NotFoundError when it is not
    there. Symbolic links are not followed out of the saved filesystem."""
    full = root.joinpath(*[p for p in path.split("/") if p and p != "."])
    if ".." in path.split("/") or not os.path.lexists(full):
        raise NotFoundError(f"{shown} is not in the snapshot")
    return full


def list_dir(path: Path) -> list[Entry]:
    """A folder's entries, folders first; an entry that cannot be looked at is left out."""
    out = []
    with os.scandir(path) as it:
        for e in it:
            try:
                out.append(entry_of(Path(e.path)))
            except OSError:
                continue
    return sorted(out, key=lambda e: (e.kind != "dir", e.name.casefold(), e.name))


# ----------------------------------------------------------------------------- names


def windows_name(name: str) -> str:
    """A name FAT, exFAT and NTFS accept, as close to `name` as possible."""
    new = "".join("_" if c in _BAD_CHARS else c for c in name).rstrip(" .")
    if not new:
        new = "_"
    if new.split(".")[0].upper() in _RESERVED:
        new = "_" + new
    return new


def short_enough(name: str, limit: int = 255) -> str:
    """Cut a name to `limit` bytes of UTF-8 (Linux) and 255 UTF-16 units (Windows), keeping
    its extension."""
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 16:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    while len(stem.encode()) + len(suffix.encode()) > limit or len(stem) + len(suffix) > 255:
        stem = stem[:-1]
    return stem + suffix


# ----------------------------------------------------------------------------- copying


@dataclass
class CopyResult:
    destination: str
    files: int = 0
    bytes: int = 0
    folders: int = 0
    renamed: list[tuple[str, str]] = field(default_factory=list)      # (saved path, path written)
    unreadable: list[tuple[str, str]] = field(default_factory=list)   # (saved path, why)
    skipped: list[tuple[str, str]] = field(default_factory=list)      # (saved path, why)
    stopped: str | None = None       # why the copy ended early (the repository could not be read)

    @property
    def partial(self) -> bool:
        return bool(self.unreadable) or self.stopped is not None

    def to_json(self) -> dict:
        return {"destination": self.destination, "files": self.files, "bytes": self.bytes,
                "folders": self.folders,
                "renamed": [{"from": a, "to": b} for a, b in self.renamed],
                "unreadable": [{"path": a, "error": b} for a, b in self.unreadable],
                "skipped": [{"path": a, "why": b} for a, b in self.skipped],
                "partial": self.partial, "stopped": self.stopped}


def total_bytes(sources: list[Path]) -> int:
    """Bytes of regular files under `sources` (what the progress counts)."""
    total = 0
    for src in sources:
        if src.is_symlink() or not src.is_dir():
            total += os.lstat(src).st_size if src.is_file() and not src.is_symlink() else 0
            continue
        for dirpath, _dirs, files in os.walk(src):
            for f in files:
                try:
                    st = os.lstat(os.path.join(dirpath, f))
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


class _Copier:
    def __init__(self, root: Path, dest: Path, meter: Meter, cancel: CancelToken, result: CopyResult,
                 lost: Callable[[], str | None]):
        self.root, self.meter, self.cancel, self.result, self.lost = root, meter, cancel, result, lost
        m = mount_holding(str(dest))
        self.windows = m is not None and m.fstype in WINDOWS_NAMES

    def shown(self, src: Path) -> str:
        try:
            return "/" + str(src.relative_to(self.root))
        except ValueError:
            return str(src)

    def place(self, folder: Path, name: str, src: Path, taken: set[str]) -> Path:
        """Where `name` goes in `folder`: renamed (and listed) when the destination would
        refuse it or it would clash, case-insensitively, with a name already copied there."""
        new = windows_name(name) if self.windows else name
        new = short_enough(new)
        key = new.casefold() if self.windows else new
        if key in taken:
            stem, dot, ext = new.rpartition(".")
            stem, ext = (stem, dot + ext) if dot and stem else (new, "")
            n = 2
            while (f"{stem} ({n}){ext}".casefold() if self.windows else f"{stem} ({n}){ext}") in taken:
                n += 1
            new = f"{stem} ({n}){ext}"
            key = new.casefold() if self.windows else new
        taken.add(key)
        target = folder / new
        if new != name:
            self.result.renamed.append((self.shown(src), str(target)))
        return target

    def copy(self, src: Path, target: Path) -> None:
        self.cancel.check()
        if self.result.stopped is not None:
            return
        try:
            st = os.lstat(src)
        except OSError as exc:
            self.result.unreadable.append((self.shown(src), exc.strerror or str(exc)))
            return
        if stat.S_ISDIR(st.st_mode):
            self.copy_dir(src, target, st)
        elif stat.S_ISREG(st.st_mode):
            self.copy_file(src, target, st)
        elif stat.S_ISLNK(st.st_mode):
            try:
                os.symlink(os.readlink(src), target)
            except OSError as exc:
                self.result.skipped.append((self.shown(src), f"a symbolic link, which the destination "
                                                             f"cannot hold ({exc.strerror})"))
        else:
            self.result.skipped.append((self.shown(src), "a special file (device, pipe or socket)"))

    def copy_dir(self, src: Path, target: Path, st) -> None:
        try:
            names = sorted(os.listdir(src))
        except OSError as exc:
            self.result.unreadable.append((self.shown(src) + "/", exc.strerror or str(exc)))
            return
        target = self.make(src, target, lambda t: (t.mkdir(exist_ok=True), t)[1])
        self.result.folders += 1
        taken: set[str] = set()
        for name in names:
            self.copy(src / name, self.place(target, name, src / name, taken))
        _keep_times(target, st)

    def copy_file(self, src: Path, target: Path, st) -> None:
        try:
            fin = os.open(src, os.O_RDONLY)
        except OSError as exc:
            self.result.unreadable.append((self.shown(src), exc.strerror or str(exc)))
            return
        written = 0
        try:
            fout, target = self.make(src, target, lambda t: (os.open(t, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), t))
            try:
                for start, end in _data_regions(fin, st.st_size):
                    pos = start
                    while pos < end:
                        self.cancel.check()
                        try:
                            block = os.pread(fin, min(BLOCK, end - pos), pos)
                        except OSError as exc:
                            raise _Unreadable(exc.strerror or str(exc)) from exc
                        if not block:
                            break
                        if not (len(block) == BLOCK and block == _ZEROS):   # zeros stay a hole
                            try:
                                os.pwrite(fout, block, pos)
                            except OSError as exc:
                                self._write_failed(exc, target)
                        pos += len(block)
                        written += len(block)
                        self.meter.add(len(block))
                self.meter.add(st.st_size - written)     # the holes
                written = st.st_size
                try:
                    os.ftruncate(fout, st.st_size)
                except OSError as exc:
                    self._write_failed(exc, target)
            finally:
                os.close(fout)
        except _Unreadable as exc:
            _remove(target)
            self.meter.add(st.st_size - written)
            self.result.unreadable.append((self.shown(src), f"{exc} (the copy was removed)"))
            self.result.stopped = self.lost()
            return
        except BaseException:
            _remove(target)
            raise
        finally:
            os.close(fin)
        _keep_times(target, st)
        self.result.files += 1
        self.result.bytes += written

    def make(self, src: Path, target: Path, create):
        """create(target); when the destination refuses the name itself (a character or a
        length its filesystem does not take), once more under a safe name, listed as renamed."""
        try:
            return create(target)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EILSEQ, errno.ENAMETOOLONG):
                self._write_failed(exc, target)
        safe = target.with_name(short_enough(windows_name(target.name), 200))
        try:
            out = create(safe)
        except OSError as exc:
            self._write_failed(exc, safe)
        self.result.renamed = [r for r in self.result.renamed if r[0] != self.shown(src)]
        self.result.renamed.append((self.shown(src), str(safe)))
        return out

    def _write_failed(self, exc: OSError, target: Path):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise NoSpaceError(f"the destination is full: {target} could not be written "
                               f"(the partial copy was removed; what was copied before it is complete)") from exc
        raise DiskError(f"cannot write {target}: {exc.strerror}") from exc


class _Unreadable(Exception):
    pass


def _data_regions(fd: int, size: int):
    """(start, end) of the parts of a file that hold data; its holes are skipped (SEEK_DATA),
    or the whole file where the filesystem cannot tell."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        except OSError as exc:
            if exc.errno == errno.ENXIO:          # nothing but a hole after pos
                return
            yield pos, size
            return
        if end <= start:
            yield start, size
            return
        yield start, end
        pos = end


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _keep_times(path: Path, st) -> None:
    try:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    except OSError:
        pass


def copy_out(sources: list[Path], root: Path, dest: Path, *, on_event: EventSink = ignore,
             cancel: CancelToken | None = None, total: int | None = None,
             lost: Callable[[], str | None] = lambda: None) -> CopyResult:
    """Copy `sources` (paths inside the filesystem mounted at `root`) into the existing folder
    `dest`, each under its own name (renamed where the destination needs it). `lost()`, asked
    after a file fails to read, says why the repository cannot be read any more, or None."""
    dest = Path(dest)
    result = CopyResult(str(dest))
    meter = Meter("copy", total_bytes(sources) if total is None else total, on_event)
    copier = _Copier(root, dest, meter, cancel or CancelToken(), result, lost)
    taken = {n.casefold() if copier.windows else n for n in os.listdir(dest)}
    for src in sources:
        name = src.name or "root"
        copier.copy(src, copier.place(dest, name, src, taken))
    meter.finish()
    return result
