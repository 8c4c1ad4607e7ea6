"""The repository format on its own: packs, index files, lock, manifests (no disks needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import zstandard

from recovery.chunking import used_windows
from recovery.errors import DamageError, RepositoryError
from recovery.repo.format import KIND_DATA, blob_id
from recovery.repo.index import Index
from recovery.repo.packs import read_footer
from recovery.repo.repository import Compressor, Repository


def store(repo: Repository, blobs: list[bytes]) -> list[bytes]:
    ids = []
    with repo.writer() as session:
        for raw in blobs:
            bid = blob_id(raw)
            stored, codec = session.compressor.compress(raw)
            session.add(bid, stored, len(raw), KIND_DATA, codec)
            ids.append(bid)
    return ids


def test_blobs_round_trip_across_packs_and_dedup(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(64 * 1024))
    repo = Repository.init(tmp_path / "r")
    blobs = [os.urandom(20_000) for _ in range(10)] + [bytes(50_000), b"text " * 4000]
    ids = store(repo, blobs + blobs[:3])          # repeats are stored once
    assert len(list((tmp_path / "r" / "packs").glob("*/*.pack"))) >= 3
    reopened = Repository.open(tmp_path / "r")
    assert len(reopened.index) == len(blobs)
    for bid, raw in zip(ids, blobs):
        assert reopened.read_blob(bid) == raw
    # Random data is kept raw, zeros and text compressed.
    assert reopened.index.get(ids[0]).codec == 0 and reopened.index.get(ids[10]).codec == 1


def test_packs_without_index_files_are_found_through_their_footers(tmp_path):
    repo = Repository.init(tmp_path / "r")
    ids = store(repo, [os.urandom(1000) for _ in range(5)])
    for idx in (tmp_path / "r" / "index").glob("*.idx"):
        idx.unlink()                               # as if killed before the index was written
    assert all(bid in Index.load(tmp_path / "r") for bid in ids)


def test_damage_is_detected(tmp_path):
    repo = Repository.init(tmp_path / "r", version=1)      # no parity to repair it from
    (bid,) = store(repo, [os.urandom(5000)])
    pack = next((tmp_path / "r" / "packs").glob("*/*.pack"))
    data = bytearray(pack.read_bytes())
    data[100] ^= 0xFF
    pack.write_bytes(bytes(data))
    with pytest.raises(DamageError, match="hash mismatch"):
        Repository.open(tmp_path / "r").read_blob(bid)
    data[-60] ^= 0xFF                              # inside the trailer's footer hash
    pack.write_bytes(bytes(data))
    with pytest.raises(DamageError, match="damaged footer"):
        read_footer(pack)


def test_damage_in_a_v2_pack_is_read_through_from_its_parity(tmp_path):
    repo = Repository.init(tmp_path / "r")
    raw = os.urandom(5000)
    (bid,) = store(repo, [raw])
    pack = next((tmp_path / "r" / "packs").glob("*/*.pack"))
    assert pack.with_name(pack.name + ".par").exists()
    data = bytearray(pack.read_bytes())
    data[100] ^= 0xFF
    pack.write_bytes(bytes(data))
    reopened = Repository.open(tmp_path / "r")
    assert reopened.read_blob(bid) == raw
    assert reopened.repaired_in_memory == {"packs/" + pack.parent.name + "/" + pack.name}


def test_open_refuses_foreign_and_future_repositories(tmp_path):
    with pytest.raises(RepositoryError, match="does not exist"):
        Repository.open(tmp_path / "none")
    (tmp_path / "plain").mkdir()
    with pytest.raises(RepositoryError, match="not a Lifeboat repository"):
        Repository.open(tmp_path / "plain")
    Repository.init(tmp_path / "r")
    cfg = tmp_path / "r" / "lifeboat-repo.json"
    data = json.loads(cfg.read_text())
    data["version"] = 3
    cfg.write_text(json.dumps(data))
    with pytest.raises(RepositoryError, match="format 3"):
        Repository.open(tmp_path / "r")
    with pytest.raises(RepositoryError, match="already holds"):
        Repository.init(tmp_path / "r")


def test_writer_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    repo = Repository.init(tmp_path / "r")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "r" / "lock").write_text(json.dumps({"host": os.uname().nodename, "pid": holder.pid}))
        with pytest.raises(RepositoryError, match="busy"):
            store(repo, [b"x"])
    finally:
        holder.kill()
        holder.wait()
    store(repo, [b"x"])                             # the holder is gone: its lock is stale
    assert not (tmp_path / "r" / "lock").exists()


def test_used_windows_cut_ranges_at_window_edges():
    ranges = [(0, 10), (4090, 20), (8192, 4096 * 3 + 5)]
    got = list(used_windows(ranges, 40_000, 4096))
    assert got == [
        (0, [(0, 10), (4090, 6)]),
        (1, [(0, 14)]),
        (2, [(0, 4096)]),
        (3, [(0, 4096)]),
        (4, [(0, 4096)]),
        (5, [(0, 5)]),
    ]
    assert list(used_windows([(39_990, 100)], 40_000, 4096)) == [(9, [(3126, 10)])]


def _damage_after_writing(tmp_path, where):
    """Write a pack through a session, then alter one byte of it on disk (`where` counts
    from the end when negative), as a failing drive would; returns the session's pack list."""
    repo = Repository.init(tmp_path / "r")
    with repo.writer() as session:
        for raw in (os.urandom(5000), b"text " * 3000):
            stored, codec = session.compressor.compress(raw)
            session.add(blob_id(raw), stored, len(raw), KIND_DATA, codec)
    pack = next((tmp_path / "r" / "packs").glob("*/*.pack"))
    data = bytearray(pack.read_bytes())
    data[where] ^= 0xFF
    pack.write_bytes(bytes(data))
    return Repository.open(tmp_path / "r"), session.new_packs


@pytest.mark.parametrize("where", [100, 5010, -60], ids=["first blob", "second blob", "footer"])
def test_read_back_check_after_backup_rejects_any_altered_byte(tmp_path, where):
    from recovery.events import CancelToken, ignore
    from recovery.verify import check_new_packs

    repo, new_packs = _damage_after_writing(tmp_path, where)
    assert len(new_packs) == 1 and len(new_packs[0][1]) == 32
    with pytest.raises(DamageError, match="did not read back correctly"):
        check_new_packs(repo, new_packs, [], ignore, CancelToken())


def test_read_back_check_passes_an_intact_pack_and_names_a_vanished_one(tmp_path):
    from recovery.events import CancelToken, ignore
    from recovery.repo.packs import pack_path
    from recovery.verify import check_new_packs

    repo, new_packs = _damage_after_writing(tmp_path, 100)
    pack = pack_path(repo.path, new_packs[0][0])
    data = bytearray(pack.read_bytes())
    data[100] ^= 0xFF                                     # undo the damage
    pack.write_bytes(bytes(data))
    check_new_packs(repo, new_packs, [], ignore, CancelToken())
    pack.unlink()
    with pytest.raises(DamageError, match="cannot be read back"):
        check_new_packs(repo, new_packs, [], ignore, CancelToken())


def _packs_read_back_early(tmp_path, monkeypatch):
    """A session whose packs (3 MiB each, incompressible) are read back as each is sealed,
    as a backup does; returns the repository, its new packs and the early read-back."""
    from recovery.verify import ReadBack

    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(3 * 1024 * 1024))
    repo = Repository.init(tmp_path / "r")
    early = ReadBack(repo)
    with early, repo.writer() as session:
        session.on_sealed = early.start
        for _ in range(12):
            raw = os.urandom(1024 * 1024)
            stored, codec = session.compressor.compress(raw)
            session.add(blob_id(raw), stored, len(raw), KIND_DATA, codec)
        session.flush()
        packs = list(session.new_packs)
        assert len(packs) == 4 and all(early.result(p.id) is not None for p in packs)
        return repo, packs, early


def test_early_read_back_then_samples_catch_a_drive_that_wraps_around(tmp_path, monkeypatch):
    """Each pack read back whole right after its seal passes; then the drive, smaller than
    it claims, writes the last pack over the start of the first (what it wraps onto): the
    check after the last write reads one block of every MiB of each pack again and fails."""
    from recovery.events import CancelToken, ignore
    from recovery.repo.packs import pack_path
    from recovery.verify import check_new_packs

    repo, packs, early = _packs_read_back_early(tmp_path, monkeypatch)
    check_new_packs(repo, packs, [], ignore, CancelToken(), early)          # intact: passes
    first, last = (pack_path(repo.path, p.id) for p in (packs[0], packs[-1]))
    wrapped = last.read_bytes()[: 2 * 1024 * 1024]
    with open(first, "r+b") as f:
        f.seek(4096 * 3)                      # not aligned with any sample block's start
        f.write(wrapped)
    with pytest.raises(DamageError, match="a later write overwrote it"):
        check_new_packs(repo, packs, [], ignore, CancelToken(), early)
    # Without the early read-back the whole pack is read again, and fails as well.
    with pytest.raises(DamageError, match="did not read back correctly"):
        check_new_packs(repo, packs, [], ignore, CancelToken())


def test_early_read_back_rejects_a_pack_altered_before_it_was_read(tmp_path, monkeypatch):
    """The early read-back itself compares every byte: a pack that differs when first read
    fails the check, whichever byte it is."""
    from recovery.events import CancelToken, ignore
    from recovery.repo.packs import WrittenPack
    from recovery.verify import ReadBack, check_new_packs

    repo, packs, _ = _packs_read_back_early(tmp_path, monkeypatch)
    lying = [WrittenPack(p.id, bytes(32) if i == 2 else p.digest, p.size) for i, p in enumerate(packs)]
    with ReadBack(repo) as early:
        for p in lying:
            early.start(p)
        with pytest.raises(DamageError, match="did not read back correctly"):
            check_new_packs(repo, lying, [], ignore, CancelToken(), early)


def test_sample_spans_cover_one_block_a_mib_and_the_end():
    from recovery.storage.base import sample_spans

    MiB = 1024 * 1024
    assert sample_spans(0) == []
    assert sample_spans(100) == [(0, 100)]
    assert sample_spans(3 * MiB) == [(0, 4096), (MiB, 4096), (2 * MiB, 4096), (3 * MiB - 4096, 4096)]
    assert sample_spans(MiB + 10) == [(0, 4096), (MiB, 10)]
    assert sample_spans(2 * MiB + 5000) == [(0, 4096), (MiB, 4096), (2 * MiB, 4096), (2 * MiB + 4096, 904)]


def test_compressor_shares_its_contexts_and_keeps_raw_what_does_not_shrink():
    comp = Compressor(3, threads=2)
    text = [f"line {i} of a log file\n".encode() * 20_000 for i in range(16)]
    with ThreadPoolExecutor(8) as pool:             # eight workers ask at once
        results = list(pool.map(comp.compress, text))
    with pytest.raises(TypeError):
        comp.compress(12345)                        # a failed call still gives its context back
    assert comp._idle.qsize() == 2                  # both contexts are back, none lost
    assert comp.starved_s >= 0
    for raw, (stored, codec) in zip(text, results):
        assert codec == 1 and zstandard.ZstdDecompressor().decompress(stored) == raw
    noise = os.urandom(100_000)
    assert comp.compress(noise) == (noise, 0)
