"""Backup -> restore round trips through the real CLI, on disk-image files and loop devices."""

from __future__ import annotations

import subprocess

import pytest

from tests import diskimages as di
from tests import fsimages as fi
from tests.integration.engine_fixtures import (MiB, PC, assert_restored, build_gpt_pc, identity, lifeboat,
                                               sfdisk_json)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return fi.make_tree(tmp_path_factory.mktemp("tree") / "t")


@pytest.fixture(scope="module")
def gpt_pc(tmp_path_factory, tree) -> PC:
    return build_gpt_pc(tmp_path_factory.mktemp("gpt-pc"), tree)


def boot_bytes(path, layout) -> bytes:
    first = min(p.start for p in layout.partitions)
    with open(path, "rb") as f:
        head = f.read(first)
    # MBR boot code, and everything after the table structures up to the first partition.
    skip = 512 if layout.table == "dos" else 34 * 512
    return head[:440] + head[skip:]


def test_gpt_disk_restores_onto_a_larger_image(tmp_path, gpt_pc):
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    made = lifeboat("backup", gpt_pc.disk, "--repo", repo, "--json", json_out=True).data
    assert made["name"] == "pc"
    # Garbage fills the free space; only used data may be stored (random data: ~1:1).
    assert made["bytes_stored_new"] < made["bytes_used"] * 1.05 + 2 * MiB
    assert made["bytes_used"] < 0.6 * gpt_pc.disk.stat().st_size
    # Where the time went: every used byte read once, each window hashed, every stored byte
    # written once, and each new pack (stored bytes plus its header and footer) read back.
    profile = made["profile"]
    stages = profile["stages"]
    assert stages["read"]["bytes"] == made["bytes_used"]
    assert stages["hash"]["bytes"] >= made["bytes_used"]
    assert stages["write"]["bytes"] == made["bytes_stored_new"]
    assert stages["read-back"]["bytes"] > made["bytes_stored_new"]
    assert all(st["cpu_s"] >= 0 and st["wall_s"] >= 0 for st in stages.values())
    assert 0 < profile["marks"]["first_read"] < profile["wall_s"]

    target = tmp_path / "new-disk.img"
    target.write_bytes(b"")
    with open(target, "wb") as f:
        f.truncate(2 * gpt_pc.disk.stat().st_size)
    done = lifeboat("restore", "latest", target, "--repo", repo, "--layout", "keep", "--yes", "--json",
                    json_out=True).data
    assert done["snapshot"] == made["snapshot"]
    assert done["bytes_written"] == made["bytes_used"]

    before, after = sfdisk_json(gpt_pc.disk), sfdisk_json(target)
    assert identity(before) == identity(after)
    assert after["lastlba"] > before["lastlba"]          # backup GPT header at the new end
    assert boot_bytes(target, gpt_pc.layout) == boot_bytes(gpt_pc.disk, gpt_pc.layout)
    assert_restored(gpt_pc, target)


def test_snapshots_and_verify_report_in_json(tmp_path, gpt_pc):
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    sid = lifeboat("backup", gpt_pc.disk, "--repo", repo, "--name", "office-pc", "--json", json_out=True).data["snapshot"]
    snaps = lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"]
    assert [s["id"] for s in snaps] == [sid]
    s = snaps[0]
    assert s["name"] == "office-pc" and s["created"].endswith("Z") and s["disk_size"] == gpt_pc.disk.stat().st_size
    fs_by_number = {p["number"]: p["fs"] for p in s["partitions"]}
    assert fs_by_number == {1: "vfat", 2: "ext4", 3: "ntfs", 4: "swap"}
    assert all(0 < p["used"] <= p["size"] for p in s["partitions"])
    report = lifeboat("verify", "--repo", repo, sid[:10], "--json", json_out=True).data
    assert report["ok"] is True and report["checked"] == [sid] and report["damaged"] == []


def test_thread_count_does_not_change_what_is_stored(tmp_path, gpt_pc):
    stored = {}
    for threads in ("1", "3"):
        repo = tmp_path / f"repo-{threads}"
        lifeboat("repo", "init", repo)
        made = lifeboat("backup", gpt_pc.disk, "--repo", repo, "--threads", threads, "--json", json_out=True).data
        stored[threads] = made["bytes_stored_new"]
        report = lifeboat("verify", "--repo", repo, "--json", json_out=True).data
        assert report["ok"] is True
    assert stored["1"] == stored["3"] > 0


def test_mbr_with_logical_partitions_round_trip(tmp_path, tree):
    ext = fi.make_ext4(tmp_path / "a.img", 16 * MiB, tree, label="mbr-root")
    fat16 = fi.make_vfat(tmp_path / "b.img", 20 * MiB, tree, fat=16, label="MBRFAT")
    ext3 = fi.make_ext4(tmp_path / "c.img", 14 * MiB, tree, label="logical3", fs="ext3")
    parts = [
        di.PartSpec(16 * MiB, "83", bootable=True, content=str(ext)),
        di.PartSpec(20 * MiB, "e", content=str(fat16)),
        di.PartSpec(14 * MiB, "83", logical=True, content=str(ext3)),
        di.PartSpec(4 * MiB, "82", logical=True),
    ]
    disk = tmp_path / "bios-pc.img"
    layout = di.make_disk(disk, 64 * MiB, "dos", parts)
    pc = PC(disk, {1: ("ext4", fi.ext_tree(ext)), 2: ("vfat", fi.vfat_tree(fat16)), 5: ("ext3", fi.ext_tree(ext3))},
            layout)
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    lifeboat("backup", disk, "--repo", repo)
    target = tmp_path / "target.img"
    with open(target, "wb") as f:
        f.truncate(80 * MiB)
    lifeboat("restore", "latest", target, "--repo", repo, "--layout", "keep", "--yes")
    assert identity(sfdisk_json(disk)) == identity(sfdisk_json(target))
    assert boot_bytes(target, layout) == boot_bytes(disk, layout)
    assert_restored(pc, target)


@pytest.mark.loop
def test_round_trip_through_loop_devices(tmp_path, gpt_pc, loops):
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    source = loops.attach(gpt_pc.disk)
    lifeboat("backup", source, "--repo", repo, "--name", "loop-pc")
    target_file = tmp_path / "blank.img"
    with open(target_file, "wb") as f:
        f.truncate(gpt_pc.disk.stat().st_size + 64 * MiB)
    target = loops.attach(target_file)
    lifeboat("restore", "latest", target, "--repo", repo, "--layout", "keep", "--yes")
    assert identity(sfdisk_json(gpt_pc.disk)) == identity(sfdisk_json(target))
    assert_restored(gpt_pc, target_file)


@pytest.mark.loop
def test_4096_byte_sector_disk_round_trip(tmp_path, tree, loops):
    ext = fi.make_ext4(tmp_path / "r.img", 24 * MiB, tree, label="4kn-root")
    esp = fi.make_vfat(tmp_path / "e.img", 34 * MiB, tree, fat=32, label="ESP4K")
    disk = tmp_path / "4kn.img"
    layout = di.make_disk(disk, 80 * MiB, "gpt", [
        di.PartSpec(34 * MiB, di.ESP, name="EFI", content=str(esp)),
        di.PartSpec(24 * MiB, di.LINUX_FS, name="root", content=str(ext)),
    ], sector_size=4096)
    assert layout.sector_size == 4096
    pc = PC(disk, {1: ("vfat", fi.vfat_tree(esp)), 2: ("ext4", fi.ext_tree(ext))}, layout)
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    source = loops.attach(disk, sector_size=4096)
    lifeboat("backup", source, "--repo", repo)
    target_file = tmp_path / "t.img"
    with open(target_file, "wb") as f:
        f.truncate(96 * MiB)
    target = loops.attach(target_file, sector_size=4096)
    lifeboat("restore", "latest", target, "--repo", repo, "--layout", "keep", "--yes")
    got = sfdisk_json(target)
    assert got["sectorsize"] == 4096
    assert identity(sfdisk_json(source)) == identity(got)
    assert_restored(pc, target_file)


def test_disk_without_partition_table_round_trip(tmp_path, tree, gpt_pc):
    whole = fi.make_ext4(tmp_path / "whole.img", 40 * MiB, tree, label="no-table")
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    snap = lifeboat("snapshots", "--repo", repo, "--json", json_out=True)   # empty is fine
    assert snap.data["snapshots"] == []
    lifeboat("backup", whole, "--repo", repo)
    # The target held a GPT disk before: its old tables must not survive around the filesystem.
    target = tmp_path / "old-gpt-disk.img"
    target.write_bytes(gpt_pc.disk.read_bytes())
    lifeboat("restore", "latest", target, "--repo", repo, "--yes")
    probe = subprocess.run(["blkid", "-p", "-o", "export", target], capture_output=True, text=True).stdout
    assert "TYPE=ext4" in probe and "PTTYPE" not in probe
    assert fi.fsck_clean("ext4", target, 0, whole.stat().st_size)
    assert fi.ext_tree(target, 0, whole.stat().st_size) == fi.ext_tree(whole)
