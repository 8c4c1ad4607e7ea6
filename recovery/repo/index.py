"""The in-memory index (blob id -> where it lives) and the index files that persist it.

Index files only speed up opening: every pack carries its own footer, so a pack that landed
without an index file (a killed backup) is found by listing packs/ and reading its footer.
"""

from __future__ import annotations

import bisect
import struct
import sys
import threading
from array import array
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import blake3

from recovery.errors import DamageError
from recovery.repo.format import ENTRY, INDEX_MAGIC, INDEX_MAGIC_SEALED, BlobEntry
from recovery.repo.packs import read_footer
from recovery.repo.sealing import AAD_INDEX, SealBroken, Sealer
from recovery.repo.parity import repair_object, write_protected
from recovery.storage.base import Storage, StorageError, UnreachableError
from recovery.storage.local import LocalStorage

PACK_HEADER = struct.Struct("<32sI")
# A sorted key: the first 40 bits of a blob id above the entry's number within its run (24
# bits). Ids are uniformly random hashes, so keys that share 40 bits are rare and each is
# told apart by comparing the whole id.
_NUMBER_BITS = 24
_RUN_MAX = 1 << _NUMBER_BITS
_KEY = struct.Struct(">Q")
_ENTRY_ID = struct.Struct("<32s24x")
_PENDING_MAX = 65_536           # blobs added one pack at a time before they are sorted into a run
# Runs of about this many blobs: sorting a million keys as four runs is faster than as one,
# and a lookup in four runs costs a few microseconds more.
_RUN_TARGET = 1 << 18


@dataclass(frozen=True)
class Location:
    pack_id: str
    offset: int
    stored_len: int
    raw_len: int
    kind: int
    codec: int


class Index:
    """Blob id -> location, about 70 bytes a blob in memory.

    Entries are kept as their 56-byte on-disk form in one bytearray, in the order they were
    added. Lookups go through sorted runs: arrays of 64-bit keys searched with bisect, one
    per ~262,144 blobs of the index files read on opening, a few more for packs added one at
    a time.
    Opening a repository thus costs a copy and one sort of integers, never a Python object
    per blob kept alive. The first entry added for an id wins, as its pack was indexed first."""

    def __init__(self) -> None:
        self.packs: list[str] = []
        self._pack_numbers: dict[str, int] = {}
        self.problems: list[str] = []   # packs whose footer could not be read
        self._entries = bytearray()     # ENTRY.size bytes a blob
        self._seg_starts = array("Q")   # entry number where each pack's entries begin
        self._seg_packs = array("I")    # the pack number of each of those segments
        self._runs: list[tuple[int, array]] = []   # (first entry number, sorted keys)
        self._sorted_upto = 0           # entries before this number are in a run
        self._pending: dict[bytes, int] = {}       # id -> entry number, not yet in a run
        self._distinct: int | None = None
        # Backups add packs from more than one thread while others look blobs up: additions
        # are serialised; a lookup needs no lock, as an entry becomes findable (in a run or in
        # _pending) only after its bytes and its pack's segment are in place.
        self._adding = threading.Lock()

    def __len__(self) -> int:
        """Distinct blob ids (a blob stored in two packs counts once). Computed when asked."""
        with self._adding:            # iter_unpack holds the bytearray, which must not grow meanwhile
            if self._distinct is None:
                self._distinct = len(set(map(itemgetter(0), _ENTRY_ID.iter_unpack(self._entries))))
        return self._distinct

    def __contains__(self, blob_id: bytes) -> bool:
        return self._find(blob_id) is not None

    def add_pack(self, pack_id: str, entries: list[BlobEntry]) -> None:
        with self._adding:
            self._add_pack(pack_id, entries)

    def _add_pack(self, pack_id: str, entries: list[BlobEntry]) -> None:
        self._add_segment(pack_id, b"".join(e.pack() for e in entries))
        first = self._sorted_upto
        for n, e in enumerate(entries, len(self._entries) // ENTRY.size - len(entries)):
            if self._pending.setdefault(e.id, n) == n and self._find_sorted(e.id) is not None:
                del self._pending[e.id]            # indexed before: the older entry wins
        if len(self._pending) >= _PENDING_MAX:
            self._sort_run(first)

    def get(self, blob_id: bytes) -> Location | None:
        n = self._find(blob_id)
        if n is None:
            return None
        _, offset, stored_len, raw_len, kind, codec = ENTRY.unpack_from(self._entries, n * ENTRY.size)
        pack = self._seg_packs[bisect.bisect_right(self._seg_starts, n) - 1]
        return Location(self.packs[pack], offset, stored_len, raw_len, kind, codec)

    def pack_totals(self) -> dict[str, tuple[int, int]]:
        """Each pack's (blob count, stored bytes of its blobs), from its first segment (a pack
        named by two index files is counted once)."""
        out: dict[str, tuple[int, int]] = {}
        with self._adding:
            ends = list(self._seg_starts[1:]) + [len(self._entries) // ENTRY.size]
            for start, end, number in zip(self._seg_starts, ends, self._seg_packs):
                pack_id = self.packs[number]
                if pack_id in out:
                    continue
                view = memoryview(self._entries)[start * ENTRY.size:end * ENTRY.size]
                out[pack_id] = (end - start, sum(e[2] for e in ENTRY.iter_unpack(view)))
                view.release()
        return out

    def has_pack(self, pack_id: str) -> bool:
        return pack_id in self._pack_numbers

    def _add_segment(self, pack_id: str, raw_entries) -> None:
        number = self._pack_numbers.get(pack_id)
        if number is None:
            number = len(self.packs)
            self.packs.append(pack_id)
            self._pack_numbers[pack_id] = number
        self._seg_starts.append(len(self._entries) // ENTRY.size)
        self._seg_packs.append(number)
        self._entries += raw_entries
        self._distinct = None

    def _add_index_file(self, segments: list[tuple[str, memoryview]], sort: bool = True) -> None:
        """One index file's packs. With sort=False they cannot be found until _sort_unsorted()
        (opening adds index files until they hold _RUN_TARGET blobs, then sorts them as a run)."""
        with self._adding:
            for pack_id, raw in segments:
                self._add_segment(pack_id, raw)
            if sort:
                self._sort_run(self._sorted_upto)

    def _sort_unsorted(self) -> None:
        with self._adding:
            self._sort_run(self._sorted_upto)

    def _sort_run(self, first: int) -> None:
        """Sort the entries from `first` (the end of the last run) to the end into runs of at
        most _RUN_MAX, then merge the newest runs while the newer is at least half the size
        of the one before and that one is under _RUN_TARGET: a few runs to search, however many
        packs came one at a time."""
        total = len(self._entries) // ENTRY.size
        runs = list(self._runs)
        for start in range(first, total, _RUN_MAX):
            runs.append((start, self._sorted_keys(start, min(_RUN_MAX, total - start))))
        while len(runs) >= 2:
            older, newer = runs[-1][0] - runs[-2][0], total - runs[-1][0]
            if newer * 2 < older or older >= _RUN_TARGET or total - runs[-2][0] > _RUN_MAX:
                break
            runs[-2:] = [(runs[-2][0], self._sorted_keys(runs[-2][0], total - runs[-2][0]))]
        # Replaced whole, so a lookup running meanwhile searches the old list or the new one,
        # both complete; _pending is emptied only once the new runs can be searched.
        self._runs = runs
        self._sorted_upto = total
        self._pending.clear()

    def _sorted_keys(self, start: int, count: int) -> array:
        view = memoryview(self._entries)[start * ENTRY.size:(start + count) * ENTRY.size]
        # Each key's 8 bytes, built column by column at C speed: 5 id bytes, 3 number bytes.
        keys = bytearray(count * 8)
        for k in range(5):
            keys[k::8] = view[k::ENTRY.size]
        view.release()
        numbers = array("I", range(count))
        if sys.byteorder == "little":
            numbers.byteswap()
        numbers = numbers.tobytes()
        for k in range(3):
            keys[5 + k::8] = numbers[1 + k::4]
        return array("Q", sorted(map(itemgetter(0), _KEY.iter_unpack(keys))))

    def _find_sorted(self, blob_id: bytes) -> int | None:
        prefix = int.from_bytes(blob_id[:5], "big")
        low, high = prefix << _NUMBER_BITS, (prefix + 1) << _NUMBER_BITS
        entries = self._entries
        for base, keys in self._runs:
            i = bisect.bisect_left(keys, low)
            while i < len(keys) and keys[i] < high:
                n = base + (keys[i] & (_RUN_MAX - 1))
                if entries[n * ENTRY.size:n * ENTRY.size + 32] == blob_id:
                    return n
                i += 1
        return None

    def _find(self, blob_id: bytes) -> int | None:
        # _pending first: _sort_run adds a run before it empties _pending, so an entry being
        # sorted is always in one of the two (and never in both, see _add_pack).
        n = self._pending.get(blob_id)
        return self._find_sorted(blob_id) if n is None else n

    @classmethod
    def load(cls, storage, cache=None, sealer: Sealer | None = None) -> "Index":
        """Every index file, then the footer of each pack no index file names. `storage` is a
        Storage (or a repository folder's path); `cache` (an IndexCache) keeps copies of
        index files and footers on this machine, so a network repository opened again costs
        one listing plus what is new since. An encrypted repository (`sealer`) keeps no
        footer copies here: index files are kept sealed, as stored; footers would be plain."""
        if not isinstance(storage, Storage):
            with LocalStorage(Path(storage)) as local:
                return cls.load(local, cache, sealer)
        footers = cache if sealer is None else None
        index = cls()
        for info in sorted(storage.list("index/"), key=lambda i: i.name):
            if not info.name.endswith(".idx"):
                continue
            try:
                packs = None
                data = cache.get(info.name) if cache else None
                if data is not None:
                    try:
                        packs = index_file_packs(info.name, data, sealer)
                    except DamageError:
                        cache.drop(info.name)          # a damaged copy: fetch it again
                if packs is None:
                    try:
                        data = storage.read(info.name)
                    except UnreachableError:
                        raise
                    except StorageError as exc:
                        # Unreadable sectors: repaired from the parity when there is one; else
                        # (DamageError) the packs' footers stand in for this index file, below.
                        data = repaired_index_file(storage, info.name, b"", exc.message)
                    try:
                        packs = index_file_packs(info.name, data, sealer)
                    except DamageError:
                        data = repaired_index_file(storage, info.name, data)
                        packs = index_file_packs(info.name, data, sealer)
                    if cache:
                        cache.put(info.name, data)
                index._add_index_file(packs, sort=False)
                if len(index._entries) // ENTRY.size - index._sorted_upto >= _RUN_TARGET:
                    index._sort_unsorted()
            except UnreachableError:
                raise
            except (DamageError, FileNotFoundError, StorageError) as exc:
                index.problems.append(str(exc))   # packs are scanned below instead
        index._sort_unsorted()
        for pack_id, info in unindexed_packs(storage, index):
            try:
                entries = footers.footer(pack_id, info.size) if footers else None
                if entries is None:
                    entries = read_footer(storage, info.name, info.size, sealer)
                    if footers:
                        footers.put_footer(pack_id, info.size, entries)
                index.add_pack(pack_id, entries)
            except DamageError as exc:
                index.problems.append(str(exc))
        return index


def repaired_index_file(storage: Storage, name: str, data: bytes, unreadable: str | None = None) -> bytes:
    """A damaged index file repaired in memory from its parity; DamageError when it cannot be.
    `data` empty with `unreadable` (why the read failed): read again around the bad sectors."""
    label = f"index file {name.rpartition('/')[2]}"
    try:
        result = repair_object(storage, name, label, data or None)
    except DamageError as exc:
        raise DamageError(f"{label} cannot be read ({unreadable}): {exc}" if unreadable else str(exc)) from None
    if not result.repaired:
        raise DamageError(f"{label} is damaged beyond what its parity repairs")
    return result.data


def unindexed_packs(storage: Storage, index: Index):
    """(pack id, object info) of each pack in storage that `index` does not hold yet, in name
    order: packs a killed backup left without an index file, or that another backup sealed
    since the index was read."""
    for info in sorted(storage.list("packs/"), key=lambda i: i.name):
        if info.name.endswith(".pack"):
            pack_id = info.name.rpartition("/")[2][: -len(".pack")]
            if not index.has_pack(pack_id):
                yield pack_id, info


def encode_index_file(packs: list[tuple[str, list[BlobEntry]]],
                      sealer: Sealer | None = None) -> tuple[str, bytes]:
    """An index file's object name and bytes; sealed after its magic in an encrypted repository."""
    body = bytearray()
    for pack_id, entries in packs:
        body += PACK_HEADER.pack(bytes.fromhex(pack_id), len(entries))
        for e in entries:
            body += e.pack()
    if sealer is None:
        body[:0] = INDEX_MAGIC
    else:
        body = bytearray(INDEX_MAGIC_SEALED + sealer.seal(bytes(body), AAD_INDEX))
    digest = blake3.blake3(body).digest()
    body += digest
    return f"index/{digest.hex()}.idx", bytes(body)


def write_index_file(storage: Storage, packs: list[tuple[str, list[BlobEntry]]],
                     sealer: Sealer | None = None, parity: bool = False) -> str:
    name, body = encode_index_file(packs, sealer)
    write_protected(storage, name, body, parity)
    return name


def load_index_file(storage: Storage, name: str, sealer: Sealer | None = None) -> list[tuple[str, memoryview]]:
    """One index file of a repository, read and checked: each pack it lists with its entries."""
    return index_file_packs(name, storage.read(name), sealer)


def read_index_file(path: Path) -> list[tuple[str, list[BlobEntry]]]:
    return parse_index_file(Path(path).name, Path(path).read_bytes())


def parse_index_file(name: str, data: bytes) -> list[tuple[str, list[BlobEntry]]]:
    return [(pack_id, BlobEntry.unpack_all(raw)) for pack_id, raw in index_file_packs(name, data)]


def index_file_packs(name: str, data: bytes, sealer: Sealer | None = None) -> list[tuple[str, memoryview]]:
    """Each pack an index file lists, with its entries' bytes (ENTRY.size each) unparsed.
    An encrypted repository's (`sealer` given) must open, and hash to its name."""
    label = name.rpartition("/")[2]
    magic = INDEX_MAGIC if sealer is None else INDEX_MAGIC_SEALED
    if not data.startswith(magic) or len(data) < len(magic) + 32:
        other = INDEX_MAGIC_SEALED if sealer is None else INDEX_MAGIC
        raise DamageError(f"index file {label} is {'sealed' if sealer is None else 'not sealed'}, unlike its "
                          "repository" if data.startswith(other) else f"index file {label} is damaged")
    body = memoryview(data)[:-32]
    if blake3.blake3(body).digest() != data[-32:]:
        raise DamageError(f"index file {label} is damaged")
    pos = len(magic)
    if sealer is not None:
        if label.endswith(".idx") and data[-32:].hex() != label[: -len(".idx")]:
            raise DamageError(f"index file {label} holds another index file's content")
        try:
            body = memoryview(sealer.open(body[pos:], AAD_INDEX))
        except SealBroken:
            raise DamageError(f"index file {label} is forged or altered (it fails authentication)") from None
        pos = 0
    out = []
    while pos < len(body):
        if pos + PACK_HEADER.size > len(body):
            raise DamageError(f"index file {label} is damaged")
        raw_id, count = PACK_HEADER.unpack_from(body, pos)
        pos += PACK_HEADER.size
        end = pos + count * ENTRY.size
        if end > len(body):
            raise DamageError(f"index file {label} is damaged")
        out.append((raw_id.hex(), body[pos:end]))
        pos = end
    return out
