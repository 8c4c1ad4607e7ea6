"""An NTFS volume whose metadata no longer fits in one MFT record each, made by ntfs-3g itself
and cached.

mkntfs + ntfs-3g (FUSE, root) on a 16 MiB volume: free space is filled with one-cluster files
and half of them deleted at random, so what is written next lands in small holes. Then:

- hiberfil.sys (1 MiB, starting with "hibr"), written in two passes over alternate clusters,
  so its data runs are many and its $FILE_NAME moves to an extension record;
- links.bin with 80 hard links of long names: its $FILE_NAMEs fill fifteen extension records;
- streams.bin with 60 named streams (ntfs-3g's user.* extended attributes), spread over dozens
  of extension records;
- Windows/ with 3000 files and System32/: the directory's $INDEX_ROOT ends up in an extension
  record, its $INDEX_ALLOCATION in many runs;
- all those MFT records make $MFT grow into the holes, so $MFT itself gets an $ATTRIBUTE_LIST
  (non-resident) and a second $DATA extent in another record.

A second volume (split_index_volume, 48 MiB): one directory of 4000 files whose
$INDEX_ALLOCATION ntfs-3g splits over two MFT records (see below).

The tests check these facts with ntfsinfo before relying on them. Built once under
build/cache/ntfs-attrlist-<recipe>-<ntfs-3g version>/ (LIFEBOAT_TEST_CACHE moves the cache);
building takes about a second.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests import fsimages

MiB = 1024 * 1024
RECIPE = "1"          # bump when the volume's recipe changes
SIZE = 16 * MiB
CLUSTER = 4096
LABEL = "Fragmented"
HIBERFIL_SIZE = 1 * MiB
LINKS = 80
STREAMS = 60
WINDOWS_FILES = 3000


def cache_root() -> Path:
    return Path(os.environ.get("LIFEBOAT_TEST_CACHE", Path(__file__).resolve().parents[1] / "build" / "cache"))


def hiberfil_bytes() -> bytes:
    return b"hibr" + random.Random(11).randbytes(HIBERFIL_SIZE - 4)


def stream_value(i: int) -> bytes:
    return bytes([i]) * 100


def stream_name(i: int) -> str:
    return f"stream{i:03d}"


def link_name(i: int) -> str:
    return f"link-{i:03d}-with-a-rather-long-name-to-fill-the-record"


def windows_name(k: int) -> str:
    return f"{k:05d}-a-long-name-to-fill-index-blocks"


def _tool_version() -> str:
    proc = subprocess.run(["mkntfs", "--version"], capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    words = [w for w in out.split() if w[:1] == "v" and w[1:2].isdigit()]
    return words[0] if words else "unknown"


def _fill(mnt: Path) -> int:
    """Fill the volume with one-cluster files under fill/ (named 0, 1, ...); returns how many."""
    (mnt / "fill").mkdir()
    count = 0
    try:
        while True:
            (mnt / "fill" / str(count)).write_bytes(b"y" * CLUSTER)
            count += 1
    except OSError:
        return count              # the volume is full


def _populate(mnt: Path) -> None:
    rng = random.Random(7)
    count = _fill(mnt)
    for i in range(count):
        if rng.random() < 0.5:
            (mnt / "fill" / str(i)).unlink()
    data = hiberfil_bytes()
    fd = os.open(mnt / "hiberfil.sys", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, len(data))
        for first in (0, 1):          # even clusters, then odd ones: each pass finds new holes
            for c in range(first, len(data) // CLUSTER, 2):
                os.pwrite(fd, data[c * CLUSTER:(c + 1) * CLUSTER], c * CLUSTER)
            os.fsync(fd)
    finally:
        os.close(fd)
    (mnt / "links.bin").write_bytes(b"linked file\n")
    for i in range(LINKS):
        os.link(mnt / "links.bin", mnt / link_name(i))
    (mnt / "streams.bin").write_bytes(b"main stream\n")
    for i in range(STREAMS):
        os.setxattr(mnt / "streams.bin", f"user.{stream_name(i)}", stream_value(i))
    (mnt / "Windows").mkdir()
    for k in range(WINDOWS_FILES):
        (mnt / "Windows" / windows_name(k)).touch()
    (mnt / "Windows" / "System32").mkdir()


def fragmented_volume() -> Path:
    """The cached image (never write to it: copy it first)."""
    return _cached(f"ntfs-attrlist-{RECIPE}-{_tool_version()}", SIZE, LABEL, _populate)

# A second volume: one directory whose $INDEX_ALLOCATION is split over two MFT records. Every
# other cluster of a full volume is freed, so each new index block is a run of its own; 4000
# files with 246-character names need ~1300 blocks, more runs than the base record holds, and
# ntfs-3g then moves the rest of the run list into an extent in an extension record.
SPLIT_RECIPE = "1"
SPLIT_SIZE = 48 * MiB
SPLIT_FILES = 4000


def split_name(k: int) -> str:
    return f"{k:05d}-" + "n" * 240


def _populate_split(mnt: Path) -> None:
    count = _fill(mnt)
    for i in range(0, count, 2):
        (mnt / "fill" / str(i)).unlink()
    (mnt / "Big").mkdir()
    for k in range(SPLIT_FILES):
        (mnt / "Big" / split_name(k)).touch()


def split_index_volume() -> Path:
    """The cached image (never write to it: copy it first); about 8 s to build."""
    return _cached(f"ntfs-splitindex-{SPLIT_RECIPE}-{_tool_version()}", SPLIT_SIZE, "SplitIndex", _populate_split)


def _cached(name: str, size: int, label: str, populate) -> Path:
    folder = cache_root() / name
    image = folder / "fs.img"
    if image.exists():
        return image
    cache_root().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_root()))
    try:
        built = fsimages.make_ntfs(work / "fs.img", size, label=label)
        with fsimages.ntfs_mounted(built, read_only=False) as mnt:
            populate(mnt)
        try:
            os.rename(work, folder)       # atomic: another run building at once keeps its own
        except OSError:
            if not image.exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return image
