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

`available()` is False when the library cannot be found or loaded; parity.py then uses
pyeclib's own encoder and zlib. ctypes releases the GIL for the duration of each call.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
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
    global _lib, _tried
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
                lib.crc32_gzip_refl.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint64]
                lib.crc32_gzip_refl.restype = ctypes.c_uint32
            except (OSError, AttributeError):
                continue
            _lib = lib
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


def _address(buffer) -> int:
    """The address of a writable buffer's first byte (a bytearray, or a memoryview of one)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


def encode_columns(data: bytearray, parity: bytearray, k: int, m: int, words: int, sector: int) -> None:
    """Parity of an object laid out as k rows of `words` sectors (`data`, at least k * words *
    sector bytes, zeros past the object): code word j is column j; its m parity sectors go to
    `parity` at (p * words + j) * sector, as parity.py lays them out."""
    lib = _load()
    tables = _encode_tables(k, m)
    base, out = _address(data), _address(parity)
    row = words * sector
    sources = (ctypes.c_void_p * k)()
    targets = (ctypes.c_void_p * m)()
    # One code word a call: its k + m sectors stay in the CPU's caches.
    for j in range(words):
        at = j * sector
        sources[:] = [base + r * row + at for r in range(k)]
        targets[:] = [out + p * row + at for p in range(m)]
        lib.ec_encode_data(sector, k, m, tables, sources, targets)


def crc32_sectors(data: bytearray, count: int, sector: int) -> list[int]:
    """zlib's CRC-32 of each of the first `count` sectors of `data` (a writable buffer)."""
    lib = _load()
    base = _address(data)
    crc = lib.crc32_gzip_refl
    return [crc(0, base + i * sector, sector) for i in range(count)]
