"""A repository on a drive that misbehaves (a FUSE folder passing through to a real one): a
drive whose flash lies makes the backup's read-back check fail with exit 6 and no snapshot; a
slow drive gives a person time to cancel a check, exit 130, and no check mark is written."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests import fsimages as fi
from tests.integration.engine_fixtures import ROOT, MiB, lifeboat
from tests.integration.faulty_folder import faulty_folder
from tests.integration.test_repository_safety import one_line_error

pytestmark = pytest.mark.loop   # mounting FUSE needs root here


def small_disk(tmp_path, name: str, seed: int):
    tree = tmp_path / f"tree-{name}"
    tree.mkdir()
    rng = random.Random(seed)
    for i in range(8):
        (tree / f"f{i}.bin").write_bytes(rng.randbytes(MiB))
    return fi.make_ext4(tmp_path / f"{name}.img", 24 * MiB, tree, garbage=False)


def test_backup_onto_a_drive_that_reads_back_other_data_is_exit_6_and_keeps_no_snapshot(tmp_path):
    real = tmp_path / "drive"
    real.mkdir()
    first = small_disk(tmp_path, "one", 1)
    lifeboat("repo", "init", real / "repo")
    earlier = lifeboat("backup", first, "--repo", real / "repo", "--json", json_out=True).data["snapshot"]
    changed = small_disk(tmp_path, "two", 2)
    with faulty_folder(real, tmp_path / "mnt", "--flip-reads-under", "repo/packs") as drive:
        line = one_line_error(lifeboat("backup", changed, "--repo", drive / "repo", "--name", "two", check=False), 6)
    assert "did not read back correctly" in line or "cannot be read back" in line, line
    # on the honest path again: only the earlier snapshot exists, and it is whole
    snaps = lifeboat("snapshots", "--repo", real / "repo", "--json", json_out=True).data["snapshots"]
    assert [s["id"] for s in snaps] == [earlier]
    assert lifeboat("verify", "--repo", real / "repo", "--json", json_out=True).data["ok"]


def test_ctrl_c_during_verify_is_exit_130_and_writes_no_mark(tmp_path):
    real = tmp_path / "drive"
    real.mkdir()
    disk = small_disk(tmp_path, "one", 3)
    lifeboat("repo", "init", real / "repo")
    snapshot = lifeboat("backup", disk, "--repo", real / "repo", "--json", json_out=True).data["snapshot"]
    for mark in ("verified", "damaged"):
        (real / "repo" / mark / f"{snapshot}.json").unlink(missing_ok=True)
    with faulty_folder(real, tmp_path / "mnt", "--read-mibps", "1") as drive:
        proc = subprocess.Popen([sys.executable, "-m", "recovery", "verify", "--repo", str(drive / "repo")],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)                         # 8 MiB at 1 MiB/s: the check is under way
        assert proc.poll() is None, "the check ended before it could be cancelled"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    proc.stderr = err
    line = one_line_error(proc, 130)
    assert "cancel" in line, line
    assert not (real / "repo" / "verified" / f"{snapshot}.json").exists()
    assert not (real / "repo" / "damaged" / f"{snapshot}.json").exists()
    assert lifeboat("verify", "--repo", real / "repo", "--json", json_out=True).data["ok"]


@pytest.mark.parametrize("where,fmt", [("index", "2"), ("snapshots", "2"), ("index", "1"), ("packs", "2")])
def test_unreadable_sectors_in_index_files_or_manifests_are_read_through(tmp_path, where, fmt):
    """A bad sector (EIO) in every index file, every snapshot manifest or every pack: restore, browsing
    (ls, get) and verify read through it, repaired from the parity; restore bit for bit. In a
    format 1 repository (no parity) the packs' footers stand in for an unreadable index file."""
    real = tmp_path / "drive"
    real.mkdir()
    disk = small_disk(tmp_path, "one", 4)
    lifeboat("repo", "init", real / "repo", "--format", fmt)
    snapshot = lifeboat("backup", disk, "--repo", real / "repo", "--json", json_out=True).data["snapshot"]
    assert bool(list((real / "repo" / where).rglob("*.par"))) == (fmt == "2")
    with faulty_folder(real, tmp_path / "mnt", "--bad-reads-under", f"repo/{where}:100:1") as drive:
        repo = drive / "repo"
        with pytest.raises(OSError):                 # the fault is there
            next(p for p in (repo / where).rglob("*") if p.is_file() and p.suffix != ".par").read_bytes()
        target = tmp_path / "target.img"
        with open(target, "wb") as f:
            f.truncate(disk.stat().st_size)
        done = lifeboat("restore", snapshot, target, "--repo", repo, "--yes", "--json", json_out=True).data
        assert not done.get("partial"), done
        listed = lifeboat("ls", snapshot, "0:/", "--repo", repo, check=False)
        got = tmp_path / "got"
        fetched = lifeboat("get", snapshot, "0:/f3.bin", got, "--repo", repo, check=False)
        checked = lifeboat("verify", "--repo", repo, "--json", check=False)
    assert target.read_bytes() == disk.read_bytes()
    assert listed.returncode == 0 and "f3.bin" in listed.stdout, listed.stderr
    assert fetched.returncode == 0, fetched.stderr
    assert (got / "f3.bin").read_bytes() == random_file(4, 3)
    report = json.loads(checked.stdout)
    assert checked.returncode == 0 and report["ok"], checked.stdout + checked.stderr
    if fmt == "2":
        objects = [p for p in (real / "repo" / where).rglob("*") if p.is_file() and p.suffix != ".par"]
        assert len(report["repairs"]) == len(objects), report["repairs"]      # each one, named
        for fixed in report["repairs"]:
            assert fixed["object"].startswith(f"{where}/") and fixed["repaired"] and fixed["damaged_sectors"] == 1


def random_file(seed: int, number: int) -> bytes:
    """The bytes small_disk(…, seed) wrote as f<number>.bin."""
    rng = random.Random(seed)
    return [rng.randbytes(MiB) for _ in range(8)][number]
