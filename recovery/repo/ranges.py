"""Many blobs in few reads: the blobs wanted are grouped by pack, sorted by offset, and
neighbours merged into one ranged read of a pack (a span) while the gap of unwanted bytes
between two of them stays small and the span short enough to hold in memory.

    spans, missing, total = coalesce(repo.index, ids, gap=GAP, limit=SPAN)

    ahead = SpanReader(repo, workers=16)     # a network repository: spans read ahead
    where = ahead.plan(ids)                 # {blob id: (its span, its location)}, the reads started
    raw = ahead.blob(bid, where.get(bid))   # waits for that span, decodes, checks the id
    ahead.close()

Over a network each request waits a round trip and costs the server a request's work: a
restore that asked for each chunk alone spent most of its time waiting. A SpanReader keeps
several span reads in flight (a thread each) so their round trips overlap; whoever asks for a
blob decodes it (on its own thread) and checks it against its id as every read does.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable

from recovery.errors import DamageError, LifeboatError
from recovery.repo.packs import pack_name
from recovery.storage.base import UnreachableError

GAP = 256 * 1024            # unwanted bytes read across rather than split a span (less than a round trip's worth)
SPAN = 4 * 1024 * 1024      # a span's longest: a few MiB per request, many requests in flight


@dataclass
class Span:
    pack_id: str
    start: int
    length: int
    members: list = field(default_factory=list)    # [(blob id, location)] sorted by offset
    read: Future | None = None                       # -> the span's bytes (fewer when the pack is short)


def coalesce(index, ids: Iterable[bytes], gap: int = GAP, limit: int = SPAN) -> tuple[list[Span], set[bytes], int]:
    """The wanted blobs as spans sorted by pack and offset; also the ids the index does not
    know, and the stored bytes the wanted blobs take. A span grows while the next blob starts
    at most `gap` bytes after the last one ends and the span stays within `limit` bytes (a
    single blob longer than `limit` is a span of its own)."""
    by_pack: dict[str, list] = defaultdict(list)
    missing: set[bytes] = set()
    total = 0
    for bid in set(ids):
        loc = index.get(bid)
        if loc is None:
            missing.add(bid)
        else:
            by_pack[loc.pack_id].append((loc.offset, bid, loc))
            total += loc.stored_len
    spans: list[Span] = []
    for pack_id in sorted(by_pack):
        span: Span | None = None
        for offset, bid, loc in sorted(by_pack[pack_id], key=lambda b: b[0]):
            stop = offset + loc.stored_len
            end = span.start + span.length if span else 0
            if span is None or offset - end > gap or stop - span.start > limit:
                span = Span(pack_id, offset, loc.stored_len)
                spans.append(span)
            else:
                span.length = max(end, stop) - span.start
            span.members.append((bid, loc))
    return spans, missing, total


class SpanReader:
    """Span reads of one repository on `workers` threads, started when planned."""

    def __init__(self, repo, workers: int):
        self.repo = repo
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="span")

    def plan(self, ids: Iterable[bytes]) -> dict[bytes, tuple]:
        """Start reading the spans holding `ids`; each known id mapped to its span and location (an id the
        index does not know is left out: blob() of it falls back to the repository's read,
        which names it missing)."""
        spans, _, _ = coalesce(self.repo.index, ids)
        out: dict[bytes, tuple] = {}
        for span in spans:
            span.read = self.pool.submit(self._read, span)
            for bid, loc in span.members:
                out[bid] = (span, loc)
        return out

    def _read(self, span: Span) -> bytes:
        return self.repo.storage.read(pack_name(span.pack_id), span.start, span.length)

    def blob(self, bid: bytes, where: tuple | None) -> bytes:
        """The raw content of blob `bid` from its span, checked against its id. A span that
        could not be read, or a blob in it that fails its check, is read again by the
        repository's own path (which repairs from parity, or says what is damaged); a server
        that went away is said as such."""
        if where is not None:
            span, loc = where
            try:
                data = span.read.result()
            except UnreachableError:
                raise
            except (OSError, LifeboatError, CancelledError):    # cancelled: the reader was stopped
                data = None
            if data is not None:
                lo = loc.offset - span.start
                if lo + loc.stored_len <= len(data):
                    try:
                        return self.repo.decode(bid, memoryview(data)[lo : lo + loc.stored_len],
                                                loc.raw_len, loc.codec, loc.kind)
                    except DamageError:
                        pass
        return self.repo.read_blob(bid)

    def close(self, cancel: bool = False) -> None:
        """No more plans; the reads started run on for the pieces still to be decoded, unless
        `cancel` (nobody will ask for them: the reads not yet begun are dropped)."""
        self.pool.shutdown(wait=False, cancel_futures=cancel)
