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
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from recovery.fs import ext, jbd2
from tests import fsimages as fi
from tests.conftest import run
from tests.integration.engine_fixtures import MiB, lifeboat

SIZE = 64 * MiB
# The journal format's own numbers, written out here rather than taken from recovery/fs/jbd2.py,
# so a wrong constant there cannot also bend the test.
MAGIC = bytes.fromhex("c03b3998")
DESCRIPTOR, COMMIT, REVOKE, SUPERBLOCK_V1, SUPERBLOCK_V2 = 1, 2, 5, 3, 4
INCOMPAT_REVOKE, INCOMPAT_64BIT, INCOMPAT_CSUM_V2, INCOMPAT_CSUM_V3 = 0x1, 0x2, 0x8, 0x10
TAG_SAME_UUID, TAG_LAST = 0x2, 0x8
LOGGED = re.compile(r"FS block (\d+) logged at journal block (\d+) \(flags (0x[0-9a-f]+)\)")
FOUND = re.compile(r"Found expected sequence \d+, type (\d+)")
COMMIT_AT = re.compile(r"Found expected sequence \d+, type 2 \(commit block\) at block (\d+)")


def _reader(path: Path):
    f = open(path, "rb")

    def read(offset: int, length: int) -> bytes:
        return os.pread(f.fileno(), length, offset)
    return f, read


def journal_inode_of(image: Path):
    """The geometry of `image`'s filesystem, its group descriptors, the byte offset of its
    journal's inode and that inode's bytes."""
    f, read = _reader(image)
    with f:
        sb = ext._superblock(read)
        geo = ext._Geometry(sb, image.stat().st_size)
        descs = ext._descriptors(read, geo)
        group, index = divmod(struct.unpack_from("<I", sb, 0xE0)[0] - 1, geo.inodes_per_group)
        return geo, descs, descs[group][2] * geo.block_size + index * geo.inode_size, \
            ext._journal_inode(read, geo, descs, sb)


def journal_of(image: Path) -> tuple[dict[int, bytes], set[int], Callable[[int], int]]:
    """What replaying `image`'s journal would write, its block bitmaps' places, and where
    (byte offset in the image) each block of the journal file lies."""
    geo, descs, _at, inode = journal_inode_of(image)
    f, read = _reader(image)
    with f:
        runs = jbd2._FileMap(read, geo.block_size, inode).runs

        def where(n: int) -> int:
            file_block, disk, _count = max(r for r in runs if r[0] <= n)
            return (disk + n - file_block) * geo.block_size
        return jbd2.replayed_blocks(read, geo.block_size, inode), {d[0] for d in descs}, where


def journaled_bitmaps(image: Path) -> set[int]:
    """The block bitmaps of `image` that journal replay would rewrite."""
    replay, bitmaps, _where = journal_of(image)
    return bitmaps & set(replay)


def replay_by_debugfs(image: Path, where: Callable[[int], int], block_size: int) -> dict[int, bytes]:
    """What e2fsprogs' own reading of the journal (debugfs logdump) says replay writes: each
    block logged in a committed transaction, at its home, with the last committed content."""
    out = run("debugfs", "-R", "logdump -a", image).stdout
    result: dict[int, bytes] = {}
    pending: list[tuple[int, bytes]] = []
    with open(image, "rb") as img:
        for line in out.splitlines():
            m = LOGGED.search(line)
            if m:
                data = os.pread(img.fileno(), block_size, where(int(m[2])))
                if int(m[3], 16) & 1:                   # escaped: the magic number was zeroed
                    data = MAGIC + data[4:]
                pending.append((int(m[1]), data))
            elif (m := FOUND.search(line)) and int(m[1]) == COMMIT:
                result.update(pending)
                pending = []
    return result


def assert_read_as_debugfs_reads_it(image: Path, block_size: int) -> dict[int, bytes]:
    """The whole walk matches debugfs's; asked for a few home blocks (as the used-block map
    asks for the bitmaps), it returns exactly those of them the log holds."""
    replay, bitmaps, where = journal_of(image)
    assert replay and replay == replay_by_debugfs(image, where, block_size)
    geo, _descs, _at, inode = journal_inode_of(image)
    f, read = _reader(image)
    with f:
        few = jbd2.replayed_blocks(read, geo.block_size, inode, wanted=bitmaps)
    assert few == {k: v for k, v in replay.items() if k in bitmaps}
    return replay


def needs_recovery(image: Path) -> bool:
    return "needs_recovery" in run("dumpe2fs", "-h", image).stdout


def crashed_filesystem(tmp_path: Path, loops, fs: str, block_size: int, extra: tuple[str, ...] = (),
                       crashed_enough=journaled_bitmaps, before=None) -> tuple[Path, dict]:
    """An image of `fs` copied mid-use, with its journal holding the block bitmaps that mark the
    last files used (or whatever `crashed_enough` asks of the copy); `before(mountpoint)` runs
    first in each attempt. Returns the copy and the digests of the last files as written."""
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
            if before is not None:
                before(mnt / f"before-{attempt}")
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
    assert_read_as_debugfs_reads_it(crashed, block_size)
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


def assert_kept_whole(image: Path, why: str, kind: str = "ext4") -> None:
    """The used-block map of `image` is all of it, and a warning says why."""
    f, read = _reader(image)
    with f:
        info = ext.probe(read, SIZE)
    assert tuple(info.used) == ((0, SIZE),)
    said = [w for w in info.warnings if w.startswith(f"{kind}'s journal needs recovery and cannot be followed ({why}")]
    assert len(said) == 1 and said[0].endswith("); the whole filesystem is kept"), info.warnings


def _patch_superblock(image: Path, offset: int, fmt: str, value: int) -> None:
    with open(image, "r+b") as img:
        os.pwrite(img.fileno(), struct.pack(fmt, value), 1024 + offset)


def _set_needs_recovery(image: Path) -> None:
    with open(image, "rb") as img:
        incompat = struct.unpack("<I", os.pread(img.fileno(), 4, 1024 + 0x60))[0]
    _patch_superblock(image, 0x60, "<I", incompat | 0x4)


def test_needs_recovery_without_a_journal_keeps_the_whole_filesystem(tmp_path):
    """A damaged ext2 (no journal) whose superblock says its journal needs recovery."""
    image = fi.make_ext4(tmp_path / "fs.img", SIZE, fs="ext2")
    _set_needs_recovery(image)
    assert_kept_whole(image, "the filesystem has no journal", kind="ext2")


def test_an_external_journal_keeps_the_whole_filesystem(tmp_path, loops):
    """The journal on a device of its own (mke2fs -J device=): not in the partition saved."""
    journal = tmp_path / "journal.img"
    journal.write_bytes(b"")
    os.truncate(journal, 8 * MiB)
    run("mke2fs", "-q", "-F", "-O", "journal_dev", "-b", "4096", journal)
    dev = loops.attach(journal)
    image = fi.make_ext4(tmp_path / "fs.img", SIZE, extra=("-J", f"device={dev}"))
    _set_needs_recovery(image)
    assert_kept_whole(image, "it is kept on another device")


def test_a_journal_inode_number_past_the_last_inode_keeps_the_whole_filesystem(tmp_path):
    image = fi.make_ext4(tmp_path / "fs.img", SIZE)
    with open(image, "rb") as img:
        inodes = struct.unpack("<I", os.pread(img.fileno(), 4, 1024 + 0x0))[0]
    _patch_superblock(image, 0xE0, "<I", inodes + 1)
    _set_needs_recovery(image)
    assert_kept_whole(image, "the superblock names a journal inode that does not exist")


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
        assert struct.unpack(">I", os.pread(img.fileno(), 4, where(0) + 4))[0] == SUPERBLOCK_V2
        os.pwrite(img.fileno(), struct.pack(">I", SUPERBLOCK_V1), where(0) + 4)
    again, _bitmaps, _where = journal_of(crashed)
    assert bitmaps & set(again) and again == replay


def journaled_file(tmp_path: Path, loops, blocks: list[bytes]) -> Path:
    """A 4 KiB-block ext4 mounted with data=journal (file data passes through the journal too),
    copied right after `blocks` were written to a file and fsync'd."""
    image = fi.make_ext4(tmp_path / "fs.img", SIZE, block_size=4096)
    dev = loops.attach(image)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
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
    return crashed


def test_logged_blocks_that_begin_like_a_journal_block_come_back_whole(tmp_path, loops):
    """With data=journal a file's blocks pass through the journal; those beginning with the
    journal's magic number are stored escaped (first four bytes zeroed) and must be read back
    as they were written."""
    blocks = [MAGIC + os.urandom(4092) for _ in range(8)]
    blocks += [os.urandom(4096) for _ in range(8)]
    crashed = journaled_file(tmp_path, loops, blocks)
    geo, _descs, _at, inode = journal_inode_of(crashed)
    f, read = _reader(crashed)
    with f:
        replay = jbd2.replayed_blocks(read, geo.block_size, inode)
    logged = set(replay.values())
    assert all(b in logged for b in blocks), sum(b in logged for b in blocks)



def as_checksum_v2(image: Path, where: Callable[[int], int], block_size: int) -> None:
    """Rewrite the journal of `image` (checksum v3: 16-byte tags) the way kernels of 2012-2014
    wrote it with checksum v2: 12-byte tags with a 16-bit flags field, two bytes more, and the
    v2 feature flag."""
    pack, unpack = struct.pack_into, struct.unpack_from
    with open(image, "r+b") as img:
        def block(n: int) -> bytearray:
            return bytearray(os.pread(img.fileno(), block_size, where(n)))

        sb = block(0)
        maxlen, log_first, sequence, at = unpack(">IIII", sb, 0x10)

        def after(n: int) -> int:            # the log wraps from its end to its first block
            return log_first if n + 1 == maxlen else n + 1
        incompat = unpack(">I", sb, 0x28)[0]
        assert incompat & INCOMPAT_CSUM_V3 and incompat & INCOMPAT_64BIT
        pack(">I", sb, 0x28, incompat & ~INCOMPAT_CSUM_V3 | INCOMPAT_CSUM_V2)
        os.pwrite(img.fileno(), sb, where(0))
        descriptors = 0
        while True:
            head = block(at)
            magic, kind, seq = unpack(">III", head, 0)
            if magic != int.from_bytes(MAGIC, "big") or seq != sequence:
                break
            here, at = at, after(at)
            if kind == COMMIT:
                sequence += 1
            if kind != DESCRIPTOR:
                continue
            new = bytearray(block_size)
            new[:12] = head[:12]
            src, dst = 12, 12
            while True:
                low, flags, high = unpack(">III", head, src)
                pack(">IHHI", new, dst, low, 0, flags, high)
                src, dst = src + 16, dst + 14
                if not flags & TAG_SAME_UUID:
                    new[dst:dst + 16] = head[src:src + 16]
                    src, dst = src + 16, dst + 16
                at = after(at)               # the logged block this tag describes
                if flags & TAG_LAST:
                    break
            os.pwrite(img.fileno(), new, where(here))
            descriptors += 1
        assert descriptors


def test_a_checksum_v2_journal_is_followed(tmp_path, loops):
    crashed, _written = crashed_filesystem(tmp_path, loops, "ext4", 4096)
    replay, bitmaps, where = journal_of(crashed)
    as_checksum_v2(crashed, where, 4096)
    again, _bitmaps, _where = journal_of(crashed)
    assert bitmaps & set(again) and again == replay == replay_by_debugfs(crashed, where, 4096)


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


def _churn(folder: Path) -> None:
    """Directory blocks logged, then freed while still in the log: the next commit carries
    revoke records for them."""
    folder.mkdir()
    for i in range(200):
        (folder / f"{i:03d}-{'x' * 200}").write_bytes(b"x")
    fd = os.open(folder, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    shutil.rmtree(folder)


def _has_revoke_records(image: Path) -> bool:
    out = run("debugfs", "-R", "logdump", image).stdout
    return journaled_bitmaps(image) and any(int(m[1]) == REVOKE for m in FOUND.finditer(out))


@pytest.mark.parametrize("fs", ["ext3", "ext4"])
def test_revoke_records_in_the_log_are_stepped_over(tmp_path, loops, fs):
    """Also once the journal's superblock records the revoke feature, as it does on disk from
    the first time a revoke record is written: the flag changes nothing in the log's layout."""
    crashed, _written = crashed_filesystem(tmp_path, loops, fs, 4096, before=_churn,
                                           crashed_enough=_has_revoke_records)
    replay = assert_read_as_debugfs_reads_it(crashed, 4096)
    _replay, _bitmaps, where = journal_of(crashed)
    with open(crashed, "r+b") as img:
        incompat = struct.unpack(">I", os.pread(img.fileno(), 4, where(0) + 0x28))[0]
        os.pwrite(img.fileno(), struct.pack(">I", incompat | INCOMPAT_REVOKE), where(0) + 0x28)
    assert journal_of(crashed)[0] == replay


def test_a_block_mapped_journal_inode_with_other_flags_is_still_block_mapped(tmp_path, loops):
    """ext3's journal is mapped by direct and indirect blocks; an inode flag other than
    'extents' (here secure deletion, 0x1) must not make it read as an extent tree."""
    crashed, _written = crashed_filesystem(tmp_path, loops, "ext3", 4096)
    replay, _bitmaps, _where = journal_of(crashed)
    _geo, _descs, at, _inode = journal_inode_of(crashed)
    flags_at = at + 0x20
    with open(crashed, "r+b") as img:
        flags = struct.unpack("<I", os.pread(img.fileno(), 4, flags_at))[0]
        assert not flags & 0x80000                      # not an extent-mapped inode
        os.pwrite(img.fileno(), struct.pack("<I", flags | 0x1), flags_at)
    assert journal_of(crashed)[0] == replay


def test_full_descriptor_blocks_whose_first_block_is_escaped(tmp_path, loops):
    """data=journal logs a file's blocks: 600 of them fill descriptor blocks as full as jbd2
    makes them, and each begins with the magic number, so a descriptor's first tag (the one followed by
    the journal's UUID) is an escaped block too."""
    blocks = [MAGIC + os.urandom(4092) for _ in range(600)]
    crashed = journaled_file(tmp_path, loops, blocks)
    tags = [int(m[1]) for m in LOGGED.finditer(run("debugfs", "-R", "logdump -a", crashed).stdout)]
    assert len(tags) > 2 * 254                         # at least two descriptor blocks full
    replay = assert_read_as_debugfs_reads_it(crashed, 4096)
    assert set(blocks) <= set(replay.values())


@pytest.mark.parametrize("field,value,why", [
    (0xC, lambda sb: 1024, "geometry does not fit"),                    # block size
    (0x10, lambda sb: sb["length"] + 1, "geometry does not fit"),      # log longer than its file
    (0x14, lambda sb: 0, "geometry does not fit"),                      # first log block 0
    (0x14, lambda sb: sb["maxlen"], "geometry does not fit"),          # first log block past the log
    (0x1C, lambda sb: sb["maxlen"], "log start lies outside"),          # start past the log
])
def test_a_journal_superblock_that_contradicts_itself_keeps_the_whole_filesystem(tmp_path, loops, field, value, why):
    crashed, _written = crashed_filesystem(tmp_path, loops, "ext4", 4096)
    _replay, _bitmaps, where = journal_of(crashed)
    with open(crashed, "r+b") as img:
        head = os.pread(img.fileno(), 4096, where(0))
        maxlen = struct.unpack_from(">I", head, 0x10)[0]
        length = ext_journal_blocks(crashed)
        os.pwrite(img.fileno(), struct.pack(">I", value({"maxlen": maxlen, "length": length})), where(0) + field)
    assert_kept_whole(crashed, f"the journal's superblock is damaged (its {why}" if "log" in why
                      else "the journal's superblock is damaged (its geometry")


def ext_journal_blocks(image: Path) -> int:
    """The journal file's length in blocks, from its inode."""
    geo, _descs, _at, inode = journal_inode_of(image)
    return (struct.unpack_from("<I", inode, 0x4)[0] | struct.unpack_from("<I", inode, 0x6C)[0] << 32) // geo.block_size


def test_a_journal_inode_larger_than_any_journal_keeps_the_whole_filesystem(tmp_path, loops):
    """mke2fs makes journals of at most 10,240,000 blocks: an inode claiming one more is damage."""
    crashed, _written = crashed_filesystem(tmp_path, loops, "ext4", 4096)
    geo, _descs, at, _inode = journal_inode_of(crashed)
    size = (10_240_000 + 1) * geo.block_size
    with open(crashed, "r+b") as img:
        os.pwrite(img.fileno(), struct.pack("<I", size & 0xFFFFFFFF), at + 0x4)
        os.pwrite(img.fileno(), struct.pack("<I", size >> 32), at + 0x6C)
    assert_kept_whole(crashed, "the journal's inode is damaged (a size of 10240001 blocks)")


def test_a_log_that_wraps_past_the_journals_end_is_followed(tmp_path, loops):
    """The log is circular: moved so that it starts three blocks before the journal's end, it
    goes on at the journal's first log block, and must read the same. Right after it lies an
    older transaction, whole and with its commit (as an earlier pass of the log leaves them):
    its sequence number ends the log there."""
    crashed, _written = crashed_filesystem(tmp_path, loops, "ext4", 4096)
    replay, _bitmaps, where = journal_of(crashed)
    commits = [int(m[1]) for m in COMMIT_AT.finditer(run("debugfs", "-R", "logdump", crashed).stdout)]
    with open(crashed, "r+b") as img:
        sb = bytearray(os.pread(img.fileno(), 4096, where(0)))
        maxlen, first, _sequence, start = struct.unpack_from(">IIII", sb, 0x10)
        assert start < commits[0] < commits[-1] < maxlen - 3
        live = [os.pread(img.fileno(), 4096, where(n)) for n in range(start, commits[-1] + 1)]
        oldest = live[: commits[0] - start + 1]
        new_start = maxlen - 3
        order = list(range(new_start, maxlen)) + list(range(first, new_start))
        for n, data in zip(order, live + oldest):
            os.pwrite(img.fileno(), data, where(n))
        struct.pack_into(">I", sb, 0x1C, new_start)
        os.pwrite(img.fileno(), sb, where(0))
    again, _bitmaps, _where = journal_of(crashed)
    assert again == replay == replay_by_debugfs(crashed, where, 4096)


def test_the_high_half_of_a_logged_block_number_is_read(tmp_path, loops):
    """64-bit filesystems log block numbers in two 32-bit halves: a tag whose high half is set
    (a block beyond 16 TiB, written here into a real journal's first tag) names that block.
    (debugfs's logdump prints only the low half, so the log is compared with itself.)"""
    crashed, _written = crashed_filesystem(tmp_path, loops, "ext4", 4096)
    replay, _bitmaps, where = journal_of(crashed)
    out = run("debugfs", "-R", "logdump -a", crashed).stdout
    first_tag = LOGGED.search(out)
    descriptor = int(re.search(r"type 1 \(descriptor block\) at block (\d+)", out)[1])
    with open(crashed, "r+b") as img:
        os.pwrite(img.fileno(), struct.pack(">I", 1), where(descriptor) + 12 + 8)   # tag 0's high half
    again, _bitmaps, _where = journal_of(crashed)
    far = 1 << 32 | int(first_tag[1])
    assert set(again) - set(replay) == {far}
    with open(crashed, "rb") as img:
        assert again[far] == os.pread(img.fileno(), 4096, where(int(first_tag[2])))
    assert {k: again[k] for k in replay} == replay
