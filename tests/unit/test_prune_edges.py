"""prune and forget (recovery/repo/prune.py) in process, on a small repository in a real folder
whose packs are shaped by hand: which packs are deleted, repacked or left by the plan and at
which threshold, what the repacking writes and deletes (counted against the folder itself),
index files replaced, a snapshot saved while prune repacks keeping what it uses, damage met on
the way, the exclusive lock waited for, and forget's verdicts and preview."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import errno
import inspect
import json
import re

from recovery.cli import build_parser
from recovery.errors import Cancelled, DamageError, LockWaitError, NoSpaceError, UsageError
from recovery.events import CancelToken
from recovery.model.layout import Layout
from recovery.repo import prune as pr
from recovery.repo.format import KIND_DATA, blob_id
from recovery.repo.index import load_index_file
from recovery.repo.lock import Lock
from recovery.repo.manifest import BootArea, Manifest, PartitionImage
from recovery.repo.packs import PACK_MAGIC, read_footer
from recovery.repo.repository import Repository
from recovery.repo.retention import Policy
from recovery.storage.local import FileWriter, LocalStorage, write_error
from recovery.units import human_size

BLOB = 17_000          # four to a 64 KiB pack: the fourth takes the pack past its size and seals it
ROOT = Path(__file__).resolve().parents[2]


def _store(repo: Repository, blobs: list[bytes]) -> list[bytes]:
    ids = []
    with repo.writer() as session:
        for raw in blobs:
            bid = repo.blob_id(raw)
            stored, codec = session.compressor.compress(raw)
            session.add(bid, stored, len(raw), KIND_DATA, codec)
            ids.append(bid)
    return ids


def _manifest(name: str, day: int, boot: list[bytes] = (), part: PartitionImage | None = None,
              locations: list[bytes] = ()) -> Manifest:
    return Manifest(name, f"2026-11-{day:02d}T00:00:00Z", "t", 4096, {}, Layout("none", 512, 1 << 20),
                    [BootArea(i * BLOB, BLOB, b.hex()) for i, b in enumerate(boot)],
                    [part] if part else [],
                    locations=({"partitions": {"1": [b.hex() for b in locations]}} if locations else None))


class Shaped:
    """Packs A (a1-a4, all used), B (b1-b4, none), C (c1 of 4 used), D (d1-d3 of 4), E (e1, e2 of
    4) and T (a chunk table naming e1 and e2); A and B share one index file, C, D, E and T have
    one each. Snapshot "pc" uses a1-a4 (boot areas, a range map, a location table) and, through
    its chunk table, e1 and e2; snapshot "work" uses c1 and d1-d3."""

    def __init__(self, root: Path):
        self.root = root
        self.repo = repo = Repository.init(root)
        rng = random.Random(5)
        self.raw: dict[bytes, bytes] = {}

        def blobs(n):
            out = [rng.randbytes(BLOB) for _ in range(n)]
            return out

        ab = blobs(8)
        self.a, self.b = _store(repo, ab)[:4], None
        self.b = [repo.blob_id(r) for r in ab[4:]]
        self.c = _store(repo, c := blobs(4))
        self.d = _store(repo, d := blobs(4))
        self.e = _store(repo, e := blobs(4))
        self.t = _store(repo, [self.e[0] + self.e[1]])[0]
        for ids, raws in ((self.a + self.b, ab), (self.c, c), (self.d, d), (self.e, e)):
            self.raw.update(zip(ids, raws))
        self.raw[self.t] = self.e[0] + self.e[1]
        index = repo.reload_index()
        self.pack = {k: index.get(v[0]).pack_id for k, v in
                     (("A", self.a), ("B", self.b), ("C", self.c), ("D", self.d), ("E", self.e), ("T", [self.t]))}
        assert len(set(self.pack.values())) == 6
        assert all(index.get(i).pack_id == self.pack["A"] for i in self.a)   # the shape the tests rely on
        part = PartitionImage(1, 0, 1 << 20, "raw", None, None, 512, True, 0, ranges=[self.a[2].hex()],
                              chunks=[self.t.hex()], windows=2)
        self.pc = repo.write_manifest(_manifest("pc", 3, self.a[:2], part, self.a[3:]))
        self.work = repo.write_manifest(_manifest("work", 3, [self.c[0], *self.d[:3]]))
        self.stored = index.get(self.a[0]).stored_len
        assert {index.get(i).stored_len for i in self.a + self.b + self.c + self.d + self.e} == {self.stored}

    def objects(self) -> dict[str, int]:
        return {str(p.relative_to(self.root)): p.stat().st_size
                for sub in ("packs", "index", "snapshots", "tmp") for p in (self.root / sub).rglob("*") if p.is_file()}

    def pack_file(self, key: str) -> Path:
        pid = self.pack[key]
        return self.root / "packs" / pid[:2] / f"{pid}.pack"

    def everything_reads(self, ids) -> None:
        repo = Repository.open(self.root)
        for bid in ids:
            assert repo.read_blob(bid) == self.raw[bid]

    def live(self) -> list[bytes]:
        return self.a + [self.t] + self.e[:2] + [self.c[0]] + self.d[:3]


@pytest.fixture
def shaped(tmp_path, monkeypatch) -> Shaped:
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(64 * 1024))
    monkeypatch.delenv("LIFEBOAT_TEST_SIGNAL_AFTER", raising=False)
    return Shaped(tmp_path / "r")


def _ids(uses) -> list[str]:
    return [u.id for u in uses]


class Watched(LocalStorage):
    """A real folder that notes which lock is held whenever a pack is written or deleted."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.seen: list[tuple[str, str, list[str]]] = []

    def _note(self, what: str) -> None:
        exclusive = self.root / "lock"
        holder = json.loads(exclusive.read_bytes()) if exclusive.is_file() else None
        shared = sorted(json.loads(p.read_bytes())["purpose"] for p in self.root.glob("lock/*.json"))
        self.seen.append((what, holder and f"{holder['mode']} {holder['purpose']}", shared))

    def create(self):
        self._note("write")
        return super().create()

    def delete(self, name: str) -> None:
        if name.endswith(".pack"):
            self._note("delete")
        super().delete(name)


def test_packs_are_copied_under_the_shared_lock_and_deleted_under_the_exclusive_one(shaped):
    s = shaped
    watched = Watched(s.root)
    pr.prune(Repository(s.root, s.repo.config, storage=watched))
    writes = [w for w in watched.seen if w[0] == "write"]
    deletes = [w for w in watched.seen if w[0] == "delete"]
    assert writes and {(h, tuple(sh)) for _, h, sh in writes} == {(None, ("prune (repacking)",))}
    assert len(deletes) == 4 and {(h, tuple(sh)) for _, h, sh in deletes} == {("exclusive prune", ())}


def test_at_threshold_100_a_pack_with_any_unused_byte_is_repacked(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(64 * 1024))
    repo = Repository.init(tmp_path / "r")
    rng = random.Random(4)
    big, small = _store(repo, [rng.randbytes(BLOB), rng.randbytes(50)])        # one pack, 99.7 % used
    repo.write_manifest(_manifest("pc", 1, [big]))
    assert len(pr.plan_prune(repo, {big}, 100, 1).repack) == 1
    assert pr.plan_prune(repo, {big}, 99, 1).repack == []


def test_a_pack_filled_to_its_size_exactly_is_sealed_there(shaped, monkeypatch):
    s = shaped
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(len(PACK_MAGIC) + 2 * s.stored))     # two blobs exactly
    result = pr.prune(s.repo)
    assert result.packs_written == 3 and result.packs_repacked == 3 and result.packs_deleted == 4
    new = [n for n in s.objects() if n.endswith(".pack") and Path(n).stem not in s.pack.values()]
    assert sorted(len(read_footer(s.repo.storage, n)) for n in new) == [2, 2, 2]
    s.everything_reads(s.live())


def test_a_blob_two_backups_stored_at_once_goes_with_the_copy_the_index_does_not_use(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(64 * 1024))
    root = tmp_path / "r"
    Repository.init(root)
    rng = random.Random(6)
    x, u, k = (rng.randbytes(BLOB) for _ in range(3))
    one, two = Repository.open(root), Repository.open(root)
    with one.writer() as first, two.writer() as second:       # neither knows the other's blobs yet
        for session, raws in ((first, (x, u)), (second, (x, k))):
            for raw in raws:
                stored, codec = session.compressor.compress(raw)
                session.add(one.blob_id(raw), stored, len(raw), KIND_DATA, codec)
    repo = Repository.open(root)
    xid = repo.blob_id(x)
    packs = {p.stem: p for p in root.glob("packs/*/*.pack")}
    assert len(packs) == 2
    used = repo.index.get(xid).pack_id
    (other,) = set(packs) - {used}
    partner = next(e.id for e in read_footer(repo.storage, f"packs/{used[:2]}/{used}.pack") if e.id != xid)
    repo.write_manifest(_manifest("pc", 1, [xid, partner]))
    result = pr.prune(repo)
    # The other copy of x is garbage, as is the blob beside it: its pack goes, nothing is spared.
    assert result.kept == [] and result.packs_deleted == 1 and not packs[other].exists() and packs[used].exists()
    again = Repository.open(root)
    assert again.read_blob(xid) == x and again.read_blob(partner) in (u, k)


def test_a_pack_kept_for_several_blobs_of_a_late_snapshot_is_said_once(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(64 * 1024))
    root = tmp_path / "r"
    Repository.init(root)
    rng = random.Random(3)
    x, u, k = (rng.randbytes(BLOB) for _ in range(3))
    one, two = Repository.open(root), Repository.open(root)
    with one.writer() as first, two.writer() as second:       # x stored by both: packs (u, x) and (k, x)
        for session, raws in ((first, (u, x)), (second, (k, x))):
            for raw in raws:
                stored, codec = session.compressor.compress(raw)
                session.add(one.blob_id(raw), stored, len(raw), KIND_DATA, codec)
    repo = Repository.open(root)
    xid, uid, kid = (repo.blob_id(r) for r in (x, u, k))
    early, late = sorted(p.stem for p in root.glob("packs/*/*.pack"))
    # The shape the test needs: the index places x in the pack checked second, so the pack
    # checked first holds two blobs the late snapshot needs, its own and x.
    assert repo.index.get(xid).pack_id == late
    assert read_footer(repo.storage, f"packs/{early[:2]}/{early}.pack")[1].id == xid
    saved = []

    def say(line):      # no snapshot uses either pack: a backup saves one that uses all three
        if not saved:
            saved.append(Repository.open(root).write_manifest(_manifest("late", 4, [uid, kid, xid])))

    result = pr.prune(repo, say=say)
    assert saved and result.packs_deleted == 0
    assert result.kept == [f"pack {pid[:16]}: a snapshot saved meanwhile uses it" for pid in (early, late)]
    again = Repository.open(root)
    assert [again.read_blob(i) for i in (uid, kid, xid)] == [u, k, x]


# -- a full drive ---------------------------------------------------------------------------
class SmallDrive(LocalStorage):
    """A real folder on a drive with `capacity` bytes: a write that would take the folder's files
    past it fails as a full filesystem's does (ENOSPC, the writer's scratch file removed)."""

    def __init__(self, root: Path, capacity: int):
        super().__init__(root)
        self.capacity = capacity

    def used(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def create(self) -> FileWriter:
        return _SmallDriveWriter(self)

    def write(self, name: str, data) -> None:
        writer = self.create()
        writer.write(data)
        writer.commit(name)


class _SmallDriveWriter(FileWriter):
    def write(self, data) -> None:
        if self.storage.used() + len(data) > self.storage.capacity:
            self.abort()
            raise write_error(OSError(errno.ENOSPC, "No space left on device"))
        super().write(data)


def _on_small_drive(s: Shaped, room: int) -> Repository:
    drive = SmallDrive(s.root, 0)
    drive.capacity = drive.used() + room
    return Repository(s.root, s.repo.config, storage=drive)


def test_on_a_full_drive_prune_deletes_what_it_can_then_repacks_the_rest(shaped):
    s = shaped
    repo = _on_small_drive(s, 40 * 1024)          # less than one new pack, more once B is gone
    said = []
    result = pr.prune(repo, say=said.append)
    assert said[1] == ("the destination was full: the packs copied so far and the unused ones are deleted; "
                       "repacking the rest")
    assert not s.pack_file("B").exists() and not s.pack_file("C").exists()
    assert not s.pack_file("D").exists() and not s.pack_file("E").exists()
    assert result.packs_deleted == 4 and result.packs_repacked == 3 and result.packs_written == 2
    assert result.index_files_deleted == 4 and result.index_files_written == 2
    assert result.bytes_freed == result.bytes_deleted - result.bytes_written > 0
    assert repo.storage.used() <= repo.storage.capacity
    s.everything_reads(s.live())
    assert pr.prune(Repository.open(s.root)).plan.repack == []


def test_a_pack_kept_in_every_round_on_a_full_drive_is_said_once(shaped):
    s = shaped
    loc = s.repo.index.get(s.d[2])
    _flip(s.pack_file("D"), loc.offset + 100)          # D cannot be repacked: each round keeps it
    _drop_parity(s, "D")
    repo = _on_small_drive(s, 40 * 1024)
    said = []
    result = pr.prune(repo, say=said.append)
    assert any(line.startswith("the destination was full") for line in said)
    assert len(result.kept) == 1 and result.kept[0].startswith(f"pack {s.pack['D'][:16]}: ")
    assert s.pack_file("D").exists() and not s.pack_file("B").exists()
    s.everything_reads([i for i in s.live() if i != s.d[2]])


def test_a_drive_too_full_for_one_pack_with_nothing_to_delete_is_refused(shaped):
    s = shaped
    s.repo.write_manifest(_manifest("all-b", 6, s.b))          # B is used now: nothing to delete
    repo = _on_small_drive(s, 20 * 1024)
    before = s.objects()
    with pytest.raises(NoSpaceError, match="^the destination is too full to repack even one pack: free a little "
                       r"space \(or prune with --repack-threshold 0, which only deletes unused packs\)$"):
        pr.prune(repo)
    assert s.objects() == before
    s.everything_reads(s.live() + s.b)


def test_a_drive_that_fills_up_again_stops_prune_after_what_it_deleted(shaped):
    s = shaped
    repo = _on_small_drive(s, 40 * 1024)
    drive = repo.storage

    def said(line):
        if line.startswith("the destination was full"):     # something else takes the room B left
            drive.capacity = drive.used() + 1024

    with pytest.raises(NoSpaceError, match="^the destination is too full to repack the rest: free a little space, "
                       r"or prune with --repack-threshold 0 \(only unused packs are deleted\)$"):
        pr.prune(repo, say=said)
    assert not s.pack_file("B").exists()
    assert s.pack_file("C").exists() and s.pack_file("D").exists() and s.pack_file("E").exists()
    s.everything_reads(s.live())


def _own_packs(root: Path, groups: int, seed: int) -> tuple[Repository, list[list[bytes]]]:
    """A repository whose packs each hold four blobs of one backup and have an index file of their own."""
    repo = Repository.init(root)
    rng = random.Random(seed)
    return repo, [_store(repo, [rng.randbytes(BLOB) for _ in range(4)]) for _ in range(groups)]


def test_new_packs_whose_index_file_finds_no_room_are_kept_and_found_by_their_footers(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(64 * 1024))
    root = tmp_path / "r"
    repo, (c, d, g) = _own_packs(root, 3, 11)
    repo.write_manifest(_manifest("pc", 1, [c[0], d[0]]))      # C and D 25 % used, G unused
    old = {p.stem for p in root.glob("packs/*/*.pack")}
    drive = SmallDrive(root, 1 << 40)
    small = Repository(root, repo.config, storage=drive)

    def meanwhile(event):
        # The copies of c1 and d1 are sealed in one new pack: then the drive fills up (something
        # else takes the room), so the index file naming that pack cannot be written.
        if {p.stem for p in root.glob("packs/*/*.pack")} - old:
            drive.capacity = drive.used()

    said = []
    result = pr.prune(small, say=said.append, on_event=meanwhile)
    (new,) = {p.stem for p in root.glob("packs/*/*.pack")} - old
    assert {p.stem for p in root.glob("packs/*/*.pack")} == {new}
    assert said[1:] == ["the destination was full: the packs copied so far and the unused ones are deleted; "
                        "repacking the rest"]
    assert result.packs_written == 1 and result.packs_repacked == 2 and result.packs_deleted == 3
    assert result.index_files_written == 0 and result.index_files_deleted == 3 and result.kept == []
    assert not any(pid == new for n in root.glob("index/*.idx") for pid, _ in load_index_file(drive, f"index/{n.name}", None))
    again = Repository.open(root)
    assert again.index.get(c[0]).pack_id == new == again.index.get(d[0]).pack_id
    assert again.read_blob(c[0]) and again.read_blob(d[0])
    assert pr.prune(again).plan.delete == pr.prune(again).plan.repack == []


def test_a_full_drive_where_packs_have_no_index_file_repacks_in_as_many_rounds_as_it_takes(shaped):
    s = shaped
    # Packs a killed backup left without index files: each is known by its footer alone, so a
    # round deletes packs but never an index file.
    for p in (s.root / "index").iterdir():
        p.unlink()
    repo = _on_small_drive(s, 20 * 1024)          # not one new pack; then one, but not two
    said, packs_left = [], []

    def say(line):
        said.append(line)
        if line.startswith("the destination was full"):
            packs_left.append({p.stem for p in s.root.glob("packs/*/*.pack")})

    result = pr.prune(repo, say=say)
    full = [line for line in said if line.startswith("the destination was full")]
    assert len(full) == 2                          # three rounds
    # The first round could only delete B (unused); the second repacked what one pack holds.
    assert packs_left[0] == set(s.pack.values()) - {s.pack["B"]}
    assert len(packs_left[1] - set(s.pack.values())) == 1 and {s.pack["A"], s.pack["T"]} < packs_left[1]
    assert result.packs_deleted == 4 and result.packs_repacked == 3 and result.packs_written == 2
    assert result.index_files_deleted == 0 and result.kept == []
    assert not any(s.pack_file(k).exists() for k in "BCDE")
    assert repo.storage.used() <= repo.storage.capacity
    s.everything_reads(s.live())


def test_the_plan_deletes_unused_packs_and_repacks_those_under_the_threshold(shaped):
    s, repo = shaped, shaped.repo
    refs = pr.References(repo)
    referenced = refs.current()
    assert referenced == set(s.live())
    assert set(refs.per_snapshot) == {s.pc, s.work}
    sizes = {k: s.pack_file(k).stat().st_size for k in s.pack}
    P = s.pack
    plan = pr.plan_prune(repo, referenced, 80, 2)
    assert _ids(plan.delete) == [P["B"]]
    assert _ids(plan.repack) == sorted([P["C"], P["D"], P["E"]])
    by_id = {u.id: u for u in plan.delete + plan.repack}
    for key, used in (("B", 0), ("C", 1), ("D", 3), ("E", 2)):
        use = by_id[P[key]]
        assert use.size == sizes[key] and use.blob_bytes == 4 * s.stored
        assert use.live_bytes == used * s.stored and use.share == used / 4
        assert sorted(e.id for e in use.live) == sorted({"B": [], "C": s.c[:1], "D": s.d[:3], "E": s.e[:2]}[key])
    d_live = sorted(by_id[P["D"]].live, key=lambda e: e.offset)
    footer = {e.id: e for e in read_footer(repo.storage, f"packs/{P['D'][:2]}/{P['D']}.pack")}
    assert [(e.offset, e.stored_len, e.raw_len, e.kind, e.codec) for e in d_live] == \
        [(footer[i].offset, footer[i].stored_len, footer[i].raw_len, footer[i].kind, footer[i].codec) for i in s.d[:3]]
    total = sum(sizes.values())
    live = len(s.live()) * s.stored - s.stored + repo.index.get(s.t).stored_len     # T's blob is smaller
    assert plan.packs == 6 and plan.snapshots == 2 and plan.threshold == 80
    assert plan.bytes_total == total and plan.garbage_bytes == total - live
    assert plan.bytes_to_read == sizes["C"] + sizes["D"] + sizes["E"]
    assert plan.expected_free == sizes["B"] + sizes["C"] + sizes["D"] + sizes["E"] - 6 * s.stored
    assert plan.to_json() == {"threshold": 80, "snapshots": 2, "packs": 6, "packs_to_delete": 1, "packs_to_repack": 3,
                              "bytes_total": total, "garbage_bytes": total - live,
                              "bytes_to_read": plan.bytes_to_read, "expected_free": plan.expected_free}
    assert plan.lines() == [
        f"2 snapshot(s), 6 pack(s), {human_size(total)} stored, {human_size(total - live)} no snapshot uses",
        f"1 pack(s) to delete, 3 to repack (under 80 % still used; {human_size(plan.bytes_to_read)} to read), "
        f"about {human_size(plan.expected_free)} to free"]
    # D is 75 % used: repacked under 76 %, not under 75 %; a pack every blob of which is used never.
    assert _ids(pr.plan_prune(repo, referenced, 76, 2).repack) == sorted([P["C"], P["D"], P["E"]])
    assert _ids(pr.plan_prune(repo, referenced, 75, 2).repack) == sorted([P["C"], P["E"]])
    assert _ids(pr.plan_prune(repo, referenced, 51, 2).repack) == sorted([P["C"], P["E"]])
    assert _ids(pr.plan_prune(repo, referenced, 50, 2).repack) == [P["C"]]
    assert _ids(pr.plan_prune(repo, referenced, 100, 2).repack) == sorted([P["C"], P["D"], P["E"]])
    nothing = pr.plan_prune(repo, referenced, 0, 2)
    assert nothing.repack == [] and _ids(nothing.delete) == [P["B"]]
    for bad in (-1, 101):
        with pytest.raises(UsageError, match=f"^--repack-threshold must be a percentage from 0 to 100, not {bad}$"):
            pr.plan_prune(repo, referenced, bad, 2)


def test_blobs_the_index_does_not_place_are_left_to_verify(shaped):
    s, repo = shaped, shaped.repo
    # Ids no index knows, and blobs of a pack whose file is gone: none counts, none stops the count.
    strangers = {blob_id(bytes([i])) for i in range(30)}
    gone = s.pack_file("E")
    gone.unlink()
    referenced = set(s.live()) | strangers
    plan = pr.plan_prune(repo, referenced, 80, 2)
    assert plan.packs == 5 and s.pack["E"] not in _ids(plan.delete + plan.repack)
    by_id = {u.id: u for u in plan.repack}
    assert by_id[s.pack["D"]].live_bytes == 3 * s.stored and by_id[s.pack["C"]].live_bytes == s.stored
    # A pack with no blob the index knows of (a stray): nothing of it is used, it goes.
    empty = pr.PackUse("x", 10)
    assert empty.share == 0.0


def test_prune_repacks_deletes_and_counts_what_it_did_on_the_drive(shaped):
    s, repo = shaped, shaped.repo
    P = s.pack
    before = s.objects()
    doomed = [P[k] for k in "BCDE"]
    naming = {n for n in before if n.endswith(".idx")
              if any(pid in doomed for pid, _ in load_index_file(repo.storage, n, None))}
    assert len(naming) == 4
    events, said = [], []
    start = pr._changes
    result = pr.prune(repo, on_event=events.append, say=said.append)
    after = s.objects()
    deleted, written = set(before) - set(after), set(after) - set(before)
    assert deleted == {n for n in before if any(pid in n for pid in doomed)} | naming | {n + ".par" for n in naming}
    new_packs = sorted(n for n in written if n.endswith(".pack"))
    new_idx = sorted(n for n in written if n.endswith(".idx"))
    assert len(new_packs) == 2 and len(new_idx) == 2 and not any(n.startswith("tmp/") for n in after)
    assert all(n + ".par" in written for n in new_packs + new_idx)       # each with its parity
    assert result.packs_deleted == 4 and result.packs_repacked == 3 and result.packs_written == 2
    assert result.index_files_written == 2 and result.index_files_deleted == 5 - 1 and result.kept == []
    assert result.bytes_deleted == sum(before[n] for n in deleted)
    assert result.bytes_written == sum(after[n] for n in written)
    assert result.bytes_freed == result.bytes_deleted - result.bytes_written > 0
    assert result.bytes_read == 3 * s.stored + (2 * s.stored) + s.stored + _gaps(s)
    assert pr._changes - start == 2 + 2 + 4 + 4        # each object written or deleted, once
    assert 0 <= result.seconds < 30 and result.seconds == round(result.seconds, 3)
    # Six live blobs, four to a pack: the first new pack holds four, the second two.
    counts = sorted(len(read_footer(repo.storage, n)) for n in new_packs)
    assert counts == [2, 4]
    # Every index file names only packs that exist, and every pack is named by one.
    named = {}
    for n in sorted(n for n in after if n.endswith(".idx")):
        for pid, _ in load_index_file(repo.storage, n, None):
            named[pid] = n
    packs_now = {Path(n).stem for n in after if n.endswith(".pack")}
    assert set(named) == packs_now and P["A"] in packs_now and P["T"] in packs_now
    s.everything_reads(s.live())
    # What was said, and the progress of the repacking: every byte of the packs read.
    assert said == [result.plan.lines()[1]]
    assert events and {e.phase for e in events} == {"repack"} and {e.total for e in events} == {result.plan.bytes_to_read}
    assert events[0].done == 0 or events[0].done == result.plan.repack[0].size
    assert events[-1].done == result.plan.bytes_to_read and {e.stored_new for e in events} == {0}
    js = result.to_json()
    assert js == {"plan": result.plan.to_json(), "packs_deleted": 4, "packs_repacked": 3, "packs_written": 2,
                  "index_files_written": 2, "index_files_deleted": 4, "bytes_read": result.bytes_read,
                  "bytes_written": result.bytes_written, "bytes_deleted": result.bytes_deleted,
                  "seconds": result.seconds, "kept": [], "bytes_freed": result.bytes_freed}
    assert result.lines() == [
        "deleted 4 pack(s) and 4 index file(s), repacked 3 pack(s) into 2",
        f"read {human_size(result.bytes_read)}, wrote {human_size(result.bytes_written)}, "
        f"freed {human_size(result.bytes_freed)} in {result.seconds:.1f} s"]
    # A second prune finds nothing to do, and does nothing.
    again = pr.prune(Repository.open(s.root), say=said.append)
    assert again.plan.delete == again.plan.repack == [] and s.objects() == after and len(said) == 1
    assert again.packs_deleted == again.bytes_deleted == again.bytes_written == 0


def _gaps(s: Shaped) -> int:
    """Bytes between the live blobs of a repacked pack, read across (E's two are neighbours,
    D's three too, C's one alone): none."""
    return 0


def test_a_dry_run_changes_nothing_and_without_counts_snapshots_as_gone(shaped):
    s, repo = shaped, shaped.repo
    before = s.objects()
    said = []
    dry = pr.prune(repo, dry_run=True, say=said.append)
    assert _ids(dry.plan.delete) == [s.pack["B"]] and dry.packs_deleted == 0 and said == []
    assert {k: v for k, v in dry.to_json().items() if k not in ("plan", "seconds")} == {
        "packs_deleted": 0, "packs_repacked": 0, "packs_written": 0, "index_files_written": 0,
        "index_files_deleted": 0, "bytes_read": 0, "bytes_written": 0, "bytes_deleted": 0, "kept": [],
        "bytes_freed": 0}
    gone = pr.prune(repo, dry_run=True, without=frozenset({s.work}))
    # Without "work", C and D hold nothing used: deleted whole, and only E is repacked.
    assert _ids(gone.plan.delete) == sorted(s.pack[k] for k in "BCD") and _ids(gone.plan.repack) == [s.pack["E"]]
    assert gone.plan.snapshots == 1
    assert s.objects() == before
    with pytest.raises(UsageError, match="^only a dry run of prune can leave snapshots out$"):
        pr.prune(repo, without=frozenset({s.work}))
    assert s.objects() == before


def test_a_snapshot_saved_while_prune_repacks_keeps_what_it_uses(shaped):
    s, repo = shaped, shaped.repo
    P = s.pack
    saved = []

    def meanwhile(event):
        if not saved:       # a backup finishing beside the repacking: b1 and b2 (of a pack to delete),
            # c2 (of a pack being repacked, not copied: c2 was unused) and d1 (copied)
            saved.append(Repository.open(s.root).write_manifest(_manifest("late", 4, [s.b[0], s.b[1], s.c[1], s.d[0]])))

    result = pr.prune(repo, on_event=meanwhile)
    assert saved
    assert result.kept == [f"pack {pid[:16]}: a snapshot saved meanwhile uses it" for pid in sorted([P["B"], P["C"]])]
    assert result.packs_deleted == 2 and result.packs_repacked == 2
    assert s.pack_file("B").exists() and s.pack_file("C").exists()
    assert not s.pack_file("D").exists() and not s.pack_file("E").exists()
    s.everything_reads(s.live() + [s.b[0], s.b[1], s.c[1]])
    assert result.lines()[-2:] == [f"kept {k}" for k in result.kept]
    # A second prune then repacks B and C as the new snapshot leaves them.
    again = pr.prune(Repository.open(s.root))
    assert again.kept == [] and again.packs_deleted >= 1
    s.everything_reads(s.live() + [s.b[0], s.c[1]])


def test_a_damaged_blob_keeps_its_pack_and_a_damaged_footer_the_doomed_pack(shaped):
    s, repo = shaped, shaped.repo
    P = s.pack
    # d3, the last live blob of D: found before any blob of D is copied.
    loc = repo.index.get(s.d[2])
    _flip(s.pack_file("D"), loc.offset + 100)
    # B's footer (its last bytes): the plan names B from the index file, the last step reads its footer.
    _flip(s.pack_file("B"), s.pack_file("B").stat().st_size - 40)
    _flip(s.pack_file("B"), s.pack_file("B").stat().st_size - 41)
    _drop_parity(s, "B")
    _drop_parity(s, "D")
    result = pr.prune(repo)
    assert len(result.kept) == 2
    by_pack = {k[5:21]: k for k in result.kept}
    assert by_pack[P["D"][:16]].startswith(f"pack {P['D'][:16]}: ") and \
        by_pack[P["D"][:16]].endswith(" (run lifeboat verify)")
    assert by_pack[P["B"][:16]].startswith(f"pack {P['B'][:16]}: ") and "verify" not in by_pack[P["B"][:16]]
    assert s.pack_file("D").exists() and s.pack_file("B").exists()
    assert not s.pack_file("C").exists() and not s.pack_file("E").exists()
    assert result.packs_repacked == 2 and result.packs_deleted == 2
    s.everything_reads([i for i in s.live() if i != s.d[2]])


def test_a_damaged_footer_spares_its_pack_and_the_others_are_still_checked(shaped):
    s, repo = shaped, shaped.repo
    doomed = sorted("BCDE", key=lambda k: s.pack[k])
    first, last = doomed[0], doomed[-1]
    _flip(s.pack_file(first), s.pack_file(first).stat().st_size - 40)
    _drop_parity(s, first)
    # A snapshot saved during the repacking uses the last doomed pack's fourth blob (never copied).
    late = {"B": s.b, "C": s.c, "D": s.d, "E": s.e}[last][3]
    saved = []

    def meanwhile(event):
        if not saved:
            saved.append(Repository.open(s.root).write_manifest(_manifest("late", 4, [late])))

    # An index file no reader can read sorts first: passed over, left as it is.
    garbage = s.root / "index" / ("0" * 64 + ".idx")
    garbage.write_bytes(b"not an index file")
    result = pr.prune(repo, on_event=meanwhile)
    assert [k[5:21] for k in result.kept] == sorted([s.pack[first][:16], s.pack[last][:16]])
    assert s.pack_file(first).exists() and s.pack_file(last).exists()
    assert garbage.read_bytes() == b"not an index file"
    after = s.objects()
    packs_now = {Path(n).stem for n in after if n.endswith(".pack")}
    for n in after:
        if n.endswith(".idx") and n != f"index/{garbage.name}":
            assert {pid for pid, _ in load_index_file(repo.storage, n, None)} <= packs_now, n
    s.everything_reads(s.live() + [late])


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def _drop_parity(s: Shaped, key: str) -> None:
    Path(str(s.pack_file(key)) + ".par").unlink()


def test_a_damaged_manifest_stops_prune_before_anything_changes(shaped):
    s, repo = shaped, shaped.repo
    bad = s.root / "snapshots" / f"{s.work}.json"
    bad.write_bytes(b"{not json")
    (s.root / "snapshots" / f"{s.work}.json.par").unlink()
    before = s.objects()
    with pytest.raises(DamageError) as err:
        pr.prune(repo)
    assert err.value.message.endswith(": prune needs every snapshot readable to know what is still used, "
                                      "so nothing was deleted (see lifeboat verify)")
    assert s.objects() == before


def test_references_read_each_manifest_once_and_skip_what_is_left_out(shaped):
    s, repo = shaped, shaped.repo
    refs = pr.References(repo)
    assert refs.current(skip={s.work}) == set(s.a + [s.t] + s.e[:2])
    assert set(refs.per_snapshot) == {s.pc}
    # Once read, a manifest is not read again: damage after that is not seen by this prune.
    bad = s.root / "snapshots" / f"{s.pc}.json"
    bad.write_bytes(b"{not json")
    (s.root / "snapshots" / f"{s.pc}.json.par").unlink()
    assert refs.current() == set(s.live())
    late = repo.write_manifest(_manifest("late", 5, [s.b[1]]))
    assert refs.current() == set(s.live()) | {s.b[1]} and set(refs.per_snapshot) == {s.pc, s.work, late}
    with pytest.raises(DamageError):
        pr.References(repo).current()


def test_a_cancel_while_repacking_deletes_nothing_and_leaves_no_pack_open(shaped):
    s, repo = shaped, shaped.repo
    before = s.objects()
    token = CancelToken()
    result = None
    with pytest.raises(Cancelled):
        result = pr.prune(repo, cancel=token, on_event=lambda e: token.cancel())
    assert result is None
    after = s.objects()
    assert set(before) <= set(after)                   # nothing deleted
    assert not any(n.startswith("tmp/") for n in after)
    s.everything_reads(s.live())
    assert not (s.root / "lock").exists() and not list((s.root / "lock").parent.glob("lock/*"))


def _backup_lock(repo: Repository) -> Lock:
    lock = Lock(repo.storage, purpose="backup")
    lock.acquire()
    return lock


def _busy_text(repo: Repository) -> str:
    try:
        Lock(repo.storage, exclusive=True, purpose="probe").acquire()
    except Exception as exc:            # noqa: BLE001 - the BusyError's message is what is wanted
        return exc.message.split(";")[0]
    raise AssertionError("the lock was free")


def _within(seconds: float, call):
    """What `call` raises, from a thread given `seconds` (a prune that never stops waiting fails
    the test instead of holding it up)."""
    out = []

    def run():
        try:
            call()
            out.append(None)
        except BaseException as exc:      # noqa: BLE001 - handed to the test
            out.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert out, f"still running after {seconds} s"
    return out[0]


def test_prune_beside_a_running_backup_repacks_but_deletes_nothing_when_it_cannot_wait(shaped):
    s, repo = shaped, shaped.repo
    lock = _backup_lock(repo)
    try:
        text = _busy_text(repo)
        before = s.objects()
        said = []
        plan_said = pr.plan_prune(repo, set(s.live()), 80, 2).lines()[1]
        repacked = []           # when the repacking's last progress was told: the lock is tried after it
        err = _within(10, lambda: pr.prune(repo, wait=0, say=said.append,
                                           on_event=lambda e: repacked.append(time.monotonic())))
        assert isinstance(err, LockWaitError) and time.monotonic() - repacked[-1] < 0.9
        assert err.message == (f"{text}; waited 0 s for them to finish — nothing was deleted; "
                                     "try again later or give a longer --wait")
        assert said == [plan_said]
        assert set(before) <= set(s.objects())
        with pytest.raises(LockWaitError, match=r"; waited 0\.2 s for them"):
            pr.forget(repo, Policy(last=1), wait=0.2, say=said.append)
        assert said[-1] == f"{text}: waiting up to 0.2 s for them to finish" and len(said) == 2
    finally:
        lock.release()
    assert {s.pc, s.work} == set(repo.snapshot_ids())


# -- forget -------------------------------------------------------------------------------
@pytest.fixture
def history(tmp_path, monkeypatch):
    """Three snapshots of "pc" on three days and one of "laptop", each using a blob all use and
    one of its own; the first also uses x (as the third does) and y (as the laptop's does)."""
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(64 * 1024))
    repo = Repository.init(tmp_path / "r")
    rng = random.Random(9)
    shared, *own, x, y = _store(repo, [rng.randbytes(BLOB) for _ in range(7)])
    uses = [[shared, own[0], x, y], [shared, own[1]], [shared, own[2], x]]
    sids = [repo.write_manifest(_manifest("pc", day, uses[i])) for i, day in enumerate((1, 2, 3))]
    sids.append(repo.write_manifest(_manifest("laptop", 1, [shared, own[3], y])))
    for sid in sids:
        repo.mark_verified(sid)
    return repo, sids, own


def test_forget_judges_each_machine_and_deletes_manifests_and_marks(history):
    repo, (p1, p2, p3, l1), own = history
    root = repo.local_path
    dry = pr.forget(repo, Policy(last=1), dry_run=True)
    assert [(v.id, v.keep) for v in dry.verdicts] == [(l1, True), (p3, True), (p2, False), (p1, False)] or \
        sorted((v.id, v.keep) for v in dry.verdicts) == sorted([(l1, True), (p3, True), (p2, False), (p1, False)])
    assert set(repo.snapshot_ids()) == {p1, p2, p3, l1}
    lines = dry.lines()
    assert lines[-1] == "keep last 1: 2 kept, 2 would remove"
    assert f"  would remove  {p1[:8]}  2026-11-01T00:00:00Z" in lines and "pc:" in lines and "laptop:" in lines
    assert f"  keep    {p3[:8]}  2026-11-03T00:00:00Z  (last 1)" in lines
    js = dry.to_json()
    assert js["dry_run"] is True and js["policy"] == Policy(last=1).to_json() and js["unjudged"] == []
    assert sorted(v["id"] for v in js["remove"]) == sorted([p1, p2])
    assert sorted(v["id"] for v in js["keep"]) == sorted([p3, l1])
    start = pr._changes
    only_pc = pr.forget(repo, Policy(last=2), name="pc")
    assert [v.id for v in only_pc.removed] == [p1] and pr._changes - start == 1
    assert set(repo.snapshot_ids()) == {p2, p3, l1}
    assert not (root / "snapshots" / f"{p1}.json").exists() and not (root / "verified" / f"{p1}.json").exists()
    assert (root / "verified" / f"{p2}.json").exists()
    assert only_pc.lines()[-1] == "keep last 2: 2 kept, 1 removed"
    # A snapshot kept by two rules says both; one marked damaged by verify is judged all the same.
    repo.mark_damaged(p2, ["chunk 0123 is damaged"])
    both = pr.forget(repo, Policy(last=1, daily=1), name="pc", dry_run=True)
    assert both.unjudged == [] and [(v.id, v.keep) for v in both.verdicts] == [(p3, True), (p2, False)]
    newest = both.verdicts[0]
    assert len(newest.reasons) == 2
    assert f"  keep    {p3[:8]}  2026-11-03T00:00:00Z  ({newest.reasons[0]}, {newest.reasons[1]})" in both.lines()
    assert f"  remove  {p1[:8]}  2026-11-01T00:00:00Z" in only_pc.lines()
    assert not (root / "lock").exists()


def test_forget_keeps_a_snapshot_it_cannot_read_and_refuses_an_empty_policy_before_locking(history):
    repo, (p1, p2, p3, l1), own = history
    root = repo.local_path
    (root / "snapshots" / f"{p1}.json").write_bytes(b"{not json")
    (root / "snapshots" / f"{p1}.json.par").unlink()
    result = pr.forget(repo, Policy(last=1))
    assert result.unjudged == [p1[:8]]
    assert f"kept {p1[:8]}: its manifest cannot be read, so no rule judged it" in result.lines()
    assert [v.id for v in result.removed] == [p2] and p1 in repo.snapshot_ids()
    lock = _backup_lock(repo)
    try:
        with pytest.raises(UsageError):
            pr.forget(repo, Policy(), wait=0)
    finally:
        lock.release()


def test_the_preview_counts_the_bytes_only_removed_snapshots_use(history):
    repo, (p1, p2, p3, l1), own = history
    stored = repo.index.get(own[0]).stored_len
    verdicts, freed = pr.forget_preview(repo, Policy(last=1))
    assert sorted(v.id for v in verdicts if not v.keep) == sorted([p1, p2]) and freed == 2 * stored
    assert pr.freed_by_forgetting(repo, Policy(last=1)) == (2, 2 * stored)
    assert pr.freed_by_forgetting(repo, Policy(last=5)) == (0, 0)
    refs = pr.References(repo)
    assert pr.forget_preview(repo, Policy(last=2), refs)[1] == stored and set(refs.per_snapshot) == {p1, p2, p3, l1}
    # A snapshot marked damaged by verify is judged like any other.
    repo.mark_damaged(p3, ["chunk 0123 is damaged"])
    assert pr.freed_by_forgetting(repo, Policy(last=1)) == (2, 2 * stored)
    # Without the third snapshot, x is the first one's alone.
    (repo.local_path / "snapshots" / f"{p3}.json").unlink()
    (repo.local_path / "snapshots" / f"{p3}.json.par").unlink()
    assert pr.freed_by_forgetting(repo, Policy(last=1)) == (1, 2 * stored)
    # A snapshot whose manifest cannot be read is not judged.
    (repo.local_path / "snapshots" / f"{p1}.json").write_bytes(b"{not json")
    (repo.local_path / "snapshots" / f"{p1}.json.par").unlink()
    verdicts, freed = pr.forget_preview(repo, Policy(last=5))
    assert sorted(v.id for v in verdicts) == sorted([p2, l1]) and freed == 0


# -- slower: a lock waited for, and a child process stopped and killed --------------------
def test_the_exclusive_lock_is_waited_for_and_said_once(shaped):
    s, repo = shaped, shaped.repo
    lock = _backup_lock(repo)
    text = _busy_text(repo)
    # Free after 1.2 s: taken at the third try (0, 1 and 1.5 s), said at the first only.
    timer = threading.Timer(1.2, lock.release)
    timer.start()
    said = []
    t0 = time.monotonic()
    try:
        result = pr.forget(repo, Policy(last=1), name="work", wait=1.5, say=said.append)
    finally:
        timer.join()
    assert 1.4 < time.monotonic() - t0 < 2.4
    assert said == [f"{text}: waiting up to 1.5 s for them to finish"]
    assert [v.id for v in result.removed] == [] and not (s.root / "lock").exists()


def test_a_freed_exclusive_lock_is_taken_within_a_second(shaped):
    s, repo = shaped, shaped.repo
    lock = _backup_lock(repo)
    freed = []

    def say(line):      # told once, at the first refusal: the backup finishes at that moment
        lock.release()
        freed.append(time.monotonic())

    with pr.exclusive_lock(repo, 60, say):
        taken = time.monotonic()
    assert len(freed) == 1 and 0.9 <= taken - freed[0] < 1.9      # the next try, not one 2 s on


def test_the_default_wait_is_the_one_the_readme_and_the_command_line_give():
    readme = (ROOT / "README.md").read_text()
    promised = float(re.search(r"waits up to `--wait` seconds \(default (\d+)\)", readme).group(1))
    parser = build_parser()
    for argv in (["prune", "--repo", "r"], ["forget", "--repo", "r", "--keep-last", "1"]):
        assert parser.parse_args(argv).wait == promised
    sub = next(a for a in parser._actions if a.dest == "command").choices["prune"]
    assert f"before deleting (default {promised:g})" in " ".join(sub.format_help().split())
    # A caller of the library that gives no wait waits as long as the command line does.
    for call in (pr.prune, pr.forget):
        assert inspect.signature(call).parameters["wait"].default == promised


def test_the_change_counter_stops_or_kills_the_process_at_the_nth_change():
    code = ("import sys; from recovery.repo import prune as p\n"
            "for i in range(5):\n"
            "    print(i, flush=True); p.test_hook_count_change()\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), LIFEBOAT_TEST_SIGNAL_AFTER="3:KILL")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=20)
    assert run.returncode == -signal.SIGKILL and run.stdout.split() == ["0", "1", "2"]
    env["LIFEBOAT_TEST_SIGNAL_AFTER"] = "2:STOP"
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        _, status = os.waitpid(child.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGSTOP
    finally:
        child.kill()
        child.wait()
    assert child.stdout.read().split() == ["0", "1"]
    child.stdout.close()
    del env["LIFEBOAT_TEST_SIGNAL_AFTER"]
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=20)
    assert run.returncode == 0 and run.stdout.split() == ["0", "1", "2", "3", "4"]
