"""Verify: re-read every chunk that snapshots reference, check each hash, name what is damaged."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field

from recovery.errors import DamageError
from recovery.events import CancelToken, EventSink, Meter, ignore
from recovery.repo.format import ID_SIZE, NO_DATA
from recovery.repo.manifest import Manifest, PartitionImage, decode_ranges
from recovery.repo.packs import WrittenPack, file_digest, pack_path, read_footer
from recovery.repo.repository import Repository
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

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "damaged": [d.to_json() for d in self.damaged],
            "bytes_checked": self.bytes_checked,
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


def _check_pack(repo: Repository, pack_id: str, wanted: set[bytes] | None) -> tuple[set[bytes], int]:
    """Read a pack once; return the ids in it that failed their check, and bytes read.
    `wanted` None checks every blob in it."""
    bad: set[bytes] = set()
    path = pack_path(repo.path, pack_id)
    try:
        entries = read_footer(path)
    except DamageError:
        if wanted is None:
            raise       # checking a whole pack: an unreadable footer is the damage itself
        return set(wanted), 0
    total = 0
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        for e in entries:
            if wanted is not None and e.id not in wanted:
                continue
            try:
                stored = os.pread(fd, e.stored_len, e.offset)
                repo.decode(e.id, stored, e.raw_len, e.codec)
            except (OSError, DamageError):
                bad.add(e.id)
            total += e.stored_len
    return bad, total


def verify(
    repo: Repository,
    snapshot_ids: list[str] | None = None,
    *,
    on_event: EventSink | None = None,
    cancel: CancelToken | None = None,
) -> VerifyReport:
    sink = on_event or ignore
    cancel = cancel or CancelToken()
    index = repo.reload_index()
    ids = snapshot_ids if snapshot_ids is not None else repo.snapshot_ids()
    report = VerifyReport(ok=True)
    # blob id -> places that need it: (snapshot, partition number, window)
    needed: dict[bytes, list[tuple[str, int, int]]] = defaultdict(list)
    chunk_size: dict[str, int] = {}
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
        for part in manifest.partitions:
            try:
                used_ranges(repo, part)
                table = chunk_table(repo, part)
            except DamageError as exc:
                report.damaged.append(Damage(sid, part.number, f"its chunk list is unreadable: {exc.message}"))
                continue
            for w, bid in table_ids(table):
                needed[bid].append((sid, part.number, w))

    by_pack: dict[str, set[bytes]] = defaultdict(set)
    missing: set[bytes] = set()
    total = 0
    for bid in needed:
        loc = index.get(bid)
        if loc is None:
            missing.add(bid)
        else:
            by_pack[loc.pack_id].add(bid)
            total += loc.stored_len
    meter = Meter("verify", total, sink)
    bad: set[bytes] = set(missing)
    for damaged, nbytes in ordered_map(lambda item: _check_pack(repo, *item), by_pack.items(), cancel):
        bad |= damaged
        meter.add(nbytes)
    meter.finish()
    report.bytes_checked = meter.done

    # One line per damaged partition: how many chunks, and where the first one sits.
    per_part: dict[tuple[str, int], list[int]] = defaultdict(list)
    for bid in bad:
        for sid, number, w in needed[bid]:
            per_part[(sid, number)].append(w)
    for (sid, number), windows in sorted(per_part.items()):
        first = min(windows) * chunk_size.get(sid, repo.chunk_size)
        what = "boot area" if number == -1 else f"partition {number}"
        report.damaged.append(
            Damage(sid, None if number == -1 else number,
                   f"{what}: {len(windows)} chunk(s) damaged or missing (first at byte {first})")
        )
    report.ok = not report.damaged
    damaged_ids = {d.snapshot for d in report.damaged}
    for sid in report.checked:
        if sid not in damaged_ids:
            repo.mark_verified(sid)
    return report


def check_new_packs(repo, new_packs, images, sink: EventSink, cancel: CancelToken) -> None:
    """After a backup: read back every pack it wrote, straight from the drive, and compare
    each byte (through its BLAKE3 digest) with what was written; then make sure every chunk
    the snapshot references is indexed. Raises DamageError before the snapshot becomes
    visible. Decoding and hashing every chunk is `verify`'s job: here the question is only
    whether the drive kept what it was given."""
    meter = Meter("check", sum(p.size for p in new_packs), sink)
    failing = "the destination drive may be failing — the snapshot was not saved"

    def read_back(pack: WrittenPack):
        path = pack_path(repo.path, pack.id)
        try:
            same = file_digest(path) == pack.digest
        except OSError as exc:
            raise DamageError(f"the backup cannot be read back from {path}: {exc.strerror}; {failing}") from exc
        if not same:
            raise DamageError(f"the backup did not read back correctly from {path}; {failing}")
        return pack.size

    for size in ordered_map(read_back, new_packs, cancel, io_bound=True):
        meter.add(size)
    index = repo.index
    for part in images:
        for _, bid in table_ids(chunk_table(repo, part)):
            if bid not in index:
                raise DamageError(f"chunk {bid.hex()[:16]} of partition {part.number} is missing after backup")
    meter.finish()
