"""Bare-metal proof: back up a golden PC with the CLI, restore it onto a blank disk twice the size,
attach that disk on another bus and boot it: the root fingerprint matches and the root
filesystem fills the disk. The Windows-shaped disk keeps every GUID and every file."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fsimages import fsck_clean
from tests.vm import golden
from tests.vm.qemu import Cdrom, Disk, Machine

pytestmark = [pytest.mark.vm, pytest.mark.loop]

ROOT = Path(__file__).resolve().parents[2]
BOOT_TIMEOUT = 300


def lifeboat(*args) -> str:
    res = subprocess.run([sys.executable, "-m", "recovery", *map(str, args)], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, f"lifeboat {' '.join(map(str, args))}: {res.stderr}{res.stdout}"
    return res.stdout


def backup_and_restore(g: golden.Golden, tmp_path: Path, factor: int = 2,
                       dry_run_check: bool = False) -> tuple[Path, dict]:
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    lifeboat("backup", g.path, "--repo", repo, "--name", g.name)
    target = tmp_path / "new-disk.img"
    with open(target, "wb") as f:
        f.truncate(factor * g.path.stat().st_size)
    if dry_run_check:
        plan = lifeboat("restore", "latest", target, "--repo", repo, "--name", g.name, "--dry-run")
        assert "Partition 2 (ext4) grows from 832.0 MiB to 1.8 GiB; its filesystem is resized to match." in plan
        assert "Partition 4 (ext4) moves to the end of the disk" in plan
        assert "Partition 3 (swap) moves to the end of the disk" in plan
        assert "Partition 1 (vfat, EFI system) stays as it is" in plan
        assert target.read_bytes()[:1 << 20] == bytes(1 << 20), "--dry-run wrote to the target"
    out = lifeboat("restore", "latest", target, "--repo", repo, "--name", g.name, "--yes", "--layout", "grow",
                   "--json")
    return target, json.loads(out)


def table(image) -> dict:
    return json.loads(subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, text=True,
                                     check=True).stdout)["partitiontable"]


def region_sha(image, start: int, size: int) -> str:
    h = hashlib.sha256()
    with open(image, "rb") as f:
        f.seek(start)
        left = size
        while left:
            block = f.read(min(left, 1 << 20))
            assert block, "short read"
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def boot(image: Path, firmware: str, bus: str, log: Path):
    with Machine([Disk(image, bus=bus)], firmware=firmware, log=log) as vm:
        m = vm.wait_for(golden.MARKER, BOOT_TIMEOUT)
        seconds = vm.elapsed()
        assert vm.wait_exit(60) == 0
    print(f"{image.name} on {bus}/{firmware}: marker after {seconds:.1f} s")
    return m


def test_bios_pc_restored_larger_boots_from_nvme(tmp_path):
    g = golden.bios_pc()
    target, result = backup_and_restore(g, tmp_path)
    assert any("grown" in w for w in result.get("warnings", [])), result
    old, new = table(g.path), table(target)
    assert golden.table_identity(target) == golden.table_identity(g.path)
    o = {int(p["node"][-1]): p for p in old["partitions"]}
    n = {int(p["node"][-1]): p for p in new["partitions"]}
    # root grew by the disk's growth; the extended partition with swap moved to the end, the
    # logical's EBR spacing kept; swap kept its UUID
    assert n[1]["start"] == o[1]["start"] and n[1]["size"] == o[1]["size"] + g.path.stat().st_size // 512
    assert n[2]["start"] - o[2]["start"] == n[5]["start"] - o[5]["start"] == g.path.stat().st_size // 512
    assert n[5]["start"] - n[2]["start"] == o[5]["start"] - o[2]["start"]
    assert n[5]["size"] == o[5]["size"] and (n[2]["start"] + n[2]["size"]) * 512 == target.stat().st_size
    swap = subprocess.run(["blkid", "-p", "-o", "export", "-O", str(n[5]["start"] * 512), str(target)],
                          capture_output=True, text=True).stdout
    assert f"UUID={g.extra['swap_uuid']}" in swap and "TYPE=swap" in swap
    # boot code and GRUB's core.img in the post-MBR gap came back byte for byte
    gap = old["partitions"][0]["start"] * 512
    assert region_sha(target, 0, 440) == region_sha(g.path, 0, 440)
    assert region_sha(target, 512, gap - 512) == region_sha(g.path, 512, gap - 512)

    m = boot(target, "bios", "nvme", tmp_path / "console.log")
    assert m["root"] == g.fingerprint
    assert m["dev"] == "nvme0n1p1"
    part_size = n[1]["size"] * 512
    assert int(m["size"]) > 0.95 * part_size
    assert int(m["size"]) > 1.9 * g.root_fs_size * 0.95


def test_uefi_pc_restored_larger_boots_from_sata(tmp_path):
    g = golden.uefi_pc()
    target, _ = backup_and_restore(g, tmp_path, dry_run_check=True)
    old, new = table(g.path), table(target)
    assert golden.table_identity(target) == golden.table_identity(g.path)
    assert new["lastlba"] == target.stat().st_size // 512 - 34
    o = {int(p["node"][-1]): p for p in old["partitions"]}
    n = {int(p["node"][-1]): p for p in new["partitions"]}
    # ESP in place and byte-identical; root grew; swap and the trailing partition moved to the end
    assert (n[1]["start"], n[1]["size"]) == (o[1]["start"], o[1]["size"])
    assert region_sha(target, n[1]["start"] * 512, n[1]["size"] * 512) == \
        region_sha(g.path, o[1]["start"] * 512, o[1]["size"] * 512)
    assert n[2]["start"] == o[2]["start"] and n[2]["size"] > o[2]["size"] + (1 << 30) // 512 - 4096
    for k in (3, 4):
        assert n[k]["size"] == o[k]["size"] and n[k]["start"] > o[k]["start"]
    assert (n[4]["start"] + n[4]["size"]) * 512 > target.stat().st_size - (2 << 20)
    swap = subprocess.run(["blkid", "-p", "-o", "export", "-O", str(n[3]["start"] * 512), str(target)],
                          capture_output=True, text=True).stdout
    assert f"UUID={g.extra['swap_uuid']}" in swap and "TYPE=swap" in swap
    trail = subprocess.run(["blkid", "-p", "-o", "export", "-O", str(n[4]["start"] * 512), str(target)],
                           capture_output=True, text=True).stdout
    assert f"UUID={g.extra['trail_uuid']}" in trail

    m = boot(target, "uefi", "sata", tmp_path / "console.log")
    assert m["root"] == g.fingerprint
    assert m["dev"] == "sda2"
    assert int(m["size"]) > 0.95 * n[2]["size"] * 512


def test_windows_shaped_disk_keeps_every_guid_and_file(tmp_path, loops):
    g = golden.windows_pc()
    target, result = backup_and_restore(g, tmp_path)
    assert golden.table_identity(target) == g.extra["identity"]
    old, new = table(g.path), table(target)
    assert new["id"] == old["id"]
    o = {int(p["node"][-1]): p for p in old["partitions"]}
    n = {int(p["node"][-1]): p for p in new["partitions"]}
    assert n[4]["attrs"] == "RequiredPartition GUID:63" and n[4]["size"] == o[4]["size"]
    assert n[3]["size"] > o[3]["size"]
    for k in (1, 2):
        assert region_sha(target, n[k]["start"] * 512, n[k]["size"] * 512) == \
            region_sha(g.path, o[k]["start"] * 512, o[k]["size"] * 512)

    disk = loops.attach(target)
    for number in (3, 4):
        dev = f"{disk}p{number}"
        check = subprocess.run(["ntfsfix", "-n", dev], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        mnt = tmp_path / f"mnt{number}"
        mnt.mkdir()
        subprocess.run(["ntfs-3g", "-o", "ro", dev, str(mnt)], check=True)
        try:
            found = {}
            for dirpath, _dirs, files in os.walk(mnt):
                for name in files:
                    p = Path(dirpath) / name
                    found[str(p.relative_to(mnt))] = hashlib.sha256(p.read_bytes()).hexdigest()
            st = os.statvfs(mnt)
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
        assert found == g.files[str(number)]
        if number == 3:
            assert st.f_blocks * st.f_frsize > 0.95 * n[3]["size"] * 512


def test_bios_pc_restored_smaller_shrinks_root_and_boots_from_sata(tmp_path):
    """A smaller disk works when every used block fits: the ext4 root shrinks, the rest moves."""
    g = golden.bios_pc()
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    lifeboat("backup", g.path, "--repo", repo, "--name", g.name)
    target = tmp_path / "small-disk.img"
    with open(target, "wb") as f:
        f.truncate(900 << 20)
    out = json.loads(lifeboat("restore", "latest", target, "--repo", repo, "--name", g.name, "--yes",
                              "--layout", "grow", "--json"))
    assert any("shrunk" in w for w in out.get("warnings", [])), out
    n = {int(p["node"][-1]): p for p in table(target)["partitions"]}
    assert (n[2]["start"] + n[2]["size"]) * 512 == 900 << 20
    assert fsck_clean("ext4", target, n[1]["start"] * 512, n[1]["size"] * 512)
    m = boot(target, "bios", "sata", tmp_path / "console.log")
    assert m["root"] == g.fingerprint
    assert m["dev"] == "sda1"
    assert 0.95 * n[1]["size"] * 512 < int(m["size"]) < g.root_fs_size


def test_uefi_pc_restored_onto_a_4kn_disk_boots(tmp_path, loops):
    """A 512-byte-sector layout restored onto a 4096-byte-sector disk: the table is converted
    and OVMF boots it from a 4Kn virtio disk."""
    g = golden.uefi_pc()
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    lifeboat("backup", g.path, "--repo", repo, "--name", g.name)
    target = tmp_path / "disk-4kn.img"
    with open(target, "wb") as f:
        f.truncate(2 * g.path.stat().st_size)
    dev = loops.attach(target, sector_size=4096)
    lifeboat("restore", "latest", dev, "--repo", repo, "--name", g.name, "--yes", "--layout", "grow")
    t = table(dev)
    assert t["sectorsize"] == 4096 and t["lastlba"] == target.stat().st_size // 4096 - 6
    assert golden.table_identity(dev)["partitions"] == golden.table_identity(g.path)["partitions"]
    loops.detach_all()
    with Machine([Disk(target, bus="virtio", sector_size=4096)], firmware="uefi", log=tmp_path / "console.log") as vm:
        m = vm.wait_for(golden.MARKER, BOOT_TIMEOUT)
        print(f"4Kn restore on virtio/uefi: marker after {vm.elapsed():.1f} s")
    assert m["root"] == g.fingerprint and m["dev"] == "vda2"


# ----------------------------------------------------------------------------- UEFI boot entry, from the live system

LIVE_RESULT = r"LIFEBOAT-RESULT (?P<status>ok|error) (?P<rest>[^\n]*)\n"


def repo_disk(tmp_path: Path, g: golden.Golden, label: str, source: Path | None = None) -> Path:
    """An ext4 disk image (labelled `label`) holding a repository with one snapshot of `g`
    (or of `source`, a changed copy of it, under g's name)."""
    staging = tmp_path / "repo-fs"
    repo = staging / "backups" / "repo"
    repo.parent.mkdir(parents=True)
    lifeboat("repo", "init", repo)
    lifeboat("backup", source or g.path, "--repo", repo, "--name", g.name)
    size = sum(f.stat().st_size for f in staging.rglob("*") if f.is_file()) + (64 << 20)
    image = tmp_path / "repo-disk.img"
    with open(image, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.ext4", "-q", "-L", label, "-d", str(staging), str(image)], check=True)
    return image


def test_live_restore_on_uefi_adds_the_boot_entry_the_firmware_then_uses(tmp_path):
    """The live system restores the UEFI PC under OVMF and adds a boot entry for the restored
    ESP; with the same NVRAM the firmware then starts the restored disk through that entry."""
    from tests.vm.test_iso import BUILD, ensure_iso

    iso = ensure_iso()
    g = golden.uefi_pc()
    repo_img = repo_disk(tmp_path, g, "LBREPO")
    target = tmp_path / "target.img"
    with open(target, "wb") as f:
        f.truncate(2 * g.path.stat().st_size)
    nvram = tmp_path / "OVMF_VARS.fd"
    # loglevel 5 keeps the kernel's warnings (an NVMe command timing out under a slow emulated
    # CPU, a controller reset) on the console, so a failed write can be told from a full disk
    append = ("console=ttyS0,115200n8 quiet loglevel=5 lifeboat.repo=LABEL=LBREPO:/backups/repo "
              "lifeboat.snapshot=latest lifeboat.target=TARGET-NVME lifeboat.yes=1 lifeboat.then=poweroff")
    disks = [Disk(repo_img, bus="virtio", serial="REPO-DISK"), Disk(target, bus="nvme", serial="TARGET-NVME")]
    with Machine(disks, cdrom=Cdrom(iso, bus="sata"), firmware="uefi", boot="cdrom", vars_file=nvram,
                 kernel=BUILD / "lifeboat-vmlinuz", initrd=BUILD / "lifeboat-initrd.img", append=append,
                 log=tmp_path / "live.log") as vm:
        m = vm.wait_for(LIVE_RESULT, 900)
        assert m["status"] == "ok", vm.output[-4000:]
        vm.wait_exit(120)
        out = vm.output
    added = re.search(r'Added the UEFI boot entry Boot(?P<num>[0-9A-F]{4}) "UEFI OS" for '
                      r'\\EFI\\BOOT\\BOOTX64\.EFI on partition 1', out)
    assert added, out[-3000:]

    # the restored disk alone, on another bus, with the NVRAM the live system wrote to
    with Machine([Disk(target, bus="sata")], firmware="uefi", vars_file=nvram,
                 log=tmp_path / "restored.log") as vm:
        booted = vm.wait_for(golden.MARKER, BOOT_TIMEOUT)
        console = vm.output
    assert booted["root"] == g.fingerprint
    assert re.search(rf'BdsDxe: starting Boot{added["num"]} "UEFI OS"', console), console[-3000:]


def spread_root(g: golden.Golden, tmp_path: Path, loops, number: int) -> tuple[Path, str]:
    """A copy of the golden PC whose root filesystem was filled and seven eighths emptied
    again, so files (and ext4's inode tables, as always) lie all over it, up to its end;
    returns the copy and its new root fingerprint. (Every restore of it, one under emulation,
    carries what is kept: an eighth of the filler, not a third.)"""
    img = tmp_path / f"{g.name}-spread.img"
    subprocess.run(["cp", "--sparse=always", str(g.path), str(img)], check=True)
    dev = loops.attach(img)
    with golden.mounted(f"{dev}p{number}", tmp_path / "mnt") as mnt:
        filler = mnt / "spread"
        filler.mkdir()
        rng = random.Random(7)
        i = 0
        while True:
            st = os.statvfs(mnt)
            if st.f_bavail * st.f_frsize < 0.15 * st.f_blocks * st.f_frsize:
                break
            (filler / f"f{i:04d}.bin").write_bytes(rng.randbytes(4 << 20))
            i += 1
        os.sync()
        for j in range(i):
            if j % 8:
                (filler / f"f{j:04d}.bin").unlink()
        fingerprint = golden.tree_fingerprint(mnt)
    return img, fingerprint


def restore_smaller(image: Path, name: str, tmp_path: Path, size: int) -> tuple[Path, dict, dict]:
    from recovery.repo.repository import Repository
    from recovery.verify import used_ranges

    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    lifeboat("backup", image, "--repo", repo, "--name", name)
    target = tmp_path / "small-disk.img"
    with open(target, "wb") as f:
        f.truncate(size)
    plan = json.loads(lifeboat("restore", "latest", target, "--repo", repo, "--dry-run", "--json"))["plan"]
    shrink = next(a for a in plan["actions"] if a["action"] == "shrink-filesystem")
    r = Repository.open(repo)
    part = next(p for p in r.load_manifest(plan["snapshot"]).partitions if p.number == shrink["number"])
    last_used = max(o + n for o, n in used_ranges(r, part))
    assert last_used > shrink["new_size"], "no used block lies beyond the new end: the test proves nothing"
    out = json.loads(lifeboat("restore", "latest", target, "--repo", repo, "--yes", "--json"))
    return target, out, shrink


def test_uefi_pc_with_data_to_its_end_restored_onto_a_smaller_disk_boots(tmp_path, loops):
    g = golden.uefi_pc()
    image, fingerprint = spread_root(g, tmp_path, loops, 2)
    target, out, shrink = restore_smaller(image, g.name, tmp_path, 640 << 20)
    assert out["status"] == "ok" and shrink["number"] == 2
    n = {int(p["node"][-1]): p for p in table(target)["partitions"]}
    assert golden.table_identity(target) == golden.table_identity(image)
    assert (n[4]["start"] + n[4]["size"]) * 512 > target.stat().st_size - (2 << 20)   # moved to the end
    m = boot(target, "uefi", "sata", tmp_path / "console.log")
    assert m["root"] == fingerprint
    assert m["dev"] == "sda2"


def test_live_system_restores_onto_a_smaller_disk_and_it_boots(tmp_path, loops):
    """The real user's path: the live ISO (the frozen app, its FUSE library and the kernel's
    fuse module) restores a PC whose data lies to the end of its root onto a smaller NVMe
    disk, unattended: the ext4 root is shrunk by relocating the used blocks beyond its new end.
    e2fsck finds it clean, and the restored disk boots by BIOS from SATA. (The UEFI PC's
    restore of the same kind runs on this machine, above; this one, through the live system,
    is the BIOS PC's.)"""
    from tests.vm.test_iso import BUILD, ensure_iso

    iso = ensure_iso()
    g = golden.bios_pc()
    image, fingerprint = spread_root(g, tmp_path, loops, 1)
    repo_img = repo_disk(tmp_path, g, "LBREPO", source=image)
    target = tmp_path / "target.img"
    with open(target, "wb") as f:
        f.truncate(640 << 20)
    append = ("console=ttyS0,115200n8 quiet loglevel=3 lifeboat.repo=LABEL=LBREPO:/backups/repo "
              f"lifeboat.name={g.name} lifeboat.target=TARGET-NVME lifeboat.yes=1 lifeboat.then=poweroff")
    disks = [Disk(repo_img, bus="virtio", serial="REPO-DISK"), Disk(target, bus="nvme", serial="TARGET-NVME")]
    with Machine(disks, cdrom=Cdrom(iso, bus="sata"), firmware="bios", boot="cdrom",
                 kernel=BUILD / "lifeboat-vmlinuz", initrd=BUILD / "lifeboat-initrd.img", append=append,
                 log=tmp_path / "live.log") as vm:
        m = vm.wait_for(LIVE_RESULT, 900)
        assert m["status"] == "ok", m.group(0)
        assert vm.wait_exit(120) == 0       # lifeboat.then=poweroff
        out = vm.output
    assert "Restore snapshot" in out          # the plan was shown before writing
    assert re.search(r"shrink the filesystem from 896\.0 MiB to", out), out[-3000:]
    assert "data beyond the new end moved" in out, out[-3000:]
    n = {int(p["node"][-1]): p for p in table(target)["partitions"]}
    assert (n[2]["start"] + n[2]["size"]) * 512 == 640 << 20          # the extended partition moved to the end
    assert fsck_clean("ext4", target, n[1]["start"] * 512, n[1]["size"] * 512)
    m = boot(target, "bios", "sata", tmp_path / "console.log")
    assert m["root"] == fingerprint
    assert m["dev"] == "sda1"
