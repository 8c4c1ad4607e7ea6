"""A stick written by `lifeboat write-usb --data exfat` (here a disk-image file standing in for
the stick) boots under QEMU from USB, BIOS and UEFI; the live system finds the stick's own
LIFEBOAT-DATA repository; and inside the live system write-usb lists a removable USB stick
while it refuses a virtio disk, a SATA disk and its own boot stick."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.vm.qemu import Cdrom, Disk, Machine
from tests.vm.test_iso import BOOT_LINE, BOOT_TIMEOUT, ROOT, TUI_DRAWN, blank, ensure_iso

pytestmark = pytest.mark.vm
MIB = 1024 * 1024


class Stick(NamedTuple):
    path: Path
    image_size: int
    iso: Path           # the ISO it was written from (build/lifeboat.iso may be rebuilt meanwhile)


@pytest.fixture(scope="module")
def written_stick(tmp_path_factory) -> Stick:
    """build/lifeboat.iso written with write-usb onto a 512 MiB image file, data partition
    exFAT; attached read-only by the tests, so every boot sees the same stick."""
    where = tmp_path_factory.mktemp("stick")
    iso = where / "lifeboat.iso"
    shutil.copyfile(ensure_iso(), iso)
    stick = blank(where / "stick.img", 512 * MIB)
    env = dict(os.environ, LIFEBOAT_LOG_DIR=str(where / "logs"))
    out = subprocess.run([sys.executable, "-m", "recovery", "write-usb", str(iso), str(stick),
                          "--data", "exfat", "--yes", "--json"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["verified"]
    print(f"write-usb onto an image file: {result['image_size'] / MIB:.0f} MiB written at "
          f"{result['write_rate'] / MIB:.0f} MiB/s, read back at {result['verify_rate'] / MIB:.0f} MiB/s")
    return Stick(stick, result["image_size"], iso)


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_written_stick_boots_and_finds_its_repository(written_stick, firmware, tmp_path):
    """Booted by the firmware from the USB stick alone (a blank SATA disk beside it): by BIOS
    from the stick's MBR, by UEFI from the ESP in the stick's own partition table; the boot
    line names the stick as the medium. After the BIOS boot, the TUI's restore flow lists the
    repository on the stick's LIFEBOAT-DATA partition (what the live system finds there does
    not depend on the firmware that started it; a TUI under emulation costs CI ~20 CPU s)."""
    disks = [Disk(blank(tmp_path / "sata.img", 64 * MIB), bus="sata", serial="SPARE-SATA")]
    with Machine(disks, cdrom=Cdrom(written_stick.path, bus="usb"), firmware=firmware, boot="cdrom",
                 log=tmp_path / "console.log") as vm:
        m = vm.wait_for(BOOT_LINE, BOOT_TIMEOUT)
        booted = vm.elapsed()
        if firmware == "bios":
            vm.wait_for(TUI_DRAWN, BOOT_TIMEOUT)
            booted = vm.elapsed()
            time.sleep(5)
            vm.send("r")
            vm.wait_for(r"Which backups\?", 300)
            found = vm.wait_for(r"(/dev/sd[a-z])4 \(LIFEBOATDAT\)", 300)
            assert found[1] == m["medium"]          # the repository is on the boot stick itself
    assert m["fw"] == firmware
    assert re.fullmatch(r"/dev/sd[a-z]", m["medium"]), m["medium"]
    print(f"stick {firmware}: {'TUI drawn' if firmware == 'bios' else 'boot line'} {booted:.1f} s after QEMU start")


def test_live_system_lists_usb_sticks_and_refuses_other_disks(written_stick, tmp_path):
    """The live system from the written stick, with a shell on the serial line: a second,
    removable usb-storage stick is listed; virtio, SATA and the boot stick are refused."""
    spare = blank(tmp_path / "spare.img", 256 * MIB)
    # The virtio disk carries the ISO as a file in ext4 (as a disk, its medium id would make it
    # a boot medium candidate): the live system copies it from there onto the spare stick.
    carrier = tmp_path / "carrier"
    carrier.mkdir()
    shutil.copyfile(written_stick.iso, carrier / "lifeboat.iso")
    virtio_img = blank(tmp_path / "virtio.img", written_stick.image_size + 64 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-d", str(carrier), str(virtio_img)], check=True)
    disks = [Disk(virtio_img, bus="virtio", serial="SPARE-VIRTIO"),
             Disk(blank(tmp_path / "sata.img", 256 * MIB), bus="sata", serial="SPARE-SATA")]
    extra = ["-drive", f"file={spare},if=none,id=spare,format=raw",
             "-device", "usb-storage,drive=spare,bus=xhci0.0,removable=on,serial=SPARE-STICK"]
    append = "console=ttyS0,115200n8 quiet loglevel=3 lifeboat.console=shell"
    # Kernel and initramfs from the stick itself: build/ may hold a newer build by now, whose
    # initramfs looks for another medium id.
    boot = tmp_path / "boot"
    boot.mkdir()
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(written_stick.path),
                    "-extract", "/live/vmlinuz", str(boot / "vmlinuz"),
                    "-extract", "/live/initrd.img", str(boot / "initrd.img")], check=True, capture_output=True)
    with Machine(disks, cdrom=Cdrom(written_stick.path, bus="usb"), boot="cdrom", firmware="bios",
                 kernel=boot / "vmlinuz", initrd=boot / "initrd.img", append=append,
                 extra_args=extra, log=tmp_path / "console.log") as vm:
        medium = vm.wait_for(BOOT_LINE, BOOT_TIMEOUT)["medium"]
        time.sleep(3)

        def shell(command: str, tag: str, timeout: int = 300) -> str:
            vm.send(f"{{ {command}; }} 2>&1 | sed 's/^/{tag}: /'; echo {tag}-END\r")
            vm.wait_for(rf"\n{tag}-END", timeout)
            plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", vm.output)       # bash's bracketed-paste codes
            return "\n".join(line[len(tag) + 2:] for line in plain.splitlines() if line.startswith(f"{tag}: "))

        # An ISO to write: the first 4 MiB of the boot stick hold its ISO 9660 volume.
        shell(f"head -c 4194304 {medium} > /tmp/head.iso; ls -l /tmp/head.iso", "HEAD")
        disks_out = shell("lifeboat disks", "DISKS")
        sata = re.search(r"^(/dev/sd[a-z])\s.*\bsata\b", disks_out, re.M)
        virtio = re.search(r"^(/dev/vd[a-z])\s", disks_out, re.M)
        assert sata and virtio, disks_out
        # The boot stick is the system's: never offered as a restore or write-usb target.
        assert re.search(rf"^{medium}\s.*\busb\b.*\[system\] \[removable\]", disks_out, re.M), disks_out

        listing = shell("lifeboat write-usb /tmp/head.iso < /dev/null; echo RC=$?", "LIST")
        sticks = [ln for ln in listing.splitlines() if re.match(r"\d+\) ", ln)]
        assert len(sticks) == 1, listing                    # the spare stick; not the boot stick
        assert re.match(r"1\) /dev/sd[a-z]  256\.0 MiB  usb  removable  .*serial SPARE-STICK", sticks[0]), listing
        assert "lifeboat: name the stick to write: lifeboat write-usb ISO DEVICE" in listing
        assert "RC=2" in listing

        out = shell(f"lifeboat write-usb /tmp/head.iso {virtio[1]} --yes < /dev/null; echo RC=$?", "VIRTIO")
        assert f"lifeboat: {virtio[1]} is not a USB disk (it is on virtio); only removable USB sticks" in out
        assert "RC=4" in out
        out = shell(f"lifeboat write-usb /tmp/head.iso {sata[1]} --yes < /dev/null; echo RC=$?", "SATA")
        assert f"lifeboat: {sata[1]} is not a USB disk (it is on sata)" in out and "RC=4" in out
        out = shell(f"lifeboat write-usb /tmp/head.iso {medium} --force --yes < /dev/null; echo RC=$?", "SELF")
        assert f"lifeboat: {medium} holds the running system (or the medium it started from)" in out
        assert "RC=4" in out

        # On the serial terminal, as a person would: pick the stick by number, type its name;
        # the whole ISO (copied off the boot stick) is written with an exFAT data partition.
        shell(f"mkdir -p /mnt/c && mount -o ro {virtio[1]} /mnt/c && cp /mnt/c/lifeboat.iso /tmp/full.iso "
              "&& umount /mnt/c; ls -l /tmp/full.iso", "FULL")
        vm.send("lifeboat write-usb /tmp/full.iso --data exfat; echo WRITE-RC=$?\r")
        vm.wait_for(r"Which one \(1-1\)\? ", 120)
        vm.send("1\r")
        target = vm.wait_for(r"Type the device's name \((sd[a-z])\) to erase it: ", 120)[1]
        vm.send(f"{target}\r")
        done = vm.wait_for(r"(Done: .*pull the stick out now\.|lifeboat: .*)\r?\n", 900)[1]
        vm.wait_for(r"WRITE-RC=0", 60)
        assert done == f"Done: /dev/{target} is written, checked and flushed. It is safe to pull the stick out now."
        after = shell("lifeboat disks", "AFTER")
        assert re.search(r"^\s+4\s.*exfat\s+LIFEBOATDAT", after, re.M), after
        vm.send("poweroff -f\r")
    # The stick written inside the live system holds the ISO byte for byte, then the repository.
    with open(spare, "rb") as f, open(written_stick.iso, "rb") as g:
        size = written_stick.image_size
        assert f.read(64 * 512)[:440] == g.read(64 * 512)[:440]         # BIOS boot code
        f.seek(64 * 512), g.seek(64 * 512)
        assert f.read(size - 2 * MIB) == g.read(size - 2 * MIB)        # the ISO's partitions
