"""recovery.salvage.files_hit on real filesystems: a file's bytes are zeroed where a salvaged
restore would leave them zero, and the file (or the metadata) must be named exactly.

Where the data lies comes from the filesystems' own tools (debugfs, mshowfat, ntfscluster -F),
not from the code under test."""

from __future__ import annotations

import os
import random
import re
import subprocess
import time
from pathlib import Path

import pytest

from recovery.errors import ToolError
from recovery.fs import fat as fatfs
from recovery.salvage import NO_FS_NOTE, Hits, files_hit
from tests.diskimages import BASIC_DATA, LINUX_FS, PartSpec, make_disk
from tests.fsimages import make_ext4, make_ntfs, make_vfat

MiB = 1024 * 1024
LONG = "A rather long file name, with spaces and more.dat"
FILES = {"/a.bin": 300_000, "/sub/b.bin": 100_000, f"/{LONG}": 50_000, "/small.txt": 3000}


def _run(*cmd, **kw) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{cmd}: {proc.stderr}"
    return proc.stdout


def _tree(tmp_path: Path, top_only: bool = False) -> Path:
    root = tmp_path / "tree"
    rng = random.Random(4)
    for name, size in FILES.items():
        if top_only and name.count("/") > 1:
            continue
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
    return root


def _zero(image: Path, offset: int, length: int) -> None:
    with open(image, "r+b") as f:
        f.seek(offset)
        f.write(bytes(length))


def _size(image: Path) -> int:
    return image.stat().st_size


# ----------------------------------------------------------------------------- ext4

def _ext_blocks(image: Path, path: str, *extra: str) -> list[int]:
    return [int(b) for b in _run("debugfs", "-c", *extra, "-R", f'blocks "{path}"', image).split()]


def _ext_inode_table(image: Path) -> int:
    return int(re.search(r"Group\s+0:.*?inode table at (\d+)", _run("debugfs", "-c", "-R", "stats", image), re.S)[1])


@pytest.fixture
def ext4(tmp_path) -> Path:
    return make_ext4(tmp_path / "ext4.img", 32 * MiB, _tree(tmp_path))


@pytest.mark.parametrize("path", ["/sub/b.bin", f"/{LONG}", "/a.bin"])
def test_ext4_names_exactly_the_file_whose_data_was_zeroed(ext4, path):
    blocks = _ext_blocks(ext4, path)
    at = blocks[len(blocks) // 2] * 4096 + 100
    _zero(ext4, at, 1000)
    hits = files_hit(str(ext4), 0, _size(ext4), "ext4", [(at, 1000)])
    assert hits == Hits(files=[path], metadata=[], unknown=[])


def test_ext4_range_over_several_files_and_free_space(ext4):
    a, b = _ext_blocks(ext4, "/a.bin"), _ext_blocks(ext4, "/sub/b.bin")
    free = int(re.search(r"Free blocks found: (\d+)", _run("debugfs", "-R", "ffb 1 7000", ext4))[1])
    damaged = [(a[-1] * 4096, 4096), (b[0] * 4096, 2 * 4096), (free * 4096, 4096)]
    hits = files_hit(str(ext4), 0, _size(ext4), None, damaged)
    assert hits.files == ["/a.bin", "/sub/b.bin"]
    assert hits.unknown == [] and hits.metadata == []


def test_ext4_free_range_names_nothing(ext4):
    free = int(re.search(r"Free blocks found: (\d+)", _run("debugfs", "-R", "ffb 4 7000", ext4))[1])
    _zero(ext4, free * 4096, 4 * 4096)
    assert files_hit(str(ext4), 0, _size(ext4), "ext4", [(free * 4096, 4 * 4096)]) == Hits()


def test_ext4_inode_table_hit_is_metadata_and_names_the_inodes_lost(tmp_path):
    tree = _tree(tmp_path)
    for i in range(40):      # in the root directory, whose own inode stays intact
        (tree / f"m{i:02d}.txt").write_text(f"file {i}\n" * 100)
    image = make_ext4(tmp_path / "ext4.img", 32 * MiB, tree)
    table = _ext_inode_table(image)
    # The table's last block holds inodes no file uses.
    hits = files_hit(str(image), 0, _size(image), "ext4", [((table + 100) * 4096, 4096)])
    assert hits == Hits(files=[], metadata=["ext4 inode table (group 0)"], unknown=[])
    # The second block holds inodes 17-32 (256-byte inodes): the files lose their inodes but
    # their names survive in the directories.
    inodes = {}
    for i in range(40):
        path = f"/m{i:02d}.txt"
        inodes[path] = int(re.search(r"Inode: (\d+)", _run("debugfs", "-c", "-R", f"stat {path}", image))[1])
    wanted = sorted(path for path, ino in inodes.items() if 17 <= ino <= 32)
    assert wanted
    _zero(image, (table + 1) * 4096, 4096)
    hits = files_hit(str(image), 0, _size(image), "ext4", [((table + 1) * 4096, 4096)])
    assert hits.metadata == ["ext4 inode table (group 0)"]
    assert [f for f in hits.files if f.startswith("/m")] == wanted


def test_ext4_root_inode_lost_says_files_were_not_named(ext4):
    table = _ext_inode_table(ext4)
    _zero(ext4, table * 4096, 4096)      # inodes 1-16: the root directory and the tree's files
    hits = files_hit(str(ext4), 0, _size(ext4), "ext4", [(table * 4096, 4096)])
    assert hits.files == []
    assert hits.metadata[0] == "ext4 inode table (group 0)"
    assert any("lost with their inodes" in m for m in hits.metadata)


def test_ext4_journal_and_superblock_are_metadata(ext4):
    journal = _ext_blocks(ext4, "<8>")
    damaged = [(journal[10] * 4096, 4096), (1024, 1024)]
    hits = files_hit(str(ext4), 0, _size(ext4), "ext4", damaged)
    assert hits.files == [] and hits.unknown == []
    assert set(hits.metadata) == {"journal", "ext4 superblock and group descriptors"}


def test_ext4_primary_superblock_zeroed_uses_the_backup(tmp_path):
    image = make_ext4(tmp_path / "ext1k.img", 32 * MiB, _tree(tmp_path), block_size=1024)
    gdt_end = int(re.search(r"Reserved GDT blocks at \d+-(\d+)", _run("dumpe2fs", image))[1]) + 1
    _zero(image, 0, gdt_end * 1024)
    block = _ext_blocks(image, "/sub/b.bin", "-s", "8193", "-b", "1024")[5]
    _zero(image, block * 1024, 1024)
    hits = files_hit(str(image), 0, _size(image), None, [(0, gdt_end * 1024), (block * 1024, 1024)])
    assert hits.files == ["/sub/b.bin"]
    assert "ext4 superblock and group descriptors" in hits.metadata
    assert hits.unknown == []


def test_ext4_partition_at_an_offset(tmp_path, ext4):
    disk = tmp_path / "disk.img"
    layout = make_disk(disk, 48 * MiB, "gpt", [PartSpec(32 * MiB, LINUX_FS, content=str(ext4))])
    part = layout.partitions[0]
    assert part.start != 0
    at = _ext_blocks(ext4, "/sub/b.bin")[3] * 4096
    _zero(disk, part.start + at, 4096)
    hits = files_hit(str(disk), part.start, part.size, None, [(at, 4096)])
    assert hits == Hits(files=["/sub/b.bin"], metadata=[], unknown=[])


def test_ext4_batch_of_1000_ranges_matches_debugfs_block_by_block(tmp_path):
    tree = tmp_path / "many"
    rng = random.Random(11)
    for d in range(8):
        (tree / f"d{d}").mkdir(parents=True)
        for i in range(60):
            (tree / f"d{d}" / f"f{i}").write_bytes(rng.randbytes(rng.choice([900, 6000, 40_000, 200_000])))
    image = make_ext4(tmp_path / "many.img", 128 * MiB, tree)
    blocks_total = _size(image) // 4096
    damaged = sorted({(rng.randrange(2000, blocks_total - 8) * 4096, rng.choice([512, 4096, 12288]))
                      for _ in range(1000)})
    began = time.monotonic()
    hits = files_hit(str(image), 0, _size(image), "ext4", damaged)
    took = time.monotonic() - began
    assert took < 30, f"{took:.1f}s for 1000 ranges"

    # The oracle: icheck every damaged block, ncheck every owner (regular files only).
    blocks = sorted({b for off, n in damaged for b in range(off // 4096, -(-(off + n) // 4096))})
    lines = [f"icheck {' '.join(map(str, blocks[i:i + 500]))}" for i in range(0, len(blocks), 500)]
    out = _run("debugfs", "-c", "-f", "-", image, input="\n".join(lines) + "\n")
    owners = sorted({int(m[1]) for m in re.finditer(r"^\d+\t(\d+)$", out, re.M) if int(m[1]) > 11})
    lines = [f"ncheck {' '.join(map(str, owners[i:i + 500]))}" for i in range(0, len(owners), 500)]
    out = _run("debugfs", "-c", "-f", "-", image, input="\n".join(lines) + "\n")
    names = {re.sub("^/+", "/", m[1]) for m in re.finditer(r"^\d+\t(/.*)$", out, re.M)}
    files = {n for n in names if re.fullmatch(r"/d\d/f\d+", n)}
    dirs = names - files
    assert set(hits.files) == files
    assert {m[len("directory "):] for m in hits.metadata if m.startswith("directory ")} == dirs


def test_missing_debugfs_is_a_tool_error(ext4, tmp_path, monkeypatch):
    empty = tmp_path / "nobin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(ToolError, match="debugfs"):
        files_hit(str(ext4), 0, _size(ext4), "ext4", [(4096 * 1000, 4096)])


# ----------------------------------------------------------------------------- FAT

def _fat_ranges(image: Path, path: str, offset: int = 0) -> list[tuple[int, int]]:
    """Byte ranges of a file's clusters: mshowfat gives the clusters, the boot sector the geometry."""
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    spec = f"{image}@@{offset}" if offset else str(image)
    out = _run("mshowfat", "-i", spec, f"::{path}", env=env)
    with open(image, "rb") as f:
        bpb = fatfs._Bpb(os.pread(f.fileno(), 512, offset))
    data = bpb.data_start * bpb.bytes_per_sector
    out_ranges = []
    for a, b in re.findall(r"<(\d+)(?:-(\d+))?>", out):
        first, last = int(a), int(b or a)
        out_ranges.append((data + (first - 2) * bpb.cluster_bytes, (last - first + 1) * bpb.cluster_bytes))
    return out_ranges


FAT_SIZES = {12: 4 * MiB, 16: 24 * MiB, 32: 64 * MiB}


@pytest.mark.parametrize("bits", [12, 16, 32])
@pytest.mark.parametrize("path", ["/sub/b.bin", f"/{LONG}"])
def test_fat_names_exactly_the_file_whose_data_was_zeroed(tmp_path, bits, path):
    image = make_vfat(tmp_path / "fat.img", FAT_SIZES[bits], _tree(tmp_path), fat=bits)
    off, length = _fat_ranges(image, path)[-1]
    at = off + length // 2
    _zero(image, at, 700)
    hits = files_hit(str(image), 0, _size(image), None, [(at, 700)])
    assert hits == Hits(files=[path], metadata=[], unknown=[])


@pytest.mark.parametrize("bits", [12, 16, 32])
def test_fat_table_and_directory_hits_are_metadata_free_names_nothing(tmp_path, bits):
    image = make_vfat(tmp_path / "fat.img", FAT_SIZES[bits], _tree(tmp_path), fat=bits)
    bpb = fatfs._Bpb(image.read_bytes()[:512])
    bps = bpb.bytes_per_sector
    fat2 = (bpb.reserved + bpb.fat_size) * bps
    hits = files_hit(str(image), 0, _size(image), "vfat", [(fat2 + 4, 8)])
    assert hits == Hits(files=[], metadata=["FAT table (copy 2)"], unknown=[])

    sub = _fat_ranges(image, "/sub")[0]
    hits = files_hit(str(image), 0, _size(image), "vfat", [(sub[0], 32)])
    assert hits == Hits(files=[], metadata=["directory /sub"], unknown=[])

    end = sum(_fat_ranges(image, "/a.bin")[-1])
    last_cluster = bpb.data_start * bps + bpb.cluster_count * bpb.cluster_bytes
    free = (end + last_cluster) // 2 // bpb.cluster_bytes * bpb.cluster_bytes
    assert files_hit(str(image), 0, _size(image), "vfat", [(free, bpb.cluster_bytes)]) == Hits()


def test_fat_first_copy_zeroed_chains_come_from_the_second(tmp_path):
    image = make_vfat(tmp_path / "fat.img", 64 * MiB, _tree(tmp_path), fat=32)
    bpb = fatfs._Bpb(image.read_bytes()[:512])
    fat1 = (bpb.reserved * bpb.bytes_per_sector, bpb.fat_size * bpb.bytes_per_sector)
    _zero(image, *fat1)
    # mshowfat reads the first copy (now zeroed): find the file's place from a pristine twin.
    twin = make_vfat(tmp_path / "twin.img", 64 * MiB, _tree(tmp_path), fat=32)
    off, length = _fat_ranges(twin, "/sub/b.bin")[0]
    hits = files_hit(str(image), 0, _size(image), "vfat", [fat1, (off + length - 512, 512)])
    assert hits == Hits(files=["/sub/b.bin"], metadata=["FAT table (copy 1)"], unknown=[])


def test_fat_partition_at_an_offset(tmp_path):
    fs = make_vfat(tmp_path / "fat.img", 24 * MiB, _tree(tmp_path), fat=16)
    disk = tmp_path / "disk.img"
    part = make_disk(disk, 40 * MiB, "dos", [PartSpec(24 * MiB, "6", content=str(fs))]).partitions[0]
    off, length = _fat_ranges(disk, "/a.bin", part.start)[0]
    _zero(disk, part.start + off, 512)
    hits = files_hit(str(disk), part.start, part.size, None, [(off, 512)])
    assert hits == Hits(files=["/a.bin"], metadata=[], unknown=[])


# ----------------------------------------------------------------------------- NTFS

def _ntfs_clusters(image: Path, path: str) -> list[tuple[int, int]]:
    """(lcn, count) of a file's $DATA runs, as ntfscluster -F dumps them."""
    out = _run("ntfscluster", "-f", "-F", path, image)
    data = out.split("0x80 - non-resident", 1)[1]
    return [(int(lcn), int(n)) for _vcn, lcn, n in re.findall(r"^\s+(\d+)\s+(\d+)\s+(\d+)$", data, re.M)]


@pytest.mark.parametrize("path", ["/a.bin", f"/{LONG}"])
def test_ntfs_names_exactly_the_file_whose_data_was_zeroed(tmp_path, path):
    image = make_ntfs(tmp_path / "ntfs.img", 64 * MiB, _tree(tmp_path, top_only=True), mount=False)
    lcn, count = _ntfs_clusters(image, path)[0]
    at = (lcn + count // 2) * 4096 + 10
    _zero(image, at, 100)
    hits = files_hit(str(image), 0, _size(image), None, [(at, 100)])
    assert hits == Hits(files=[path], metadata=[], unknown=[])


def test_ntfs_mft_hit_is_metadata_and_free_names_nothing(tmp_path):
    image = make_ntfs(tmp_path / "ntfs.img", 64 * MiB, _tree(tmp_path, top_only=True), mount=False)
    mft_lcn = _ntfs_clusters(image, "/$MFT")[0][0]
    # Record 30 is reserved and unused: naming it must not need it to be readable.
    at = mft_lcn * 4096 + 30 * 1024
    _zero(image, at, 1024)
    hits = files_hit(str(image), 0, _size(image), "ntfs", [(at, 1024)])
    assert hits == Hits(files=[], metadata=["NTFS $MFT (record 30)"], unknown=[])

    free = (_size(image) // 4096 - 2000) * 4096
    assert files_hit(str(image), 0, _size(image), "ntfs", [(free, 8192)]) == Hits()


def test_ntfs_unreadable_mft_leaves_everything_unknown(tmp_path):
    image = make_ntfs(tmp_path / "ntfs.img", 64 * MiB, _tree(tmp_path, top_only=True), mount=False)
    mft_lcn = _ntfs_clusters(image, "/$MFT")[0][0]
    lcn, _ = _ntfs_clusters(image, "/a.bin")[0]
    mft_records = (mft_lcn * 4096, 4 * 1024)
    _zero(image, *mft_records)
    damaged = [mft_records, (lcn * 4096, 4096)]
    hits = files_hit(str(image), 0, _size(image), "ntfs", damaged)
    assert hits.files == []
    assert any(m.startswith("NTFS could not be read") for m in hits.metadata)
    assert hits.unknown == damaged


@pytest.mark.loop
def test_ntfs_subfolder_in_a_partition_at_an_offset(tmp_path):
    # Root: ntfs-3g mount to make the subfolder, a read-only loop device to read at an offset.
    fs = make_ntfs(tmp_path / "ntfs.img", 64 * MiB, _tree(tmp_path), mount=True)
    lcn, count = _ntfs_clusters(fs, "/sub/b.bin")[-1]
    disk = tmp_path / "disk.img"
    part = make_disk(disk, 80 * MiB, "gpt", [PartSpec(64 * MiB, BASIC_DATA, content=str(fs))]).partitions[0]
    at = (lcn + count - 1) * 4096
    _zero(disk, part.start + at, 4096)
    def loops_on_disk() -> list[str]:      # only this test's image: other runs may share the machine
        return [line for line in _run("losetup", "-a").splitlines() if str(disk) in line]

    assert loops_on_disk() == []
    hits = files_hit(str(disk), part.start, part.size, None, [(at, 4096)])
    assert hits == Hits(files=["/sub/b.bin"], metadata=[], unknown=[])
    assert loops_on_disk() == []               # the loop device is gone again


# ----------------------------------------------------------------------------- no filesystem

def test_no_filesystem_names_nothing_and_keeps_the_ranges(tmp_path):
    image = tmp_path / "random.img"
    image.write_bytes(random.Random(3).randbytes(4 * MiB))
    damaged = [(8192, 4096), (1 * MiB, 1000)]
    hits = files_hit(str(image), 0, _size(image), None, damaged)
    assert hits == Hits(files=[], metadata=[NO_FS_NOTE], unknown=damaged)
    assert hits.to_json() == {"files": [], "metadata": [NO_FS_NOTE],
                              "unknown": [{"offset": 8192, "length": 4096}, {"offset": MiB, "length": 1000}]}


def test_nothing_damaged_is_nothing_hit(ext4):
    assert files_hit(str(ext4), 0, _size(ext4), "ext4", []) == Hits()


def test_read_only(ext4):
    before = ext4.read_bytes()
    files_hit(str(ext4), 0, _size(ext4), "ext4", [(i * 4096 * 7, 4096) for i in range(1100)])
    assert ext4.read_bytes() == before
