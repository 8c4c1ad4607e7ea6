"""Builders of real filesystem images for tests, and readers that prove a restore.

Builders prefill the image with random bytes before mkfs, so free space holds garbage: a
used-block map that copies free space shows up as a large image, and one that misses used
blocks shows up as a damaged copy. Everything works on plain files without root, except
populating NTFS (ntfs-3g FUSE mount as root; without root only top-level files, by ntfscp)
and reading NTFS trees (ntfs-3g read-only mount, root).

Tree readers return {relative path: value}: "sha256:<hex>" for a regular file,
"-> <target>" for a symlink, "dir" for a directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import random
import subprocess
import tempfile
from pathlib import Path

MiB = 1024 * 1024

# Names the filesystem makes itself, never part of the tree that was put in.
FS_OWN_NAMES = {"lost+found", "System Volume Information", "$RECYCLE.BIN"}


def _run(*cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    proc = subprocess.run([str(c) for c in cmd], **kw)
    if proc.returncode != 0 and kw.get("check", True):
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


# ---------------------------------------------------------------- the content tree

def make_tree(root, seed: int = 0) -> Path:
    """Write a known tree of about 10 MiB: random big file, many small files, text, a sparse
    file, a hard link, a symlink, nested and empty directories, a non-ASCII name."""
    root = Path(root)
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "big.bin").write_bytes(rng.randbytes(4 * MiB + 12345))
    small = root / "small"
    small.mkdir(exist_ok=True)
    for i in range(300):
        (small / f"file{i:03d}.dat").write_bytes(rng.randbytes(rng.randrange(0, 6000)))
    (root / "readme.txt").write_text("Lifeboat test tree.\n" * 200, encoding="utf-8")
    with open(root / "sparse.img", "wb") as f:
        # Data, a hole, data: 3 MiB apparent, ~128 KiB real on filesystems with holes.
        f.write(rng.randbytes(64 * 1024))
        f.seek(3 * MiB - 64 * 1024)
        f.write(rng.randbytes(64 * 1024))
    deep = root / "one" / "two" / "three" / "four"
    deep.mkdir(parents=True, exist_ok=True)
    (deep / "deep.txt").write_text("four levels down\n", encoding="utf-8")
    (root / "one" / "two" / "mid.bin").write_bytes(rng.randbytes(300_000))
    (root / "empty-dir").mkdir(exist_ok=True)
    (root / "empty-file").write_bytes(b"")
    (root / "Résumé – ünïcødé ✓.txt").write_text("non-ASCII name\n", encoding="utf-8")
    hard = root / "hardlink.dat"
    if not hard.exists():
        os.link(small / "file007.dat", hard)
    sym = root / "link-to-readme"
    if not sym.is_symlink():
        os.symlink("readme.txt", sym)
    return root


def tree_hashes(root, follow_symlinks: bool = False) -> dict[str, str]:
    """The reader's format for a directory on the host (the tree put into an image)."""
    root = Path(root)
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d not in FS_OWN_NAMES]
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(rel_dir / name) if rel_dir != Path(".") else name
            if path.is_symlink() and not follow_symlinks:
                out[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = "sha256:" + _sha256(path)
    return out


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


def fill_garbage(path, size: int, seed: int = 1) -> None:
    """Make `path` exactly `size` bytes of random data (what free space looks like on an old disk)."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(rng.randbytes(n))
            left -= n


def _blank(path, size: int, garbage: bool) -> None:
    if garbage:
        fill_garbage(path, size)
    else:
        with open(path, "wb") as f:
            f.truncate(size)


# ---------------------------------------------------------------- builders

def make_ext4(path, size: int, tree_dir=None, garbage: bool = True, block_size: int = 4096,
              label: str = "lifeboat-ext4", fs: str = "ext4", extra: tuple[str, ...] = ()) -> Path:
    """An ext2/3/4 image populated from tree_dir (mke2fs -d), free space full of garbage."""
    path = Path(path)
    _blank(path, size, garbage)
    cmd = [f"mkfs.{fs}", "-q", "-F", "-E", "nodiscard", "-b", str(block_size), "-L", label, *extra]
    if tree_dir is not None:
        cmd += ["-d", str(tree_dir)]
    _run(*cmd, path)
    return path


def make_vfat(path, size: int, tree_dir=None, garbage: bool = True, fat: int = 32,
              label: str = "LIFEBOAT", cluster_sectors: int | None = None, sector_size: int = 512) -> Path:
    """A FAT12/16/32 image (mkfs.vfat), tree copied in with mcopy; symlinks are followed
    (FAT has none) and hard links become two files."""
    path = Path(path)
    _blank(path, size, garbage)
    cmd = ["mkfs.vfat", "-F", str(fat), "-n", label]
    if cluster_sectors:
        cmd += ["-s", str(cluster_sectors)]
    if sector_size != 512:
        cmd += ["-S", str(sector_size)]
    _run(*cmd, path)
    if tree_dir is not None:
        entries = sorted(Path(tree_dir).iterdir())
        if entries:
            _run("mcopy", "-s", "-p", "-Q", "-i", path, *entries, "::/", env=_mtools_env())
    return path


def make_ntfs(path, size: int, tree_dir=None, garbage: bool = True, label: str = "LifeboatNTFS",
              mount: bool | None = None) -> Path:
    """An NTFS image (mkntfs -Q), tree copied in through an ntfs-3g mount (root; the default
    when root) or with mount=False the top-level regular files through ntfscp (no root)."""
    path = Path(path)
    _blank(path, size, garbage)
    _run("mkntfs", "-F", "-Q", "-q", "-L", label, path)
    if tree_dir is None:
        return path
    if mount is None:
        mount = os.geteuid() == 0
    if mount:
        with ntfs_mounted(path, read_only=False) as mnt:
            _run("cp", "-a", f"{tree_dir}/.", str(mnt))
    else:
        for entry in sorted(Path(tree_dir).iterdir()):
            if entry.is_file() and not entry.is_symlink():
                _run("ntfscp", "-f", path, entry, entry.name)
    return path


def make_swap(path, size: int, label: str = "lifeboat-swap", garbage: bool = True) -> Path:
    path = Path(path)
    _blank(path, size, garbage)
    _run("mkswap", "-L", label, path)
    return path


# ---------------------------------------------------------------- readers

@contextlib.contextmanager
def region(image, offset: int = 0, size: int | None = None):
    """The image itself when offset is 0 and size whole, else a temporary copy of the region
    (for tools that cannot take an offset)."""
    image = Path(image)
    if offset == 0 and (size is None or size == image.stat().st_size):
        yield image
        return
    if size is None:
        size = image.stat().st_size - offset
    with tempfile.TemporaryDirectory(prefix="lifeboat-region-") as tmp:
        copy = Path(tmp) / "region.img"
        with open(image, "rb") as src, open(copy, "wb") as dst:
            src.seek(offset)
            left = size
            while left:
                block = src.read(min(left, 4 * MiB))
                if not block:
                    break
                dst.write(block)
                left -= len(block)
        yield copy


def ext_tree(image, offset: int = 0, size: int | None = None) -> dict[str, str]:
    with region(image, offset, size) as img, tempfile.TemporaryDirectory(prefix="lifeboat-rdump-") as out:
        proc = _run("debugfs", "-R", f"rdump / {out}", img)
        # debugfs exits 0 whatever a command met, and reports on stderr below its version line:
        # any such report (an unreadable inode, a bad block map) is a failure, whatever its words.
        said = [line for line in proc.stderr.splitlines() if line.strip() and not DEBUGFS_BANNER.match(line)]
        if said:
            raise AssertionError("debugfs rdump: " + "; ".join(said))
        return tree_hashes(out)


DEBUGFS_BANNER = re.compile(r"^debugfs \d+\.\d+(\.\d+)?(-\S+)? \(\d+-\w+-\d+\)$")


def _mtools_env() -> dict:
    env = dict(os.environ)
    env["MTOOLS_SKIP_CHECK"] = "1"
    env.setdefault("LC_ALL", "C.UTF-8")
    return env


def vfat_tree(image, offset: int = 0, size: int | None = None) -> dict[str, str]:
    """mtools reads at an offset itself (image@@offset); the size comes from the boot sector."""
    with tempfile.TemporaryDirectory(prefix="lifeboat-mcopy-") as out:
        spec = f"{image}@@{offset}" if offset else str(image)
        listing = _run("mdir", "-i", spec, "-b", "::/", env=_mtools_env()).stdout.split()
        if listing:
            _run("mcopy", "-s", "-n", "-i", spec, "::/*", out, env=_mtools_env())
        return tree_hashes(out)


@contextlib.contextmanager
def ntfs_mounted(image, read_only: bool = True, offset: int = 0, size: int | None = None):
    """Mount an NTFS image with ntfs-3g (FUSE, root) for the duration of the block (a region
    at an offset is mounted from a temporary copy, so writes then do not reach `image`)."""
    with region(image, offset, size) as img, tempfile.TemporaryDirectory(prefix="lifeboat-ntfs-") as mnt:
        opts = "ro" if read_only else "rw"
        _run("ntfs-3g", "-o", opts, img, mnt)
        try:
            yield Path(mnt)
        finally:
            _run("fusermount", "-u", mnt, check=False)
            if os.path.ismount(mnt):
                _run("umount", mnt, check=False)


def ntfs_tree(image, offset: int = 0, size: int | None = None) -> dict[str, str]:
    with ntfs_mounted(image, read_only=True, offset=offset, size=size) as mnt:
        return tree_hashes(mnt)


def fsck_clean(fs: str, image, offset: int = 0, size: int | None = None) -> bool:
    """True only when the filesystem's own checker finds nothing to fix (read-only check)."""
    with region(image, offset, size) as img:
        if fs in ("ext2", "ext3", "ext4", "ext"):
            return _run("e2fsck", "-fn", img, check=False).returncode == 0
        if fs in ("vfat", "fat", "fat12", "fat16", "fat32"):
            proc = _run("fsck.vfat", "-n", img, check=False)
            return proc.returncode == 0
        if fs == "ntfs":
            # ntfsfix -n exits 1 when $MFT and $MFTMirr differ, the boot sectors disagree or the
            # volume will not open; ntfsinfo -m exits 1 when ntfs-3g's library cannot open the
            # volume (-f: a volume ntfsresize left scheduled for Windows' chkdsk, as it always
            # does, still counts as clean). Files are compared apart.
            return (_run("ntfsfix", "-n", img, check=False).returncode == 0
                    and _run("ntfsinfo", "-f", "-m", img, check=False).returncode == 0)
        raise ValueError(f"no checker for {fs}")


def copy_ranges(image, ranges, out, offset: int = 0, size: int | None = None) -> Path:
    """Copy only `ranges` (relative to offset) of the image into a zero-filled file of the
    region's size: what a restore from a used-block map produces."""
    image, out = Path(image), Path(out)
    if size is None:
        size = image.stat().st_size - offset
    with open(image, "rb") as src, open(out, "wb") as dst:
        dst.truncate(size)
        for start, length in ranges:
            src.seek(offset + start)
            dst.seek(start)
            left = length
            while left:
                block = src.read(min(left, 4 * MiB))
                if not block:
                    break
                dst.write(block)
                left -= len(block)
    return out


def free_space_garbage(image, ranges, size: int | None = None, sample: int = 64) -> float:
    """Fraction of sampled unmapped 4 KiB blocks that are not all zero (free space really holds garbage)."""
    image = Path(image)
    if size is None:
        size = image.stat().st_size
    holes, pos = [], 0
    for start, length in sorted(ranges):
        if start > pos:
            holes.append((pos, start))
        pos = max(pos, start + length)
    if pos < size:
        holes.append((pos, size))
    blocks = [b for a, z in holes for b in range(-(-a // 4096) * 4096, z - 4095, 4096)]
    if not blocks:
        return 0.0
    rng = random.Random(7)
    picked = rng.sample(blocks, min(sample, len(blocks)))
    nonzero = 0
    with open(image, "rb") as f:
        for b in picked:
            f.seek(b)
            nonzero += any(f.read(4096))
    return nonzero / len(picked)
