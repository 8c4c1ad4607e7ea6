"""Restore onto a smaller partition: real ext4 and NTFS whose files lie across the whole
partition are backed up, the used bytes below the new end are written to a smaller target
(as the restore does), shrink_filesystem relocates the rest from the repository, and every
file comes back identical, fsck clean, the filesystem exactly the new size.

The filesystems are 4 GiB sparse images about a quarter used: keeper files (unique 4 KiB
blocks) are allocated between spacer files that take no data (fallocate / ntfsfallocate)
and are deleted afterwards, so keepers sit up to the end of the partition.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
from pathlib import Path

import pytest

from recovery.apply import shrink
from recovery.apply.shrink import min_size, shrink_filesystem
from recovery.backup import backup
from recovery.chunking import used_windows
from recovery.errors import RefusedError
from recovery.model.layout import PartitionEntry
from recovery.repo.reader import PartitionReader
from recovery.repo.repository import Repository
from tests.conftest import require, run

pytestmark = pytest.mark.loop

MiB = 1024 * 1024
GiB = 1024 * MiB
FS_SIZE = 4 * GiB
KEEPER = 8 * MiB
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"


def keeper(i: int, size: int = KEEPER) -> bytes:
    """Every 4 KiB block unique (file, block) so a misplaced block shows, yet compressible."""
    filler = hashlib.sha256(b"filler").digest() * 127 + bytes(4096 - 16 - 32 * 127)
    return b"".join(struct.pack("<QQ", i, b) + filler for b in range(size // 4096))


def spread_ext4(path: Path, mnt: Path) -> dict[str, str]:
    with open(path, "wb") as f:
        f.truncate(FS_SIZE)
    run("mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-L", "ROOT", path)
    mnt.mkdir(exist_ok=True)
    run("mount", "-o", "loop", path, mnt)
    digests = {}
    try:
        i = 0
        while True:
            data = keeper(i)
            try:
                (mnt / f"k{i:04d}").write_bytes(data)
                with open(mnt / f"s{i:04d}", "wb") as f:
                    os.posix_fallocate(f.fileno(), 0, 3 * KEEPER)
            except OSError:
                (mnt / f"k{i:04d}").unlink(missing_ok=True)
                break
            digests[f"k{i:04d}"] = hashlib.sha256(data).hexdigest()
            i += 1
        for p in mnt.glob("s*"):
            p.unlink()
    finally:
        run("umount", mnt)
    return digests


def spread_ntfs(path: Path, work: Path) -> dict[str, str]:
    with open(path, "wb") as f:
        f.truncate(FS_SIZE)
    run("mkntfs", "-F", "-Q", "-q", "-L", "Windows", path)
    src, empty = work / "keeper.bin", work / "empty"
    empty.write_bytes(b"")
    digests = {}
    # ntfscp/ntfsfallocate work on the image directly (far faster than writing through
    # ntfs-3g); each run allocates first-fit, so keepers and spacers alternate to the end.
    for i in range(FS_SIZE * 7 // 8 // (64 * MiB)):
        data = keeper(i, 16 * MiB)
        src.write_bytes(data)
        run("ntfscp", "-f", path, src, f"k{i:04d}")
        run("ntfscp", "-f", path, empty, f"s{i:04d}")
        run("ntfsfallocate", "-l", 48 * MiB, path, f"s{i:04d}")
        digests[f"k{i:04d}"] = hashlib.sha256(data).hexdigest()
    mnt = work / "mnt"
    mnt.mkdir(exist_ok=True)
    run("ntfs-3g", path, mnt)
    try:
        for p in mnt.glob("s*"):
            p.unlink()
    finally:
        run("umount", mnt)
    return digests


class Saved:
    def __init__(self, work: Path, fs: str, image: Path, digests: dict[str, str]):
        self.work, self.fs, self.image, self.digests = work, fs, image, digests
        self.repo = Repository.init(work / "repo")
        result = backup(str(image), self.repo, fs)
        manifest = self.repo.load_manifest(result.snapshot)
        (self.part,) = manifest.partitions
        self.reader = PartitionReader(self.repo, self.part, manifest.chunk_size)
        self.chunk_size = manifest.chunk_size

    def beyond(self, new_size: int) -> int:
        """Used bytes at or beyond `new_size`: what the shrink must move."""
        return sum(max(0, o + n - max(o, new_size)) for o, n in self.reader.used_ranges())

    def restore_head(self, target: Path, entry: PartitionEntry) -> None:
        """What the restore does before shrinking: a fresh target holding every used byte
        that lies below the new end, at entry.start."""
        with open(target, "wb") as f:
            f.truncate(entry.start + entry.size + MiB)     # room for a GPT backup header
        fd = os.open(target, os.O_WRONLY)
        try:
            for w, subs in used_windows(self.reader.used_ranges(), self.part.size, self.chunk_size):
                for off, n in subs:
                    at = w * self.chunk_size + off
                    n = min(n, entry.size - at)
                    if n > 0:
                        os.pwrite(fd, self.reader.read(at, n), entry.start + at)
        finally:
            os.close(fd)


@pytest.fixture(scope="module")
def saved_ext4(tmp_path_factory):
    require(os.geteuid() == 0, "needs root for loop devices")
    work = tmp_path_factory.mktemp("shrink-ext4")
    digests = spread_ext4(work / "fs.ext4", work / "mnt")
    return Saved(work, "ext4", work / "fs.ext4", digests)


@pytest.fixture(scope="module")
def saved_ntfs(tmp_path_factory):
    require(os.geteuid() == 0, "needs root for ntfs-3g")
    work = tmp_path_factory.mktemp("shrink-ntfs")
    digests = spread_ntfs(work / "fs.ntfs", work)
    return Saved(work, "ntfs", work / "fs.ntfs", digests)


def write_table(target: Path, entry: PartitionEntry, type_: str) -> None:
    """The restore writes the table last."""
    script = f"label: gpt\nstart={entry.start // 512}, size={entry.size // 512}, type={type_}\n"
    run("sfdisk", "-q", target, input=script)


def tree_digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.iterdir() if p.name.startswith("k")}


# ----------------------------------------------------------------------------- the reader


def test_reader_returns_the_saved_bytes_and_zeros_elsewhere(saved_ext4):
    r, image = saved_ext4.reader, saved_ext4.image
    assert r.size == FS_SIZE
    ranges = r.used_ranges()
    with open(image, "rb") as f:
        # used ranges straddling window boundaries, the last bytes, and a stretch of free space
        probes = [(o, min(n, 3 * MiB)) for o, n in ranges[:: max(len(ranges) // 40, 1)]]
        probes += [(MiB - 100, 200), (FS_SIZE - 5000, 5000), (FS_SIZE - 10, 100)]
        for off, n in probes:
            f.seek(off)
            want = f.read(min(n, FS_SIZE - off))
            got = r.read(off, n)
            covered = bytearray(len(want))
            for o, m in ranges:
                lo, hi = max(o, off), min(o + m, off + len(want))
                if lo < hi:
                    covered[lo - off : hi - off] = want[lo - off : hi - off]
            assert got == bytes(covered), off
    assert r.read(FS_SIZE, 10) == b""
    assert len(r._cache) <= r._cache_limit


# ----------------------------------------------------------------------------- ext4


def test_ext4_shrinks_to_its_minimum_moving_what_lay_beyond(saved_ext4, loops):
    s = saved_ext4
    new = min_size("ext4", s.reader.read, s.part.size, s.part.used_bytes)
    assert s.part.used_bytes <= new < s.part.size and new % MiB == 0
    assert s.beyond(new) > 256 * MiB, "the test filesystem must have data beyond the new end"

    entry = PartitionEntry(number=2, start=MiB, size=new, type=LINUX)
    target = s.work / "target-ext4.img"
    s.restore_head(target, entry)
    note = shrink_filesystem(str(target), entry, "ext4", s.part.size, s.reader.read)
    assert note.startswith("Partition 2 (ext4): filesystem shrunk from 4.0 GiB to ") and "\n" not in note
    write_table(target, entry, LINUX)

    disk = loops.attach(target)
    dev = f"{disk}p1"
    assert subprocess.run(["e2fsck", "-f", "-n", dev], capture_output=True).returncode == 0
    info = dict(line.split(":", 1) for line in run("dumpe2fs", "-h", dev).stdout.splitlines() if ":" in line)
    assert int(info["Block count"]) * int(info["Block size"]) == entry.size
    mnt = s.work / "check"
    mnt.mkdir(exist_ok=True)
    run("mount", "-o", "ro", dev, mnt)
    try:
        assert tree_digests(mnt) == s.digests
    finally:
        run("umount", mnt)


def test_ext4_below_its_minimum_is_refused_plainly(saved_ext4):
    s = saved_ext4
    entry = PartitionEntry(number=2, start=MiB, size=GiB, type=LINUX)
    target = s.work / "too-small-ext4.img"
    s.restore_head(target, entry)
    with pytest.raises(RefusedError) as exc:
        shrink_filesystem(str(target), entry, "ext4", s.part.size, s.reader.read)
    msg = str(exc.value)
    assert msg.startswith("partition 2 (ext4) cannot shrink to 1.0 GiB: its data needs at least ")
    assert "\n" not in msg and exc.value.exit_code == 4


# ----------------------------------------------------------------------------- NTFS


def test_ntfs_shrinks_to_its_minimum_moving_what_lay_beyond(saved_ntfs, loops):
    s = saved_ntfs
    new = min_size("ntfs", s.reader.read, s.part.size, s.part.used_bytes)
    assert s.part.used_bytes <= new < s.part.size and new % MiB == 0
    assert s.beyond(new) > 256 * MiB, "the test filesystem must have data beyond the new end"

    entry = PartitionEntry(number=3, start=2 * MiB, size=new, type=BASIC_DATA)
    target = s.work / "target-ntfs.img"
    s.restore_head(target, entry)
    note = shrink_filesystem(str(target), entry, "ntfs", s.part.size, s.reader.read)
    assert note.startswith("Partition 3 (ntfs): NTFS shrunk from 4.0 GiB to ") and "\n" not in note
    write_table(target, entry, BASIC_DATA)

    disk = loops.attach(target)
    dev = f"{disk}p1"
    check = subprocess.run(["ntfsfix", "-n", dev], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    with open(dev, "rb") as f:
        boot = f.read(512)
    bytes_per_sector = struct.unpack_from("<H", boot, 0x0B)[0]
    cluster = bytes_per_sector * boot[0x0D]
    total_sectors = struct.unpack_from("<Q", boot, 0x28)[0]
    # ntfsresize fills the partition in whole clusters and keeps the backup boot sector
    # right after the volume, inside the partition's last cluster
    assert entry.size - cluster < (total_sectors + 1) * bytes_per_sector <= entry.size
    mnt = s.work / "check"
    mnt.mkdir(exist_ok=True)
    run("ntfs-3g", "-o", "ro", dev, mnt)
    try:
        assert tree_digests(mnt) == s.digests
    finally:
        run("umount", mnt)


def test_ntfs_below_its_minimum_is_refused_plainly(saved_ntfs):
    s = saved_ntfs
    entry = PartitionEntry(number=3, start=MiB, size=768 * MiB, type=BASIC_DATA)
    target = s.work / "too-small-ntfs.img"
    s.restore_head(target, entry)
    with pytest.raises(RefusedError) as exc:
        shrink_filesystem(str(target), entry, "ntfs", s.part.size, s.reader.read)
    msg = str(exc.value)
    assert msg.startswith("partition 3 (ntfs) cannot shrink to 768.0 MiB: its data needs at least ")
    assert "\n" not in msg


# ----------------------------------------------------------------------------- the view itself


def test_view_joins_target_and_backup_and_bounds_what_it_keeps(tmp_path):
    """/old: the target's bytes below the new end, the backup's beyond, writes beyond kept
    in memory (one copy per distinct block) up to a limit; /new: the target's bytes only."""
    target = tmp_path / "target.img"
    target.write_bytes(b"T" * MiB + b"H" * (4 * MiB) + b"T" * MiB)      # partition at 1 MiB, 4 MiB
    backup_tail = lambda off, n: bytes([0x42]) * n                     # noqa: E731
    fd = os.open(target, os.O_RDWR)
    try:
        with shrink.VirtualDisk(fd, MiB, 16 * MiB, 4 * MiB, backup_tail, overlay_limit=64 * 1024) as vd:
            assert os.path.getsize(vd.old_path) == 16 * MiB and os.path.getsize(vd.new_path) == 4 * MiB
            with open(vd.old_path, "rb") as f:
                f.seek(4 * MiB - 2)
                assert f.read(4) == b"HHBB"
            pattern = (b"L" * 4096) * 256
            with open(vd.old_path, "r+b") as f:
                f.seek(8 * MiB)
                f.write(pattern)                  # 1 MiB, one distinct block
                f.seek(4 * MiB - 4096)
                f.write(b"N" * 8192)              # straddles the new end
            assert vd.overlay_bytes <= 2 * 4096
            with open(vd.old_path, "rb") as f:
                f.seek(8 * MiB - 1)
                assert f.read(3) == b"BLL"
            with open(vd.new_path, "rb") as f:
                f.seek(4 * MiB - 4096)
                assert f.read() == b"N" * 4096
            noise = tmp_path / "noise"
            noise.write_bytes(os.urandom(MiB))
            with pytest.raises(RefusedError, match="wrote more than 64.0 KiB beyond the new end"):
                vd.run(["dd", f"if={noise}", f"of={vd.old_path}", "bs=64K", "seek=160", "conv=notrunc,fsync"])
    finally:
        os.close(fd)
    data = target.read_bytes()
    assert data[:MiB] == b"T" * MiB and data[5 * MiB:] == b"T" * MiB      # nothing outside the partition
    assert data[5 * MiB - 4096 : 5 * MiB] == b"N" * 4096


# ----------------------------------------------------------------------------- without FUSE


def test_without_fuse_min_size_estimates_and_shrink_refuses(saved_ext4, monkeypatch):
    s = saved_ext4
    monkeypatch.setattr(shrink, "fuse_unavailable", lambda: "FUSE is not available here (no /dev/fuse)")
    est = min_size("ext4", s.reader.read, s.part.size, s.part.used_bytes)
    used = s.part.used_bytes
    assert est == -(-(used + used // 10 + 256 * MiB) // MiB) * MiB
    assert min_size("vfat", s.reader.read, s.part.size, used) == s.part.size
    entry = PartitionEntry(number=2, start=MiB, size=3 * GiB, type=LINUX)
    with pytest.raises(RefusedError, match=r"^cannot shrink partition 2 \(ext4\) to 3.0 GiB: FUSE is not "
                                           r"available here \(no /dev/fuse\); restore onto a disk of at least"):
        shrink_filesystem(str(s.work / "nothing.img"), entry, "ext4", s.part.size, s.reader.read)


# ----------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("fs,table", [("ext4", "gpt"), ("ntfs", "dos")])
def test_cli_restores_a_4_gib_partition_a_quarter_used_onto_a_1_5_gib_disk(fs, table, request, tmp_path):
    """The issue's case through the real CLI: files and metadata spread to the end of a 4 GiB
    partition, 25 % used, restored onto a 1.5 GiB disk: the plan says what shrinks and by how
    much, every file comes back, fsck is clean, and the table keeps its identities."""
    from tests import diskimages as di
    from tests.integration.engine_fixtures import lifeboat, sfdisk_json

    saved = request.getfixturevalue(f"saved_{fs}")
    type_ = {("ext4", "gpt"): LINUX, ("ntfs", "dos"): "7"}[(fs, table)]
    disk = tmp_path / "pc.img"
    di.make_disk(disk, FS_SIZE + 2 * MiB, table, [di.PartSpec(FS_SIZE, type_, content=str(saved.image))])
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    lifeboat("backup", disk, "--repo", repo, "--name", "pc")
    target = tmp_path / "ssd.img"
    with open(target, "wb") as f:
        f.truncate(3 * GiB // 2)

    plan = lifeboat("restore", "latest", target, "--repo", repo, "--dry-run", "--json", json_out=True).data["plan"]
    shrink = next(a for a in plan["actions"] if a["action"] == "shrink-filesystem")
    assert shrink["old_size"] == FS_SIZE and shrink["new_size"] < 3 * GiB // 2
    assert saved.beyond(shrink["new_size"]) > 256 * MiB, "the test must move data from beyond the new end"
    assert any("shrinks from 4.0 GiB" in line for line in plan["layout_changes"])

    result = lifeboat("restore", "latest", target, "--repo", repo, "--yes", "--json", json_out=True).data
    assert result["status"] == "ok"
    part = sfdisk_json(target)["partitions"][0]
    start, size = part["start"] * 512, part["size"] * 512
    assert size == shrink["new_size"]
    assert sfdisk_json(target)["id"] == sfdisk_json(disk)["id"]
    loop = run("losetup", "--find", "--show", "--read-only", "--offset", start, "--sizelimit", size,
               target).stdout.strip()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        if fs == "ext4":
            assert subprocess.run(["e2fsck", "-fn", loop], capture_output=True).returncode == 0
            run("mount", "-o", "ro,noload", loop, mnt)
        else:
            assert subprocess.run(["ntfsfix", "--no-action", loop], capture_output=True).returncode == 0
            run("ntfs-3g", "-o", "ro,force", loop, mnt)
        try:
            assert tree_digests(mnt) == saved.digests
        finally:
            run("umount", mnt)
    finally:
        run("losetup", "-d", loop)
