"""Deduplication, crash consistency, damage detection and every refusal, through the real CLI."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import diskimages as di
from tests import fsimages as fi
from tests.integration.engine_fixtures import MiB, ROOT, lifeboat


def data_tree(root: Path, files: int, size: int, seed: int = 3) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True)
    for i in range(files):
        (root / f"f{i:03d}.bin").write_bytes(rng.randbytes(size))
    return root


def one_partition_disk(tmp_path: Path, name: str, ext_image: Path, size: int) -> tuple[Path, int]:
    disk = tmp_path / f"{name}.img"
    layout = di.make_disk(disk, size, "gpt", [di.PartSpec(ext_image.stat().st_size, di.LINUX_FS, content=str(ext_image))])
    return disk, layout.partitions[0].start


def put(ext_image: Path, disk: Path, offset: int) -> None:
    subprocess.run(["dd", f"if={ext_image}", f"of={disk}", "bs=1M", "conv=notrunc", f"seek={offset}",
                    "oflag=seek_bytes", "status=none"], check=True)


def one_line_error(proc, code: int) -> str:
    """The README's promise for a bad input: exactly `code` (its meaning listed there), one
    plain line on stderr starting "lifeboat: ", no traceback."""
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}: {proc.stderr}"
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("lifeboat: "), lines[0]
    return lines[0]


def test_second_backup_of_a_changed_disk_stores_about_the_change(tmp_path):
    tree = data_tree(tmp_path / "tree", 40, MiB)
    ext = fi.make_ext4(tmp_path / "root.img", 64 * MiB, tree)
    disk, offset = one_partition_disk(tmp_path, "pc", ext, 72 * MiB)
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    first = lifeboat("backup", disk, "--repo", repo, "--json", json_out=True).data

    # Change 2 of 40 files (5%) in place, as a running system would between backups.
    rng = random.Random(9)
    for name in ("f003.bin", "f017.bin"):
        new = tmp_path / name
        new.write_bytes(rng.randbytes(MiB))
        subprocess.run(["debugfs", "-w", "-R", f"rm /{name}", ext], check=True, capture_output=True)
        subprocess.run(["debugfs", "-w", "-R", f"write {new} /{name}", ext], check=True, capture_output=True)
    put(ext, disk, offset)
    second = lifeboat("backup", disk, "--repo", repo, "--json", json_out=True).data
    assert first["name"] == second["name"]
    changed = 2 * MiB
    # The change itself plus the chunks holding the metadata blocks it touched.
    assert changed <= second["bytes_stored_new"] < changed + 8 * MiB, second
    assert second["bytes_stored_new"] < 0.25 * first["bytes_stored_new"]
    assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]


def test_killed_backup_leaves_repository_valid_and_resumes(tmp_path):
    small_tree = data_tree(tmp_path / "small", 4, MiB)
    small, _ = one_partition_disk(tmp_path, "small", fi.make_ext4(tmp_path / "s.img", 16 * MiB, small_tree), 24 * MiB)
    big_tree = data_tree(tmp_path / "big", 120, MiB, seed=5)
    big, _ = one_partition_disk(tmp_path, "big", fi.make_ext4(tmp_path / "b.img", 160 * MiB, big_tree), 168 * MiB)
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    earlier = lifeboat("backup", small, "--repo", repo, "--json", json_out=True).data["snapshot"]

    proc = subprocess.Popen([sys.executable, "-m", "recovery", "backup", str(big), "--repo", str(repo)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(list((repo / "packs").glob("*/*.pack"))) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (repo / "lock").exists()        # killed holding the lock
    snaps = lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"]
    assert [s["id"] for s in snaps] == [earlier]     # the half-made snapshot is invisible
    assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]

    again = lifeboat("backup", big, "--repo", repo, "--json", json_out=True).data
    # What the killed run had stored is not stored again.
    assert again["bytes_stored_new"] < again["bytes_used"] - 15 * MiB
    target = tmp_path / "t.img"
    with open(target, "wb") as f:
        f.truncate(24 * MiB)
    lifeboat("restore", earlier, target, "--repo", repo, "--layout", "keep", "--yes")
    layout = di.read_layout(str(target))
    p = layout.partitions[0]
    assert fi.ext_tree(target, p.start, p.size) == fi.tree_hashes(small_tree)


def test_flipped_byte_is_found_named_and_restore_refuses(tmp_path):
    tree = data_tree(tmp_path / "tree", 6, MiB)
    disk, _ = one_partition_disk(tmp_path, "pc", fi.make_ext4(tmp_path / "r.img", 16 * MiB, tree), 24 * MiB)
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo, "--format", "1")  # no parity: damage stays
    sid = lifeboat("backup", disk, "--repo", repo, "--json", json_out=True).data["snapshot"]
    pack = max((repo / "packs").glob("*/*.pack"), key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[len(data) // 3] ^= 0x01
    pack.write_bytes(bytes(data))

    proc = lifeboat("verify", "--repo", repo, "--json", check=False, json_out=True)
    assert proc.returncode == 6
    damaged = proc.data["damaged"]
    assert damaged and damaged[0]["snapshot"] == sid and damaged[0]["partition"] == 1
    human = lifeboat("verify", "--repo", repo, check=False)
    assert f"DAMAGED snapshot {sid[:8]}" in human.stdout and "partition 1" in human.stdout

    target = tmp_path / "t.img"
    with open(target, "wb") as f:
        f.truncate(24 * MiB)
    proc = lifeboat("restore", "latest", target, "--repo", repo, "--layout", "keep", "--yes", check=False)
    line = one_line_error(proc, 6)
    assert "partition 1" in line and "damaged" in line


def test_plain_errors(tmp_path):
    tree = data_tree(tmp_path / "tree", 2, MiB)
    disk, _ = one_partition_disk(tmp_path, "pc", fi.make_ext4(tmp_path / "r.img", 16 * MiB, tree), 24 * MiB)
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)

    assert "does not exist" in one_line_error(lifeboat("backup", tmp_path / "nope.img", "--repo", repo, check=False), 3)
    assert "--threads must be 1 or more" in one_line_error(
        lifeboat("backup", disk, "--repo", repo, "--threads", "0", check=False), 2)
    assert "zstd level 99 is out of range" in one_line_error(
        lifeboat("backup", disk, "--repo", repo, "--zstd-level", "99", check=False), 2)
    assert "no repository" in one_line_error(lifeboat("snapshots", "--repo", tmp_path / "missing", check=False), 5)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x").write_text("x")
    assert "not a Lifeboat repository" in one_line_error(
        lifeboat("backup", disk, "--repo", tmp_path / "foreign", check=False), 5)
    assert "not empty" in one_line_error(lifeboat("repo", "init", tmp_path / "foreign", check=False), 5)
    assert "no snapshot" in one_line_error(
        lifeboat("restore", "deadbeef", tmp_path / "x", "--repo", repo, check=False), 5)
    assert "holds no snapshot" in one_line_error(
        lifeboat("restore", "latest", disk, "--repo", repo, check=False), 5)

    lifeboat("backup", disk, "--repo", repo)
    tiny = tmp_path / "tiny.img"
    with open(tiny, "wb") as f:
        f.truncate(4 * MiB)
    before = tiny.read_bytes()
    line = one_line_error(lifeboat("restore", "latest", tiny, "--repo", repo, "--yes", check=False), 4)
    assert "small" in line
    assert tiny.read_bytes() == before          # nothing written
    # No terminal to confirm on, and no --yes: refused before anything is written.
    line = one_line_error(lifeboat("restore", "latest", disk, "--repo", repo, check=False, stdin=subprocess.DEVNULL), 4)
    assert "--yes" in line


@pytest.mark.loop
def test_refuses_a_source_mounted_read_write(tmp_path, loops):
    tree = data_tree(tmp_path / "tree", 2, MiB)
    disk, _ = one_partition_disk(tmp_path, "pc", fi.make_ext4(tmp_path / "r.img", 16 * MiB, tree), 24 * MiB)
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    dev = loops.attach(disk)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", f"{dev}p1", mnt], check=True)
    try:
        line = one_line_error(lifeboat("backup", dev, "--repo", repo, check=False), 4)
        assert "mounted read-write" in line and "umount" in line
    finally:
        subprocess.run(["umount", mnt], check=True)


@pytest.mark.loop
def test_full_destination_keeps_repository_valid(tmp_path, loops):
    # The repository lives on a 40 MiB ext4 filesystem of the test's own.
    small_tree = data_tree(tmp_path / "small", 2, MiB)
    small, _ = one_partition_disk(tmp_path, "small", fi.make_ext4(tmp_path / "s.img", 16 * MiB, small_tree), 24 * MiB)
    big_tree = data_tree(tmp_path / "big", 60, MiB, seed=8)
    big, _ = one_partition_disk(tmp_path, "big", fi.make_ext4(tmp_path / "b.img", 80 * MiB, big_tree), 88 * MiB)
    store = fi.make_ext4(tmp_path / "store.img", 40 * MiB, None, garbage=False)
    dev = loops.attach(store)
    mnt = tmp_path / "usb"
    mnt.mkdir()
    subprocess.run(["mount", dev, mnt], check=True)
    try:
        repo = mnt / "repo"
        lifeboat("repo", "init", repo)
        earlier = lifeboat("backup", small, "--repo", repo, "--json", json_out=True).data["snapshot"]
        # Pass the up-front estimate (a named machine with history asks for a tenth).
        lifeboat("backup", small, "--repo", repo, "--name", "big")
        line = one_line_error(lifeboat("backup", big, "--repo", repo, "--name", "big", check=False), 7)
        assert "full" in line
        assert not (repo / "lock").exists()
        assert lifeboat("verify", "--repo", repo, earlier, "--json", json_out=True).data["ok"]
    finally:
        subprocess.run(["umount", mnt], check=True)
