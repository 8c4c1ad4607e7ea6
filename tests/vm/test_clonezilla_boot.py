"""A bootable PC restored from a Clonezilla image boots: the golden UEFI Linux disk saved by
Clonezilla's own `ocs-sr savedisk` (zstd) from a loop device, restored by `lifeboat restore
FOLDER TARGET` onto a disk twice its size, booted in QEMU from SATA with OVMF: its root
filesystem's fingerprint is the original's, its GUIDs are kept and its swap is back with the
saved UUID and label."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests import clonezilla_images as cz
from tests.integration.engine_fixtures import lifeboat
from tests.vm import golden
from tests.vm.qemu import Disk, Machine

pytestmark = [pytest.mark.vm, pytest.mark.loop]

BOOT_TIMEOUT = 300


def test_uefi_pc_restored_from_a_clonezilla_image_boots(loops, tmp_path):
    g = golden.uefi_pc()
    folder = cz.clonezilla_of(g.path, f"golden-{g.path.stem}", loops, tmp_path)
    target = tmp_path / "new-disk.img"
    with open(target, "wb") as f:
        f.truncate(2 * g.path.stat().st_size)
    done = lifeboat("restore", folder, target, "--yes", "--json", json_out=True).data
    assert done["status"] == "ok"
    assert golden.table_identity(target) == golden.table_identity(g.path)
    parts = {int(p["node"][-1]): p for p in json.loads(subprocess.run(
        ["sfdisk", "--json", str(target)], capture_output=True, text=True, check=True).stdout)
        ["partitiontable"]["partitions"]}
    swap = subprocess.run(["blkid", "-p", "-o", "export", "-O", str(parts[3]["start"] * 512), str(target)],
                          capture_output=True, text=True).stdout
    assert f"UUID={g.extra['swap_uuid']}" in swap and "LABEL=golden-swap" in swap and "TYPE=swap" in swap

    with Machine([Disk(target, bus="sata")], firmware="uefi", log=tmp_path / "console.log") as vm:
        m = vm.wait_for(golden.MARKER, BOOT_TIMEOUT)
        seconds = vm.elapsed()
        assert vm.wait_exit(60) == 0
    print(f"restored from Clonezilla: marker after {seconds:.1f} s")
    assert m["root"] == g.fingerprint
    assert m["dev"] == "sda2"
    assert int(m["size"]) > 0.95 * parts[2]["size"] * 512      # the root filesystem grew with its partition
