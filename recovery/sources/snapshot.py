"""A Lifeboat snapshot as a source: its repository's manifest, chunk tables and blobs.

    source = SnapshotSource(repo, repo.load_manifest(sid))
    source.prove()                  # every chunk read once, decoded and hashed (verify.prove_blobs)
    for piece in source.pieces(2):  # one piece per chunk window, its chunk id as digest
        ...

The chunk tables and used ranges are read once, when the source is made (a restore's plan
needs them to count and place what it writes). With `salvage`, a partition whose chunk list
cannot be read is listed in `unreadable` instead of refusing; after prove() the damaged chunks
are known and their pieces come out marked `damaged` (a restore writes zeros there).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import replace

from recovery.chunking import used_windows, window_length
from recovery.errors import DamageError, RefusedError
from recovery.events import CancelToken, EventSink, Progress
from recovery.repo.format import ID_SIZE
from recovery.repo.manifest import Manifest, PartitionImage
from recovery.repo.ranges import SpanReader
from recovery.repo.repository import Repository
from recovery.sources.base import Damage, Piece, Source, SourcePartition
from recovery.verify import chunk_table, prove_blobs, table_ids, used_ranges
from recovery.workers import ordered_map

def _unread() -> bytes:
    raise AssertionError("a piece made only to be checked against the target is never fetched")


DEDUP_CACHE = 8         # decoded chunks extents() keeps: runs of identical windows decode once
# Stored bytes of chunks a restore from a network repository reads ahead per batch: its spans
# (ranges.SPAN each) are in flight at once, enough to hide a round trip of tens of ms at
# hundreds of MB/s; two batches are in memory at most.
AHEAD_BYTES = 48 * 1024 * 1024


class SnapshotSource(Source):
    kind = "Lifeboat snapshot"
    salvageable = True

    def __init__(self, repo: Repository, manifest: Manifest, *, salvage: bool = False):
        self.repo = repo
        self.fetchers = repo.storage.parallelism if repo.storage.remote else None
        self.manifest = manifest
        self.id = manifest.id
        self.name = manifest.name
        self.created = manifest.created
        self.layout = manifest.layout
        self.chunk_size = manifest.chunk_size
        self.repository_id = str(repo.config.get("id", ""))
        self.location = repo.location        # for people: a folder, or a network location without secrets
        self.partitions = [SourcePartition(p.number, p.start, p.size, p.fs, p.label, p.uuid, p.used_bytes, p.whole)
                           for p in manifest.partitions]
        self.tables, unreadable = _load_tables(repo, manifest, salvage)
        self.unreadable = frozenset(unreadable)
        self.bad: set[bytes] = set()         # chunk ids prove() found missing or damaged

    def on_disk(self) -> str | None:
        local = self.repo.local_path
        return str(local) if local is not None else None

    def refresh(self) -> None:
        self.repo.reload_index()

    @contextmanager
    def reading(self, purpose: str):
        # The shared lock keeps a prune away while this reads; one may have run between the
        # plan and now, so the snapshot must still be there (refresh() then finds its packs).
        with self.repo.reading(purpose):
            if self.id not in self.repo.snapshot_ids():
                raise RefusedError(f"snapshot {self.id[:8]} was removed from the repository (forget) after "
                                   f"the {purpose} was planned; nothing was written")
            yield

    def image(self, number: int) -> PartitionImage:
        return next(p for p in self.manifest.partitions if p.number == number)

    def title(self) -> str:
        return f"snapshot {self.id[:8]}"

    def needed_blobs(self) -> set[bytes]:
        """Every chunk a restore reads: the partitions' data and the boot areas."""
        wanted = {bytes.fromhex(a.blob) for a in self.manifest.boot_areas}
        for _, table in self.tables.values():
            wanted.update(bid for _, bid in table_ids(table))
        return wanted

    def proof_size(self) -> tuple[int | None, int]:
        index = self.repo.index
        wanted = self.needed_blobs()
        return len(wanted), sum(loc.stored_len for bid in wanted if (loc := index.get(bid)) is not None)

    def boot_areas(self) -> list[tuple[int, bytes]]:
        """The saved boot areas; one proven damaged is left out (salvage)."""
        return [(a.offset, self.repo.read_blob(bid)) for a in self.manifest.boot_areas
                if (bid := bytes.fromhex(a.blob)) not in self.bad]

    def boot_area_count(self) -> int:
        return len(self.manifest.boot_areas)

    def reader(self, number: int):
        from recovery.repo.reader import PartitionReader

        return PartitionReader(self.repo, self.image(number), self.chunk_size)

    def pieces(self, number: int, on_target: Callable[[Piece], bool] | None = None) -> Iterator[Piece]:
        if number in self.unreadable:
            return
        if self.fetchers is not None:
            yield from self._pieces_ahead(number, on_target)
            return
        for w, subs, bid in self._windows(number):
            yield self._piece(number, w, subs, bid, lambda bid=bid: self.repo.read_blob(bid))

    def _windows(self, number: int) -> Iterator[tuple[int, list, bytes]]:
        ranges, table = self.tables[number]
        for w, subs in used_windows(ranges, self.partition(number).size, self.chunk_size):
            yield w, subs, bytes(table[w * ID_SIZE : (w + 1) * ID_SIZE])

    def _piece(self, number: int, w: int, subs, bid: bytes, read: Callable[[], bytes]) -> Piece:
        size, cs = self.partition(number).size, self.chunk_size
        return Piece(w * cs, window_length(w, size, cs), tuple(subs), self._fetcher(number, w, read),
                     digest=bid, damaged=bid in self.bad, digest_of=self.repo.blob_id)

    def _pieces_ahead(self, number: int, on_target: Callable[[Piece], bool] | None) -> Iterator[Piece]:
        """A network repository's pieces, their chunks read in spans of a pack (ranges): the
        windows are taken in batches of about AHEAD_BYTES stored, the spans of the next batch
        are read while the pieces of this one are written, so two batches at most are in
        memory. On a local folder the chunk-by-chunk path is as fast (the page cache reads
        ahead) and keeps its memory at a few chunks. With `on_target` (a resumed restore),
        each batch's pieces are checked against the target first, on every core, and the
        chunks of those already there are not read at all."""
        ahead = SpanReader(self.repo, self.fetchers)
        checks = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="on-target") if on_target else None
        index = self.repo.index
        try:
            planned: deque = deque()
            windows = self._windows(number)
            done = False
            while True:
                while not done and len(planned) < 2:
                    batch, stored = [], 0
                    for w, subs, bid in windows:
                        batch.append((w, subs, bid))
                        if bid not in self.bad and (loc := index.get(bid)) is not None:
                            stored += loc.stored_len
                        if stored >= AHEAD_BYTES:
                            break
                    else:
                        done = True
                    if batch:
                        there: set[int] = set()
                        if checks is not None:
                            probes = [self._piece(number, w, subs, bid, _unread) for w, subs, bid in batch]
                            there = {w for (w, _, _), yes in zip(batch, checks.map(on_target, probes)) if yes}
                        planned.append((batch, there, ahead.plan(bid for w, _, bid in batch
                                                                 if bid not in self.bad and w not in there)))
                if not planned:
                    return
                batch, there, where = planned.popleft()
                for w, subs, bid in batch:
                    piece = self._piece(number, w, subs, bid, lambda bid=bid, at=where.get(bid): ahead.blob(bid, at))
                    yield piece if checks is None else replace(piece, present=w in there)
        except GeneratorExit:         # the restore stopped (an error, cancelled): drop the reads ahead
            ahead.close(cancel=True)
            raise
        finally:
            ahead.close()
            if checks is not None:
                checks.shutdown(wait=False, cancel_futures=True)

    def _fetcher(self, number: int, w: int, read: Callable[[], bytes]) -> Callable[[], bytes]:
        def fetch() -> bytes:
            try:
                return read()
            except DamageError as exc:   # proven a moment ago: the repository's drive is failing now
                raise DamageError(f"partition {number}: the chunk at byte {w * self.chunk_size} cannot be "
                                  f"read any more ({exc.message})") from exc
        return fetch

    def extents(self, number: int) -> Iterator[tuple[int, bytes]]:
        """Chunks decoded on every core, in order; a chunk repeated in nearby windows (zeros,
        copies) is decoded once."""
        cache: OrderedDict[bytes, bytes] = OrderedDict()
        lock = threading.Lock()

        def decode(piece: Piece):
            with lock:
                data = cache.get(piece.digest)
            if data is None:
                data = piece.fetch()
                with lock:
                    cache[piece.digest] = data
                    while len(cache) > DEDUP_CACHE:
                        cache.popitem(last=False)
            return piece, data

        for piece, data in ordered_map(decode, self.pieces(number), CancelToken()):
            view = memoryview(data)
            for off, n in piece.subs:
                yield piece.offset + off, bytes(view[off : off + n])

    def prove(self, on_progress: Callable[[int, int], None] | None = None) -> list[Damage]:
        """Every chunk read once, decoded and hashed (on every core); the damage in plain words."""
        def sink(event):
            if on_progress is not None and isinstance(event, Progress):
                on_progress(event.done, event.total)
        return self.prove_events(sink, CancelToken())

    def prove_events(self, sink: EventSink, cancel: CancelToken) -> list[Damage]:
        self.bad = prove_blobs(self.repo, self.needed_blobs(), on_event=sink, cancel=cancel)
        return self.damage()

    def damage(self) -> list[Damage]:
        """What the last prove() found, where it sits: unreadable chunk lists, the first damaged
        window of each partition (and how many more), the boot areas."""
        out = [Damage(n, 0, self.partition(n).size, f"partition {n}: its chunk list")
               for n in sorted(self.unreadable)]
        cs = self.chunk_size
        for part in self.partitions:
            if part.number not in self.tables:
                continue
            table = self.tables[part.number][1]
            windows = [w for w, bid in table_ids(table) if bid in self.bad]
            if windows:
                first = windows[0] * cs
                more = f" and {len(windows) - 1} more MiB-window(s)" if len(windows) > 1 else ""
                name = "the whole-disk filesystem" if part.number == 0 else f"partition {part.number}"
                out.append(Damage(part.number, first, cs, f"{name}, bytes {first}-{first + cs - 1}{more}"))
        for a in self.manifest.boot_areas:
            if bytes.fromhex(a.blob) in self.bad:
                out.append(Damage(None, a.offset, a.size, "the boot areas"))
                break
        return out

    def describe(self) -> list[str]:
        return [f"Lifeboat snapshot {self.id[:8]} of {self.name}, saved {self.created}"]


def _load_tables(repo: Repository, manifest: Manifest, salvage: bool) -> tuple[dict, set[int]]:
    """(partition -> (used ranges, chunk table), partitions whose chunk list is unreadable).
    Without salvage, an unreadable chunk list refuses the restore before anything is written."""
    tables, unreadable = {}, set()
    for part in manifest.partitions:
        try:
            tables[part.number] = (used_ranges(repo, part), chunk_table(repo, part))
        except DamageError as exc:
            if not salvage:
                raise DamageError(f"snapshot {manifest.id[:8]} is damaged: partition {part.number}: its chunk "
                                  f"list is unreadable ({exc.message}); nothing was written to the target") from exc
            unreadable.add(part.number)
    return tables, unreadable
