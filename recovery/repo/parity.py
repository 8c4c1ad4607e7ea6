"""Parity sidecars: Reed–Solomon redundancy over the stored bytes of one object (a pack, an index
file, a manifest), kept in a second object `<name>.par`, so damage confined to a small share of
the object is repaired instead of lost. docs/FORMAT.md ("Parity (format v2)") is normative.

How damage becomes repairable:

* The object is cut into n sectors of `sector_size` bytes (the last one zero-padded); each has
  a CRC-32 in the sidecar, so a damaged sector is an *erasure* at a known place.
* The sectors are laid out as k rows of W (W = ceil(n / MAX_K), k = ceil(n / W), missing
  sectors of the last row are zeros): sector i is in row i div W, column i mod W. Each column
  is one code word of k data sectors and m = max(2, ceil(k * PARITY_PERMILLE / 1000)) parity
  sectors, so consecutive sectors go to different code words and one run of damage spreads
  thinly over all of them.
* The code is Cauchy Reed–Solomon over GF(2^8) (Intel ISA-L's, through liberasurecode's
  `isa_l_rs_cauchy` in pyeclib, SIMD): any k of a word's k + m sectors give back its data.
  Each column is encoded by one call, its sectors read where they lie (recovery/repo/isal.py).
* The checksum table is stored twice, in self-checking 512-byte blocks; the header twice too.

What that guarantees (`Geometry.guaranteed_run`, `Geometry.guaranteed_sectors`): any one run of
damage of up to (m * W - 1) * sector_size + 1 bytes, and any damage touching at most m sectors
anywhere; beyond that, repair works as long as no code word has lost more than m sectors.
"""

from __future__ import annotations

import struct
import threading
import zlib
from array import array
from contextlib import ExitStack
from dataclasses import dataclass, field
from math import comb
from typing import TYPE_CHECKING

import blake3

from recovery.errors import DamageError
from recovery.repo import isal
from recovery.storage.base import StorageError, UnreachableError

if TYPE_CHECKING:
    from pyeclib.ec_iface import ECDriver

PARITY_SUFFIX = ".par"
# Sidecar versions: "LBPARIT3" (written) stores the parity share per mille; "LBPARIT2" (the
# first format 2 repositories: k <= 200, 4 %) stored it in percent, and still reads.
PARITY_MAGIC = b"LBPARIT3"
PARITY_MAGIC_V2 = b"LBPARIT2"
# k + m = 244 + 11 = 255, the most one GF(2^8) code word holds. Against 1 % of a 64 MiB pack's
# 4 KiB sectors damaged at random, the chance that some word loses more than m is 3.9e-4
# (k = 200, m = 8, the first choice: 1.5e-2); the sidecar is 4.77 % of the pack. The exact
# figures and the alternatives weighed: docs/FORMAT.md ("What parity guarantees").
MAX_K = 244                  # data sectors per code word at most
PARITY_PERMILLE = 45         # parity sectors per 1000 data sectors in a code word
MIN_PARITY = 2               # a run of one byte can straddle two sectors
SMALL_OBJECT = 256 * 1024    # objects up to this size use small sectors (fewer bytes of parity)
SMALL_SECTOR = 512
LARGE_SECTOR = 4096
CHECK_SIZE = 8               # bytes of BLAKE3 that check a header or a table block
TABLE_BLOCK = 512
TABLE_ENTRIES = (TABLE_BLOCK - CHECK_SIZE) // 4          # 126 CRC-32s, then the block's check
# magic, object length, sector size, max k, parity per mille (percent in LBPARIT2), sectors n, columns W, rows k,
# parity sectors per column m, table blocks, BLAKE3 of the whole object; then its check.
HEADER = struct.Struct("<8sQIHHIIIII32s")
HEADER_SIZE = HEADER.size + CHECK_SIZE
EC_TYPE = "isa_l_rs_cauchy"


def parity_name(name: str) -> str:
    """The parity sidecar's object name for the object `name`."""
    return name + PARITY_SUFFIX


def _check(data) -> bytes:
    return blake3.blake3(data).digest(length=CHECK_SIZE)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Geometry:
    """How an object of `length` bytes is cut into sectors and code words."""

    length: int
    sector_size: int
    max_k: int = MAX_K
    permille: int = PARITY_PERMILLE

    @classmethod
    def for_length(cls, length: int) -> "Geometry":
        return cls(length, SMALL_SECTOR if length <= SMALL_OBJECT else LARGE_SECTOR)

    @property
    def sectors(self) -> int:
        return max(_ceil_div(self.length, self.sector_size), 1)

    @property
    def words(self) -> int:
        """Columns W: code words."""
        return _ceil_div(self.sectors, self.max_k)

    @property
    def k(self) -> int:
        """Rows: data sectors per code word (those past the object are zeros)."""
        return _ceil_div(self.sectors, self.words)

    @property
    def m(self) -> int:
        """Parity sectors per code word."""
        return max(MIN_PARITY, _ceil_div(self.k * self.permille, 1000))

    @property
    def parity_sectors(self) -> int:
        return self.m * self.words

    @property
    def table_blocks(self) -> int:
        return _ceil_div(self.sectors + self.parity_sectors, TABLE_ENTRIES)

    @property
    def guaranteed_run(self) -> int:
        """The longest single run of damaged bytes always repaired, wherever it lies."""
        return (self.m * self.words - 1) * self.sector_size + 1

    @property
    def guaranteed_sectors(self) -> int:
        """Damaged sectors always repaired, however they are scattered."""
        return self.m

    def scattered_odds(self, damaged: int) -> float:
        """The exact chance that `damaged` sectors of the object, all choices of that many
        equally likely (bad sectors or flipped bits scattered at random), are repaired: that no
        code word loses more than m of its data sectors (the sidecar taken as intact). Counts
        the choices that leave every word within m: the coefficient of x^damaged in the
        product over words of sum_{i<=m} C(size of the word, i) x^i, over C(n, damaged)."""
        n, w, m = self.sectors, self.words, self.m
        if not 0 <= damaged <= n:
            raise ValueError("damaged sectors must be between 0 and the object's sectors")
        ways = [1]                               # ways[d]: choices of d sectors within bounds so far
        for j in range(w):
            size = len(range(j, n, w))           # data sectors of column j (the last row may be short)
            word = [comb(size, i) for i in range(min(m, size) + 1)]
            nxt = [0] * min(len(ways) + len(word) - 1, damaged + 1)
            for a, x in enumerate(ways):
                for b, y in enumerate(word[: len(nxt) - a]):
                    nxt[a + b] += x * y
            ways = nxt
        good = ways[damaged] if damaged < len(ways) else 0
        return good / comb(n, damaged)

    @property
    def sidecar_size(self) -> int:
        return 2 * HEADER_SIZE + 2 * self.table_blocks * TABLE_BLOCK + self.parity_sectors * self.sector_size


_drivers = threading.local()


def _driver(k: int, m: int, fragment: int) -> tuple[ECDriver, list[bytes]]:
    """This thread's coder for k + m fragments of `fragment` bytes, and the headers
    liberasurecode puts before each fragment (they depend only on k, m and the size, so they
    are made again from zeros when decoding: the sidecar stores bare sectors)."""
    cache = getattr(_drivers, "cache", None)
    if cache is None:
        cache = _drivers.cache = {}
    key = (k, m, fragment)
    if key not in cache:
        from pyeclib.ec_iface import ECDriver   # here: loading liberasurecode costs a backup's start ~20 ms
        driver = ECDriver(k=k, m=m, ec_type=EC_TYPE)
        frags = driver.encode(bytes(k * fragment))
        cache[key] = (driver, [f[: len(f) - fragment] for f in frags])
        if len(cache) > 32:
            cache.pop(next(iter(cache)))
    return cache[key]


def _padded(data, geo: Geometry) -> bytes | memoryview:
    """The object as k full rows of W sectors (zeros past its end)."""
    full = geo.k * geo.words * geo.sector_size
    return memoryview(data) if len(data) == full else bytes(data) + bytes(full - len(data))


def _word(view, geo: Geometry, j: int) -> bytes:
    """Code word j's data sectors (column j of every row), back to back; zeros past the end."""
    s, w = geo.sector_size, geo.words
    pieces = [view[(r * w + j) * s : (r * w + j + 1) * s] for r in range(geo.k)]
    if len(pieces[-1]) < s:                  # the last row reaches past the object's end
        pieces = [p if len(p) == s else bytes(p) + bytes(s - len(p)) for p in pieces]
    return b"".join(pieces)


def _sector_sums(view, count: int, size: int) -> list[int]:
    return [zlib.crc32(view[i * size : (i + 1) * size]) for i in range(count)]


def _encode_table(sums: list[int], blocks: int) -> bytes:
    out = bytearray()
    for b in range(blocks):
        body = array("I", sums[b * TABLE_ENTRIES : (b + 1) * TABLE_ENTRIES]).tobytes()
        body += bytes(TABLE_BLOCK - CHECK_SIZE - len(body))
        out += body + _check(body)
    return bytes(out)


def make_parity(data, digest: bytes | None = None, geometry: Geometry | None = None) -> bytes:
    """The sidecar bytes for an object holding `data`; `digest`, its BLAKE3-256 when the
    caller has it already. `geometry` other than the default only to make sidecars as earlier
    versions laid them out (tests of reading them)."""
    return make_parity_of_pieces([data], digest, geometry)


def _sector_addresses(pieces: list, bases: list[int], s: int) -> tuple[list, list[bytes]]:
    """Where each sector of the object made of `pieces` (at the addresses `bases`) lies: an
    address inside its piece, or, for a sector that straddles pieces (or is the last, partial
    one), an index into the returned list of zero-padded copies (stored as -1 - index)."""
    addresses: list[int] = []
    copies: list[bytes] = []
    partial = bytearray()               # the start of a sector that straddles pieces
    for piece, base in zip(pieces, bases):
        size, at = len(piece), 0
        if partial:
            at = min(s - len(partial), size)
            partial += piece[:at]
            if len(partial) == s:
                addresses.append(-1 - len(copies))
                copies.append(bytes(partial))
                partial = bytearray()
        whole = (size - at) // s
        addresses.extend(range(base + at, base + at + whole * s, s))
        at += whole * s
        if at < size:
            partial += piece[at:]
    if partial:
        addresses.append(-1 - len(copies))
        copies.append(bytes(partial) + bytes(s - len(partial)))
    return addresses, copies


def make_parity_of_pieces(pieces: list, digest: bytes | None = None, geometry: Geometry | None = None) -> bytes:
    """`make_parity` of the object that is `pieces` (bytes, bytearrays, buffers) back to back,
    read where they lie: a pack's blobs as the writer was given them, with no copy of the pack.
    Only the sectors that straddle two pieces, and the last, partial one, are copied (one a
    blob: ~1 % of a pack). No piece may change until it returns."""
    pieces = [p for p in pieces if len(p)]
    if not isal.available():
        data = pieces[0] if len(pieces) == 1 else b"".join(bytes(p) for p in pieces)
        return _make_parity_pyeclib(data, digest, geometry)
    length = sum(len(p) for p in pieces)
    geo = geometry or Geometry.for_length(length)
    s, w, k, n = geo.sector_size, geo.words, geo.k, geo.sectors
    parity = bytearray(geo.parity_sectors * s)
    with ExitStack() as stack:
        bases = [stack.enter_context(isal.pinned(p)) for p in pieces]
        addresses, copies = _sector_addresses(pieces, bases, s)
        # The copies, then one sector of zeros: the sectors of the last row past the end.
        spill = b"".join(copies) + bytes(s)
        out = stack.enter_context(isal.pinned(parity))
        at = stack.enter_context(isal.pinned(spill))
        addresses = [a if a >= 0 else at + (-1 - a) * s for a in addresses]
        addresses += [at + len(copies) * s] * (k * w - len(addresses))      # n is at least 1
        isal.encode_columns(addresses, out, k, geo.m, w, s)
        sums = isal.crc32_each(addresses[:n], s) + isal.crc32_sectors(out, geo.parity_sectors, s)
    if digest is None:
        hasher = blake3.blake3()
        for piece in pieces:
            hasher.update(piece)
        digest = hasher.digest()
    return _assemble(geo, length, digest, sums, parity)


def _assemble(geo: Geometry, length: int, digest: bytes, sums: list[int], parity) -> bytes:
    header = HEADER.pack(PARITY_MAGIC, length, geo.sector_size, geo.max_k, geo.permille, geo.sectors, geo.words,
                         geo.k, geo.m, geo.table_blocks, digest)
    header += _check(header)
    table = _encode_table(sums, geo.table_blocks)
    return b"".join([header, table, parity, table, header])


def _make_parity_pyeclib(data, digest: bytes | None = None, geometry: Geometry | None = None) -> bytes:
    """make_parity through pyeclib's encoder and zlib's CRC-32: where ISA-L cannot be called
    directly, and the reference the direct path is tested against."""
    geo = geometry or Geometry.for_length(len(data))
    s, w, k = geo.sector_size, geo.words, geo.k
    view = memoryview(data)
    driver, headers = _driver(k, geo.m, s)
    # One code word at a time: its k + m sectors stay in the CPU's caches (measured: 5-10x
    # faster than one call over whole rows, whose working set is the whole object).
    parity = bytearray(geo.parity_sectors * s)
    for j in range(w):
        for p, frag in enumerate(driver.encode(_word(view, geo, j))[k:]):
            at = (p * w + j) * s                    # parity row p, column j
            parity[at : at + s] = memoryview(frag)[len(headers[k + p]):]
    last = view[(geo.sectors - 1) * s :]
    sums = _sector_sums(view, geo.sectors - 1, s) + [zlib.crc32(bytes(last) + bytes(s - len(last)))]
    sums += _sector_sums(memoryview(parity), geo.parity_sectors, s)
    return _assemble(geo, len(data), digest or blake3.blake3(data).digest(), sums, parity)


@dataclass
class Sidecar:
    geometry: Geometry
    digest: bytes                    # BLAKE3 of the whole intact object
    sums: list[int | None]           # CRC-32 per sector (data, then parity); None where both copies are damaged
    parity: memoryview               # the parity sectors as stored, column by column within each row


def _header(raw: bytes, label: str) -> tuple[Geometry, bytes]:
    for at in (0, len(raw) - HEADER_SIZE):
        h = raw[at : at + HEADER_SIZE] if at >= 0 else b""
        if len(h) != HEADER_SIZE or _check(h[: HEADER.size]) != h[HEADER.size :]:
            continue
        magic, length, sector, max_k, share, n, w, k, m, tb, digest = HEADER.unpack(h[: HEADER.size])
        if magic == PARITY_MAGIC_V2:
            share *= 10                            # percent then; ceil(k * p / 100) = ceil(k * 10p / 1000)
        elif magic != PARITY_MAGIC:
            continue
        if sector < 64 or not 0 < max_k < 250 or not 0 < share <= 200:
            continue
        geo = Geometry(length, sector, max_k, share)
        if (geo.sectors, geo.words, geo.k, geo.m, geo.table_blocks) != (n, w, k, m, tb):
            continue
        if geo.sidecar_size != len(raw):
            continue
        return geo, digest
    raise DamageError(f"the parity of {label} is damaged (its header is unreadable)")


def parse_sidecar(raw: bytes, label: str) -> Sidecar:
    """Read a sidecar, taking each table block from whichever copy is intact."""
    geo, digest = _header(raw, label)
    first = HEADER_SIZE
    parity_at = first + geo.table_blocks * TABLE_BLOCK
    second = parity_at + geo.parity_sectors * geo.sector_size
    total = geo.sectors + geo.parity_sectors
    sums: list[int | None] = [None] * total
    for b in range(geo.table_blocks):
        for at in (first, second):
            block = raw[at + b * TABLE_BLOCK : at + (b + 1) * TABLE_BLOCK]
            if _check(block[:-CHECK_SIZE]) == block[-CHECK_SIZE:]:
                entries = array("I", block[: TABLE_ENTRIES * 4])
                count = min(TABLE_ENTRIES, total - b * TABLE_ENTRIES)
                sums[b * TABLE_ENTRIES : b * TABLE_ENTRIES + count] = entries[:count]
                break
    return Sidecar(geo, digest, sums, memoryview(raw)[parity_at:second])


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


def _decode_word(geo: Geometry, have: dict[int, bytes]) -> list[bytes]:
    """The k data sectors of one code word from any k of its sectors (row or k + p -> bytes),
    decoded as k + m fragments of one sector each."""
    driver, headers = _driver(geo.k, geo.m, geo.sector_size)
    rows = sorted(have)[: geo.k]
    data = driver.decode([headers[r] + have[r] for r in rows])
    s = geo.sector_size
    return [data[i * s : (i + 1) * s] for i in range(geo.k)]


def repair(data, raw_sidecar: bytes, label: str) -> Repair:
    """Give back the object's bytes from `data` (as read, damaged) and its sidecar. Never
    raises for damage in the object itself: `Repair.lost` lists the sectors that stay
    damaged. DamageError when the sidecar cannot be read at all."""
    side = parse_sidecar(raw_sidecar, label)
    geo = side.geometry
    n, s, w = geo.sectors, geo.sector_size, geo.words
    data = bytes(data[: geo.length])
    if len(data) == geo.length and blake3.blake3(data).digest() == side.digest:
        sums = _sector_sums(side.parity, geo.parity_sectors, s)
        bad_parity = sum(1 for i, c in enumerate(sums) if side.sums[n + i] != c)
        return Repair(data, parity_damaged=bad_parity)
    padded = bytearray(_padded(data, geo))
    view = memoryview(padded)
    sums = _sector_sums(view, n, s)
    # Sectors past the end of a truncated object are damaged even when zeros would match.
    short_from = len(data) // s if len(data) < geo.length else n
    bad = {i for i in range(n) if i >= short_from or side.sums[i] is None or side.sums[i] != sums[i]}
    psums = _sector_sums(side.parity, geo.parity_sectors, s)
    parity_ok = [side.sums[n + i] is not None and side.sums[n + i] == c for i, c in enumerate(psums)]
    lost: list[int] = []
    for j in sorted({i % w for i in bad}):
        members = [r * w + j for r in range(geo.k)]      # past n: zeros, always intact
        missing = [r for r, i in enumerate(members) if i in bad]
        have = {r: bytes(view[i * s : (i + 1) * s]) for r, i in enumerate(members) if i not in bad}
        for p in range(geo.m):
            at = p * w + j                              # parity row p, column j
            if parity_ok[at]:
                have[geo.k + p] = bytes(side.parity[at * s : (at + 1) * s])
        if len(have) < geo.k:
            lost += [members[r] for r in missing]
            continue
        rows = _decode_word(geo, have)
        for r in missing:
            i = members[r]
            view[i * s : (i + 1) * s] = rows[r]
    out = bytes(view[: geo.length])
    result = Repair(out, sorted(bad), sorted(lost), parity_ok.count(False))
    if not lost and blake3.blake3(out).digest() != side.digest:
        # Every sector matched its checksum yet the whole does not: more damage than the
        # checksums can show. Nothing can be trusted as repaired.
        result.lost = sorted(bad) or list(range(n))
    return result


# -- objects in storage ------------------------------------------------------------------------
READ_STEP = 64 * 1024


def write_protected(storage, name: str, data, parity: bool) -> None:
    """Write an object, its sidecar first when `parity`: an object of a v2 repository is never
    visible without its parity (a sidecar whose object never came is only a few spare bytes)."""
    if parity:
        storage.write(parity_name(name), make_parity(data))
    storage.write(name, data)


def _unreadable(exc: Exception) -> bool:
    """A read that failed where the drive could not read (a bad sector): an OSError, or the
    StorageError a storage makes of it; never a server that went away."""
    return isinstance(exc, (OSError, StorageError)) and not isinstance(exc, UnreachableError)


def read_tolerant(storage, name: str) -> bytes:
    """All of an object's bytes that can be read: where the drive fails to read a piece
    (bad sectors), zeros, which then fail their sector checksums and are repaired."""
    try:
        return storage.read(name)
    except FileNotFoundError:
        return b""
    except (OSError, StorageError) as exc:
        if not _unreadable(exc):
            raise
    size = storage.size(name)
    out = bytearray(size)
    for at in range(0, size, READ_STEP):
        try:
            piece = storage.read(name, at, READ_STEP)
            out[at : at + len(piece)] = piece
        except (OSError, StorageError) as exc:
            if not _unreadable(exc):
                raise
            for sub in range(at, min(at + READ_STEP, size), SMALL_SECTOR):
                try:
                    piece = storage.read(name, sub, SMALL_SECTOR)
                    out[sub : sub + len(piece)] = piece
                except (OSError, StorageError) as exc:
                    if not _unreadable(exc):
                        raise
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
