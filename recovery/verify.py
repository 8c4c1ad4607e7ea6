"""Verify: re-read every chunk that snapshots reference, check each hash, name what is damaged."""

from __future__ import annotations

import threading
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable

from recovery.errors import DamageError, LifeboatError
from recovery.events import CancelToken, EventSink, Meter, ignore
from recovery.repo.format import ID_SIZE, NO_DATA
from recovery.repo.locations import LocationCheck
from recovery.repo.manifest import Manifest, PartitionImage, decode_ranges
from recovery.repo.packs import WrittenPack, pack_name, read_footer
from recovery.repo.ranges import coalesce
from recovery.repo.repository import Repository
from recovery.stages import StageClock
from recovery.repo.scrub import ObjectRepair, scrub
from recovery.storage.base import UnreachableError
from recovery.workers import ordered_map


@dataclass(frozen=True)
class Damage:
    snapshot: str
    partition: int | None
    message: str

    def to_json(self) -> dict:
        return {"snapshot": self.snapshot, "partition": self.partition, "message": self.message}


@dataclass
class VerifyReport:
    ok: bool
    checked: list[str] = field(default_factory=list)
    damaged: list[Damage] = field(default_factory=list)
    bytes_checked: int = 0
    repairs: list[ObjectRepair] = field(default_factory=list)   # what the parity check found
    notes: list[str] = field(default_factory=list)              # worth saying, not damage

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "damaged": [d.to_json() for d in self.damaged],
            "repairs": [r.to_json() for r in self.repairs],
            "bytes_checked": self.bytes_checked,
            "notes": self.notes,
        }


def chunk_table(repo: Repository, part: PartitionImage) -> bytes:
    """A partition's chunk table (one 32-byte id per window), each piece hash-checked."""
    return b"".join(repo.read_blob(bytes.fromhex(b)) for b in part.chunks)


def used_ranges(repo: Repository, part: PartitionImage) -> list[tuple[int, int]]:
    return decode_ranges(b"".join(repo.read_blob(bytes.fromhex(b)) for b in part.ranges))


def table_ids(table: bytes):
    """(window, id) for every window that holds data."""
    for w in range(len(table) // ID_SIZE):
        bid = table[w * ID_SIZE : (w + 1) * ID_SIZE]
        if bid != NO_DATA:
            yield w, bid


# A read covers the wanted blobs of one pack from the first to the last, unless a gap of
# unwanted bytes between two of them is larger than GAP (then it starts a new read), or the
# read would pass REGION (then too): a few reads per pack, each in memory once (ranges.coalesce).
GAP = 256 * 1024
REGION = 8 * 1024 * 1024
_buffers = threading.local()


def _buffer(size: int) -> memoryview:
    """This thread's read buffer, at least `size` bytes; reused so no read faults in fresh pages."""
    buf = getattr(_buffers, "buf", None)
    if buf is None or len(buf) < size:
        buf = _buffers.buf = memoryview(bytearray(max(size, REGION)))
    return buf[:size]


def _prove_region(repo: Repository, region) -> tuple[set[bytes], int]:
    """One read of a pack region, then decode and hash each wanted blob in it (slices of the
    buffer, no copies). Returns the ids that fail and the stored bytes they cover."""
    pack_id, start, length, members = region.pack_id, region.start, region.length, region.members
    bad: set[bytes] = set()
    nbytes = sum(loc.stored_len for _, loc in members)
    view = _buffer(length)
    try:
        # Fewer bytes than asked when the pack is shorter than the index says.
        got = repo.storage.read_into(pack_name(pack_id), start, view)
    except UnreachableError:
        raise                             # the server is away: that proves nothing damaged
    except (OSError, LifeboatError):
        got = 0          # unreadable (bad sectors): each blob from the pack repaired from its parity
    for bid, loc in members:
        lo = loc.offset - start
        hi = lo + loc.stored_len
        try:
            if hi > got:
                raise DamageError("short")
            repo.decode(bid, view[lo:hi], loc.raw_len, loc.codec, loc.kind)
        except DamageError:
            # Read it again from the pack repaired in memory from its parity, if it has one.
            stored = repo.stored_from_repaired(loc)
            if stored is None or not _decodes(repo, bid, stored, loc):
                bad.add(bid)
    return bad, nbytes


def _decodes(repo: Repository, bid: bytes, stored: bytes, loc) -> bool:
    try:
        repo.decode(bid, stored, loc.raw_len, loc.codec, loc.kind)
    except DamageError:
        return False
    return True


def prove_blobs(
    repo: Repository,
    ids: Iterable[bytes],
    *,
    on_event: EventSink | None = None,
    cancel: CancelToken | None = None,
    phase: str = "proof",
) -> set[bytes]:
    """Read every pack holding one of `ids` once, decode and hash each wanted blob, on every
    core; return the ids that are missing or damaged. Emits Progress(phase, ...) events
    (done/total: stored bytes proven / to prove). Only the byte spans of the wanted blobs
    are read, in a few reads per pack; locations come from the repository's index, as
    every reader (restore) finds them."""
    sink = on_event or ignore
    cancel = cancel or CancelToken()
    regions, bad, total = coalesce(repo.index, ids, GAP, REGION)
    meter = Meter(phase, total, sink)
    meter.add(0, force=True)
    # Over a network each read waits a round trip: many in flight hide it.
    remote = repo.storage.parallelism if repo.storage.remote else None
    for damaged, nbytes in ordered_map(lambda region: _prove_region(repo, region), regions, cancel,
                                       io_bound=True, cores=remote):
        bad |= damaged
        meter.add(nbytes)
    meter.finish()
    return bad


def verify(
    repo: Repository,
    snapshot_ids: list[str] | None = None,
    *,
    on_event: EventSink | None = None,
    cancel: CancelToken | None = None,
    repair: bool = False,
) -> VerifyReport:
    """Check every object the snapshots use against its parity (format v2; with `repair`,
    write repaired objects back), then decode and hash every chunk they reference. Under the
    shared lock: a prune beside it would make packs vanish that it then calls missing."""
    with repo.reading("verify"):
        return _verify(repo, snapshot_ids, on_event, cancel, repair)


def _verify(repo: Repository, snapshot_ids: list[str] | None, on_event: EventSink | None,
            cancel: CancelToken | None, repair: bool) -> VerifyReport:
    sink = on_event or ignore
    cancel = cancel or CancelToken()
    index = repo.reload_index()
    ids = snapshot_ids if snapshot_ids is not None else repo.snapshot_ids()
    report = VerifyReport(ok=True)
    # blob id -> places that need it: (snapshot, partition number, window)
    needed: dict[bytes, list[tuple[str, int, int]]] = defaultdict(list)
    chunk_size: dict[str, int] = {}
    places = LocationCheck(repo)
    for sid in ids:
        report.checked.append(sid)
        try:
            manifest: Manifest = repo.load_manifest(sid)
        except DamageError as exc:
            report.damaged.append(Damage(sid, None, exc.message))
            continue
        chunk_size[sid] = manifest.chunk_size
        for area in manifest.boot_areas:
            needed[bytes.fromhex(area.blob)].append((sid, -1, 0))
        for piece in manifest.location_blob_ids():
            needed[bytes.fromhex(piece)].append((sid, -2, 0))
        report.damaged += [Damage(sid, None, line) for line in places.meta_problems(manifest)]
        for part in manifest.partitions:
            try:
                used_ranges(repo, part)
                table = chunk_table(repo, part)
            except DamageError as exc:
                report.damaged.append(Damage(sid, part.number, f"its chunk list is unreadable: {exc.message}"))
                continue
            for w, bid in table_ids(table):
                needed[bid].append((sid, part.number, w))
            problem = places.partition_problem(manifest, part, table)
            if problem:
                report.damaged.append(Damage(sid, part.number, problem))

    if repo.sealer is not None:
        report.damaged += [Damage("", None, line) for line in sealed_structure_problems(repo)]
    report.bytes_checked = sum(loc.stored_len for loc in map(index.get, needed) if loc is not None)
    objects = _objects_used(repo, ids, needed)
    if objects:
        report.repairs = scrub(repo, objects, fix=repair, on_event=sink, cancel=cancel)
        if repair and any(r.written_back for r in report.repairs):
            repo.forget_repairs()
    bad = prove_blobs(repo, needed, on_event=sink, cancel=cancel, phase="verify")

    # One line per damaged partition: how many chunks, and where the first one sits.
    per_part: dict[tuple[str, int], list[int]] = defaultdict(list)
    for bid in bad:
        for sid, number, w in needed[bid]:
            per_part[(sid, number)].append(w)
    for (sid, number), windows in sorted(per_part.items()):
        first = min(windows) * chunk_size.get(sid, repo.chunk_size)
        what = {-1: "boot area", -2: "location table"}.get(number, f"partition {number}")
        report.damaged.append(
            Damage(sid, None if number < 0 else number,
                   f"{what}: {len(windows)} chunk(s) damaged or missing (first at byte {first})")
        )
    report.ok = not report.damaged
    if places.stale:
        report.notes.append(f"{places.stale} recorded place(s) of chunks name packs a prune has since "
                            "replaced: browsing those snapshots reads the index instead (nothing is lost)")
    # Marks: a damaged snapshot says so (and stops showing as verified); a clean one is
    # marked verified, which clears an earlier damaged mark.
    found: dict[str, list[str]] = defaultdict(list)
    for d in report.damaged:
        found[d.snapshot].append(d.message)
    for sid in report.checked:
        if sid in found:
            repo.mark_damaged(sid, found[sid])
        else:
            repo.mark_verified(sid)
    return report


def sealed_structure_problems(repo: Repository) -> list[str]:
    """In an encrypted repository, what the index's opening set aside (an index file or a
    footer that fails authentication or its name is tampering, not wear), and each pack whose
    footer does not open under its own name (a pack renamed or swapped with another)."""
    problems = list(repo.index.problems)
    for pack_id in list(repo.index.packs):
        try:
            read_footer(repo.storage, pack_name(pack_id), sealer=repo.sealer)
        except DamageError as exc:
            problems.append(exc.message)
    return problems


class ReadBack:
    """The first half of a backup's read-back check, done while the backup still writes:
    each pack, once sealed (flushed, its cached pages dropped), is read back whole from the
    drive and compared with what was written, on a thread of its own, so the check costs the
    backup no wall time where the drive has bandwidth to spare. Reading a pack right after
    writing it cannot see a later write overwriting it (a drive that wraps around, smaller
    than it claims), so `check_new_packs` reads again, after the last write, one block of
    every MiB of each pack (`sample_spans`) and compares it with what this first read saw."""

    def __init__(self, repo: Repository, clock: StageClock | None = None):
        self.repo = repo
        self.clock = clock or StageClock()
        threads = repo.storage.parallelism if repo.storage.remote else 1
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="read-back")
        self._lock = threading.Lock()
        self._started: dict[str, Future] = {}

    def start(self, pack: WrittenPack) -> None:
        future = self._pool.submit(self._read_back, pack)
        with self._lock:
            self._started[pack.id] = future

    def _read_back(self, pack: WrittenPack) -> bytes:
        with self.clock.stage("read-back", pack.size):
            return _read_back_whole(self.repo, pack)

    def result(self, pack_id: str) -> bytes | None:
        """The digest of the pack's sample blocks as first read back (DamageError when that
        read failed), or None when the pack was not read back early."""
        with self._lock:
            future = self._started.get(pack_id)
        return None if future is None else future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "ReadBack":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


FAILING = "the destination drive may be failing — the snapshot was not saved"


def _reading_back(repo: Repository, pack: WrittenPack, read):
    """`read(storage, name, size)` on a pack just written; its failures as the read-back's
    DamageError (a server that went away is let through: nothing is known to be damaged).
    Returns (what it read, the pack's path for messages)."""
    name = pack_name(pack.id)
    path = repo.storage.where(name)
    try:
        return read(repo.storage, name, pack.size), path
    except OSError as exc:
        raise DamageError(f"the backup cannot be read back from {path}: {exc.strerror}; {FAILING}") from exc
    except UnreachableError:
        raise
    except LifeboatError as exc:
        raise DamageError(f"the backup cannot be read back from {path}: {exc.message}; {FAILING}") from exc


def _read_back_whole(repo: Repository, pack: WrittenPack) -> bytes:
    """Read a pack back whole; DamageError unless every byte is what was written. Returns the
    digest of its sample blocks."""
    (digest, samples), path = _reading_back(repo, pack, lambda st, name, size: st.read_back(name, size))
    if digest != pack.digest:
        raise DamageError(f"the backup did not read back correctly from {path}; {FAILING}")
    return samples


def _read_back_samples(repo: Repository, pack: WrittenPack, expected: bytes) -> None:
    samples, path = _reading_back(repo, pack, lambda st, name, size: st.read_back_samples(name, size))
    if samples != expected:
        raise DamageError(f"the backup did not read back correctly from {path}: a later write overwrote it "
                          f"(the drive may be smaller than it claims); {FAILING}")


def _still_there(repo: Repository, pack: WrittenPack) -> None:
    """The late check in an object store, where objects share no offsets (nothing written
    later can overwrite a pack read back whole before): the pack is still there, whole."""
    size, path = _reading_back(repo, pack, lambda st, name, _size: st.size(name))
    if size != pack.size:
        raise DamageError(f"the backup did not read back correctly from {path}: it now holds {size} bytes "
                          f"of the {pack.size} written; {FAILING}")


def _objects_used(repo: Repository, ids: list[str], needed) -> list[str]:
    """The objects whose parity verify checks: the manifests checked, every index file, and
    the packs holding the chunks they use. None in a v1 repository without sidecars."""
    names = {i.name for p in ("index/", "snapshots/") for i in repo.storage.list(p)}
    if not repo.parity and not any(n.endswith(".par") for n in names):
        return []
    wanted = [f"snapshots/{sid}.json" for sid in ids] + sorted(n for n in names if n.endswith(".idx"))
    packs = {loc.pack_id for loc in map(repo.index.get, needed) if loc is not None}
    return [n for n in wanted if n in names] + sorted(pack_name(p) for p in packs)


def check_new_packs(repo, new_packs, images, sink: EventSink, cancel: CancelToken,
                    early: ReadBack | None = None) -> None:
    """After a backup: read back every pack it wrote, straight from the drive, and compare
    each byte (through its BLAKE3 digest) with what was written; then make sure every chunk
    the snapshot references is indexed. Raises DamageError before the snapshot becomes
    visible. A pack `early` already read back whole is only sampled again here (see
    ReadBack). Decoding and hashing every chunk is `verify`'s job: here the question is only
    whether the drive kept what it was given."""
    meter = Meter("check", sum(p.size for p in new_packs), sink)

    def read_back(pack: WrittenPack):
        first = early.result(pack.id) if early is not None else None
        if first is None:
            _read_back_whole(repo, pack)
        elif repo.storage.shared_offsets:
            _read_back_samples(repo, pack, first)
        else:
            _still_there(repo, pack)
        return pack.size

    for size in ordered_map(read_back, new_packs, cancel, io_bound=True):
        meter.add(size)
    index = repo.index
    for part in images:
        for _, bid in table_ids(chunk_table(repo, part)):
            if bid not in index:
                raise DamageError(f"chunk {bid.hex()[:16]} of partition {part.number} is missing after backup")
    meter.finish()
