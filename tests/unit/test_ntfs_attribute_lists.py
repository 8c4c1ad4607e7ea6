"""NTFS whose metadata spills over into extension records named by an $ATTRIBUTE_LIST, on a real
volume made by ntfs-3g (tests/ntfs_images.py): $MFT itself, a fragmented hiberfil.sys, a file
with 80 hard links, one with 60 named streams, and a directory whose index root moved out of
its base record. What ntfs.py reads is compared with what ntfs-3g's own tools read."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from recovery.fs import FsMapError, ntfs, probe_partition
from tests import fsimages, ntfs_images
from tests.conftest import require

SIZE = ntfs_images.SIZE
RECORD = 1024


@pytest.fixture(scope="module")
def image():
    require(os.geteuid() == 0 or any(ntfs_images.cache_root().glob("ntfs-attrlist-*/fs.img")),
            "building the NTFS volume needs an ntfs-3g mount (root)")
    return ntfs_images.fragmented_volume()


@pytest.fixture(scope="module")
def data(image) -> bytes:
    return image.read_bytes()


def reader(data: bytes):
    def read(offset: int, length: int) -> bytes:
        return data[offset: offset + length] if offset >= 0 and length > 0 else b""
    return read


@pytest.fixture(scope="module")
def volume(data):
    return ntfs._Volume(reader(data), SIZE)


def ntfsinfo_records(image, *args) -> tuple[int, dict[str, set[int]]]:
    """(base record, {attribute name: records holding it}) as ntfsinfo dumps a file."""
    out = subprocess.run(["ntfsinfo", *args, str(image)], capture_output=True, text=True).stdout
    base = int(re.search(r"^Dumping Inode (\d+)", out, re.M).group(1))
    held: dict[str, set[int]] = {}
    for name, record in re.findall(r"^Dumping attribute (\$\w+) \(0x[0-9a-f]+\) from mft record (\d+)", out, re.M):
        held.setdefault(name, set()).add(int(record))
    return base, held


def unfixed(records: bytes) -> bytes:
    """MFT bytes with the last two bytes of every 512 zeroed: ntfscat puts back what the update
    sequence stands in for there, a raw read of the stream does not."""
    out = bytearray(records)
    for end in range(510, len(out), 512):
        out[end: end + 2] = b"\0\0"
    return bytes(out)


def ntfscat(image, *args) -> bytes:
    return subprocess.run(["ntfscat", str(image), *args], capture_output=True, check=True).stdout


def test_the_volume_really_spreads_over_extension_records(image):
    base, held = ntfsinfo_records(image, "-i", "0")
    assert base == 0 and held["$ATTRIBUTE_LIST"] == {0} and len(held["$DATA"]) == 2
    for path, moved in (("hiberfil.sys", "$FILE_NAME"), ("links.bin", "$FILE_NAME"),
                        ("streams.bin", "$DATA"), ("Windows", "$INDEX_ROOT")):
        base, held = ntfsinfo_records(image, "-F", path)
        assert held["$ATTRIBUTE_LIST"] == {base}, path
        assert held[moved] - {base}, (path, held)


def test_the_map_matches_ntfscluster_and_a_copy_of_it_reads_back(image, data, tmp_path):
    info = probe_partition(reader(data), SIZE)
    assert info.fs == "ntfs" and not info.whole
    assert info.label == ntfs_images.LABEL and info.block_size == ntfs_images.CLUSTER
    assert info.warnings == (ntfs.HIBERNATED_WARNING,)
    facts = dict(re.findall(r"^(.+?)\s*:\s*(\d+)$", subprocess.run(
        ["ntfscluster", "-i", str(image)], capture_output=True, text=True).stdout, re.M))
    cluster, clusters = int(facts["bytes per cluster"]), int(facts["bytes per volume"]) // int(facts["bytes per cluster"])
    in_volume = sum(min(a + n, clusters * cluster) - a for a, n in info.used if a < clusters * cluster)
    assert in_volume == (clusters - int(facts["clusters of free space"])) * cluster
    assert in_volume > 0.8 * SIZE                      # nearly full
    copy = fsimages.copy_ranges(image, info.used, tmp_path / "copy.img")
    assert fsimages.fsck_clean("ntfs", copy)
    assert ntfscat(copy, "hiberfil.sys") == ntfs_images.hiberfil_bytes()
    assert ntfscat(copy, "links.bin") == ntfscat(copy, ntfs_images.link_name(79)) == b"linked file\n"
    assert ntfs.identify(reader(data), SIZE) == ("ntfs", ntfs_images.LABEL, info.uuid)


def test_mft_records_past_record_0s_own_runs_are_found_through_its_extension(image, data, volume):
    mft = ntfscat(image, "$MFT")
    base_runs = [r for a in volume.attributes(volume.record(0), 0) if a.type == ntfs.ATTR_DATA for r in a.runs]
    assert len(volume.mft_runs) > len(base_runs)
    records = len(mft) // RECORD
    assert records > 2700
    for n in range(records):
        raw = volume.read_runs(volume.mft_runs, n * RECORD, RECORD, "")
        assert unfixed(raw) == unfixed(mft[n * RECORD: (n + 1) * RECORD]), n
    whole, size, initialized = volume.stream(0)
    assert unfixed(whole) == unfixed(mft) and size == initialized == len(mft)
    # The last file made lives in a record only the extension's runs reach.
    windows = volume.child(ntfs.ROOT_RECORD, "windows", "root")
    system32 = volume.child(windows, "SYSTEM32", "Windows")
    assert system32 * RECORD > sum(count for _vcn, _lcn, count in base_runs) * ntfs_images.CLUSTER
    assert volume.record(system32)[:4] == b"FILE"


def test_streams_whose_pieces_live_in_extension_records_read_whole(volume):
    def number(name):
        found = volume.child(ntfs.ROOT_RECORD, name, "root")
        assert found is not None, name
        return found
    hiberfil = ntfs_images.hiberfil_bytes()
    assert volume.stream(number("hiberfil.sys")) == (hiberfil, len(hiberfil), len(hiberfil))
    assert volume.stream(number("hiberfil.sys"), limit=4) == (b"hibr", len(hiberfil), len(hiberfil))
    for i in (0, 41, 79):
        assert number(ntfs_images.link_name(i)) == number("links.bin")
    assert volume.stream(number("links.bin")) == (b"linked file\n", 12, 12)
    streams = number("streams.bin")
    assert volume.stream(streams) == (b"main stream\n", 12, 12)
    for i in range(ntfs_images.STREAMS):
        assert volume.stream(streams, name=ntfs_images.stream_name(i)) == (ntfs_images.stream_value(i), 100, 100)
    with pytest.raises(FsMapError, match=re.escape(f"MFT record {streams} lacks attribute 0x80")):
        volume.stream(streams, name="no such stream")


def test_a_directory_whose_index_root_moved_out_is_listed_whole(data, volume):
    windows = volume.child(ntfs.ROOT_RECORD, "Windows", "root")
    names = [name for _ref, name in volume.dir_entries(windows, "Windows")]
    assert sorted(names) == sorted([ntfs_images.windows_name(k) for k in range(ntfs_images.WINDOWS_FILES)]
                                   + ["System32"])
    assert ntfs.holds_windows(reader(data), SIZE)


@pytest.mark.parametrize("old,new", [("System32", "System33"), ("Windows", "Windowz")])
def test_without_windows_or_its_system32_the_volume_holds_no_windows(data, old, new):
    renamed = data.replace(old.encode("utf-16-le"), new.encode("utf-16-le"))
    assert renamed != data
    assert ntfs.holds_windows(reader(renamed), SIZE) is False
    assert ntfs.holds_windows(reader(data), SIZE) is True


def test_identify_reads_the_label_of_a_volume_its_partition_cuts_short(data):
    serial = ntfs.identify(reader(data), SIZE)[2]
    assert ntfs.identify(reader(data), SIZE - 64 * 1024) == ("ntfs", ntfs_images.LABEL, serial)
    assert ntfs.holds_windows(reader(data), SIZE - 64 * 1024) is False    # a truncated volume is not read


def index_blocks(volume, number: int) -> list[int]:
    """Byte offsets of a directory's index blocks (4 KiB, one a cluster here), in order."""
    runs = volume._runs_of(number, ntfs.ATTR_INDEX_ALLOCATION, "$I30")
    return [(lcn + i) * ntfs_images.CLUSTER for _vcn, lcn, count in runs if lcn is not None for i in range(count)]


@pytest.mark.parametrize("damage", ["signature", "torn"])
def test_a_bad_index_block_is_skipped_and_the_rest_still_read(data, volume, damage):
    windows = volume.child(ntfs.ROOT_RECORD, "Windows", "root")
    blocks = index_blocks(volume, windows)
    assert len(blocks) > 20
    changed = bytearray(data)
    first = blocks[0]
    if damage == "signature":
        changed[first: first + 4] = b"INDY"
    else:
        changed[first + 510] ^= 0xFF                 # the first sector's update sequence no longer matches
    after = ntfs._Volume(reader(bytes(changed)), SIZE)
    names = [name for _ref, name in after.dir_entries(windows, "Windows")]
    every = [name for _ref, name in volume.dir_entries(windows, "Windows")]
    assert 0 < len(every) - len(names) < 200 and set(names) < set(every)


def test_a_small_windows_directory_keeps_its_entries_in_the_index_root(tmp_path):
    require(os.geteuid() == 0, "an ntfs-3g mount needs root")
    tree = tmp_path / "tree"
    (tree / "Windows" / "System32").mkdir(parents=True)
    image = fsimages.make_ntfs(tmp_path / "fs.img", 8 * 1024 * 1024, tree, mount=True)
    small = image.read_bytes()
    volume = ntfs._Volume(reader(small), len(small))
    windows = volume.child(ntfs.ROOT_RECORD, "Windows", "root")
    assert not [a for a in volume.find(windows, ntfs.ATTR_INDEX_ALLOCATION, "$I30")]   # no index blocks
    assert ntfs.holds_windows(reader(small), len(small)) is True


def test_an_attribute_list_that_cannot_be_read_is_named(data):
    # $MFT's own list is non-resident: claiming more bytes than its runs hold is damage to the
    # MFT itself, so the partition is imaged whole, with what was wrong.
    from tests.unit.test_ntfs_damage import edit_record, put_in
    changed = bytearray(data)
    edit_record(changed, 0, put_in(ntfs.ATTR_ATTRIBUTE_LIST, 0x30, "Q", 1 << 20))
    message = "NTFS metadata is damaged (record 0's attribute list is shorter than its data runs claim)"
    with pytest.raises(FsMapError) as err:
        ntfs._Volume(reader(bytes(changed)), SIZE)
    assert str(err.value) == message
    info = probe_partition(reader(bytes(changed)), SIZE)
    assert info.whole and info.warnings[0].startswith(message)


def test_a_list_entry_name_that_is_not_utf16_is_replaced_not_refused(data, volume):
    # Windows/'s list is non-resident (no update sequence on it): its $BITMAP entry's name $I30
    # gets half a surrogate pair. Nothing reads that entry; the listing must not fail over it.
    windows = volume.child(ntfs.ROOT_RECORD, "Windows", "root")
    attr, = [a for a in volume.attributes(volume.record(windows), windows) if a.type == ntfs.ATTR_ATTRIBUTE_LIST]
    assert attr.non_resident and attr.runs[0][0] == 0
    at = attr.runs[0][1] * ntfs_images.CLUSTER
    value = data[at: at + attr.data_size]
    pos = 0
    while int.from_bytes(value[pos: pos + 4], "little") != 0xB0:
        pos += int.from_bytes(value[pos + 4: pos + 6], "little")
    name = at + pos + value[pos + 7]
    assert data[name: name + 8] == "$I30".encode("utf-16-le")
    changed = data[:name] + b"\x00\xd8" + data[name + 2:]
    after = ntfs._Volume(reader(changed), SIZE)
    assert sorted(after.dir_entries(windows, "Windows")) == sorted(volume.dir_entries(windows, "Windows"))
    assert ntfs.holds_windows(reader(changed), SIZE) is True


@pytest.fixture(scope="module")
def split_image():
    require(os.geteuid() == 0 or any(ntfs_images.cache_root().glob("ntfs-splitindex-*/fs.img")),
            "building the NTFS volume needs an ntfs-3g mount (root)")
    return ntfs_images.split_index_volume()


def test_a_directory_index_split_over_two_records_is_listed_whole(split_image):
    base, held = ntfsinfo_records(split_image, "-F", "Big")
    assert held["$ATTRIBUTE_LIST"] == {base} and len(held["$INDEX_ALLOCATION"]) == 2, held
    data = split_image.read_bytes()
    volume = ntfs._Volume(reader(data), ntfs_images.SPLIT_SIZE)
    big = volume.child(ntfs.ROOT_RECORD, "big", "root")
    pieces = volume.find(big, ntfs.ATTR_INDEX_ALLOCATION, "$I30")
    assert len(pieces) == 2 and sorted(p.lowest_vcn for p in pieces)[0] == 0
    names = [name for _ref, name in volume.dir_entries(big, "Big")]
    assert sorted(names) == [ntfs_images.split_name(k) for k in range(ntfs_images.SPLIT_FILES)]
    info = probe_partition(reader(data), ntfs_images.SPLIT_SIZE)
    assert not info.whole and info.warnings == ()
