"""Repositories on FAT32 and exFAT through the live kernel's own drivers (vfat, exfat): the
build machine's kernel has neither, so the rest of the suite reaches such repositories through
FUSE. In the live system's shell, as a technician would: mount a FAT32 USB stick and an exFAT
SATA disk, make a repository on each, back the source disk up into both, verify both, and
restore from each onto its own blank disk. Every file of the restored filesystems is then
compared with the source's on this machine, and each is checked by e2fsck."""

from __future__ import annotations

import subprocess

import pytest

from tests.diskimages import MiB, PartSpec, make_disk
from tests.fsimages import make_vfat
from tests.vm.live_shell import assert_restored, open_shell, power_off, shell_step, source_disk
from tests.vm.qemu import Disk
from tests.vm.test_iso import blank, live_machine
from tests.vm.test_iso import iso  # noqa: F401 - the built ISO, a fixture

pytestmark = pytest.mark.vm


def test_fat32_and_exfat_repositories_through_the_kernels_drivers(iso, tmp_path):
    source, part, want = source_disk(tmp_path, seed=41)
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
    with live_machine(iso, disks, "", tmp_path / "console.log") as vm:
        open_shell(vm)
        assert shell_step(vm, "mount", "mkdir -p /mnt/fat /mnt/exfat && mount -t vfat /dev/sdb1 /mnt/fat"
                          " && mount -t exfat /dev/sda1 /mnt/exfat && grep -E ' /mnt/(fat|exfat) ' /proc/mounts") == 0
        mounts = vm.output
        for fs, target in (("fat", "/dev/vdb"), ("exfat", "/dev/vdc")):
            repo = f"/mnt/{fs}/lifeboat"
            assert shell_step(vm, f"init-{fs}", f"lifeboat repo init {repo}") == 0
            assert shell_step(vm, f"backup-{fs}", f"lifeboat backup /dev/vda --repo {repo} --name pc", 900) == 0
            assert shell_step(vm, f"verify-{fs}", f"lifeboat verify --repo {repo}", 900) == 0
            assert shell_step(vm, f"restore-{fs}", f"lifeboat restore latest {target} --repo {repo} --yes", 900) == 0
        power_off(vm, "sync; umount /mnt/fat /mnt/exfat")
    # the kernel's drivers, not FUSE, held the repositories
    assert " /mnt/fat vfat " in mounts and " /mnt/exfat exfat " in mounts, mounts[-2000:]
    for target in targets:
        assert_restored(target, part, want)
