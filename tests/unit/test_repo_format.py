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


def test_compressor_shares_its_contexts_and_keeps_raw_what_does_not_shrink():
    comp = Compressor(3, threads=2)
    text = [f"line {i} of a log file\n".encode() * 20_000 for i in range(16)]
    with ThreadPoolExecutor(8) as pool:             # eight workers ask at once
        results = list(pool.map(comp.compress, text))
    with pytest.raises(TypeError):
        comp.compress(12345)                        # a failed call still gives its context back
    assert comp._idle.qsize() == 2                  # both contexts are back, none lost
    for raw, (stored, codec) in zip(text, results):
        assert codec == 1 and zstandard.ZstdDecompressor().decompress(stored) == raw
    noise = os.urandom(100_000)
    assert comp.compress(noise) == (noise, 0)
