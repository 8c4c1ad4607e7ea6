"""FAT and NTFS written straight onto a disk, without a partition table (or a dd image of one
partition): the boot sector ends in 0x55AA like an MBR, yet it is backed up and restored as one
filesystem over the whole disk, as ext4 is. A real MBR stays an MBR."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from recovery.errors import DiskError
from recovery.probe.table import mbr_entries_valid, read_layout
from tests import diskimages as di
from tests import fsimages as fi
from tests.integration.engine_fixtures import MiB, lifeboat

SIZES = {"fat32": 40 * MiB, "fat16": 16 * MiB, "ntfs": 16 * MiB}


def flat_tree(root: Path) -> Path:
    """A few regular files at the top (what ntfscp can copy without mounting)."""
    rng = random.Random(7)
    root.mkdir()
    (root / "big.bin").write_bytes(rng.randbytes(3 * MiB + 4321))
    (root / "notes.txt").write_text("whole-disk filesystem\n" * 300)
    for i in range(5):
        (root / f"small{i}.dat").write_bytes(rng.randbytes(rng.randrange(1, 9000)))
    return root


def make_whole(kind: str, path: Path, tree: Path) -> Path:
    if kind == "ntfs":
        return fi.make_ntfs(path, SIZES[kind], tree, garbage=False, label="WholeNTFS", mount=False)
    return fi.make_vfat(path, SIZES[kind], tree, garbage=False, fat=int(kind[3:]), label="WHOLEFAT")


def files_of(kind: str, image: Path, tree: Path) -> dict[str, bytes]:
    """Every file of the tree read back from the image by the filesystem's own tools."""
    out = {}
    for f in sorted(tree.iterdir()):
        if kind == "ntfs":
            cmd = ["ntfscat", "--force", str(image), f.name]   # a grown NTFS is marked for chkdsk
        else:
            cmd = ["mtype", "-i", str(image), f"::/{f.name}"]
        proc = subprocess.run(cmd, capture_output=True, env=fi._mtools_env(), check=True)
        out[f.name] = proc.stdout
    return out


def fs_name(kind: str) -> str:
    return "ntfs" if kind == "ntfs" else "vfat"


def fs_extent(kind: str, image: Path) -> int:
    """Bytes the filesystem at the start of `image` spans, from its boot sector (NTFS keeps a
    copy of that sector just past its volume)."""
    from recovery.fs import fat, ntfs

    with open(image, "rb") as f:
        head = f.read(4096)
    read = lambda off, n: head[off:off + n]  # noqa: E731
    if kind == "ntfs":
        return ntfs.boot_sector_size(read) + 512
    return fat.boot_sector_size(read)


@pytest.mark.parametrize("kind", ["fat32", "fat16", "ntfs"])
def test_whole_disk_filesystem_backs_up_and_restores(tmp_path, kind):
    tree = flat_tree(tmp_path / "tree")
    source = make_whole(kind, tmp_path / "stick.img", tree)
    with open(source, "rb") as f:
        assert f.read(512)[510:] == b"\x55\xaa"            # looks like an MBR to sfdisk
    assert read_layout(str(source)).table == "none"
    expected = {f.name: f.read_bytes() for f in tree.iterdir()}
    assert files_of(kind, source, tree) == expected

    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    made = lifeboat("backup", source, "--repo", repo, "--json", json_out=True).data
    assert not any("imaged whole" in w for w in made["warnings"]), made["warnings"]
    snap = lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"][0]
    assert [(p["number"], p["fs"]) for p in snap["partitions"]] == [(0, fs_name(kind))]
    assert made["bytes_used"] < SIZES[kind]                 # only what the filesystem uses

    # Same size: the restored disk is the source, byte for byte (its free space was zeros).
    same = tmp_path / "same.img"
    with open(same, "wb") as f:
        f.truncate(SIZES[kind])
    lifeboat("restore", "latest", same, "--repo", repo, "--yes")
    assert same.read_bytes() == source.read_bytes()
    assert fi.fsck_clean(fs_name(kind), same)
    assert read_layout(str(same)).table == "none"

    # A bigger disk: still one filesystem on the whole disk, clean, with every file.
    bigger = tmp_path / "bigger.img"
    with open(bigger, "wb") as f:
        f.truncate(2 * SIZES[kind])
    lifeboat("restore", "latest", bigger, "--repo", repo, "--yes")
    assert read_layout(str(bigger)).table == "none"
    if kind == "ntfs":
        # NTFS grows with the disk (its backup boot sector moves to the new end).
        assert fs_extent(kind, bigger) > SIZES[kind]
        assert fi.fsck_clean(fs_name(kind), bigger)
    else:
        assert fi.fsck_clean(fs_name(kind), bigger, 0, fs_extent(kind, bigger))
    assert files_of(kind, bigger, tree) == expected
    if kind != "ntfs":                                      # FAT is never resized: the same bytes
        with open(bigger, "rb") as f:
            assert f.read(SIZES[kind]) == source.read_bytes()


def test_boot_code_over_the_table_area_is_still_a_filesystem(tmp_path):
    """Windows' FAT and NTFS boot code runs up to byte 509: bytes where MBR entries would be."""
    tree = flat_tree(tmp_path / "tree")
    source = make_whole("fat32", tmp_path / "stick.img", tree)
    with open(source, "r+b") as f:
        sector = bytearray(f.read(512))
        sector[446:510] = bytes(range(0x21, 0x21 + 64))     # code, not boot flags 0 / 0x80
        f.seek(0)
        f.write(sector)
    assert read_layout(str(source)).table == "none"
    assert fi.fsck_clean("vfat", source)


def test_mbr_disk_is_still_an_mbr(tmp_path):
    fat = fi.make_vfat(tmp_path / "p1.img", 16 * MiB, None, fat=16)
    disk = tmp_path / "mbr.img"
    di.make_disk(disk, 24 * MiB, "dos", [di.PartSpec(16 * MiB, "e", bootable=True, content=str(fat))])
    layout = read_layout(str(disk))
    assert layout.table == "dos" and [p.number for p in layout.partitions] == [1]

    # Even with a FAT BPB in its boot code (GRUB keeps the one it found there), a sector
    # whose entries make a table is an MBR.
    with open(fat, "rb") as f:
        bpb = f.read(90)
    with open(disk, "r+b") as f:
        f.write(bpb)
    try:
        layout = read_layout(str(disk))
    except DiskError as exc:      # libparted takes such a sector for a filesystem: refused, as before
        assert "disagree" in exc.message
    else:
        assert layout.table == "dos" and [p.number for p in layout.partitions] == [1]


def test_mbr_entries_rule():
    def sector(*entries) -> bytes:
        s = bytearray(512)
        for i, (boot, ptype, start, count) in enumerate(entries):
            e = 446 + 16 * i
            s[e], s[e + 4] = boot, ptype
            s[e + 8:e + 16] = start.to_bytes(4, "little") + count.to_bytes(4, "little")
        s[510:] = b"\x55\xaa"
        return bytes(s)

    disk = 64 * MiB
    assert mbr_entries_valid(sector((0x80, 0x83, 2048, 4096)), 512, disk)
    assert mbr_entries_valid(sector((0, 0x7, 2048, 4096), (0, 0x83, 6144, 2048)), 512, disk)
    assert not mbr_entries_valid(sector(), 512, disk)                               # no partition
    assert not mbr_entries_valid(sector((0x12, 0x83, 2048, 4096)), 512, disk)       # boot flag
    assert not mbr_entries_valid(sector((0, 0x83, 2048, 10 ** 6)), 512, disk)       # past the end
    assert not mbr_entries_valid(sector((0, 0x83, 0, 4096)), 512, disk)             # over sector 0
    assert not mbr_entries_valid(sector((0, 0x7, 2048, 4096), (0, 0x83, 4096, 2048)), 512, disk)  # overlap
