"""Forgetting snapshots and pruning what no snapshot uses any more.

forget: under the exclusive lock, judge every machine's snapshots by a retention policy
(recovery/repo/retention.py) and delete the manifests (then the check marks) of those it does
not keep. Their blobs stay until prune.

prune, in an order that keeps every snapshot readable if it is killed at any instant:

1. (shared lock, beside running backups: it only adds data) read every manifest and chunk
   table: the referenced blobs. A pack none of whose blobs is referenced is garbage; a pack
   whose referenced share (by stored bytes) is under the threshold is repacked: its live blobs
   are read, hash-checked and copied verbatim (stored bytes, as PackWriter.add takes them)
   into new packs, then an index file naming those new packs is written.
2. (exclusive lock, waiting a bounded time for running backups to finish) list the snapshots
   again and recompute what is referenced: a backup that finished meanwhile may use blobs of
   packs chosen in step 1, and such a pack is then kept. Then write one index file listing
   the surviving packs of every index file that names a doomed pack, delete those index files,
   and only then delete the doomed packs (packs.delete_pack).

At every instant each referenced blob lies in a pack that exists and that an index file or
its own footer describes. The space freed is measured from the storage: the sizes of the
objects deleted minus those of the objects written.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

from recovery.events import CancelToken, EventSink, Meter, ignore
from recovery.errors import BusyError, DamageError, LockWaitError, NoSpaceError, UsageError
from recovery.repo.format import BlobEntry
from recovery.repo.index import encode_index_file, load_index_file
from recovery.repo.parity import parity_name, write_protected
from recovery.repo.lock import Lock
from recovery.repo.manifest import Manifest
from recovery.repo.packs import PackBuffers, PackWriter, delete_pack, pack_name, pack_objects, read_footer
from recovery.repo.repository import Repository, pack_size
from recovery.repo.retention import Policy, Verdict, judge
from recovery.storage.base import StorageError
from recovery.units import human_size

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 80      # repack a pack when under 80 % of its bytes are still referenced
DEFAULT_WAIT = 300.0        # seconds to wait for running backups before deleting

Say = Callable[[str], None]


def _quiet(_line: str) -> None:
    pass


# -- test hook ------------------------------------------------------------------------------
# The crash-safety tests stop or kill a real prune right after its N-th change to the
# repository (an object written or deleted): LIFEBOAT_TEST_SIGNAL_AFTER="N:KILL" or "N:STOP".
# Unset, it does nothing.
_changes = 0


def test_hook_count_change() -> None:
    global _changes
    _changes += 1
    when, _, sig = os.environ.get("LIFEBOAT_TEST_SIGNAL_AFTER", "").partition(":")
    if when and _changes == int(when):
        os.kill(os.getpid(), signal.SIGSTOP if sig == "STOP" else signal.SIGKILL)


# -- locks ----------------------------------------------------------------------------------
@contextmanager
def exclusive_lock(repo: Repository, wait: float, say: Say):
    """Hold the exclusive lock, waiting up to `wait` seconds (saying so once) while backups run."""
    lock = _take_exclusive(repo, wait, say)
    try:
        yield lock
    finally:
        lock.release()


def _take_exclusive(repo: Repository, wait: float, say: Say) -> Lock:
    deadline = time.monotonic() + max(wait, 0.0)
    told = False
    while True:
        lock = Lock(repo.storage, exclusive=True, purpose="prune")
        try:
            lock.acquire()
            return lock
        except BusyError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockWaitError(f"{exc.message.split(';')[0]}; waited {wait:g} s for them to finish — "
                                    "nothing was deleted; try again later or give a longer --wait") from None
            if not told:
                say(f"{exc.message.split(';')[0]}: waiting up to {wait:g} s for them to finish")
                told = True
            time.sleep(min(1.0, left))


# -- what snapshots use ---------------------------------------------------------------------
def snapshot_blobs(repo: Repository, manifest: Manifest) -> set[bytes]:
    """Every blob a snapshot needs: boot areas, range maps, chunk tables and the chunks they name."""
    from recovery.verify import chunk_table, table_ids

    ids = {bytes.fromhex(b.blob) for b in manifest.boot_areas}
    for part in manifest.partitions:
        ids.update(bytes.fromhex(b) for b in part.ranges)
        ids.update(bytes.fromhex(b) for b in part.chunks)
        ids.update(bid for _, bid in table_ids(chunk_table(repo, part)))
    ids.update(bytes.fromhex(b) for b in manifest.location_blob_ids())
    return ids


class References:
    """The blobs the repository's snapshots use, computed once per snapshot and kept, so a
    second look (after a backup finished) reads only the new manifests."""

    def __init__(self, repo: Repository):
        self.repo = repo
        self.per_snapshot: dict[str, set[bytes]] = {}

    def current(self, skip: set[str] = frozenset()) -> set[bytes]:
        ids = [s for s in self.repo.snapshot_ids() if s not in skip]
        for sid in ids:
            if sid not in self.per_snapshot:
                try:
                    self.per_snapshot[sid] = snapshot_blobs(self.repo, self.repo.load_manifest(sid))
                except DamageError as exc:
                    raise DamageError(f"{exc.message}: prune needs every snapshot readable to know what "
                                      "is still used, so nothing was deleted (see lifeboat verify)") from None
        out: set[bytes] = set()
        for sid in ids:
            out |= self.per_snapshot[sid]
        return out


# -- the plan -------------------------------------------------------------------------------
@dataclass
class PackUse:
    id: str
    size: int                                     # the pack object's size in storage
    blob_bytes: int = 0                           # stored bytes of all its blobs
    live: list[BlobEntry] = field(default_factory=list)   # referenced blobs whose copy is here
    live_bytes: int = 0

    @property
    def share(self) -> float:
        """The referenced part of its blobs' bytes (the footer is overhead any pack has)."""
        return self.live_bytes / self.blob_bytes if self.blob_bytes else 0.0


@dataclass
class PrunePlan:
    threshold: int
    snapshots: int
    packs: int
    delete: list[PackUse]           # no referenced blob
    repack: list[PackUse]           # referenced share under the threshold
    garbage_bytes: int              # bytes of packs not referenced (whole packs and the rest)
    bytes_total: int

    @property
    def bytes_to_read(self) -> int:
        return sum(p.size for p in self.repack)

    @property
    def expected_free(self) -> int:
        """Bytes the plan frees, before index files: doomed packs minus the live bytes copied."""
        return sum(p.size for p in self.delete) + sum(p.size - p.live_bytes for p in self.repack)

    def to_json(self) -> dict:
        return {"threshold": self.threshold, "snapshots": self.snapshots, "packs": self.packs,
                "packs_to_delete": len(self.delete), "packs_to_repack": len(self.repack),
                "bytes_total": self.bytes_total, "garbage_bytes": self.garbage_bytes,
                "bytes_to_read": self.bytes_to_read, "expected_free": self.expected_free}

    def lines(self) -> list[str]:
        return [f"{self.snapshots} snapshot(s), {self.packs} pack(s), {human_size(self.bytes_total)} stored, "
                f"{human_size(self.garbage_bytes)} no snapshot uses",
                f"{len(self.delete)} pack(s) to delete, {len(self.repack)} to repack "
                f"(under {self.threshold} % still used; {human_size(self.bytes_to_read)} to read), "
                f"about {human_size(self.expected_free)} to free"]


def _pack_sizes(repo: Repository) -> dict[str, int]:
    sizes = {}
    for info in repo.storage.list("packs/"):
        if info.name.endswith(".pack"):
            sizes[info.name.rpartition("/")[2][: -len(".pack")]] = info.size
    return sizes


def plan_prune(repo: Repository, referenced: set[bytes], threshold: int, snapshots: int) -> PrunePlan:
    """Which packs to delete and which to repack, from the index and the packs listed now.
    A blob stored twice counts as live in the pack the index finds it in; the other copy is
    garbage."""
    if not 0 <= threshold <= 100:
        raise UsageError(f"--repack-threshold must be a percentage from 0 to 100, not {threshold}")
    index = repo.reload_index()
    sizes = _pack_sizes(repo)
    totals = index.pack_totals()
    uses = {pid: PackUse(pid, size, totals.get(pid, (0, 0))[1]) for pid, size in sizes.items()}
    for bid in referenced:
        loc = index.get(bid)
        if loc is None or loc.pack_id not in uses:
            continue              # missing blobs are verify's to report; prune deletes none
        use = uses[loc.pack_id]
        use.live.append(BlobEntry(bid, loc.offset, loc.stored_len, loc.raw_len, loc.kind, loc.codec))
        use.live_bytes += loc.stored_len
    delete = sorted((u for u in uses.values() if not u.live), key=lambda u: u.id)
    # A pack whose every blob is referenced is never repacked: copied whole in the same order
    # it would be the same pack, with the same name.
    repack = sorted((u for u in uses.values()
                     if u.live and u.live_bytes < u.blob_bytes and u.share * 100 < threshold), key=lambda u: u.id)
    total = sum(sizes.values())
    live = sum(u.live_bytes for u in uses.values())
    return PrunePlan(threshold, snapshots, len(uses), delete, repack, total - live, total)


# -- doing it -------------------------------------------------------------------------------
@dataclass
class PruneResult:
    plan: PrunePlan
    packs_deleted: int = 0
    packs_repacked: int = 0
    packs_written: int = 0
    index_files_written: int = 0
    index_files_deleted: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    bytes_deleted: int = 0
    seconds: float = 0.0
    kept: list[str] = field(default_factory=list)      # packs spared at the last step, and why

    @property
    def bytes_freed(self) -> int:
        return self.bytes_deleted - self.bytes_written

    def to_json(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "plan"}
        return {"plan": self.plan.to_json(), **out, "bytes_freed": self.bytes_freed}

    def lines(self) -> list[str]:
        out = [f"deleted {self.packs_deleted} pack(s) and {self.index_files_deleted} index file(s), "
               f"repacked {self.packs_repacked} pack(s) into {self.packs_written}",
               f"read {human_size(self.bytes_read)}, wrote {human_size(self.bytes_written)}, "
               f"freed {human_size(self.bytes_freed)} in {self.seconds:.1f} s"]
        out += [f"kept {k}" for k in self.kept]
        return out


class _Repacker:
    """Copies live blobs verbatim into new packs of the usual size."""

    def __init__(self, repo: Repository, result: PruneResult):
        self.repo = repo
        self.result = result
        self.pack_size = pack_size()
        self.writer: PackWriter | None = None
        # one pack at a time: one buffer, reused (format v2 keeps each pack's bytes for its parity)
        self.buffers = PackBuffers(self.pack_size + self.pack_size // 8 + 2 * 1024 * 1024)
        self.written: list[tuple[str, list[BlobEntry]]] = []
        self._pending: list[str] = []     # old packs copied whole, some blobs not sealed yet
        self.done: list[str] = []         # old packs every live blob of which is in a sealed pack

    def copy(self, use: PackUse) -> bool:
        """Read and check the live blobs of one pack and add them; False (nothing added) when
        one of them does not read back whole, so the old pack stays. The pack joins `done`
        once the last of its blobs is in a sealed pack."""
        live = sorted(use.live, key=lambda e: e.offset)
        start, end = live[0].offset, max(e.offset + e.stored_len for e in live)
        data = self.repo.storage.read(pack_name(use.id), start, end - start)
        self.result.bytes_read += len(data)
        blobs = []
        for e in live:
            stored = data[e.offset - start: e.offset - start + e.stored_len]
            try:
                self.repo.decode(e.id, stored, e.raw_len, e.codec, e.kind)
            except DamageError as exc:
                self.result.kept.append(f"pack {use.id[:16]}: {exc.message} (run lifeboat verify)")
                return False
            blobs.append((e, stored))
        for e, stored in blobs:
            if self.writer is None:
                self.writer = PackWriter(self.repo.storage, self.repo.sealer, parity=self.repo.parity,
                                         buffers=self.buffers)
            self.writer.add(e.id, stored, e.raw_len, e.kind, e.codec)
            if self.writer.size >= self.pack_size:
                self.seal()
        self._pending.append(use.id)
        return True

    def seal(self) -> None:
        if self.writer is None or not self.writer.entries:
            if self.writer is not None:
                self.writer.abort()
                self.writer = None
            self.done += self._pending     # no blob is waiting in an open pack
            self._pending = []
            return
        writer, self.writer = self.writer, None
        pack_id, entries = writer.finish()
        self.done += self._pending
        self._pending = []
        test_hook_count_change()
        self.written.append((pack_id, entries))
        self.result.packs_written += 1
        self.result.bytes_written += stored_size(self.repo.storage, pack_objects(pack_id))   # with its parity

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


def stored_size(storage, names) -> int:
    """Bytes the storage holds under `names` (those that exist): what was really written."""
    total = 0
    for name in names:
        try:
            total += storage.size(name)
        except FileNotFoundError:
            pass
    return total


def _write_index(repo: Repository, packs: list[tuple[str, list[BlobEntry]]], result: PruneResult) -> None:
    name, body = encode_index_file(packs, repo.sealer)
    write_protected(repo.storage, name, body, repo.parity)
    if repo.index_cache:
        repo.index_cache.put(name, body)
    test_hook_count_change()
    result.index_files_written += 1
    result.bytes_written += stored_size(repo.storage, [name, parity_name(name)])


def prune(repo: Repository, *, threshold: int = DEFAULT_THRESHOLD, dry_run: bool = False,
          wait: float = DEFAULT_WAIT, say: Say = _quiet, on_event: EventSink = ignore,
          cancel: CancelToken | None = None, without: frozenset[str] = frozenset()) -> PruneResult:
    """One round, or on a full drive as many as make progress: each repacks what fits, then
    deletes what it replaced (and the unused packs), making room for the next. `without`: for
    a dry run, snapshots to count as gone already (what a forget would remove)."""
    if without and not dry_run:
        raise UsageError("only a dry run of prune can leave snapshots out")
    started = time.monotonic()
    result, full = _round(repo, threshold, dry_run, wait, say, on_event, cancel, without)
    while full:
        if not (result.packs_deleted or result.index_files_deleted):
            raise NoSpaceError("the destination is too full to repack even one pack: free a little space "
                               "(or prune with --repack-threshold 0, which only deletes unused packs)")
        say("the destination was full: the packs copied so far and the unused ones are deleted; "
            "repacking the rest")
        more, full = _round(repo, threshold, dry_run, wait, say, on_event, cancel, without)
        for key in ("packs_deleted", "packs_repacked", "packs_written", "index_files_written",
                    "index_files_deleted", "bytes_read", "bytes_written", "bytes_deleted"):
            setattr(result, key, getattr(result, key) + getattr(more, key))
        result.kept += [k for k in more.kept if k not in result.kept]     # a pack kept again is said once
        if not (more.packs_deleted or more.index_files_deleted) and full:
            raise NoSpaceError("the destination is too full to repack the rest: free a little space, or prune "
                               "with --repack-threshold 0 (only unused packs are deleted)")
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _round(repo: Repository, threshold: int, dry_run: bool, wait: float, say: Say,
           on_event: EventSink, cancel: CancelToken | None,
           without: frozenset[str] = frozenset()) -> tuple[PruneResult, bool]:
    """Plan, repack and delete once; also whether the drive filled up while repacking."""
    refs = References(repo)
    with Lock(repo.storage, purpose="prune (repacking)"):   # shared: backups may run beside this part
        referenced = refs.current(skip=without)
        plan = plan_prune(repo, referenced, threshold, len(refs.per_snapshot))
        result = PruneResult(plan)
        if dry_run or not (plan.delete or plan.repack):
            return result, False
        say(plan.lines()[1])
        meter = Meter("repack", plan.bytes_to_read, on_event)
        repacker = _Repacker(repo, result)
        full = False
        try:
            for use in plan.repack:
                if cancel is not None:
                    cancel.check()               # stopping here leaves copies, never a gap
                repacker.copy(use)
                meter.add(use.size, 0)
            repacker.seal()
            meter.finish()
        except NoSpaceError:
            repacker.abort()                     # what was sealed stays, and is used below
            full = True
        except BaseException:
            repacker.abort()
            raise
        if repacker.written:
            try:
                _write_index(repo, repacker.written, result)
            except NoSpaceError:
                full = True                      # the new packs are found through their footers
    repacked = repacker.done                     # only packs whose live blobs were all sealed
    with exclusive_lock(repo, wait, say):
        deleted = _finish(repo, refs, [u.id for u in plan.delete] + repacked, repacker.written, result)
    result.packs_repacked = len(deleted & set(repacked))
    return result, full


def _finish(repo: Repository, refs: References, doomed: list[str],
            new_packs: list[tuple[str, list[BlobEntry]]], result: PruneResult) -> set[str]:
    """Under the exclusive lock: what is referenced now; spare any doomed pack holding a blob a
    snapshot uses that has no copy elsewhere; then index file, old index files, old packs."""
    index = repo.reload_index()           # first: a new snapshot's chunk tables are in new packs
    referenced = refs.current()
    sizes = _pack_sizes(repo)
    # A new pack may carry an old one's name (the same blobs in the same order): it stays.
    doomed_set = set(doomed) & set(sizes) - {pack_id for pack_id, _ in new_packs}
    copies = {e.id for _, entries in new_packs for e in entries}
    # The blobs of each doomed pack (its footer, as the index read it: index files or footer).
    for pack_id in sorted(doomed_set):
        try:
            holds = _pack_entries(repo, pack_id)
        except DamageError as exc:
            doomed_set.discard(pack_id)
            result.kept.append(f"pack {pack_id[:16]}: {exc.message}")
            continue
        for e in holds:
            if e.id not in referenced or e.id in copies:
                continue
            loc = index.get(e.id)
            if loc is None or loc.pack_id in doomed_set:
                doomed_set.discard(pack_id)
                result.kept.append(f"pack {pack_id[:16]}: a snapshot saved meanwhile uses it")
                break
    # Index files that name a doomed pack are replaced by one naming what else they list.
    superseded: list[tuple[str, int]] = []
    survivors: dict[str, list[BlobEntry]] = {}
    for info in sorted(repo.storage.list("index/"), key=lambda i: i.name):
        if not info.name.endswith(".idx"):
            continue
        try:
            packs = load_index_file(repo.storage, info.name, repo.sealer)
        except (DamageError, FileNotFoundError, StorageError):
            continue              # unreadable: readers ignore it already
        if any(pid in doomed_set for pid, _ in packs):
            superseded.append((info.name, info.size))
            for pid, raw in packs:
                if pid not in doomed_set and pid in sizes:
                    survivors.setdefault(pid, BlobEntry.unpack_all(bytes(raw)))
    if survivors:
        _write_index(repo, sorted(survivors.items()), result)
    for name, size in superseded:
        parity_size = stored_size(repo.storage, [parity_name(name)])
        repo.storage.delete(name)
        repo.storage.delete(parity_name(name))            # its parity, if any
        test_hook_count_change()
        result.index_files_deleted += 1
        result.bytes_deleted += size + parity_size
    for pack_id in sorted(doomed_set):
        result.bytes_deleted += delete_pack(repo.storage, pack_id)
        test_hook_count_change()
        result.packs_deleted += 1
    repo.reload_index()
    return doomed_set


def _pack_entries(repo: Repository, pack_id: str) -> list[BlobEntry]:
    return read_footer(repo.storage, pack_name(pack_id), sealer=repo.sealer)


# -- forget ---------------------------------------------------------------------------------
@dataclass
class ForgetResult:
    policy: Policy
    verdicts: list[Verdict]
    dry_run: bool
    unjudged: list[str] = field(default_factory=list)    # snapshots whose manifest cannot be read

    @property
    def removed(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.keep]

    def to_json(self) -> dict:
        return {"policy": self.policy.to_json(), "dry_run": self.dry_run,
                "keep": [v.to_json() for v in self.verdicts if v.keep],
                "remove": [v.to_json() for v in self.removed], "unjudged": self.unjudged}

    def lines(self) -> list[str]:
        out = []
        name = None
        for v in self.verdicts:
            if v.name != name:
                name = v.name
                out.append(f"{name}:")
            if v.keep:
                out.append(f"  keep    {v.id[:8]}  {v.created}  ({', '.join(v.reasons)})")
            else:
                out.append(f"  {'would remove' if self.dry_run else 'remove'}  {v.id[:8]}  {v.created}")
        out += [f"kept {u}: its manifest cannot be read, so no rule judged it" for u in self.unjudged]
        verb = "would remove" if self.dry_run else "removed"
        out.append(f"{self.policy.describe()}: {len(self.verdicts) - len(self.removed)} kept, "
                   f"{len(self.removed)} {verb}")
        return out


def forget(repo: Repository, policy: Policy, *, name: str | None = None, dry_run: bool = False,
           wait: float = DEFAULT_WAIT, say: Say = _quiet) -> ForgetResult:
    """Judge the snapshots (of `name`, or of every machine) and delete the manifests of those the
    policy does not keep, under the exclusive lock (taken before judging, so a backup finishing
    meanwhile is judged too)."""
    if policy.empty:
        judge([], policy)                        # the usage error, before any lock is taken
    if dry_run:
        return _judge(repo, policy, name, True)
    with exclusive_lock(repo, wait, say):
        result = _judge(repo, policy, name, False)
        for v in result.removed:
            repo.delete_snapshot(v.id)
            test_hook_count_change()
    return result


def _judge(repo: Repository, policy: Policy, name: str | None, dry_run: bool) -> ForgetResult:
    snaps = repo.snapshots(name)
    unjudged = [f"{s.short_id}" for s in snaps if s.damaged and s.name == "(damaged)"]
    snaps = [s for s in snaps if not (s.damaged and s.name == "(damaged)")]
    return ForgetResult(policy, judge(snaps, policy), dry_run, unjudged)


def forget_preview(repo: Repository, policy: Policy, refs: References | None = None) -> tuple[list[Verdict], int]:
    """The verdicts a policy gives now and the stored bytes of the blobs only the snapshots it
    removes use: what forget followed by prune would free, computed from the manifests and the
    index (a pack left mostly used, under the repack threshold, may keep a little of it).
    `refs` keeps what each snapshot uses between calls (a screen trying several policies)."""
    refs = refs or References(repo)
    snaps = [s for s in repo.snapshots() if not (s.damaged and s.name == "(damaged)")]
    verdicts = judge(snaps, policy)
    gone = {v.id for v in verdicts if not v.keep}
    if not gone:
        return verdicts, 0
    refs.current()
    kept: set[bytes] = set()
    for sid, ids in refs.per_snapshot.items():
        if sid not in gone:
            kept |= ids
    only_gone: set[bytes] = set()
    for sid in gone:
        only_gone |= refs.per_snapshot[sid] - kept
    index = repo.index
    return verdicts, sum(loc.stored_len for loc in map(index.get, only_gone) if loc is not None)


def freed_by_forgetting(repo: Repository, policy: Policy) -> tuple[int, int]:
    """(snapshots `policy` would remove, bytes forget and prune would then free)."""
    verdicts, freed = forget_preview(repo, policy)
    return sum(1 for v in verdicts if not v.keep), freed


__all__ = ["DEFAULT_THRESHOLD", "DEFAULT_WAIT", "ForgetResult", "PrunePlan", "PruneResult", "forget",
           "forget_preview", "freed_by_forgetting", "plan_prune", "prune"]
