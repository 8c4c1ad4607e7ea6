"""Intel ISA-L's encoder and CRC-32, called directly (ctypes) from the copy of the library the
pyeclib wheel ships, for making parity sidecars without copying the object.

pyeclib's `encode` takes one bytes object per code word and hands back every fragment, data
included, as new bytes: for a 64 MiB pack that is three copies of the pack (gathering each
word, liberasurecode's aligned buffer, the returned data fragments) around the arithmetic.
`ec_encode_data` takes a pointer per sector instead, so each code word's k data sectors are
read where they lie and only its m parity sectors are written. The parity is the same bytes:
liberasurecode's `isa_l_rs_cauchy` is `gf_gen_cauchy1_matrix(k + m, k)`, `ec_init_tables` on
its last m rows, `ec_encode_data` (tests/unit/test_parity_isal.py compares both byte for byte).
ISA-L's `crc32_gzip_refl` is zlib's CRC-32 (same polynomial, reflected, same start value).

The encoder is called through ctypes' CDLL, which lets other threads run meanwhile (a pack's
~70 calls of ~0.2 ms each overlap with compression). A pack's ~17,000 sector CRC-32s are ~2 ms
of arithmetic and ~4 ms of calling: through CDLL each call also gave up and took back the
interpreter lock; through PyDLL, in batches between which other threads may run, they cost
~6.5 ms of CPU a pack instead of ~8.5 ms with another Python thread busy (measured).

`available()` is False when the library cannot be found or loaded; parity.py then uses
pyeclib's own encoder and zlib.
"""

from __future__ import annotations

import ctypes
import threading
from contextlib import contextmanager
from itertools import repeat
from pathlib import Path

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_crc = None                  # crc32_gzip_refl through PyDLL: called with the lock held
_tried = False
CRC_BATCH = 1024             # sectors between chances for other threads to take the lock
_tables: dict[tuple[int, int], ctypes.Array] = {}


def _candidates() -> list[Path]:
    """Where pyeclib's wheel puts its libraries (and where the frozen app copies them)."""
    try:
        import pyeclib
    except ImportError:
        return []
    site = Path(pyeclib.__file__).resolve().parent.parent
    found: list[Path] = []
    for folder in (site / "pyeclib.libs", site):
        found += sorted(folder.glob("libisal*.so*"))
    return found


def _load() -> ctypes.CDLL | None:
    global _lib, _crc, _tried
    with _lock:
        if _tried:
            return _lib
        _tried = True
        for path in _candidates():
            try:
                lib = ctypes.CDLL(str(path))
                lib.gf_gen_cauchy1_matrix.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
                lib.gf_gen_cauchy1_matrix.restype = None
                lib.ec_init_tables.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
                lib.ec_init_tables.restype = None
                lib.ec_encode_data.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                               ctypes.c_void_p, ctypes.c_void_p]
                lib.ec_encode_data.restype = None
                crc = ctypes.PyDLL(str(path)).crc32_gzip_refl
                crc.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint64]
                crc.restype = ctypes.c_uint32
            except (OSError, AttributeError):
                continue
            _lib, _crc = lib, crc
            break
        return _lib


def available() -> bool:
    return _load() is not None


def _encode_tables(k: int, m: int) -> ctypes.Array:
    """The expanded multiplication tables for the Cauchy code of k data and m parity fragments."""
    key = (k, m)
    tables = _tables.get(key)
    if tables is None:
        lib = _load()
        matrix = (ctypes.c_ubyte * ((k + m) * k))()
        lib.gf_gen_cauchy1_matrix(matrix, k + m, k)
        tables = (ctypes.c_ubyte * (32 * k * m))()
        lib.ec_init_tables(k, m, ctypes.byref(matrix, k * k), tables)
        with _lock:
            _tables[key] = tables
    return tables


@contextmanager
def pinned(data):
    """The address of the first byte of `data` (bytes, or a writable buffer: a bytearray, an
    mmap, a memoryview of one), valid until the block ends; the buffer cannot be resized
    meanwhile. Read-only views other than bytes are copied once. Never empty: zero bytes
    pin a one-byte buffer."""
    if isinstance(data, bytes):
        # c_char_p holds a pointer to the bytes object's own storage, not a copy.
        holder = ctypes.c_char_p(data or b"\0")
        yield ctypes.cast(holder, ctypes.c_void_p).value
        return
    view = memoryview(data)
    if view.readonly or not view.c_contiguous or view.nbytes == 0:
        with pinned(bytes(view)) as address:
            yield address
        return
    holder = (ctypes.c_char * view.nbytes).from_buffer(view)
    try:
        yield ctypes.addressof(holder)
    finally:
        del holder
        view.release()


def encode_columns(sectors: list[int], parity: int, k: int, m: int, words: int, sector: int) -> None:
    """Parity of an object laid out as k rows of `words` sectors, each read where it lies:
    `sectors` holds the address of every one, row after row (k * words; past the object's end,
    zeros). Code word j is column j; its m parity sectors go to the address `parity` plus
    (p * words + j) * sector, as parity.py lays them out."""
    lib = _load()
    tables = _encode_tables(k, m)
    row = words * sector
    sources = (ctypes.c_void_p * k)()
    targets = (ctypes.c_void_p * m)()
    # One code word a call: its k + m sectors stay in the CPU's caches.
    for j in range(words):
        sources[:] = sectors[j::words]
        targets[:] = range(parity + j * sector, parity + m * row, row)
        lib.ec_encode_data(sector, k, m, tables, sources, targets)


def crc32_each(addresses, sector: int) -> list[int]:
    """zlib's CRC-32 of the `sector` bytes at each of `addresses` (a list or a range)."""
    _load()
    sums: list[int] = []
    for first in range(0, len(addresses), CRC_BATCH):
        batch = addresses[first : first + CRC_BATCH]
        sums += map(_crc, repeat(0, len(batch)), batch, repeat(sector, len(batch)))
    return sums


def crc32_sectors(base: int, count: int, sector: int) -> list[int]:
    """zlib's CRC-32 of each of `count` sectors that lie back to back from the address `base`."""
    return crc32_each(range(base, base + count * sector, sector), sector)
