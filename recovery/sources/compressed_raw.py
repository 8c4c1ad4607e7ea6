"""Compressed raw images (`disk.img.gz`, `.dd.zst`, `.raw.xz`) as sources.

A compressed stream allows no random access, and a restore needs it before it writes anything:
the filesystems' used-block maps are read from their metadata, scattered over the disk, and a
smaller target needs the filesystem read again while it is shrunk. So the image is decompressed
once, as a stream (Python's gzip and lzma; for zstd the zstd tool, because the zstandard
package's streaming readers end a truncated stream without an error), into a sparse file in the
work directory ($LIFEBOAT_WORKDIR, else the system's temporary directory): runs of zeros are
skipped, not written, so the file takes the room of the disk's non-zero bytes. The copy is
deleted by close(). A damaged or truncated stream is refused while decompressing, before any
target is touched.
"""

from __future__ import annotations

import errno
import gzip
import lzma
import os
import tempfile
import zlib

from recovery.errors import DamageError, DiskError, NoSpaceError
from recovery.host import tools
from recovery.sources.raw import RAW_SUFFIXES, RawDiskSource
from recovery.units import human_size

BLOCK = 1024 * 1024
MAGICS = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"\xfd7zXZ\x00": "xz"}
SUFFIXES = {".gz": "gzip", ".zst": "zstd", ".xz": "xz"}


def compression_of(path: str) -> str | None:
    """"gzip", "zstd" or "xz" when `path` is a raw image compressed so (its name says a raw
    image, its first bytes the compressor); else None."""
    base, ext = os.path.splitext(path.lower())
    if ext not in SUFFIXES or not base.endswith(RAW_SUFFIXES) or not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        head = f.read(6)
    for magic, name in MAGICS.items():
        if head.startswith(magic):
            return name
    raise DamageError(f"{path} is not {SUFFIXES[ext]}-compressed, as its name says (its first bytes are wrong)")


def _stream(path: str, how: str):
    raw = open(path, "rb")
    if how == "gzip":
        return gzip.GzipFile(fileobj=raw), raw
    return lzma.LZMAFile(raw), raw


def work_dir() -> str:
    return os.environ.get("LIFEBOAT_WORKDIR") or tempfile.gettempdir()


def decompress_sparse(path: str, how: str, into: str) -> int:
    """Decompress `path` into the new file `into`, leaving holes for zero blocks; its size."""
    if how == "zstd":
        res = tools.run(["zstd", "-d", "-q", "-f", "--sparse", path, "-o", into], check=False)
        if res.returncode != 0:
            if os.path.exists(into):
                os.unlink(into)
            words = tools.last_line(res.stderr).rsplit(" : ", 1)[-1]    # zstd says "FILE : Read error ..."
            if "no space" in words.lower():
                raise NoSpaceError(f"the work directory {os.path.dirname(into)} has no room to decompress "
                                   f"{path} (set LIFEBOAT_WORKDIR to a larger place)")
            raise DamageError(f"{path} is damaged: its zstd stream fails ({words}); nothing was written")
        return os.path.getsize(into)
    stream, raw = _stream(path, how)
    size = 0
    zero = bytes(BLOCK)
    try:
        with stream, raw, open(into, "wb") as out:
            while True:
                try:
                    block = stream.read(BLOCK)
                except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
                    raise DamageError(f"{path} is damaged: its {how} stream fails after {human_size(size)} of "
                                      f"disk ({exc or 'it ends early'}); nothing was written") from exc
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
            decompress_sparse(path, how, self._copy)
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
