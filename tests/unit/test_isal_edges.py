"""Finding and pinning for the direct ISA-L path (recovery/repo/isal.py): the library is found
where pyeclib's wheel puts it (a candidate that does not load, or lacks the functions, is passed
over; no pyeclib, no library), the encode tables are made once per code, and `pinned` gives the
address of the caller's own bytes when it can (writable, contiguous), a copy when it must
(read-only, strided, empty), and lets the buffer go when the block ends. The parity itself is
compared with pyeclib's in tests/unit/test_parity_isal.py."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from recovery.repo import isal


@pytest.fixture
def fresh(monkeypatch):
    """The module as a new process finds it: nothing loaded or tried yet (put back after)."""
    for name, value in (("_lib", None), ("_crc", None), ("_tried", False), ("_tables", {})):
        monkeypatch.setattr(isal, name, value)
    return isal


def test_pyeclibs_wheel_holds_the_library_and_it_loads(fresh):
    import pyeclib

    found = fresh._candidates()
    assert found and all(p.name.startswith("libisal") and ".so" in p.name for p in found)
    site = Path(pyeclib.__file__).resolve().parent.parent
    assert all(p.parent in (site / "pyeclib.libs", site) for p in found)
    assert fresh.available() and fresh._tried and fresh._lib is not None and fresh._crc is not None
    lib = fresh._lib
    assert fresh._load() is lib                 # loaded once: later calls give the same library
    abc = ctypes.create_string_buffer(b"abc", 3)
    assert fresh.crc32_sectors(ctypes.addressof(abc), 1, 3) == [zlib.crc32(b"abc")]


def test_candidates_that_do_not_load_or_lack_the_functions_are_passed_over(fresh, monkeypatch):
    real = fresh._candidates()[0]
    other = sorted(p for p in real.parent.glob("*.so*") if "isal" not in p.name)[0]   # loads, no ISA-L
    monkeypatch.setattr(fresh, "_candidates", lambda: [real.parent / "libisal-gone.so", other, real])
    assert fresh._load() is not None and fresh._lib._name == str(real)


def test_the_first_library_that_loads_is_the_one_used(fresh, monkeypatch, tmp_path):
    real = fresh._candidates()[0]
    twin = tmp_path / "libisal-twin.so.2"
    twin.write_bytes(real.read_bytes())
    monkeypatch.setattr(fresh, "_candidates", lambda: [real, twin])
    assert fresh._load()._name == str(real)


def test_a_new_process_without_pyeclib_finds_no_library():
    code = ("import sys; sys.modules['pyeclib'] = None\n"
            "from recovery.repo import isal\n"
            "print(isal.available(), isal._lib)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])))
    assert run.returncode == 0 and run.stdout.split() == ["False", "None"], run.stderr


def test_without_pyeclib_there_is_no_library(fresh, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyeclib", None)           # import pyeclib raises ImportError
    assert fresh._candidates() == []
    assert not fresh.available() and fresh._tried
    monkeypatch.setattr(fresh, "_candidates", lambda: [Path("/nonexistent/libisal.so.2")])
    assert fresh._load() is None                               # tried once: not tried again
    fresh._tried = False
    assert fresh._load() is None


def test_the_tables_of_a_code_are_made_once(fresh):
    one = fresh._encode_tables(5, 2)
    assert fresh._encode_tables(5, 2) is one and list(fresh._tables) == [(5, 2)]
    assert len(one) == 32 * 5 * 2 and any(one)
    other = fresh._encode_tables(4, 3)
    assert other is not one and set(fresh._tables) == {(5, 2), (4, 3)}


def test_a_writable_buffer_is_pinned_in_place_and_let_go_after():
    buf = bytearray(b"0123456789")
    with isal.pinned(buf) as address:
        ctypes.memmove(address + 2, b"ab", 2)
        with pytest.raises(BufferError):
            buf.append(1)                        # pinned: cannot move meanwhile
    assert buf == bytearray(b"01ab456789")
    buf.append(ord("!"))                         # let go
    one = bytearray(b"a")                        # the smallest buffer is pinned in place too
    with isal.pinned(one) as address:
        ctypes.memmove(address, b"b", 1)
    assert one == bytearray(b"b")
    whole = bytearray(b"xxxxxxxx")
    with isal.pinned(memoryview(whole)[4:]) as address:
        ctypes.memmove(address, b"yy", 2)
    assert whole == bytearray(b"xxxxyyxx")


def test_bytes_are_read_where_they_lie_and_other_read_only_or_strided_views_are_copied():
    data = bytes(range(256)) * 4
    with isal.pinned(data) as address:
        assert ctypes.string_at(address, len(data)) == data
    base = bytearray(range(200))
    strided = memoryview(base)[::2]
    with isal.pinned(strided) as address:
        assert ctypes.string_at(address, 100) == bytes(base[::2])
        ctypes.memmove(address, b"\xff", 1)       # a copy: the caller's buffer is not written
    assert base[0] == 0
    read_only = memoryview(bytes(base)).toreadonly()
    with isal.pinned(read_only) as address:
        assert ctypes.string_at(address, 200) == bytes(base)
    for empty in (b"", bytearray(), memoryview(b"")):
        with isal.pinned(empty) as address:
            assert address and ctypes.string_at(address, 1) == b"\0"


def test_crc32_of_a_list_of_addresses_and_of_none():
    sectors = [bytes([i]) * 512 for i in range(5)]
    buffers = [ctypes.create_string_buffer(s, 512) for s in sectors]
    got = isal.crc32_each([ctypes.addressof(b) for b in reversed(buffers)], 512)
    assert got == [zlib.crc32(s) for s in reversed(sectors)]
    assert isal.crc32_each([], 512) == [] and isal.crc32_sectors(ctypes.addressof(buffers[0]), 0, 512) == []
