"""Record what the live system's disk probing sees on real buses, for tests/data (run by hand,
as root, with the ISO built: `python -m tests.vm.record_probe_data`).

The live ISO boots in QEMU with four disks, one per bus a PC has: NVMe (a GPT system disk:
ESP and ext4), SATA (an MBR disk with an NTFS and an ext4 partition), USB storage (a FAT32
stick) and virtio (blank). In its shell a device-mapper volume is stacked on the SATA disk's
ext4 partition (a linear table, the mapping LVM makes for a logical volume) and mounted, and
the NVMe root partition is mounted too, and the stick where a desktop mounts one. `lifeboat disks --record` then runs twice: with the
live system's udev daemon, and after stopping it (the records a machine without udev gives).
Both go to tests/data/probe_qemu_live_udev.json and probe_qemu_live_no_udev.json.
"""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.diskimages import ESP, LINUX_FS, MiB, PartSpec, make_disk
from tests.fsimages import make_ext4, make_ntfs, make_vfat
from tests.vm.qemu import QEMU, Disk, Machine
from tests.vm.test_iso import BOOT_LINE, BOOT_TIMEOUT, END, ENTER, TUI_DRAWN, UP, ensure_iso, keys, live_machine

DATA = Path(__file__).resolve().parents[1] / "data"
RECORD = r"RECORD-BEGIN (?P<b64>[A-Za-z0-9+/=]+) RECORD-END"


def build_disks(work: Path) -> list[Disk]:
    nvme = work / "nvme.img"
    make_disk(nvme, 256 * MiB, "gpt", [
        PartSpec(64 * MiB, ESP, name="EFI system partition",
                 content=str(make_vfat(work / "esp.fs", 64 * MiB, label="ESP", garbage=False))),
        PartSpec(None, LINUX_FS, name="root",
                 content=str(make_ext4(work / "root.fs", 190 * MiB, label="nvme-root", garbage=False)))])
    sata = work / "sata.img"
    make_disk(sata, 320 * MiB, "dos", [
        PartSpec(128 * MiB, "7", bootable=True,
                 content=str(make_ntfs(work / "win.fs", 128 * MiB, label="Windows", garbage=False))),
        PartSpec(None, "83", content=str(make_ext4(work / "data.fs", 190 * MiB, label="sata-data", garbage=False)))])
    usb = work / "usb.img"
    make_disk(usb, 128 * MiB, "dos", [
        PartSpec(None, "c", content=str(make_vfat(work / "stick.fs", 126 * MiB, label="BACKUPS", garbage=False)))])
    virtio = work / "virtio.img"
    with open(virtio, "wb") as f:
        f.truncate(64 * MiB)
    return [Disk(nvme, bus="nvme", serial="REC-NVME-0001"), Disk(sata, bus="sata", serial="REC-SATA-0002"),
            Disk(usb, bus="usb", serial="REC-USB-0003", removable=True), Disk(virtio, bus="virtio", serial="REC-VIRTIO-0004")]


def _record(vm: Machine) -> dict:
    keys(vm, "echo RECORD-BEGIN $(lifeboat disks --record | gzip -9 | base64 -w0) RECORD-END" + ENTER)
    m = vm.wait_for(RECORD, 600)
    return json.loads(gzip.decompress(base64.b64decode(m["b64"])))


def record(work: Path) -> tuple[dict, dict]:
    iso = ensure_iso()
    disks = build_disks(work)
    with live_machine(iso, disks, "", work / "console.log") as vm:
        vm.wait_for(BOOT_LINE, BOOT_TIMEOUT)
        vm.wait_for(TUI_DRAWN, BOOT_TIMEOUT)
        time.sleep(5)
        keys(vm, END, UP, UP, UP, ENTER)            # Quit → Power off → Reboot → Shell
        vm.wait_for(r"Lifeboat shell", 120)
        time.sleep(2)
        # the SATA disk is sda (the CD is on the second SATA port); its partition 2 is ext4
        keys(vm, "dmsetup create vg0-data --table \"0 $(blockdev --getsz /dev/sda2) linear /dev/sda2 0\""
             " && mkdir -p /mnt/lv /mnt/nvroot && mount /dev/mapper/vg0-data /mnt/lv"
             " && mount /dev/nvme0n1p2 /mnt/nvroot && mkdir -p /media/anna/BACKUPS"
             " && mount -t vfat /dev/sdb1 /media/anna/BACKUPS && echo STACK-READY" + ENTER)
        vm.wait_for(r"STACK-READY\s", 300)
        with_udev = _record(vm)
        keys(vm, "udevadm control --exit; sleep 2; echo UDEV-STOPPED $(ls /run/udev/control 2>&1 | wc -l)" + ENTER)
        vm.wait_for(r"UDEV-STOPPED \d+\s", 120)
        without_udev = _record(vm)
        keys(vm, "umount /mnt/lv /mnt/nvroot /media/anna/BACKUPS; poweroff -f" + ENTER)
        vm.wait_exit(180)
    return with_udev, without_udev


def main() -> int:
    version = subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    with tempfile.TemporaryDirectory(prefix="lifeboat-record-") as tmp:
        with_udev, without_udev = record(Path(tmp))
    note = (f"recorded by tests/vm/record_probe_data.py: `lifeboat disks --record` in the live ISO's shell "
            f"under {version} (TCG); disks on NVMe, SATA (AHCI), USB storage and virtio; dm-0 is a "
            "dmsetup linear volume over sda2, as LVM makes one, mounted at /mnt/lv; the stick's FAT32 "
            "partition is mounted at /media/anna/BACKUPS, where a desktop would")
    for name, rec, how in (("probe_qemu_live_udev.json", with_udev, "with the live system's udev daemon"),
                           ("probe_qemu_live_no_udev.json", without_udev, "after `udevadm control --exit`")):
        rec = {"_note": f"{note}; {how}", **rec}
        (DATA / name).write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
        print(f"wrote {DATA / name}: {[r['name'] for r in rec['records']]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
