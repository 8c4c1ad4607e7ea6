"""What the repository needs from the place it lives: a flat namespace of whole objects.

Every backend (a local folder, an S3 bucket, an SFTP server) offers the same few calls, with
object names that use "/" as the separator ("packs/ab/ab12….pack"). Objects are written whole
and atomically (a reader sees all of an object or none of it) and never appended to, because
object stores cannot append or rename; the repository's crash consistency rests on that and
on the order objects appear (docs/FORMAT.md, "Writers and crash consistency").

Errors: a missing object raises FileNotFoundError; anything else the backend cannot do raises
StorageError (one plain line, saying what to fix), or NoSpaceError when the place is full.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import blake3

from recovery.errors import RepositoryError

READ_PIECE = 4 * 1024 * 1024
# A read-back check done while a backup still writes is repeated, after the last write, on
# one SAMPLE_BLOCK of every SAMPLE_STRIDE bytes of each object (and its last block): a drive
# that wraps around overwrites earlier data with later writes, which the samples see.
SAMPLE_BLOCK = 4096
SAMPLE_STRIDE = 1024 * 1024


def sample_spans(size: int, stride: int = SAMPLE_STRIDE, block: int = SAMPLE_BLOCK) -> list[tuple[int, int]]:
    """The (offset, length) blocks of an object of `size` bytes the late check re-reads:
    one at each multiple of `stride`, and the last (partial) block; offsets block-aligned."""
    spans = [(off, min(block, size - off)) for off in range(0, size, stride)]
    last = (size - 1) // block * block if size else 0
    if size and spans[-1][0] != last:
        spans.append((last, size - last))
    return spans


class SampleHasher:
    """BLAKE3 of an object's sample blocks, fed the object's pieces in order while it is read
    whole (so the first read-back also records what the samples must read later)."""

    def __init__(self, spans: list[tuple[int, int]]):
        self._spans = spans
        self._next = 0
        self._hasher = blake3.blake3()

    def feed(self, pos: int, piece) -> None:
        end = pos + len(piece)
        while self._next < len(self._spans):
            off, n = self._spans[self._next]
            if off + n > end:
                if off < end:         # a block split across two pieces: take its first part now
                    self._hasher.update(piece[off - pos:])
                    self._spans[self._next] = (end, off + n - end)
                return
            self._hasher.update(piece[max(off, pos) - pos : off + n - pos])
            self._next += 1

    def digest(self) -> bytes:
        return self._hasher.digest()


class StorageError(RepositoryError):
    """The storage cannot be reached or refuses an operation (network, permission, ...)."""


class SetupError(StorageError):
    """Wrong before any server is asked (no credentials given): the network plays no part."""


class NoPermissionError(StorageError):
    """The server is reached and lets us in, but refuses to read or write the repository's
    place: its message says which, where and what to fix (complete; callers pass it on)."""


class UnreachableError(StorageError):
    """The server stopped answering and did not come back in time. Never a sign of damage:
    whoever reads blobs lets it through instead of marking anything damaged. `head` is what
    happened ("the S3 server … stopped answering …; gave up after 300 s"), for a caller that
    says itself what that leaves behind (a restore: an incomplete disk)."""

    def __init__(self, message: str, head: str | None = None):
        super().__init__(message)
        self.head = head or message


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    size: int
    mtime: float     # seconds since the epoch, as the backend reports it


class ObjectWriter(ABC):
    """A new object being filled; it becomes visible only at `commit(name)` (the name can be
    chosen at the end: a pack's name is the hash of its footer)."""

    @abstractmethod
    def write(self, data) -> None: ...

    @abstractmethod
    def commit(self, name: str) -> None: ...

    @abstractmethod
    def abort(self) -> None: ...

    def held(self) -> bytearray | None:
        """The bytes written so far when the writer gathers them in memory, else None (a file's
        are on their way to the drive). Read-only, and only until the next write or commit:
        a pack's parity is made from them instead of from a copy."""
        return None


class BufferWriter(ObjectWriter):
    """For places with no partial objects (object stores) or where a write must be repeatable
    whole after a dropped connection (network mounts): the object is gathered in memory and
    handed to `storage.write` at commit."""

    def __init__(self, storage: "Storage"):
        self.storage = storage
        self.buf = bytearray()

    def write(self, data) -> None:
        self.buf += data

    def commit(self, name: str) -> None:
        try:
            self.storage.write(name, self.buf)
        finally:
            self.buf = bytearray()

    def held(self) -> bytearray:
        return self.buf

    def abort(self) -> None:
        self.buf = bytearray()


class Storage(ABC):
    # Requests a backend handles well at once (reads of several packs, uploads): the local
    # folder gains nothing past a few, a network store hides its round trip behind many.
    parallelism = 4
    remote = False      # reached over a network: worth caching what never changes
    # Objects share one device's offsets, so a later write can overwrite an earlier object (a
    # drive smaller than it claims wraps around): the backup's late check re-reads samples.
    # An object store keeps each object apart: there the late check only asks for its size.
    shared_offsets = True

    @abstractmethod
    def describe(self) -> str:
        """Where this is, for messages: never any secret."""

    def where(self, name: str) -> str:
        """One object's place, for messages."""
        return f"{self.describe().rstrip('/')}/{name}"

    @abstractmethod
    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose name starts with `prefix` (at any depth), in no set order."""

    @abstractmethod
    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """`length` bytes at `offset` (fewer at the end of the object); all of it when None."""

    def read_into(self, name: str, offset: int, view: memoryview) -> int:
        """Fill `view` from `offset`; returns the bytes read (fewer at the end)."""
        data = self.read(name, offset, len(view))
        view[: len(data)] = data
        return len(data)

    @abstractmethod
    def size(self, name: str) -> int: ...

    def exists(self, name: str) -> bool:
        try:
            self.size(name)
        except FileNotFoundError:
            return False
        return True

    @abstractmethod
    def write(self, name: str, data: bytes) -> None:
        """Make object `name` hold `data`, atomically (replacing an older one)."""

    # Whether write_new() is atomic (a folder: O_EXCL). Where it is not, a caller that must be
    # alone reads the object back to learn who won.
    atomic_create = False

    def write_new(self, name: str, data: bytes) -> bool:
        """Create `name` only if it does not exist; False when it does. Object stores without
        conditional writes check first, which leaves a short window: callers (locks) check
        for each other again after writing."""
        if self.exists(name):
            return False
        self.write(name, data)
        return True

    def remove_folder(self, prefix: str) -> None:
        """Remove the folder `prefix` when it is empty (object stores have none)."""

    # -- the place itself, when a repository is made or opened -------------------------
    def check_new(self, config_name: str) -> None:
        """Refuse a place for a new repository that holds anything (RepositoryError)."""
        if self.exists(config_name):
            raise RepositoryError(f"{self.describe()} already holds a Lifeboat repository")
        if self.list(""):
            raise RepositoryError(f"{self.describe()} is not empty; choose an empty or new place")

    def place_problem(self) -> str | None:
        """Why a new repository here would not keep backups (read-only, in memory), or None."""
        return None

    def make_folders(self, names) -> None:
        """Make the place and its folders `names` for a new repository (object stores have none)."""

    def missing_folders(self, names) -> list[str]:
        """Those of the folders `names` a repository here lacks (object stores have none)."""
        return []

    def check_present(self, config_name: str) -> None:
        """RepositoryError when there is no repository here (no configuration object)."""
        if not self.exists(config_name):
            raise RepositoryError(f"{self.describe()} is not a Lifeboat repository (no {config_name}); "
                                  "check the location, or create one with: lifeboat repo init")

    @abstractmethod
    def create(self) -> ObjectWriter:
        """A writer for a large object filled piece by piece (a pack)."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove an object; no error when it is already gone."""

    def free_space(self) -> int | None:
        """Bytes that can still be written, or None when the backend does not say."""
        return None

    def read_back_digest(self, name: str) -> bytes:
        """BLAKE3 of an object's bytes as the storage returns them now (read-back check)."""
        return self.read_back(name)[0]

    def read_back(self, name: str, size: int | None = None) -> tuple[bytes, bytes]:
        """BLAKE3 of an object's bytes as the storage returns them now, and BLAKE3 of its
        sample blocks (`sample_spans` of `size`, the size it was written with) among them."""
        hasher = blake3.blake3()
        samples = SampleHasher(sample_spans(self.size(name) if size is None else size))
        pos = 0
        while True:
            piece = self.read(name, pos, READ_PIECE)
            if not piece:
                break
            hasher.update(piece)
            samples.feed(pos, piece)
            pos += len(piece)
        return hasher.digest(), samples.digest()

    def read_back_samples(self, name: str, size: int) -> bytes:
        """BLAKE3 of the sample blocks of an object written with `size` bytes, read now."""
        hasher = blake3.blake3()
        for off, n in sample_spans(size):
            hasher.update(self.read(name, off, n))
        return hasher.digest()

    def scratch_clean(self, keep) -> None:
        """Drop leftovers of writers that died (only places that keep scratch files have any);
        `keep(info)` says whether a leftover may still belong to a live writer."""

    @property
    def local_root(self):
        """The folder on this machine when the storage is one (pathlib.Path), else None."""
        return None

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def storage_failure(exc: BaseException) -> str | None:
    """Why the repository's storage failed to read, when that is what lies under a damaged
    read (an I/O error: a drive pulled out or failing); None for a chunk that is missing or
    fails its hash, which is damage in the repository itself."""
    while exc is not None:
        if isinstance(exc, StorageError):
            return exc.message
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
            return exc.strerror or str(exc)
        exc = exc.__cause__
    return None
