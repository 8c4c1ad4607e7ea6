"""Compressed raw images (`disk.img.gz`, `.dd.zst`, `.raw.xz`, `.img.bz2`, `.img.lz4`, split
into `.aa .ab ...` pieces or not) as sources.

A compressed stream allows no random access, and a restore needs it before it writes anything:
the filesystems' used-block maps are read from their metadata, scattered over the disk, and a
smaller target needs the filesystem read again while it is shrunk. So the image is decompressed
once, through the one stream decoder every image format shares (recovery.sources.compressed:
pieces joined, each codec's cut or damaged stream named by piece), into a sparse file in the
work directory ($LIFEBOAT_WORKDIR, else the system's temporary directory): runs of zeros are
skipped, not written, so the file takes the room of the disk's non-zero bytes. The copy is
deleted by close(). A damaged or truncated stream is refused while decompressing, before any
target is touched.
"""

from __future__ import annotations

import errno
import os
import tempfile

from recovery.errors import DamageError, DiskError, NoSpaceError
from recovery.sources import compressed
from recovery.sources.raw import RAW_SUFFIXES, RawDiskSource

BLOCK = 1024 * 1024
SUFFIXES = {".gz": "gzip", ".zst": "zstd", ".xz": "xz", ".bz2": "bzip2", ".lz4": "lz4", ".lzo": "lzop",
            ".lzma": "lzma"}


def compression_of(path: str) -> str | None:
    """The compressor ("gzip", "zstd", "xz", "bzip2", "lz4", "lzop", "lzma") when `path` is a
    raw image compressed so, whole or one of its split pieces (its name says a raw image, its
    first bytes the compressor); else None. DamageError for a missing piece or wrong bytes."""
    whole = os.path.join(os.path.dirname(path), compressed.image_name(path))    # without ".aa"
    stem, ext = os.path.splitext(whole.lower())
    if ext not in SUFFIXES or not stem.endswith(RAW_SUFFIXES):
        return None
    if not (os.path.isfile(path) or os.path.isfile(whole + ".aa")):
        return None
    first = compressed.piece_paths(path)[0]
    with open(first, "rb") as f:
        head = f.read(16)
    found = next((name for magic, name in compressed.MAGICS if head.startswith(magic)), None)
    if found is None and SUFFIXES[ext] == "lzma" and head[:1] == b"\x5d":
        found = "lzma"                  # the old .lzma format has no magic number
    if found is None:
        raise DamageError(f"{path} is not {SUFFIXES[ext]}-compressed, as its name says (its first bytes are wrong)")
    return found


def work_dir() -> str:
    return os.environ.get("LIFEBOAT_WORKDIR") or tempfile.gettempdir()


def decompress_sparse(path: str, into: str) -> int:
    """Decompress `path` (and its following pieces) into the new file `into`, leaving holes
    for zero blocks; its size."""
    size = 0
    zero = bytes(BLOCK)
    try:
        with compressed.Stream(path) as stream, open(into, "wb") as out:
            while True:
                block = stream.read(BLOCK)
                if not block:
                    break
                if block == zero[: len(block)]:
                    out.seek(len(block), os.SEEK_CUR)
                else:
                    try:
                        out.write(block)
                    except OSError as exc:
                        if exc.errno == errno.ENOSPC:
                            raise NoSpaceError(f"the work directory {os.path.dirname(into)} has no room to "
                                               f"decompress {path} (set LIFEBOAT_WORKDIR to a larger place)") from exc
                        raise DiskError(f"cannot decompress {path} into {into}: {exc.strerror}") from exc
                size += len(block)
            out.truncate(size)
    except BaseException:
        os.unlink(into)
        raise
    return size


class CompressedRawSource(RawDiskSource):
    def __init__(self, path: str, how: str):
        fd, self._copy = tempfile.mkstemp(prefix="lifeboat-", suffix=".raw", dir=work_dir())
        os.close(fd)
        self.compression = how
        try:
            decompress_sparse(path, self._copy)
            super().__init__(self._copy, kind=f"{how}-compressed raw disk image", shown=path)
        except BaseException:
            if os.path.exists(self._copy):
                os.unlink(self._copy)
            raise

    def close(self) -> None:
        super().close()
        if os.path.exists(self._copy):
            os.unlink(self._copy)


def open_compressed(path: str) -> CompressedRawSource | None:
    how = compression_of(path)
    return None if how is None else CompressedRawSource(path, how)
