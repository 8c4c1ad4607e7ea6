"""A restore from S3 reads whole spans of a pack, not one request per chunk (SeaweedFS on
loopback): the restored disk compared byte for byte, for a snapshot whose chunks lie in many
packs, some written by an older backup; the requests counted; a span that cannot be decoded
falls back to the chunk's own read, which says what is damaged."""

from __future__ import annotations

import filecmp

import pytest

from recovery.errors import DamageError
from recovery.repo.ranges import SpanReader, coalesce
from recovery.repo.repository import Repository
from recovery.sources.snapshot import SnapshotSource
from tests import diskimages as di
from tests import fsimages as fi
from tests.integration.engine_fixtures import MiB, lifeboat
from tests.integration.test_repository_safety import data_tree


@pytest.fixture
def s3env(seaweedfs, monkeypatch, tmp_path):
    for key, value in seaweedfs.env(LIFEBOAT_LOG_DIR=str(tmp_path / "logs")).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LIFEBOAT_RETRY_SECONDS", "4")
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(4 * MiB))     # many packs
    return seaweedfs


@pytest.fixture
def two_snapshots(tmp_path, s3env):
    """An older backup of one partition, then a newer one of a disk holding that partition
    again (every chunk deduplicated against the older packs) beside a new one whose files are
    half the older ones' and half new: the newer snapshot's chunks lie in old and new packs."""
    s3env.bucket("ranges")
    repo = f"s3://ranges/{tmp_path.name}"        # the server lives for the whole session
    lifeboat("repo", "init", repo)
    old = fi.make_ext4(tmp_path / "old.ext4", 40 * MiB, data_tree(tmp_path / "t1", 24, MiB, seed=1),
                      garbage=False)        # free space zero: the whole restored disk compares
    first = tmp_path / "first.img"
    di.make_disk(first, 48 * MiB, "gpt", [di.PartSpec(old.stat().st_size, di.LINUX_FS, content=str(old))])
    lifeboat("backup", first, "--repo", repo, "--json", json_out=True)
    mixed = data_tree(tmp_path / "t2", 12, MiB, seed=1)          # the same 12 files as the older
    for i, f in enumerate(sorted(data_tree(tmp_path / "t3", 12, MiB, seed=2).iterdir())):
        f.rename(mixed / f"new{i:02d}.bin")
    new = fi.make_ext4(tmp_path / "new.ext4", 40 * MiB, mixed, garbage=False)
    disk = tmp_path / "second.img"
    di.make_disk(disk, 96 * MiB, "gpt", [di.PartSpec(old.stat().st_size, di.LINUX_FS, content=str(old)),
                                         di.PartSpec(new.stat().st_size, di.LINUX_FS, content=str(new))])
    out = lifeboat("backup", disk, "--repo", repo, "--json", json_out=True).data
    return repo, disk, out["snapshot"]


def test_restore_from_s3_of_chunks_in_old_and_new_packs_is_byte_identical(tmp_path, two_snapshots):
    repo, disk, snapshot = two_snapshots
    target = tmp_path / "target.img"
    with open(target, "wb") as f:
        f.truncate(disk.stat().st_size)
    lifeboat("restore", snapshot, target, "--repo", repo, "--layout", "keep", "--yes")
    assert filecmp.cmp(disk, target, shallow=False)


def test_restore_pieces_come_from_spans_in_few_requests(two_snapshots):
    """Every piece of the newer snapshot, fetched the way a restore does, equals the disk's
    bytes there; the GET requests number the spans, a small part of the chunks."""
    repo_url, disk, snapshot = two_snapshots
    repo = Repository.open(repo_url)
    try:
        source = SnapshotSource(repo, repo.load_manifest(snapshot))
        assert source.fetchers == repo.storage.parallelism      # the network path is taken
        packs = {repo.index.get(bid).pack_id for bid in source.needed_blobs()}
        assert len(packs) > 6          # chunks spread over the older backup's packs and the newer's
        chunks = spans = requests = 0
        with open(disk, "rb") as f:
            for part in source.partitions:
                before = repo.storage.requests
                pieces = list(source.pieces(part.number))
                for piece in pieces:
                    data = piece.fetch()
                    for off, n in piece.subs:
                        f.seek(part.start + piece.offset + off)
                        assert data[off : off + n] == f.read(n), f"partition {part.number} at {piece.offset + off}"
                requests += repo.storage.requests - before
                ids = {piece.digest for piece in pieces}
                chunks += len(ids)
                spans += len(coalesce(repo.index, ids)[0])
        assert chunks >= 40
        assert requests == spans                  # one GET per span, none per chunk
        assert requests * 3 <= chunks
    finally:
        repo.close()


def test_a_span_that_fails_its_check_falls_back_to_the_chunks_own_read(two_snapshots):
    """A span's bytes that are not the chunk's fail its id check and the repository's own read
    gives the right bytes; a chunk the index does not know is a DamageError, as ever."""
    repo_url, _, snapshot = two_snapshots
    repo = Repository.open(repo_url)
    try:
        source = SnapshotSource(repo, repo.load_manifest(snapshot))
        bid = next(iter(source.needed_blobs()))
        loc = repo.index.get(bid)
        reader = SpanReader(repo, 4)
        where = reader.plan([bid])
        assert reader.blob(bid, where[bid]) == repo.read_blob(bid)
        span, _ = where[bid]
        span.read.result()
        # A span whose bytes are not the chunk's (a wrong place): the id check refuses them and
        # the repository's own read gives the right bytes.
        wrong = type(span)(span.pack_id, span.start, span.length, span.members)
        wrong.read = reader.pool.submit(lambda: bytes(span.length))
        assert reader.blob(bid, (wrong, loc)) == repo.read_blob(bid)
        reader.close()
        with pytest.raises(DamageError):
            SpanReader(repo, 1).blob(b"\x00" * len(bid), None)
    finally:
        repo.close()


def test_a_resumed_restore_reads_no_span_for_chunks_already_on_the_disk(tmp_path, two_snapshots, monkeypatch):
    """A restore stopped part way, then run again: it checks each piece against the disk
    before reading ahead, so the spans it reads hold exactly the chunks of the windows still
    missing there (found here by hashing the target's bytes), none of a window already
    written; the finished disk is byte for byte the source."""
    from recovery.chunking import used_windows, window_length
    from recovery.errors import Cancelled
    from recovery.events import CancelToken, Progress
    from recovery.jobs import RestoreJob, run_job
    from recovery.repo.format import ID_SIZE

    repo_url, disk, snapshot = two_snapshots
    target = tmp_path / "target.img"
    with open(target, "wb") as f:
        f.truncate(disk.stat().st_size)
    token = CancelToken()

    def stop_part_way(event):
        if isinstance(event, Progress) and event.phase == "restore" and 0 < event.done < event.total:
            token.cancel()

    repo = Repository.open(repo_url)
    try:
        with pytest.raises(Cancelled):
            run_job(RestoreJob(repo, snapshot, str(target), layout="keep"), confirm=lambda plan: True,
                    on_event=stop_part_way, cancel=token)
    finally:
        repo.close()

    repo = Repository.open(repo_url)
    try:
        source = SnapshotSource(repo, repo.load_manifest(snapshot))
        there, missing = set(), set()        # chunk ids of windows on the disk / not yet there
        with open(target, "rb") as f:
            for part in source.partitions:
                ranges, table = source.tables[part.number]
                cs = source.chunk_size
                for w, subs in used_windows(ranges, part.size, cs):
                    bid = bytes(table[w * ID_SIZE : (w + 1) * ID_SIZE])
                    buf = bytearray(window_length(w, part.size, cs))
                    for off, n in subs:
                        f.seek(part.start + w * cs + off)
                        buf[off : off + n] = f.read(n)
                    (there if repo.blob_id(bytes(buf)) == bid else missing).add(bid)
        assert there and missing, "the first run was stopped before or after writing anything"

        spans = []
        read = SpanReader._read

        def counted(self, span):
            spans.append(span)
            return read(self, span)

        monkeypatch.setattr(SpanReader, "_read", counted)
        result = run_job(RestoreJob(repo, snapshot, str(target), layout="keep"), confirm=lambda plan: True).result
    finally:
        repo.close()
    read_ids = {bid for span in spans for bid, _ in span.members}
    assert read_ids == missing                 # every missing chunk read, nothing else
    assert not read_ids & (there - missing)
    assert result.bytes_skipped > 0
    assert filecmp.cmp(disk, target, shallow=False)
