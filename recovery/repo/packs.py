"""Pack objects: blobs back to back, then a footer listing them. Filled through the storage's
object writer and made visible whole under packs/XX/ only when sealed, so a pack is either
whole or absent — on a local folder (rename) and on an object store (one upload) alike."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import NamedTuple

import blake3

from recovery.errors import DamageError
from recovery.repo import isal
from recovery.repo.format import (
    ENTRY,
    PACK_END_MAGIC,
    PACK_END_SEALED,
    PACK_MAGIC,
    TRAILER,
    BlobEntry,
    encode_footer,
    pack_id_of,
)
from recovery.repo.sealing import AAD_FOOTER, OVERHEAD, SealBroken, Sealer
from recovery.repo.parity import make_parity_of_pieces, parity_name
from recovery.storage.base import Storage, StorageError, UnreachableError
from recovery.storage.local import LocalStorage


class WrittenPack(NamedTuple):
    """A pack a write session sealed, with what is needed to check it was kept."""

    id: str
    digest: bytes      # BLAKE3 of every byte written to it
    size: int


def pack_name(pack_id: str) -> str:
    """A pack's object name in the repository."""
    return f"packs/{pack_id[:2]}/{pack_id}.pack"


def pack_parity_name(pack_id: str) -> str:
    """A pack's parity sidecar (format v2), beside it."""
    return parity_name(pack_name(pack_id))


def pack_objects(pack_id: str) -> list[str]:
    """Every object that belongs to a pack: whoever removes a pack removes all of them."""
    return [pack_name(pack_id), pack_parity_name(pack_id)]


def delete_pack(storage: Storage, pack_id: str) -> int:
    """Remove a pack and every object that belongs to it (its parity); the bytes removed (0 when
    it was already gone). The only place a pack is deleted, so nothing belonging to one is left.
    The pack goes first: a crash in between leaves a sidecar without its pack, never the reverse."""
    removed = 0
    for name in pack_objects(pack_id):
        try:
            size = storage.size(name)
        except FileNotFoundError:
            continue
        storage.delete(name)
        removed += size
    return removed


def pack_path(root: Path, pack_id: str) -> Path:
    """A pack's file in a repository folder on this machine."""
    return Path(root) / pack_name(pack_id)


class PackBuffer:
    """A pack's bytes kept in memory for its parity (format v2), laid out for the encoder: in
    segments of SEGMENT bytes that start on 64-byte boundaries, each a little further (a
    multiple of 64 bytes, varied by a hash of its number) from where the one before ended.

    Why: a code word's sectors lie one row (~290 KB) apart in the pack. Contiguous, they all
    sit at the same place within a 4 KiB page, and compete for the same few sets of the CPU's
    caches; that and loads straddling 64-byte lines made ISA-L's encoder take ~13-15 ms a
    64 MiB pack, against ~8.5 ms with this layout (measured: segments of 64 KiB-1 MiB without
    gaps 14-15 ms, with these gaps 8.5-12 ms, 256 KiB the best). Copying a pack's blobs in
    costs ~4 ms once the buffer has been used (~36 ms when fresh: a page fault every 4 KiB;
    bench/parity-pack), so buffers are reused (PackBuffers). A segment holds whole sectors of
    both sizes."""

    SEGMENT = 256 * 1024
    ALIGN = 64

    def __init__(self, size: int):
        # room for `size` bytes, the gaps (4032 bytes at most each) and the alignment
        self.data = bytearray(size + (size // self.SEGMENT + 1) * 64 * self.ALIGN + self.ALIGN)
        self._starts: list[int] = []
        self._skip = self._aligned(self.data)

    def _aligned(self, data: bytearray) -> int:
        """How far into `data` its first 64-byte boundary is (an array's storage stays put
        while it is not resized)."""
        with memoryview(data) as view, isal.pinned(view) as address:
            return -address % self.ALIGN

    def _grow(self, end: int) -> None:
        """Room up to `end` (a pack larger than planned): a larger array, aligned again."""
        data = bytearray(max(end + end // 4, 2 * len(self.data)))
        skip = self._aligned(data)
        used = len(self.data) - self._skip
        data[skip : skip + used] = memoryview(self.data)[self._skip :]
        self._starts = [start - self._skip + skip for start in self._starts]
        self.data, self._skip = data, skip

    def _start(self, segment: int) -> int:
        starts = self._starts
        while len(starts) <= segment:
            g = len(starts)
            gap = 0 if g == 0 else self.ALIGN * ((g * 0x9E3779B1 >> 16) % 64)
            starts.append(self._skip if g == 0 else starts[-1] + self.SEGMENT + gap)
        return starts[segment]

    def put(self, offset: int, data) -> None:
        """Copy `data` to the pack's bytes at `offset`."""
        with memoryview(data) as view:
            done, size = 0, len(view)
            while done < size:
                at = offset + done
                segment, inside = divmod(at, self.SEGMENT)
                n = min(self.SEGMENT - inside, size - done)
                where = self._start(segment) + inside
                if where + n > len(self.data):
                    self._grow(where + n)
                    where = self._start(segment) + inside
                self.data[where : where + n] = view[done : done + n]
                done += n

    def pieces(self, length: int) -> list[memoryview]:
        """The first `length` bytes of the pack, segment by segment (views: release them)."""
        view = memoryview(self.data)
        out = []
        for segment in range(-(-length // self.SEGMENT)):
            start = self._start(segment)
            out.append(view[start : start + min(self.SEGMENT, length - segment * self.SEGMENT)])
        view.release()
        return out


class PackBuffers:
    """PackBuffers reused from pack to pack within a write session: at most `most` are ever
    made. One is enough for a backup: a pack's buffer comes back as soon as its parity is made
    (~20 ms), and the blobs of the next pack written meanwhile wait as they are (PackWriter);
    a second buffer would cost ~38 ms of page faults and 74 MiB for that moment."""

    def __init__(self, size: int, most: int = 1):
        self.size = size
        self.most = most
        self._made = 0
        self._free: list[PackBuffer] = []
        self._lock = threading.Lock()

    def take(self) -> PackBuffer | None:
        """A free buffer, a new one while fewer than `most` were made, else None."""
        with self._lock:
            if self._free:
                return self._free.pop()
            if self._made >= self.most:
                return None
            self._made += 1
        return PackBuffer(self.size)

    def give(self, buffer: PackBuffer) -> None:
        with self._lock:
            self._free.append(buffer)


class PackWriter:
    """Appends blobs to one new pack; `finish()` seals it and makes it visible. With `parity`
    (format v2) `finish()` first writes the pack's parity sidecar and makes it visible before
    the pack itself. The sidecar is made from the pack's bytes in memory: those the storage's
    writer gathers anyway (an object store's, `ObjectWriter.held`), or, for a file, a copy in
    a PackBuffer from `buffers` (reused). While none is free the pieces written wait as they
    are (a blob given to `add` must not change afterwards), copied in once one is; a pack that
    never got one has its parity made from its pieces where they lie."""

    def __init__(self, storage: Storage, sealer: Sealer | None = None, parity: bool = False,
                 buffers: PackBuffers | None = None):
        self.sealer = sealer              # an encrypted repository's: the footer is sealed
        self.storage = storage
        self.parity = parity
        self._buffers = buffers if buffers is not None else PackBuffers(0)
        self.entries: list[BlobEntry] = []
        self.size = 0
        self.digest = b""                 # BLAKE3 of every byte written, set by finish()
        self._hasher = blake3.blake3()
        self._out = storage.create()
        self._kept: PackBuffer | None = None
        self._waiting: list | None = None     # pieces written while no buffer was free
        if parity and self._out.held() is None:
            self._waiting = []
        self._write(PACK_MAGIC)

    def _write(self, data) -> None:
        self._out.write(data)             # a failing writer removes what it wrote
        self._hasher.update(data)
        if self._waiting is not None:
            self._keep(data)
        self.size += len(data)

    def _keep(self, data) -> None:
        if self._kept is None:
            self._kept = self._buffers.take()
            if self._kept is None:
                # bytes and bytearrays as they are; anything else (a view of a buffer
                # someone reuses) as a copy
                self._waiting.append(data if type(data) in (bytes, bytearray) else bytes(data))
                return
            at = 0
            for piece in self._waiting:
                self._kept.put(at, piece)
                at += len(piece)
            self._waiting.clear()
        self._kept.put(self.size, data)

    def add(self, blob_id: bytes, stored: bytes, raw_len: int, kind: int, codec: int) -> BlobEntry:
        entry = BlobEntry(blob_id, self.size, len(stored), raw_len, kind, codec)
        self._write(stored)
        self.entries.append(entry)
        return entry

    def finish(self) -> tuple[str, list[BlobEntry]]:
        if self.sealer is None:
            footer = encode_footer(self.entries)
        else:
            sealed = self.sealer.seal(b"".join(e.pack() for e in self.entries), AAD_FOOTER)
            footer = sealed + TRAILER.pack(len(self.entries), 0, blake3.blake3(sealed).digest(), PACK_END_SEALED)
        self._write(footer)
        self.digest = self._hasher.digest()
        pack_id = pack_id_of(footer[: len(footer) - TRAILER.size])
        if self.parity:
            try:
                if self._kept is not None:
                    pieces = self._kept.pieces(self.size)
                elif self._waiting is not None:
                    pieces = [memoryview(piece) for piece in self._waiting]
                else:
                    pieces = [memoryview(self._out.held())[: self.size]]
                try:
                    sidecar = make_parity_of_pieces(pieces, self.digest)
                finally:
                    for piece in pieces:
                        piece.release()
                self._release()           # the next pack may take the buffer while this one is flushed
                self.storage.write(pack_parity_name(pack_id), sidecar)
            except BaseException:
                self.abort()
                raise
        self._out.commit(pack_name(pack_id))
        return pack_id, self.entries

    def _release(self) -> None:
        kept, self._kept, self._waiting = self._kept, None, None
        if kept is not None:
            self._buffers.give(kept)

    def abort(self) -> None:
        self._release()
        self._out.abort()


def parse_footer(name: str, size: int, tail: bytes, sealer: Sealer | None = None) -> list[BlobEntry] | int:
    """Check a pack's footer from the last bytes of the pack (`size` in all). Returns the
    entries, or the number of trailing bytes needed when `tail` is too short. An encrypted
    repository's footer (`sealer` given) must also open, and hash to the pack's name."""
    label = name.rpartition("/")[2]
    if size < len(PACK_MAGIC) + TRAILER.size or len(tail) < TRAILER.size:
        raise DamageError(f"pack {label} is truncated")
    count, _, digest, magic = TRAILER.unpack(tail[-TRAILER.size:])
    body_len = count * ENTRY.size + (OVERHEAD if magic == PACK_END_SEALED else 0)
    if magic not in (PACK_END_MAGIC, PACK_END_SEALED) or body_len > size - TRAILER.size - len(PACK_MAGIC):
        raise DamageError(f"pack {label} has a damaged footer")
    if (magic == PACK_END_SEALED) != (sealer is not None):
        raise DamageError(f"pack {label} is {'not ' if sealer else ''}encrypted, unlike its repository")
    if len(tail) < body_len + TRAILER.size:
        return body_len + TRAILER.size
    body = tail[len(tail) - TRAILER.size - body_len : len(tail) - TRAILER.size]
    if blake3.blake3(body).digest() != digest:
        raise DamageError(f"pack {label} has a damaged footer")
    if sealer is None:
        return BlobEntry.unpack_all(body)
    if label.endswith(".pack") and digest.hex() != label[: -len(".pack")]:
        raise DamageError(f"pack {label} holds another pack's content (its name does not match it)")
    try:
        return BlobEntry.unpack_all(sealer.open(body, AAD_FOOTER))
    except SealBroken:
        raise DamageError(f"pack {label} has a forged or altered footer (it fails authentication)") from None


# A guess at a footer's size that covers most packs in one read (1000+ blobs), so opening a
# pack on a network store costs one round trip, not two.
FOOTER_GUESS = 64 * 1024


def read_footer(where, name: str | None = None, size: int | None = None,
                sealer: Sealer | None = None) -> list[BlobEntry]:
    """Read and check a pack's footer; DamageError when it is truncated, altered or unreadable.
    `where` is a storage and `name` the pack's object name, or `where` is a pack file's path."""
    own = name is None
    if own:
        path = Path(where)
        where, name = LocalStorage(path.parent), path.name
    label = name.rpartition("/")[2]
    try:
        if size is None:
            size = where.size(name)
        want = min(size, FOOTER_GUESS)
        tail = where.read(name, size - want, want)
        got = parse_footer(name, size, tail, sealer)
        if isinstance(got, int):
            tail = where.read(name, size - got, got)
            got = parse_footer(name, size, tail, sealer)
        assert not isinstance(got, int)
        return got
    except FileNotFoundError as exc:
        raise DamageError(f"pack {label} cannot be read: it is missing") from exc
    except OSError as exc:
        raise DamageError(f"pack {label} cannot be read: {exc.strerror}") from exc
    except UnreachableError:
        raise
    except StorageError as exc:
        raise DamageError(f"pack {label} cannot be read: {exc.message}") from exc
    finally:
        if own:
            where.close()
