"""Where a snapshot's blobs lie, recorded with the snapshot, so that browsing one snapshot
reads its own tables and the pack ranges it needs, never the repository's whole index.

A manifest's `locations` (docs/FORMAT.md, "Location tables") holds the direct place of
every meta blob the manifest names, and per partition a *location table*: one 56-byte entry
per window, in pieces stored as meta blobs. A location is a hint, never trusted: what is
read there must decode to the id the chunk table names (and, encrypted, open under the
AEAD that binds id and kind). A prune that repacks moves blobs without rewriting the
manifest (its name is its hash); the first location found stale or damaged switches the
snapshot to the repository's index for the rest of its reads.
"""

from __future__ import annotations

import struct
import threading

from recovery.errors import DamageError
from recovery.repo.format import ID_SIZE, NO_DATA
from recovery.repo.index import Index, Location
from recovery.repo.manifest import Manifest, PartitionImage
from recovery.storage.base import storage_failure

# pack id (32) offset (u64) stored_len (u32) raw_len (u32) kind (u8) codec (u8) reserved (6)
LOCATION = struct.Struct("<32sQIIBB6x")
NOWHERE = bytes(LOCATION.size)          # the entry of a window that holds no data
# Windows per piece of a location table: 16384 x 56 bytes = 896 KiB, under the 1 MiB of
# other meta pieces; a browser reading one window loads one piece.
PIECE_WINDOWS = 16384
# A recorded place claiming more than this is not read but looked up in the index: chunks are
# at most 64 MiB, table pieces 1 MiB, and a boot area (the gap before the first partition) is
# far below it; a forged manifest must not make a reader fetch gigabytes on its word.
MAX_STORED = 1024 * 1024 * 1024


def encode_location(loc: Location) -> bytes:
    return LOCATION.pack(bytes.fromhex(loc.pack_id), loc.offset, loc.stored_len, loc.raw_len, loc.kind, loc.codec)


def decode_location(entry: bytes) -> Location | None:
    if entry == NOWHERE:
        return None
    pack, offset, stored_len, raw_len, kind, codec = LOCATION.unpack(entry)
    return Location(pack.hex(), offset, stored_len, raw_len, kind, codec)


def location_pieces(table: bytes, index: Index) -> list[bytes]:
    """A partition's location table, cut in pieces of PIECE_WINDOWS entries, from its chunk
    table and the index that holds every blob it names (after the backup's last flush)."""
    windows = len(table) // ID_SIZE
    pieces = []
    for first in range(0, windows, PIECE_WINDOWS):
        out = bytearray()
        for w in range(first, min(first + PIECE_WINDOWS, windows)):
            bid = table[w * ID_SIZE : (w + 1) * ID_SIZE]
            loc = None if bid == NO_DATA else index.get(bytes(bid))
            if bid != NO_DATA and loc is None:
                raise DamageError(f"chunk {bytes(bid).hex()[:16]} is not in the index after the backup's flush")
            out += NOWHERE if loc is None else encode_location(loc)
        pieces.append(bytes(out))
    return pieces


def location_json(loc: Location) -> list:
    return [loc.pack_id, loc.offset, loc.stored_len, loc.raw_len, loc.kind, loc.codec]


def location_from_json(value) -> Location | None:
    """A meta blob's place as the manifest gives it; None when it is not a well-formed one."""
    try:
        pack, offset, stored_len, raw_len, kind, codec = value
        bytes.fromhex(pack)
        if len(pack) != 2 * ID_SIZE or min(offset, stored_len, raw_len) < 0:
            return None
        return Location(str(pack), int(offset), int(stored_len), int(raw_len), int(kind), int(codec))
    except (TypeError, ValueError):
        return None


def record_locations(repo, session, boot, images: list[PartitionImage], tables: dict[int, bytes]) -> dict:
    """The manifest's `locations` for a snapshot whose blobs are all stored: the session's
    packs are sealed, the location tables stored as meta blobs, the session flushed (every
    pack then named by an index file), and the place of every meta blob the manifest names
    taken from the index."""
    session.seal_packs()
    parts = {}
    for img in images:
        pieces = location_pieces(tables[img.number], repo.index)
        parts[str(img.number)] = [session.add_meta(p) for p in pieces]
    session.flush()
    metas = {b.blob for b in boot}
    for img in images:
        metas.update(img.ranges)
        metas.update(img.chunks)
        metas.update(parts[str(img.number)])
    blobs = {}
    for hexid in sorted(metas):
        loc = repo.index.get(bytes.fromhex(hexid))
        if loc is None:
            raise DamageError(f"meta blob {hexid[:16]} is not in the index after the backup's flush")
        blobs[hexid] = location_json(loc)
    return {"partitions": parts, "blobs": blobs}


class SnapshotBlobs:
    """Reads one snapshot's blobs: straight from the places its manifest records when it
    has them, else (an older snapshot, or a place found stale) through the repository's index.

    Safe to use from several threads (a mounted snapshot's FUSE server, a browser's workers)."""

    def __init__(self, repo, manifest: Manifest):
        self.repo = repo
        rec = manifest.locations if isinstance(manifest.locations, dict) else {}
        blobs = rec.get("blobs") if isinstance(rec.get("blobs"), dict) else {}
        self._meta = {k: v for k, v in blobs.items() if isinstance(k, str)}
        parts = rec.get("partitions") if isinstance(rec.get("partitions"), dict) else {}
        self._tables: dict[int, list[str]] = {}
        for key, ids in parts.items():
            if isinstance(key, str) and key.isdigit() and isinstance(ids, list) and all(isinstance(i, str) for i in ids):
                self._tables[int(key)] = ids
        self._pieces: dict[tuple[int, int], bytes | None] = {}
        self._lock = threading.Lock()
        # Set by the first location that did not hold its blob: from then on, the index.
        self.fell_back: str | None = None if rec else "the snapshot records no locations"
        self.direct_reads = 0          # blobs read at a recorded place (for tests and the bench)

    def _fall_back(self, why: str) -> None:
        if self.fell_back is None:
            self.fell_back = why

    def _at(self, bid: bytes, loc: Location | None) -> bytes:
        """The blob `bid` read at `loc`, hash-checked; through the index when `loc` is None,
        after a fallback, or when nothing decodable is there."""
        if loc is not None and loc.stored_len > MAX_STORED:
            self._fall_back(f"a recorded place of blob {bid.hex()[:16]} is {loc.stored_len} bytes long")
        elif loc is not None and self.fell_back is None:
            try:
                data = self.repo.read_at(bid, loc)
            except DamageError as exc:
                if storage_failure(exc) is None:
                    self._fall_back(exc.message)          # not there: a stale place
                else:
                    # The drive failed under the read (a bad sector, or pulled out): the place
                    # is right, so try its pack's parity; without that, the failure stands
                    # (a reader then knows the repository stopped answering).
                    stored = self.repo.stored_from_repaired(loc)
                    if stored is None:
                        raise
                    self.direct_reads += 1
                    return self.repo.decode(bid, stored, loc.raw_len, loc.codec, loc.kind)
            else:
                self.direct_reads += 1
                return data
        return self.repo.read_blob(bid)

    def meta(self, hexid: str) -> bytes:
        """A meta blob the manifest names (a chunk-table, range-map or location-table piece)."""
        loc = location_from_json(self._meta.get(hexid))
        if hexid in self._meta and loc is None:
            self._fall_back(f"the manifest's place of meta blob {hexid[:16]} is malformed")
        return self._at(bytes.fromhex(hexid), loc)

    def chunk_table(self, part: PartitionImage) -> bytes:
        return b"".join(self.meta(b) for b in part.chunks)

    def ranges(self, part: PartitionImage) -> bytes:
        return b"".join(self.meta(b) for b in part.ranges)

    def _piece(self, number: int, p: int) -> bytes | None:
        key = (number, p)
        with self._lock:
            if key in self._pieces:
                return self._pieces[key]
        ids = self._tables.get(number)
        piece = None
        if ids is not None and p < len(ids):
            try:
                piece = self.meta(ids[p])
            except DamageError as exc:
                self._fall_back(f"a piece of partition {number}'s location table is unreadable ({exc.message})")
            if piece is not None and len(piece) % LOCATION.size:
                self._fall_back(f"a piece of partition {number}'s location table has a wrong length")
                piece = None
        elif self.fell_back is None:
            self._fall_back(f"partition {number} has no location table")
        with self._lock:
            self._pieces[key] = piece
        return piece

    def chunk(self, number: int, w: int, bid: bytes) -> bytes:
        """The data blob of window `w` of partition `number` (whose chunk table names `bid`)."""
        loc = None
        if self.fell_back is None:
            piece = self._piece(number, w // PIECE_WINDOWS)
            at = (w % PIECE_WINDOWS) * LOCATION.size
            if piece is not None and at + LOCATION.size <= len(piece):
                loc = decode_location(piece[at : at + LOCATION.size])
            if loc is None:
                self._fall_back(f"partition {number}'s location table has no place for window {w}")
        return self._at(bid, loc)


class LocationCheck:
    """Verify's look at the places a snapshot records, against the index and the packs'
    own footers: a place that names a pack of the repository but not where that pack holds
    the blob is wrong (damage, named); one naming a pack that is gone is stale (a prune moved
    the blob; readers fall back to the index), counted apart."""

    def __init__(self, repo):
        self.repo = repo
        self._footers: dict[str, set[tuple[bytes, Location]]] = {}
        self.stale = 0

    def _holds(self, bid: bytes, loc: Location) -> bool | None:
        """True when the pack holds `bid` at `loc`, False when it does not, None when the
        pack is no longer in the repository."""
        index = self.repo.index
        if index.get(bid) == loc:
            return True
        if not index.has_pack(loc.pack_id):
            return None
        if loc.pack_id not in self._footers:
            from recovery.repo.packs import pack_name, read_footer

            try:
                entries = read_footer(self.repo.storage, pack_name(loc.pack_id), sealer=self.repo.sealer)
            except DamageError:
                entries = []          # the pack's own damage is named by the chunk check
            self._footers[loc.pack_id] = {
                (e.id, Location(loc.pack_id, e.offset, e.stored_len, e.raw_len, e.kind, e.codec)) for e in entries}
        return (bid, loc) in self._footers[loc.pack_id]

    def _judge(self, bid: bytes, loc: Location | None) -> bool:
        """Whether the place is wrong (stale ones are only counted)."""
        if loc is None:
            return True
        held = self._holds(bid, loc)
        if held is None:
            self.stale += 1
            return False
        return not held

    def meta_problems(self, manifest: Manifest) -> list[str]:
        """The manifest's places of its meta blobs: one line when any is wrong or missing."""
        if manifest.locations is None:
            return []
        blobs = manifest.locations.get("blobs") if isinstance(manifest.locations, dict) else None
        if not isinstance(blobs, dict):
            return ["its manifest's table of places is malformed"]
        wanted = {b.blob for b in manifest.boot_areas} | set(manifest.location_blob_ids())
        for p in manifest.partitions:
            wanted.update(p.ranges)
            wanted.update(p.chunks)
        wrong = [h for h in sorted(wanted) if self._judge(bytes.fromhex(h), location_from_json(blobs.get(h)))]
        if not wrong:
            return []
        return [f"its manifest records a wrong place for {len(wrong)} of its table piece(s) "
                f"(first {wrong[0][:16]}); they are read through the index"]

    def partition_problem(self, manifest: Manifest, part: PartitionImage, table: bytes) -> str | None:
        """What is wrong with one partition's location table (its chunk table given), or None."""
        if manifest.locations is None:
            return None
        parts = manifest.locations.get("partitions") if isinstance(manifest.locations, dict) else None
        ids = parts.get(str(part.number)) if isinstance(parts, dict) else None
        if not isinstance(ids, list):
            return "its location table is missing from the manifest"
        try:
            entries = b"".join(self.repo.read_blob(bytes.fromhex(i)) for i in ids)
        except (DamageError, ValueError, TypeError) as exc:
            return f"its location table is unreadable: {getattr(exc, 'message', exc)}"
        windows = len(table) // ID_SIZE
        if len(entries) != windows * LOCATION.size:
            return f"its location table has {len(entries) // LOCATION.size} entries for {windows} windows"
        wrong = []
        for w in range(windows):
            bid = table[w * ID_SIZE : (w + 1) * ID_SIZE]
            loc = decode_location(entries[w * LOCATION.size : (w + 1) * LOCATION.size])
            if bid == NO_DATA:
                if loc is not None:
                    wrong.append(w)
            elif self._judge(bytes(bid), loc):
                wrong.append(w)
        if not wrong:
            return None
        return (f"its location table puts {len(wrong)} chunk(s) at the wrong place (first at byte "
                f"{wrong[0] * manifest.chunk_size}); they are read through the index")
