"""An ext3/ext4 saved as a crash left it: the files written (and fsync'd) just before the stop
are used only in the journal's copies of the block bitmaps, and the restored filesystem,
replayed, must hold them exactly as replaying the original does.

The crash is made the way a power cut makes it: the filesystem image is copied while still
mounted, right after the last fsync, so the journal holds committed transactions whose
metadata has not reached its home blocks yet (the kernel writes those back only after 30 s
or at unmount)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from recovery.fs import ext, jbd2
from tests import fsimages as fi
from tests.conftest import run
from tests.integration.engine_fixtures import MiB, lifeboat

SIZE = 64 * MiB


def _reader(path: Path):
    f = open(path, "rb")

    def read(offset: int, length: int) -> bytes:
        return os.pread(f.fileno(), length, offset)
    return f, read


def journal_of(image: Path) -> tuple[dict[int, bytes], set[int], Callable[[int], int]]:
    """What replaying `image`'s journal would write, its block bitmaps' places, and where
    (byte offset in the image) each block of the journal file lies."""
    f, read = _reader(image)
    with f:
        sb = ext._superblock(read)
        geo = ext._Geometry(sb, image.stat().st_size)
        descs = ext._descriptors(read, geo)
        inode = ext._journal_inode(read, geo, descs, sb)
        runs = jbd2._FileMap(read, geo.block_size, inode).runs

        def where(n: int) -> int:
            file_block, disk, _count = max(r for r in runs if r[0] <= n)
            return (disk + n - file_block) * geo.block_size
        return jbd2.replayed_blocks(read, geo.block_size, inode), {d[0] for d in descs}, where


def journaled_bitmaps(image: Path) -> set[int]:
    """The block bitmaps of `image` that journal replay would rewrite."""
    replay, bitmaps, _where = journal_of(image)
    return bitmaps & set(replay)


def needs_recovery(image: Path) -> bool:
    return "needs_recovery" in run("dumpe2fs", "-h", image).stdout


def crashed_filesystem(tmp_path: Path, loops, fs: str, block_size: int, extra: tuple[str, ...] = (),
                       crashed_enough=journaled_bitmaps) -> tuple[Path, dict]:
    """An image of `fs` copied mid-use, with its journal holding the block bitmaps that mark the
    last files used (or whatever `crashed_enough` asks of the copy); returns it and the
    digests of those files as written."""
    src = tmp_path / "old"
    src.mkdir()
    (src / "kept.bin").write_bytes(os.urandom(3 * MiB))
    image = fi.make_ext4(tmp_path / f"{fs}.img", SIZE, src, fs=fs, block_size=block_size, extra=extra)
    dev = loops.attach(image)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    crashed = tmp_path / "crashed.img"
    run("mount", "-t", fs, dev, mnt)
    try:
        # The kernel may write the metadata home on its own (rarely within a second): try again
        # with more files until the copy shows the state a crash leaves.
        for attempt in range(3):
            written = {}
            for i in range(6):
                data = os.urandom(2 * MiB + 4096 * i)
                name = f"new-{attempt}-{i}.bin"
                with open(mnt / name, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                written[name] = data
            shutil.copyfile(image, crashed)
            if crashed_enough(crashed):
                break
        else:
            pytest.fail("three copies taken right after fsync all had their bitmaps written home")
    finally:
        run("umount", mnt)
    return crashed, {n: "sha256:" + hashlib.sha256(d).hexdigest() for n, d in written.items()}


def replayed(image: Path, out: Path) -> Path:
    """A copy of `image` with its journal replayed by e2fsck (exit 0 or 1: nothing left to fix)."""
    shutil.copyfile(image, out)
    proc = subprocess.run(["e2fsck", "-f", "-y", str(out)], capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    assert fi.fsck_clean("ext4", out)
    return out


@pytest.mark.parametrize("fs,block_size", [("ext4", 4096), ("ext4", 1024), ("ext3", 4096), ("ext3", 1024)])
def test_files_only_the_journal_marks_used_are_restored(tmp_path, loops, fs, block_size):
    crashed, written = crashed_filesystem(tmp_path, loops, fs, block_size)
    assert needs_recovery(crashed)
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    out = lifeboat("backup", crashed, "--repo", repo, "--name", "crashed", "--json", json_out=True)
    assert any("journal needs recovery" in w for w in out.data.get("warnings", [])), out.data
    target = tmp_path / "target.img"
    target.write_bytes(b"")
    os.truncate(target, SIZE)
    lifeboat("restore", "latest", target, "--repo", repo, "--yes")
    want = fi.ext_tree(replayed(crashed, tmp_path / "want.img"))
    got = fi.ext_tree(replayed(target, tmp_path / "got.img"))
    assert {k: want[k] for k in written} == written      # the oracle holds the last files whole
    assert got == want


def assert_kept_whole(image: Path, why: str) -> None:
    """The used-block map of `image` is all of it, and a warning says why."""
    f, read = _reader(image)
    with f:
        info = ext.probe(read, SIZE)
    assert tuple(info.used) == ((0, SIZE),)
    assert any(f"cannot be followed ({why}" in w for w in info.warnings), info.warnings


def test_a_journal_that_cannot_be_followed_keeps_the_whole_filesystem(tmp_path, loops):
    crashed, _written = crashed_filesystem(tmp_path, loops, "ext4", 4096)
    _replay, _bitmaps, where = journal_of(crashed)
    with open(crashed, "r+b") as img:                     # the journal superblock's magic
        os.pwrite(img.fileno(), b"\0\0\0\0", where(0))
    assert_kept_whole(crashed, "the journal's superblock is damaged")


def test_a_journal_with_fast_commits_keeps_the_whole_filesystem(tmp_path, loops):
    """Fast commits record changes by inode, not as block copies, in an area of their own:
    Lifeboat does not follow them, so such a filesystem is kept whole when it needs recovery."""
    crashed, _written = crashed_filesystem(tmp_path, loops, "ext4", 4096, extra=("-O", "fast_commit"),
                                           crashed_enough=needs_recovery)
    assert_kept_whole(crashed, "the journal holds fast commits")


def test_a_version_1_journal_is_followed_as_a_version_2_one_without_features(tmp_path, loops):
    """Old tools wrote version-1 journal superblocks, which have no feature fields; an ext3
    journal (no checksums, no 64-bit block numbers) is laid out the same in both versions."""
    crashed, _written = crashed_filesystem(tmp_path, loops, "ext3", 4096)
    replay, bitmaps, where = journal_of(crashed)
    with open(crashed, "r+b") as img:
        assert jbd2.struct.unpack(">I", os.pread(img.fileno(), 4, where(0) + 4))[0] == jbd2.SUPERBLOCK_V2
        os.pwrite(img.fileno(), jbd2.struct.pack(">I", jbd2.SUPERBLOCK_V1), where(0) + 4)
    again, _bitmaps, _where = journal_of(crashed)
    assert bitmaps & set(again) and again == replay


def test_logged_blocks_that_begin_like_a_journal_block_come_back_whole(tmp_path, loops):
    """With data=journal a file's blocks pass through the journal; those beginning with the
    journal's magic number are stored escaped (first four bytes zeroed) and must be read back
    as they were written."""
    image = fi.make_ext4(tmp_path / "fs.img", SIZE, block_size=4096)
    dev = loops.attach(image)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    blocks = [jbd2.struct.pack(">I", jbd2.JBD2_MAGIC) + os.urandom(4092) for _ in range(8)]
    blocks += [os.urandom(4096) for _ in range(8)]
    crashed = tmp_path / "crashed.img"
    run("mount", "-o", "data=journal", dev, mnt)
    try:
        with open(mnt / "file.bin", "wb") as out:
            out.write(b"".join(blocks))
            out.flush()
            os.fsync(out.fileno())
        shutil.copyfile(image, crashed)
    finally:
        run("umount", mnt)
    f, read = _reader(crashed)
    with f:
        sb = ext._superblock(read)
        geo = ext._Geometry(sb, SIZE)
        inode = ext._journal_inode(read, geo, ext._descriptors(read, geo), sb)
        replay = jbd2.replayed_blocks(read, geo.block_size, inode)
    logged = set(replay.values())
    assert all(b in logged for b in blocks), sum(b in logged for b in blocks)



def as_checksum_v2(image: Path, where: Callable[[int], int], block_size: int) -> None:
    """Rewrite the journal of `image` (checksum v3: 16-byte tags) the way kernels of 2012-2014
    wrote it with checksum v2: 12-byte tags with a 16-bit flags field, two bytes more, and the
    v2 feature flag."""
    pack, unpack = jbd2.struct.pack_into, jbd2.struct.unpack_from
    with open(image, "r+b") as img:
        def block(n: int) -> bytearray:
            return bytearray(os.pread(img.fileno(), block_size, where(n)))

        sb = block(0)
        maxlen, log_first, sequence, at = unpack(">IIII", sb, 0x10)

        def after(n: int) -> int:            # the log wraps from its end to its first block
            return log_first if n + 1 == maxlen else n + 1
        incompat = unpack(">I", sb, 0x28)[0]
        assert incompat & jbd2.FEATURE_INCOMPAT_CSUM_V3 and incompat & jbd2.FEATURE_INCOMPAT_64BIT
        pack(">I", sb, 0x28, incompat & ~jbd2.FEATURE_INCOMPAT_CSUM_V3 | jbd2.FEATURE_INCOMPAT_CSUM_V2)
        os.pwrite(img.fileno(), sb, where(0))
        descriptors = 0
        while True:
            head = block(at)
            magic, kind, seq = unpack(">III", head, 0)
            if magic != jbd2.JBD2_MAGIC or seq != sequence:
                break
            here, at = at, after(at)
            if kind == jbd2.COMMIT:
                sequence += 1
            if kind != jbd2.DESCRIPTOR:
                continue
            new = bytearray(block_size)
            new[:12] = head[:12]
            src, dst = 12, 12
            while True:
                low, flags, high = unpack(">III", head, src)
                pack(">IHHI", new, dst, low, 0, flags, high)
                src, dst = src + 16, dst + 14
                if not flags & jbd2.TAG_SAME_UUID:
                    new[dst:dst + 16] = head[src:src + 16]
                    src, dst = src + 16, dst + 16
                at = after(at)               # the logged block this tag describes
                if flags & jbd2.TAG_LAST:
                    break
            os.pwrite(img.fileno(), new, where(here))
            descriptors += 1
        assert descriptors


def test_a_checksum_v2_journal_is_followed(tmp_path, loops):
    crashed, _written = crashed_filesystem(tmp_path, loops, "ext4", 4096)
    replay, bitmaps, where = journal_of(crashed)
    as_checksum_v2(crashed, where, 4096)
    again, _bitmaps, _where = journal_of(crashed)
    assert bitmaps & set(again) and again == replay


def test_an_ext4_without_64_bit_block_numbers_is_followed(tmp_path, loops):
    """Checksummed (v3) tags whose high half of the block number is not used."""
    crashed, _written = crashed_filesystem(tmp_path, loops, "ext4", 4096, extra=("-O", "^64bit"))
    replay, bitmaps, _where = journal_of(crashed)
    assert bitmaps & set(replay)
    f, read = _reader(crashed)
    with f:
        used = ext.probe(read, SIZE).used
    for block in bitmaps & set(replay):
        assert any(o <= block * 4096 < o + n for o, n in used)
