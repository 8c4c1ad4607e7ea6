"""NTFS damage, one field at a time, on a real mkntfs volume edited in memory: each check of
recovery/fs/ntfs.py refuses with its own message, and the value next to a bound is still read.
MFT records are edited with their update sequence undone and redone, as NTFS itself writes them."""

from __future__ import annotations

import struct
import subprocess

import pytest

from recovery.fs import FsMapError, merge_ranges, ntfs, probe_partition
from tests import fsimages

MiB = fsimages.MiB
SIZE = 16 * MiB
RECORD = 1024


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> bytes:
    tmp = tmp_path_factory.mktemp("ntfs")
    image = fsimages.make_ntfs(tmp / "fs.img", SIZE, label="Damage")
    hiberfil = tmp / "hiberfil.sys"
    hiberfil.write_bytes(b"hibr" + bytes(8188))
    subprocess.run(["ntfscp", "-f", str(image), str(hiberfil), "hiberfil.sys"], capture_output=True, check=True)
    return image.read_bytes()


def reader(data):
    data = bytes(data)
    return lambda offset, length: data[offset: offset + length] if offset >= 0 and length > 0 else b""


def u16(b, o):
    return struct.unpack_from("<H", b, o)[0]


def u32(b, o):
    return struct.unpack_from("<I", b, o)[0]


def record_offset(data, number: int) -> int:
    """Where MFT record `number` lies: a fresh mkntfs volume's MFT is one run from its start."""
    boot = ntfs._Boot(bytes(data[:512]))
    return boot.mft_lcn * boot.cluster + number * RECORD


def edit_record(data: bytearray, number: int, change) -> None:
    """Undo record `number`'s update sequence, let `change` edit it, redo the sequence."""
    edit_block(data, record_offset(data, number), RECORD, change)


def edit_block(data: bytearray, at: int, size: int, change) -> None:
    """The same for any block with an update sequence (an MFT record, an INDX block)."""
    rec = bytearray(data[at: at + size])
    usa_off, count = u16(rec, 4), u16(rec, 6)
    for i in range(1, count):
        rec[i * 512 - 2: i * 512] = rec[usa_off + 2 * i: usa_off + 2 * i + 2]
    change(rec)
    usa_off, count = u16(rec, 4), u16(rec, 6)
    for i in range(1, min(count, size // 512 + 1)):
        rec[usa_off + 2 * i: usa_off + 2 * i + 2] = rec[i * 512 - 2: i * 512]
        rec[i * 512 - 2: i * 512] = rec[usa_off: usa_off + 2]
    data[at: at + size] = rec


def attribute_at(rec, kind: int, nth: int = 0) -> int:
    off = u16(rec, 0x14)
    while u32(rec, off) != 0xFFFFFFFF:
        if u32(rec, off) == kind:
            if nth == 0:
                return off
            nth -= 1
        off += u32(rec, off + 4)
    raise LookupError(hex(kind))


def refusal(data) -> str | None:
    try:
        ntfs.probe(reader(data), len(data))
    except FsMapError as exc:
        return str(exc)
    return None


def damaged(what: str) -> str:
    return f"NTFS metadata is damaged ({what})"


def test_the_pristine_volume_maps_with_its_label_and_hibernation(pristine):
    info = ntfs.probe(reader(pristine), SIZE)
    assert info.label == "Damage" and info.warnings == (ntfs.HIBERNATED_WARNING,) and not info.whole


# ---------------------------------------------------------------- the boot sector

def boot_with(pristine, **fields) -> bytes:
    layout = {"bps": (0x0B, "H"), "spc": (0x0D, "B"), "total": (0x28, "Q"), "mft": (0x30, "Q"),
              "per_record": (0x40, "b")}
    boot = bytearray(pristine[:512])
    for name, value in fields.items():
        offset, fmt = layout[name]
        struct.pack_into("<" + fmt, boot, offset, value)
    return bytes(boot)


@pytest.mark.parametrize("fields,message", [
    ({"bps": 256, "spc": 16}, None),
    ({"bps": 128, "spc": 32}, damaged("boot sector geometry 128 x 32")),
    ({"bps": 768, "spc": 4}, damaged("boot sector geometry 768 x 4")),
    ({"bps": 4096, "spc": 0xF7}, None),                                        # 2 MiB clusters
    ({"bps": 4096, "spc": 0xF6}, damaged("boot sector geometry 4096 x 1024")),
    ({"bps": 2048, "spc": 0x80}, None),                                        # 256 KiB clusters
    ({"bps": 512, "spc": 0xF4, "per_record": -10}, None),                      # 2 MiB clusters: the largest
    ({"bps": 1024, "spc": 0xF4, "per_record": -10}, damaged("boot sector geometry 1024 x 4096")),
    ({"per_record": -8}, None),                                                # 256-byte records
    ({"per_record": -7}, damaged("MFT record size 128")),
    ({"per_record": -16}, None),                                               # 64 KiB records
    ({"per_record": -17}, damaged("MFT record size 131072")),
    ({"per_record": 3}, damaged("MFT record size 12288")),                    # three 4 KiB clusters
    ({"per_record": 1}, None),
    ({"per_record": 0}, damaged("MFT record size 1")),
    ({"total": 7}, damaged("boot sector places the MFT outside the volume")),  # under one cluster
    ({"total": 8 * 4}, damaged("boot sector places the MFT outside the volume")),
    ({"total": 8 * 5}, None),
    ({"bps": 1024, "spc": 4}, None),
    ({"total": 8, "mft": 0}, None),                                            # one cluster, the MFT in it
])
def test_each_boot_sector_bound(pristine, fields, message):
    boot = boot_with(pristine, **fields)
    try:
        ntfs._Boot(boot)
        got = None
    except FsMapError as exc:
        got = str(exc)
    assert got == message


def test_the_record_size_is_a_count_of_clusters_when_positive(pristine):
    assert ntfs._Boot(boot_with(pristine, per_record=1)).record_size == 4096
    assert ntfs._Boot(boot_with(pristine, per_record=2, spc=1)).record_size == 1024
    assert ntfs._Boot(boot_with(pristine, per_record=-12)).record_size == 4096
    boot = ntfs._Boot(pristine[:512])
    assert (boot.cluster, boot.total_clusters, boot.mft_lcn, boot.record_size) == (4096, 4095, 4, 1024)


def test_a_boot_sector_that_only_looks_like_ntfs_is_not_ntfs(pristine):
    for data in (pristine[:3] + b"NTFS   \0" + pristine[11:], pristine[:511]):
        assert ntfs.probe(reader(data), SIZE) is None
        assert ntfs.identify(reader(data), SIZE) is None
        assert ntfs.boot_sector_size(reader(data)) is None
        assert ntfs.holds_windows(reader(data), SIZE) is False
    assert ntfs.boot_sector_size(reader(pristine)) == (SIZE - 512)
    odd = boot_with(pristine, bps=768) + pristine[512:]
    assert ntfs.boot_sector_size(reader(odd)) is None
    assert ntfs.identify(reader(odd), SIZE) == ("ntfs", None, None)


def test_a_volume_larger_than_its_partition_is_named(pristine):
    message = refusal_with_size(pristine, SIZE - 1024)
    assert message == (f"NTFS is larger than its partition ({SIZE - 512} bytes in {SIZE - 1024}); "
                       "the partition looks truncated")
    assert refusal_with_size(pristine, SIZE - 512) is None


def refusal_with_size(data, size: int) -> str | None:
    try:
        ntfs.probe(reader(data), size)
    except FsMapError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------- records and attributes

def edited(pristine, number: int, change) -> bytearray:
    data = bytearray(pristine)
    edit_record(data, number, change)
    return data


def put(offset: int, fmt: str, value):
    return lambda rec: struct.pack_into("<" + fmt, rec, offset, value)


def put_in(kind: int, offset: int, fmt: str, value, nth: int = 0):
    """Change a field of the first (nth) attribute of `kind` in a record."""
    return lambda rec: struct.pack_into("<" + fmt, rec, attribute_at(rec, kind, nth) + offset, value)


@pytest.mark.parametrize("number,change,message", [
    (0, put(0, "4s", b"BAAD"), damaged("MFT record 0 has no FILE signature")),
    (6, put(0, "4s", b"FILF"), damaged("MFT record 6 has no FILE signature")),
    (6, put(6, "H", 0), damaged("MFT record 6 has a bad update sequence")),
    (6, put(6, "H", 4), damaged("MFT record 6 has a bad update sequence")),
    (6, put(4, "H", RECORD - 5), damaged("MFT record 6 has a bad update sequence")),
    (6, put(6, "H", 1), None),                      # a sequence protecting nothing is still whole
    (6, put(0x16, "H", 0), damaged("MFT record 6 is not in use")),
    (6, put(0x16, "H", 3), None),                   # in use, and a directory: only bit 0 counts
    (6, put_in(0x10, 4, "I", 8), damaged("MFT record 6 has a bad attribute")),
    (0, put_in(0x10, 4, "I", 8), damaged("MFT record 0 has a bad attribute")),
    (6, put_in(0x10, 4, "I", 15), damaged("MFT record 6 has a bad attribute")),
    (6, put_in(0x10, 4, "I", 2000), damaged("MFT record 6 has a bad attribute")),
    (6, put(0x18, "I", 0x100), damaged("MFT record 6 has no end marker")),
    (6, put_in(0x30, 0x10, "I", 2000), damaged("resident attribute runs past its record")),
    (0, put_in(0x80, 0x20, "H", 0x3F0), damaged("MFT record 3 is shorter than its data runs claim")),
    (6, put_in(0x80, 0x40, "B", 0x91), damaged("bad data run")),     # nine bytes of length
    (6, put_in(0x80, 0x40, "B", 0x01), damaged("bad data run")),     # no offset: sparse, then...
    (6, put_in(0x80, 0x40, "B", 0x90), damaged("bad data run")),     # no length bytes
    (6, put_in(0x80, 0x40, "B", 0x81), damaged("bad data run")),     # eight offset bytes past the end
    (6, put_in(0x80, 0x30, "Q", 1 << 20), damaged("$Bitmap is shorter than its data runs claim")),
    (6, put_in(0x80, 0x30, "Q", 511), damaged("$Bitmap holds 511 bytes, the volume needs 512")),
    (6, put_in(0x80, 0x10, "Q", 1), damaged("$Bitmap is shorter than its data runs claim")),
    (6, put_in(0x80, 0x08, "B", 0), damaged("$Bitmap holds 0 bytes, the volume needs 512")),   # read as resident
    (6, put_in(0x80, 0x00, "I", 0x81), damaged("MFT record 6 lacks attribute 0x80")),
    (0, put_in(0x80, 0x08, "B", 0), damaged("MFT record 0 has no data runs")),
])
def test_each_record_check_names_what_it_found(pristine, number, change, message):
    assert refusal(edited(pristine, number, change)) == message


# ---------------------------------------------------------------- streams, flags, directories

@pytest.fixture
def volume(pristine):
    return ntfs._Volume(reader(pristine), SIZE)


def test_reading_runs_names_gaps_and_places_outside(volume, pristine):
    cluster = 4096
    assert volume.read_runs([(0, 1, 2)], 100, 5000, "x") == pristine[cluster + 100: cluster + 5100]
    assert volume.read_runs([(0, None, 1), (1, 1, 1)], 4000, 200, "x") == bytes(96) + pristine[cluster: cluster + 104]
    assert volume.read_runs([(0, 4094, 1)], 0, 10, "x") == pristine[4094 * cluster: 4094 * cluster + 10]
    assert volume.read_runs([(0, 0, 1)], 0, 10, "x") == pristine[:10]                 # $Boot's own cluster
    assert volume.read_runs([(0, 1, 1), (1, None, 1)], 4000, 200, "x") == pristine[cluster + 4000: 2 * cluster] + bytes(104)
    for runs, length, message in (
            ([(1, 1, 1)], 2 * cluster, "x has a gap in its data runs"),
            ([(0, 1, 1), (2, 3, 1)], 3 * cluster, "x has a gap in its data runs"),
            ([(0, 4095, 1)], cluster, "x points outside the volume"),
            ([(0, 4094, 2)], cluster, "x points outside the volume"),
            ([(0, -1, 1)], cluster, "x points outside the volume"),
            ([(0, 1, 1)], cluster + 1, "x is shorter than its data runs claim"),
            ([(0, 1, 1), (2, 3, 1)], 2 * cluster, "x is shorter than its data runs claim")):
        with pytest.raises(FsMapError) as err:
            volume.read_runs(runs, 0, length, "x")
        assert str(err.value) == damaged(message)


def test_never_written_bitmap_bytes_count_as_used(pristine):
    info = ntfs.probe(reader(pristine), SIZE)
    data = edited(pristine, 6, put_in(0x80, 0x38, "Q", 256))     # initialized: the first 256 of 512 bytes
    cut = ntfs.probe(reader(data), SIZE)
    half = 256 * 8 * 4096
    below = [(a, min(n, half - a)) for a, n in info.used if a < half]
    assert list(cut.used) == list(merge_ranges(below + [(half, SIZE - half)], SIZE))
    assert info.used_bytes < SIZE - half


def test_volume_flags_need_a_whole_volume_information_value(pristine):
    dirty = edited(pristine, 3, put_in(0x70, 0x10 + 0x18 + 0xA - 0x10, "H", ntfs.VOLUME_DIRTY))
    assert ntfs._Volume(reader(dirty), SIZE).label_and_flags() == ("Damage", ntfs.VOLUME_DIRTY)
    short = bytearray(dirty)
    edit_record(short, 3, put_in(0x70, 0x10, "I", 11))
    assert ntfs._Volume(reader(short), SIZE).label_and_flags() == ("Damage", 0)
    nameless = edited(pristine, 3, put_in(0x60, 0x10, "I", 0))
    assert ntfs._Volume(reader(nameless), SIZE).label_and_flags() == (None, 0)
    assert ntfs.identify(reader(nameless), SIZE)[1] is None


def index_root_block_size(value: int):
    """The root directory's index block size, kept in its $INDEX_ROOT value at +8."""
    def change(rec):
        at = attribute_at(rec, 0x90)
        struct.pack_into("<I", rec, at + u16(rec, at + 0x14) + 8, value)
    return change


@pytest.mark.parametrize("size,fine", [(512, True), (511, False), (65536, True), (65537, False)])
def test_the_index_block_size_is_bounded(pristine, size, fine):
    data = edited(pristine, 5, index_root_block_size(size))
    volume = ntfs._Volume(reader(data), SIZE)
    if fine:
        list(volume.dir_entries(5, "root directory"))
    else:
        with pytest.raises(FsMapError) as err:
            list(volume.dir_entries(5, "root directory"))
        assert str(err.value) == damaged("root directory index block size")
    # Either way hiberfil.sys is not found (its entry sits in a 4 KiB index block), and the map
    # stands: a damaged root index costs only the hibernation check.
    info = ntfs.probe(reader(data), SIZE)
    assert info.warnings == () and info.used == ntfs.probe(reader(pristine), SIZE).used


def test_root_entries_are_read_and_a_damaged_index_only_loses_the_hibernation_check(pristine, volume):
    names = {name for _ref, name in volume.dir_entries(5, "root directory")}
    assert {"$MFT", "$Bitmap", "$Volume", "hiberfil.sys", "."} <= names
    assert volume.child(5, "HIBERFIL.SYS", "root") == volume.child(5, "hiberfil.sys", "root") > 15
    assert volume.child(5, "no such file", "root") is None
    data = edited(pristine, 5, index_root_block_size(100))
    info = ntfs.probe(reader(data), SIZE)
    assert info.warnings == () and not info.whole
    assert info.used == ntfs.probe(reader(pristine), SIZE).used
    assert ntfs.holds_windows(reader(data), SIZE) is False


def test_the_root_index_lists_what_ntfsls_lists(pristine, tmp_path):
    image = tmp_path / "fs.img"
    image.write_bytes(pristine)
    out = subprocess.run(["ntfsls", "-a", "-s", "-i", str(image)], capture_output=True, text=True, check=True).stdout
    expected = {(int(number), name) for number, name in (line.split(None, 1) for line in out.splitlines())
                if name != ".."}
    volume = ntfs._Volume(reader(pristine), SIZE)
    got = {(ref & 0xFFFFFFFFFFFF, name) for ref, name in volume.dir_entries(5, "root directory")}
    assert got == expected and len(got) > 12


# ---------------------------------------------------------------- pure parsing, in memory

@pytest.mark.parametrize("data,first_vcn,runs", [
    (bytes([0x11, 5, 10]), 0, [(0, 10, 5)]),                       # no end marker: the data ends there
    (bytes([0x11, 5, 10, 0, 0x11, 1, 1]), 0, [(0, 10, 5)]),         # a zero header ends the list
    (bytes([0x11, 5, 10, 0x11, 2, 0xFE]), 7, [(7, 10, 5), (12, 8, 2)]),   # offsets are signed deltas
    (bytes([0x12, 0x00, 0x01, 0x05]), 0, [(0, 5, 256)]),            # little-endian counts
    (bytes([0x01, 3, 0x11, 1, 4]), 0, [(0, None, 3), (3, 4, 1)]),   # no offset: sparse
    (bytes([0x88, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]), 0, [(0, 2, 1)]),   # eight and eight
])
def test_data_runs_decode(data, first_vcn, runs):
    assert ntfs._decode_runs(data, first_vcn) == runs


@pytest.mark.parametrize("data", [
    bytes([0x10, 5]), bytes([0x19, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]), bytes([0x91, 1] + [0] * 9),
    bytes([0x11, 5]), bytes([0x21, 5, 0]),
])
def test_bad_data_runs_are_refused(data):
    with pytest.raises(FsMapError) as err:
        ntfs._decode_runs(data, 0)
    assert str(err.value) == damaged("bad data run")


def sectors(usa_off: int, count: int, size: int = 1024, usn=b"\x07\x00", entries=(b"AA", b"BB")) -> bytearray:
    buf = bytearray(b"FILE" + struct.pack("<HH", usa_off, count) + bytes(size - 8))
    buf[usa_off: usa_off + 2] = usn
    for i, entry in enumerate(entries, 1):
        buf[usa_off + 2 * i: usa_off + 2 * i + 2] = entry
    for i in range(1, count):
        if i * 512 <= size:
            buf[i * 512 - 2: i * 512] = usn
    return buf


def test_the_update_sequence_puts_back_every_sectors_last_bytes():
    buf = ntfs._fixup(sectors(48, 3), b"FILE", "r")
    assert buf[510:512] == b"AA" and buf[1022:1024] == b"BB"
    tail = sectors(1018, 3, entries=(b"AA", b"\x07\x00"))           # the sequence ends the record
    assert ntfs._fixup(tail, b"FILE", "r")[510:512] == b"AA"
    assert ntfs._fixup(sectors(48, 1), b"FILE", "r")[510:512] == b"\x00\x00"
    assert ntfs._fixup(sectors(48, 2, size=512, entries=(b"CC",)), b"FILE", "r")[510:512] == b"CC"
    for torn_at in (510, 1022):
        buf = sectors(48, 3)
        buf[torn_at] ^= 1
        with pytest.raises(FsMapError) as err:
            ntfs._fixup(buf, b"FILE", "record 9")
        assert str(err.value) == damaged("record 9 is torn (update sequence mismatch)")
    for usa_off, count in ((48, 0), (48, 4), (1019, 3)):
        with pytest.raises(FsMapError) as err:
            ntfs._fixup(sectors(usa_off, count, entries=()), b"FILE", "record 9")
        assert str(err.value) == damaged("record 9 has a bad update sequence")
    with pytest.raises(FsMapError) as err:
        ntfs._fixup(sectors(48, 3), b"INDX", "an index block")
    assert str(err.value) == damaged("an index block has no INDX signature")


def list_entry(kind: int, ref: int, name: str = "", length: int | None = None, seq: int = 1) -> bytes:
    encoded = name.encode("utf-16-le")
    size = length if length is not None else (0x1A + len(encoded) + 7) // 8 * 8
    entry = bytearray(max(size, 0x1A + len(encoded)))
    struct.pack_into("<IHBBQQH", entry, 0, kind, size, len(name), 0x1A, 0, ref | seq << 48, 0)
    entry[0x1A: 0x1A + len(encoded)] = encoded
    return bytes(entry)


def record_with_list(entries: bytes) -> bytes:
    """An in-use MFT record, as large as it needs, holding one resident $ATTRIBUTE_LIST."""
    attr = bytearray(0x18) + entries
    struct.pack_into("<IIBBHHHIHBB", attr, 0, ntfs.ATTR_ATTRIBUTE_LIST, len(attr), 0, 0, 0x18, 0, 0,
                     len(entries), 0x18, 0, 0)
    record = bytearray(0x38) + attr + struct.pack("<II", ntfs.ATTR_END, 0)
    struct.pack_into("<4sHH", record, 0, b"FILE", 0, 0)
    struct.pack_into("<HHI", record, 0x14, 0x38, 1, len(record))
    return bytes(record)


def test_the_attribute_list_names_each_extension_record_once(volume):
    entries = b"".join([
        list_entry(ntfs.ATTR_DATA, 77),                       # the base record itself
        list_entry(ntfs.ATTR_DATA, 100, seq=9),
        list_entry(ntfs.ATTR_DATA, 100),                      # a second piece in the same record
        list_entry(ntfs.ATTR_DATA, 101, "named"),
        list_entry(ntfs.ATTR_INDEX_ROOT, 102),
        list_entry(ntfs.ATTR_DATA, 103, length=0x30),         # entries may be longer than they need
        list_entry(ntfs.ATTR_DATA, 104),
        list_entry(ntfs.ATTR_DATA, 105, length=0x1A),         # the shortest an entry can be
    ]) + bytes(0x19)                                          # too short for another entry: ignored
    base = record_with_list(entries)
    assert volume._extension_records(base, 77, ntfs.ATTR_DATA, "") == [100, 103, 104, 105]
    assert volume._extension_records(base, 77, ntfs.ATTR_DATA, "named") == [101]
    assert volume._extension_records(base, 77, ntfs.ATTR_INDEX_ROOT, "") == [102]
    assert volume._extension_records(base, 77, ntfs.ATTR_INDEX_ALLOCATION, "") == []
    short = record_with_list(list_entry(ntfs.ATTR_DATA, 100) + list_entry(ntfs.ATTR_DATA, 101, length=0x19))
    with pytest.raises(FsMapError) as err:
        volume._extension_records(short, 77, ntfs.ATTR_DATA, "")
    assert str(err.value) == damaged("record 77's attribute list")


def test_an_attribute_list_naming_too_many_records_is_refused(volume):
    def base(count):
        return record_with_list(b"".join(list_entry(ntfs.ATTR_DATA, 1000 + i) for i in range(count)))
    assert len(volume._extension_records(base(ntfs.MAX_EXTENSIONS), 77, ntfs.ATTR_DATA, "")) == 4096
    with pytest.raises(FsMapError) as err:
        volume._extension_records(base(ntfs.MAX_EXTENSIONS + 1), 77, ntfs.ATTR_DATA, "")
    assert str(err.value) == damaged("record 77's attribute list is too long")


@pytest.mark.parametrize("length,refused", [(4, True), (0x1F, True), (0x20, False)])
def test_a_short_index_root_loses_only_the_hibernation_check(pristine, length, refused):
    data = edited(pristine, 5, put_in(0x90, 0x10, "I", length))
    volume = ntfs._Volume(reader(data), SIZE)
    if refused:
        with pytest.raises(FsMapError) as err:
            list(volume.dir_entries(5, "root directory"))
        assert str(err.value) == damaged("root directory index root is too short")
    else:
        assert {name for _ref, name in volume.dir_entries(5, "root directory")} >= {"$MFT", "hiberfil.sys"}
    info = probe_partition(reader(data), SIZE)
    assert not info.whole and info.used == ntfs.probe(reader(pristine), SIZE).used
    assert info.warnings == (() if refused else (ntfs.HIBERNATED_WARNING,))
    assert ntfs.holds_windows(reader(data), SIZE) is False


def test_boot_sectors_cut_short_and_an_mft_past_the_end_are_named(pristine):
    with pytest.raises(ValueError):
        ntfs._Boot(pristine[:511])
    message = refusal_with_size(pristine[:16384], SIZE)          # the MFT starts at cluster 4
    assert message == damaged("MFT record 0 lies past the end of the partition")


def test_a_resident_stream_read_up_to_a_limit(volume):
    assert volume.stream(3, ntfs.ATTR_VOLUME_NAME, limit=4) == ("Damage".encode("utf-16-le")[:4], 12, 12)
    assert volume.stream(3, ntfs.ATTR_VOLUME_NAME) == ("Damage".encode("utf-16-le"), 12, 12)


def test_the_boot_cluster_is_kept_even_when_the_bitmap_forgets_it(pristine, volume):
    data = bytearray(pristine)
    bitmap_lcn = volume._runs_of(ntfs.BITMAP_RECORD, ntfs.ATTR_DATA, "")[0][1]
    data[bitmap_lcn * 4096] &= 0xFE
    used = ntfs.probe(reader(data), SIZE).used
    assert used[0][0] == 0 and used[0][1] >= 4096


def test_a_volume_far_smaller_than_its_partition_warns(pristine):
    info = ntfs.probe(reader(pristine), SIZE + 100 * MiB)
    assert info.warnings[0] == "NTFS ends 100 MiB before its partition does; that space is copied as it is"


def test_a_label_that_is_not_utf16_is_replaced_not_refused(pristine):
    def change(rec):
        at = attribute_at(rec, ntfs.ATTR_VOLUME_NAME)
        value = at + u16(rec, at + 0x14)
        rec[value: value + 2] = b"\x00\xd8"                      # half a surrogate pair
    data = edited(pristine, 3, change)
    assert ntfs.probe(reader(data), SIZE).label == "\ufffdamage"


def test_an_index_root_without_a_block_size_uses_4096(pristine):
    data = edited(pristine, 5, index_root_block_size(0))
    assert ntfs.probe(reader(data), SIZE).warnings == (ntfs.HIBERNATED_WARNING,)


def test_identify_still_names_ntfs_and_its_serial_when_the_mft_is_damaged(pristine):
    serial = ntfs.identify(reader(pristine), SIZE)[2]
    data = edited(pristine, 0, put(0, "4s", b"BAAD"))
    assert ntfs.identify(reader(data), SIZE) == ("ntfs", None, serial)


# ---------------------------------------------------------------- malformed attributes and names

def replace_attribute(kind: int, build):
    """Put build(old attribute bytes) where the first attribute of `kind` was, moving the rest."""
    def change(rec):
        at = attribute_at(rec, kind)
        length, used = u32(rec, at + 4), u32(rec, 0x18)
        body = bytes(rec[:at]) + build(bytes(rec[at: at + length])) + bytes(rec[at + length: used])
        rec[:len(body)] = body
        struct.pack_into("<I", rec, 0x18, len(body))
    return change


def resident(kind: int, length: int) -> bytes:
    """An unnamed resident attribute with an empty value, `length` bytes long."""
    attr = bytearray(max(length, 0x18))
    struct.pack_into("<IIBBHHHIH", attr, 0, kind, length, 0, 0, 0x18, 0, 0, 0, 0x18)
    return bytes(attr)


def non_resident(kind: int, length: int) -> bytes:
    """An unnamed non-resident attribute of size 0, no runs, `length` bytes long."""
    attr = bytearray(max(length, 0x40))
    struct.pack_into("<IIBBHHH", attr, 0, kind, length, 1, 0, 0x40, 0, 0)
    struct.pack_into("<H", attr, 0x20, 0x40)
    return bytes(attr)


@pytest.mark.parametrize("extra,message", [
    (resident(0x100, 0x18), None),                      # a header and an empty value: an empty file's $DATA
    (resident(0x100, 0x17), damaged("MFT record 6 has a bad attribute")),
    (resident(0x100, 0x10), damaged("MFT record 6 has a bad attribute")),
    (non_resident(0x100, 0x40), None),                  # a non-resident header and no runs
    (non_resident(0x100, 0x3F), damaged("MFT record 6 has a bad attribute")),
    (non_resident(0x100, 0x18), damaged("MFT record 6 has a bad attribute")),
], ids=["resident-0x18", "resident-0x17", "resident-0x10", "non-resident-0x40", "non-resident-0x3f",
        "non-resident-0x18"])
def test_an_attribute_shorter_than_its_header_is_refused(pristine, extra, message):
    # After $Bitmap's $DATA; when refused, the partition is imaged whole with the message.
    data = edited(pristine, 6, replace_attribute(ntfs.ATTR_DATA, lambda old: old + extra[:max(u32(extra, 4), 0x18)]))
    assert refusal(data) == message
    info = probe_partition(reader(data), SIZE)
    assert info.whole == (message is not None)
    if message is None:
        assert info.used == ntfs.probe(reader(pristine), SIZE).used
    else:
        assert info.warnings[0].startswith(message)


def test_a_header_cut_by_the_end_of_the_root_record_costs_only_the_hibernation_check(pristine):
    # A 16-byte non-resident attribute ending the record exactly: its header's fields would lie
    # past the record. Once read from there (struct.error), and probe lost the whole map for it.
    def change(rec):
        end = u32(rec, 0x18) - 8
        filler = resident(0x100, RECORD - 16 - end)
        short = bytearray(16)
        struct.pack_into("<IIB", short, 0, 0x40, 16, 1)
        rec[end: RECORD] = filler + short
        struct.pack_into("<I", rec, 0x18, RECORD)
    data = edited(pristine, 5, change)
    with pytest.raises(FsMapError) as err:
        list(ntfs._Volume(reader(data), SIZE).dir_entries(5, "root directory"))
    assert str(err.value) == damaged("MFT record 5 has a bad attribute")
    info = probe_partition(reader(data), SIZE)
    assert not info.whole and info.warnings == () and info.used == ntfs.probe(reader(pristine), SIZE).used


def test_data_runs_filling_their_attribute_to_the_last_byte_end_there(pristine, volume):
    # NTFS ends a run list with a zero byte, but the attribute's end ends it too: here the one run
    # of $Bitmap is rewritten to take all 8 bytes (1 + 1 length + 6 offset), and the $END marker's
    # 0xFF bytes that follow must not be read as another run.
    (_vcn, lcn, count), = volume._runs_of(ntfs.BITMAP_RECORD, ntfs.ATTR_DATA, "")
    runs = bytes([0x61, count]) + lcn.to_bytes(6, "little")
    data = edited(pristine, 6, replace_attribute(ntfs.ATTR_DATA, lambda old: old[:0x40] + runs))
    assert u32(data, record_offset(data, 6) + 0x148) == ntfs.ATTR_END
    again = ntfs._Volume(reader(data), SIZE)
    assert again._runs_of(ntfs.BITMAP_RECORD, ntfs.ATTR_DATA, "") == [(0, lcn, count)]
    assert ntfs.probe(reader(data), SIZE).used == ntfs.probe(reader(pristine), SIZE).used


def hiberfil_record(pristine) -> int:
    return ntfs._Volume(reader(pristine), SIZE).child(5, "hiberfil.sys", "root")


def test_a_stream_whose_later_extent_comes_first_is_sized_by_its_first(pristine, volume):
    # hiberfil.sys (two clusters) split into two extents, the one at VCN 1 placed first in the
    # record: only the extent at VCN 0 holds the stream's sizes (the other's are 0).
    number = hiberfil_record(pristine)
    (_vcn, lcn, count), = volume._runs_of(number, ntfs.ATTR_DATA, "")
    assert count == 2

    def extents(old):
        def extent(vcn, size):
            attr = bytearray(old[:0x48])
            struct.pack_into("<QQ", attr, 0x10, vcn, vcn)
            struct.pack_into("<QQQ", attr, 0x28, size, size, size)
            attr[0x40:0x48] = bytes([0x31, 1]) + (lcn + vcn).to_bytes(3, "little") + bytes(3)
            return bytes(attr)
        return extent(1, 0) + extent(0, 8192)
    data = edited(pristine, number, replace_attribute(ntfs.ATTR_DATA, extents))
    again = ntfs._Volume(reader(data), SIZE)
    assert [p.lowest_vcn for p in again.find(number, ntfs.ATTR_DATA)] == [1, 0]
    assert again.stream(number) == (b"hibr" + bytes(8188), 8192, 8192)
    assert ntfs.probe(reader(data), SIZE).warnings == (ntfs.HIBERNATED_WARNING,)


def test_an_attribute_name_that_is_not_utf16_is_replaced_not_refused(pristine):
    def change(rec):
        at = attribute_at(rec, 0xB0)                                 # the root's $BITMAP, named $I30
        rec[at + u16(rec, at + 0xA): at + u16(rec, at + 0xA) + 2] = b"\x00\xd8"   # half a surrogate pair
    data = edited(pristine, 5, change)
    volume = ntfs._Volume(reader(data), SIZE)
    assert [a.name for a in volume.attributes(volume.record(5), 5) if a.type == 0xB0] == ["\ufffdI30"]
    info = probe_partition(reader(data), SIZE)
    assert not info.whole and info.warnings == (ntfs.HIBERNATED_WARNING,)


# ---------------------------------------------------------------- malformed index nodes

NODE = 0x18          # where an INDX block's node header starts


def root_block_offset(pristine) -> int:
    """The root directory's one index block (its entries do not fit in the index root)."""
    (_vcn, lcn, _count), = ntfs._Volume(reader(pristine), SIZE)._runs_of(5, ntfs.ATTR_INDEX_ALLOCATION, "$I30")
    return lcn * 4096


@pytest.fixture(scope="module")
def root_node(pristine) -> bytes:
    at = root_block_offset(pristine)
    return bytes(ntfs._fixup(bytearray(pristine[at: at + 4096]), b"INDX", "root index block"))


def entry_positions(node) -> list[int]:
    """Where each entry starts, the last (flagged 2) included, as mkntfs and ntfscp wrote them."""
    positions = [NODE + u32(node, NODE)]
    while not u32(node, positions[-1] + 12) & 2:
        positions.append(positions[-1] + u16(node, positions[-1] + 8))
    return positions


def names(node) -> list[str]:
    return [name for _ref, name in ntfs._index_entries(bytes(node), NODE)]


def spliced(node, at: int, extra: bytes) -> bytearray:
    """`extra` inserted at `at`, the node's stated size grown to match."""
    out = bytearray(node[:at]) + extra + bytearray(node[at:])
    struct.pack_into("<I", out, NODE + 4, u32(node, NODE + 4) + len(extra))
    return out


def entry_header(length: int, flags: int = 0) -> bytes:
    return struct.pack("<QHHI", 0, length, 0, flags)


def test_the_real_root_node_lists_its_thirteen_entries(root_node):
    assert names(root_node) == ["$AttrDef", "$BadClus", "$Bitmap", "$Boot", "$Extend", "$LogFile", "$MFT",
                                "$MFTMirr", "$Secure", "$UpCase", "$Volume", ".", "hiberfil.sys"]
    assert len(entry_positions(root_node)) == 14


def test_a_node_is_read_up_to_its_stated_size(root_node):
    every, positions = names(root_node), entry_positions(root_node)
    for k, pos in enumerate(positions[:-1]):
        node = bytearray(root_node)
        struct.pack_into("<I", node, NODE + 4, pos + 0x52 - NODE)     # the key's header ends the node
        assert names(node) == every[:k + 1], k
        struct.pack_into("<I", node, NODE + 4, pos + 0x51 - NODE)     # its last byte is outside
        assert names(node) == every[:k], k


def test_a_key_shorter_than_a_file_name_header_is_passed_over(root_node):
    every, positions = names(root_node), entry_positions(root_node)
    node = bytearray(root_node)
    struct.pack_into("<H", node, positions[3] + 10, 0x42)             # the header, no room for the name
    assert names(node) == every                                       # the name is read by its own length
    struct.pack_into("<H", node, positions[3] + 10, 0x41)
    assert names(node) == every[:3] + every[4:]


def test_the_walk_stops_at_the_last_entry_and_at_one_shorter_than_a_header(root_node):
    every, positions = names(root_node), entry_positions(root_node)
    # Stale entries after the last one (what a deletion leaves) inside the stated size: not read.
    stale = root_node[positions[0]: positions[1]]
    assert names(spliced(root_node, positions[-1] + 0x10, stale)) == every
    # An entry of exactly a header (16 bytes, no key, not last) is stepped over.
    assert names(spliced(root_node, positions[5], entry_header(0x10))) == every
    # Shorter than its header: the walk ends there (a zero length would never move on).
    for length in (0, 1, 0x0F):
        assert names(spliced(root_node, positions[5], entry_header(length))) == every[:5], length


def test_a_malformed_root_node_costs_only_the_hibernation_check(pristine, root_node):
    # A zero-length entry just before hiberfil.sys's in the real block on disk: the walk ends
    # there, hiberfil.sys is not seen, and the map stands.
    before = entry_positions(root_node)[-2]

    def change(block):
        block[:] = spliced(block, before, entry_header(0))[:4096]
    data = bytearray(pristine)
    edit_block(data, root_block_offset(pristine), 4096, change)
    listed = [name for _ref, name in ntfs._Volume(reader(data), SIZE).dir_entries(5, "root directory")]
    assert "." in listed and "hiberfil.sys" not in listed
    info = probe_partition(reader(data), SIZE)
    assert not info.whole and info.warnings == () and info.used == ntfs.probe(reader(pristine), SIZE).used


def test_an_index_name_that_is_not_utf16_is_replaced_not_refused(pristine, root_node):
    upcase = entry_positions(root_node)[9]

    def change(block):
        block[upcase + 0x52: upcase + 0x54] = b"\x00\xd8"                # "$UpCase" -> half a surrogate pair
    data = bytearray(pristine)
    edit_block(data, root_block_offset(pristine), 4096, change)
    listed = [name for _ref, name in ntfs._Volume(reader(data), SIZE).dir_entries(5, "root directory")]
    assert "\ufffdUpCase" in listed and "$UpCase" not in listed
    assert ntfs.probe(reader(data), SIZE).warnings == (ntfs.HIBERNATED_WARNING,)


def test_a_directory_index_is_read_up_to_64_mib(pristine, root_node):
    # The root's index allocation made to claim 1 TiB: its real block at VCN 0, a sparse stretch,
    # the same block again as the last 4 KiB under 64 MiB, and no runs past that. The read stops
    # at 64 MiB exactly: both copies are listed, and nothing past the cap is asked for.
    (_vcn, lcn, _count), = ntfs._Volume(reader(pristine), SIZE)._runs_of(5, ntfs.ATTR_INDEX_ALLOCATION, "$I30")
    last = 64 * 1024 * 1024 // 4096 - 1
    runs = (bytes([0x21, 1]) + lcn.to_bytes(2, "little")          # VCN 0: the real block
            + bytes([0x02]) + (last - 1).to_bytes(2, "little")    # sparse up to the last block under the cap
            + bytes([0x11, 1, 0]) + bytes(6))                     # the same cluster again, then the end

    def build(old):
        attr = bytearray(old[:0x48]) + runs
        struct.pack_into("<I", attr, 4, len(attr))
        struct.pack_into("<Q", attr, 0x18, (1 << 28) - 1)               # highest VCN
        struct.pack_into("<QQQ", attr, 0x28, 1 << 40, 1 << 40, 1 << 40)
        return bytes(attr)
    data = edited(pristine, 5, replace_attribute(ntfs.ATTR_INDEX_ALLOCATION, build))
    volume = ntfs._Volume(reader(data), SIZE)
    assert volume._runs_of(5, ntfs.ATTR_INDEX_ALLOCATION, "$I30") == [(0, lcn, 1), (1, None, last - 1), (last, lcn, 1)]
    listed = [name for _ref, name in volume.dir_entries(5, "root directory")]
    assert listed == names(root_node) * 2
    assert ntfs.probe(reader(data), SIZE).warnings == (ntfs.HIBERNATED_WARNING,)
