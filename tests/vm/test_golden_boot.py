"""The golden PCs really boot and fingerprint their root filesystem; a changed byte is seen."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.vm import golden
from tests.vm.qemu import Disk, Machine

pytestmark = pytest.mark.vm

BOOT_TIMEOUT = 300


def boot_marker(image, firmware, bus, log):
    with Machine([Disk(image, bus=bus, snapshot=True)], firmware=firmware, log=log) as vm:
        m = vm.wait_for(golden.MARKER, BOOT_TIMEOUT)
        seconds = vm.elapsed()
        assert vm.wait_exit(60) == 0
    print(f"{image.name} on {bus}/{firmware}: marker after {seconds:.1f} s")
    return m


@pytest.mark.parametrize("build,bus,dev", [
    (golden.bios_pc, "virtio", "vda1"),
    (golden.uefi_pc, "sata", "sda2"),
])
def test_golden_pc_boots_and_prints_marker(build, bus, dev, tmp_path):
    g = build()
    m = boot_marker(g.path, g.firmware, bus, tmp_path / "console.log")
    assert m["root"] == g.fingerprint
    assert m["dev"] == dev
    # statfs size is the ext4 size minus its metadata overhead: a little below the block count
    assert 0.9 * g.root_fs_size < int(m["size"]) <= g.root_fs_size


def test_marker_sees_a_changed_byte(tmp_path):
    g = golden.bios_pc()
    image = tmp_path / "damaged.img"
    subprocess.run(["cp", "--sparse=always", g.path, image], check=True)
    start = 2048 * 512
    spec = f"{image}?offset={start}"
    out = subprocess.run(["debugfs", "-R", "blocks /golden/big.bin", spec],
                         capture_output=True, text=True, check=True).stdout.split()
    block = int(out[0])
    with open(image, "r+b") as f:
        pos = start + block * 4096 + 100
        f.seek(pos)
        byte = f.read(1)
        f.seek(pos)
        f.write(bytes([byte[0] ^ 0xFF]))
    m = boot_marker(image, "bios", "virtio", tmp_path / "console.log")
    assert m["root"] != g.fingerprint


@pytest.mark.loop
def test_windows_shaped_disk_has_windows_identities(tmp_path):
    g = golden.windows_pc()
    table = json.loads(subprocess.run(["sfdisk", "--json", g.path], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    assert golden.table_identity(g.path) == g.extra["identity"]
    types = [p["type"] for p in table["partitions"]]
    assert types == [golden.WIN_ESP, golden.WIN_MSR, golden.WIN_DATA, golden.WIN_RECOVERY]
    assert table["partitions"][3]["attrs"] == "RequiredPartition GUID:63"
    # the loader file is on the ESP where Windows keeps it
    esp = f"{g.path}@@{table['partitions'][0]['start'] * 512}"
    listing = subprocess.run(["mdir", "-i", esp, "-b", "::/EFI/Microsoft/Boot"], capture_output=True,
                             text=True, check=True).stdout
    assert "bootmgfw.efi" in listing
    # both NTFS volumes are consistent
    for idx in (2, 3):
        part = table["partitions"][idx]
        region = tmp_path / f"p{idx + 1}.ntfs"
        subprocess.run(["dd", f"if={g.path}", f"of={region}", "bs=1M", "conv=sparse", "status=none",
                        f"skip={part['start'] * 512}", f"count={part['size'] * 512}",
                        "iflag=skip_bytes,count_bytes"], check=True)
        check = subprocess.run(["ntfsfix", "-n", region], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    assert shutil.which("ntfs-3g")
