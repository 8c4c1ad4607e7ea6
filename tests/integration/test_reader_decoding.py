"""How often PartitionReader (recovery/repo/reader.py) decodes each window, and on which
thread, on a real backup of a real ext4 image with a hole (a deleted file's windows hold
nothing, with stored windows after them) and a stored last window: a window in the cache is
never decoded twice, sequential reads decode exactly the next stored window ahead on the one
readahead thread, random reads decode nothing ahead, and the cache keeps the windows used
last, within its bound."""

from __future__ import annotations

import random
import subprocess
import threading
from collections import Counter
from concurrent.futures import wait

import pytest

from recovery.backup import backup
from recovery.repo.format import ID_SIZE
from recovery.repo.reader import PartitionReader
from recovery.repo.repository import Repository
from tests import fsimages as fi
from tests.integration.test_partition_reader import expected

MiB = 1024 * 1024
HOLE = (10, 11)          # the windows of the deleted f1.bin (checked in the fixture)
AHEAD = "lifeboat-readahead_0"


@pytest.fixture(scope="module")
def holed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("holed")
    tree = tmp / "tree"
    tree.mkdir()
    rng = random.Random(2)
    # eight 3 MiB files and one of 1 MiB fill a 32 MiB ext4 to its last window
    for i in range(9):
        (tree / f"f{i}.bin").write_bytes(rng.randbytes((3 * MiB if i < 8 else MiB) + i))
    image = fi.make_ext4(tmp / "fs.img", 32 * MiB, tree)
    subprocess.run(["debugfs", "-w", "-R", "rm /f1.bin", str(image)], check=True, capture_output=True)
    repo = Repository.init(tmp / "repo", version=1)
    backup(str(image), repo)
    m = repo.load_manifest(repo.resolve("latest"))
    yield image, repo, m
    repo.close()


class Decodes:
    """Every chunk a reader has fetched and decoded (repo.read_blob), by window and thread.
    Threads other than the test's wait at `gate` before decoding."""

    def __init__(self, reader: PartitionReader, monkeypatch):
        table = reader._table
        self.windows = len(table) // ID_SIZE
        self.window_of: dict[bytes, int] = {}
        for w in range(self.windows):
            self.window_of.setdefault(bytes(table[w * ID_SIZE:(w + 1) * ID_SIZE]), w)
        self.calls: list[tuple[object, str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.reader = reader
        main = threading.current_thread()
        real = reader.repo.read_blob

        def read_blob(bid):
            me = threading.current_thread()
            self.calls.append((self.window_of.get(bytes(bid), bytes(bid)), "main" if me is main else me.name))
            if me is not main:
                self.gate.wait(30)
            return real(bid)

        monkeypatch.setattr(reader.repo, "read_blob", read_blob)

    def settle(self) -> None:
        """Wait until every window being decoded ahead is done."""
        wait(list(self.reader._ahead.values()))
        if self.reader._pool is not None:
            self.reader._pool.submit(int).result()   # one worker: what was queued before ran

    def same(self, w: int) -> int:
        """The first window holding the same chunk as window `w` (a zero-filled journal's
        windows are one chunk)."""
        return self.window_of[bytes(self.reader._table[w * ID_SIZE:(w + 1) * ID_SIZE])]

    def count(self) -> Counter:
        return Counter(w for w, _ in self.calls)

    def on(self, thread: str) -> set:
        return {w for w, t in self.calls if t == thread}


def test_the_fixture_has_a_hole_and_a_stored_last_window(holed):
    image, repo, m = holed
    reader = PartitionReader(repo, m.partitions[0], m.chunk_size)
    assert m.chunk_size == MiB and reader.size == 32 * MiB and len(reader._table) == 32 * ID_SIZE
    assert [w for w in range(32) if not reader.window_stored(w)] == list(HOLE)


def test_a_read_across_an_empty_window_gives_the_stored_windows_after_it(holed):
    image, repo, m = holed
    reader = PartitionReader(repo, m.partitions[0], m.chunk_size)
    want = expected(image, reader)
    cs = m.chunk_size
    off = 9 * cs + 100
    got = reader.read(off, 4 * cs)                     # windows 9 to 13, 10 and 11 empty
    assert got == want[off:off + 4 * cs]
    assert got[3 * cs:] != bytes(len(got) - 3 * cs)    # window 12's bytes, not zeros


def test_reading_on_decodes_every_stored_window_once_and_the_next_one_ahead(holed, monkeypatch):
    image, repo, m = holed
    reader = PartitionReader(repo, m.partitions[0], m.chunk_size)
    want = expected(image, reader)
    seen = Decodes(reader, monkeypatch)
    step = 256 * 1024
    got = b"".join(reader.read(off, step) for off in range(0, reader.size, step))
    seen.settle()
    assert got == want
    stored = [w for w in range(32) if w not in HOLE]
    # nothing for the empty windows, nothing past the last one, no window twice
    assert seen.count() == Counter(seen.same(w) for w in stored)
    # the first read and the one after each hole are the reader's own, and so is the next
    # window's (it starts the readahead); every other window was decoded ahead, on one thread
    own = {0, 1, 12, 13}
    assert seen.on("main") == own
    assert seen.on(AHEAD) == {seen.same(w) for w in stored if w not in own}
    assert {t for _, t in seen.calls} == {"main", AHEAD}


def test_a_window_being_decoded_ahead_is_waited_for_not_decoded_again(holed, monkeypatch):
    image, repo, m = holed
    reader = PartitionReader(repo, m.partitions[0], m.chunk_size)
    want = expected(image, reader)
    cs = m.chunk_size
    seen = Decodes(reader, monkeypatch)
    assert reader.read(6 * cs, 10) == want[6 * cs:6 * cs + 10]
    seen.gate.clear()                                   # the readahead thread now waits
    assert reader.read(7 * cs, 10) == want[7 * cs:7 * cs + 10]    # starts window 8 ahead
    release = threading.Timer(0.5, seen.gate.set)
    release.start()
    # window 8 is still being decoded ahead: this read waits for it (and starts window 9)
    assert reader.read(8 * cs, 10) == want[8 * cs:8 * cs + 10]
    release.join()
    seen.settle()
    assert seen.count() == Counter([6, 7, 8, 9])
    assert seen.on("main") == {6, 7} and seen.on(AHEAD) == {8, 9}
    assert {t for _, t in seen.calls} == {"main", AHEAD}         # one readahead thread, never two


def test_random_reads_decode_nothing_ahead_and_the_cache_keeps_the_last_used(holed, monkeypatch):
    image, repo, m = holed
    cs = m.chunk_size
    reader = PartitionReader(repo, m.partitions[0], cs, cache_bytes=3 * cs)
    want = expected(image, reader)
    seen = Decodes(reader, monkeypatch)

    def read(w):
        assert reader.read(w * cs + 5, 100) == want[w * cs + 5:w * cs + 105]

    for w in (20, 6, 14, 20, 6, 14):                  # three windows fit: each decoded once
        read(w)
    assert seen.count() == Counter([20, 6, 14])
    read(8)                                            # a fourth: 20, used longest ago, goes
    read(6)
    read(14)
    read(8)
    assert seen.count() == Counter([20, 6, 14, 8])
    read(20)
    assert seen.count() == Counter([20, 6, 14, 8, 20])
    assert seen.on("main") == {20, 6, 14, 8} and reader._pool is None     # nothing read ahead


def test_a_window_evicted_after_being_read_ahead_is_decoded_again(holed, monkeypatch):
    image, repo, m = holed
    cs = m.chunk_size
    reader = PartitionReader(repo, m.partitions[0], cs, cache_bytes=2 * cs)
    want = expected(image, reader)
    seen = Decodes(reader, monkeypatch)
    for w in range(12, 18):
        assert reader.read(w * cs, cs) == want[w * cs:(w + 1) * cs]
        seen.settle()
    assert seen.count() == Counter(range(12, 19)) and 14 in seen.on(AHEAD)
    # window 14 left the cache long ago: nothing of it is kept, it is fetched again
    assert reader.read(14 * cs, cs) == want[14 * cs:15 * cs]
    assert seen.count()[14] == 2


def test_reading_on_into_a_window_already_in_the_cache_decodes_nothing_ahead(holed, monkeypatch):
    image, repo, m = holed
    cs = m.chunk_size
    reader = PartitionReader(repo, m.partitions[0], cs)
    want = expected(image, reader)
    seen = Decodes(reader, monkeypatch)
    for w in (20, 18, 19):                     # 19 follows 18: window 20 would be next, but is kept
        assert reader.read(w * cs, 10) == want[w * cs:w * cs + 10]
    seen.settle()
    assert seen.count() == Counter([20, 18, 19]) and seen.on("main") == {20, 18, 19}
