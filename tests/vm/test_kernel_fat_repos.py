"""Repositories on FAT32 and exFAT through the live kernel's own drivers (vfat, exfat): the
build machine's kernel has neither, so the rest of the suite reaches such repositories through
FUSE. In the live system's shell, as a technician would: mount a FAT32 USB stick and an exFAT
SATA disk, make a repository on each, back the source disk up into both, verify both, and
restore from each onto its own blank disk. Every file of the restored filesystems is then
compared with the source's on this machine, and each is checked by e2fsck."""

from __future__ import annotations

import subprocess
import time

import pytest

from recovery.probe.table import read_layout
from tests.diskimages import LINUX_FS, MiB, PartSpec, make_disk
from tests.fsimages import ext_tree, fsck_clean, make_ext4, make_tree, make_vfat
from tests.vm.qemu import Disk
from tests.vm.test_iso import BOOT_LINE, BOOT_TIMEOUT, END, ENTER, TUI_DRAWN, UP, blank, keys, live_machine
from tests.vm.test_iso import iso  # noqa: F401 - the built ISO, a fixture

pytestmark = pytest.mark.vm


def shell_step(vm, name: str, command: str, timeout: float = 600) -> int:
    """Run one shell line in the live system; returns its exit status (its output is logged)."""
    keys(vm, f"{command} >/tmp/{name}.log 2>&1; echo STEP-{name}-$?-; tail -n 3 /tmp/{name}.log" + ENTER)
    return int(vm.wait_for(rf"STEP-{name}-(\d+)-", timeout)[1])


def test_fat32_and_exfat_repositories_through_the_kernels_drivers(iso, tmp_path):
    tree = make_tree(tmp_path / "tree", seed=41)
    src_fs = make_ext4(tmp_path / "src.fs", 48 * MiB, tree_dir=tree, label="fat-src")
    source = tmp_path / "source.img"
    layout = make_disk(source, 64 * MiB, "gpt", [PartSpec(None, LINUX_FS, name="data", content=str(src_fs))])
    part = layout.partitions[0]
    want = ext_tree(source, part.start, part.size)

    stick = tmp_path / "stick.img"
    make_disk(stick, 160 * MiB, "dos", [PartSpec(None, "c", content=str(
        make_vfat(tmp_path / "stick.fs", 158 * MiB, label="FATREPO", garbage=False)))])
    exfat_fs = blank(tmp_path / "exfat.fs", 158 * MiB)
    subprocess.run(["mkfs.exfat", "-L", "EXREPO", str(exfat_fs)], check=True, capture_output=True)
    exdisk = tmp_path / "exfat.img"
    make_disk(exdisk, 160 * MiB, "dos", [PartSpec(None, "7", content=str(exfat_fs))])
    targets = [blank(tmp_path / f"target-{n}.img", 80 * MiB) for n in ("fat", "exfat")]

    disks = [Disk(exdisk, bus="sata", serial="EXFAT-REPO"), Disk(stick, bus="usb", serial="FAT-REPO", removable=True),
             Disk(source, bus="virtio", serial="SOURCE"), Disk(targets[0], bus="virtio", serial="TARGET-FAT"),
             Disk(targets[1], bus="virtio", serial="TARGET-EXFAT")]
    with live_machine(iso, disks, "", tmp_path / "console.log", memory_mb=1024) as vm:
        vm.wait_for(BOOT_LINE, BOOT_TIMEOUT)
        vm.wait_for(TUI_DRAWN, BOOT_TIMEOUT)
        time.sleep(5)
        keys(vm, END, UP, UP, UP, ENTER)                 # Quit → Power off → Reboot → Shell
        vm.wait_for(r"Lifeboat shell", 120)
        time.sleep(2)
        assert shell_step(vm, "mount", "mkdir -p /mnt/fat /mnt/exfat && mount -t vfat /dev/sdb1 /mnt/fat"
                          " && mount -t exfat /dev/sda1 /mnt/exfat && grep -E ' /mnt/(fat|exfat) ' /proc/mounts") == 0
        mounts = vm.output
        for fs, target in (("fat", "/dev/vdb"), ("exfat", "/dev/vdc")):
            repo = f"/mnt/{fs}/lifeboat"
            assert shell_step(vm, f"init-{fs}", f"lifeboat repo init {repo}") == 0
            assert shell_step(vm, f"backup-{fs}", f"lifeboat backup /dev/vda --repo {repo} --name pc", 900) == 0
            assert shell_step(vm, f"verify-{fs}", f"lifeboat verify --repo {repo}", 900) == 0
            assert shell_step(vm, f"restore-{fs}", f"lifeboat restore latest {target} --repo {repo} --yes", 900) == 0
        keys(vm, "sync; umount /mnt/fat /mnt/exfat; poweroff -f" + ENTER)
        vm.wait_exit(180)
    # the kernel's drivers, not FUSE, held the repositories
    assert " /mnt/fat vfat " in mounts and " /mnt/exfat exfat " in mounts, mounts[-2000:]
    for target in targets:
        got = read_layout(str(target)).partitions[0]        # the restore may have grown it
        assert got.start == part.start
        assert ext_tree(target, got.start, got.size) == want
        assert fsck_clean("ext4", target, got.start, got.size)
