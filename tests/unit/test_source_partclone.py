"""Bare partclone images made by Debian's partclone (format 0002 with its checksum settings) and
by partclone 0.2.89 (format 0001, tests/data/partclone-0001), compressed by the real tools and
split by split(1): the reader's bytes for every used range equal the filesystem's, its used
map covers every block the filesystem uses, random reads agree, and damage is named."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import zstandard

from recovery.errors import DamageError
from recovery.fs import pread_reader, probe_partition
from recovery.sources import compressed, partclone
from tests import fsimages as fi

MiB = 1024 * 1024
DATA = Path(__file__).resolve().parents[1] / "data" / "partclone-0001"

pytestmark = pytest.mark.skipif(shutil.which("partclone.ext4") is None, reason="needs partclone")


def _run(*cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, **kw)


@pytest.fixture(scope="module")
def filesystems(tmp_path_factory):
    """An ext4 (1 KiB blocks: many checksum groups) and an NTFS, each full of files."""
    work = tmp_path_factory.mktemp("pcfs")
    tree = fi.make_tree(work / "tree")
    ext4 = fi.make_ext4(work / "ext4.img", 24 * MiB, tree, block_size=1024, label="pc-ext4")
    ntfs = fi.make_ntfs(work / "ntfs.img", 24 * MiB, tree, label="pc-ntfs", mount=False)
    return {"ext4": ext4, "ntfs": ntfs, "work": work}


def _clone(fs: str, source: Path, out: Path, *options) -> Path:
    # -L: partclone logs to /var/log/partclone.log unless told where; the suite leaves the host alone
    _run(f"partclone.{fs}", "-q", "-c", *options, "-L", f"{out}.log", "-s", source, "-O", out)
    return out


def _used_covered(used, fs_used) -> bool:
    blocks = set()
    for off, n in used:
        blocks.update(range(off // 512, (off + n) // 512))
    return all(s in blocks for off, n in fs_used for s in range(off // 512, (off + n + 511) // 512))


def check_image(image_path: Path, original: Path, fs_used=None) -> partclone.PartcloneSource:
    source = partclone.open(str(image_path))
    assert source is not None
    data = original.read_bytes()
    part = source.partitions[0]
    assert part.size == len(data)
    total = 0
    for offset, chunk in source.extents(0):
        assert data[offset:offset + len(chunk)] == chunk, f"bytes at {offset} differ"
        total += len(chunk)
    reader = source.reader(0)
    used = reader.used_ranges()
    assert total == part.used_bytes == sum(n for _, n in used) > 0
    if fs_used is not None:
        assert _used_covered(used, fs_used)
    rng = random.Random(1)
    for _ in range(40):
        off, n = used[rng.randrange(len(used))]
        at = off + rng.randrange(n)
        length = min(rng.randrange(1, 300_000), off + n - at)
        assert reader.read(at, length) == data[at:at + length]
    assert source.prove() == []
    return source


@pytest.mark.parametrize("options", [(), ("-a0",), ("-a1", "-k7"), ("-a1", "-k7", "-K")],
                         ids=["default", "no-checksum", "every-7-blocks", "no-reseed"])
def test_format_0002_checksum_settings(filesystems, tmp_path, options):
    original = filesystems["ext4"]
    image = _clone("ext4", original, tmp_path / "ext4.ptcl-img", *options)
    fs_map = probe_partition(pread_reader(os.open(original, os.O_RDONLY)), original.stat().st_size)
    with check_image(image, original, fs_map.used) as source:
        header = source.image.header
        assert header.version == 2
        if options == ("-a0",):
            assert not header.checksums
        elif options:
            assert header.blocks_per_checksum == 7 and header.reseed == ("-K" not in options)
        assert source.partitions[0].fs == "ext4" and source.partitions[0].label == "pc-ext4"


def test_ntfs_keeps_its_backup_boot_sector(filesystems, tmp_path):
    original = filesystems["ntfs"]
    image = _clone("ntfs", original, tmp_path / "ntfs.ptcl-img")
    data = original.read_bytes()
    with check_image(image, original) as source:
        at, sector = source.image.tail
        assert data[at:at + len(sector)] == sector == data[:len(sector)]
        assert at >= source.image.header.total_blocks * source.image.header.block_size


COMPRESSORS = {
    "gzip": ["pigz", "-c"],
    "zstd": ["zstd", "-q", "-T2", "-c"],
    "xz": ["xz", "-T2", "-1", "-c"],                 # low levels: the reader is tested, not the packer
    "bzip2": ["lbzip2", "-1", "-c"],
    "lz4": ["lz4", "-q", "-c"],
    "lzop": ["lzop", "-c"],
    "lzma": ["lzma", "-1", "-c"],
}


@pytest.mark.parametrize("kind", list(COMPRESSORS))
def test_compressed_and_split(filesystems, tmp_path, kind):
    original = filesystems["ext4"]
    image = _clone("ext4", original, tmp_path / "plain")
    ending = {"gzip": "gz", "bzip2": "bz2", "lzop": "lzo", "zstd": "zst"}.get(kind, kind)
    packed = tmp_path / f"sda1.ext4-ptcl-img.{ending}"
    with open(image, "rb") as src, open(packed, "wb") as out:
        subprocess.run(COMPRESSORS[kind], stdin=src, stdout=out, check=True)
    with check_image(packed, original) as source:
        assert source.image.compression == kind
    _run("split", "-b", "1M", packed, f"{packed}.")
    packed.unlink()
    assert (tmp_path / f"{packed.name}.ab").exists()
    with check_image(Path(f"{packed}.aa"), original) as source:
        assert len(source.image.pieces) >= 2
    # the last piece cut short: one plain line naming it, from the check (or, when nothing at
    # all can be decoded, as lz4's single 4 MiB block cannot, from opening)
    last = sorted(tmp_path.glob(f"{packed.name}.*"))[-1]
    os.truncate(last, last.stat().st_size // 2)
    try:
        with partclone.open(f"{packed}.aa") as source:
            why = [d.why for d in source.prove()]
    except DamageError as exc:
        why = [exc.message]
    assert len(why) == 1 and why[0].startswith(f"{last.name} ends early: the image is cut short")


def test_format_0001_from_partclone_0_2_89(tmp_path):
    original = tmp_path / "fat.img"
    original.write_bytes(zstandard.ZstdDecompressor().decompress(
        (DATA / "fat.img.zst").read_bytes(), max_output_size=64 * MiB))
    fs_map = probe_partition(pread_reader(os.open(original, os.O_RDONLY)), original.stat().st_size)
    for image in (DATA / "fat.0001-ptcl-img.zst",):
        with check_image(image, original, fs_map.used) as source:
            h = source.image.header
            assert (h.version, h.bitmap_mode, h.blocks_per_checksum) == (1, partclone.BM_BYTE, 1)
            assert source.partitions[0].label == "V1TEST"
    # uncompressed too (read in place, each block's CRC checked on random reads)
    plain = tmp_path / "fat.0001-ptcl-img"
    plain.write_bytes(zstandard.ZstdDecompressor().decompress(
        (DATA / "fat.0001-ptcl-img.zst").read_bytes(), max_output_size=64 * MiB))
    check_image(plain, original, fs_map.used).close()
    # a changed first byte of a block is what the 0001 CRC can see
    data_offset = partclone.PartcloneImage(str(plain)).data_offset
    assert data_offset == partclone.V1_HEADER.size + 12 * MiB // 512 + len(partclone.BIT_MAGIC)
    with open(plain, "r+b") as f:
        at = data_offset + 1000 * (512 + 4)
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 1]))
    with partclone.open(str(plain)) as source:
        damage = source.prove()
    assert [d.why for d in damage] == ["fat.0001-ptcl-img: partclone checksum mismatch at used block 1000 "
                                       "(the image is damaged)"]


def test_missing_piece_truncation_and_checksum_are_named(filesystems, tmp_path):
    original = filesystems["ext4"]
    image = _clone("ext4", original, tmp_path / "plain")
    packed = tmp_path / "sda2.ext4-ptcl-img.zst"
    with open(image, "rb") as src, open(packed, "wb") as out:
        subprocess.run(["zstd", "-q", "-c"], stdin=src, stdout=out, check=True)
    _run("split", "-b", "1M", packed, f"{packed}.")
    packed.unlink()
    pieces = sorted(p.name for p in tmp_path.glob("sda2.ext4-ptcl-img.zst.*"))
    assert len(pieces) >= 3

    middle = tmp_path / pieces[1]
    saved = middle.read_bytes()
    middle.unlink()
    with pytest.raises(DamageError) as exc:
        partclone.open(str(tmp_path / pieces[0]))
    assert str(exc.value) == f"piece {pieces[1]} is missing"
    middle.write_bytes(saved)

    last = tmp_path / pieces[-1]
    whole = last.read_bytes()
    last.write_bytes(whole[: len(whole) // 2])
    with partclone.open(str(tmp_path / pieces[0])) as source:
        damage = source.prove()
    assert len(damage) == 1 and damage[0].why.startswith(f"{pieces[-1]} ends early")
    last.write_bytes(whole)

    # a changed byte in the uncompressed image: partclone's own CRC32 names it
    with open(image, "r+b") as f:
        f.seek(3 * MiB)
        byte = f.read(1)
        f.seek(3 * MiB)
        f.write(bytes([byte[0] ^ 0xFF]))
    with partclone.open(str(image)) as source:
        damage = source.prove()
        assert len(damage) == 1 and damage[0].why.startswith("plain: partclone checksum mismatch at used block")
        reader = source.reader(0)
        with pytest.raises(DamageError):
            for off, n in reader.used_ranges():
                reader.read(off, n)


def test_partclone_fat12_map_that_misses_clusters_is_named(tmp_path):
    """partclone's FAT12 map leaves out clusters the files use (seen with 0.2.89 and 0.3.23):
    the image itself is intact, but what it holds cannot give the files back whole."""
    tree = tmp_path / "t"
    tree.mkdir()
    for i in range(8):
        (tree / f"f{i}.txt").write_text("".join(f"file {i} line {j}\n" for j in range(1000 * (i + 1))))
    fs = tmp_path / "fat12.img"
    fs.write_bytes(bytes(2 * MiB))
    _run("mkfs.vfat", "-F", "12", fs)
    _run("mcopy", "-i", fs, *sorted(tree.iterdir()), "::/")
    image = _clone("fat", fs, tmp_path / "fat12.ptcl-img")
    fs_map = probe_partition(pread_reader(os.open(fs, os.O_RDONLY)), 2 * MiB)
    with partclone.open(str(image)) as source:
        missing = source.image.missing_fat_clusters()
        assert missing > 0 and not _used_covered(source.reader(0).used_ranges(), fs_map.used)
        assert [d.why for d in source.prove()] == [
            f"fat12.ptcl-img leaves out {missing} bytes its FAT12 file system uses (partclone's map "
            "of it is faulty): files there cannot be restored whole"]


def test_not_partclone(tmp_path):
    other = tmp_path / "x.img"
    other.write_bytes(b"\0" * 4096)
    assert partclone.open(str(other)) is None
    assert partclone.open(str(tmp_path)) is None
    assert partclone.open(str(tmp_path / "absent.img")) is None


def test_split_suffix_order():
    suffixes = list(zip(range(700), compressed.split_suffixes()))
    names = [s for _, s in suffixes]
    assert names[:3] == ["aa", "ab", "ac"] and names[649] == "yz" and names[650] == "zaaa"
    assert names == sorted(names)
