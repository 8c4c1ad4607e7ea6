"""The backup's write session (recovery/repo/repository.py WriteSession) on small repositories
in real folders: blobs stored once and counted, packs sealed when full, index files every 16
packs and at the end, what a failed session leaves findable, packs other backups sealed
meanwhile, and resuming what an interrupted backup stored."""

from __future__ import annotations

import os
import re
import threading
import time

import blake3
import pytest

from recovery.errors import UsageError
from recovery.repo.format import CODEC_RAW, KIND_DATA, KIND_META, blob_id
from recovery.repo.index import read_index_file
from recovery.repo.packs import WrittenPack
from recovery.repo.repository import NewEncryption, Repository
from recovery.repo.keys import KdfParams
from recovery.storage.local import LocalStorage
from tests.unit.test_repository_edges import ObjectStore

# Where backups list the packs they wrote before their snapshot exists (docs/FORMAT.md): one
# list per backup under unfinished/, and the single file older Lifeboat appended to.
OLDER_LIST = "unfinished-packs"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(tmp_path / "cache"))


def packs_on_disk(root) -> dict[str, bytes]:
    return {p.name[:-len(".pack")]: p.read_bytes() for p in (root / "packs").glob("*/*.pack")}


def index_files(root) -> list:
    return sorted((root / "index").glob("*.idx"))


def add_raw(session, raw: bytes) -> tuple[bytes, int]:
    bid = blob_id(raw)
    return bid, session.add(bid, raw, len(raw), KIND_DATA, CODEC_RAW)


def test_blobs_are_stored_once_and_the_packs_written_are_listed(tmp_path):
    repo = Repository.init(tmp_path / "r")
    sealed = []
    blobs = [os.urandom(1000 + i) for i in range(4)]
    with repo.writer() as session:
        session.on_sealed = sealed.append
        for raw in blobs:
            bid, added = add_raw(session, raw)
            assert added == len(raw) and session.has(bid)
            assert add_raw(session, raw)[1] == 0
        assert session.bytes_stored_new == sum(map(len, blobs))
        assert any((tmp_path / "r").glob("lock/*.json"))      # the shared lock, held
    on_disk = packs_on_disk(tmp_path / "r")
    assert len(on_disk) == 1 and session.new_packs == sealed
    (written,) = session.new_packs
    assert written == WrittenPack(written.id, blake3.blake3(on_disk[written.id]).digest(), len(on_disk[written.id]))
    assert len(index_files(tmp_path / "r")) == 1 and not any((tmp_path / "r").glob("lock/*"))
    reopened = Repository.open(tmp_path / "r")
    assert [reopened.read_blob(blob_id(raw)) for raw in blobs] == blobs
    # Listed as unfinished until the backup says its snapshot is written.
    assert (tmp_path / "r" / f"unfinished/{session.session_id}").read_text() == written.id + "\n"


def test_a_pack_is_sealed_when_it_reaches_the_pack_size(tmp_path, monkeypatch):
    repo = Repository.init(tmp_path / "r")
    with repo.writer() as probe:
        add_raw(probe, b"a" * 1000)
        one = probe._pack.size
        add_raw(probe, b"b" * 1000)
        two = probe._pack.size
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(two))
    repo = Repository.init(tmp_path / "s")
    with repo.writer() as session:
        assert session.pack_size == two
        add_raw(session, b"c" * 1000)
        assert session._pack is not None and session._pack.size == one
        add_raw(session, b"d" * 1000)
        assert session._pack is None                 # exactly full: sealed
        add_raw(session, b"e" * 1000)
    sizes = sorted(len(data) for data in packs_on_disk(tmp_path / "s").values())
    assert len(sizes) == 2 and sizes[0] < sizes[1]


def test_the_default_pack_size(tmp_path, monkeypatch):
    monkeypatch.delenv("LIFEBOAT_PACK_SIZE")
    with Repository.init(tmp_path / "r").writer() as session:
        assert session.pack_size == 64 * 1024 * 1024


def test_an_index_file_every_16_packs_and_one_at_the_end(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", "4096")
    repo = Repository.init(tmp_path / "r")
    blobs = [os.urandom(5000) for _ in range(20)]
    with repo.writer() as session:
        for raw in blobs[:18]:
            add_raw(session, raw)                   # one blob fills a pack
        files = index_files(tmp_path / "r")
        assert len(files) == 1 and len(read_index_file(files[0])) == 16     # the first 16 sealed packs
        for raw in blobs[18:]:
            add_raw(session, raw)
    files = index_files(tmp_path / "r")
    assert len(files) == 2 and len(session.new_packs) == 20
    assert sorted(p for f in files for p, _ in read_index_file(f)) == sorted(p.id for p in session.new_packs)
    assert len(Repository.open(tmp_path / "r").index) == 20


@pytest.mark.parametrize("setting, every", [(None, 10.0), ("2.5", 2.5), ("-4", 0.0), ("soon", 10.0)])
def test_the_refresh_interval(tmp_path, monkeypatch, setting, every):
    if setting is not None:
        monkeypatch.setenv("LIFEBOAT_INDEX_REFRESH", setting)
    with Repository.init(tmp_path / "r").writer() as session:
        assert session._refresh_every == every


def test_packs_other_backups_sealed_are_learned_at_the_next_refresh(tmp_path, monkeypatch):
    Repository.init(tmp_path / "r")
    shared = os.urandom(3000)
    first = Repository.open(tmp_path / "r")
    with first.writer() as slow:
        with Repository.open(tmp_path / "r").writer() as other:
            add_raw(other, shared)
        assert not slow.has(blob_id(shared))        # the next refresh is 10 s away
        slow._next_refresh = 0
        assert slow.has(blob_id(shared)) and add_raw(slow, shared)[1] == 0
        later = os.urandom(3000)
        with Repository.open(tmp_path / "r").writer() as other:
            add_raw(other, later)
        assert not slow.has(blob_id(later))         # a refresh sets the next one 10 s away
    assert len(packs_on_disk(tmp_path / "r")) == 2


def test_a_damaged_pack_is_skipped_and_the_ones_after_it_learned(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_INDEX_REFRESH", "0")
    Repository.init(tmp_path / "r", version=1)
    blobs = [os.urandom(3000) for _ in range(2)]
    with Repository.open(tmp_path / "r").writer() as session:
        for raw in blobs:
            with Repository.open(tmp_path / "r").writer() as other:
                add_raw(other, raw)
        first, second = sorted((tmp_path / "r" / "packs").glob("*/*.pack"), key=lambda p: p.name)
        data = bytearray(first.read_bytes())
        data[-10] ^= 0xFF
        first.write_bytes(bytes(data))
        learned = [session.has(blob_id(raw)) for raw in blobs]
    assert sorted(learned) == [False, True]


def test_a_damaged_pack_from_another_backup_is_stored_around(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_INDEX_REFRESH", "0")
    Repository.init(tmp_path / "r", version=1)
    raw = os.urandom(3000)
    with Repository.open(tmp_path / "r").writer() as session:
        with Repository.open(tmp_path / "r").writer() as other:
            add_raw(other, raw)
        (pack,) = (tmp_path / "r" / "packs").glob("*/*.pack")
        data = bytearray(pack.read_bytes())
        data[-10] ^= 0xFF                           # its footer no longer reads
        pack.write_bytes(bytes(data))
        assert not session.has(blob_id(raw))
        assert add_raw(session, raw)[1] == len(raw)
    assert Repository.open(tmp_path / "r").read_blob(blob_id(raw)) == raw


def test_a_failed_session_keeps_what_it_sealed_and_drops_the_rest(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", "4096")
    repo = Repository.init(tmp_path / "r")
    sealed = [os.urandom(5000) for _ in range(3)]
    with pytest.raises(RuntimeError, match="disk read failed"):
        with repo.writer() as session:
            for raw in sealed:
                add_raw(session, raw)
            add_raw(session, b"open " * 10)         # stays in the open pack
            raise RuntimeError("disk read failed")
    assert not any((tmp_path / "r").glob("lock/*")) and not any((tmp_path / "r" / "tmp").iterdir())
    assert len(packs_on_disk(tmp_path / "r")) == 3 and len(index_files(tmp_path / "r")) == 1
    reopened = Repository.open(tmp_path / "r")
    assert [reopened.read_blob(blob_id(raw)) for raw in sealed] == sealed
    assert blob_id(b"open " * 10) not in reopened.index
    listed = (tmp_path / "r" / f"unfinished/{session.session_id}").read_text()
    assert listed == "".join(p.id + "\n" for p in session.new_packs)


def test_an_interrupted_backup_is_resumed_and_counted_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", "4096")
    repo = Repository.init(tmp_path / "r")
    blobs = [os.urandom(5000) for _ in range(3)]
    with pytest.raises(RuntimeError):
        with repo.writer() as killed:
            for raw in blobs:
                add_raw(killed, raw)
            raise RuntimeError("killed")
    stored = {blob_id(raw): Repository.open(tmp_path / "r").index.get(blob_id(raw)).stored_len for raw in blobs}
    with Repository.open(tmp_path / "r").writer() as fresh:       # no older Lifeboat's list here
        assert fresh._resumable == set(stored)
    # An older Lifeboat's single list (here with a pack that is gone, and bytes that are not
    # text), read with this Lifeboat's lists.
    (tmp_path / "r" / OLDER_LIST).write_bytes(b"\xff\xfe not text\n" + b"0" * 64 + b"\n")
    with Repository.open(tmp_path / "r").writer() as session:
        assert session._resumable == set(stored)
        first = blob_id(blobs[0])
        assert session.has(first) and session.reused(first) == stored[first]
        assert session.reused(first) == 0 and session.reused(blob_id(b"never")) == 0
        assert session.bytes_resumed == stored[first] and session.resumed_ids == {first}
        assert session.add_meta(blobs[1]) == blob_id(blobs[1]).hex()
        assert session.bytes_resumed == stored[first] + stored[blob_id(blobs[1])]
        assert session.resumed_ids == {first, blob_id(blobs[1])} and session.bytes_stored_new == 0
        session.snapshot_written()
    assert not (tmp_path / "r" / OLDER_LIST).exists()
    assert not any((tmp_path / "r" / "unfinished").iterdir())


def test_the_lists_of_several_interrupted_backups_are_all_read(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", "4096")
    Repository.init(tmp_path / "r")
    sessions = []
    for raw in (os.urandom(5000), os.urandom(5000)):
        with pytest.raises(RuntimeError):
            with Repository.open(tmp_path / "r").writer() as killed:
                add_raw(killed, raw)
                sessions.append((killed, blob_id(raw)))
                raise RuntimeError("killed")
    (first, one), (second, two) = sessions
    assert first.session_id != second.session_id and re.fullmatch(r"[0-9a-f]{32}", first.session_id)
    os.replace(tmp_path / "r" / f"unfinished/{first.session_id}", tmp_path / "r" / OLDER_LIST)
    with Repository.open(tmp_path / "r").writer() as session:
        assert session._resumable == {one, two}


class SlowSeals(LocalStorage):
    """A folder whose new objects are made visible only once `gate` is set: seals that stay
    in flight, as on a slow drive."""

    def __init__(self, root):
        super().__init__(root)
        self.gate = threading.Event()

    def create(self):
        writer = super().create()
        commit = writer.commit

        def held(name):
            self.gate.wait(10)
            commit(name)

        writer.commit = held
        return writer


def test_two_seals_may_be_in_flight_and_the_third_waits(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", "4096")
    Repository.init(tmp_path / "r", version=1)
    storage = SlowSeals(tmp_path / "r")
    fallback = threading.Timer(10, storage.gate.set)    # never hang, whatever happens
    fallback.start()
    try:
        with Repository.open(storage).writer() as session:
            started = time.monotonic()
            add_raw(session, os.urandom(5000))               # each blob fills a pack
            add_raw(session, os.urandom(5000))
            assert time.monotonic() - started < 5 and len(session._sealing) == 2
            threading.Timer(0.3, storage.gate.set).start()
            started = time.monotonic()
            add_raw(session, os.urandom(5000))
            assert time.monotonic() - started >= 0.25       # waited for the first seal
            assert len(session._sealing) <= 2
    finally:
        fallback.cancel()
    assert len(session.new_packs) == 3


def test_the_stages_a_backup_profile_names(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", "4096")
    with Repository.init(tmp_path / "r").writer() as session:
        assert session.chunk_tables == {}
        for _ in range(3):
            add_raw(session, os.urandom(5000))
    assert sorted(session.clock.wall) == ["seal", "seal wait", "write"]
    assert session.clock.bytes["write"] == 15000


def test_meta_blobs_are_compressed_and_kept_once(tmp_path):
    repo = Repository.init(tmp_path / "r")
    raw = b'{"table": 1}' * 500
    with repo.writer() as session:
        hex_id = session.add_meta(raw)
        assert hex_id == blob_id(raw).hex() and session.add_meta(raw) == hex_id
        assert 0 < session.bytes_stored_new < len(raw)
    loc = Repository.open(tmp_path / "r").index.get(blob_id(raw))
    assert loc.kind == KIND_META and loc.codec != CODEC_RAW and loc.raw_len == len(raw)
    assert Repository.open(tmp_path / "r").read_blob(blob_id(raw)) == raw


def test_an_encrypted_session_seals_each_blob(tmp_path):
    repo = Repository.init(tmp_path / "r", encryption=NewEncryption("harbour-lantern-9", KdfParams(16, 1, 2)))
    raw = os.urandom(2000)
    with repo.writer() as session:
        bid = repo.blob_id(raw)
        sealed = session.seal_blob(bid, KIND_DATA, raw)
        assert sealed != raw and repo.sealer.open_blob(bid, KIND_DATA, sealed) == raw
        session.add(bid, sealed, len(raw), KIND_DATA, CODEC_RAW)
        meta = session.add_meta(b"meta" * 100)
    assert repo.read_blob(bid) == raw and repo.read_blob(bytes.fromhex(meta)) == b"meta" * 100
    plain = Repository.init(tmp_path / "p")
    with plain.writer() as session:
        assert session.seal_blob(blob_id(raw), KIND_DATA, raw) is raw


def test_the_writer_takes_its_compression_level_and_threads(tmp_path):
    repo = Repository.init(tmp_path / "r")
    with pytest.raises(UsageError, match="zstd level 99"):
        repo.writer(99)
    session = repo.writer(1, threads=1)
    assert session.compressor._idle.qsize() == 1
    session._sealer.shutdown()


def test_a_stale_scratch_file_is_removed_when_a_session_starts(tmp_path):
    repo = Repository.init(tmp_path / "r")
    stray = tmp_path / "r" / "tmp" / "old-writer"
    stray.write_bytes(b"x")
    os.utime(stray, (0, 0))
    with repo.writer():
        assert not stray.exists()


def test_an_object_store_session_uploads_at_once_and_caches_its_index(tmp_path):
    repo = Repository.init(ObjectStore(tmp_path / "s"))
    with repo.writer() as session:
        assert session._seal_threads == 3
        add_raw(session, os.urandom(3000))
    (name,) = [p.name for p in index_files(tmp_path / "s")]
    cached = repo.index_cache.folder / "index" / name
    assert cached.read_bytes() == (tmp_path / "s" / "index" / name).read_bytes()
    with Repository.init(tmp_path / "local").writer() as session:
        assert session._seal_threads == 1


def test_a_full_pack_never_outgrows_the_buffer_kept_for_its_parity(tmp_path, monkeypatch):
    from recovery.repo.packs import PackBuffer

    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(4 << 20))
    repo = Repository.init(tmp_path / "r")                     # format 2: parity from the buffer
    with repo.writer() as session:
        add_raw(session, os.urandom((4 << 20) - 4096))         # just under the pack size
        last = os.urandom(2_520_000)                           # within the room planned: 1/8 + 2 MiB more
        add_raw(session, last)
        assert session._pack is None                           # that sealed it
    (buffer,) = session._buffers._free
    assert len(buffer.data) == len(PackBuffer(session._buffers.size).data)    # never regrown
    assert Repository.open(tmp_path / "r").read_blob(blob_id(last)) == last


def test_each_thread_reuses_its_decompressor(tmp_path):
    repo = Repository.init(tmp_path / "r")
    texts = [b"text %d " % i * 2000 for i in range(3)]
    with repo.writer() as session:
        ids = [session.add_meta(raw) for raw in texts]
    reader = Repository.open(tmp_path / "r")
    assert reader.read_blob(bytes.fromhex(ids[0])) == texts[0]
    first = reader._dctx.d
    assert [reader.read_blob(bytes.fromhex(i)) for i in ids] == texts and reader._dctx.d is first


def test_a_pack_as_large_as_the_room_planned_never_regrows_its_buffer(tmp_path, monkeypatch):
    from recovery.repo.packs import PackBuffer

    size = 8 << 20
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(size))
    planned = size + size // 8 + (2 << 20)                     # the pack size, 1/8 more and 2 MiB
    repo = Repository.init(tmp_path / "r")
    with repo.writer() as session:
        add_raw(session, os.urandom(size - 4096))
        add_raw(session, os.urandom(planned - size - 4096))    # the pack ends just under the room planned
        assert session._pack is None
    (pack,) = (tmp_path / "r" / "packs").glob("*/*.pack")
    assert planned - 8192 < pack.stat().st_size <= planned
    (buffer,) = session._buffers._free
    assert len(buffer.data) == len(PackBuffer(session._buffers.size).data)    # never regrown


class GatedListing(LocalStorage):
    """A folder whose listing of packs/ waits at `gate` once `armed`: a refresh that takes its
    time, as on a slow network store."""

    def __init__(self, root):
        super().__init__(root)
        self.armed = False
        self.inside = threading.Event()
        self.gate = threading.Event()

    def list(self, prefix: str):
        if self.armed and prefix == "packs/":
            self.inside.set()
            self.gate.wait(10)
        return super().list(prefix)


def test_a_refresh_under_way_does_not_hold_up_another_thread_asking(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_INDEX_REFRESH", "0")           # every question may refresh
    repo = Repository.init(tmp_path / "r")
    with repo.writer() as earlier:
        stored, _ = add_raw(earlier, os.urandom(3000))
    storage = GatedListing(tmp_path / "r")
    with Repository(tmp_path / "r", repo.config, storage=storage).writer() as session:
        storage.armed = True
        refreshing = threading.Thread(target=session.has, args=(blob_id(b"not stored"),))
        refreshing.start()
        answers = []
        try:
            assert storage.inside.wait(10)                      # the refresh waits in its listing
            asking = threading.Thread(target=lambda: answers.append(session.has(stored)))
            asking.start()
            asking.join(2)
            assert answers == [True]                            # answered from what is known
        finally:
            storage.gate.set()
            refreshing.join(10)
    assert not refreshing.is_alive()


class AnotherBackupMeanwhile(LocalStorage):
    """A folder where, as the session (its index read) lists the unfinished backups, another
    backup seals a pack and lists it: `meanwhile` runs once, there."""

    def __init__(self, root, meanwhile):
        super().__init__(root)
        self.meanwhile = meanwhile

    def list(self, prefix: str):
        if prefix == "unfinished/" and self.meanwhile:
            run, self.meanwhile = self.meanwhile, None
            run()
        return super().list(prefix)


def test_a_pack_another_backup_lists_after_the_index_was_read_is_reused_not_stored_again(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", "4096")
    repo = Repository.init(tmp_path / "r")
    raw = os.urandom(5000)
    bid = blob_id(raw)

    def other_backup():     # seals its pack at once (larger than the pack size); no snapshot yet
        with Repository.open(tmp_path / "r").writer() as other:
            add_raw(other, raw)

    storage = AnotherBackupMeanwhile(tmp_path / "r", other_backup)
    with Repository(tmp_path / "r", repo.config, storage=storage).writer() as session:
        assert storage.meanwhile is None and session._resumable == {bid}
        assert session.has(bid) and session.reused(bid) == len(raw)
        assert add_raw(session, raw)[1] == 0
        assert session.bytes_resumed == len(raw) and session.bytes_stored_new == 0
    assert session.new_packs == []                              # the blob was not stored again


def test_seal_packs_drops_a_pack_whose_first_blob_found_no_room(tmp_path):
    from recovery.errors import NoSpaceError
    from tests.unit.test_prune_edges import SmallDrive

    repo = Repository.init(tmp_path / "r")
    drive = SmallDrive(tmp_path / "r", 1 << 40)
    big, small = os.urandom(50_000), os.urandom(3000)
    with Repository(tmp_path / "r", repo.config, storage=drive).writer() as session:
        drive.capacity = drive.used() + 1000                    # the pack's first bytes fit, the blob not
        with pytest.raises(NoSpaceError):
            add_raw(session, big)
        drive.capacity = 1 << 40                                # room again
        session.seal_packs()                                    # the pack the blob never reached goes
        assert add_raw(session, small)[1] == len(small)         # and the next blob starts a new one
    reopened = Repository.open(tmp_path / "r")
    assert reopened.read_blob(blob_id(small)) == small and blob_id(big) not in reopened.index
    assert len(packs_on_disk(tmp_path / "r")) == 1 and not any((tmp_path / "r" / "tmp").iterdir())
