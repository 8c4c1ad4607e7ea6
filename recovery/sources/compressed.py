"""One image file as a sequential byte stream: split pieces joined, compression undone.

Clonezilla and partclone users store an image as one file or as pieces `NAME.aa`, `NAME.ab`,
... (GNU split's suffixes), compressed by gzip/pigz, zstd/zstdmt, xz/pixz, bzip2/pbzip2, lz4
or lzop. The parallel compressors write several concatenated members or frames, so every
decoder here keeps going across member boundaries. gzip, bzip2, xz and zstd decode in this
process (stdlib and zstandard); lz4 and lzop through Debian's own tools (recovery.host.filters),
streaming, since no well-kept Python binding for lzop exists.

Everything that goes wrong names the piece: a gap in the suffixes ("piece X.ab is missing"),
a stream that stops before its compressed data ends ("X.ac ends early"), bytes the decoder
refuses ("X.ab: the zstd data is damaged").
"""

from __future__ import annotations

import bz2
import itertools
import lzma
import os
import queue
import re
import string
import threading
import zlib
from collections.abc import Iterator

import zstandard

from recovery.errors import DamageError, UsageError
from recovery.host import filters

READ_BYTES = 1024 * 1024

# Magic numbers at the start of each compressed format, and the name people know it by.
MAGICS = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"\x89LZO\x00\r\n\x1a\n", "lzop"),
)
_SUFFIX = re.compile(r"\.([a-z]{2,})$")


def split_suffixes() -> Iterator[str]:
    """GNU split's suffixes in order: aa..yz, then zaaa..zyzz, then zzaaaa, ... (it lengthens
    the suffix once the first letter would reach z, so the names still sort in order)."""
    letters = string.ascii_lowercase
    prefix = ""
    width = 2
    while True:
        for combo in itertools.product(letters, repeat=width):
            suffix = "".join(combo)
            if suffix[0] == "z":
                break
            yield prefix + suffix
        prefix += "z"
        width += 1


def piece_paths(path: str) -> list[str]:
    """The files that make up the image at `path`: itself when it exists whole, else its
    split pieces in order. `path` may name the image without a suffix or any one piece.
    DamageError when a piece in the sequence is missing; UsageError when nothing is there."""
    if os.path.isfile(path) and not _is_piece(path):
        return [path]
    base = path[:-len(_SUFFIX.search(path).group(0))] if _is_piece(path) else path
    folder, stem = os.path.split(base)
    try:
        names = os.listdir(folder or ".")
    except OSError as exc:
        raise UsageError(f"cannot read the folder {folder or '.'}: {exc.strerror}") from exc
    found = {n[len(stem) + 1:] for n in names
             if n.startswith(stem + ".") and is_split_suffix(n[len(stem) + 1:])}
    if not found:
        if os.path.isfile(path):
            return [path]
        raise UsageError(f"{path}: no such image file")
    pieces = []
    for suffix in split_suffixes():
        if not found:
            break
        if suffix not in found:
            raise DamageError(f"piece {os.path.basename(base)}.{suffix} is missing")
        found.discard(suffix)
        pieces.append(f"{base}.{suffix}")
    return pieces


def is_split_suffix(suffix: str) -> bool:
    """True for the suffixes split_suffixes() yields: k leading z's, then 2+k letters not
    starting with z."""
    k = len(suffix) - len(suffix.lstrip("z"))
    rest = suffix[k:]
    return suffix.isascii() and suffix.islower() and len(rest) == 2 + k and rest.isalpha()


def _is_piece(path: str) -> bool:
    """A split piece: a split suffix after a name whose first piece (.aa) exists. ("x.gz" is a
    whole file, though "gz" is also a split suffix: there is no "x.aa".)"""
    match = _SUFFIX.search(path)
    return bool(match) and is_split_suffix(match.group(1)) and \
        os.path.isfile(path[:match.start()] + ".aa")


def image_name(path: str) -> str:
    """The image's name without its piece suffix: what messages call it."""
    return os.path.basename(path[:-len(_SUFFIX.search(path).group(0))] if _is_piece(path) else path)


class JoinedPieces:
    """The pieces read one after the other as one file (sequential only)."""

    def __init__(self, paths: list[str]):
        self.paths = paths
        self.index = -1
        self.file = None
        self.bytes_read = 0
        self._next()

    def _next(self) -> bool:
        if self.file:
            self.file.close()
            self.file = None
        self.index += 1
        if self.index >= len(self.paths):
            return False
        try:
            self.file = open(self.paths[self.index], "rb", buffering=0)
        except FileNotFoundError:
            raise DamageError(f"piece {os.path.basename(self.paths[self.index])} is missing") from None
        except OSError as exc:
            raise DamageError(f"cannot read {os.path.basename(self.paths[self.index])}: {exc.strerror}") from exc
        return True

    @property
    def where(self) -> str:
        """The piece being read: what a message about damage names."""
        return os.path.basename(self.paths[min(max(self.index, 0), len(self.paths) - 1)])

    def read(self, n: int) -> bytes:
        while self.file is not None:
            try:
                data = self.file.read(n)
            except OSError as exc:
                raise DamageError(f"cannot read {self.where}: {exc.strerror}") from exc
            if data:
                self.bytes_read += len(data)
                return data
            if not self._next():
                break
        return b""

    def total_size(self) -> int:
        return sum(os.path.getsize(p) for p in self.paths)

    def close(self) -> None:
        if self.file:
            self.file.close()
            self.file = None


class Stream:
    """The decoded bytes of an image file, read in order. read(n) returns n bytes, fewer only
    at the end of the data."""

    def __init__(self, path: str):
        self.paths = piece_paths(path)
        self.name = image_name(path)
        self.raw = JoinedPieces(self.paths)
        head = self.raw.read(16)
        self.compression = next((name for magic, name in MAGICS if head.startswith(magic)), "none")
        if self.compression == "none" and ".lzma" in self.name and head[:1] == b"\x5d":
            self.compression = "lzma"       # the old .lzma format has no magic number
        self._prefetch: Prefetch | None = None
        self._chunks = self._decode(head)
        self._current: bytes = b""     # the decoded chunk being handed out, from _pos on
        self._pos = 0
        self.position = 0           # decoded bytes handed out so far

    @property
    def where(self) -> str:
        return self.raw.where

    @property
    def compressed_done(self) -> int:
        return self.raw.bytes_read

    def _raw_chunks(self, head: bytes) -> Iterator[bytes]:
        if head:
            yield head
        while True:
            data = self.raw.read(READ_BYTES)
            if not data:
                return
            yield data

    def _decode(self, head: bytes) -> Iterator[bytes]:
        raw = self._raw_chunks(head)
        if self.compression == "none":
            return raw
        if self.compression in ("lz4", "lzop"):
            return self._through_tool(raw)
        # zstandard, zlib, bz2 and lzma let go of the GIL while they work: decoding in a thread
        # of its own overlaps it with the checking and writing done by the reader.
        self._prefetch = Prefetch(self._in_process(raw))
        return iter(self._prefetch)

    def _new_decoder(self):
        if self.compression == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self.compression == "bzip2":
            return bz2.BZ2Decompressor()
        if self.compression == "xz":
            return lzma.LZMADecompressor()
        if self.compression == "lzma":
            return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE)
        return zstandard.ZstdDecompressor().decompressobj()

    def _in_process(self, raw: Iterator[bytes]) -> Iterator[bytes]:
        decoder = self._new_decoder()
        ended = False               # the current member/frame reached its end
        for data in raw:
            while data:
                if ended:
                    # Parallel compressors concatenate members; padding zeros may follow the last.
                    if not data.strip(b"\x00"):
                        break
                    decoder, ended = self._new_decoder(), False
                try:
                    out = decoder.decompress(data)
                except (zlib.error, OSError, lzma.LZMAError, EOFError, zstandard.ZstdError) as exc:
                    raise DamageError(f"{self.where}: the {self.compression} data is damaged ({exc})") from None
                if out:
                    yield out
                if decoder.eof:
                    ended = True
                    data = decoder.unused_data
                else:
                    data = b""
        if not ended:
            raise DamageError(f"{self.where} ends early: the image is cut short or a later piece is missing")

    def _through_tool(self, raw: Iterator[bytes]) -> Iterator[bytes]:
        tool = ["lz4", "-dc"] if self.compression == "lz4" else ["lzop", "-dc"]
        with filters.Filter(tool, raw) as proc:
            while True:
                out = proc.read(READ_BYTES)
                if not out:
                    break
                yield out
            failure = proc.finish()
        if failure:
            # The tools say "damaged" in their own words (lz4: "Error 66 : Decompression error",
            # lzop: "checksum error", "data error", "header corrupted"); anything else after the
            # whole input was fed (lz4's "Unfinished stream", lzop's stale errno) is a stream
            # that stopped short.
            damaged = any(w in failure.lower() for w in ("checksum", "data error", "corrupt",
                                                         "decompression error", "invalid", "bad"))
            if not damaged:
                raise DamageError(f"{self.where} ends early: the image is cut short or a later piece "
                                  f"is missing ({failure})")
            raise DamageError(f"{self.where}: the {self.compression} data is damaged ({failure})")

    def read(self, n: int) -> bytes:
        parts = []
        need = n
        while need > 0:
            if self._pos >= len(self._current):
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._current, self._pos = chunk, 0
            take = min(need, len(self._current) - self._pos)
            if take == len(self._current) and self._pos == 0 and not parts and take == need:
                self._pos = take            # a whole chunk asked for: no copy
                self.position += take
                return bytes(self._current) if not isinstance(self._current, bytes) else self._current
            parts.append(memoryview(self._current)[self._pos:self._pos + take])
            self._pos += take
            need -= take
        out = b"".join(parts)
        self.position += len(out)
        return out

    def read_exact(self, n: int, what: str) -> bytes:
        data = self.read(n)
        if len(data) != n:
            raise DamageError(f"{self.where} ends early ({what}): the image is cut short "
                              "or a later piece is missing")
        return data

    def close(self) -> None:
        if self._prefetch is not None:
            self._prefetch.close()
        close = getattr(self._chunks, "close", None)
        if close:
            close()
        self.raw.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Prefetch:
    """Runs an iterator in a thread of its own, a few items ahead of the consumer; its
    exceptions come out of the consumer's next()."""

    DEPTH = 4

    def __init__(self, source: Iterator[bytes]):
        self._queue: queue.Queue = queue.Queue(self.DEPTH)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source,), daemon=True)
        self._thread.start()

    def _run(self, source: Iterator[bytes]) -> None:
        try:
            for item in source:
                while not self._stop.is_set():
                    try:
                        self._queue.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    break
            else:
                self._put(("end", None))
                return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(("error", exc))
            return
        finally:
            close = getattr(source, "close", None)
            if close and self._stop.is_set():
                close()

    def _put(self, entry) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[bytes]:
        while True:
            kind, value = self._queue.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
