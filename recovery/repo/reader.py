"""Random access to one saved partition: its bytes as they were, read from the repository.

    reader = PartitionReader(repo, part, manifest.chunk_size)
    reader.size                      # the partition's size in bytes
    reader.read(offset, length)      # bytes; zeros where nothing was stored

Windows with no used byte (NO_DATA in the chunk table) read as zeros, and inside a stored
window unused bytes are already zero (recovery/chunking.py), so the chunk table alone gives
every byte: the used ranges are loaded only when someone asks for them (`used_ranges()`).
Chunks are fetched with ``repo.read_blob`` (hash-checked: damage raises DamageError) and
kept decoded in a small LRU cache bounded in bytes, not in proportion to the partition.
Safe to call from several threads at once (a FUSE server, a browser's workers).

Reading one window after another (a file copied out, a filesystem tool scanning) starts
decoding the next window on a helper thread while the caller uses this one, so fetching,
hash-checking and decompressing (all in C, outside the GIL) overlap with the reader's own
work. Random reads start nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

from recovery.chunking import window_count, window_length
from recovery.errors import DamageError
from recovery.repo.format import ID_SIZE, NO_DATA
from recovery.repo.locations import SnapshotBlobs
from recovery.repo.manifest import PartitionImage, decode_ranges
from recovery.repo.repository import Repository
from recovery.verify import chunk_table, used_ranges

DEFAULT_CACHE_BYTES = 8 * 1024 * 1024


class PartitionReader:
    def __init__(self, repo: Repository, part: PartitionImage, chunk_size: int,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, blobs: SnapshotBlobs | None = None):
        self.repo = repo
        self.part = part
        self.size = part.size
        self.chunk_size = chunk_size
        # With `blobs`, the snapshot's recorded locations lead to its blobs (no index read).
        self.blobs = blobs
        self._table = blobs.chunk_table(part) if blobs is not None else chunk_table(repo, part)
        if len(self._table) < window_count(part.size, chunk_size) * ID_SIZE:
            raise DamageError(f"partition {part.number}: its chunk table is shorter than the partition")
        self._ranges: list[tuple[int, int]] | None = None
        # At least two windows, so a read straddling a window boundary never evicts its own half.
        self._cache_limit = max(cache_bytes // chunk_size, 2)
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._last = -2                              # the window read last (readahead follows it)
        self._ahead: dict[int, Future] = {}          # windows being decoded ahead of the reader
        self._pool: ThreadPoolExecutor | None = None

    def used_ranges(self) -> list[tuple[int, int]]:
        """(offset, length) of every used byte range, sorted (loaded on first use)."""
        if self._ranges is None:
            if self.blobs is not None:
                self._ranges = decode_ranges(self.blobs.ranges(self.part))
            else:
                self._ranges = used_ranges(self.repo, self.part)
        return self._ranges

    def window_stored(self, w: int) -> bool:
        return self._table[w * ID_SIZE : (w + 1) * ID_SIZE] != NO_DATA

    def _window(self, w: int) -> bytes | None:
        """The decoded bytes of window `w`, or None when it holds nothing (all zero)."""
        bid = bytes(self._table[w * ID_SIZE : (w + 1) * ID_SIZE])
        if bid == NO_DATA:
            return None
        with self._lock:
            sequential = w == self._last + 1
            if w != self._last:
                self._last = w
            data = self._cache.get(w)
            if data is not None:
                self._cache.move_to_end(w)
            pending = self._ahead.get(w) if data is None else None
        if sequential:
            self._read_ahead(w + 1)
        if data is not None:
            return data
        if pending is not None:
            try:
                return pending.result()
            except DamageError:
                pass                      # said again, in the reader's own words, below
        return self._load(w, bid)

    def _load(self, w: int, bid: bytes) -> bytes:
        # Decoding happens outside the lock: two threads asking for the same window at the
        # same moment each decode it once, which costs less than serialising every reader.
        try:
            if self.blobs is not None:
                data = self.blobs.chunk(self.part.number, w, bid)
            else:
                data = self.repo.read_blob(bid)
        except DamageError as exc:
            raise DamageError(f"partition {self.part.number}: the chunk at byte {w * self.chunk_size} "
                              f"is damaged ({exc.message})") from exc
        want = window_length(w, self.size, self.chunk_size)
        if len(data) != want:
            raise DamageError(f"partition {self.part.number}: the chunk at byte {w * self.chunk_size} "
                              f"holds {len(data)} bytes instead of {want}")
        with self._lock:
            self._cache[w] = data
            self._cache.move_to_end(w)
            while len(self._cache) > self._cache_limit:
                self._cache.popitem(last=False)
        return data

    def _read_ahead(self, w: int) -> None:
        if w * ID_SIZE >= len(self._table) or not self.window_stored(w):
            return
        with self._lock:
            if w in self._cache or w in self._ahead:
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="lifeboat-readahead")
            bid = bytes(self._table[w * ID_SIZE : (w + 1) * ID_SIZE])
            future = self._pool.submit(self._load, w, bid)
            self._ahead[w] = future
        future.add_done_callback(lambda _f, w=w: self._forget(w))

    def _forget(self, w: int) -> None:
        with self._lock:
            self._ahead.pop(w, None)

    def read(self, offset: int, length: int) -> bytes:
        """`length` bytes at `offset` of the saved partition (fewer only past its end)."""
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        cs = self.chunk_size
        first, last = offset // cs, (end - 1) // cs
        if first == last:
            data = self._window(first)
            lo = offset - first * cs
            return bytes(end - offset) if data is None else data[lo : lo + end - offset]
        out = bytearray(end - offset)
        for w in range(first, last + 1):
            data = self._window(w)
            if data is None:
                continue
            w_start = w * cs
            lo, hi = max(offset, w_start), min(end, w_start + len(data))
            out[lo - offset : hi - offset] = data[lo - w_start : hi - w_start]
        return bytes(out)
