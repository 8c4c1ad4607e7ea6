"""Clonezilla image folders made by Clonezilla itself, cached.

`ocs-sr savedisk` runs non-interactively (batch mode, partclone, no fsck, no encryption, no
restorability check, MD5SUMS and SHA1SUMS) on a loop device of a small real disk: a GPT UEFI
Linux PC (FAT32 ESP, ext4, NTFS data, swap), a Windows-shaped GPT disk (FAT32 ESP, MSR, NTFS,
recovery NTFS) and a BIOS-era MBR disk with logical partitions. Each disk is built once and
saved once in each compression a test reads it in (COMPRESSION_SUFFIX: every compression
ocs-sr offers, each on one disk); both are kept under build/cache/clonezilla, keyed by this
module's recipe and the Debian versions of clonezilla and partclone, so the suite pays once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

from tests import diskimages as di
from tests import fsimages as fi
from tests.integration import engine_fixtures as ef
from tests.own_mounts import DROP_COPIED_MOUNTS

MiB = 1024 * 1024
RECIPE = "2"        # bump when a disk or the ocs-sr command changes
IMAGE_NAME = "2025-03-02-10-img"      # ocs-sr's own naming: date, hour, "-img"

# ocs-sr's options for each compression (ocs-sr -h): -z1p pigz, -z2p lbzip2, -z3 lzop, -z4 lzma,
# -z5p xz -T0, -z8 lz4, -z9p zstdmt, -z0 none; -i 4 splits into 4 MB pieces.
VARIANTS = {
    "zstd-split": ["-z9p", "-i", "4"],
    "xz-split": ["-z5p", "-i", "4"],
    "gzip": ["-z1p"],
    "bzip2": ["-z2p"],
    "lzop": ["-z3"],
    "none": ["-z0"],
}
# `ocs-sr saveparts` of some partitions only (no `disk` list; the table is saved all the same).
SAVEPARTS = {"saveparts-lz4": (["-z8"], (1, 2, 4))}
TWO_DISKS_FLAGS = ["-z4"]
# Every compression ocs-sr offers is read back from one real save, each on the image a test
# needs anyway (a save costs ~30 s of CPU, nearly all of it ocs-sr's own shell work, so one
# image per compression of one disk would cost CI minutes for nothing more):
#   zstd, xz (split into pieces), none: the Linux disk      gzip: the MBR disk
#   bzip2: the Windows-shaped disk      lzop: the Linux disk a day later
#   lz4: the partitions-only save       lzma: the save of two disks at once
# (xz unsplit reads as split xz does, from one piece.)
COMPRESSION_SUFFIX = {"zstd-split": ".zst", "xz-split": ".xz", "gzip": ".gz", "bzip2": ".bz2",
                      "lzop": ".lzo", "none": ".uncomp", "saveparts-lz4": ".lz4", "two-disks": ".lzma"}
COMMON = ["-b", "-q2", "-j2", "-gm", "-gs", "-sfsck", "-senc", "-scs", "-nogui", "-p", "true"]


# Stand-ins ocs-sr finds first on its PATH. Its shell `sleep`s are pauses for a person
# watching the screen; it asks dmidecode for the same machine facts 23 times a save, 0.3 s
# each here; and partclone's progress thread sleeps 2 s between updates and is waited for at
# the end of every partition (bench/partclone_quick_progress.c, preloaded, makes that 20 ms).
# Together over 10 s of every save; the partition images of a save with and without them
# decompress to identical bytes, and dmidecode's answers are the real ones, kept.
# ocs-get-dev-info is asked ~80 times a save, each call sourcing Clonezilla's 16,000 lines of
# shell functions (0.2 CPU s): 52 distinct questions about devices the save never changes, so
# the real tool's answer (and exit status) to each is kept for the rest of that save only
# (measured on the Linux disk: 24 CPU s a save without, 14 with; identical partition images).
OCS_SHIMS = {
    "ocs-get-dev-info": ("#!/bin/sh\n"
                         "kept=\"$OCS_DEV_INFO_KEPT/$(echo \"$*\" | tr -c 'A-Za-z0-9-' _)\"\n"
                         "if [ ! -f \"$kept\" ]; then\n"
                         "    /usr/sbin/ocs-get-dev-info \"$@\" > \"$kept.$$\"\n"
                         "    echo $? > \"$kept.status\"\n"
                         "    mv \"$kept.$$\" \"$kept\"\n"
                         "fi\n"
                         "cat \"$kept\"\n"
                         "exit \"$(cat \"$kept.status\")\"\n"),
    "sleep": "#!/bin/sh\nexit 0\n",
    "dmidecode": ("#!/bin/sh\n"
                  "kept=\"$(dirname \"$0\")/dmidecode-$(echo \"$*\" | tr -c 'A-Za-z0-9-' _)\"\n"
                  "[ -f \"$kept\" ] || { /usr/sbin/dmidecode \"$@\" > \"$kept.$$\" 2>/dev/null; mv \"$kept.$$\" \"$kept\"; }\n"
                  "cat \"$kept\"\n"),
}


def _ocs_env(run_dir: Path) -> dict:
    """The environment one save by ocs-sr runs in (its own folder `run_dir`), with OCS_SHIMS
    first on its PATH."""
    kept = run_dir / "dev-info"
    kept.mkdir()
    shims = cache_root() / "ocs-shims"
    shims.mkdir(exist_ok=True)
    for name, text in OCS_SHIMS.items():
        if not (shims / name).exists() or (shims / name).read_text() != text:
            tmp = shims / f"{name}.tmp"
            tmp.write_text(text)
            tmp.chmod(0o755)
            tmp.rename(shims / name)
    quick = shims / "quick_progress.so"
    if not quick.exists():
        source = Path(__file__).resolve().parents[1] / "bench" / "partclone_quick_progress.c"
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", f"{quick}.tmp", str(source)], check=True)
        os.rename(f"{quick}.tmp", quick)
    return {**os.environ, "PATH": f"{shims}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
            "LD_PRELOAD": str(quick), "OCS_DEV_INFO_KEPT": str(kept)}


def run_ocs(cmd: list[str], run_dir: Path, timeout: int) -> subprocess.CompletedProcess:
    """One save by ocs-sr (`cmd`), in a mount namespace of its own whose /var is an overlay
    with its upper layer in `run_dir`: ocs-sr writes its logs to /var/log (renaming every older
    clonezilla.log.N each save) and its state to /var/lib/clonezilla, paths its config sets
    and its scripts repeat, and none of that may change this machine. What it leaves in /tmp
    (a partition-table file of mktemp's, its device cache folder when it made one) is removed
    after it; saves run one at a time (under _locked), so nothing else made those."""
    upper, work = run_dir / "var-upper", run_dir / "var-work"
    upper.mkdir()
    work.mkdir()
    tables_before = set(Path("/tmp").glob("parttable-ocs.*"))
    cache = Path("/tmp/ocs-cache")
    cache_before = cache.exists()
    script = (DROP_COPIED_MOUNTS + f"mount -t overlay lifeboat-ocs -o lowerdir=/var,upperdir={upper},"
              f'workdir={work} /var && exec "$@"')
    try:
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "ocs", *cmd],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, env=_ocs_env(run_dir),
                              timeout=timeout)
    finally:
        for table in set(Path("/tmp").glob("parttable-ocs.*")) - tables_before:
            table.unlink(missing_ok=True)
        if not cache_before:
            shutil.rmtree(cache, ignore_errors=True)


def cache_root() -> Path:
    base = Path(os.environ.get("LIFEBOAT_TEST_CACHE", Path(__file__).resolve().parents[1] / "build" / "cache"))
    path = base / "clonezilla"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _versions() -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Package}=${Version} ", "clonezilla", "partclone",
                          "zstd", "pigz", "lbzip2", "lzop", "xz-utils", "lz4"],
                         capture_output=True, text=True).stdout
    return out.strip()


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join((RECIPE, _versions(), *parts)).encode()).hexdigest()[:12]


@contextmanager
def _locked():
    with open(cache_root() / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build_linux(work: Path) -> Path:
    tree = fi.make_tree(work / "tree")
    return ef.build_gpt_pc(work, tree).disk


def _build_windows(work: Path) -> Path:
    tree = fi.make_tree(work / "tree", seed=7)
    esp = fi.make_vfat(work / "esp.img", 34 * MiB, tree, fat=32, label="SYSTEM")
    data = fi.make_ntfs(work / "c.img", 40 * MiB, tree, label="Windows")
    recovery = fi.make_ntfs(work / "re.img", 8 * MiB, None, label="Recovery")
    parts = [
        di.PartSpec(34 * MiB, di.ESP, name="EFI system partition", content=str(esp), attrs="GUID:63"),
        di.PartSpec(16 * MiB, di.MSR, name="Microsoft reserved partition", attrs="GUID:63"),
        di.PartSpec(40 * MiB, di.BASIC_DATA, name="Basic data partition", content=str(data)),
        di.PartSpec(8 * MiB, di.WIN_RECOVERY, content=str(recovery), attrs="RequiredPartition GUID:63"),
    ]
    disk = work / "disk.img"
    di.make_disk(disk, 104 * MiB, "gpt", parts)
    return disk


def _build_mbr(work: Path) -> Path:
    tree = fi.make_tree(work / "tree", seed=3)
    boot = fi.make_ext4(work / "boot.img", 16 * MiB, tree, label="boot")
    home = fi.make_ext4(work / "home.img", 16 * MiB, tree, label="home")
    fat = fi.make_vfat(work / "fat.img", 24 * MiB, tree, fat=16, label="SHARED")
    parts = [
        di.PartSpec(16 * MiB, "83", content=str(boot), bootable=True),
        di.PartSpec(16 * MiB, "83", content=str(home), logical=True),
        di.PartSpec(24 * MiB, "c", content=str(fat), logical=True),
    ]
    disk = work / "disk.img"
    di.make_disk(disk, 80 * MiB, "dos", parts)
    return disk


def _build_linux_later(work: Path) -> Path:
    """The Linux disk a day later: the same disk with one new 2 MiB file in its root filesystem."""
    disk = work / "disk.img"
    base = cache_root() / f"linux-{_key('linux')}" / "disk.img"      # made before the lock was taken
    subprocess.run(["cp", "--sparse=always", str(base), str(disk)], check=True)
    root = next(p for p in ef.sfdisk_json(disk)["partitions"] if p["name"] == "root")
    part = work / "root.img"
    subprocess.run(["dd", f"if={disk}", f"of={part}", "bs=512", f"skip={root['start']}", f"count={root['size']}",
                    "conv=sparse", "status=none"], check=True)
    report = work / "report.bin"
    report.write_bytes(di.pattern(b"tuesday", 2 * MiB))
    subprocess.run(["debugfs", "-w", "-R", f"write {report} report.bin", str(part)], check=True, capture_output=True)
    subprocess.run(["dd", f"if={part}", f"of={disk}", "bs=512", f"seek={root['start']}", "conv=notrunc,sparse",
                    "status=none"], check=True)
    return disk


DISKS = {"linux": _build_linux, "windows": _build_windows, "mbr": _build_mbr, "linux-later": _build_linux_later}
BASED_ON = {"linux-later": "linux"}     # built from another cached disk (made first, outside the lock)


def cached_disk(kind: str, work: Path) -> Path:
    """The original disk of `kind`, built once (its bytes are what every reader is checked against)."""
    parts = (kind, cached_disk(BASED_ON[kind], work).parent.name) if kind in BASED_ON else (kind,)
    folder = cache_root() / f"{kind}-{_key(*parts)}"
    disk = folder / "disk.img"
    with _locked():
        if not disk.exists():
            build = work / f"build-{kind}"
            build.mkdir(parents=True, exist_ok=True)
            made = DISKS[kind](build)
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            subprocess.run(["cp", "--sparse=always", str(made), str(tmp / "disk.img")], check=True)
            (tmp / "sfdisk.json").write_text(json.dumps(ef.sfdisk_json(tmp / "disk.img")))
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
            shutil.rmtree(build, ignore_errors=True)
    return disk


def clonezilla_image(kind: str, variant: str, loops, work: Path) -> tuple[Path, Path]:
    """(original disk, Clonezilla image folder) of disk `kind` saved by ocs-sr with `variant`'s
    compression."""
    disk = cached_disk(kind, work)
    folder = disk.parent / variant / IMAGE_NAME
    with _locked():
        if not folder.exists():
            run_dir = work / f"ocs-{kind}-{variant}"
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
            copy = run_dir / "disk.img"
            subprocess.run(["cp", "--sparse=always", str(disk), str(copy)], check=True)
            dev = loops.attach(copy)
            root = run_dir / "partimag"
            root.mkdir()
            name = os.path.basename(dev)
            if variant in SAVEPARTS:
                flags, numbers = SAVEPARTS[variant]
                what = ["saveparts", IMAGE_NAME, " ".join(f"{name}p{n}" for n in numbers)]
            else:
                flags, what = VARIANTS[variant], ["savedisk", IMAGE_NAME, name]
            cmd = ["ocs-sr", *COMMON, *flags, "-or", str(root), *what]
            proc = run_ocs(cmd, run_dir, timeout=900)
            saved = root / IMAGE_NAME
            if proc.returncode != 0 or not (saved / "parts").exists():
                raise AssertionError(f"ocs-sr failed ({proc.returncode}): {proc.stdout[-2000:]}")
            target = folder.parent
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            shutil.move(str(saved), str(tmp / IMAGE_NAME))
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
            loops.detach_all()
            shutil.rmtree(run_dir, ignore_errors=True)      # the disk's copy: space is scarce
    return disk, folder


def clonezilla_of(disk: Path, key: str, loops, work: Path, flags: tuple[str, ...] = ("-z9p",)) -> Path:
    """The Clonezilla image folder of any disk image (a golden bootable PC), saved by
    `ocs-sr savedisk` from a loop device of a copy; cached under build/cache/clonezilla/KEY."""
    folder = cache_root() / key / IMAGE_NAME
    with _locked():
        if not folder.exists():
            run_dir = work / f"ocs-{key}"
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
            copy = run_dir / "disk.img"
            subprocess.run(["cp", "--sparse=always", str(disk), str(copy)], check=True)
            name = os.path.basename(loops.attach(copy))
            root = run_dir / "partimag"
            root.mkdir()
            cmd = ["ocs-sr", *COMMON, *flags, "-or", str(root), "savedisk", IMAGE_NAME, name]
            proc = run_ocs(cmd, run_dir, timeout=1800)
            saved = root / IMAGE_NAME
            if proc.returncode != 0 or not (saved / "parts").exists():
                raise AssertionError(f"ocs-sr failed ({proc.returncode}): {proc.stdout[-2000:]}")
            tmp = folder.parent.with_name(folder.parent.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            shutil.move(str(saved), str(tmp / IMAGE_NAME))
            shutil.rmtree(folder.parent, ignore_errors=True)
            tmp.rename(folder.parent)
            loops.detach_all()
            shutil.rmtree(run_dir, ignore_errors=True)
    return folder


def clonezilla_two_disks(loops, work: Path) -> tuple[Path, Path, Path]:
    """(linux disk, mbr disk, folder): one `ocs-sr savedisk` of both disks (a PC with two)."""
    first, second = cached_disk("linux", work), cached_disk("mbr", work)
    folder = cache_root() / f"two-disks-{_key(first.parent.name, second.parent.name, *TWO_DISKS_FLAGS)}" / IMAGE_NAME
    with _locked():
        if not folder.exists():
            run_dir = work / "ocs-two-disks"
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
            names = []
            for disk in (first, second):
                copy = run_dir / f"{disk.parent.name}.img"
                subprocess.run(["cp", "--sparse=always", str(disk), str(copy)], check=True)
                names.append(os.path.basename(loops.attach(copy)))
            root = run_dir / "partimag"
            root.mkdir()
            cmd = ["ocs-sr", *COMMON, *TWO_DISKS_FLAGS, "-or", str(root), "savedisk", IMAGE_NAME, " ".join(names)]
            proc = run_ocs(cmd, run_dir, timeout=900)
            saved = root / IMAGE_NAME
            if proc.returncode != 0 or not (saved / "disk").exists():
                raise AssertionError(f"ocs-sr failed ({proc.returncode}): {proc.stdout[-2000:]}")
            (saved.parent / "names.json").write_text(json.dumps(names))
            target = folder.parent
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.move(str(root), str(tmp))
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
            loops.detach_all()
            shutil.rmtree(run_dir, ignore_errors=True)
    return first, second, folder


def assert_compressed(folder: Path, save: str) -> None:
    """The save's partition images are in the compression COMPRESSION_SUFFIX gives it, so each
    compression ocs-sr offers stays read by some test."""
    images = [n for n in os.listdir(folder) if "-ptcl-img." in n]
    # a split save's pieces end .aa, .ab, ...
    whole = [re.sub(r"\.[a-z]{2}$", "", n) if save.endswith("-split") else n for n in images]
    assert images and all(n.endswith(COMPRESSION_SUFFIX[save]) for n in whole), images


def original_sfdisk(disk: Path) -> dict:
    return json.loads((disk.parent / "sfdisk.json").read_text())
