"""Pack files: blobs back to back, then a footer listing them. Written under tmp/, fsynced,
then renamed into packs/XX/ so a pack is either whole or absent."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import NamedTuple

from recovery.errors import DamageError, NoSpaceError, RepositoryError
from recovery.host import direct
from recovery.repo.format import (
    ENTRY,
    PACK_END_MAGIC,
    PACK_MAGIC,
    TRAILER,
    BlobEntry,
    encode_footer,
    pack_id_of,
)

import blake3


class WrittenPack(NamedTuple):
    """A pack a write session sealed, with what is needed to check it was kept."""

    id: str
    digest: bytes      # BLAKE3 of every byte written to it
    size: int


def pack_path(root: Path, pack_id: str) -> Path:
    return root / "packs" / pack_id[:2] / f"{pack_id}.pack"


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


class PackWriter:
    """Appends blobs to one pack under tmp/; `finish()` seals it and moves it into place."""

    def __init__(self, root: Path, tmp_name: str):
        self.root = root
        self.tmp_path = root / "tmp" / tmp_name
        self.entries: list[BlobEntry] = []
        self.size = 0
        self.digest = b""                 # BLAKE3 of every byte written, set by finish()
        self._hasher = blake3.blake3()
        self._fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._write(PACK_MAGIC)

    def _write(self, data) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except OSError as exc:
                self.abort()
                if no_space(exc):
                    raise NoSpaceError(
                        "the backup destination is full; the repository is unchanged and every "
                        "earlier snapshot is intact — free some space or use a larger drive"
                    ) from exc
                raise RepositoryError(f"cannot write to the repository: {exc.strerror}") from exc
            self._hasher.update(view[:n])
            view = view[n:]
            self.size += n

    def add(self, blob_id: bytes, stored: bytes, raw_len: int, kind: int, codec: int) -> BlobEntry:
        entry = BlobEntry(blob_id, self.size, len(stored), raw_len, kind, codec)
        self._write(stored)
        self.entries.append(entry)
        return entry

    def finish(self) -> tuple[str, list[BlobEntry]]:
        footer = encode_footer(self.entries)
        self._write(footer)
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self.abort()
            raise RepositoryError(f"cannot flush the repository: {exc.strerror}") from exc
        # Drop the cached pages so the read-back check after backup reads the medium.
        os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(self._fd)
        self._fd = -1
        self.digest = self._hasher.digest()
        pack_id = pack_id_of(footer[: len(footer) - TRAILER.size])
        final = pack_path(self.root, pack_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp_path, final)
        fsync_dir(final.parent)
        return pack_id, self.entries

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            self.tmp_path.unlink()
        except FileNotFoundError:
            pass


def read_footer(path: Path) -> list[BlobEntry]:
    """Read and check a pack's footer; DamageError when it is truncated or altered."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size < len(PACK_MAGIC) + TRAILER.size:
                raise DamageError(f"pack {path.name} is truncated")
            f.seek(size - TRAILER.size)
            count, _, digest, magic = TRAILER.unpack(f.read(TRAILER.size))
            body_len = count * ENTRY.size
            if magic != PACK_END_MAGIC or body_len > size - TRAILER.size - len(PACK_MAGIC):
                raise DamageError(f"pack {path.name} has a damaged footer")
            f.seek(size - TRAILER.size - body_len)
            body = f.read(body_len)
    except OSError as exc:
        raise DamageError(f"pack {path.name} cannot be read: {exc.strerror}") from exc
    if blake3.blake3(body).digest() != digest:
        raise DamageError(f"pack {path.name} has a damaged footer")
    return BlobEntry.unpack_all(body)


READ_PIECE = 4 * 1024 * 1024


def file_digest(path: Path) -> bytes:
    """BLAKE3 of a file's bytes as the medium returns them: read with O_DIRECT where the
    filesystem allows it (no page-cache copy, no stale cached page), buffered elsewhere."""
    fd = direct.open_direct(str(path))
    is_direct = fd is not None
    if fd is None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    hasher = blake3.blake3()
    buf = direct.aligned_buffer(READ_PIECE)
    pos = 0
    try:
        while True:
            try:
                n = os.preadv(fd, [buf], pos)
            except OSError as exc:
                if not (is_direct and direct.refused(exc)):
                    raise
                os.close(fd)
                fd, is_direct = os.open(path, os.O_RDONLY | os.O_CLOEXEC), False
                continue
            if n <= 0:
                break
            hasher.update(buf[:n])
            pos += n
    finally:
        os.close(fd)
        buf.release()
    return hasher.digest()
