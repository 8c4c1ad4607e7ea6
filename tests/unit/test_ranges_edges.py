"""Range coalescing for restores (recovery/repo/ranges.py): which blobs share one ranged read
(the gap and the span's cap at each side of their bounds, blobs nested or out of order, one
read per pack at least), and SpanReader on a real repository folder: the bytes of every blob
from its span, and the repository's own read (which repairs from parity) when a span failed,
came back short or held damage, or was dropped by a cancel; a server gone is said as such."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from recovery.errors import DamageError
from recovery.repo import ranges
from recovery.repo.format import KIND_DATA
from recovery.repo.index import Location
from recovery.repo.ranges import GAP, SPAN, Span, SpanReader, coalesce
from recovery.repo.repository import Repository
from recovery.storage.base import StorageError, UnreachableError
from recovery.storage.local import LocalStorage

KiB = 1024


class Places:
    """Locations given by hand (coalesce only asks an index `get`)."""

    def __init__(self, places: dict[bytes, Location]):
        self.places = places

    def get(self, bid: bytes) -> Location | None:
        return self.places.get(bid)


def at(pack: str, offset: int, length: int) -> Location:
    return Location(pack, offset, length, length, KIND_DATA, 0)


def bid(n: int) -> bytes:
    return n.to_bytes(32, "big")


def shape(spans: list[Span]) -> list[tuple[str, int, int, list[bytes]]]:
    return [(s.pack_id, s.start, s.length, [b for b, _ in s.members]) for s in spans]


def test_neighbours_merge_while_the_gap_and_the_span_stay_within_their_bounds():
    # 100-byte blobs in pack "p": gaps of 10 (merge), 11 (split) with gap=10; the span capped at 330.
    places = {bid(1): at("p", 0, 100), bid(2): at("p", 110, 100), bid(3): at("p", 221, 100),
              bid(4): at("p", 321, 9), bid(5): at("p", 330, 1)}
    spans, missing, total = coalesce(Places(places), [bid(5), bid(3), bid(1), bid(2), bid(4)], gap=10, limit=109)
    # limit 109: 1+2 would be 210 long: each alone; 3+4 is 109 long exactly: one; 5 would make it 110.
    assert shape(spans) == [("p", 0, 100, [bid(1)]), ("p", 110, 100, [bid(2)]),
                            ("p", 221, 109, [bid(3), bid(4)]), ("p", 330, 1, [bid(5)])]
    assert missing == set() and total == 310
    spans, _, _ = coalesce(Places(places), places, gap=10, limit=1000)
    assert shape(spans) == [("p", 0, 210, [bid(1), bid(2)]), ("p", 221, 110, [bid(3), bid(4), bid(5)])]
    spans, _, _ = coalesce(Places(places), places, gap=11, limit=331)
    assert shape(spans) == [("p", 0, 331, [bid(1), bid(2), bid(3), bid(4), bid(5)])]
    # Touching (gap 0) merges; a gap of 1 with gap=0 splits.
    spans, _, _ = coalesce(Places(places), [bid(4), bid(5), bid(3)], gap=0, limit=1000)
    assert shape(spans) == [("p", 221, 110, [bid(3), bid(4), bid(5)])]
    apart = {bid(1): at("p", 0, 10), bid(2): at("p", 11, 10)}
    assert shape(coalesce(Places(apart), apart, gap=0)[0]) == [("p", 0, 10, [bid(1)]), ("p", 11, 10, [bid(2)])]
    assert shape(coalesce(Places(apart), apart, gap=1)[0]) == [("p", 0, 21, [bid(1), bid(2)])]


def test_a_blob_longer_than_the_cap_is_a_span_of_its_own_and_nested_blobs_keep_the_end():
    places = {bid(1): at("p", 0, 50), bid(2): at("p", 50, 500), bid(3): at("p", 550, 10),
              bid(4): at("p", 560, 100), bid(5): at("p", 570, 20), bid(6): at("p", 575, 85)}
    spans, _, total = coalesce(Places(places), places, gap=0, limit=200)
    # 5 and 6 lie inside 4 (a blob stored twice in one pack reads once): the span keeps 4's end.
    assert shape(spans) == [("p", 0, 50, [bid(1)]), ("p", 50, 500, [bid(2)]),
                            ("p", 550, 110, [bid(3), bid(4), bid(5), bid(6)])]
    assert total == 50 + 500 + 10 + 100 + 20 + 85


def test_spans_are_per_pack_in_pack_order_and_unknown_ids_are_named():
    places = {bid(1): at("b", 0, 10), bid(2): at("a", 10, 10), bid(3): at("c", 5, 10), bid(4): at("a", 0, 10)}
    spans, missing, total = coalesce(Places(places), [bid(1), bid(2), bid(9), bid(3), bid(4), bid(8), bid(1)])
    assert shape(spans) == [("a", 0, 20, [bid(4), bid(2)]), ("b", 0, 10, [bid(1)]), ("c", 5, 10, [bid(3)])]
    assert [loc for _, loc in spans[0].members] == [places[bid(4)], places[bid(2)]]
    assert missing == {bid(8), bid(9)} and total == 40             # an id asked twice counts once
    assert all(s.read is None for s in spans)
    assert coalesce(Places({}), []) == ([], set(), 0)
    # Blobs of one pack at the same offsets in another pack never share its span.
    two = {bid(1): at("a", 0, 10), bid(2): at("b", 10, 10)}
    assert shape(coalesce(Places(two), two)[0]) == [("a", 0, 10, [bid(1)]), ("b", 10, 10, [bid(2)])]


def test_the_default_gap_and_cap():
    # What a restore reads across (256 KiB of unwanted bytes) and its longest read (4 MiB).
    assert (GAP, SPAN) == (256 * KiB, 4 * 1024 * KiB)
    near = {bid(1): at("p", 0, KiB), bid(2): at("p", KiB + GAP, KiB)}
    far = {bid(1): at("p", 0, KiB), bid(2): at("p", KiB + GAP + 1, KiB)}
    assert len(coalesce(Places(near), near)[0]) == 1 and len(coalesce(Places(far), far)[0]) == 2
    full = {bid(1): at("p", 0, KiB), bid(2): at("p", KiB, SPAN - KiB)}
    over = {bid(1): at("p", 0, KiB), bid(2): at("p", KiB, SPAN - KiB + 1)}
    assert len(coalesce(Places(full), full)[0]) == 1 and len(coalesce(Places(over), over)[0]) == 2


# -- SpanReader on a real repository --------------------------------------------------------
class FirstReadFails(LocalStorage):
    """A folder whose first ranged read of each pack fails with `error` (a drive's hiccup, a
    server's refusal), after which reads succeed."""

    def __init__(self, root, error: Exception):
        super().__init__(root)
        self.error = error
        self.failed: set[str] = set()

    def read(self, name, offset=0, length=None):
        if name.endswith(".pack") and length is not None and name not in self.failed:
            self.failed.add(name)
            raise self.error
        return super().read(name, offset, length)


@pytest.fixture
def saved(tmp_path, monkeypatch):
    """Twelve blobs of 20,000 random bytes in packs of four (64 KiB), with parity."""
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(64 * KiB))
    repo = Repository.init(tmp_path / "r")
    rng = random.Random(3)
    raw = {}
    with repo.writer() as session:
        for _ in range(12):
            data = rng.randbytes(20_000)
            b = repo.blob_id(data)
            stored, codec = session.compressor.compress(data)
            session.add(b, stored, len(data), KIND_DATA, codec)
            raw[b] = data
    return Repository.open(tmp_path / "r"), raw


def pack_path(repo: Repository, loc) -> Path:
    return repo.local_path / "packs" / loc.pack_id[:2] / f"{loc.pack_id}.pack"


def test_every_blob_comes_from_its_span_and_an_unknown_one_is_named_missing(saved):
    repo, raw = saved
    reader = SpanReader(repo, workers=3)
    ids = list(raw)
    stranger = bytes(32)
    where = reader.plan(ids + [stranger])
    assert set(where) == set(raw)
    packs = {repo.index.get(b).pack_id for b in ids}
    spans = {id(w[0]): w[0] for w in where.values()}.values()
    assert len(spans) == len(packs) == 3 and all(s.read is not None for s in spans)
    for b in reversed(ids):
        span, loc = where[b]
        assert loc == repo.index.get(b) and span.pack_id == loc.pack_id
        assert reader.blob(b, where[b]) == raw[b]
    with pytest.raises(DamageError, match=f"chunk {stranger.hex()[:16]} is missing"):
        reader.blob(stranger, where.get(stranger))
    reader.close()


def test_a_damaged_blob_in_a_span_is_read_again_and_repaired_from_parity(saved):
    repo, raw = saved
    ids = list(raw)
    loc = repo.index.get(ids[4])
    path = pack_path(repo, loc)
    data = bytearray(path.read_bytes())
    data[loc.offset + 7] ^= 0xFF
    path.write_bytes(bytes(data))
    reader = SpanReader(repo, workers=2)
    where = reader.plan(ids)
    assert [reader.blob(b, where[b]) for b in ids] == [raw[b] for b in ids]
    assert repo.repaired_in_memory           # the damaged one came back through the repair
    reader.close()


def test_a_short_span_falls_back_to_the_repositorys_read(saved):
    repo, raw = saved
    ids = list(raw)
    last = max(ids, key=lambda b: (repo.index.get(b).pack_id == repo.index.get(ids[0]).pack_id,
                                   repo.index.get(b).offset))
    loc = repo.index.get(last)
    path = pack_path(repo, loc)
    whole = path.read_bytes()
    path.write_bytes(whole[: loc.offset + loc.stored_len - 1])       # the pack ends one byte early
    reader = SpanReader(repo, workers=1)
    where = reader.plan([last])
    span = where[last][0]
    assert len(span.read.result()) == span.length - 1
    assert reader.blob(last, where[last]) == raw[last]               # repaired from the parity
    reader.close()


@pytest.mark.parametrize("error", [OSError(5, "Input/output error"), StorageError("refused")])
def test_a_span_that_cannot_be_read_is_read_again_blob_by_blob(saved, error):
    repo, raw = saved
    flaky = Repository(repo.local_path, repo.config, storage=FirstReadFails(repo.local_path, error))
    reader = SpanReader(flaky, workers=2)
    where = reader.plan(list(raw))
    assert [reader.blob(b, where[b]) for b in raw] == list(raw.values())
    assert len(flaky.storage.failed) == 3
    reader.close()


def test_a_server_gone_is_said_not_read_around(saved):
    repo, raw = saved
    gone = UnreachableError("the server stopped answering")
    away = Repository(repo.local_path, repo.config, storage=FirstReadFails(repo.local_path, gone))
    reader = SpanReader(away, workers=2)
    b = next(iter(raw))
    where = reader.plan([b])
    with pytest.raises(UnreachableError) as err:
        reader.blob(b, where[b])
    assert err.value is gone
    reader.close()


def test_spans_dropped_by_a_cancel_are_read_by_whoever_still_asks(saved):
    repo, raw = saved
    ids = list(raw)
    reader = SpanReader(repo, workers=1)
    blocker = reader.pool.submit(lambda: time.sleep(0.2))   # the one worker is busy
    where = reader.plan(ids)
    reader.close(cancel=True)
    blocker.result()
    spans = {id(w[0]): w[0] for w in where.values()}.values()
    assert all(s.read.cancelled() for s in spans)
    assert [reader.blob(b, where[b]) for b in ids] == [raw[b] for b in ids]


def test_close_without_cancel_lets_the_started_reads_finish(saved):
    repo, raw = saved
    ids = list(raw)
    reader = SpanReader(repo, workers=1)
    where = reader.plan(ids)
    reader.close()
    assert [reader.blob(b, where[b]) for b in ids] == [raw[b] for b in ids]
    assert not any(w[0].read.cancelled() for w in where.values())
    assert ranges.SpanReader._read(reader, where[ids[0]][0]) == where[ids[0]][0].read.result()


def test_blobs_come_from_the_span_read_not_a_second_read(saved):
    repo, raw = saved
    ids = list(raw)
    reader = SpanReader(repo, workers=2)
    where = reader.plan(ids)
    for span, _ in where.values():
        span.read.result()
    # The spans are in memory: with every pack and sidecar emptied (in place: the storage keeps
    # files open) each blob still comes back, the last of each span (which ends exactly where
    # its span does) included.
    for pack in (repo.local_path / "packs").rglob("*.pack*"):
        with open(pack, "r+b") as f:
            f.truncate(0)
    with pytest.raises(DamageError):
        repo.read_blob(ids[0])
    assert [reader.blob(b, where[b]) for b in ids] == [raw[b] for b in ids]
    reader.close()


def test_close_does_not_wait_for_the_reads_still_running(saved):
    repo, raw = saved
    reader = SpanReader(repo, workers=1)
    slow = reader.pool.submit(time.sleep, 0.6)
    t0 = time.monotonic()
    reader.close()
    assert time.monotonic() - t0 < 0.3 and not slow.done()
    slow.result()
