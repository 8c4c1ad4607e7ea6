"""Parity sidecars: Reed–Solomon redundancy over the stored bytes of one object (a pack, an index
file, a manifest), kept in a second object `<name>.par`, so damage confined to a small share of
the object is repaired instead of lost. docs/FORMAT.md ("Parity (format v2)") is normative.

How damage becomes repairable:

* The object is cut into sectors of `sector_size` bytes (the last one zero-padded); each has
  an 8-byte checksum, so a damaged sector is an *erasure* at a known place.
* Data sector i belongs to code word i mod W (W = ceil(n / MAX_K)): consecutive sectors go to
  different code words, so one run of damage spreads thinly over all of them.
* Code word j (k_j data sectors) has m_j = max(2, ceil(k_j * PARITY_PERCENT / 100)) parity
  sectors computed by zfec (Reed–Solomon erasure code over GF(2^8)); any k_j of its k_j + m_j
  sectors give back the k_j data sectors.
* The checksum table is stored twice, in self-checking 512-byte blocks; the header twice too.

What that guarantees (`Geometry.guaranteed_run`, `Geometry.guaranteed_sectors`): any one run of
damage of up to (min m_j * W - 1) * sector_size + 1 bytes, and any damage touching at most
min m_j sectors anywhere; beyond that, repair works as long as no code word has lost more than
its m_j sectors.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import blake3
import zfec

from recovery.errors import DamageError
from recovery.storage.base import StorageError, UnreachableError

PARITY_SUFFIX = ".par"
PARITY_MAGIC = b"LBPARIT1"
MAX_K = 200                  # data sectors per code word at most (zfec: k + m <= 256)
PARITY_PERCENT = 4           # parity sectors per 100 data sectors in a code word
MIN_PARITY = 2               # a run of one byte can straddle two sectors
SMALL_OBJECT = 256 * 1024    # objects up to this size use small sectors (fewer bytes of parity)
SMALL_SECTOR = 512
LARGE_SECTOR = 4096
SUM_SIZE = 8                 # bytes of BLAKE3 kept per sector
TABLE_BLOCK = 512
TABLE_ENTRIES = (TABLE_BLOCK - SUM_SIZE) // SUM_SIZE   # 511 checksums, then the block's own
# magic, object length, sector size, max k, parity percent, sectors, code words, parity
# sectors, table blocks, BLAKE3 of the whole object; then 8 bytes of BLAKE3 of all that.
HEADER = struct.Struct("<8sQIHHIIII32s")
HEADER_SIZE = HEADER.size + SUM_SIZE


def parity_name(name: str) -> str:
    """The parity sidecar's object name for the object `name`."""
    return name + PARITY_SUFFIX


def _sum(data) -> bytes:
    return blake3.blake3(data).digest(length=SUM_SIZE)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Geometry:
    """How an object of `length` bytes is cut into sectors and code words."""

    length: int
    sector_size: int
    max_k: int = MAX_K
    percent: int = PARITY_PERCENT

    @classmethod
    def for_length(cls, length: int) -> "Geometry":
        return cls(length, SMALL_SECTOR if length <= SMALL_OBJECT else LARGE_SECTOR)

    @property
    def sectors(self) -> int:
        return max(_ceil_div(self.length, self.sector_size), 1)

    @property
    def words(self) -> int:
        return _ceil_div(self.sectors, self.max_k)

    def k(self, word: int) -> int:
        """Data sectors in code word `word`."""
        return _ceil_div(self.sectors - word, self.words)

    def m(self, word: int) -> int:
        return max(MIN_PARITY, _ceil_div(self.k(word) * self.percent, 100))

    @property
    def parity_sectors(self) -> int:
        return sum(self.m(j) for j in range(self.words))

    def parity_slots(self) -> dict[tuple[int, int], int]:
        """(word, p) -> position among the parity sectors, ordered by p then word."""
        order = sorted((p, j) for j in range(self.words) for p in range(self.m(j)))
        return {(j, p): i for i, (p, j) in enumerate(order)}

    @property
    def table_blocks(self) -> int:
        return _ceil_div(self.sectors + self.parity_sectors, TABLE_ENTRIES)

    @property
    def min_m(self) -> int:
        return min(self.m(j) for j in range(self.words))

    @property
    def guaranteed_run(self) -> int:
        """The longest single run of damaged bytes always repaired, wherever it lies."""
        return (self.min_m * self.words - 1) * self.sector_size + 1

    @property
    def guaranteed_sectors(self) -> int:
        """Damaged sectors always repaired, however they are scattered."""
        return self.min_m

    @property
    def sidecar_size(self) -> int:
        return 2 * HEADER_SIZE + 2 * self.table_blocks * TABLE_BLOCK + self.parity_sectors * self.sector_size


def _sectors(data, geo: Geometry) -> list[bytes]:
    """The object's data sectors, the last one zero-padded."""
    s = geo.sector_size
    view = memoryview(data)
    out = [bytes(view[i * s : (i + 1) * s]) for i in range(geo.sectors)]
    if len(out[-1]) < s:
        out[-1] = out[-1] + bytes(s - len(out[-1]))
    return out


def _encode_table(sums: list[bytes], blocks: int) -> bytes:
    out = bytearray()
    for b in range(blocks):
        body = b"".join(sums[b * TABLE_ENTRIES : (b + 1) * TABLE_ENTRIES])
        body += bytes(TABLE_BLOCK - SUM_SIZE - len(body))
        out += body + _sum(body)
    return bytes(out)


def make_parity(data) -> bytes:
    """The sidecar bytes for an object holding `data`."""
    geo = Geometry.for_length(len(data))
    sectors = _sectors(data, geo)
    slots = geo.parity_slots()
    parity: list[bytes] = [b""] * geo.parity_sectors
    for j in range(geo.words):
        k, m = geo.k(j), geo.m(j)
        word = sectors[j :: geo.words]
        for p, block in enumerate(zfec.Encoder(k, k + m).encode(word, list(range(k, k + m)))):
            parity[slots[(j, p)]] = bytes(block)
    sums = [_sum(s) for s in sectors] + [_sum(p) for p in parity]
    header = HEADER.pack(PARITY_MAGIC, len(data), geo.sector_size, geo.max_k, geo.percent, geo.sectors,
                         geo.words, geo.parity_sectors, geo.table_blocks, blake3.blake3(data).digest())
    header += _sum(header)
    table = _encode_table(sums, geo.table_blocks)
    return b"".join([header, table, *parity, table, header])


@dataclass
class Sidecar:
    geometry: Geometry
    digest: bytes                    # BLAKE3 of the whole intact object
    sums: list[bytes | None]         # per sector (data, then parity); None where both copies are damaged
    parity: list[bytes]              # parity sectors as stored (checked against sums when used)


def _header(raw: bytes, label: str) -> tuple[Geometry, bytes]:
    for at in (0, len(raw) - HEADER_SIZE):
        h = raw[at : at + HEADER_SIZE] if at >= 0 else b""
        if len(h) != HEADER_SIZE or _sum(h[: HEADER.size]) != h[HEADER.size :]:
            continue
        magic, length, sector, max_k, pct, n, w, p, tb, digest = HEADER.unpack(h[: HEADER.size])
        if magic != PARITY_MAGIC or sector < 64 or not 0 < max_k < 256 or not 0 < pct <= 100:
            continue
        geo = Geometry(length, sector, max_k, pct)
        if (geo.sectors, geo.words, geo.parity_sectors, geo.table_blocks) != (n, w, p, tb):
            continue
        if geo.sidecar_size != len(raw):
            continue
        return geo, digest
    raise DamageError(f"the parity of {label} is damaged (its header is unreadable)")


def parse_sidecar(raw: bytes, label: str) -> Sidecar:
    """Read a sidecar, taking each table block from whichever copy is intact."""
    geo, digest = _header(raw, label)
    tsize = geo.table_blocks * TABLE_BLOCK
    first = HEADER_SIZE
    parity_at = first + tsize
    second = parity_at + geo.parity_sectors * geo.sector_size
    total = geo.sectors + geo.parity_sectors
    sums: list[bytes | None] = [None] * total
    for b in range(geo.table_blocks):
        for at in (first, second):
            block = raw[at + b * TABLE_BLOCK : at + (b + 1) * TABLE_BLOCK]
            if _sum(block[:-SUM_SIZE]) == block[-SUM_SIZE:]:
                for e in range(min(TABLE_ENTRIES, total - b * TABLE_ENTRIES)):
                    sums[b * TABLE_ENTRIES + e] = block[e * SUM_SIZE : (e + 1) * SUM_SIZE]
                break
    s = geo.sector_size
    parity = [raw[parity_at + i * s : parity_at + (i + 1) * s] for i in range(geo.parity_sectors)]
    return Sidecar(geo, digest, sums, parity)


def sidecar_matches(raw: bytes, data) -> bool:
    """Whether `raw` is an intact sidecar made for exactly `data`."""
    try:
        geo, digest = _header(raw, "")
    except DamageError:
        return False
    return geo.length == len(data) and digest == blake3.blake3(data).digest()


@dataclass
class Repair:
    """What repairing one object found."""

    data: bytes                                  # the object's bytes, repaired where possible
    damaged: list[int] = field(default_factory=list)      # data sectors that failed their check
    lost: list[int] = field(default_factory=list)         # of those, the ones parity could not give back
    parity_damaged: int = 0                      # parity sectors (or checksums) found damaged

    @property
    def repaired(self) -> bool:
        return not self.lost


def repair(data, raw_sidecar: bytes, label: str) -> Repair:
    """Give back the object's bytes from `data` (as read, damaged) and its sidecar. Never
    raises for damage in the object itself: `Repair.lost` lists the sectors that stay
    damaged. DamageError when the sidecar cannot be read at all."""
    side = parse_sidecar(raw_sidecar, label)
    geo = side.geometry
    data = bytes(data[: geo.length])
    if len(data) == geo.length and blake3.blake3(data).digest() == side.digest:
        bad_parity = sum(1 for i, p in enumerate(side.parity) if side.sums[geo.sectors + i] != _sum(p))
        return Repair(data, parity_damaged=bad_parity + side.sums.count(None))
    padded = data + bytes(geo.sectors * geo.sector_size - len(data))
    sectors = _sectors(padded, geo)
    # A sector shorter than it should be (object truncated) is damaged even if zeros match.
    short_from = len(data) // geo.sector_size if len(data) < geo.length else geo.sectors
    bad = {i for i in range(geo.sectors)
           if i >= short_from or side.sums[i] is None or side.sums[i] != _sum(sectors[i])}
    parity_ok = [side.sums[geo.sectors + i] is not None and side.sums[geo.sectors + i] == _sum(p)
                 for i, p in enumerate(side.parity)]
    slots = geo.parity_slots()
    lost: list[int] = []
    for j in range(geo.words):
        members = list(range(j, geo.sectors, geo.words))
        missing = [pos for pos, i in enumerate(members) if i in bad]
        if not missing:
            continue
        k, m = geo.k(j), geo.m(j)
        spare = [(k + p, side.parity[slots[(j, p)]]) for p in range(m) if parity_ok[slots[(j, p)]]]
        if len(spare) < len(missing):
            lost += [members[pos] for pos in missing]
            continue
        blocks = [sectors[i] for i in members]
        ids = list(range(k))
        for pos, (pid, block) in zip(missing, spare):
            blocks[pos], ids[pos] = block, pid
        for pos, block in enumerate(zfec.Decoder(k, k + m).decode(blocks, ids)):
            if pos in missing:
                sectors[members[pos]] = bytes(block)
    out = b"".join(sectors)[: geo.length]
    result = Repair(out, sorted(bad), sorted(lost), parity_ok.count(False) + side.sums.count(None))
    if not lost and blake3.blake3(out).digest() != side.digest:
        # Every sector matched its checksum yet the whole does not: more damage than the
        # checksums can show (or a forged table). Nothing can be trusted as repaired.
        result.lost = sorted(bad) or list(range(geo.sectors))
    return result


# -- objects in storage ------------------------------------------------------------------------
READ_STEP = 64 * 1024


def write_protected(storage, name: str, data, parity: bool) -> None:
    """Write an object, its sidecar first when `parity`: an object of a v2 repository is never
    visible without its parity (a sidecar whose object never came is only a few spare bytes)."""
    if parity:
        storage.write(parity_name(name), make_parity(data))
    storage.write(name, data)


def read_tolerant(storage, name: str) -> bytes:
    """All of an object's bytes that can be read: where the drive fails to read a piece
    (bad sectors), zeros, which then fail their sector checksums and are repaired."""
    try:
        return storage.read(name)
    except FileNotFoundError:
        return b""
    except OSError:
        pass
    size = storage.size(name)
    out = bytearray(size)
    for at in range(0, size, READ_STEP):
        try:
            piece = storage.read(name, at, READ_STEP)
            out[at : at + len(piece)] = piece
        except OSError:
            for sub in range(at, min(at + READ_STEP, size), SMALL_SECTOR):
                try:
                    piece = storage.read(name, sub, SMALL_SECTOR)
                    out[sub : sub + len(piece)] = piece
                except OSError:
                    continue
    return bytes(out)


def read_sidecar(storage, name: str, label: str) -> bytes:
    """The sidecar of object `name`; DamageError when it is missing or cannot be read."""
    try:
        raw = read_tolerant(storage, parity_name(name))
    except UnreachableError:
        raise                 # the server is away: that says nothing about damage
    except (OSError, StorageError) as exc:
        raise DamageError(f"the parity of {label} cannot be read ({exc})") from exc
    if not raw:
        raise DamageError(f"{label} has no parity to repair it from")
    return raw


def repair_object(storage, name: str, label: str, data=None) -> Repair:
    """Read object `name` (or take `data`, its bytes as already read) and repair it from its
    sidecar in memory. DamageError when it has no readable sidecar."""
    raw = read_sidecar(storage, name, label)
    if data is None:
        data = read_tolerant(storage, name)
    return repair(data, raw, label)
